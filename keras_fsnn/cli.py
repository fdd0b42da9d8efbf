"""`keras-fsnn`: train, evaluate and list the zoo models from the command line.

    keras-fsnn train fsnn_fmnist --data-dir ~/data --output-dir runs/fmnist
    keras-fsnn train fsnn_fmnist --output-dir runs/fmnist --resume      # after an interruption
    keras-fsnn train mpis_fmnist --checkpoint-every 50                    # also checkpoint within epochs
    keras-fsnn eval fsnn_fmnist --data-dir ~/data                         # the pretrained preset
    keras-fsnn eval fsnn_fmnist --weights runs/fmnist/model.keras --time-steps 10
    keras-fsnn list
    keras-fsnn tune fsnn --dataset digits --layer conv --max-trials 6 --epochs 3 --set time_steps=5:20:5
"""

import argparse
import json
import shlex
import sys


def _add_model_flags(parser):
    # the choices are the registries' (a user's registered neuron, solver or backward mode too)
    from keras_fsnn import gradients, neurons, solvers
    from keras_fsnn.layers.feedback_spiking_block import BN_STATISTICS
    from keras_fsnn.layers.implicit_streams import RATES
    from keras_fsnn.layers.stages import SIMULATION_DTYPES

    parser.add_argument("--time-steps", type=int, help="T (default: the paper's for this model)")
    parser.add_argument("--neuron", choices=list(neurons.NEURONS))
    parser.add_argument("--leak", type=float)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--solver", choices=list(solvers.SOLVERS),
                        help="adjoint solver (default: broyden, the paper's; gmres: fewer, cheaper "
                             "iterations where J^T acts per sample, see docs/ide.md)")
    parser.add_argument("--solver-steps", type=int)
    parser.add_argument("--solver-tol", type=float,
                        help="relative residual at which the adjoint solve stops early (default 1e-5)")
    parser.add_argument("--bn-statistics", choices=list(BN_STATISTICS),
                        help="batch-norm statistics: the paper's (default) or the released code's")
    parser.add_argument("--gradient", choices=list(gradients.GRADIENTS),
                        help="backward mode (default: the model's; MPIS: one_step = the released code's)")
    parser.add_argument("--rates", choices=list(RATES),
                        help="MPIS models: average rates (paper) or first-step spikes (released code)")
    parser.add_argument("--backward-time-steps", type=int, help="SPIDE models: T_B of the spiking backward stage")
    parser.add_argument("--backward-scale", type=float, help="SPIDE models: the loss scale s (gain on dL/da)")
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


