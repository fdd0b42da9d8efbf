"""Cost of one adjoint-solver iteration apart from the convs, at the sizes of the zoo models.

    python benchmarks/solver_cost.py
    python benchmarks/solver_cost.py --sizes 128x12544 --repeats 5
    python benchmarks/solver_cost.py --sizes f400 --xla --repeats 20     # under XLA, as F400 trains

All three solvers run their full 30 iterations (tol 0) on a diagonal J^T (a negligible
apply), compiled (graph mode on TensorFlow, jit on JAX; `--xla`: TensorFlow's XLA, where
the history is updated in place), in one process side by side. What
is left is the solver's own work: the fixed-point iteration touches a few (batch, D)
vectors; Broyden also reads the written part of its two (batch, 27, D) histories twice per
iteration, GMRES the written part of its one (batch, 31, D) basis twice, so at large D both
are bound by memory bandwidth. Sizes: F400 (128 x 400), fsnn_mnist (128 x 14*14*64), and
AlexNet-F's feedback layer (32 x 16*16*96; batch 32 as in the paper's benchmark). Printed:
ms per iteration, and Broyden / GMRES.

On TensorFlow the script also runs Broyden with its bookkeeping op by op ("unfused"), as it
ran before `backend.fused` compiled it with XLA inside graph mode, and prints the ratio; and
the pullback of the rate map sigma (the clip of every spiking layer, applied once per J^T)
autodiff's way and as `backend.fused_gradient` computes it. Both are measured fused at every
size (`FUSE_FROM` set to 0), also where training leaves them op by op (below 8192 values per
sample, such as F400's 400). Beside them: the machine's
streaming bandwidth measured in the same run (one read and one write of a 256 MiB array),
and the time Broyden's history traffic alone would take at that bandwidth (four reads of
the written slots and two slot writes per iteration, averaged over the 30 iterations).
"""

import argparse
import contextlib
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from common import compiled, median_seconds  # noqa: E402
from keras_fsnn import backend, solvers  # noqa: E402
from keras_fsnn.neurons import IF  # noqa: E402

SIZES = {"f400": (128, 400), "fsnn_mnist": (128, 14 * 14 * 64), "alexnet_f": (32, 16 * 16 * 96)}
STEPS = 30


@contextlib.contextmanager
def fusion(on):
    """Trace with TensorFlow's graph-mode fusion forced on or off at every size (its
    threshold, `FUSE_FROM`, set to 0 or to infinity); on JAX nothing changes."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    from keras_fsnn.backend import tensorflow_backend

    threshold = tensorflow_backend.FUSE_FROM
    tensorflow_backend.FUSE_FROM = 0 if on else math.inf
    try:
        yield
    finally:
        tensorflow_backend.FUSE_FROM = threshold


def per_iteration_ms(solver, batch, size, repeats, fused=True, xla=False):
    rng = np.random.default_rng(0)
    g = ops.convert_to_tensor(rng.normal(size=(batch, size)).astype("float32"))
    # a contraction whose slow modes keep every solver busy for all STEPS iterations
    diagonal = ops.convert_to_tensor(np.clip(0.9 * rng.normal(size=(size,)), -0.99, 0.99).astype("float32"))
    with fusion(fused):  # the choice is made when the function is traced, on its first call
        solve = compiled(lambda rhs: solver(lambda y: y * diagonal, rhs, steps=STEPS, tol=0.0).solution, xla=xla)
        ops.convert_to_numpy(solve(g))
    seconds = median_seconds(lambda: ops.convert_to_numpy(solve(g)), repeats)
    return 1e3 * seconds / STEPS


def rate_map_pullback_ms(batch, size, repeats, fused):
    """ms per pullback of the IF rate map at a point where part of it is linear."""
    rng = np.random.default_rng(1)
    z = ops.convert_to_tensor(rng.normal(1.0, 1.5, size=(batch, size)).astype("float32"))
    rate_map = backend.fused_gradient(IF(threshold=2.0).rate_map)

    def run(z, dy):
        _, pullback = backend.vjp(rate_map, z)
        return ops.fori_loop(0, STEPS, lambda i, y: pullback(y), dy)

    with fusion(fused):
        loop = compiled(run, xla=False)
        ops.convert_to_numpy(loop(z, z))
    seconds = median_seconds(lambda: ops.convert_to_numpy(loop(z, z)), repeats)
    return 1e3 * seconds / STEPS


def bandwidth_gb_per_s(repeats):
    """Streaming bandwidth: bytes read + written by y = x + 1 over a 256 MiB float32 array."""
    x = ops.convert_to_tensor(np.ones(64 * 2**20, "float32"))
    add = compiled(lambda x: x + 1.0, xla=False)
    seconds = median_seconds(lambda: ops.convert_to_numpy(add(x)[:1]), repeats)
    return 2 * 4 * 64 * 2**20 / seconds / 1e9


def history_traffic_ms(batch, size, gb_per_s, memory=27):
    """Broyden's history traffic per iteration at `gb_per_s`: four reads of the written
    slots (v = H^T dy, H dG) and two slot writes, averaged over STEPS iterations."""
    written = np.mean([min(i, memory) for i in range(STEPS)])
    return 1e3 * (4 * written + 2) * batch * size * 4 / (gb_per_s * 1e9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES),
                        help=f"model names ({', '.join(SIZES)}) or BATCHxD")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xla", action="store_true", help="the solvers under TensorFlow's XLA (jit_compile)")
    args = parser.parse_args()
    tensorflow = keras.backend.backend() == "tensorflow"
    xla, graph = tensorflow and args.xla, tensorflow and not args.xla
    gb_per_s = bandwidth_gb_per_s(args.repeats)
    print(f"backend {keras.backend.backend()}{' (XLA)' if xla else ''}, {os.cpu_count()} CPU cores; "
          f"{STEPS} iterations, diagonal J^T; streaming bandwidth {gb_per_s:.1f} GB/s")
    header = f"{'size':>12} {'batch x D':>12} {'fixed point ms':>15} {'Broyden ms':>11} {'GMRES ms':>9} {'Broyden/GMRES':>14}"
    if graph:
        header += f" {'Broyden unfused ms':>19} {'fused/unfused':>14}"
    print(header + f" {'history traffic ms':>19}")
    for name in args.sizes:
        batch, size = SIZES[name] if name in SIZES else map(int, name.split("x"))
        fixed, broyden, gmres = (per_iteration_ms(solver, batch, size, args.repeats, xla=xla)
                                 for solver in (solvers.fixed_point, solvers.broyden, solvers.gmres))
        line = f"{name:>12} {f'{batch}x{size}':>12} {fixed:15.2f} {broyden:11.2f} {gmres:9.2f} {broyden / gmres:14.2f}"
        if graph:
            unfused = per_iteration_ms(solvers.broyden, batch, size, args.repeats, fused=False)
            line += f" {unfused:19.2f} {broyden / unfused:14.2f}"
        print(line + f" {history_traffic_ms(batch, size, gb_per_s):19.2f}", flush=True)
    if graph:
        print(f"\nrate-map pullback, ms per J^T\n{'size':>12} {'batch x D':>12} {'autodiff':>9} {'fused':>7} {'ratio':>6}")
        for name in args.sizes:
            batch, size = SIZES[name] if name in SIZES else map(int, name.split("x"))
            plain, fused = (rate_map_pullback_ms(batch, size, args.repeats, f) for f in (False, True))
            print(f"{name:>12} {f'{batch}x{size}':>12} {plain:9.2f} {fused:7.2f} {fused / plain:6.2f}", flush=True)


if __name__ == "__main__":
    main()
