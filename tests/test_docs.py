"""Every ```python snippet of the README and docs/ runs as written, on the bundled digits
(images scaled to [0, 1]) for the data it names, with only its documented run lengths
shortened and its `...` placeholders filled in (SHORTER below)."""

import glob
import os
import re

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

# What a snippet leaves to the reader or runs for long: written text -> what the test runs.
SHORTER = {
    "epochs=300": "epochs=1", "epochs=50": "epochs=1", "epochs=3": "epochs=1", "max_trials=20": "max_trials=2",
    "HyperFSNN((28, 28, 1)": "HyperFSNN((8, 8, 1)",
    "model.compile(...)": "model.compile('sgd', keras.losses.SparseCategoricalCrossentropy(from_logits=True))",
    "model.fit(dataset, ...)": "pass", "model.fit(...)": "pass",
    "forward=[...], feedback=...,": "forward=[keras.layers.Dense(32)], feedback=keras.layers.Dense(32, use_bias=False),",
}


def snippets():
    for name in FILES:
        text = open(os.path.join(ROOT, name)).read()
        for k, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            yield pytest.param(match.group(1), id=f"{name}#{k}")


def names_for(code):
    """The data and imports a snippet takes from its surrounding prose."""
    from sklearn.datasets import load_digits

    import keras_fsnn
    from keras_fsnn.tuner import HyperFSNN

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target
    names = dict(keras=keras, keras_fsnn=keras_fsnn, np=np, HyperFSNN=HyperFSNN,
                 x=x[:64], y=y[:64], x_test=x[:16], x_train=x[:200], y_train=y[:200], x_val=x[200:300],
                 y_val=y[200:300], forward=[keras.layers.Dense(16)], feedback=keras.layers.Dense(16, use_bias=False),
                 currents=np.random.rand(2, 10, 4).astype("float32"),
                 images=np.random.rand(2, 28, 28, 1).astype("float32"))
    if "yin_yang" in code:
        from keras_fsnn.datasets.yin_yang import encode_yin_yang, load_yin_yang

        features, labels = load_yin_yang("test")
        names.update(x_test=encode_yin_yang(features), y_test=labels)
    if "tf." in code:
        names["tf"] = pytest.importorskip("tensorflow")
    if "jax." in code:
        names["jax"] = pytest.importorskip("jax")
    return names


@pytest.mark.parametrize("code", snippets())
def test_documented_snippet_runs(code, tmp_path, monkeypatch):
    if keras.backend.backend() != "tensorflow" and "tf." in code:
        pytest.skip("a TensorFlow snippet")
    from keras_fsnn import gradients, neurons

    monkeypatch.chdir(tmp_path)  # what a snippet writes (a tuner project, weight files) stays here
    # a snippet registering an option sees the library's own registry, not one that another
    # test in this process extended (test_options registers the same example neuron)
    for module, name in ((neurons, "NEURONS"), (gradients, "GRADIENTS")):
        own = {key: cls for key, cls in getattr(module, name).items() if cls.__module__.startswith("keras_fsnn.")}
        monkeypatch.setattr(module, name, own)
    for written, run in SHORTER.items():
        code = code.replace(written, run)
    exec(compile(code, "snippet", "exec"), names_for(code))
