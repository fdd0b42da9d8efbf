"""Turning a training run into a zoo preset, and measuring a preset: the steps between
`keras_fsnn.training` and `keras_fsnn.zoo` (which depends on the models only)."""

import csv
import os
import shutil

import keras

from keras_fsnn.zoo import (
    PresetError,
    _read_json,
    _write_json,
    load,
    locate,
    save_preset,
)


SLICE = 500  # the fixed test slice (first images of the test split) a preset records


def export_run(run_dir, folder, data_dir=None, note=None):
    """Turn a finished `keras-fsnn train` run into a preset folder. The figures in the
    metadata and card are the run's own test evaluation (result.json, full test set), plus
    the accuracy on the first `SLICE` test images (what the zoo tests re-check); `note` is
    a free-text remark for the card (e.g. how the result compares with the target).

    The preset is written and checked in a temporary folder next to `folder` and only then
    swapped in (two renames): if writing or checking fails, `folder` is left as it was."""
    import keras_fsnn  # noqa: F401
    from keras_fsnn.cli import train_command
    from keras_fsnn.training.recipes import get_recipe

    run = _read_json(os.path.join(run_dir, "run.json"))
    result = _read_json(os.path.join(run_dir, "result.json"))
    if run.get("limit"):
        raise PresetError(f"{run_dir} was trained on a subset (limit={run['limit']}); a preset needs the full data.")
    recipe = get_recipe(run["name"]).with_overrides(run["recipe_overrides"])
    name = os.path.basename(os.path.normpath(folder))
    arguments = {**recipe.model_kwargs, **run["model_overrides"], "name": name}
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    block = [layer for layer in model._flatten_layers() if hasattr(layer, "neuron")][0]
    previous = _read_json(os.path.join(folder, "metadata.json")) if os.path.isfile(os.path.join(folder, "metadata.json")) else {}
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
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.export-{os.getpid()}")
    if os.path.exists(staging):  # left by a killed export
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
            shutil.rmtree(staging)
    return metadata


def _replace_folder(new, folder):
    """Put folder `new` in the place of `folder` (whose old content is dropped)."""
    if not os.path.isdir(folder):
        os.rename(new, folder)
        return
    folder = os.path.abspath(folder)
    old = os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.old-{os.getpid()}")
    if os.path.exists(old):
        shutil.rmtree(old)
    os.rename(folder, old)
    os.rename(new, folder)
    shutil.rmtree(old)


def spike_backward_summary(block, run_dir):
    """A SPIDE preset's backward stage (paper 002 §4.2) and the backward firing rate of
    its last training epoch (the last row of the run's log.csv: EquilibriumMonitor's mean
    over that epoch's batches)."""
    backward = block.backward
    summary = {"gradient": "spide", "time_steps": backward.time_steps, "threshold": backward.neuron.threshold,
               "resting_potential": backward.neuron.resting_potential, "scale": backward.scale}
    log = os.path.join(run_dir, "log.csv")
    if os.path.isfile(log):
        with open(log) as f:
            rows = list(csv.DictReader(f))
        if rows and "fsnn/backward_firing_rate" in rows[-1]:
            summary["firing_rate_last_epoch"] = float(rows[-1]["fsnn/backward_firing_rate"])
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
                    simulation_dtype=None):
    """Test-set accuracy, per-layer firing rates and equilibrium residual of a preset;
    `time_steps` / `simulation_dtype` simulate at another T / precision than the preset's."""
    from keras_fsnn import datasets
    from keras_fsnn.training.trainer import evaluate as evaluate_model

    folder = locate(name)
    metadata = _read_json(os.path.join(folder, "metadata.json"))
    overrides = {key: value for key, value in (("time_steps", time_steps), ("simulation_dtype", simulation_dtype))
                 if value}
    model = load_for_evaluation(folder, weights, **overrides)
    dataset = metadata["dataset"]
    data = datasets.make_pipeline(dataset, "test", data_dir, batch_size=batch_size, limit=limit)
    return evaluate_model(model, data)
