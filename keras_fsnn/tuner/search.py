"""`keras-fsnn tune`: a hyperparameter search on a dataset, in one call.

The last `validation_fraction` of the training split is held out for the search's
objective; the test split is used once, to report the best model. Searches resume from
their `directory` (keras-tuner's own mechanism) unless `overwrite=True`.
"""

import os
import warnings

import keras
import numpy as np

from keras_fsnn import datasets, validation
from keras_fsnn.metrics import spiking_activity
from keras_fsnn.models import feedback_networks as networks

FAMILIES = {"fsnn": "fsnn", "alexnet_f": "alexnet_f", "cifarnet_f": "cifarnet_f", "mpis": "mpis"}
TUNERS = {"random": "random", "bayesian": "bayesian", "hyperband": "hyperband"}
OBJECTIVES = {
    "accuracy": ("val_accuracy", "max"),
    "firing_rate": ("val_firing_rate", "min"),
    "accuracy_within_rate": ("val_accuracy_within_rate", "max"),
    "accuracy_and_rate": None,  # keras-tuner multi-objective: val_accuracy (max) + val_firing_rate (min)
}
NORMALIZATION = {
    "mnist": (networks.MNIST_MEAN, networks.MNIST_STD),
    "fashion_mnist": (networks.MNIST_MEAN, networks.MNIST_STD),
    "digits": (0.3, 0.42),
    "cifar10": (networks.CIFAR_MEAN, networks.CIFAR_STD),
    "cifar100": (networks.CIFAR_MEAN, networks.CIFAR_STD),
}


def make_hypermodel(family, dataset, layer="dense", **kwargs):
    from keras_fsnn.tuner import HyperAlexNetF, HyperCIFARNetF, HyperFSNN, HyperMPIS

    family = validation.choose("family", family, FAMILIES)
    info = validation.choose("dataset", dataset, {k: datasets.DATASETS[k] for k in NORMALIZATION})
    common = dict(input_shape=info.shape, num_classes=info.num_classes, normalization=NORMALIZATION[info.name])
    if family == "fsnn":
        return HyperFSNN(layer=layer, **common, **kwargs)
    return {"alexnet_f": HyperAlexNetF, "cifarnet_f": HyperCIFARNetF, "mpis": HyperMPIS}[family](**common, **kwargs)


def oracle_seed(seed):
    """The seed handed to keras-tuner for our `seed` (an integer >= 0): `seed + 1`.

    keras-tuner's oracle takes `seed or random.randint(1, 10000)`, so a seed of 0 (the
    default of `tune`, `make_tuner`, `keras-fsnn tune` and examples/tune_digits.py) would
    mean a random one and every run would sample other trials. Shifting by one keeps every
    seed, 0 included, fixed and distinct from the others."""
    return validation.integer("seed", seed, minimum=0) + 1


def make_tuner(hypermodel, tuner="random", objective="accuracy", max_trials=10, epochs=3, seed=0,
               directory="tuning", project_name="search", overwrite=False):
    """A keras-tuner tuner of `hypermodel` whose sampled trials are fixed by `seed` (0
    included: see `oracle_seed`)."""
    import keras_tuner

    kind = validation.choose("tuner", tuner, TUNERS)
    validation.choose("objective", objective, OBJECTIVES)
    if objective == "accuracy_and_rate":
        goal = [keras_tuner.Objective("val_accuracy", "max"), keras_tuner.Objective("val_firing_rate", "min")]
    else:
        goal = keras_tuner.Objective(*OBJECTIVES[objective])
    if objective == "accuracy_within_rate" and hypermodel.rate_bound is None:
        raise ValueError("objective='accuracy_within_rate' needs a rate bound: pass rate_bound=... (--rate-bound).")
    common = dict(objective=goal, seed=oracle_seed(seed), directory=directory, project_name=project_name, overwrite=overwrite)
    if kind == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=validation.integer("epochs", epochs, minimum=1),
                                     factor=3, **common)
    cls = keras_tuner.RandomSearch if kind == "random" else keras_tuner.BayesianOptimization
    return cls(hypermodel, max_trials=validation.integer("max_trials", max_trials, minimum=1), **common)


def tune(family="fsnn", dataset="digits", layer="dense", data_dir=None, tuner="random", objective="accuracy",
         max_trials=10, epochs=3, batch_size=128, limit=None, validation_fraction=0.1, search_space=None,
         rate_bound=None, synops=False, seed=0, directory="tuning", project_name=None, overwrite=False, verbose=1):
    """Run a search and return a summary of the best trial (and its test-set result)."""
    validation.number("validation_fraction", validation_fraction, 0.0, 1.0, low_open=True, high_open=True)
    hypermodel = make_hypermodel(family, dataset, layer=layer, search_space=search_space, rate_bound=rate_bound,
                                 synops=synops, seed=seed)
    project_name = project_name or f"{family}_{dataset}"
    search = make_tuner(hypermodel, tuner, objective, max_trials, epochs, seed, directory, project_name, overwrite)

    x, y = datasets.load_arrays(dataset, "train", data_dir)
    x_test, y_test = datasets.load_arrays(dataset, "test", data_dir)
    if limit:
        x, y, x_test, y_test = x[:limit], y[:limit], x_test[:limit], y_test[:limit]
    x, x_test = _to_unit(x), _to_unit(x_test)
    held_out = max(1, int(round(len(x) * validation_fraction)))
    x_train, y_train, x_val, y_val = x[:-held_out], y[:-held_out], x[-held_out:], y[-held_out:]

    keras.utils.set_random_seed(seed)
    fit_kwargs = dict(batch_size=batch_size, validation_data=(x_val, y_val), verbose=verbose)
    if validation.choose("tuner", tuner, TUNERS) != "hyperband":
        fit_kwargs["epochs"] = epochs
    search.search(x_train, y_train, **fit_kwargs)

    best_trial = search.oracle.get_best_trials(1)[0]
    with warnings.catch_warnings():  # keras-tuner reloads the checkpoint into a fresh, unbuilt optimizer
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = search.get_best_models(1)[0]
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    activity = spiking_activity(model, x_test[:1000], synops=synops)
    metrics = {name: best_trial.metrics.get_best_value(name) for name in best_trial.metrics.metrics}
    result = {
        "trial": best_trial.trial_id,
        "hyperparameters": best_trial.hyperparameters.values,
        "score": best_trial.score,
        "validation": {k: float(v) for k, v in metrics.items() if k.startswith("val_")},
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "test_firing_rate": activity["firing_rate"],
        "test_examples": int(len(x_test)),
        "trials": len(search.oracle.trials),
        "directory": os.path.join(directory, project_name),
    }
    if synops:
        result["test_synops"] = activity["synops"]
    return result


def _to_unit(images):
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 else images.astype("float32")


def parse_setting(text):
    """'name=value' -> (name, value) for `--set`: 5 (fixed), 5:30 or 5:30:5 or
    0.001:0.1::log (a range: low:high[:step[:sampling]]), if,lif (a choice list)."""
    if "=" not in text:
        raise ValueError(f"--set takes name=value; received {text!r}.")
    name, value = text.split("=", 1)
    if ":" in value:
        parts = value.split(":")
        low, high = _scalar(parts[0]), _scalar(parts[1])
        step = _scalar(parts[2]) if len(parts) > 2 and parts[2] else None
        sampling = parts[3] if len(parts) > 3 else "linear"
        return name, (low, high, step, sampling)
    if "," in value:
        return name, [_scalar(v) for v in value.split(",")]
    return name, _scalar(value)


def _scalar(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
