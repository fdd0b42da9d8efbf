"""Exact forward-propagation (FP) training vs a surrogate-gradient BPTT baseline on Yin-Yang.

Paper 004 §5.3 ("Comparing to surrogate methods"): the same 5-150-3 network of
current-based LIF neurons (alpha = 0.999, beta = 1, theta = 1, T = 2, the paper's
initialisation N(1.5, 0.8) / N(2, 0.1), Adam lr 5e-4 (`--lr`), batch 150), trained

* exactly, in continuous time, by `keras_fsnn.fp.ExactSpikingNetwork` (first-spike
  cross-entropy, tau0 = 0.2, tau1 = 1, gamma = 0.005), and
* on a time grid (dt = 0.01 over T = 2: 200 steps) by backpropagation through time with a
  surrogate spike derivative, as a small Keras model (`keras.ops.scan`, jit-compiled
  train step), with the spike-count or spike-rate cross-entropy (first-spike times are not
  differentiable through a surrogate; paper footnote 2).

It prints the time per epoch of both (median over the measured epochs, first epoch
excluded for the compiled baseline), and the final train/test accuracies side by side.

    python benchmarks/fp_vs_surrogate.py --epochs 3
    python benchmarks/fp_vs_surrogate.py --epochs 300 --surrogate-loss rate

Grid model (the discretisation of the same ODEs, dI/dt = -alpha I + sum_j W_ji s_j(t),
dV/dt = -beta V + I): per step I <- e^{-alpha dt} I + W^T s_in, V <- e^{-beta dt} V + dt I,
s = H(V - theta) with the surrogate derivative, V <- V - theta s. Input spikes are one-hot
in the bin floor(t / dt). The class is the output neuron with most spikes (ties: lowest).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_fsnn.datasets.yin_yang import encode_yin_yang, load_yin_yang  # noqa: E402
from keras_fsnn.fp import ExactSpikingNetwork, FirstSpikeCrossEntropy  # noqa: E402
from keras_fsnn.fp.losses import SURROGATE_LOSSES  # noqa: E402

ALPHA, BETA, THETA, T = 0.999, 1.0, 1.0, 2.0


def surrogate_spike(kind, slope=25.0):
    """H(v) forward; backward: fast sigmoid 1 / (1 + slope |v|)^2 (snnTorch's default,
    slope 25) or the straight-through estimator (derivative 1)."""

    @ops.custom_gradient
    def spike(v):
        def grad(*args, upstream=None):
            g = args[0] if upstream is None else upstream
            if kind == "ste":
                return g
            return g / ops.square(1.0 + slope * ops.abs(v))

        return ops.cast(ops.greater_equal(v, 0.0), v.dtype), grad

    return spike


class GridLIFNetwork(keras.Model):
    """The 5-150-3 current-based LIF network on a time grid, trained by BPTT."""

    def __init__(self, sizes, dt, surrogate, init, seed, **kwargs):
        super().__init__(**kwargs)
        self.dt = dt
        self.spike = surrogate_spike(surrogate)
        rng = np.random.default_rng(seed)
        self.kernels = []
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if init == "paper":
                mean, std = [(1.5, 0.8), (2.0, 0.1)][min(index, 1)]
                value = rng.normal(mean, std, (n_in, n_out))
            else:  # Kaiming-uniform, as the released snnTorch baseline (nn.Linear default)
                bound = 1.0 / np.sqrt(n_in)
                value = rng.uniform(-bound, bound, (n_in, n_out))
            self.kernels.append(self.add_weight(shape=(n_in, n_out), name=f"kernel_{index}",
                                                initializer=keras.initializers.Constant(value)))

    def call(self, spikes):
        """(batch, steps, inputs) 0/1 spikes -> (batch, steps, classes) output spikes."""
        decay_i, decay_v = float(np.exp(-ALPHA * self.dt)), float(np.exp(-BETA * self.dt))
        time_major = ops.moveaxis(spikes, 1, 0)
        batch = ops.shape(spikes)[0]
        states = []
        for kernel in self.kernels:
            zeros = ops.zeros((batch, kernel.shape[1]), dtype=spikes.dtype)
            states.append((zeros, zeros))
        states.append(ops.zeros((batch, self.kernels[-1].shape[1]), dtype=spikes.dtype))

        def step(carry, s_in):
            new, out = [], s_in
            for kernel, (current, potential) in zip(self.kernels, carry[:-1]):
                current = decay_i * current + ops.matmul(out, kernel)
                potential = decay_v * potential + self.dt * current
                out = self.spike(potential - THETA)
                potential = potential - THETA * out
                new.append((current, potential))
            new.append(out)
            return new, new  # Keras' TensorFlow scan wants outputs shaped like the carry

        _, history = ops.scan(step, states, time_major)
        out = history[-1]
        return ops.moveaxis(out, 0, 1)


def grid_spikes(times, dt, steps):
    """One-hot spike trains (n, steps, inputs) of spike times (n, inputs)."""
    index = np.minimum(np.floor(times / dt).astype(int), steps)  # t = T falls off the grid
    out = np.zeros((times.shape[0], steps + 1, times.shape[1]), "float32")
    rows, cols = np.meshgrid(np.arange(times.shape[0]), np.arange(times.shape[1]), indexing="ij")
    out[rows, index, cols] = 1.0
    return out[:, :steps]


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = time.perf_counter() - self.start[0], time.process_time() - self.start[1]
        self.times = getattr(self, "times", []) + [(wall, cpu)]


def run_fp(args, x, y, x_test, y_test):
    net = ExactSpikingNetwork([5, 150, 3], alpha=ALPHA, beta=BETA, theta=THETA, t_max=T,
                              weight_init=[(1.5, 0.8), (2.0, 0.1)],
                              loss=FirstSpikeCrossEntropy(tau0=0.2, tau1=1.0, gamma=0.005), seed=args.seed)
    timer = EpochTimer()
    net.fit(x, y, epochs=args.epochs, batch_size=150, verbose=args.verbose, callbacks=[timer],
            optimizer=keras.optimizers.Adam(args.lr, epsilon=1e-8))
    return timer.times, net.evaluate(x, y)["accuracy"], net.evaluate(x_test, y_test)["accuracy"]


def run_surrogate(args, x, y, x_test, y_test):
    steps = round(T / args.dt)
    train, test = grid_spikes(x, args.dt, steps), grid_spikes(x_test, args.dt, steps)
    keras.utils.set_random_seed(args.seed)
    model = GridLIFNetwork([5, 150, 3], args.dt, args.surrogate, args.init, args.seed)
    loss = SURROGATE_LOSSES[args.surrogate_loss]
    model.compile(optimizer=keras.optimizers.Adam(args.lr, epsilon=1e-8), loss=loss, jit_compile="auto")
    timer = EpochTimer()
    model.fit(train, y, epochs=args.epochs, batch_size=150, verbose=args.verbose, callbacks=[timer], shuffle=True)

    def accuracy(spikes, labels):
        counts = keras.ops.convert_to_numpy(model.predict(spikes, batch_size=500, verbose=0)).sum(axis=1)
        return float((counts.argmax(axis=1) == labels).mean())

    return timer.times, accuracy(train, y), accuracy(test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=5000, help="first n of the 5000 training samples")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of both (paper 5e-4)")
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--surrogate", default="fast_sigmoid", choices=["fast_sigmoid", "ste"])
    parser.add_argument("--surrogate-loss", default="count", choices=sorted(SURROGATE_LOSSES))
    parser.add_argument("--init", default="paper", choices=["paper", "kaiming"],
                        help="baseline initialisation: the FP one (paper: 'same initializations') or Kaiming")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--skip-fp", action="store_true")
    args = parser.parse_args(argv)

    features, y = load_yin_yang("train")
    features_test, y_test = load_yin_yang("test")
    x, y = encode_yin_yang(features)[: args.train_size], y[: args.train_size]
    x_test = encode_yin_yang(features_test)

    rows = []
    if not args.skip_fp:
        times, train_acc, test_acc = run_fp(args, x, y, x_test, y_test)
        rows.append(("FP exact (continuous time)", times, train_acc, test_acc, 0))
    times, train_acc, test_acc = run_surrogate(args, x, y, x_test, y_test)
    rows.append((f"BPTT {args.surrogate} + {args.surrogate_loss} CE (dt={args.dt})", times, train_acc, test_acc, 1))

    print(f"\nYin-Yang 5-150-3, {len(x)} training samples, batch 150, lr {args.lr:g}, {args.epochs} epochs, "
          f"Keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPUs")
    print(f"{'method':<45} {'s/epoch (wall)':>15} {'s/epoch (CPU)':>14} {'train acc':>10} {'test acc':>9}")
    for name, times, train_acc, test_acc, skip in rows:
        measured = times[skip:] or times
        wall = statistics.median(t[0] for t in measured)
        cpu = statistics.median(t[1] for t in measured)
        print(f"{name:<45} {wall:>15.2f} {cpu:>14.2f} {train_acc:>10.4f} {test_acc:>9.4f}")
    return rows


if __name__ == "__main__":
    main()
