"""The model zoo: the papers' FSNNs by name, with weights trained and measured here.

A preset is a folder (keras-hub layout), shipped under the repository's `zoo/` (installed as
the package `keras_fsnn.presets`) or anywhere on disk:

    config.json         {"architecture": ..., "arguments": {...}}: how to build the model
    model.weights.h5    the weights (absent while the preset is untrained)
    metadata.json       status, sha256 of the weights, dataset, T, neuron, measured test
                        accuracy / firing rates / residual, training command and machine
    README.md           the model card

    model = keras_fsnn.zoo.load("fsnn_fmnist")                 # verified pretrained weights
    model = keras_fsnn.zoo.load("alexnet_f", weights=None)     # the architecture, fresh weights
    model = keras_fsnn.zoo.load("/path/to/preset_folder")

Weights are checked against their sha256 before loading. A preset that has not been
trained says so in `list()` and its card, and `load` refuses it unless `weights=None`.
"""

import csv
import hashlib
import json
import os
import shutil

import keras

from keras_fsnn.models import ARCHITECTURES, count_parameters

WEIGHTS_FILE = "model.weights.h5"
TRAINED = "trained"


class PresetError(ValueError):
    """A preset cannot be loaded as asked (unknown, untrained, missing or corrupted)."""


def preset_root():
    """The folder holding the shipped presets (`$KERAS_FSNN_ZOO` overrides it)."""
    if os.environ.get("KERAS_FSNN_ZOO"):
        return os.environ["KERAS_FSNN_ZOO"]
    try:
        import keras_fsnn.presets as presets

        return next(iter(presets.__path__))
    except ImportError:
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo")


def names():
    root = preset_root()
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))


def list():  # noqa: A001 - the issue's API name
    """Every shipped preset with its status and, when trained, its measured accuracy."""
    entries = []
    for name in names():
        metadata = _read_json(os.path.join(preset_root(), name, "metadata.json"))
        if metadata.get("status") == TRAINED:
            # the arguments the weights were trained with where they differ from the architecture's defaults
            arguments = _read_json(os.path.join(preset_root(), name, "config.json"))["arguments"]
            settings = "".join(f", {k}={v!r}" for k, v in arguments.items() if k != "name")
            status = (f"trained: {100 * metadata['test_accuracy']:.2f}% test accuracy on {metadata['dataset']} "
                      f"(T={metadata['time_steps']}, {metadata['neuron'].upper()}{settings})")
        else:
            status = f"not trained yet ({metadata.get('reason', 'no weights')}); load(..., weights=None) builds it"
        entries.append({"name": name, "status": status, "metadata": metadata})
    return entries


def locate(name):
    """The folder of preset `name` (a shipped name or a path to a preset folder)."""
    if os.path.isdir(name):
        folder = name
    else:
        folder = os.path.join(preset_root(), str(name))
        if not os.path.isfile(os.path.join(folder, "config.json")):
            known = ", ".join(repr(n) for n in names())
            raise PresetError(f"Unknown zoo preset {name!r}. Known presets: {known}; or pass a preset folder path.")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise PresetError(f"{folder} is not a preset folder: it has no config.json.")
    return folder


