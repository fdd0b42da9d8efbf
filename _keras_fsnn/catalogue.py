"""The zoo's catalogue: where the presets are, reading and checking their `config.json` and
`metadata.json`, and the list of presets with their status. It imports no Keras (the CLI's
`keras-fsnn list` and `eval --help` use it); building and loading the models is
`keras_fsnn.zoo`, which re-exports all of this.
"""

import json
import numbers
import os
import re

TRAINED = "trained"
# The keys a file must have and their JSON types; a trained preset's metadata also TRAINED_METADATA.
CONFIG_FIELDS = {"architecture": str, "arguments": dict}
TRAINED_METADATA = {"weights_sha256": str, "dataset": str, "test_accuracy": numbers.Real, "time_steps": int,
                    "neuron": str}


class PresetError(ValueError):
    """A preset cannot be loaded as asked (unknown, untrained, missing or corrupted)."""


def preset_root():
    """The folder holding the shipped presets (`$KERAS_FSNN_ZOO` overrides it): the package
    `keras_fsnn.presets` beside this one when installed from a wheel, else the source tree's
    `zoo/` (an editable install). Found by path, so that nothing of Keras is imported."""
    if os.environ.get("KERAS_FSNN_ZOO"):
        return os.environ["KERAS_FSNN_ZOO"]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(here, "keras_fsnn", "presets")
    return installed if os.path.isdir(installed) else os.path.join(here, "zoo")


def names():
    """The names of the shipped presets (folders of `preset_root()` with a config.json)."""
    root = preset_root()
    if not os.path.isdir(root):
        raise PresetError(f"The zoo folder {root} does not exist"
                          + (" (set by $KERAS_FSNN_ZOO)." if os.environ.get("KERAS_FSNN_ZOO") else "."))
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))


def list_presets():
    """Every shipped preset with its status and, when trained, its measured accuracy."""
    entries = []
    for name in names():
        metadata = read_metadata(os.path.join(preset_root(), name))
        if metadata.get("status") == TRAINED:
            # the arguments the weights were trained with where they differ from the architecture's defaults
            arguments = read_config(os.path.join(preset_root(), name))["arguments"]
            settings = "".join(f", {k}={v!r}" for k, v in arguments.items() if k != "name")
            status = (f"trained: {100 * metadata['test_accuracy']:.2f}% test accuracy on {metadata['dataset']} "
                      f"(T={metadata['time_steps']}, {metadata['neuron'].upper()}{settings})")
        else:
            status = f"not trained yet ({metadata.get('reason', 'no weights')}); load(..., weights=None) builds it"
        entries.append({"name": name, "status": status, "metadata": metadata})
    return entries


def read_config(folder):
    """A preset's config.json, checked: an object with `architecture` (a string) and
    `arguments` (an object)."""
    return read_json(os.path.join(folder, "config.json"), CONFIG_FIELDS)


def read_metadata(folder):
    """A preset's metadata.json, checked: an object; a trained preset's also has the keys of
    TRAINED_METADATA, with a sha256 of 64 hex digits."""
    path = os.path.join(folder, "metadata.json")
    metadata = read_json(path)
    if metadata.get("status") == TRAINED:
        require(metadata, TRAINED_METADATA, f"{path} (status 'trained')")
        if not re.fullmatch(r"[0-9a-f]{64}", metadata["weights_sha256"]):
            raise PresetError(f"{path}: weights_sha256 must be 64 lower-case hex digits; found "
                              f"{metadata['weights_sha256']!r}.")
    return metadata


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", int: "an integer",
              numbers.Real: "a number", float: "a number", type(None): "null"}


def _json_type(value):
    return next(name for kind, name in JSON_TYPES.items() if isinstance(value, kind))


def require(record, fields, where):
    """Check that JSON object `record` (read from `where`) has each key of `fields` with a
    value of its type (a Python type; numbers.Real for any number); a PresetError otherwise."""
    for key, kind in fields.items():
        if key not in record:
            raise PresetError(f"{where} lacks the key {key!r} ({JSON_TYPES[kind]}); it has "
                              f"{', '.join(map(repr, record)) or 'no keys'}.")
        value = record[key]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise PresetError(f"{where}: {key!r} must be {JSON_TYPES[kind]}; found {_json_type(value)}, {value!r}.")


def read_json(path, fields=None):
    """The JSON object in `path`. A missing or unreadable file, malformed JSON (e.g. a
    truncated file), a value that is not an object, or one without the keys of `fields`
    (see `require`) is a PresetError naming the file."""
    if not os.path.isfile(path):
        raise PresetError(f"{path} is missing.")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as error:
        raise PresetError(f"{path} is not valid JSON ({error}): it is truncated or corrupted.") from error
    except UnicodeDecodeError as error:
        raise PresetError(f"{path} is not UTF-8 text ({error}): it is corrupted.") from error
    if not isinstance(value, dict):
        raise PresetError(f"{path} must hold a JSON object {{...}}; it holds {_json_type(value)}.")
    if fields:
        require(value, fields, path)
    return value
