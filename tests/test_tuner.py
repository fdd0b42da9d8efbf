"""keras-tuner integration: every HyperModel builds trainable models for random samples of
its space, real tiny searches (random, Bayesian, Hyperband) run offline on sklearn digits,
reproduce with a seed, resume from their directory, and bad search spaces fail early."""

import os
import shutil

import keras
import numpy as np
import pytest
from conftest import QUICK_JIT

keras_tuner = pytest.importorskip("keras_tuner")

from keras_fsnn import cli, datasets
from keras_fsnn.callbacks import FiringRateLogger, block_inputs, spiking_blocks, spiking_layers
from keras_fsnn.metrics import spiking_activity
from keras_fsnn.tuner import HyperAlexNetF, HyperCIFARNetF, HyperFSNN, HyperMPIS
from keras_fsnn.tuner.search import parse_setting

FAST = {"time_steps": (4, 8, 2), "solver_steps": (5, 15, 5)}


def hypermodels():
    return {
        "dense": HyperFSNN((8, 8, 1), 10, layer="dense", search_space={**FAST, "units": (16, 64, 16)},
                           jit_compile=QUICK_JIT),
        "conv": HyperFSNN((8, 8, 1), 10, layer="conv", search_space={**FAST, "filters": (4, 12, 4)}),
        "alexnet_f": HyperAlexNetF((8, 8, 3), 10, search_space={**FAST, "width": [1 / 32, 1 / 16]}),
        "cifarnet_f": HyperCIFARNetF((8, 8, 3), 100, search_space={**FAST, "width": [1 / 32, 1 / 16]}),
        "mpis": HyperMPIS((8, 8, 1), 10, search_space={**FAST, "width": [0.25, 0.5]}),
    }


def random_hp(hypermodel, seed):
    """A random point of the space: declare it, then draw every (also conditional) value."""
    hp = keras_tuner.HyperParameters()
    rng = np.random.default_rng(seed)
    for _ in range(2):  # the second pass draws the leak, declared once neuron='lif' was drawn
        hypermodel.values(hp)
        for parameter in hp.space:
            hp.values[parameter.name] = parameter.random_sample(int(rng.integers(2**31)))
    return hp


@pytest.mark.parametrize("family", ["dense", "conv", "alexnet_f", "cifarnet_f", "mpis"])
def test_hypermodel_builds_trainable_models_for_random_samples(family):
    hypermodel = hypermodels()[family]
    shape = hypermodel.input_shape
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8,) + shape).astype("float32")
    y = rng.integers(0, hypermodel.num_classes, 8)
    neurons = set()
    for seed in range(3):
        hp = random_hp(hypermodel, seed)
        model = hypermodel.build(hp)
        block = spiking_layers(model)[0]
        values = hp.values
        assert block.time_steps == values["time_steps"]
        assert block.neuron.name == values["neuron"]
        assert block.neuron.threshold == pytest.approx(values["threshold"])
        if "norm_bound" in values:  # MPIS has no spectral-norm restriction
            assert block.norm_bound == pytest.approx(values["norm_bound"])
        else:
            assert block.num_streams == values["num_streams"]
        assert block.dropout == pytest.approx(values["dropout"])
        if values["neuron"] == "lif":
            assert block.neuron.leak == pytest.approx(values["leak"])
        neurons.add(values["neuron"])
        before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert all(not np.array_equal(b, a) for b, a in zip(before, after))  # every weight is updated
        assert model.output_shape == (None, hypermodel.num_classes)


def test_width_multiplier_scales_every_layer():
    hypermodel = HyperCIFARNetF((8, 8, 3), 10, search_space={"width": 0.125})
    model = hypermodel.build(keras_tuner.HyperParameters())
    block = spiking_blocks(model)[0]
    assert [stage.layers[-2].filters for stage in block.forward] == [16, 32, 64, 128, 64]


def digits(limit=None):
    x, y = datasets.load_arrays("digits", "train")
    x_val, y_val = datasets.load_arrays("digits", "test")
    x, x_val = x.astype("float32") / 255, x_val.astype("float32") / 255
    return (x[:limit], y[:limit]), (x_val[:limit], y_val[:limit])


SMALL = {"time_steps": (4, 6, 2), "units": (32, 64, 32), "solver_steps": 10, "learning_rate": (0.02, 0.1, None, "log")}


