"""keras_fsnn/_environment.py: TensorFlow's CPU defaults, set on import unless the user set them."""

import os
import subprocess
import sys

import pytest

from conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's environment variables")

PROBE = """
import keras_fsnn, tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
tf.ones((4,))
try:
    tf.config.experimental.get_memory_info("CPU:0")
    pooled = True
except ValueError:
    pooled = False
print(bool(_pywrap_util_port.IsMklEnabled()), pooled)
"""


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                         capture_output=True, text=True, check=True, timeout=300)
    return out.stdout.split()[-2:]


def test_import_turns_on_onednn_and_a_pooled_allocator():
    assert probe() == ["True", "True"]


def test_the_users_setting_wins():
    assert probe(TF_ENABLE_ONEDNN_OPTS="0", TF_CPU_ALLOCATOR_USE_BFC="false") == ["False", "False"]
