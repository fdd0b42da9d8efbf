"""Issue 32, items 4, 6 and 9: every numeric flag of every command is checked before any
data loads (the library's `train` and evaluation options as well, with a ValueError naming
the argument, the value and what is allowed); a user error is one line and the usage, exit
status 2 (`--debug`: the traceback); result.json is strict JSON; `keras-fsnn --help`
imports no Keras; `keras-fsnn eval` shows a progress bar; the tf.data and NumPy pipelines
give the same batches, and a run whose tf.data batches TensorFlow drew resumes on tf.data
only. No test trains: each error is raised before training would start."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_fsnn
from _keras_fsnn import cli  # the console script's module (keras_fsnn.cli re-exports its main)
from keras_fsnn import datasets

# the folder holding the keras_fsnn this test imported: the subprocesses import the same one
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(keras_fsnn.__file__)))
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([SOURCE, os.environ.get("PYTHONPATH", "")]),
                      TF_CPP_MIN_LOG_LEVEL="3")


class DataLoaded(BaseException):
    """Raised where data would load: a check that let a bad value through fails the test here."""


@pytest.fixture(autouse=True)
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise DataLoaded("the data started loading: the bad value was not refused first")

    monkeypatch.setattr(datasets, "load_arrays", refuse)
    monkeypatch.setattr(datasets, "make_pipeline", refuse)


def run_cli(argv, capsys):
    """(exit status, stderr) of `keras-fsnn argv` run in-process."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(argv, pattern, capsys):
    import re

    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"keras-fsnn {argv[0]}: error: "), err
    assert err.startswith("usage: keras-fsnn " + argv[0]), err
    assert re.search(pattern, errors[0]), errors[0]


TRAIN_FLAGS = [
    (["--limit", "0"], r"argument --limit: must be an integer >= 1; received '0'"),
    (["--limit", "-5"], r"argument --limit: must be an integer >= 1; received '-5'"),
    (["--batch-size", "0"], r"argument --batch-size: must be an integer >= 1; received '0'"),
    (["--batch-size", "abc"], r"argument --batch-size: must be an integer; received 'abc'"),
    (["--epochs", "0"], r"argument --epochs: must be an integer >= 1; received '0'"),
    (["--epochs", "-2"], r"argument --epochs: must be an integer >= 1"),
    (["--learning-rate", "-1"], r"argument --learning-rate: must be a number >= 0; received '-1'"),
    (["--learning-rate", "nan"], r"argument --learning-rate: must be a finite number; received 'nan'"),
    (["--learning-rate", "inf"], r"argument --learning-rate: must be a finite number; received 'inf'"),
    (["--milestones", "5", "3"], r"`milestones` must be strictly increasing; received milestones=\[5, 3\]"),
    (["--milestones", "-1"], r"argument --milestones: must be an integer >= 1; received '-1'"),
    (["--milestones", "150"], r"`milestones` must lie within the run's 100 epochs \(1 \.\. 99\); received "
                              r"milestones=\[150\] with epochs=100"),
    (["--epochs", "3", "--milestones", "2", "5"], r"milestones=\[2, 5\] with epochs=3"),
    (["--warmup-steps", "-1"], r"argument --warmup-steps: must be an integer >= 0; received '-1'"),
    (["--random-shift", "100"], r"`random_shift` must be smaller than the fashion_mnist images \(28x28 pixels: at "
                                r"most 27\); received random_shift=100"),
    (["--random-shift", "28"], r"received random_shift=28"),
    (["--validation-examples", "60000"], r"validation_examples=60000: the training set has 60000 examples"),
    (["--limit", "100", "--validation-examples", "100"], r"validation_examples=100: the training set has 100"),
    (["--seed", "-1"], r"argument --seed: must be an integer in \[0, 4294967295\]; received '-1'"),
    (["--verbose", "5"], r"argument --verbose: must be auto, 0, 1 or 2; received '5'"),
    (["--time-budget", "0"], r"argument --time-budget: must be a number > 0; received '0'"),
    (["--time-budget", "nan"], r"argument --time-budget: must be a finite number; received 'nan'"),
    (["--threshold", "inf"], r"argument --threshold: must be a finite number; received 'inf'"),
    (["--solver-tol", "nan"], r"argument --solver-tol: must be a finite number; received 'nan'"),
    (["--solver-tol", "-1"], r"`solver_tol` must lie in \[0.0, inf.; received solver_tol=-1.0"),  # the layer's check
    (["--time-steps", "0"], r"argument --time-steps: must be an integer >= 1; received '0'"),
    (["--dropout", "1.5"], r"`dropout` must lie in \[0.0, 1.0\); received dropout=1.5"),
]


