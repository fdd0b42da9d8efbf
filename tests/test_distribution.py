"""Distributed training with the engines users already have: tf.distribute's
MirroredStrategy (TensorFlow) and keras.distribution.DataParallel (JAX), each on two
logical CPU devices, give the same losses and weights as training on one device."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_fsnn import FeedbackSpikingBlock

HERE = os.path.dirname(os.path.abspath(__file__))


def run_check(mode):
    result = subprocess.run([sys.executable, os.path.join(HERE, "distributed_check.py"), mode],
                            capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode, backend", [
    ("mirrored", "tensorflow"),          # no batch norm
    ("mirrored_sync_bn", "tensorflow"),  # synchronized batch norm, bn_statistics="released_code"
    ("data_parallel", "jax"),            # batch norm: statistics over the global batch
])
def test_distributed_training_matches_one_device(mode, backend):
    pytest.importorskip(backend)
    out = run_check(mode)
    assert out["devices"] == 2
    np.testing.assert_allclose(out["distributed"], out["single"], rtol=1e-5)
    assert out["weight_difference"] < 1e-5
    assert not out["diagnostics"]["backward_failed"]
    assert 0 < out["diagnostics"]["rate_1"] < 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="synchronized batch norm is TensorFlow-only")
def test_synchronized_batch_norm_in_the_adjoint_is_refused_early():
    stage = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization(synchronized=True)])
    with pytest.raises(ValueError, match="synchronized"):
        FeedbackSpikingBlock(forward=[stage], feedback=keras.layers.Conv2D(4, 3, padding="same", use_bias=False))
