"""Every file the library reads, damaged (missing, truncated, corrupted, wrong magic number,
wrong shape, bad JSON, JSON of the wrong type, missing keys): a clear error naming the
file and what is wrong with it, never a bare EOFError / JSONDecodeError / KeyError /
TypeError from deep inside. Also zoo.load's bad arguments, and the leftovers of killed
exports (issue 32, items 3 and 7)."""

import gzip
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

from keras_fsnn import datasets, zoo
from keras_fsnn.datasets import readers

# ---------------------------------------------------------------- idx files (MNIST format)


def idx(array, dims=None):
    """The IDX encoding of a uint8 array (header for `dims` dimensions if given)."""
    array = np.asarray(array, np.uint8)
    shape = array.shape if dims is None else dims
    return bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + array.tobytes()


def gz(data):
    return gzip.compress(data, mtime=0)


IMAGES = np.arange(4 * 28 * 28, dtype=np.int64).reshape(4, 28, 28) % 256
LABELS = np.array([0, 1, 2, 9])


def write_mnist(folder, images=None, labels=None):
    """t10k files in `folder`; `images` / `labels` are the bytes of the .gz files (valid by default)."""
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gz(idx(IMAGES)) if images is None else images)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gz(idx(LABELS)) if labels is None else labels)
    return folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"


def load_mnist(folder):
    return datasets.load_arrays("mnist", "test", str(folder), source="files")


def test_valid_idx_files_still_load(tmp_path):
    write_mnist(tmp_path)
    x, y = load_mnist(tmp_path)
    assert x.shape == (4, 28, 28, 1) and y.tolist() == LABELS.tolist()


def crc_broken(data):
    data = bytearray(gz(data))
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    return bytes(data)


IDX_DAMAGE = {
    "truncated gzip": (lambda: gz(idx(IMAGES))[:200], r"is truncated: its gzip stream ends early"),
    "gzip CRC mismatch": (lambda: crc_broken(idx(IMAGES)), r"is not a valid gzip file \(.*\): it is corrupted"),
    "not gzip at all": (lambda: idx(IMAGES), r"is not a valid gzip file .*Not a gzipped file"),
    "wrong magic number": (lambda: gz(b"\x00\x00\x09\x03" + idx(IMAGES)[4:]),
                           r"is not an IDX file of unsigned bytes: magic number 00000903 .*expected 00000801 \(labels\) "
                           r"or 00000803 \(images\)"),
    "header cut short": (lambda: gz(bytes([0, 0, 8, 3, 0, 0, 0])),
                         r"is truncated: its header declares 3 dimensions \(16 bytes of header\), but the file has 7"),
    "labels where the images belong": (lambda: gz(idx(LABELS)),
                                       r"holds a 1-dimensional array \(magic number 00000801\); expected 3 dimensions"),
    "32x32 images": (lambda: gz(idx(np.zeros((4, 32, 32)))), r"holds images of 32x32 pixels; expected 28x28"),
    "bytes beyond the header's shape": (lambda: gz(idx(IMAGES) + bytes(10)),
                                        r"is corrupted: header says \(4, 28, 28\) \(3136 bytes\), but 3146 bytes follow"),
}


@pytest.mark.parametrize("case", sorted(IDX_DAMAGE))
def test_damaged_idx_images_file_is_named(tmp_path, case):
    make, pattern = IDX_DAMAGE[case]
    images, _ = write_mnist(tmp_path, images=make())
    with pytest.raises(ValueError, match=re.escape(str(images)) + " " + pattern):
        load_mnist(tmp_path)


def test_labels_out_of_range_and_count_mismatch_name_the_files(tmp_path):
    images, labels = write_mnist(tmp_path, labels=gz(idx([0, 1, 200, 3])))
    with pytest.raises(ValueError, match=re.escape(str(labels)) + r": labels must lie in 0\.\.9; found 0\.\.200"):
        load_mnist(tmp_path)
    write_mnist(tmp_path, labels=gz(idx([0, 1, 2])))
    with pytest.raises(ValueError, match=re.escape(f"{images} has 4 images but {labels} has 3 labels")):
        load_mnist(tmp_path)