def build_parser():
    from keras_fsnn import zoo
    from keras_fsnn.training.recipes import RECIPES
    from keras_fsnn.tuner.search import FAMILIES

    parser = argparse.ArgumentParser(prog="keras-fsnn", description="Feedback spiking networks (IDE) for Keras.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a zoo model with its paper recipe")
    train.add_argument("name", choices=list(RECIPES), metavar="NAME", help=f"a recipe: {', '.join(RECIPES)}")
    train.add_argument("--data-dir", help="folder with the dataset files (default: $KERAS_FSNN_DATA or ~/.keras/datasets)")
    train.add_argument("--output-dir", help="run folder (default: runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --output-dir")
    train.add_argument("--initial-weights", metavar="PRESET_OR_FILE",
                       help="start from these weights (a zoo preset or a .weights.h5/.keras file) instead of a fresh "
                            "initialisation; the optimizer starts afresh")
    train.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                       help="also checkpoint every STEPS training steps within an epoch (default: at epoch ends only)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--milestones", type=int, nargs="*",
                       help="epochs at which the learning rate is divided by 10 (none given: no decay)")
    train.add_argument("--warmup-steps", type=int, help="linear learning-rate warmup iterations")
    train.add_argument("--random-shift", type=int, metavar="PIXELS",
                       help="augment by random shifts of up to PIXELS (default: the paper's, 4 for CIFAR, 0 otherwise)")
    train.add_argument("--random-flip", choices=["on", "off"],
                       help="augment by random horizontal flips (default: the paper's, on for CIFAR only)")
    train.add_argument("--limit", type=int, help="use only the first N training and test examples")
    train.add_argument("--validation-examples", type=int, metavar="N",
                       help="hold out the last N training examples: epochs report val_ figures on them, and the "
                            "test set is evaluated only after the last epoch")
    train.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="size the schedule (epochs, milestones, warmup) to finish within SECONDS of wall time, "
                            "from a training step timed first (docs/backends.md)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                       help="XLA compilation (auto: on, except conv models on TensorFlow, faster without on CPU)")
    train.add_argument("--verbose", default="auto")
    train.add_argument("--pipeline", choices=["auto", "tf_data", "numpy"], default="auto",
                       help="input pipeline: tf.data, or NumPy batches that need no TensorFlow (auto: tf.data if installed)")
    _add_model_flags(train)

    evaluate = commands.add_parser("eval", help="evaluate a zoo model: accuracy, firing rates, residual")
    evaluate.add_argument("name", help=f"a preset ({', '.join(zoo.names())}) or a preset folder")
    evaluate.add_argument("--weights", default="pretrained", help="'pretrained', or a .keras / .weights.h5 file")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--limit", type=int, help="evaluate on the first N test examples")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--time-steps", type=int, help="simulate for T steps instead of the model's own")
    evaluate.add_argument("--simulation-dtype", choices=["float32", "bfloat16"],
                          help="simulate in this precision instead of the model's own")

    commands.add_parser("list", help="list the zoo presets and their status")

    tune = commands.add_parser("tune", help="search hyperparameters with keras-tuner (needs keras-fsnn[tune])")
    tune.add_argument("family", choices=list(FAMILIES))
    tune.add_argument("--dataset", default="digits",
                      help="digits (embedded), mnist, fashion_mnist, cifar10 or cifar100 (default: digits)")
    tune.add_argument("--layer", choices=["dense", "conv"], default="dense", help="for the fsnn family")
    tune.add_argument("--data-dir")
    tune.add_argument("--tuner", choices=["random", "bayesian", "hyperband"], default="random")
    tune.add_argument("--objective", choices=["accuracy", "firing_rate", "accuracy_within_rate", "accuracy_and_rate"],
                      default="accuracy")
    tune.add_argument("--rate-bound", type=float, help="largest allowed average firing rate (accuracy_within_rate)")
    tune.add_argument("--synops", action="store_true", help="also log SynOps per sample")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--epochs", type=int, default=3, help="epochs per trial (hyperband: the most)")
    tune.add_argument("--batch-size", type=int, default=128)
    tune.add_argument("--limit", type=int, help="use only the first N training and test examples")
    tune.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="fix or narrow a hyperparameter: 5 | 5:30[:step[:log]] | if,lif (repeatable)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--directory", default="tuning", help="the tuner's folder; an interrupted search resumes")
    tune.add_argument("--project-name")
    tune.add_argument("--overwrite", action="store_true", help="start the search afresh")
    tune.add_argument("--verbose", type=int, default=1)

    export = commands.add_parser("export", help="turn a finished training run into a zoo preset folder")
    export.add_argument("run_dir")
    export.add_argument("--to", required=True, help="the preset folder to write, e.g. zoo/fsnn_fmnist")
    export.add_argument("--data-dir", help="dataset folder for the test-slice check (default: the run's)")
    export.add_argument("--note", help="a remark for the model card (e.g. how the result compares with the target)")

    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from keras_fsnn.training import train as run_training

        verbose = int(args.verbose) if str(args.verbose).isdigit() else args.verbose
        result = run_training(
            args.name, data_dir=args.data_dir, output_dir=args.output_dir, resume=args.resume, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.learning_rate, milestones=args.milestones,
            warmup_steps=args.warmup_steps, random_shift=args.random_shift,
            random_flip=None if args.random_flip is None else args.random_flip == "on", limit=args.limit, seed=args.seed,
            jit_compile={"auto": "auto", "on": True, "off": False}[args.jit], verbose=verbose, model_overrides=_model_overrides(args),
            pipeline=args.pipeline, checkpoint_every=args.checkpoint_every, initial_weights=args.initial_weights,
            validation_examples=args.validation_examples, time_budget=args.time_budget,
            command="keras-fsnn " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
        _print_result(args.name, result)
    elif args.command == "eval":
        from keras_fsnn.training import evaluate_preset

        result = evaluate_preset(args.name, weights=args.weights, data_dir=args.data_dir, limit=args.limit,
                              batch_size=args.batch_size, time_steps=args.time_steps,
                              simulation_dtype=args.simulation_dtype)
        _print_result(args.name, result)
    elif args.command == "export":
        from keras_fsnn.training import export_run

        metadata = export_run(args.run_dir, args.to, data_dir=args.data_dir, note=args.note)
        print(f"wrote {args.to}: test accuracy {100 * metadata['test_accuracy']:.2f}%, sha256 {metadata['weights_sha256']}")
    elif args.command == "tune":
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
        print(json.dumps(result))
    else:
        from keras_fsnn import zoo

        entries = zoo.list_presets()
        width = max(len(entry["name"]) for entry in entries)
        for entry in entries:
            print(f"{entry['name']:<{width}}  {entry['status']}")


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
    print(json.dumps({k: v for k, v in result.items() if k != "residual_trace"}))


if __name__ == "__main__":
    main()
