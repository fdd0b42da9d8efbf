"""The zoo: exact parameter counts of the architectures, honest presets, verified
weights, and trained presets that reproduce their recorded accuracy."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_paths import SHARED
from keras import ops

from keras_fsnn.training import evaluate_preset, load_for_evaluation
from keras_fsnn import zoo
from keras_fsnn.models import ARCHITECTURES, count_parameters

PAPER_COUNTS = {
    "fsnn_mnist": 229_642,
    "fsnn_fmnist": 478_810,
    "fsnn_nmnist": 290_762,
    "alexnet_f": 3_709_514,
    "alexnet_f_cifar100": 5_184_164,
    "cifarnet_f": 11_840_010,
    "cifarnet_f_cifar100": 14_789_220,
    # SPIDE (paper 002 Table 3; no batch norm, Frobenius restriction: no alpha)
    "spide_mnist": 274_826,
    "spide_lenet": 606_740,
    "spide_alexnet_f": 3_706_762,
    "spide_cifarnet_f": 11_835_146,
    "spide_cifarnet_f_cifar100": 14_784_356,
    # MPIS (paper 003 Tables 1, 3; seed-code.md §9.5 for the released models' exact counts)
    "mpis_fmnist": 100_682,
    "mpis_nmnist": 185_578,
    "mpis_cifar10": 11_787_658,
    "mpis_cifar100": 14_756_356,
    "mpis_cifar10_large": 28_512_138,
    "mpis_cifar100_large": 29_986_788,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_architecture_has_the_papers_parameter_count(name):
    model = zoo.load(name, weights=None)
    assert count_parameters(model) == PAPER_COUNTS[name]
    spectral_alphas = len(model.trainable_weights) - len([w for w in model.trainable_weights if "alpha" not in w.path])
    assert spectral_alphas == (0 if name.startswith(("spide", "mpis")) else 1)  # the one excluded trainable scalar


def test_list_names_every_preset_and_its_status():
    entries = {e["name"]: e for e in zoo.list_presets()}
    assert set(entries) == set(PAPER_COUNTS)
    for entry in entries.values():
        trained = entry["metadata"].get("status") == "trained"
        assert entry["status"].startswith("trained:" if trained else "not trained yet")
        if trained:  # the settings the weights were trained with (e.g. simulation_dtype='bfloat16')
            arguments = json.load(open(zoo.locate(entry["name"]) + "/config.json"))["arguments"]
            assert all(f"{k}={v!r}" in entry["status"] for k, v in arguments.items() if k != "name")


def test_zoo_is_reachable_from_the_package_as_the_readme_shows():
    """`import keras_fsnn; keras_fsnn.zoo.load(...)` in a fresh interpreter."""
    code = "import keras_fsnn; print(len(keras_fsnn.zoo.list_presets()), callable(keras_fsnn.zoo.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[-2]) == len(zoo.list_presets()) and out[-1] == "True"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(zoo.PresetError, match=r"Unknown zoo preset 'resnet50'. Known presets: 'alexnet_f', .*'fsnn_mnist'"):
        zoo.load("resnet50")


def test_untrained_preset_refuses_pretrained_weights():
    untrained = [e["name"] for e in zoo.list_presets() if e["metadata"].get("status") != "trained"]
    assert untrained, "every preset is trained; nothing to check here"
    with pytest.raises(zoo.PresetError, match=r"has no pretrained weights.*weights=None"):
        zoo.load(untrained[0])


def small_preset(tmp_path):
    keras.utils.set_random_seed(0)
    arguments = {"time_steps": 3, "neuron": "lif"}
    model = ARCHITECTURES["fsnn_fmnist"](**arguments)
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    model(x)
    folder = tmp_path / "tiny_fmnist"
    metadata = {"dataset": "fashion_mnist", "neuron": "if", "time_steps": 3, "test_accuracy": 0.5}
    zoo.save_preset(model, str(folder), "fsnn_fmnist", arguments, metadata)
    return model, folder, x


def test_preset_round_trip_gives_the_same_predictions(tmp_path):
    model, folder, x = small_preset(tmp_path)
    loaded = zoo.load(str(folder))
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(loaded(x)))
    metadata = json.load(open(folder / "metadata.json"))
    assert metadata["weights_sha256"] == zoo.sha256(str(folder / "model.weights.h5"))
    assert "**50.00%**" in open(folder / "README.md").read()


def test_a_run_file_is_evaluated_with_its_own_configuration(tmp_path):
    """`keras-fsnn eval NAME --weights run/model.keras`: a run trained with other arguments
    than the preset's is measured as trained, unless the user overrides a setting."""
    run_model = zoo.load("fsnn_fmnist", weights=None, time_steps=2, neuron="lif", leak=0.9)
    path = str(tmp_path / "model.keras")
    run_model.save(path)
    loaded = load_for_evaluation("fsnn_fmnist", path)
    block = [layer for layer in loaded.layers if hasattr(layer, "neuron")][0]
    assert (block.time_steps, block.neuron.name, block.neuron.leak) == (2, "lif", 0.9)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(run_model(x)), ops.convert_to_numpy(loaded(x)))
    overridden = load_for_evaluation("fsnn_fmnist", path, time_steps=4)  # the preset's build, these weights
    assert [layer for layer in overridden.layers if hasattr(layer, "neuron")][0].time_steps == 4
    with pytest.raises(zoo.PresetError, match="Unknown zoo preset 'nope'"):
        load_for_evaluation("nope", path)


