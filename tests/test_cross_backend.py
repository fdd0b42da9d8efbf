"""The same saved model gives the same spikes, logits and gradients under TensorFlow and
JAX: a `.keras` file saved under this process's backend is loaded and probed under the
other one in a subprocess (tests/backend_probe.py)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from backend_probe import probe
from conftest import cosine

from keras_fsnn import FeedbackSpikingBlock

OTHER = {"tensorflow": "jax", "jax": "tensorflow"}[keras.backend.backend()]
HERE = os.path.dirname(os.path.abspath(__file__))


def model_with_every_part():
    """Conv stages with batch norm, a conv-transpose feedback with the spectral-norm
    restriction, LIF neurons, Broyden adjoint (no dropout: its random masks differ
    between backends by design)."""
    keras.utils.set_random_seed(0)
    block = FeedbackSpikingBlock(
        forward=[
            keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization()]),
            keras.Sequential([keras.layers.Conv2D(8, 3, strides=2, padding="same"), keras.layers.BatchNormalization()]),
        ],
        feedback=keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False),
        time_steps=12, neuron="lif", leak=0.95, solver="broyden", name="fsnn")
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(block(inputs))))


def test_saved_model_runs_identically_under_the_other_backend(tmp_path):
    pytest.importorskip(OTHER)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 8, 8, 1)).astype("float32") * 3
    y = rng.integers(0, 3, 16)
    model = model_with_every_part()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trained weights and batch-norm statistics
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", x=x, y=y)
    here = probe(model, x, y)

    env = dict(os.environ, KERAS_BACKEND=OTHER, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.join(HERE, "backend_probe.py"), str(tmp_path / "model.keras"),
               str(tmp_path / "inputs.npz"), str(tmp_path / "other.npz")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    there = np.load(tmp_path / "other.npz")
    assert str(there["backend"]) == OTHER

    for i in range(2):  # identical spike trains -> identical rates
        np.testing.assert_array_equal(here[f"counts_{i}"], there[f"counts_{i}"])
    np.testing.assert_allclose(here["logits"], there["logits"], rtol=1e-5, atol=1e-5)
    assert float(there["loss"]) == pytest.approx(here["loss"], rel=1e-5)
    n = len([k for k in here if k.startswith("grad_")])
    similarity = cosine([here[f"grad_{i}"] for i in range(n)], [there[f"grad_{i}"] for i in range(n)])
    assert similarity >= 0.9999, similarity
