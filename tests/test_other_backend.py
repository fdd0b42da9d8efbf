"""Runs the backend-sensitive tests (marked `backend`: those whose code path differs by
backend, i.e. the gradient oracles, the backward modes' custom gradients and loops, XLA,
saving, the NumPy pipeline) again under the other Keras backend (TensorFlow <-> JAX), in
subprocesses, so one `pytest` command covers both."""

import os
import subprocess
import sys

import keras
import pytest

OTHER = {"tensorflow": "jax", "jax": "tensorflow"}[keras.backend.backend()]
TESTS = os.path.dirname(os.path.abspath(__file__))


SHARDS = 2  # the rerun in parts, which pytest-xdist's workers take side by side


@pytest.mark.parametrize("shard", range(SHARDS))
def test_backend_sensitive_tests_pass_under_the_other_backend(shard):
    pytest.importorskip(OTHER)
    env = dict(os.environ, KERAS_BACKEND=OTHER, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "pytest", "-q", "-m", "backend and not slow", "-p", "no:cacheprovider",
               "-n", "0", "--shard", f"{shard}/{SHARDS}", "--durations=10", TESTS]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"KERAS_BACKEND={OTHER}, shard {shard}/{SHARDS}: {summary}")  # with the 10 slowest (pytest -rP shows them)
    print("\n".join(line for line in result.stdout.splitlines() if line[:1].isdigit() and "s call" in line))
    assert result.returncode == 0, f"under KERAS_BACKEND={OTHER}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert " passed" in summary
