"""What the adjoint solver's stopping tolerance costs in gradient accuracy, and saves in time.

    python benchmarks/adjoint_tolerance.py                     # fsnn_mnist preset, 2 MNIST batches
    python benchmarks/adjoint_tolerance.py --model fsnn_fmnist --batches 4
    python benchmarks/adjoint_tolerance.py --model alexnet_f --weights initial --simulation-dtype bfloat16 \
        --settings broyden:30:1e-5 broyden:30:1e-3 gmres:30:1e-3      # an untrained CIFAR preset, bf16 currents

For real training batches of a zoo preset, the parameter gradient of the cross-entropy is
computed with each solver setting and compared with a tight reference (Broyden, 100
iterations, tol 1e-9): relative error ||grad - grad_ref|| / ||grad_ref||, the solve's
relative residual (max over the batch), its iterations, and the step's median wall time
(graph mode). The forward pass is the same in every call: dropout is off and the batch-norm
moving statistics (which a training call updates, and which the simulation uses) are
restored before each call, so the differences come from the solve alone.

`--weights initial` measures at the architecture's fresh initialisation (seed 0), for a
preset that has no trained weights yet. `--simulation-dtype bfloat16` runs every setting
with bfloat16 simulation currents while the reference stays float32, so the error then
includes the low-precision forward simulation; the row "(bf16 forward)" is the reference
solve on the bfloat16 simulation, i.e. that part alone.
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

from common import DEFAULT_DATA, median_seconds  # noqa: E402
from keras_fsnn import datasets, solvers, zoo  # noqa: E402
from keras_fsnn.training.recipes import get_recipe  # noqa: E402

REFERENCE = ("broyden", 100, 1e-9)
SETTINGS = [("broyden", 30, 1e-5), ("broyden", 30, 1e-4), ("broyden", 30, 1e-3), ("broyden", 30, 1e-2),
            ("fixed_point", 30, 1e-5), ("gmres", 30, 1e-5), ("gmres", 30, 1e-4), ("gmres", 30, 1e-3),
            ("gmres", 30, 1e-2)]


def gradient_function(model):
    import tensorflow as tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def gradient(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    return tf.function(gradient)  # a new trace per setting: the solver is read when tracing


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fsnn_mnist", help="a trained zoo preset with a FeedbackSpikingBlock")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--weights", choices=["pretrained", "initial"], default="pretrained",
                        help="the preset's trained weights, or the architecture's initialisation (seed 0)")
    parser.add_argument("--simulation-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="precision of the simulation currents in the compared settings (reference: float32)")
    parser.add_argument("--settings", nargs="+", metavar="SOLVER:STEPS:TOL",
                        help="settings to compare (default: Broyden and GMRES at tol 1e-5 .. 1e-2, fixed point)")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        sys.exit("This benchmark times TensorFlow graphs; run it with KERAS_BACKEND=tensorflow.")

    recipe = get_recipe(args.model)
    x, y = datasets.load_arrays(recipe.dataset, "train", args.data_dir)
    settings = [(name, int(steps), float(tol)) for name, steps, tol in
                (text.split(":") for text in args.settings)] if args.settings else SETTINGS
    keras.utils.set_random_seed(0)
    model = zoo.load(args.model, weights="pretrained" if args.weights == "pretrained" else None, dropout=0.0)
    block = model.get_layer("fsnn")
    stored = [v.numpy() for v in model.non_trainable_variables]

    def restore():
        for variable, value in zip(model.non_trainable_variables, stored):
            variable.assign(value)

    def run(setting, xb, yb, dtype):
        solver, steps, tol = setting
        block.backward.solve, block.backward.steps, block.backward.tol = solvers.get_solver(solver), steps, tol
        block.simulation_dtype = dtype  # read when tracing
        gradient = gradient_function(model)
        result = {}

        def call():
            restore()
            result["grad"] = np.concatenate([keras.ops.convert_to_numpy(g).ravel() for g in gradient(xb, yb)])

        seconds = median_seconds(call, args.repeats)
        return result["grad"], seconds, block.diagnostics()

    print(f"{args.model} preset ({args.weights} weights), batch {args.batch_size}, {keras.backend.backend()} graph "
          f"mode; settings with {args.simulation_dtype} simulation currents; reference: {REFERENCE[0]} "
          f"{REFERENCE[1]} iterations, tol {REFERENCE[2]:g}, float32")
    print(f"{'batch':>5} {'solver':>14} {'tol':>7} {'iters':>5} {'residual':>9} {'grad rel err':>12} {'step s':>7}")
    for k in range(args.batches):
        batch = slice(k * args.batch_size, (k + 1) * args.batch_size)
        xb, yb = x[batch].astype("float32") / 255.0, y[batch]  # the zoo's models take images in [0, 1]
        reference, seconds, d = run(REFERENCE, xb, yb, "float32")
        rows = [(REFERENCE, "float32")] + ([(REFERENCE, args.simulation_dtype)] if args.simulation_dtype != "float32" else [])
        for setting, dtype in rows + [(s, args.simulation_dtype) for s in settings]:
            first = setting == REFERENCE and dtype == "float32"
            grad, seconds, d = (reference, seconds, d) if first else run(setting, xb, yb, dtype)
            error = np.linalg.norm(grad - reference) / np.linalg.norm(reference)
            label = "(bf16 forward)" if setting == REFERENCE and dtype != "float32" else setting[0]
            print(f"{k:>5} {label:>14} {setting[2]:>7.0e} {d['backward_iterations']:>5.0f} "
                  f"{d['backward_residual']:>9.1e} {error:>12.1e} {seconds:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
