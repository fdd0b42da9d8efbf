"""Can a step's cost follow the spiking activity on the CPU? The two products of the zoo's
simulation that see only spikes, dense against event-driven, across firing rates.

    python benchmarks/event_driven.py                      # TensorFlow graph mode
    python benchmarks/event_driven.py --rates 0.01 0.05 0.15 --repeats 20

Products (the shapes of the trained presets, batch 128):
  * F400's feedback, spikes (128, 400) @ W (400, 400);
  * F64C5's feedback, a 5x5 64->64 "same" convolution of spike maps (128, 14, 14, 64).
Event-driven forms, each timed with the cost of finding the events (the spikes arrive as
a dense 0/1 tensor, as the simulation makes them):
  * "sparse": the spikes as a SparseTensor (`tf.where`), `tf.sparse.sparse_dense_matmul`
    (the convolution on its im2col patches: the spikes' patches, sparse, times the kernel
    as a (25 x 64, 64) matrix), i.e. work proportional to the number of spikes;
  * "active columns" (dense only): gather the neurons that spike in any sample of the batch
    and multiply by those rows of W (work follows the fraction of neurons active in the
    batch, 1 - (1 - r)^batch);
  * "bfloat16": the same dense product with bfloat16 operands (spikes are exact in
    bfloat16; the weights are rounded), float32 accumulation where oneDNN does so.
Spikes are Bernoulli(r) at each rate r, plus (`--real`) the fsnn_fmnist / fsnn_mnist
presets' own spikes at one simulation step on real data. Every form is checked against the
dense product before it is timed. Prints milliseconds per product and the speed-up of each
form over dense (above 1: faster).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import median_seconds  # noqa: E402

KERNEL = 5


def dense_fc(s, w):
    return tf.matmul(s, w)


def sparse_fc(s, w):
    return tf.sparse.sparse_dense_matmul(tf.sparse.from_dense(s), w)


def active_columns_fc(s, w):
    active = tf.where(tf.reduce_any(s > 0, axis=0))[:, 0]
    return tf.matmul(tf.gather(s, active, axis=1), tf.gather(w, active))


def bfloat16_fc(s, w):
    return tf.cast(tf.matmul(tf.cast(s, tf.bfloat16), tf.cast(w, tf.bfloat16)), tf.float32)


def dense_conv(s, w):
    return tf.nn.conv2d(s, w, 1, "SAME")


def sparse_conv(s, w):
    batch, height, width, channels = s.shape
    patches = tf.image.extract_patches(s, [1, KERNEL, KERNEL, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    rows = tf.reshape(patches, (-1, KERNEL * KERNEL * channels))
    out = tf.sparse.sparse_dense_matmul(tf.sparse.from_dense(rows), tf.reshape(w, (-1, w.shape[-1])))
    return tf.reshape(out, (batch, height, width, w.shape[-1]))


def bfloat16_conv(s, w):
    return tf.cast(tf.nn.conv2d(tf.cast(s, tf.bfloat16), tf.cast(w, tf.bfloat16), 1, "SAME"), tf.float32)


PRODUCTS = {
    "F400 feedback (128x400 @ 400x400)": ((128, 400), (400, 400), 128 * 400 * 400,
                                          {"dense": dense_fc, "sparse": sparse_fc, "active columns": active_columns_fc,
                                           "bfloat16": bfloat16_fc}),
    "F64C5 feedback (5x5 conv, 64->64, 128x14x14)": ((128, 14, 14, 64), (KERNEL, KERNEL, 64, 64),
                                                     128 * 14 * 14 * KERNEL * KERNEL * 64 * 64,
                                                     {"dense": dense_conv, "sparse": sparse_conv,
                                                      "bfloat16": bfloat16_conv}),
}


def real_spikes(data_dir):
    """{product: (spikes, rate)}: the presets' last-layer spikes at the simulation's last
    step on the first 128 training images (what the feedback product receives)."""
    import keras_fsnn

    out = {}
    for product, name, dataset in (("F400", "fsnn_fmnist", "fashion_mnist"), ("F64C5", "fsnn_mnist", "mnist")):
        images, _ = keras_fsnn.datasets.load_arrays(dataset, "train", data_dir=data_dir)
        counts = []
        for shorter in (0, 1):  # spikes of the last step: the counts after T steps minus those after T - 1
            model = keras_fsnn.zoo.load(name)
            block = keras_fsnn.inspection.spiking_layers(model)[0]
            if shorter:
                model = keras_fsnn.zoo.load(name, time_steps=block.time_steps - 1)
                block = keras_fsnn.inspection.spiking_layers(model)[0]
            inputs = keras_fsnn.inspection.block_inputs(model, block, images[:128].astype("float32") / 255.0)
            counts.append(np.asarray(block.simulate(inputs, record_residuals=False, count_spikes=True)["counts"][-1]))
        spikes = (counts[0] - counts[1]).astype("float32")
        if not np.isin(spikes, (0.0, 1.0)).all():
            raise AssertionError(f"{name}: one step's spikes are not 0/1: {np.unique(spikes)[:5]}")
        out[product] = (spikes, float(spikes.mean()))
    return out


def main(argv=None):
    from common import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.15])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--real", action="store_true", help="add the presets' own spikes on real data")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    real = real_spikes(args.data_dir) if args.real else {}
    print(f"TensorFlow {tf.__version__} graph mode, {os.cpu_count()} CPU cores; ms per product (median of "
          f"{args.repeats}), speed-up over dense in brackets\n")
    for product, (shape, kernel_shape, macs, forms) in PRODUCTS.items():
        w = tf.constant(rng.normal(0, 0.05, kernel_shape).astype("float32"))
        cases = [(f"{r:.0%}", (rng.random(shape) < r).astype("float32")) for r in args.rates]
        for key, (spikes, rate) in real.items():
            if product.startswith(key):
                cases.append((f"{rate:.1%} (preset)", spikes))
        print(f"{product}: {2 * macs / 1e9:.2f} GFLOP dense")
        print("| rate | " + " | ".join(forms) + " |")
        print("|" + " --- |" * (len(forms) + 1))
        for label, spikes in cases:
            s = tf.constant(spikes)
            reference = dense_conv(s, w) if len(shape) == 4 else dense_fc(s, w)
            times = {}
            for name, form in forms.items():
                fn = tf.function(form)
                tolerance = 0.05 if name == "bfloat16" else 1e-4
                error = float(tf.reduce_max(tf.abs(fn(s, w) - reference)) / (tf.reduce_max(tf.abs(reference)) + 1e-12))
                if error > tolerance:
                    raise AssertionError(f"{product}, {name}: relative error {error:.2e} against the dense product")
                times[name] = median_seconds(lambda: fn(s, w).numpy(), args.repeats, warmup=2)
            print(f"| {label} | " + " | ".join(
                f"{times[n] * 1e3:.2f}" + ("" if n == "dense" else f" ({times['dense'] / times[n]:.2f}x)")
                for n in forms) + " |", flush=True)
        print()


if __name__ == "__main__":
    main()