# ---------------------------------------------------------------- CIFAR .npz


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def cifar_arrays(**changes):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), "y_train": np.array([[1], [2], [3], [9]], np.uint8),
              "x_test": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "y_test": np.array([0, 5], np.uint8)}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def crc_broken_npz():
    data = bytearray(npz_bytes(**cifar_arrays()))
    data[2000] ^= 0xFF  # inside x_train.npy (the first member, stored uncompressed)
    return bytes(data)


def npy_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 32, 32, 3), np.uint8))
    return buffer.getvalue()


NPZ_DAMAGE = {
    "truncated": (lambda: npz_bytes(**cifar_arrays())[:5000], r"is not a readable \.npz archive \(BadZipFile"),
    "text, not an archive": (lambda: b"x_train,y_train\n1,2\n",
                             r"is not an \.npz archive: it starts with b'x_trai', not with a zip file's b'PK\\x03\\x04'"),
    "a single .npy array": (npy_bytes, r"holds a single array of shape \(4, 32, 32, 3\), not an \.npz archive"),
    "member CRC mismatch": (crc_broken_npz, r": its array 'x_train' cannot be read \(BadZipFile.*truncated or corrupted"),
    "arrays missing": (lambda: npz_bytes(**cifar_arrays(x_train=None, y_train=None)),
                       r"has no array x_train, y_train; it holds x_test, y_test"),
    "channels first": (lambda: npz_bytes(**cifar_arrays(x_train=np.zeros((4, 3, 32, 32), np.uint8))),
                       r": x_train has shape \(4, 3, 32, 32\); expected \(N, 32, 32, 3\)"),
    "one label too many": (lambda: npz_bytes(**cifar_arrays(y_train=np.arange(5))),
                           r": y_train must hold one integer label per image \(4, x_train's length\); found dtype "
                           r"int64, shape \(5,\)"),
    "label 10 of 10 classes": (lambda: npz_bytes(**cifar_arrays(y_train=np.array([0, 1, 2, 10]))),
                               r" \(y_train\): labels must lie in 0\.\.9; found 0\.\.10"),
    "float images": (lambda: npz_bytes(**cifar_arrays(x_train=np.full((4, 32, 32, 3), 0.5))),
                               r": x_train must hold bytes 0\.\.255 \(uint8\); found dtype float64"),
}


def test_valid_cifar_npz_still_loads(tmp_path):
    (tmp_path / "cifar10.npz").write_bytes(npz_bytes(**cifar_arrays()))
    x, y = datasets.load_arrays("cifar10", "train", str(tmp_path), source="files")
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8 and y.tolist() == [1, 2, 3, 9]


@pytest.mark.parametrize("case", sorted(NPZ_DAMAGE))
def test_damaged_cifar_npz_is_named(tmp_path, case):
    make, pattern = NPZ_DAMAGE[case]
    path = tmp_path / "cifar10.npz"
    path.write_bytes(make())
    with pytest.raises(ValueError, match=re.escape(str(path)) + " ?" + pattern):
        datasets.load_arrays("cifar10", "train", str(tmp_path), source="files")


# ---------------------------------------------------------------- CIFAR python pickles


def write_cifar_pickles(tmp_path, test_batch=None, skip=()):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if name not in skip:
            batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 4]}
            (folder / name).write_bytes(pickle.dumps(batch) if name != "test_batch" or test_batch is None else test_batch)
    return folder


PICKLE_DAMAGE = {
    "truncated": (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})[:300],
                  r"is not a readable CIFAR python pickle \((EOFError|UnpicklingError).*truncated or corrupted"),
    "a list, not a batch": (lambda: pickle.dumps([1, 2, 3]),
                            r"is not a CIFAR batch: expected a dict with the keys b'data' and b'labels'; found list"),
    "rows of 1000 bytes": (lambda: pickle.dumps({b"data": np.zeros((2, 1000), np.uint8), b"labels": [1, 2]}),
                           r": data of shape \(2, 1000\); expected \(images, 3072\)"),
    "labels missing": (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),
                       r"is not a CIFAR batch: .*found \[b'data'\]"),
}


