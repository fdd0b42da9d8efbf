"""Cost of one adjoint-solver iteration apart from J^T, at the sizes of the zoo models.

    python benchmarks/solver_cost.py
    python benchmarks/solver_cost.py --sizes 128x12544 --repeats 5

All three solvers run their full 30 iterations (tol 0) on a diagonal J^T (a negligible
apply), compiled (graph mode on TensorFlow, jit on JAX), in one process side by side. What
is left is the solver's own work: the fixed-point iteration touches a few (batch, D)
vectors; Broyden also reads the written part of its two (batch, 27, D) histories twice per
iteration, GMRES the written part of its one (batch, 31, D) basis twice, so at large D both
are bound by memory bandwidth. Sizes: F400 (128 x 400), fsnn_mnist (128 x 14*14*64), and
AlexNet-F's feedback layer (32 x 16*16*96; batch 32 as in the paper's benchmark). Printed:
ms per iteration, and Broyden / GMRES.
"""

import argparse
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
from keras_fsnn import solvers  # noqa: E402

SIZES = {"f400": (128, 400), "fsnn_mnist": (128, 14 * 14 * 64), "alexnet_f": (32, 16 * 16 * 96)}
STEPS = 30


def per_iteration_ms(solver, batch, size, repeats):
    rng = np.random.default_rng(0)
    g = ops.convert_to_tensor(rng.normal(size=(batch, size)).astype("float32"))
    # a contraction whose slow modes keep every solver busy for all STEPS iterations
    diagonal = ops.convert_to_tensor(np.clip(0.9 * rng.normal(size=(size,)), -0.99, 0.99).astype("float32"))
    solve = compiled(lambda rhs: solver(lambda y: y * diagonal, rhs, steps=STEPS, tol=0.0).solution, xla=False)
    seconds = median_seconds(lambda: ops.convert_to_numpy(solve(g)), repeats)
    return 1e3 * seconds / STEPS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES),
                        help=f"model names ({', '.join(SIZES)}) or BATCHxD")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores; {STEPS} iterations, diagonal J^T")
    print(f"{'size':>12} {'batch x D':>12} {'fixed point ms':>15} {'Broyden ms':>11} {'GMRES ms':>9} "
          f"{'Broyden/GMRES':>14}")
    for name in args.sizes:
        batch, size = SIZES[name] if name in SIZES else map(int, name.split("x"))
        fixed, broyden, gmres = (per_iteration_ms(solver, batch, size, args.repeats)
                                 for solver in (solvers.fixed_point, solvers.broyden, solvers.gmres))
        print(f"{name:>12} {f'{batch}x{size}':>12} {fixed:15.2f} {broyden:11.2f} {gmres:9.2f} "
              f"{broyden / gmres:14.2f}", flush=True)

if __name__ == "__main__":
    main()
