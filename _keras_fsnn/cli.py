"""`keras-fsnn`: train, evaluate and list the zoo models from the command line.

    keras-fsnn train fsnn_fmnist --data-dir ~/data --output-dir runs/fmnist
    keras-fsnn train fsnn_fmnist --output-dir runs/fmnist --resume      # after an interruption
    keras-fsnn train mpis_fmnist --checkpoint-every 50                    # also checkpoint within epochs
    keras-fsnn eval fsnn_fmnist --data-dir ~/data                         # the pretrained preset
    keras-fsnn eval fsnn_fmnist --weights runs/fmnist/model.keras --time-steps 10
    keras-fsnn list
    keras-fsnn tune fsnn --dataset digits --layer conv --max-trials 6 --epochs 3 --set time_steps=5:20:5
    keras-fsnn export-nir fsnn_fmnist fsnn_fmnist.nir                     # for other simulators (docs/nir.md)
    keras-fsnn prepare nmnist --data-dir ~/data                           # event files -> a tfds dataset, once
    keras-fsnn train fsnn_mnist --data-dir ~/data --data-source tfds      # the same batches through tfds

A user error (a value out of range, an unknown preset, missing data, an existing run
folder) prints the command's usage and one line `keras-fsnn CMD: error: ...`, and exits
with status 2, as argparse does; `--debug` shows the Python traceback instead.

This module lives outside the package `keras_fsnn`, whose `__init__` imports Keras (and with
it TensorFlow, seconds) because it registers the layers for `keras.saving.load_model`. Here
only the argument parser is imported at start; a command's own flags are built only when it
is given, and Keras only when a command needs it: `keras-fsnn --help`, `list` and `eval --help`
read the zoo's catalogue (`_keras_fsnn.catalogue`) and import no Keras.
`keras_fsnn.cli` re-exports `main` for Python callers.
"""

import argparse
import math
import shlex
import sys

COMMANDS = {
    "train": "train a zoo model with its paper recipe",
    "eval": "evaluate a zoo model: accuracy, firing rates, residual",
    "list": "list the zoo presets and their status",
    "tune": "search hyperparameters with keras-tuner (needs keras-fsnn[tune])",
    "export": "turn a finished training run into a zoo preset folder",
    "export-nir": "write a trained model as a NIR graph (needs keras-fsnn[nir]; docs/nir.md)",
    "prepare": "prepare a dataset for tensorflow-datasets from its official files (needs keras-fsnn[tfds])",
}
# the extra that brings an optional module a command imports
EXTRAS = {"tensorflow_datasets": "tfds", "tensorboard": "train", "keras_tuner": "tune", "kt_legacy": "tune", "nir": "nir", "sklearn": "examples"}
# what a command's user errors are (the library's argument checks, missing files and presets)
USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, ModuleNotFoundError)
MAX_SEED = 2**32 - 1


class UsageError(SystemExit, ValueError):
    """A user error reported as argparse reports one: exit status 2 (`code`), the message as
    its text. It is a ValueError too, so that in-process callers of `main` that catch the
    library's ValueError still do."""

    def __init__(self, message):
        super().__init__(message)
        self.code = 2


