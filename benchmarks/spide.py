"""SPIDE against IDE, side by side: time per training step and the firing rates of the
forward and the spike-based backward stage (paper 002 Fig. 2: ~7% forward, ~3% backward).

    python benchmarks/spide.py                                  # MNIST F64C3u, batch 32 (~3 min on 2 cores)
    python benchmarks/spide.py --batch 128 --backward-steps 50 100 250 --repeats 5
    python benchmarks/spide.py --batch 128 --start pretrained  # from the trained spide_mnist preset's weights

Every row trains the same architecture from the same initial weights on the same real
MNIST images (from --data-dir; the scikit-learn digits, upsampled, if MNIST is absent):
`spide_mnist` (T_F = 30, T_B from --backward-steps, loss scale 100) and the same network
with gradient="ide" (Broyden, 30 iterations). It runs a few warm-up steps, then reports
the median seconds per `train_on_batch` step, the ratio to IDE, the forward firing rate
(spikes per neuron per step, all layers) and the backward stage's (+-1 spikes per neuron
per step) from the block's diagnostics, averaged over the timed steps.

The backward stage computes its transposed connections only on the samples that sent a
spike at that step (`keras_fsnn.backend.on_active_rows`; TensorFlow outside XLA). The row
"spide, every sample" is the same step with that skipping turned off, for the ratio.
`--start pretrained` starts every row from the trained `spide_mnist` weights instead of
the initialisation: a trained network's backward stage is much sparser (most samples are
classified well and send no backward spike).
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_fsnn  # noqa: E402
from keras_fsnn.models import spide_mnist  # noqa: E402
from keras_fsnn.training import CoupledSGD  # noqa: E402
from keras_fsnn.training.trainer import auto_jit_compile  # noqa: E402


def mnist_batches(data_dir, batch, count):
    try:
        x, y = keras_fsnn.datasets.load_arrays("mnist", "train", data_dir)
        source = "MNIST"
    except Exception as missing:  # noqa: BLE001 - fall back to the embedded digits
        x, y = keras_fsnn.datasets.load_arrays("digits", "train")
        x = np.asarray(keras.ops.image.resize(x, (28, 28)))
        source = f"scikit-learn digits resized to 28x28 (MNIST not found: {str(missing).splitlines()[0][:120]})"
    x = np.asarray(x, "float32")
    x = x / 255.0 if x.max() > 1.5 else x
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))[: batch * count]
    return [(x[order[i * batch:(i + 1) * batch]], np.asarray(y)[order[i * batch:(i + 1) * batch]]) for i in range(count)], source


def every_sample(fn, rows, *aligned):
    """backend.on_active_rows without the skipping: fn on every sample."""
    return fn(rows, *aligned)


def starting_weights(start):
    keras.utils.set_random_seed(0)
    model = spide_mnist()
    if start == "pretrained":
        model.load_weights(keras_fsnn.zoo.pretrained_weights_path(keras_fsnn.zoo.locate("spide_mnist")))
    return [np.asarray(v) for v in model.trainable_weights]


def measure(gradient, backward_steps, batches, repeats, weights, skip_silent=True):
    keras.utils.set_random_seed(0)
    options = {"backward_time_steps": backward_steps} if gradient == "spide" else {"gradient": "ide"}
    model = spide_mnist(**options)
    for variable, value in zip(model.trainable_weights, weights):  # identical start
        variable.assign(value)
    model.compile(CoupledSGD(0.05, momentum=0.9, coupled_weight_decay=5e-6),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=auto_jit_compile(model))
    real = keras_fsnn.backend.on_active_rows
    if not skip_silent:
        keras_fsnn.backend.on_active_rows = every_sample
    try:
        times, forward, backward = _timed_steps(model, batches, repeats)
    finally:
        keras_fsnn.backend.on_active_rows = real
    block = model.get_layer("fsnn")
    name = gradient if skip_silent else f"{gradient}, every sample"
    return {"gradient": name, "T_B": backward_steps if gradient == "spide" else "-", "step": statistics.median(times),
            "forward_rate": float(np.mean(forward)), "backward_rate": float(np.mean(backward)),
            "backward_residual": block.diagnostics()["backward_residual"]}


def _timed_steps(model, batches, repeats):
    block = model.get_layer("fsnn")
    for x, y in batches[:2]:
        model.train_on_batch(x, y)
    times, forward, backward = [], [], []
    for i in range(repeats):
        x, y = batches[2 + i % (len(batches) - 2)]
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
        d = block.diagnostics()
        sizes = [int(np.prod(s[1:])) for s in block._stage_shapes[: len(block.forward)]]
        forward.append(sum(d[f"rate_{i + 1}"] * n for i, n in enumerate(sizes)) / sum(sizes))
        backward.append(d.get("backward_firing_rate", float("nan")))
    return times, forward, backward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backward-steps", type=int, nargs="+", default=[100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--start", choices=["init", "pretrained"], default="init",
                        help="initial weights, or the trained spide_mnist preset's")
    args = parser.parse_args(argv)
    batches, source = mnist_batches(args.data_dir, args.batch, args.repeats + 2)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores; spide_mnist (F64C3u), batch {args.batch}, "
          f"T_F = 30, data: {source}, start: {args.start} weights")
    weights = starting_weights(args.start)
    rows = [measure("ide", None, batches, args.repeats, weights)]
    for steps in args.backward_steps:
        rows.append(measure("spide", steps, batches, args.repeats, weights))
        if keras.backend.backend() == "tensorflow":  # JAX computes every sample anyway
            rows.append(measure("spide", steps, batches, args.repeats, weights, skip_silent=False))
    ide = rows[0]["step"]
    print(f"{'gradient':<22}{'T_B':>6}{'s/step':>10}{'vs IDE':>8}{'fwd rate':>10}{'bwd rate':>10}{'bwd residual':>14}")
    for r in rows:
        print(f"{r['gradient']:<22}{r['T_B']!s:>6}{r['step']:>10.3f}{r['step'] / ide:>8.2f}{r['forward_rate']:>10.4f}"
              f"{r['backward_rate']:>10.4f}{r['backward_residual']:>14.4f}")
    print("(bwd residual: ||beta - s g - J^T beta|| / ||s g|| for SPIDE, the Broyden solve's relative residual for IDE)")


if __name__ == "__main__":
    main()
