"""The recipe's optimiser and schedule follow the paper (PyTorch SGD semantics), and a run
interrupted after an epoch and resumed ends exactly where an uninterrupted run ends."""

import json
import os

import keras
import numpy as np
import pytest
from data_paths import shared_data

from keras_fsnn.cli import main as cli
from keras_fsnn.training import CoupledSGD, WarmupMultiStep, train


def test_coupled_sgd_matches_pytorch_update_rule():
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    grads = [np.array([0.1, 0.2, -0.3], "float32"), np.array([-0.4, 0.0, 0.2], "float32")]
    variable = keras.Variable(w0)
    optimizer = CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=0.01)
    w, v = w0.astype("float64"), np.zeros(3)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        d = g + 0.01 * w  # torch.optim.SGD: d_p = grad + weight_decay * p
        v = 0.9 * v + d  # buf = momentum * buf + d_p (first step: buf = d_p)
        w = w - 0.1 * v
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), w, rtol=1e-6)


def test_warmup_multistep_schedule():
    schedule = WarmupMultiStep(0.05, steps_per_epoch=10, milestones=(2, 3), warmup_steps=4)
    values = [float(schedule(step)) for step in (0, 3, 10, 19, 20, 30, 55)]
    np.testing.assert_allclose(values, [0.0125, 0.05, 0.05, 0.05, 0.005, 0.0005, 0.0005], rtol=1e-6)
    assert WarmupMultiStep.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    root = shared_data("fashion_mnist")
    kwargs = dict(data_dir=root, limit=300, batch_size=100, verbose=0, model_overrides={"time_steps": 3})
    straight = train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), epochs=2, **kwargs)
    train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), epochs=1, **kwargs)
    assert json.load(open(tmp_path / "resumed" / "state.json")) == {"finished_epochs": 1}
    resumed = train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), resume=True, epochs=2, data_dir=root, verbose=0)
    assert resumed["accuracy"] == straight["accuracy"]
    a = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    b = keras.saving.load_model(tmp_path / "resumed" / "model.keras")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    log = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch,")  # header + one row per epoch, none lost
    assert "val_accuracy" in log[0] and "fsnn/rate_1" in log[0]
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(tmp_path / "resumed" / "tensorboard") for name in files)

    with pytest.raises(FileExistsError, match="already holds a run of 'fsnn_fmnist'; pass resume=True"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), epochs=2, **kwargs)
    with pytest.raises(ValueError, match=r"these differ .*'time_steps': \(3, 5\)"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), resume=True, model_overrides={"time_steps": 5}, data_dir=root)
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "empty"), resume=True)

    cli(["eval", "fsnn_fmnist", "--weights", str(tmp_path / "straight" / "model.keras"), "--data-dir", root, "--limit", "200"])


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(ValueError, match=r"`name` must be one of 'fsnn_mnist', 'fsnn_fmnist'"):
        train("vgg16")