def search(tuner_class, directory, seed=1, max_trials=2, **kwargs):
    (x, y), validation = digits(600)
    hypermodel = HyperFSNN((8, 8, 1), 10, layer="dense", normalization=(0.3, 0.42), search_space=SMALL,
                           rate_examples=128, seed=seed, jit_compile=QUICK_JIT)
    extra = {} if tuner_class is keras_tuner.Hyperband else {"max_trials": max_trials}
    tuner = tuner_class(hypermodel, objective=keras_tuner.Objective("val_accuracy", "max"), seed=seed,
                        directory=str(directory), project_name="digits", **extra, **kwargs)
    fit = {} if tuner_class is keras_tuner.Hyperband else {"epochs": 1}
    tuner.search(x, y, batch_size=64, validation_data=validation, verbose=0, **fit)
    return tuner


@pytest.fixture(scope="module")
def random_search(tmp_path_factory):
    """One finished two-trial random search (seed 1), shared by the tests that read it."""
    directory = tmp_path_factory.mktemp("random_search")
    return search(keras_tuner.RandomSearch, directory), directory


@pytest.mark.backend
def test_random_search_runs_offline_and_its_best_model_saves_and_reloads(random_search, tmp_path):
    tuner, _ = random_search
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    best = tuner.oracle.get_best_trials(1)[0]
    rate = best.metrics.get_best_value("val_firing_rate")
    assert 0.0 < rate < 1.0
    assert best.score > 0.3  # far above chance (0.1) after one epoch

    model = tuner.get_best_models(1)[0]
    (_, _), (x_val, _) = digits(600)
    path = os.path.join(tmp_path, "best.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(model.predict(x_val[:64], verbose=0)),
                                  np.asarray(reloaded.predict(x_val[:64], verbose=0)))
    assert spiking_activity(reloaded, x_val[:128])["firing_rate"] == pytest.approx(rate, abs=0.02)


@pytest.mark.parametrize("tuner_class", [keras_tuner.BayesianOptimization, keras_tuner.Hyperband])
def test_bayesian_and_hyperband_searches_complete(tmp_path, tuner_class):
    kwargs = {"max_epochs": 2, "factor": 2, "hyperband_iterations": 1} if tuner_class is keras_tuner.Hyperband else {}
    tuner = search(tuner_class, tmp_path, **kwargs)
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) >= 2
    assert all(t.metrics.exists("val_firing_rate") for t in completed)


def test_search_is_reproducible_with_a_seed(random_search, tmp_path):
    first, _ = random_search
    second = search(keras_tuner.RandomSearch, tmp_path, seed=1)  # a fresh directory, same seed
    assert len(second.oracle.trials) == len(first.oracle.trials) == 2
    for a, b in zip(first.oracle.trials.values(), second.oracle.trials.values()):
        assert a.hyperparameters.values == b.hyperparameters.values
        assert a.score == pytest.approx(b.score, abs=1e-6)


def test_interrupted_search_resumes_from_its_directory(random_search, tmp_path):
    first, directory = random_search
    done = {t.trial_id: t.score for t in first.oracle.trials.values()}
    shutil.copytree(directory, tmp_path / "search")  # the shared search stays as it was
    resumed = search(keras_tuner.RandomSearch, tmp_path / "search", max_trials=3)  # overwrite=False
    trials = resumed.oracle.trials
    assert len(trials) == 3
    assert {k: trials[k].score for k in done} == done  # the finished trials were not run again


def test_firing_rate_is_spikes_per_neuron_per_step_and_the_bound_ranks_trials():
    hypermodel = HyperFSNN((8, 8, 1), 10, layer="dense", search_space={"time_steps": 6, "neuron": "if", "units": 32})
    model = hypermodel.build(keras_tuner.HyperParameters())
    (x, y), _ = digits(64)
    block = spiking_blocks(model)[0]
    inputs = block_inputs(model, block, x)
    counts = np.asarray(block.simulate(inputs, record_residuals=False, count_spikes=True)["counts"][0])
    expected = counts.sum() / (counts.size * 6)
    activity = spiking_activity(model, x, batch_size=16, synops=True)
    assert activity["firing_rate"] == pytest.approx(expected, rel=1e-6)
    assert activity["layers"][0]["neurons"] == 32
    # the feedback delivers each layer spike to all 32 neurons
    assert activity["synops"] == pytest.approx(counts.sum() / len(x) * 32, rel=1e-5)

    logs = {"val_accuracy": 0.8}
    logger = FiringRateLogger((x, y), rate_bound=0.0)
    logger.set_model(model)
    logger.on_epoch_end(0, logs)
    assert logs["val_firing_rate"] == pytest.approx(expected, rel=1e-6)
    expected_penalty = 1.0 if expected > 0 else 0.0
    assert logs["val_accuracy_within_rate"] == pytest.approx(0.8 - expected_penalty)
    logs = {"val_accuracy": 0.8}
    logger = FiringRateLogger((x, y), rate_bound=1.0)
    logger.set_model(model)
    logger.on_epoch_end(0, logs)
    assert logs["val_accuracy_within_rate"] == pytest.approx(0.8)


