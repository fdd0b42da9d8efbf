"""Turning a training run into a zoo preset, and measuring a preset: the steps between
`keras_fsnn.training` and `keras_fsnn.zoo` (which depends on the models only).

Every file read here (the run's run.json, result.json, model.keras and log.csv, the
preset's metadata.json) that is missing, malformed or lacks what the export needs is a
`PresetError` naming the file."""

import contextlib
import csv
import numbers
import os
import re
import shutil
import signal
import threading
import zipfile

import keras

from keras_fsnn.zoo import (
    PresetError,
    _write_json,
    load,
    locate,
    read_json,
    read_metadata,
    require,
    save_preset,
)


SLICE = 500  # the fixed test slice (first images of the test split) a preset records
# What export_run needs of a run's files (keys and JSON types; see zoo.require).
RUN_FIELDS = {"name": str, "recipe_overrides": dict, "model_overrides": dict}
RESULT_FIELDS = {"accuracy": numbers.Real, "loss": numbers.Real, "examples": int}
BUDGET_FIELDS = {"budget_seconds": numbers.Real, "epochs": int, "milestones": list, "warmup_steps": int, "timing": dict}
TIMING_FIELDS = {"step_seconds": numbers.Real, "batch_size": int, "device": str}
INITIAL_WEIGHTS_FIELDS = {"source": str, "sha256": str}


def export_run(run_dir, folder, data_dir=None, note=None):
    """Turn a finished `keras-fsnn train` run into a preset folder. The figures in the
    metadata and card are the run's own test evaluation (result.json, full test set), plus
    the accuracy on the first `SLICE` test images (what the zoo tests re-check); `note` is
    a free-text remark for the card (e.g. how the result compares with the target).

    The preset is written and checked in a hidden folder `.NAME.export-PID` next to
    `folder` and only then swapped in (two renames): if writing or checking fails, or the
    process gets SIGTERM or Ctrl-C, the hidden folder is removed and `folder` is left as it
    was. Leftovers of an export that was killed outright (SIGKILL) are removed by the next
    export of the same preset (`remove_stale_exports`)."""
    import keras_fsnn  # noqa: F401
    from _keras_fsnn.cli import train_command
    from keras_fsnn.training.recipes import RECIPES, get_recipe

    run_dir, folder = _path_argument("run_dir", run_dir), _path_argument("folder", folder)
    if note is not None and not isinstance(note, str):
        raise TypeError(f"Argument `note` must be a string or None; received note={note!r}.")
    if not os.path.isdir(run_dir):
        raise PresetError(f"run_dir={run_dir!r}: no such folder (expected the output folder of a finished "
                          "`keras-fsnn train` run).")
    name = os.path.basename(os.path.normpath(folder))
    parent = os.path.dirname(os.path.abspath(folder))
    if os.path.isdir(parent):
        remove_stale_exports(parent, name)
    run_path = os.path.join(run_dir, "run.json")
    run = read_json(run_path, RUN_FIELDS)
    result = read_json(os.path.join(run_dir, "result.json"), RESULT_FIELDS)
    _check_run_record(run, run_path)
    previous = os.path.join(folder, "metadata.json")  # the preset replaced: its description is kept
    previous = read_json(previous) if os.path.isfile(previous) else {}
    if run.get("limit"):
        raise PresetError(f"{run_dir} was trained on a subset (limit={run['limit']}); a preset needs the full data.")
    if run["name"] not in RECIPES:
        raise PresetError(f"{run_path} names recipe {run['name']!r}; known recipes: {', '.join(RECIPES)}.")
    try:
        recipe = get_recipe(run["name"]).with_overrides(run["recipe_overrides"])
    except (TypeError, ValueError) as error:
        raise PresetError(f"{run_path}: its recipe_overrides {run['recipe_overrides']!r} do not apply to recipe "
                          f"{run['name']!r} ({error}).") from error
    arguments = {**recipe.model_kwargs, **run["model_overrides"], "name": name}
    model = _load_run_model(os.path.join(run_dir, "model.keras"))
    block = [layer for layer in model._flatten_layers() if hasattr(layer, "neuron")][0]
    metadata = {
        "description": previous.get("description", ""),
        "paper_result": previous.get("paper_result", ""),
        "architecture_name": recipe.architecture,
        "dataset": recipe.dataset,
        "time_steps": block.time_steps,
        "neuron": block.neuron.name,
        "leak": block.neuron.leak,
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "test_examples": result["examples"],
        "threshold": block.neuron.threshold,
        "firing_rates": result.get("firing_rates", []),
        "firing_rate_layers": result.get("firing_rate_layers", []),
        "residual_at_T": result.get("residual_at_T"),
        **({"residual_at_T_per_stream": result["residual_at_T_per_stream"]}
           if "residual_at_T_per_stream" in result else {}),
        "epochs": recipe.epochs,
        "training": recipe.summary(),
        "train_command": run.get("command") or "",
        "machine": result.get("machine", ""),
        "trained": run.get("started", ""),
        "simulation_dtype": getattr(block, "simulation_dtype", "float32"),
    }
    if run.get("validation_examples"):
        metadata["validation_examples"] = run["validation_examples"]
        metadata["validation_accuracy"] = result.get("validation", {}).get("accuracy")
    if run.get("initial_weights"):
        metadata["initial_weights"] = {k: run["initial_weights"][k] for k in ("source", "sha256")}
    if run.get("time_budget"):  # a schedule sized to a wall-clock budget (training/budget.py)
        plan, spent = run["time_budget"], result.get("time_budget", {})
        metadata["time_budget"] = {
            "budget_seconds": plan["budget_seconds"], "epochs": plan["epochs"], "milestones": plan["milestones"],
            "warmup_steps": plan["warmup_steps"], "step_seconds": plan["timing"]["step_seconds"],
            "batch_size": plan["timing"]["batch_size"], "device": plan["timing"]["device"],
            "wall_seconds": spent.get("wall_seconds"), "stopped": spent.get("stopped"),
            "trained_steps": result.get("trained_steps")}
        metadata["time_budget"]["train_command"] = train_command(
            run["name"], run["recipe_overrides"], run["model_overrides"], run.get("seed", 0))
    if note:
        metadata["note"] = note
    if block.backward.name == "spide":
        metadata["backward"] = spike_backward_summary(block, run_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.export-{os.getpid()}")
    with _terminate_as_exit():
        if os.path.exists(staging):  # left by an interrupted export in this process
            shutil.rmtree(staging)
        os.makedirs(staging)
        try:
            metadata = save_preset(model, staging, recipe.architecture, arguments, metadata, name=name)
            check = evaluate_preset(staging, data_dir=data_dir or run.get("data_dir"), limit=SLICE)
            metadata["test_slice"] = {"examples": check["examples"], "accuracy": check["accuracy"]}
            _write_json(os.path.join(staging, "metadata.json"), metadata)
            _replace_folder(staging, folder)
        finally:
            if os.path.isdir(staging):
                shutil.rmtree(staging, ignore_errors=True)
    return metadata


def _path_argument(argument, value):
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"Argument `{argument}` must be a folder path (a non-empty str or os.PathLike); received "
                        f"{argument}={value!r}.")
    return os.fspath(value)


