"""A constrained hyperparameter search: the most accurate feedback spiking network on
scikit-learn's digits whose average firing rate stays at most 0.10 spikes per neuron and
time step. Real data (bundled with scikit-learn), offline, a few CPU minutes.

    python examples/tune_digits.py                      # random search, 10 trials
    python examples/tune_digits.py --tuner bayesian --rate-bound 0.05

The objective `val_accuracy_within_rate` is the validation accuracy of a trial whose
validation firing rate is within the bound, and that accuracy minus 1 otherwise
(`keras_fsnn.callbacks.FiringRateLogger`), so every trial within the bound ranks above
every trial over it. The search resumes if interrupted (run it again with the same
--directory); --overwrite starts afresh. The test split is used once, for the best model.

Reproducible: `make_tuner` hands keras-tuner `--seed` + 1 (keras-tuner reads a seed of 0
as "none" and draws one at random), and the HyperModel seeds each trial's initial weights,
dropout masks and data order, so two runs print the same trials, scores and best model.
"""

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_fsnn import datasets  # noqa: E402
from keras_fsnn.metrics import spiking_activity  # noqa: E402
from keras_fsnn.tuner import HyperFSNN  # noqa: E402
from keras_fsnn.tuner.search import make_tuner  # noqa: E402

TUNERS = ("random", "bayesian")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuner", choices=TUNERS, default="random")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rate-bound", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default="tuning")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    x, y = datasets.load_arrays("digits", "train")
    x_test, y_test = datasets.load_arrays("digits", "test")
    x, x_test = x.astype("float32") / 255, x_test.astype("float32") / 255
    x_train, y_train, x_val, y_val = x[:-270], y[:-270], x[-270:], y[-270:]  # 1,077 / 270 held out

    hypermodel = HyperFSNN(
        (8, 8, 1), 10, layer="dense", normalization=(0.3, 0.42), rate_bound=args.rate_bound, seed=args.seed,
        # narrow the default space: a small dense layer, a budget of T <= 20 and 20 solver steps
        search_space={"units": (64, 256, 64), "time_steps": (5, 20, 5), "solver_steps": 20,
                      "learning_rate": (0.01, 0.1, None, "log")})
    print("search space:\n" + hypermodel.space.describe())
    tuner = make_tuner(hypermodel, args.tuner, objective="accuracy_within_rate", max_trials=args.max_trials,
                       seed=args.seed, directory=args.directory, project_name=f"digits_{args.tuner}",
                       overwrite=args.overwrite)
    tuner.search(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_val, y_val), verbose=0)

    print(f"\n{'trial':>5} {'val acc':>8} {'val rate':>9}  hyperparameters")
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        accuracy = trial.metrics.get_best_value("val_accuracy")
        rate = trial.metrics.get_last_value("val_firing_rate")
        values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in trial.hyperparameters.values.items())
        print(f"{trial.trial_id:>5} {accuracy:8.4f} {rate:9.4f}  {values}")

    best = tuner.oracle.get_best_trials(1)[0]
    with warnings.catch_warnings():  # keras-tuner reloads the checkpoint into a fresh, unbuilt optimizer
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = tuner.get_best_models(1)[0]
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    rate = spiking_activity(model, x_test)["firing_rate"]
    within = best.score > 0  # the objective is val_accuracy within the bound, val_accuracy - 1 (<= 0) over it
    bound = f"within the rate bound {args.rate_bound}" if within else (
        f"NO trial met the rate bound {args.rate_bound}; the most accurate one over it")
    print(f"\nbest trial {best.trial_id} ({bound}): validation accuracy "
          f"{best.metrics.get_best_value('val_accuracy'):.4f}; test accuracy {accuracy:.4f} on {len(x_test)} images, "
          f"average firing rate {rate:.4f} spikes per neuron per step")
    return accuracy, rate


if __name__ == "__main__":
    main()