@pytest.mark.parametrize("flags, pattern", TRAIN_FLAGS, ids=[" ".join(f) for f, _ in TRAIN_FLAGS])
def test_bad_train_flags_are_one_line_errors_before_any_work(flags, pattern, tmp_path, capsys):
    run = tmp_path / "run"
    assert_one_line_error(["train", "fsnn_fmnist", "--output-dir", str(run), *flags], pattern, capsys)
    assert not run.exists()


OTHER_FLAGS = [
    (["eval", "fsnn_fmnist", "--limit", "0"], r"argument --limit: must be an integer >= 1; received '0'"),
    (["eval", "fsnn_fmnist", "--limit", "-3"], r"argument --limit: must be an integer >= 1; received '-3'"),
    (["eval", "fsnn_fmnist", "--batch-size", "0"], r"argument --batch-size: must be an integer >= 1; received '0'"),
    (["eval", "fsnn_fmnist", "--time-steps", "0"], r"argument --time-steps: must be an integer >= 1; received '0'"),
    (["eval", "no_such_preset"], r"Unknown zoo preset 'no_such_preset'"),
    (["tune", "fsnn", "--epochs", "0"], r"argument --epochs: must be an integer >= 1; received '0'"),
    (["tune", "fsnn", "--batch-size", "0"], r"argument --batch-size: must be an integer >= 1; received '0'"),
    (["tune", "fsnn", "--limit", "-5"], r"argument --limit: must be an integer >= 1; received '-5'"),
    (["tune", "fsnn", "--verbose", "7"], r"argument --verbose: must be an integer in \[0, 2\]; received '7'"),
    (["tune", "fsnn", "--rate-bound", "nan"], r"argument --rate-bound: must be a finite number; received 'nan'"),
]


@pytest.mark.parametrize("argv, pattern", OTHER_FLAGS, ids=[" ".join(a) for a, _ in OTHER_FLAGS])
def test_bad_eval_and_tune_flags_are_one_line_errors_before_any_work(argv, pattern, tmp_path, capsys):
    if argv[0] == "tune":
        argv = [*argv, "--directory", str(tmp_path / "tuning")]
    assert_one_line_error(argv, pattern, capsys)


def test_debug_shows_the_traceback_and_in_process_callers_still_get_a_value_error(tmp_path, capsys):
    from keras_fsnn.zoo import PresetError

    with pytest.raises(PresetError, match="Unknown zoo preset 'nope'"):  # the original exception, traceback and all
        cli.main(["eval", "nope", "--debug"])
    with pytest.raises(ValueError, match="Unknown zoo preset 'nope'") as error:  # also SystemExit(2)
        cli.main(["eval", "nope"])
    assert isinstance(error.value, SystemExit) and error.value.code == 2
    capsys.readouterr()
    assert_one_line_error(["export", str(tmp_path / "no_run"), "--to", str(tmp_path / "preset")], r"no_run", capsys)


def test_the_console_script_exits_2_with_one_line(tmp_path):
    """The real entry point, in a subprocess: status 2 and no traceback (argparse's convention)."""
    code = "import sys; from keras_fsnn.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, "eval", "fsnn_fmnist", "--limit", "0"], capture_output=True,
                            text=True, timeout=300, env=SUBPROCESS_ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "keras-fsnn eval: error: argument --limit: must be an integer >= 1; received '0'" in result.stderr


