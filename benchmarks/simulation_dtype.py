"""float32 against bfloat16 spike simulations (`simulation_dtype`), side by side in one run.

    python benchmarks/simulation_dtype.py                        # ~10 min on 2 CPU cores
    python benchmarks/simulation_dtype.py --models fsnn_mnist --repeats 5

Part 1, the kernel: one 64-channel 5x5 convolution on a 14x14 map at batch 128 (the
fsnn_mnist feedback), float32 and bfloat16, ms and GFLOP/s. On a CPU with bfloat16 matrix
units (AMX, AVX512_BF16) oneDNN runs the bfloat16 one several times faster; elsewhere it
may be slower, which this prints too.

Part 2, whole training steps of zoo models (batch 128 unless --batch-size), the recipe's optimizer and the
trainer's execution mode (`auto_jit_compile`: graph mode for convolutional models on
TensorFlow, XLA otherwise): median seconds per `train_on_batch` of the float32 and the
bfloat16 model, alternating in one process, on random images of the dataset's shape, and
the ratio. The bfloat16 model has the float32 one's weights. Only the simulations' currents
change precision, so the step gains less than the kernel: the neuron updates, the
differentiable f pass and the adjoint solve stay float32.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_fsnn.training.recipes import get_recipe  # noqa: E402
from keras_fsnn.training.trainer import auto_jit_compile, build_model, compile_model  # noqa: E402
from common import median_seconds  # noqa: E402

DTYPES = ("float32", "bfloat16")


def conv_kernel(repeats):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 14, 14, 64)).astype("float32")
    w = rng.normal(size=(5, 5, 64, 64)).astype("float32")
    flops = 2 * 128 * 14 * 14 * 64 * 64 * 25
    print("conv 64->64 5x5 on 14x14, batch 128 (the fsnn_mnist feedback):")
    times = {}
    for dtype in DTYPES:
        xx, ww = ops.cast(x, dtype), ops.cast(w, dtype)
        run = lambda: ops.convert_to_numpy(ops.cast(ops.conv(xx, ww, padding="same")[0, 0, 0, 0], "float32"))  # noqa: E731
        times[dtype] = median_seconds(run, repeats)
        print(f"  {dtype:9s} {times[dtype] * 1e3:8.1f} ms  {flops / times[dtype] / 1e9:7.1f} GFLOP/s")
    print(f"  bfloat16 / float32 time: {times['bfloat16'] / times['float32']:.3f}")


def train_steps(name, repeats, batch):
    models = {}
    for dtype in DTYPES:
        model = build_model(name, simulation_dtype=dtype)
        compile_model(model, get_recipe(name), 469, jit_compile=auto_jit_compile(model))
        models[dtype] = model
    models["bfloat16"].set_weights(models["float32"].get_weights())
    rng = np.random.default_rng(0)
    shape = models["float32"].input_shape[1:]
    x = rng.uniform(0, 1, (batch,) + tuple(shape)).astype("float32")
    y = rng.integers(0, 10, batch)
    for model in models.values():
        model.train_on_batch(x, y)
    samples = {dtype: [] for dtype in DTYPES}
    for _ in range(repeats):  # alternate, so load changes hit both alike
        for dtype, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            samples[dtype].append(time.perf_counter() - start)
    medians = {dtype: statistics.median(v) for dtype, v in samples.items()}
    mode = "xla" if auto_jit_compile(models["float32"]) else "graph"
    print(f"  {name:14s} {mode:5s} {medians['float32']:9.3f} s {medians['bfloat16']:9.3f} s "
          f"{medians['bfloat16'] / medians['float32']:7.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fsnn_mnist", "spide_mnist", "mpis_fmnist", "fsnn_fmnist"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (the PyTorch reference for "
                        "alexnet_f is batch 32, T = 30: 3.55 s per step)")
    args = parser.parse_args(argv)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")
    conv_kernel(max(args.repeats, 5))
    print(f"training step, batch {args.batch_size} (median s):")
    print(f"  {'model':14s} {'mode':5s} {'float32':>11s} {'bfloat16':>11s} {'ratio':>7s}")
    for name in args.models:
        train_steps(name, args.repeats, args.batch_size)


if __name__ == "__main__":
    main()
