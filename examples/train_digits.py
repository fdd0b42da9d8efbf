"""The main job: train a multi-layer convolutional feedback spiking network with IDE on
scikit-learn's bundled handwritten digits (1,797 8x8 images; no download), then print the
test accuracy, the per-layer firing rates and the equilibrium residual.

    python examples/train_digits.py            # about a minute on 2 CPU cores
    KERAS_BACKEND=jax python examples/train_digits.py

The network is a two-layer FSNN, 16C3-32C3s with a transposed-conv feedback (F16C3u), the
same shape of model as the paper's AlexNet-F at toy scale: input -> conv 16 (8x8) -> conv
32 stride 2 (4x4) -> feedback conv-transpose back to 8x8x16, IF neurons, V_th = 2, T = 30,
batch norm after each forward conv, spectral-norm-restricted feedback, IDE gradients by
Broyden's method.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_fsnn  # noqa: E402  (before keras: its TensorFlow CPU defaults, keras_fsnn/_environment.py)

import keras  # noqa: E402
import numpy as np  # noqa: E402


def load_digits(seed):
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    images = (data.images / 16.0).astype("float32")[..., None]  # 8x8 in [0, 1]
    return train_test_split(images, data.target, test_size=0.25, random_state=seed, stratify=data.target)


def build_model(time_steps, neuron, dropout, solver, seed, feedback="transpose"):
    """Two conv layers of spiking neurons with a feedback from layer 2 to layer 1.

    feedback="transpose": layer 2 halves the map (8x8 -> 4x4) and a stride-2 Conv2DTranspose
    feeds it back (the AlexNet-F shape). feedback="conv": layer 2 keeps the 8x8 map and a
    3x3 Conv2D feeds it back, which NIR can hold (it has no transposed convolution):
    `--nir` exports this one.
    """
    keras.utils.set_random_seed(seed)
    if feedback == "transpose":
        second = keras.layers.Conv2D(32, 3, strides=2, padding="same")
        back = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", use_bias=False)
    else:
        second = keras.layers.Conv2D(32, 3, padding="same")
        back = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)
    block = keras_fsnn.FeedbackSpikingBlock(
        forward=[
            keras.Sequential([keras.layers.Conv2D(16, 3, padding="same"), keras.layers.BatchNormalization(momentum=0.9)]),
            keras.Sequential([second, keras.layers.BatchNormalization(momentum=0.9)]),
        ],
        feedback=back,
        time_steps=time_steps, neuron=neuron, threshold=2.0, dropout=dropout, solver=solver,
        solver_steps=30, spectral_norm=True, norm_bound=1.0, seed=seed, name="fsnn",
    )
    inputs = keras.Input((8, 8, 1))
    normalised = keras.layers.Normalization(mean=0.3, variance=0.18, name="normalise")(inputs)
    rates = block(normalised)
    logits = keras.layers.Dense(10, name="readout")(keras.layers.Flatten()(rates))
    return keras.Model(inputs, logits, name="digits_fsnn")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--time-steps", type=int, default=30)
    parser.add_argument("--neuron", default="if", choices=["if", "lif"])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--solver", default="broyden", choices=sorted(keras_fsnn.solvers.SOLVERS))
    parser.add_argument("--no-jit", action="store_true", help="run eagerly-traced graphs without XLA")
    parser.add_argument("--feedback", default="transpose", choices=["transpose", "conv"],
                        help="layer 2 -> 1: a stride-2 Conv2DTranspose, or a same-size Conv2D (NIR can hold it)")
    parser.add_argument("--nir", metavar="FILE", help="export the trained model as a NIR graph (needs --feedback conv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    if args.nir and args.feedback != "conv":
        parser.error("--nir needs --feedback conv: NIR has no transposed convolution")

    x_train, x_test, y_train, y_test = load_digits(args.seed)
    model = build_model(args.time_steps, args.neuron, args.dropout, args.solver, args.seed, args.feedback)
    steps_per_epoch = int(np.ceil(len(x_train) / 64))
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps_per_epoch * int(args.epochs * 0.6), steps_per_epoch * int(args.epochs * 0.85)], [0.05, 0.005, 0.0005])
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=not args.no_jit,
    )
    print(f"backend: {keras.backend.backend()}, parameters: {model.count_params():,}, T = {args.time_steps}")
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=args.verbose,
              callbacks=[keras_fsnn.callbacks.EquilibriumMonitor()])

    loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    block = model.get_layer("fsnn")
    normalised = model.get_layer("normalise")(x_test)
    sim = block.simulate(normalised, record_residuals=True)
    rates = [float(np.mean(keras.ops.convert_to_numpy(r))) for r in sim["rates"]]
    residuals = keras.ops.convert_to_numpy(sim["residuals"])
    print(f"test accuracy: {accuracy:.4f} ({len(x_test)} images), test loss {loss:.4f}")
    print("average firing rate per layer: " + ", ".join(f"layer {i + 1}: {r:.4f}" for i, r in enumerate(rates)))
    print("equilibrium residual ||f(a[t]) - a[t]|| (test mean): "
          + ", ".join(f"t={t}: {residuals[t - 1]:.4f}" for t in sorted({1, 5, 10, 20, args.time_steps}) if t <= args.time_steps))
    d = block.diagnostics()
    print(f"last backward solve: relative residual {d['backward_residual']:.2e} after {d['backward_iterations']} iterations")
    if args.nir:
        import nir

        from keras_fsnn.nir import to_nir

        nir.write(args.nir, to_nir(model))
        print(f"wrote {args.nir} (NIR {nir.version}; docs/nir.md)")
    return accuracy


if __name__ == "__main__":
    main()