@pytest.mark.parametrize("case", sorted(PICKLE_DAMAGE))
def test_damaged_cifar_pickle_is_named(tmp_path, case):
    make, pattern = PICKLE_DAMAGE[case]
    folder = write_cifar_pickles(tmp_path, test_batch=make())
    with pytest.raises(ValueError, match=re.escape(str(folder / "test_batch")) + " ?" + pattern):
        datasets.load_arrays("cifar10", "test", str(tmp_path), source="files")


def test_missing_cifar_batch_says_which_and_what_is_needed(tmp_path):
    folder = write_cifar_pickles(tmp_path, skip=("data_batch_3",))
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "data_batch_3")) +
                       r" is missing: .* must hold the official pickles data_batch_1 \.\.\. data_batch_5 and test_batch"):
        datasets.load_arrays("cifar10", "train", str(tmp_path), source="files")


def test_data_dir_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match=r"`data_dir` must be a folder path \(str or os.PathLike\) or None; received data_dir=3"):
        datasets.load_arrays("mnist", "test", 3)


# ---------------------------------------------------------------- preset files


CONFIG = {"architecture": "fsnn_fmnist", "arguments": {"time_steps": 1, "name": "tiny"}}
SHA = "0" * 64
METADATA = {"status": "trained", "weights_sha256": SHA, "dataset": "fashion_mnist", "test_accuracy": 0.5,
            "time_steps": 1, "neuron": "if"}


