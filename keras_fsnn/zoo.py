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
trained says so in `list_presets()` and its card, and `load` refuses it unless
`weights=None`. A missing, malformed or incomplete file of a preset is a `PresetError`
naming the file and what is wrong with it. Reading and listing the preset files is
`_keras_fsnn.catalogue` (no Keras; re-exported here). This module depends on
`keras_fsnn.models` only; turning a training run into a preset and measuring one are
`keras_fsnn.training.export_run` / `evaluate_preset`.
"""

import hashlib
import inspect
import json
import os

import keras

from _keras_fsnn.catalogue import (  # noqa: F401 - the zoo's catalogue, re-exported: zoo.PresetError etc.
    CONFIG_FIELDS,
    TRAINED,
    TRAINED_METADATA,
    PresetError,
    list_presets,
    names,
    preset_root,
    read_config,
    read_json,
    read_metadata,
    require,
)
from keras_fsnn.models import ARCHITECTURES, count_parameters

WEIGHTS_FILE = "model.weights.h5"
WEIGHTS_CHOICES = "'pretrained', None, or the path of a .weights.h5 or .keras file"


list = list_presets  # noqa: A001 - the name the docs and users know


def locate(name):
    """The folder of preset `name`: a shipped name, or the path of a preset folder (str or
    os.PathLike). A string with a path separator, or starting with "." or "~", is a path."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"Argument `name` must be a zoo preset name (see keras_fsnn.zoo.list_presets()) or a "
                        f"preset folder path (str or os.PathLike); received name={name!r}.")
    if not name:
        raise PresetError("Argument `name` must be a zoo preset name or a preset folder path; received name=''.")
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        folder = path
    elif _is_path(name):
        what = "is a file, not a preset folder" if os.path.exists(path) else "no such folder"
        raise PresetError(f"Argument `name` is a path, and name={name!r}: {what}. Pass the path of a preset "
                          "folder (one with config.json) or a zoo preset name (see keras_fsnn.zoo.list_presets()).")
    else:
        folder = os.path.join(preset_root(), name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            known = ", ".join(repr(n) for n in names())
            raise PresetError(f"Unknown zoo preset {name!r}. Known presets: {known}; or pass a preset folder path.")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise PresetError(f"{folder} is not a preset folder: it has no config.json.")
    return folder


def _is_path(name):
    return any(sep and sep in name for sep in (os.sep, os.altsep, "/")) or name.startswith((".", "~"))


def build(name, **overrides):
    """The architecture of a preset, with fresh weights; `overrides` change its arguments
    (e.g. time_steps=10 to evaluate at another T)."""
    folder = locate(name)
    config = read_config(folder)
    path = os.path.join(folder, "config.json")
    architecture = config["architecture"]
    if architecture not in ARCHITECTURES:
        raise PresetError(f"{path} names architecture {architecture!r}; known: {sorted(ARCHITECTURES)}.")
    allowed = _arguments_of(ARCHITECTURES[architecture])
    if allowed is not None:
        unknown = sorted(set(config["arguments"]) - allowed)
        if unknown:
            raise PresetError(f"{path}: {architecture} takes no argument {', '.join(map(repr, unknown))}; it takes "
                              f"{', '.join(sorted(allowed))}.")
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise TypeError(f"Preset {os.path.basename(os.path.normpath(folder))!r} ({architecture}) takes no argument "
                            f"{', '.join(map(repr, unknown))}; received {unknown[0]}={overrides[unknown[0]]!r}. Its "
                            f"arguments: {', '.join(sorted(allowed))}.")
    return ARCHITECTURES[architecture](**{**config["arguments"], **overrides})


def _arguments_of(function):
    """The keyword arguments `function` takes, or None when it takes any (**kwargs)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def load(name, weights="pretrained", **overrides):
    """Build preset `name` and load its weights.

    Args:
        name: a zoo name (see `list()`) or a preset folder (str or os.PathLike; a string
            with a "/" is always a path, and a missing folder is "no such folder").
        weights: "pretrained" (the preset's verified weights), None (fresh weights), or a
            path to a `.weights.h5` or `.keras` file with weights for this architecture;
            anything else is a TypeError.
        **overrides: architecture arguments to change, e.g. `time_steps`.
    """
    folder = locate(name)
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise TypeError(f"Argument `weights` must be {WEIGHTS_CHOICES}; received weights={weights!r}.")
    model = build(folder, **overrides)
    if weights is None:
        return model
    path = pretrained_weights_path(folder) if weights == "pretrained" else weights
    return load_weights(model, path, name)


def open_model(source):
    """A trained model from `source`: a `.keras` file (loaded without its optimizer), a
    preset folder or a zoo preset name (with its verified weights)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str) and source.endswith(".keras"):
        if not os.path.isfile(source):
            raise PresetError(f"{source}: no such .keras file.")
        try:
            return keras.saving.load_model(source, compile=False)  # its layers are registered: models imported them
        except Exception as error:
            raise PresetError(f"{source} cannot be loaded as a Keras model ({type(error).__name__}: {error}).") from error
    return load(source)


def load_weights(model, path, name=None):
    """Load the weights in `path` (a `.weights.h5` file, or a `.keras` model of the same
    architecture) into `model`, all or nothing: a missing file, a mismatch, or a file that
    Keras would load only in part (it warns and leaves the rest freshly initialised) is a
    `PresetError`, and `model` keeps the weights it had."""
    import warnings

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Argument `path` must be the path of a .weights.h5 or .keras file (str or os.PathLike); "
                        f"received path={path!r}.")
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a folder, not a weights file" if os.path.isdir(path) else "no such file"
        raise PresetError(f"weights={path!r}: {what} (`weights` must be {WEIGHTS_CHOICES}).")
    name = name or model.name
    before = model.get_weights()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if path.endswith(".keras"):  # its layers are registered: keras_fsnn.models imported them
                model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
            else:
                model.load_weights(path)
        partial = [str(w.message) for w in caught if "Skipping" in str(w.message) or "could not be loaded" in str(w.message)]
        if partial:
            raise ValueError(f"only part of the model's weights are in the file: {partial[0]}")
    except Exception as error:
        model.set_weights(before)
        raise PresetError(f"Could not load weights from {path} into {name!r}: {error}") from error
    for warning in caught:  # the others, as they came
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def pretrained_weights_path(folder):
    """The preset's weights file after checking it exists and matches its sha256 (fetched
    from `weights_url` into the Keras cache when the file is not in the folder)."""
    metadata = read_metadata(folder)
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


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
