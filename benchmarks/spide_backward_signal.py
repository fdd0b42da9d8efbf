"""How much of a trained SPIDE model's gradient the spiking backward stage can carry.

    python benchmarks/spide_backward_signal.py --data-dir DATA              # the spide_mnist preset
    python benchmarks/spide_backward_signal.py --weights RUN/model.keras --batches 24

Two measurements on real MNIST training images (paper 002 §4.2, Fig. 2):

1. The backward stage's input s * dL/da (loss scale s times the gradient of the batch-mean
   cross-entropy with respect to the last layer's rates). A ternary neuron at rest fires
   its first spike within T_B steps only if its input current reaches V_th^b / T_B; the
   script prints the quantiles of each sample's largest |s g| entry and the fraction of
   samples and entries above that current.
2. The mean forward and backward firing rates and the relative backward residual over
   `--batches` training batches with the learning rate 0 (training mode, dropout on, as
   during training; EquilibriumMonitor's epoch means).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_fsnn  # noqa: E402
from keras_fsnn import backend  # noqa: E402
from keras_fsnn.callbacks import EquilibriumMonitor, spiking_blocks  # noqa: E402

sys.path.insert(0, HERE)
from common import DEFAULT_DATA  # noqa: E402


def backward_input(model, block, x, y):
    """s * dL/da for the batch-mean cross-entropy, one row per sample."""
    rates = ops.convert_to_tensor(keras.Model(model.inputs, block.output)(x, training=False))
    head = model.layers[model.layers.index(block) + 1:]

    def loss_of(a):
        for layer in head:
            a = layer(a)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, a)

    _, pullback = backend.vjp(loss_of, rates)
    grad = pullback(ops.ones(()))
    return block.backward.scale * ops.convert_to_numpy(grad).reshape(len(x), -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a .keras file (default: the spide_mnist preset)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    model = keras.saving.load_model(args.weights) if args.weights else keras_fsnn.zoo.load("spide_mnist")
    block = spiking_blocks(model)[0]
    gradient = block.get_config()["gradient"]
    if gradient != "spide":
        raise ValueError(f"--weights: the model's block uses gradient={gradient!r}; this needs 'spide'")
    x, y = keras_fsnn.datasets.load_arrays("mnist", "train", args.data_dir)
    x = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
    order = np.random.default_rng(0).permutation(len(x))[: args.batches * args.batch_size]
    x, y = x[order], y[order]

    backward = block.backward
    current = backward.neuron.threshold / backward.time_steps
    sg = backward_input(model, block, x[: args.batch_size], y[: args.batch_size])
    largest = np.abs(sg).max(axis=1)
    q = np.quantile(largest, [0.1, 0.5, 0.9, 1.0])
    print(f"s * |dL/da|, largest entry per sample ({args.batch_size} images): "
          f"10% {q[0]:.2e}, median {q[1]:.2e}, 90% {q[2]:.2e}, max {q[3]:.2e}")
    print(f"one spike in T_B = {backward.time_steps} steps needs {current:.4f}: "
          f"{(largest >= current).mean():.1%} of samples, {(np.abs(sg) >= current).mean():.1%} of entries reach it")

    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0,
                        callbacks=[EquilibriumMonitor()]).history
    prefix = f"{block.name}/"
    rates = [history[k][0] for k in sorted(history) if k.startswith(prefix + "rate_")]
    print(f"over {args.batches} training batches: forward rates {' / '.join(f'{r:.3f}' for r in rates)}, "
          f"backward rate {history[prefix + 'backward_firing_rate'][0]:.4f}, "
          f"backward residual {history[prefix + 'backward_residual'][0]:.3f}")


if __name__ == "__main__":
    main()