LIBRARY = [
    (dict(limit=0), ValueError, r"`limit` must be an integer >= 1; received limit=0"),
    (dict(limit=-5), ValueError, r"`limit` must be an integer >= 1; received limit=-5"),
    (dict(batch_size=0), ValueError, r"`batch_size` must be an integer >= 1; received batch_size=0"),
    (dict(epochs=0), ValueError, r"`epochs` must be an integer >= 1; received epochs=0"),
    (dict(learning_rate=-1.0), ValueError, r"`learning_rate` must lie in \[0.0, inf\); received learning_rate=-1.0"),
    (dict(learning_rate=math.nan), TypeError, r"`learning_rate` must be a real number; received learning_rate=nan"),
    (dict(milestones=[5, 3]), ValueError, r"`milestones` must be strictly increasing; received milestones=\[5, 3\]"),
    (dict(milestones=[-1]), ValueError, r"`milestones` must hold integers >= 1"),
    (dict(milestones=[0]), ValueError, r"received milestones=\[0\]"),
    (dict(epochs=3, milestones=[5]), ValueError, r"within the run's 3 epochs \(1 \.\. 2\); received milestones=\[5\]"),
    (dict(milestones="30"), TypeError, r"`milestones` must be a list of epochs"),
    (dict(warmup_steps=-1), ValueError, r"`warmup_steps` must be an integer >= 0; received warmup_steps=-1"),
    (dict(random_shift=100), ValueError, r"`random_shift` must be smaller than the fashion_mnist images"),
    (dict(validation_examples=60000), ValueError, r"validation_examples=60000: the training set has 60000 examples"),
    (dict(limit=50, validation_examples=50), ValueError, r"validation_examples=50: the training set has 50 examples"),
    (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0; received seed=-1"),
    (dict(seed=2**32), ValueError, r"`seed` must be an integer in \[0, 4294967295\]; received seed=4294967296"),
    (dict(seed=1.5), TypeError, r"`seed` must be an integer; received seed=1.5"),
    (dict(verbose=5), ValueError, r"`verbose` must be one of 'auto', 0, 1, 2; received verbose=5"),
    (dict(jit_compile="yes"), ValueError, r"`jit_compile` must be one of 'auto', True, False; received jit_compile='yes'"),
    (dict(resume="no"), TypeError, r"`resume` must be True or False; received resume='no'"),
    (dict(model_overrides=[("time_steps", 3)]), TypeError, r"`model_overrides` must be a dict"),
    (dict(time_budget=math.inf), ValueError, r"`time_budget` must (lie in \(0.0, inf\)|be a finite number); received time_budget=inf"),
]


@pytest.mark.parametrize("kwargs, error, pattern", LIBRARY, ids=[repr(k) for k, _, _ in LIBRARY])
def test_train_rejects_bad_values_before_loading_data_or_writing(kwargs, error, pattern, tmp_path):
    from keras_fsnn.training import train

    with pytest.raises(error, match=pattern):
        train("fsnn_fmnist", output_dir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_schedule_and_optimizer_reject_bad_values():
    from keras_fsnn.training import CoupledSGD, WarmupMultiStep
    from keras_fsnn.training.trainer import check_evaluation_options

    with pytest.raises(ValueError, match=r"`steps_per_epoch` must be an integer >= 1; received steps_per_epoch=0"):
        WarmupMultiStep(0.05, steps_per_epoch=0)
    with pytest.raises(ValueError, match=r"`warmup_steps` must be an integer >= 0; received warmup_steps=-1"):
        WarmupMultiStep(0.05, 10, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"`base_learning_rate` must lie in \[0.0, inf\); received base_learning_rate=-1"):
        WarmupMultiStep(-1, 10)
    with pytest.raises(TypeError, match=r"`learning_rate` must be a real number; received learning_rate=nan"):
        CoupledSGD(math.nan)
    with pytest.raises(ValueError, match=r"`coupled_weight_decay` must lie in \[0.0, inf\); received coupled_weight_decay=-0.1"):
        CoupledSGD(0.1, coupled_weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"`limit` must be an integer >= 1; received limit=0"):
        check_evaluation_options(limit=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1; received batch_size=0"):
        check_evaluation_options(batch_size=0)
    with pytest.raises(ValueError, match=r"`time_steps` must be an integer >= 1; received time_steps=0"):
        check_evaluation_options(time_steps=0)


def test_evaluate_shows_a_progress_bar_and_refuses_empty_data(capsys):
    from keras_fsnn.datasets.numpy_pipeline import ArrayBatches
    from keras_fsnn.training.trainer import build_model, evaluate

    model = build_model("fsnn_fmnist", time_steps=1)
    info = datasets.DATASETS["fashion_mnist"]
    with pytest.raises(ValueError, match="the data held no examples"):  # was a ZeroDivisionError
        evaluate(model, ArrayBatches(info, np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.int64), 8))
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28, 1), dtype=np.uint8)
    batches = ArrayBatches(info, images, np.arange(12) % 10, 8)
    capsys.readouterr()
    result = evaluate(model, batches, residual_batches=1)
    out = capsys.readouterr().out
    assert "2/2" in out and "accuracy" in out and result["examples"] == 12
    evaluate(model, batches, residual_batches=1, verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"`residual_batches` must be an integer >= 1; received residual_batches=0"):
        evaluate(model, batches, residual_batches=0)


