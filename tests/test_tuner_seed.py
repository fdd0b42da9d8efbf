"""Searches with the default seed (0) are reproducible: keras-tuner reads a seed of 0 as
"none" and draws one at random (`seed or random.randint(1, 10000)`), so our helpers hand it
`seed + 1`; the HyperModel seeds the initial weights, dropout masks and data order of each
trial. Each search here starts from another ambient random state, as a fresh process would."""

import glob
import json
import os
import random

import keras
import numpy as np
import pytest
from conftest import QUICK_JIT

keras_tuner = pytest.importorskip("keras_tuner")

from keras_fsnn import datasets  # noqa: E402
from keras_fsnn.tuner.search import make_hypermodel, make_tuner, tune  # noqa: E402

# tiny networks (T = 4, 16-48 neurons); every other hyperparameter keeps its default range
TINY = {"time_steps": 4, "units": (16, 48, 16), "solver_steps": (5, 15, 5)}


def disturb(k):
    """Another ambient state of Python's, NumPy's and the backend's random generators."""
    keras.utils.set_random_seed(1000 + k)
    random.seed(os.urandom(8))


def trials(directory):
    """(trial id, hyperparameter values, score) of every trial keras-tuner wrote."""
    found = []
    for path in sorted(glob.glob(os.path.join(directory, "trial_*", "trial.json"))):
        with open(path) as f:
            trial = json.load(f)
        found.append((trial["trial_id"], trial["hyperparameters"]["values"], trial["score"]))
    return found


def test_the_default_search_of_tune_gives_the_same_trials_scores_and_best_model(tmp_path):
    results = []
    for k in range(2):
        disturb(k)
        result = tune(max_trials=1, epochs=1, limit=200, search_space=TINY, directory=str(tmp_path / f"run{k}"),
                      verbose=0)  # seed, tuner, objective, dataset: the defaults
        results.append((trials(result["directory"]), result))
    (first_trials, first), (second_trials, second) = results
    assert len(first_trials) == 1 and all(score is not None for _, _, score in first_trials)
    assert first_trials == second_trials  # the same hyperparameters and exactly the same scores
    for key in ("trial", "hyperparameters", "score", "validation", "test_accuracy", "test_loss", "test_firing_rate"):
        assert first[key] == second[key], key


def test_a_search_built_by_make_tuner_with_the_default_seed_repeats(tmp_path):
    """The example's route (examples/tune_digits.py): make_hypermodel / make_tuner and
    `search`, no global seed set by the caller."""
    x, y = datasets.load_arrays("digits", "train")
    x = x[:160].astype("float32") / 255
    y = y[:160]
    runs = []
    for k in range(2):
        disturb(k)
        hypermodel = make_hypermodel("fsnn", "digits", search_space=TINY, jit_compile=QUICK_JIT)
        tuner = make_tuner(hypermodel, max_trials=2, directory=str(tmp_path / f"run{k}"), project_name="p")
        disturb(k + 10)  # between construction and search, too
        tuner.search(x[:120], y[:120], epochs=1, batch_size=32, validation_data=(x[120:], y[120:]), verbose=0)
        model = tuner.get_best_models(1)[0]
        runs.append((trials(os.path.join(str(tmp_path / f"run{k}"), "p")),
                     np.asarray(model.predict(x[120:], verbose=0))))
    assert len(runs[0][0]) == 2
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])  # the same best model


def test_every_seed_is_fixed_for_keras_tuner_zero_included(tmp_path):
    from keras_fsnn.tuner.search import oracle_seed

    hypermodel = make_hypermodel("fsnn", "digits", search_space=TINY)
    seeds = []
    for k, seed in enumerate([0, 0, 1, 1]):
        disturb(k)
        tuner = make_tuner(hypermodel, tuner=["random", "bayesian"][k % 2], seed=seed,
                           directory=str(tmp_path), project_name=f"p{k}")
        seeds.append(tuner.oracle.seed)
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3]
    assert seeds == [oracle_seed(0)] * 2 + [oracle_seed(1)] * 2
    assert all(seed > 0 for seed in seeds)  # never the "no seed" keras-tuner replaces
    with pytest.raises(ValueError, match="seed"):
        oracle_seed(-1)
    with pytest.raises(TypeError, match="seed"):
        oracle_seed(None)