@pytest.mark.parametrize("space, message", [
    ({"time_steps": (0, 10)}, "search_space['time_steps']"),
    ({"time_steps": 0}, "search_space['time_steps']"),
    ({"neuron": ["if", "izhikevich"]}, "search_space['neuron']"),
    ({"leak": (0.5, 1.5)}, "search_space['leak']"),
    ({"threshold": (3.0, 1.0)}, "low > high"),
    ({"solver": ("broyden", "fixed_point")}, "not a range"),
    ({"learning_rate": (0.0, 0.1, None, "log")}, "search_space['learning_rate']"),
    ({"timesteps": 5}, "unknown hyperparameters ['timesteps']"),
])
def test_invalid_search_space_raises_a_clear_error_at_construction(space, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        HyperFSNN((8, 8, 1), 10, search_space=space)


def test_bad_hypermodel_arguments_raise():
    with pytest.raises(ValueError, match="layer"):
        HyperFSNN((8, 8, 1), 10, layer="recurrent")
    with pytest.raises(ValueError, match="input_shape"):
        HyperFSNN((8, 8), 10, layer="conv")
    with pytest.raises(ValueError, match="rate_bound"):
        HyperFSNN((8, 8, 1), 10, rate_bound=1.5)
    with pytest.raises(ValueError, match="synops"):
        HyperMPIS((8, 8, 1), 10, synops=True)
    with pytest.raises(ValueError, match=r"search_space\['num_streams'\]"):
        HyperMPIS((8, 8, 1), 10, search_space={"num_streams": 4})


def test_parse_setting():
    assert parse_setting("time_steps=5") == ("time_steps", 5)
    assert parse_setting("time_steps=5:30:5") == ("time_steps", (5, 30, 5, "linear"))
    assert parse_setting("learning_rate=0.001:0.1::log") == ("learning_rate", (0.001, 0.1, None, "log"))
    assert parse_setting("neuron=if,lif") == ("neuron", ["if", "lif"])
    with pytest.raises(ValueError, match="name=value"):
        parse_setting("time_steps")


def test_tune_command_prints_the_best_trial_and_its_firing_rate(tmp_path, capsys):
    cli.main(["tune", "fsnn", "--dataset", "digits", "--max-trials", "2", "--epochs", "1", "--limit", "400",
              "--objective", "accuracy_within_rate", "--rate-bound", "0.3", "--set", "time_steps=4",
              "--set", "units=32:64:32", "--set", "solver_steps=10", "--directory", str(tmp_path), "--verbose", "0"])
    out = capsys.readouterr().out
    assert "best trial" in out and "average firing rate" in out and "val_accuracy_within_rate" in out


def test_the_tune_command_searches_the_mpis_family_and_its_lists_come_from_the_registries(tmp_path, capsys):
    """`keras-fsnn tune mpis` (HyperMPIS); the command's choices of neuron, solver, gradient
    and family are the registries'."""
    from keras_fsnn import gradients, neurons, solvers
    from keras_fsnn.tuner.search import FAMILIES

    cli.main(["tune", "mpis", "--dataset", "digits", "--max-trials", "1", "--epochs", "1", "--limit", "120",
              "--set", "time_steps=3", "--set", "width=0.5", "--set", "num_streams=2", "--set", "gradient=one_step",
              "--directory", str(tmp_path), "--verbose", "0"])
    out = capsys.readouterr().out
    assert "best trial" in out and "num_streams" in out
    actions = {a.dest: a for a in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert list(actions["neuron"].choices) == list(neurons.NEURONS)
    assert list(actions["solver"].choices) == list(solvers.SOLVERS)
    assert list(actions["gradient"].choices) == list(gradients.GRADIENTS)
    tune_actions = {a.dest: a for a in cli.build_parser()._subparsers._group_actions[0].choices["tune"]._actions}
    assert list(tune_actions["family"].choices) == list(FAMILIES)