def test_corrupted_truncated_or_missing_weights_give_clear_errors(tmp_path):
    _, folder, _ = small_preset(tmp_path)
    weights = folder / "model.weights.h5"
    original = weights.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    with pytest.raises(zoo.PresetError, match=r"corrupted or truncated .*sha256 [0-9a-f]{64}; expected [0-9a-f]{64}"):
        zoo.load(str(folder))
    weights.write_bytes(original[: len(original) // 3])
    with pytest.raises(zoo.PresetError, match=r"corrupted or truncated \(\d+ bytes"):
        zoo.load(str(folder))
    weights.unlink()
    with pytest.raises(zoo.PresetError, match=r"weights file .* is missing"):
        zoo.load(str(folder))
    weights.write_bytes(original)
    zoo.load(str(folder))  # restored: loads again


def test_the_nmnist_preset_builds_the_solver_its_recipe_trains_with():
    """Issue 31 bug 8: the fsnn_nmnist recipe trained with solver="fixed_point" while its
    preset's config built Broyden."""
    from keras_fsnn.inspection import spiking_blocks
    from keras_fsnn.training import build_model

    preset = spiking_blocks(zoo.build("fsnn_nmnist", time_steps=3))[0].backward
    trained = spiking_blocks(build_model("fsnn_nmnist", time_steps=3))[0].backward
    assert preset.get_config() == trained.get_config() and preset.solver == "fixed_point"


def test_a_partial_load_is_an_error_that_changes_nothing(tmp_path):
    """Issue 31 bug 9: Keras loads a file that lacks some layers' weights with only a warning
    ("Affected layers will retain their freshly-initialized weights"), and a mismatched file
    changed some weights before it raised. load_weights loads all or nothing."""
    import h5py

    from keras_fsnn.training import build_model

    model = build_model("fsnn_fmnist", time_steps=2)
    model(np.zeros((1, 28, 28, 1), "float32"))
    path = tmp_path / "part.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:  # drop the readout's weights
        del f["layers/dense"]
    target = build_model("fsnn_fmnist", time_steps=2)
    before = target.get_weights()
    for source in (path, zoo.pretrained_weights_path(zoo.locate("fsnn_mnist"))):  # part of it; another model
        with pytest.raises(zoo.PresetError, match="Could not load weights"):
            zoo.load_weights(target, source)
        for a, b in zip(before, target.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_weights_from_an_explicit_file(tmp_path):
    model, folder, x = small_preset(tmp_path)
    copy = tmp_path / "elsewhere.weights.h5"
    shutil.copy(folder / "model.weights.h5", copy)
    loaded = zoo.load(str(folder), weights=str(copy))
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(loaded(x)))
    with pytest.raises(zoo.PresetError, match="no such file"):
        zoo.load(str(folder), weights=str(tmp_path / "nope.weights.h5"))


TRAINED = [e["name"] for e in zoo.list_presets() if e["metadata"].get("status") == "trained"]


@pytest.mark.parametrize("name", TRAINED)
def test_trained_preset_reproduces_its_recorded_accuracy(name):
    metadata = zoo.list_presets()[[e["name"] for e in zoo.list_presets()].index(name)]["metadata"]
    if not os.path.isdir(os.path.join(SHARED, metadata["dataset"])):
        pytest.skip(f"{metadata['dataset']} not available in {SHARED}")
    recorded = metadata["test_slice"]
    result = evaluate_preset(name, data_dir=SHARED, limit=recorded["examples"])
    assert result["examples"] == recorded["examples"]
    assert abs(result["accuracy"] - recorded["accuracy"]) <= 0.01
    assert abs(result["accuracy"] - metadata["test_accuracy"]) <= 0.03  # the slice is like the full test set