def _check_run_record(run, path):
    """The optional parts of a run.json that export_run reads, checked (see RUN_FIELDS for the rest)."""
    if run.get("validation_examples") is not None:
        require(run, {"validation_examples": int}, path)
    if run.get("initial_weights"):
        require(run, {"initial_weights": dict}, path)
        require(run["initial_weights"], INITIAL_WEIGHTS_FIELDS, f"{path} (initial_weights)")
    if run.get("time_budget"):
        require(run, {"time_budget": dict}, path)
        require(run["time_budget"], BUDGET_FIELDS, f"{path} (time_budget)")
        require(run["time_budget"]["timing"], TIMING_FIELDS, f"{path} (time_budget.timing)")


def _load_run_model(path):
    if not os.path.isfile(path):
        raise PresetError(f"{path} is missing: the run has not finished (continue it with `keras-fsnn train NAME "
                          "--output-dir RUN --resume`).")
    if not zipfile.is_zipfile(path):
        raise PresetError(f"{path} is not a zip archive (a .keras file is one; {os.path.getsize(path)} bytes): it is "
                          "truncated or corrupted.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a damaged .keras zip fails in many ways
        raise PresetError(f"{path} cannot be loaded ({type(error).__name__}: {error}): it is truncated or "
                          "corrupted, or not a model of keras_fsnn.") from error
    if not any(hasattr(layer, "neuron") for layer in model._flatten_layers()):
        raise PresetError(f"{path} is a model without a spiking block, not a keras_fsnn network.")
    return model


def remove_stale_exports(parent, name):
    """Remove the leftovers of killed exports of preset `name` from folder `parent`: the
    hidden staging folders `.NAME.export-PID` whose process PID is no longer running (a live
    export's are left alone), and `.NAME.old-PID`, the previous preset kept during the swap,
    which is put back as `NAME` when that folder is missing. Returns the paths removed."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(name)}\.(export|old)-(\d+)")
    for entry in sorted(os.listdir(parent), key=lambda entry: ".old-" not in entry):  # .old- first: may restore
        match = pattern.fullmatch(entry)
        if not match or _running(int(match[2])):
            continue
        path, target = os.path.join(parent, entry), os.path.join(parent, name)
        if match[1] == "old" and not os.path.exists(target):  # killed between the swap's two renames
            os.rename(path, target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _running(pid):
    """Whether process `pid` (another than this one) is running. Where that cannot be told
    (not POSIX), True: its folders are left alone."""
    if pid == os.getpid():
        return False  # this process's own folder, left by an interrupted call
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


@contextlib.contextmanager
def _terminate_as_exit():
    """While active, SIGTERM raises SystemExit(143), so that `finally` blocks clean up (only
    in the main thread, and only where SIGTERM has its default handler)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _replace_folder(new, folder):
    """Put folder `new` in the place of `folder` (whose old content is dropped); if the
    second rename fails, the old content is put back."""
    if not os.path.isdir(folder):
        os.rename(new, folder)
        return
    folder = os.path.abspath(folder)
    old = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.old-{os.getpid()}")
    if os.path.exists(old):
        shutil.rmtree(old)
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except BaseException:
        if not os.path.exists(folder):
            os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def spike_backward_summary(block, run_dir):
    """A SPIDE preset's backward stage (paper 002 §4.2) and the backward firing rate of
    its last training epoch (the last row of the run's log.csv: EquilibriumMonitor's mean
    over that epoch's batches)."""
    backward = block.backward
    summary = {"gradient": "spide", "time_steps": backward.time_steps, "threshold": backward.neuron.threshold,
               "resting_potential": backward.neuron.resting_potential, "scale": backward.scale}
    log = os.path.join(run_dir, "log.csv")
    column = "fsnn/backward_firing_rate"
    if os.path.isfile(log):
        try:
            with open(log, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (csv.Error, UnicodeDecodeError) as error:
            raise PresetError(f"{log} is not a readable CSV file ({error}): it is corrupted.") from error
        if rows and column in rows[-1]:
            value = rows[-1][column]
            try:
                summary["firing_rate_last_epoch"] = float(value)
            except (TypeError, ValueError) as error:
                raise PresetError(f"{log}: the last row's {column} is {value!r}, not a number (a truncated "
                                  f"file?); its row: {rows[-1]}.") from error
    return summary


def load_for_evaluation(name, weights="pretrained", **overrides):
    """The model `evaluate` measures: a `.keras` file (e.g. a run's model.keras) without
    overrides is loaded as saved, with its own configuration (a run trained with other
    arguments than the preset's, such as `gradient="one_step"`, stays as trained);
    anything else goes through `load(name, weights, **overrides)`."""
    if weights not in ("pretrained", None) and str(weights).endswith(".keras") and not overrides:
        import keras_fsnn  # noqa: F401  (registers the layers)

        locate(name)  # an unknown name fails here too
        return keras.saving.load_model(weights, compile=False)
    return load(name, weights=weights, **overrides)


def evaluate_preset(name, weights="pretrained", data_dir=None, limit=None, batch_size=256, time_steps=None,
                    simulation_dtype=None, verbose="auto"):
    """Test-set accuracy, per-layer firing rates and equilibrium residual of a preset;
    `time_steps` / `simulation_dtype` simulate at another T / precision than the preset's
    (the options are checked before anything loads: `trainer.check_evaluation_options`)."""
    from keras_fsnn import datasets
    from keras_fsnn.training.trainer import check_evaluation_options
    from keras_fsnn.training.trainer import evaluate as evaluate_model

    verbose = check_evaluation_options(limit=limit, batch_size=batch_size, time_steps=time_steps, verbose=verbose)
    folder = locate(name)
    metadata = read_metadata(folder)
    path = os.path.join(folder, "metadata.json")
    require(metadata, {"dataset": str}, path)
    dataset = metadata["dataset"]
    if dataset not in datasets.DATASETS:
        raise PresetError(f"{path} names dataset {dataset!r}; known: {', '.join(datasets.DATASETS)}.")
    overrides = {key: value for key, value in (("time_steps", time_steps), ("simulation_dtype", simulation_dtype))
                 if value is not None}
    model = load_for_evaluation(folder, weights, **overrides)
    data = datasets.make_pipeline(dataset, "test", data_dir, batch_size=batch_size, limit=limit)
    return evaluate_model(model, data, verbose=verbose)