def preset(tmp_path, config=CONFIG, metadata=METADATA, name="tiny"):
    """A preset folder whose files hold `config` / `metadata` (JSON-encoded unless bytes)."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for file, value in (("config.json", config), ("metadata.json", metadata)):
        (folder / file).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    (folder / zoo.WEIGHTS_FILE).write_bytes(b"weights")
    return folder


CONFIG_DAMAGE = {
    "truncated": (b'{"architecture": "fsnn_fmnist", "argu',
                  r"config.json is not valid JSON \(Unterminated string .*line 1 column 33.*\): it is truncated or corrupted"),
    "not UTF-8": (b"\xff\xfe\x00garbage", r"config.json is not UTF-8 text .*corrupted"),
    "a list": ([CONFIG], r"config.json must hold a JSON object \{\.\.\.\}; it holds an array"),
    "no arguments": ({"architecture": "fsnn_fmnist"}, r"config.json lacks the key 'arguments' \(an object\); it has 'architecture'"),
    "arguments a list": ({"architecture": "fsnn_fmnist", "arguments": [1]},
                         r"config.json: 'arguments' must be an object; found an array, \[1\]"),
    "architecture a number": ({"architecture": 7, "arguments": {}}, r"config.json: 'architecture' must be a string; found an integer, 7"),
    "misspelt argument": ({"architecture": "fsnn_fmnist", "arguments": {"time_step": 3}},
                          r"config.json: fsnn_fmnist takes no argument 'time_step'; it takes .*time_steps"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_DAMAGE))
def test_damaged_config_json_is_a_preset_error_naming_it(tmp_path, case):
    config, pattern = CONFIG_DAMAGE[case]
    folder = preset(tmp_path, config=config)
    with pytest.raises(zoo.PresetError, match=re.escape(str(folder) + os.sep) + pattern):
        zoo.build(str(folder))


METADATA_DAMAGE = {
    "truncated": (b'{"status": "trained", "weights_sha', r"metadata.json is not valid JSON .*: it is truncated or corrupted"),
    "a string": ("trained", r"metadata.json must hold a JSON object \{\.\.\.\}; it holds a string"),
    "no sha256": ({k: v for k, v in METADATA.items() if k != "weights_sha256"},
                  r"metadata.json \(status 'trained'\) lacks the key 'weights_sha256' \(a string\)"),
    "sha256 a number": ({**METADATA, "weights_sha256": 123},
                        r"metadata.json \(status 'trained'\): 'weights_sha256' must be a string; found an integer, 123"),
    "sha256 not hex": ({**METADATA, "weights_sha256": "abc"},
                       r"metadata.json: weights_sha256 must be 64 lower-case hex digits; found 'abc'"),
}


@pytest.mark.parametrize("case", sorted(METADATA_DAMAGE))
def test_damaged_metadata_json_is_a_preset_error_naming_it(tmp_path, case):
    metadata, pattern = METADATA_DAMAGE[case]
    folder = preset(tmp_path, metadata=metadata)
    with pytest.raises(zoo.PresetError, match=re.escape(str(folder) + os.sep) + pattern):
        zoo.pretrained_weights_path(str(folder))


def test_list_presets_names_the_damaged_preset(tmp_path, monkeypatch):
    folder = preset(tmp_path / "root", metadata={k: v for k, v in METADATA.items() if k != "test_accuracy"})
    monkeypatch.setenv("KERAS_FSNN_ZOO", str(tmp_path / "root"))
    with pytest.raises(zoo.PresetError, match=re.escape(str(folder / "metadata.json")) + r" \(status 'trained'\) "
                       r"lacks the key 'test_accuracy' \(a number\)"):
        (getattr(zoo, "list_presets", None) or zoo.list)()


def evaluation():
    """evaluate_preset, or zoo.evaluate before it moved to training/export.py."""
    try:
        from keras_fsnn.training.export import evaluate_preset
    except ImportError:
        return zoo.evaluate
    return evaluate_preset


def test_metadata_naming_an_unknown_dataset_is_named(tmp_path):
    folder = preset(tmp_path, metadata={"status": "untrained", "dataset": "imagenet"})
    with pytest.raises(zoo.PresetError, match=re.escape(str(folder / "metadata.json")) + " names dataset 'imagenet'; known: mnist"):
        evaluation()(str(folder), weights=None)


# ---------------------------------------------------------------- zoo.load's arguments


@pytest.mark.parametrize("name", [None, 3, b"fsnn_mnist"])
def test_name_of_the_wrong_type(name):
    with pytest.raises(TypeError, match=r"Argument `name` must be a zoo preset name \(see keras_fsnn.zoo.list_presets\(\)\) "
                       r"or a preset folder path \(str or os.PathLike\); received name=" + re.escape(repr(name))):
        zoo.load(name)


def test_a_missing_folder_is_no_such_folder_not_an_unknown_preset(tmp_path):
    missing = str(tmp_path / "missing" / "preset")
    with pytest.raises(zoo.PresetError, match=re.escape(f"name={missing!r}: no such folder")):
        zoo.load(missing)
    with pytest.raises(zoo.PresetError, match=r"name='/missing/path': no such folder"):
        zoo.load("/missing/path", weights=None)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(zoo.PresetError, match=r"is a file, not a preset folder"):
        zoo.load(str(tmp_path / "a_file"))


@pytest.mark.parametrize("weights", [True, False, 3, ["model.weights.h5"]])
def test_weights_of_the_wrong_type(tmp_path, weights):
    folder = preset(tmp_path)
    with pytest.raises(TypeError, match=r"Argument `weights` must be 'pretrained', None, or the path of a \.weights\.h5 or "
                       r"\.keras file; received weights=" + re.escape(repr(weights))):
        zoo.load(str(folder), weights=weights)


def test_a_misspelt_weights_value_says_what_is_allowed(tmp_path):
    folder = preset(tmp_path)
    with pytest.raises(zoo.PresetError, match=r"weights='pretrianed': no such file \(`weights` must be 'pretrained', None"):
        zoo.load(str(folder), weights="pretrianed")


def test_an_unknown_override_lists_the_arguments(tmp_path):
    folder = preset(tmp_path)
    with pytest.raises(TypeError, match=r"Preset 'tiny' \(fsnn_fmnist\) takes no argument 'time_step'; received "
                       r"time_step=3\. Its arguments: .*time_steps"):
        zoo.load(str(folder), weights=None, time_step=3)


# ---------------------------------------------------------------- run folders (export)


def export_module():
    """(module of export_run, name of its preset check): training/export.py, or zoo before the move."""
    try:
        from keras_fsnn.training import export
    except ImportError:
        return zoo, "evaluate"
    return export, "evaluate_preset"


@pytest.fixture(scope="module")
def run_model(tmp_path_factory):
    """A saved model.keras of the fsnn_fmnist recipe at T = 1 (untrained)."""
    from keras_fsnn.training import build_model

    model = build_model("fsnn_fmnist", time_steps=1)
    model(np.zeros((1, 28, 28, 1), "float32"))
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


RUN = {"name": "fsnn_fmnist", "recipe_overrides": {}, "model_overrides": {"time_steps": 1}, "seed": 0, "limit": None,
       "data_dir": None, "command": "keras-fsnn train fsnn_fmnist --time-steps 1"}
RESULT = {"accuracy": 0.5, "loss": 1.0, "examples": 4}


def run_folder(tmp_path, run=RUN, result=RESULT, model=None):
    folder = tmp_path / "run"
    folder.mkdir()
    for file, value in (("run.json", run), ("result.json", result)):
        (folder / file).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    if model:
        shutil.copy(model, folder / "model.keras")
    return folder


RUN_DAMAGE = {
    "run.json truncated": ({"run": b'{"name": "fsnn_fmnist", '}, "run.json", r" is not valid JSON .*truncated or corrupted"),
    "run.json without recipe_overrides": ({"run": {k: v for k, v in RUN.items() if k != "recipe_overrides"}}, "run.json",
                                          r" lacks the key 'recipe_overrides' \(an object\)"),
    "run.json names no recipe": ({"run": {**RUN, "name": "resnet"}}, "run.json", r" names recipe 'resnet'; known recipes: "),
    "run.json with a bad time budget": ({"run": {**RUN, "time_budget": {"budget_seconds": 60, "epochs": 2, "milestones": [],
                                                                      "warmup_steps": 0}}},
                                        "run.json", r" \(time_budget\) lacks the key 'timing' \(an object\)"),
    "result.json a list": ({"result": [RESULT]}, "result.json", r" must hold a JSON object \{\.\.\.\}; it holds an array"),
    "result.json without accuracy": ({"result": {"loss": 1.0, "examples": 4}}, "result.json",
                                     r" lacks the key 'accuracy' \(a number\)"),
    "model.keras missing": ({}, "model.keras", r" is missing: the run has not finished"),
    "model.keras truncated": ({"model": b"PK\x03\x04" + bytes(100)}, "model.keras",
                              r" is not a zip archive \(a \.keras file is one; 104 bytes\): it is truncated or corrupted"),
}


@pytest.mark.parametrize("case", sorted(RUN_DAMAGE))
def test_damaged_run_folder_is_named_by_the_export(tmp_path, case, run_model):
    files, name, pattern = RUN_DAMAGE[case]
    module, _ = export_module()
    run = run_folder(tmp_path, files.get("run", RUN), files.get("result", RESULT), model=name != "model.keras" and run_model)
    if "model" in files:
        (run / "model.keras").write_bytes(files["model"])
    with pytest.raises(zoo.PresetError, match=re.escape(str(run / name)) + pattern):
        module.export_run(str(run), str(tmp_path / "zoo" / "tiny"))


def test_export_of_a_missing_run_folder_says_no_such_folder(tmp_path):
    module, _ = export_module()
    with pytest.raises(zoo.PresetError, match=re.escape(f"run_dir={str(tmp_path / 'nope')!r}: no such folder")):
        module.export_run(str(tmp_path / "nope"), str(tmp_path / "zoo" / "tiny"))


def test_the_replaced_presets_damaged_metadata_is_named_by_the_export(tmp_path, run_model):
    module, _ = export_module()
    run = run_folder(tmp_path, model=run_model)
    target = preset(tmp_path / "zoo", metadata=b'{"description": "F400')
    with pytest.raises(zoo.PresetError, match=re.escape(str(target / "metadata.json")) + " is not valid JSON"):
        module.export_run(str(run), str(target))


def test_a_truncated_log_csv_is_named(tmp_path):
    module, _ = export_module()
    (tmp_path / "log.csv").write_text("epoch,loss,fsnn/backward_firing_rate\n0,1.0,0.25\n1,0.9")
    neuron = types.SimpleNamespace(threshold=1.0, resting_potential=0.0)
    block = types.SimpleNamespace(backward=types.SimpleNamespace(time_steps=10, neuron=neuron, scale=1.0))
    with pytest.raises(zoo.PresetError, match=re.escape(str(tmp_path / "log.csv")) +
                       r": the last row's fsnn/backward_firing_rate is None, not a number \(a truncated file\?\)"):
        module.spike_backward_summary(block, str(tmp_path))


# ---------------------------------------------------------------- leftovers of killed exports


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


@pytest.fixture
def live_process():
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_later_export_removes_the_folders_of_dead_exports_only(tmp_path, live_process):
    module, _ = export_module()
    run = run_folder(tmp_path)  # no model.keras: the export fails after its clean-up
    parent = tmp_path / "zoo"
    target = preset(parent)
    dead = dead_pid()
    folders = {kind: parent / f".tiny.{kind}" for kind in (f"export-{dead}", f"export-{live_process}", f"old-{dead}",
                                                            f"export-{dead}x", f"other.export-{dead}")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "model.weights.h5").write_bytes(bytes(1000))
    with pytest.raises(Exception):
        module.export_run(str(run), str(target))
    left = sorted(p.name for p in parent.iterdir())
    assert left == sorted(["tiny", f".tiny.export-{live_process}", f".tiny.export-{dead}x", f".tiny.other.export-{dead}"])
    assert (target / "config.json").is_file()


def test_a_preset_lost_between_the_swaps_two_renames_is_put_back(tmp_path):
    module, _ = export_module()
    run = run_folder(tmp_path)
    parent = tmp_path / "zoo"
    previous = preset(parent)
    old = parent / f".tiny.old-{dead_pid()}"
    previous.rename(old)
    with pytest.raises(Exception):
        module.export_run(str(run), str(parent / "tiny"))
    assert sorted(p.name for p in parent.iterdir()) == ["tiny"]
    assert json.loads((parent / "tiny" / "config.json").read_text()) == CONFIG


def test_sigterm_during_an_export_removes_its_folder_and_keeps_the_preset(tmp_path, run_model, monkeypatch):
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("needs the main thread and SIGTERM's default handler")
    module, check = export_module()
    run = run_folder(tmp_path, model=run_model)
    target = preset(tmp_path / "zoo")

    def terminated(folder, **kwargs):
        assert os.path.isdir(folder) and os.path.basename(folder) == f".tiny.export-{os.getpid()}"
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would kill the export without clean-up"
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the export")

    monkeypatch.setattr(module, check, terminated)
    with pytest.raises(SystemExit) as exit:
        module.export_run(str(run), str(target))
    assert exit.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]
    assert json.loads((target / "config.json").read_text()) == CONFIG


def test_a_failed_swap_keeps_the_previous_preset(tmp_path, run_model, monkeypatch):
    module, check = export_module()
    run = run_folder(tmp_path, model=run_model)
    target = preset(tmp_path / "zoo")
    monkeypatch.setattr(module, check, lambda folder, **kwargs: {"examples": 4, "accuracy": 0.5})
    rename = os.rename
    calls = []

    def failing_second_rename(source, destination):
        calls.append(destination)
        if len(calls) == 2:  # the new preset into place, after the old one moved aside
            raise OSError("disk full")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(OSError, match="disk full"):
        module.export_run(str(run), str(target))
    monkeypatch.setattr(os, "rename", rename)
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]
    assert json.loads((target / "config.json").read_text()) == CONFIG
    metadata = module.export_run(str(run), str(target))  # and an export that works replaces it
    assert metadata["test_slice"] == {"examples": 4, "accuracy": 0.5}
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]
    assert json.loads((target / "config.json").read_text())["arguments"]["time_steps"] == 1


@pytest.mark.parametrize("option", [{"time_steps": 0}, {"limit": 0}, {"batch_size": 0}, {"limit": -3}])
def test_evaluate_preset_refuses_bad_options_before_anything_loads(option):
    from keras_fsnn.training.export import evaluate_preset

    (argument, value), = option.items()
    with pytest.raises(ValueError, match=rf"`{argument}` must be an integer >= 1; received {argument}={value}"):
        evaluate_preset("/no/such/preset", **option)  # refused before the (missing) folder is looked at