def build(name, **overrides):
    """The architecture of a preset, with fresh weights; `overrides` change its arguments
    (e.g. time_steps=10 to evaluate at another T)."""
    folder = locate(name)
    config = _read_json(os.path.join(folder, "config.json"))
    architecture = config["architecture"]
    if architecture not in ARCHITECTURES:
        raise PresetError(f"{folder}/config.json names architecture {architecture!r}; known: {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[architecture](**{**config["arguments"], **overrides})


def load(name, weights="pretrained", **overrides):
    """Build preset `name` and load its weights.

    Args:
        name: a zoo name (see `list()`) or a preset folder.
        weights: "pretrained" (the preset's verified weights), None (fresh weights), or a
            path to a `.weights.h5` or `.keras` file with weights for this architecture.
        **overrides: architecture arguments to change, e.g. `time_steps`.
    """
    folder = locate(name)
    model = build(folder, **overrides)
    if weights is None:
        return model
    path = pretrained_weights_path(folder) if weights == "pretrained" else weights
    return load_weights(model, path, name)


def load_weights(model, path, name=None):
    """Load the weights in `path` (a `.weights.h5` file, or a `.keras` model of the same
    architecture) into `model`; a missing file or a mismatch is a `PresetError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PresetError(f"weights={path!r}: no such file.")
    name = name or model.name
    try:
        if path.endswith(".keras"):
            import keras_fsnn  # noqa: F401  (registers the layers)

            model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
        else:
            model.load_weights(path)
    except Exception as error:
        raise PresetError(f"Could not load weights from {path} into {name!r}: {error}") from error
    return model


def pretrained_weights_path(folder):
    """The preset's weights file after checking it exists and matches its sha256 (fetched
    from `weights_url` into the Keras cache when the file is not in the folder)."""
    metadata = _read_json(os.path.join(folder, "metadata.json"))
    name = os.path.basename(os.path.normpath(folder))
    if metadata.get("status") != TRAINED:
        raise PresetError(
            f"Preset {name!r} has no pretrained weights: {metadata.get('reason', 'it has not been trained')}. "
            f"Use keras_fsnn.zoo.load({name!r}, weights=None) for the architecture, or train it with "
            f"`keras-fsnn train {name}`.")
    expected = metadata["weights_sha256"]
    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path):
        if not metadata.get("weights_url"):
            raise PresetError(f"Preset {name!r}: its weights file {path} is missing (and no weights_url is configured).")
        path = keras.utils.get_file(f"{name}-{expected[:12]}.weights.h5", origin=metadata["weights_url"],
                                    file_hash=expected, hash_algorithm="sha256", cache_subdir="keras_fsnn")
    actual = sha256(path)
    if actual != expected:
        raise PresetError(
            f"Preset {name!r}: {path} is corrupted or truncated ({os.path.getsize(path)} bytes, sha256 {actual}; "
            f"expected {expected}). Restore the file from the repository.")
    return path


def save_preset(model, folder, architecture, arguments, metadata, card=None, name=None):
    """Write `model` as a preset folder: config, weights, metadata (with the weights'
    sha256 and parameter count) and a model card (for preset `name`, by default the
    folder's name)."""
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, "config.json"), {"architecture": architecture, "arguments": arguments})
    path = os.path.join(folder, WEIGHTS_FILE)
    model.save_weights(path)
    metadata = {**metadata, "status": TRAINED, "weights_sha256": sha256(path), "parameters": count_parameters(model)}
    _write_json(os.path.join(folder, "metadata.json"), metadata)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(card if card is not None else model_card(name or os.path.basename(os.path.normpath(folder)), metadata,
                                                         arguments))
    return metadata


SLICE = 500  # the fixed test slice (first images of the test split) a preset records


def export_run(run_dir, folder, data_dir=None, note=None):
    """Turn a finished `keras-fsnn train` run into a preset folder. The figures in the
    metadata and card are the run's own test evaluation (result.json, full test set), plus
    the accuracy on the first `SLICE` test images (what the zoo tests re-check); `note` is
    a free-text remark for the card (e.g. how the result compares with the target).

    The preset is written and checked in a temporary folder next to `folder` and only then
    swapped in (two renames): if writing or checking fails, `folder` is left as it was."""
    import keras_fsnn  # noqa: F401
    from keras_fsnn.training import get_recipe

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
        from keras_fsnn.cli import train_command

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
        check = evaluate(staging, data_dir=data_dir or run.get("data_dir"), limit=SLICE)
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
            rows = [row for row in csv.DictReader(f)]  # (`list` is zoo.list here)
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


def evaluate(name, weights="pretrained", data_dir=None, limit=None, batch_size=256, time_steps=None,
             simulation_dtype=None):
    """Test-set accuracy, per-layer firing rates and equilibrium residual of a preset;
    `time_steps` / `simulation_dtype` simulate at another T / precision than the preset's."""
    from keras_fsnn import datasets
    from keras_fsnn.training import evaluate as evaluate_model

    folder = locate(name)
    metadata = _read_json(os.path.join(folder, "metadata.json"))
    overrides = {key: value for key, value in (("time_steps", time_steps), ("simulation_dtype", simulation_dtype))
                 if value}
    model = load_for_evaluation(folder, weights, **overrides)
    dataset = metadata["dataset"]
    data = datasets.make_pipeline(dataset, "test", data_dir, batch_size=batch_size, limit=limit)
    return evaluate_model(model, data)


