"""The input gradient of a conv applied inside a compiled while loop, as the adjoint solve
applies J^T: autodiff's own form against forward convolutions (stride 1: one with the
flipped kernel; strided: one per output phase; keras_fsnn/layers/forward_input_gradient.py),
under XLA (JAX, or TensorFlow with jit_compile=True) and TensorFlow graph mode, side by side
in one run.

    KERAS_BACKEND=jax python benchmarks/xla_conv_gradient.py
    KERAS_BACKEND=tensorflow python benchmarks/xla_conv_gradient.py

Prints ms per J^T conv and GFLOP/s for F64C5's feedback conv (5x5, 64->64 channels,
14x14 maps, batch 128) by default; `--stride 2 --kernel 3 --channels 256 --size 16 --batch
32` is AlexNet-F's strided layer at 256 channels.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from common import compiled, median_seconds  # noqa: E402
from keras_fsnn import backend  # noqa: E402
from keras_fsnn.layers.forward_input_gradient import conv as forward_gradient_conv  # noqa: E402


def loop_of_pullbacks(conv, iterations, stride=1):
    """x -> J^T applied `iterations` times in a while loop, J^T the pullback of conv at x
    (for a strided conv, applied to every stride-th value of the previous result)."""
    def run(x, w):
        _, pullback = backend.vjp(lambda z: conv(z, w), x)
        # W's scale keeps |z| ~ |x|
        return ops.fori_loop(0, iterations, lambda i, z: pullback(z[:, ::stride, ::stride]), x)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=14)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--stride", type=int, default=1, help="the conv's stride (>1: the polyphase form)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = ops.convert_to_tensor(rng.standard_normal((args.batch, args.size, args.size, args.channels)).astype("float32"))
    w = ops.convert_to_tensor((rng.standard_normal((args.kernel, args.kernel, args.channels, args.channels))
                               / args.kernel / np.sqrt(args.channels)).astype("float32"))
    s = args.stride
    flops = 2.0 * args.batch * (-(-args.size // s)) ** 2 * args.channels ** 2 * args.kernel ** 2
    forms = {"autodiff's input gradient": lambda z, w: ops.conv(z, w, s, "same"),
             ("forward conv, flipped kernel" if s == 1 else "forward convs, one per phase"):
                 lambda z, w: forward_gradient_conv(z, w, "same", "channels_last", s)}
    modes = [("XLA", True)] if keras.backend.backend() == "jax" else [("graph", False), ("XLA", True)]
    print(f"backend {keras.backend.backend()}; batch {args.batch}, {args.size}x{args.size}, {args.channels}->"
          f"{args.channels} channels, {args.kernel}x{args.kernel} kernel, stride {s}; {args.iterations} J^T per loop\n")
    print("| mode | J^T form | ms per J^T conv | GFLOP/s |\n| --- | --- | --- | --- |")
    results = {}
    for mode, jit in modes:
        for form, conv in forms.items():
            fn = compiled(loop_of_pullbacks(conv, args.iterations, s), jit)
            results[mode, form] = ops.convert_to_numpy(fn(x, w))
            seconds = median_seconds(lambda: ops.convert_to_numpy(fn(x, w)), args.repeats) / args.iterations
            print(f"| {mode} | {form} | {seconds * 1e3:.1f} | {flops / seconds / 1e9:.0f} |", flush=True)
    for mode, _ in modes:
        a, b = (results[mode, form] for form in forms)
        print(f"\n{mode}: largest difference between the two forms {np.max(np.abs(a - b)):.2e}, relative to "
              f"the largest value {np.max(np.abs(a - b)) / np.max(np.abs(a)):.2e}")


if __name__ == "__main__":
    main()