def test_run_files_are_strict_json_with_non_finite_numbers_as_null(tmp_path):
    from keras_fsnn.training.trainer import _write_json

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    path = str(tmp_path / "result.json")
    _write_json(path, {"accuracy": 0.1, "loss": math.nan, "firing_rates": [0.2, math.inf, np.float32("-inf")],
                       "validation": {"loss": math.nan}})
    record = strict(open(path).read())
    assert record["loss"] is None and record["firing_rates"] == [0.2, None, None] and record["accuracy"] == 0.1
    assert record["non_finite"] == {"loss": "nan", "firing_rates[1]": "inf", "firing_rates[2]": "-inf",
                                    "validation.loss": "nan"}
    line = cli._json_line({"accuracy": 0.1, "loss": math.nan})  # what `keras-fsnn train/eval` prints last
    assert strict(line) == {"accuracy": 0.1, "loss": None, "non_finite": {"loss": "nan"}}


RUN_WITHOUT_KERAS = """
import sys
from _keras_fsnn.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = sorted(name for name in ("keras", "keras_fsnn", "tensorflow", "jax") if name in sys.modules)
assert not heavy, heavy
"""


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "--help"], ["eval", "--help"], ["export", "--help"]])
def test_help_and_list_import_no_keras(argv, tmp_path):
    """The console script's module (outside the package keras_fsnn, whose __init__ imports
    Keras) imports only argparse at start and builds only the command given: --help, list
    and eval --help import neither Keras nor its backends."""
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_KERAS, *argv], capture_output=True, text=True,
                            timeout=120, env=SUBPROCESS_ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    if argv == ["list"]:  # the same list as the library's
        assert result.stdout.split("\n")[:-1] == [
            f"{entry['name']:<{max(len(e['name']) for e in keras_fsnn.zoo.list_presets())}}  {entry['status']}"
            for entry in keras_fsnn.zoo.list_presets()]
    else:
        assert "usage: keras-fsnn" in result.stdout


def test_the_console_script_is_the_module_without_keras():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="keras-fsnn")
    assert script.value == "_keras_fsnn.cli:main"


def test_tf_data_and_numpy_pipelines_give_the_same_batches():
    pytest.importorskip("tensorflow")
    from keras_fsnn.datasets.numpy_pipeline import EpochBatches
    from keras_fsnn.training.trainer import epoch_pipeline

    rng = np.random.default_rng(1)
    for name, augmentation in (("cifar10", datasets.Augmentation(4, True)), ("mnist", datasets.Augmentation())):
        info = datasets.DATASETS[name]
        images = rng.integers(0, 256, (70, *info.shape), dtype=np.uint8)
        labels = rng.integers(0, 10, 70)
        for first_epoch, first_batch in ((0, 0), (3, 2)):
            tf_batches = list(epoch_pipeline(info, images, labels, 16, first_epoch, first_epoch + 2, seed=5,
                                             augmentation=augmentation, first_batch=first_batch))
            numpy_batches = EpochBatches(info, images, labels, 16, 5, first_epoch, augmentation, first_batch)
            assert len(tf_batches) == 2 * 5 - first_batch
            for k, (x, y) in enumerate(tf_batches):
                np.testing.assert_array_equal(np.asarray(x), numpy_batches[k][0])
                np.testing.assert_array_equal(np.asarray(y), numpy_batches[k][1])


def test_a_run_whose_tf_data_batches_tensorflow_drew_resumes_on_tf_data_only(tmp_path):
    from keras_fsnn.training import train

    legacy = tmp_path / "legacy"  # a run.json of a run started before "batch_draws" was recorded
    legacy.mkdir()
    record = {"name": "fsnn_fmnist", "recipe_overrides": {"epochs": 2}, "model_overrides": {}, "seed": 0,
              "limit": 100, "data_dir": None, "pipeline": "tf_data", "validation_examples": None}
    (legacy / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"pipeline='numpy': the run in .* was started with pipeline='tf_data' .* "
                                         r"continues exactly only on tf.data"):
        train("fsnn_fmnist", output_dir=str(legacy), resume=True, pipeline="numpy")
    assert json.loads((legacy / "run.json").read_text()) == record
    # a run of today's draws may continue on the other pipeline (the same batches): it goes on to load its data
    current = tmp_path / "current"
    current.mkdir()
    (current / "run.json").write_text(json.dumps({**record, "batch_draws": "numpy"}))
    with pytest.raises(DataLoaded):
        train("fsnn_fmnist", output_dir=str(current), resume=True, pipeline="numpy")