def model_card(name, metadata, arguments):
    rates = metadata.get("firing_rates", [])
    labels = metadata.get("firing_rate_layers") or [str(i + 1) for i in range(len(rates))]
    rates = ", ".join(f"{layer_label(label)}: {r:.4f}" for label, r in zip(labels, rates))
    residual = metadata.get("residual_at_T")
    residual = "not measured" if residual is None else f"{residual:.4f}"
    if metadata.get("residual_at_T_per_stream"):
        residual += " (largest stream; per stream: " + ", ".join(
            f"{r:.4f}" for r in metadata["residual_at_T_per_stream"]) + ")"
    lines = [
        f"# {name}",
        "",
        metadata.get("description", ""),
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | `{metadata.get('architecture_name', '')}` ({metadata['parameters']:,} parameters, paper convention) |",
        f"| dataset | {metadata['dataset']} ({metadata.get('test_examples', '')} test images) |",
        f"| neuron | {metadata['neuron'].upper()}" + (f", leak {metadata['leak']}" if metadata.get('leak') not in (None, 1.0) else "")
        + f", V_th = {metadata.get('threshold', arguments.get('threshold', 2.0))}, T = {metadata['time_steps']} |",
        f"| **test accuracy** | **{100 * metadata['test_accuracy']:.2f}%** (full test set, final epoch, no selection on the test set) |",
        f"| paper | {metadata.get('paper_result', '')} |",
        f"| average firing rate | {rates} |",
        f"| equilibrium residual at T | {residual} |",
        *_backward_rows(metadata.get("backward")),
        f"| training | {metadata.get('training', '')} |",
        *_budget_rows(metadata.get("time_budget")),
        *([f"| validation | the last {metadata['validation_examples']:,} training images were held out (not trained "
            f"on); accuracy on them {100 * metadata['validation_accuracy']:.2f}% |"] if metadata.get("validation_examples") else []),
        *([f"| initial weights | `{metadata['initial_weights']['source']}` (sha256 "
            f"`{metadata['initial_weights']['sha256'][:16]}…`), not a fresh initialisation; the optimizer started "
            "afresh |"] if metadata.get("initial_weights") else []),
        *([f"| simulation precision | {metadata['simulation_dtype']} currents (`simulation_dtype`), float32 state and "
            "gradients; on a CPU without bfloat16 units load it with `simulation_dtype='float32'` (8x faster on an "
            "AVX2-only CPU, docs/ide.md) |"] if metadata.get("simulation_dtype", "float32") != "float32" else []),
        f"| machine | {metadata.get('machine', '')} |",
        f"| weights sha256 | `{metadata['weights_sha256']}` |",
        "",
        "Reproduce the training:",
        "",
        f"    {metadata.get('train_command', '')}",
        "",
        *(["The same schedule without a time budget (on any machine):", "",
           f"    {metadata['time_budget']['train_command']}", ""]
          if (metadata.get("time_budget") or {}).get("train_command") else []),
        "Reproduce the measurement:",
        "",
        f"    keras-fsnn eval {name} --data-dir DATA",
        "",
        "Load it:",
        "",
        "    import keras_fsnn",
        f"    model = keras_fsnn.zoo.load({name!r})   # input: images as floats in [0, 1]",
        "",
        *([f"Note: {metadata['note']}", ""] if metadata.get("note") else []),
    ]
    return "\n".join(lines)


def layer_label(label):
    """"2" -> "layer 2"; ImplicitStreams' "s1_2" -> "stream 1 layer 2"."""
    if label.startswith("s") and "_" in label:
        stream, layer = label[1:].split("_", 1)
        return f"stream {stream} layer {layer}"
    return f"layer {label}"


def _budget_rows(budget):
    if not budget:
        return []
    device = f" on {budget['device']}" if budget.get("device") else ""
    stopped = budget.get("stopped")
    trained = (f"stopped after {stopped['after_epochs']:g} of them: {stopped['reason']}" if stopped
               else "all trained")
    wall = f" in {budget['wall_seconds']:.0f} s of wall time" if budget.get("wall_seconds") else ""
    return [f"| schedule | sized to a {budget['budget_seconds']:.0f} s wall-clock budget from a measured "
            f"{budget['step_seconds']:.3f} s training step (batch {budget['batch_size']}){device}: "
            f"{budget['epochs']} epoch{'s' * (budget['epochs'] != 1)} planned, {trained}{wall} |"]


def _backward_rows(backward):
    if not backward:
        return []
    rate = backward.get("firing_rate_last_epoch")
    return [f"| backward (training) | SPIDE: T_B = {backward['time_steps']} steps of ternary neurons, "
            f"V_th^b = {backward['threshold']}, u_rest^b = {backward['resting_potential']}, scale s = {backward['scale']}"
            + (f"; backward firing rate {rate:.4f} in the last epoch" if rate is not None else "") + " |"]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path):
    if not os.path.isfile(path):
        raise PresetError(f"{path} is missing.")
    with open(path) as f:
        return json.load(f)


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
