"""Run by tests in a subprocess, under the Keras backend of its environment:

    python tests/backend_probe.py MODEL.keras INPUTS.npz OUT.npz

loads a saved FSNN model (saved under either backend), and writes its logits, the spiking
block's per-layer spike counts and the training-mode loss gradients on the inputs."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import value_and_grads  # noqa: E402

import keras_fsnn  # noqa: E402, F401  (registers the layers)
from keras_fsnn.callbacks import block_inputs, spiking_blocks  # noqa: E402


def probe(model, x, y):
    """logits, spike counts of every layer, loss and gradients (training mode, no dropout)."""
    block = spiking_blocks(model)[0]
    counts = block.simulate(block_inputs(model, block, x), record_residuals=False, count_spikes=True)["counts"]
    logits = keras.ops.convert_to_numpy(model(x, training=False))  # before training-mode calls update BN statistics
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss, grads = value_and_grads(lambda: loss_fn(y, model(x, training=True)), model.trainable_variables)
    out = {"logits": logits, "loss": np.float64(loss)}
    out.update({f"counts_{i}": keras.ops.convert_to_numpy(c) for i, c in enumerate(counts)})
    out.update({f"grad_{i}": g for i, g in enumerate(grads)})
    return out


if __name__ == "__main__":
    model_path, inputs_path, out_path = sys.argv[1:4]
    data = np.load(inputs_path)
    model = keras.saving.load_model(model_path)
    np.savez(out_path, backend=keras.backend.backend(), **probe(model, data["x"], data["y"]))