# argparse types: each names what it allows (argparse adds the flag: "argument --limit: ...")
def _integer(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; received {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}; received {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


positive_integer = _integer(1)
count = _integer(0)
seed_integer = _integer(0, MAX_SEED)


def _real(low=None, low_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; received {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number; received {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be a number {'>' if low_open else '>='} {low:g}; received {text!r}")
        return value

    parse.__name__ = "number"
    return parse


finite = _real()  # the range is the library's to check (the layers name theirs)
non_negative = _real(0.0)
positive = _real(0.0, low_open=True)


def verbosity(text):
    if text not in ("auto", "0", "1", "2"):
        raise argparse.ArgumentTypeError(f"must be auto, 0, 1 or 2; received {text!r}")
    return text if text == "auto" else int(text)


def _debug_flag(parser):
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")


def _add_model_flags(parser):
    # the choices are the registries' (a user's registered neuron, solver or backward mode too)
    from keras_fsnn import gradients, neurons, solvers
    from keras_fsnn.layers.feedback_spiking_block import BN_STATISTICS
    from keras_fsnn.layers.implicit_streams import RATES
    from keras_fsnn.layers.stages import SIMULATION_DTYPES

    parser.add_argument("--time-steps", type=positive_integer, help="T >= 1 (default: the paper's for this model)")
    parser.add_argument("--neuron", choices=list(neurons.NEURONS))
    parser.add_argument("--leak", type=finite, help="LIF leak, in (0, 1]")
    parser.add_argument("--threshold", type=finite)
    parser.add_argument("--dropout", type=finite, help="in [0, 1)")
    parser.add_argument("--solver", choices=list(solvers.SOLVERS),
                        help="adjoint solver (default: broyden, the paper's; gmres: fewer, cheaper "
                             "iterations where J^T acts per sample, see docs/ide.md)")
    parser.add_argument("--solver-steps", type=positive_integer)
    parser.add_argument("--solver-tol", type=finite,
                        help="relative residual at which the adjoint solve stops early (default 1e-5)")
    parser.add_argument("--bn-statistics", choices=list(BN_STATISTICS),
                        help="batch-norm statistics: the paper's (default) or the released code's")
    parser.add_argument("--gradient", choices=list(gradients.GRADIENTS),
                        help="backward mode (default: the model's; MPIS: one_step = the released code's)")
    parser.add_argument("--rates", choices=list(RATES),
                        help="MPIS models: average rates (paper) or first-step spikes (released code)")
    parser.add_argument("--backward-time-steps", type=positive_integer,
                        help="SPIDE models: T_B of the spiking backward stage")
    parser.add_argument("--backward-scale", type=positive, help="SPIDE models: the loss scale s > 0 (gain on dL/da)")
    parser.add_argument("--simulation-dtype", choices=list(SIMULATION_DTYPES),
                        help="precision of the spike simulations' currents (bfloat16: faster on CPUs/GPUs with "
                             "bfloat16 units; potentials, rates and gradients stay float32)")


MODEL_FLAGS = ["time_steps", "neuron", "leak", "threshold", "dropout", "solver", "solver_steps", "solver_tol",
               "bn_statistics", "gradient", "rates", "backward_time_steps", "backward_scale", "simulation_dtype"]


def _model_overrides(args):
    return {n: getattr(args, n) for n in MODEL_FLAGS if getattr(args, n, None) is not None}


RECIPE_FLAGS = ["epochs", "batch_size", "learning_rate", "milestones", "warmup_steps", "random_shift", "random_flip"]


def train_command(name, recipe_overrides, model_overrides, seed=0):
    """The `keras-fsnn train` command line of a run with these overrides (e.g. the schedule a
    time budget planned, to repeat it without one), or None where an override has no flag."""
    flags = []
    for key, value in {**recipe_overrides, **model_overrides}.items():
        if key not in RECIPE_FLAGS + MODEL_FLAGS:
            return None
        if key == "random_flip":
            value = "on" if value else "off"
        values = value if isinstance(value, (list, tuple)) else [value]
        flags += ["--" + key.replace("_", "-"), *(str(v) for v in values)]
    if seed:
        flags += ["--seed", str(seed)]
    return " ".join(["keras-fsnn", "train", name, *flags])


def build_parser(command=None):
    """The argument parser (of every command's flags by default); with `command`, only that
    command's flags are built (the others are listed by name; "" builds none), so that `keras-fsnn --help`
    and `keras-fsnn list` import no Keras (the flags' lists of neurons, solvers and recipes come from the
    registries, which need it)."""
    parser = argparse.ArgumentParser(prog="keras-fsnn", description="Feedback spiking networks (IDE) for Keras.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if command is None or command == name:
            ADD_FLAGS[name](sub)
        _debug_flag(sub)
    return parser


def _train_flags(train):
    from keras_fsnn.training.recipes import RECIPES

    train.add_argument("name", choices=list(RECIPES), metavar="NAME", help=f"a recipe: {', '.join(RECIPES)}")
    train.add_argument("--data-dir", help="folder with the dataset files (default: $KERAS_FSNN_DATA or ~/.keras/datasets)")
    train.add_argument("--output-dir", help="run folder (default: runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --output-dir")
    train.add_argument("--initial-weights", metavar="PRESET_OR_FILE",
                       help="start from these weights (a zoo preset or a .weights.h5/.keras file) instead of a fresh "
                            "initialisation; the optimizer starts afresh")
    train.add_argument("--checkpoint-every", type=positive_integer, metavar="STEPS",
                       help="also checkpoint every STEPS training steps within an epoch (default: at epoch ends only)")
    train.add_argument("--epochs", type=positive_integer, help=">= 1 (default: the recipe's)")
    train.add_argument("--batch-size", type=positive_integer, help=">= 1 (default: the recipe's)")
    train.add_argument("--learning-rate", type=non_negative, help="finite, >= 0 (default: the recipe's)")
    train.add_argument("--milestones", type=positive_integer, nargs="*", metavar="EPOCH",
                       help="epochs at which the learning rate is divided by 10, strictly increasing and smaller "
                            "than --epochs (none given: no decay)")
    train.add_argument("--warmup-steps", type=count, help="linear learning-rate warmup iterations (>= 0)")
    train.add_argument("--random-shift", type=count, metavar="PIXELS",
                       help="augment by random shifts of up to PIXELS, fewer than the image's height and width "
                            "(default: the paper's, 4 for CIFAR, 0 otherwise)")
    train.add_argument("--random-flip", choices=["on", "off"],
                       help="augment by random horizontal flips (default: the paper's, on for CIFAR only)")
    train.add_argument("--limit", type=positive_integer, metavar="N",
                       help="use only the first N (>= 1) training and test examples")
    train.add_argument("--validation-examples", type=positive_integer, metavar="N",
                       help="hold out the last N training examples: epochs report val_ figures on them, and the "
                            "test set is evaluated only after the last epoch")
    train.add_argument("--time-budget", type=positive, metavar="SECONDS",
                       help="size the schedule (epochs, milestones, warmup) to finish within SECONDS of wall time, "
                            "from a training step timed first (docs/backends.md)")
    train.add_argument("--seed", type=seed_integer, default=0, help=f"in [0, {MAX_SEED}] (default: 0)")
    train.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                       help="XLA compilation (auto: on, except conv models on TensorFlow, faster without on CPU)")
    train.add_argument("--verbose", type=verbosity, default="auto", help="auto, 0, 1 or 2 (Keras's)")
    train.add_argument("--pipeline", choices=["auto", "tf_data", "numpy"], default="auto",
                       help="input pipeline: tf.data, or NumPy batches that need no TensorFlow (auto: tf.data if "
                            "installed); both give the same batches")
    _data_source_flags(train)
    _add_model_flags(train)


def _data_source_flags(parser):
    parser.add_argument("--data-source", choices=["auto", "files", "tfds"], default="auto",
                        help="read the official files, or tensorflow-datasets (prepared from those files the first "
                             "time, in --tfds-dir); both give the same batches (auto: the files, then a prepared "
                             "tfds dataset)")
    parser.add_argument("--tfds-dir", help="tensorflow-datasets' data folder (default: $TFDS_DATA_DIR or "
                                           "~/tensorflow_datasets)")


def _prepare_flags(parser):
    parser.add_argument("name", choices=["mnist", "fashion_mnist", "cifar10", "cifar100", "nmnist", "cifar10_dvs",
                                         "dvs_gesture"], metavar="DATASET",
                        help="mnist, fashion_mnist, cifar10, cifar100, nmnist, cifar10_dvs or dvs_gesture")
    parser.add_argument("--data-dir", help="folder with the official files, in DATA_DIR/DATASET or DATA_DIR itself "
                                           "(default: $KERAS_FSNN_DATA or ~/.keras/datasets)")
    parser.add_argument("--tfds-dir", help="where to write the tfds dataset (default: $TFDS_DATA_DIR or "
                                           "~/tensorflow_datasets)")
    parser.add_argument("--time-steps", type=positive_integer, default=30, help="N-MNIST frames of 3 ms (default: 30)")


def _eval_flags(evaluate):
    from _keras_fsnn import catalogue

    evaluate.add_argument("name", help=f"a preset ({', '.join(catalogue.names())}) or a preset folder")
    evaluate.add_argument("--weights", default="pretrained", help="'pretrained', or a .keras / .weights.h5 file")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--limit", type=positive_integer, metavar="N", help="evaluate on the first N (>= 1) test examples")
    evaluate.add_argument("--batch-size", type=positive_integer, default=256, help=">= 1 (default: 256)")
    evaluate.add_argument("--time-steps", type=positive_integer, help="simulate for T >= 1 steps instead of the model's own")
    evaluate.add_argument("--simulation-dtype", choices=["float32", "bfloat16"],
                          help="simulate in this precision instead of the model's own")


def _list_flags(parser):
    pass


def _tune_flags(tune):
    from keras_fsnn.tuner.search import FAMILIES

    tune.add_argument("family", choices=list(FAMILIES))
    tune.add_argument("--dataset", default="digits",
                      help="digits (embedded), mnist, fashion_mnist, cifar10 or cifar100 (default: digits)")
    tune.add_argument("--layer", choices=["dense", "conv"], default="dense", help="for the fsnn family")
    tune.add_argument("--data-dir")
    tune.add_argument("--tuner", choices=["random", "bayesian", "hyperband"], default="random")
    tune.add_argument("--objective", choices=["accuracy", "firing_rate", "accuracy_within_rate", "accuracy_and_rate"],
                      default="accuracy")
    tune.add_argument("--rate-bound", type=positive, help="largest allowed average firing rate (accuracy_within_rate)")
    tune.add_argument("--synops", action="store_true", help="also log SynOps per sample")
    tune.add_argument("--max-trials", type=positive_integer, default=10, help=">= 1 (default: 10)")
    tune.add_argument("--epochs", type=positive_integer, default=3, help="epochs per trial, >= 1 (hyperband: the most)")
    tune.add_argument("--batch-size", type=positive_integer, default=128, help=">= 1 (default: 128)")
    tune.add_argument("--limit", type=positive_integer, metavar="N",
                      help="use only the first N (>= 1) training and test examples")
    tune.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="fix or narrow a hyperparameter: 5 | 5:30[:step[:log]] | if,lif (repeatable)")
    tune.add_argument("--seed", type=seed_integer, default=0, help=f"in [0, {MAX_SEED}] (default: 0)")
    tune.add_argument("--directory", default="tuning", help="the tuner's folder; an interrupted search resumes")
    tune.add_argument("--project-name")
    tune.add_argument("--overwrite", action="store_true", help="start the search afresh")
    tune.add_argument("--verbose", type=_integer(0, 2), default=1, help="0, 1 or 2 (default: 1)")


def _export_flags(export):
    export.add_argument("run_dir")
    export.add_argument("--to", required=True, help="the preset folder to write, e.g. zoo/fsnn_fmnist")
    export.add_argument("--data-dir", help="dataset folder for the test-slice check (default: the run's)")
    export.add_argument("--note", help="a remark for the model card (e.g. how the result compares with the target)")


def _export_nir_flags(parser):
    parser.add_argument("source", metavar="PRESET_OR_FILE",
                        help="a zoo preset name, a preset folder, or a .keras file holding a FeedbackSpikingBlock model")
    parser.add_argument("out", metavar="OUT.nir", help="the NIR file to write (HDF5, nir.read reads it)")
    parser.add_argument("--dt", type=positive, default=1.0, help="the time of one simulation step (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.nir if it exists")


ADD_FLAGS = {"train": _train_flags, "eval": _eval_flags, "list": _list_flags, "tune": _tune_flags,
             "export": _export_flags, "export-nir": _export_nir_flags, "prepare": _prepare_flags}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no options but -h
    parser = build_parser(command if command in COMMANDS else "")  # "": no command's flags
    args = parser.parse_args(argv)
    try:
        RUN[args.command](args, argv)
    except USER_ERRORS as error:
        if args.debug or isinstance(error, SystemExit):
            raise
        subparser = parser._subparsers._group_actions[0].choices[args.command]
        subparser.print_usage(sys.stderr)
        message = str(error) if not isinstance(error, ModuleNotFoundError) else (
            f"{error} (this command needs an optional dependency: pip install "
            f"'keras-fsnn[{EXTRAS.get((error.name or '').split('.')[0], 'train,tune,nir')}]')")
        print(f"{subparser.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message) from error


def _train(args, argv):
    from keras_fsnn.training import train as run_training

    result = run_training(
        args.name, data_dir=args.data_dir, output_dir=args.output_dir, resume=args.resume, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, milestones=args.milestones,
        warmup_steps=args.warmup_steps, random_shift=args.random_shift,
        random_flip=None if args.random_flip is None else args.random_flip == "on", limit=args.limit, seed=args.seed,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit], verbose=args.verbose,
        model_overrides=_model_overrides(args), pipeline=args.pipeline, checkpoint_every=args.checkpoint_every,
        initial_weights=args.initial_weights, validation_examples=args.validation_examples,
        time_budget=args.time_budget, data_source=args.data_source, tfds_dir=args.tfds_dir,
        command="keras-fsnn " + " ".join(shlex.quote(a) for a in argv))
    _print_result(args.name, result)


def _eval(args, argv):
    from keras_fsnn.training import evaluate_preset
    from keras_fsnn.training.trainer import check_evaluation_options

    check_evaluation_options(limit=args.limit, batch_size=args.batch_size, time_steps=args.time_steps)
    result = evaluate_preset(args.name, weights=args.weights, data_dir=args.data_dir, limit=args.limit,
                             batch_size=args.batch_size, time_steps=args.time_steps,
                             simulation_dtype=args.simulation_dtype)
    _print_result(args.name, result)


def _export(args, argv):
    from keras_fsnn.training import export_run

    metadata = export_run(args.run_dir, args.to, data_dir=args.data_dir, note=args.note)
    print(f"wrote {args.to}: test accuracy {100 * metadata['test_accuracy']:.2f}%, sha256 {metadata['weights_sha256']}")


def _tune(args, argv):
    from keras_fsnn.tuner.search import parse_setting
    from keras_fsnn.tuner.search import tune as run_search

    space = dict(parse_setting(text) for text in args.set)
    result = run_search(
        args.family, args.dataset, layer=args.layer, data_dir=args.data_dir, tuner=args.tuner,
        objective=args.objective, max_trials=args.max_trials, epochs=args.epochs, batch_size=args.batch_size,
        limit=args.limit, search_space=space, rate_bound=args.rate_bound, synops=args.synops, seed=args.seed,
        directory=args.directory, project_name=args.project_name, overwrite=args.overwrite, verbose=args.verbose)
    print(f"best trial {result['trial']} of {result['trials']} (score {result['score']:.4f}):")
    for name, value in result["hyperparameters"].items():
        print(f"  {name:<14} {value}")
    print("  validation: " + ", ".join(f"{k} {v:.4f}" for k, v in result["validation"].items()))
    print(f"  test accuracy {result['test_accuracy']:.4f} on {result['test_examples']} images, "
          f"average firing rate {result['test_firing_rate']:.4f}")
    print(_json_line(result))


def _list(args, argv):
    from _keras_fsnn import catalogue

    entries = catalogue.list_presets()
    width = max(len(entry["name"]) for entry in entries)
    for entry in entries:
        print(f"{entry['name']:<{width}}  {entry['status']}")


def _export_nir(args, argv):
    import os

    import nir

    from keras_fsnn.nir import to_nir
    from keras_fsnn.zoo import open_model

    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it.")
    graph = to_nir(open_model(args.source), dt=args.dt)
    temporary = f"{args.out}.{os.getpid()}.partial"
    try:  # written whole or not at all
        nir.write(temporary, graph)
        os.replace(temporary, args.out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    print(f"wrote {args.out}: NIR {nir.version}, {len(graph.nodes)} nodes, {len(graph.edges)} edges, "
          f"{graph.metadata['layers']} spiking layer(s) of {graph.metadata['neuron'].upper()} neurons, "
          f"T = {graph.metadata['time_steps']}, dt = {graph.metadata['dt']:g}")


def _prepare(args, argv):
    import time

    from keras_fsnn.datasets import prepare_tfds

    start = time.monotonic()
    builder = prepare_tfds(args.name, data_dir=args.data_dir, tfds_dir=args.tfds_dir, time_steps=args.time_steps)
    splits = ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items())
    print(f"{builder.name}: {splits} examples in {builder.data_dir} ({time.monotonic() - start:.1f} s)")


RUN = {"train": _train, "eval": _eval, "list": _list, "tune": _tune, "export": _export, "export-nir": _export_nir,
       "prepare": _prepare}


def _json_line(result):
    """`result` as one line of strict JSON: non-finite numbers as null (as in result.json)."""
    import json

    from keras_fsnn.training.trainer import json_safe

    clean, replaced = json_safe(result)
    if replaced:
        clean["non_finite"] = replaced
    return json.dumps(clean, allow_nan=False)


def _print_result(name, result):
    print(f"{name}: test accuracy {result['accuracy']:.4f} on {result['examples']} images, loss {result['loss']:.4f}")
    if "firing_rates" in result:
        from keras_fsnn.zoo import layer_label

        layers = result.get("firing_rate_layers") or [str(i + 1) for i in range(len(result["firing_rates"]))]
        print("average firing rate: "
              + ", ".join(f"{layer_label(layer)} {r:.4f}" for layer, r in zip(layers, result["firing_rates"])))
        streams = result.get("residual_at_T_per_stream")
        per_stream = f" (per stream: {', '.join(f'{r:.4f}' for r in streams)})" if streams else ""
        print(f"equilibrium residual ||f(a[T]) - a[T]|| at T={result['time_steps']}: {result['residual_at_T']:.4f}"
              + per_stream)
    print(_json_line({k: v for k, v in result.items() if k != "residual_trace"}))


if __name__ == "__main__":
    main()
