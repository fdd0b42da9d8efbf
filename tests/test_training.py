"""The recipe's optimiser and schedule follow the paper (PyTorch SGD semantics), and a run
interrupted after an epoch, or within one, and resumed ends exactly where an uninterrupted
run ends."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import NO_TENSORFLOW, QUICK_JIT
from data_paths import shared_data

from keras_fsnn.datasets.readers import DatasetNotFoundError
from keras_fsnn.cli import main as cli
from keras_fsnn.training import SLICE, CoupledSGD, WarmupMultiStep, export_run, train


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


def assert_same_run(folder_a, folder_b, result_a, result_b):
    assert result_a["accuracy"] == result_b["accuracy"]
    a = keras.saving.load_model(folder_a / "model.keras")
    b = keras.saving.load_model(folder_b / "model.keras")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    root = shared_data("fashion_mnist")
    # jit_compile "auto": XLA for this dense model, as its recipe trains it
    kwargs = dict(data_dir=root, limit=300, batch_size=100, verbose=0, model_overrides={"time_steps": 3})
    straight = train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), epochs=2, **kwargs)
    train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), epochs=1, **kwargs)
    assert json.load(open(tmp_path / "resumed" / "state.json")) == {"finished_epochs": 1}
    resumed = train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), resume=True, epochs=2, data_dir=root, verbose=0)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
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


def test_a_run_can_start_from_trained_weights(tmp_path):
    """initial_weights: a new run starts from a weights file or a preset (recorded with its
    sha256 in run.json, the preset's metadata and card) instead of a fresh initialisation."""
    from keras_fsnn import zoo

    root = shared_data("fashion_mnist")
    kwargs = dict(data_dir=root, limit=128, batch_size=64, verbose=0, epochs=1, model_overrides={"time_steps": 2},
                  jit_compile=QUICK_JIT)
    train("fsnn_fmnist", output_dir=str(tmp_path / "first"), **kwargs)
    first = keras.saving.load_model(tmp_path / "first" / "model.keras", compile=False)
    first.save_weights(tmp_path / "first.weights.h5")
    for source in (tmp_path / "first.weights.h5", tmp_path / "first" / "model.keras"):
        # learning rate 0: the trainable weights stay where they started
        run = tmp_path / f"from_{source.name}"
        train("fsnn_fmnist", output_dir=str(run), initial_weights=str(source), learning_rate=0.0, **kwargs)
        second = keras.saving.load_model(run / "model.keras", compile=False)
        for a, b in zip(first.trainable_weights, second.trainable_weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        assert json.load(open(run / "run.json"))["initial_weights"]["sha256"] == zoo.sha256(str(source))
    fresh = keras.saving.load_model(tmp_path / "first" / "model.keras", compile=False)  # a control: training moves them
    train("fsnn_fmnist", output_dir=str(tmp_path / "moved"), initial_weights=str(tmp_path / "first.weights.h5"), **kwargs)
    moved = keras.saving.load_model(tmp_path / "moved" / "model.keras", compile=False)
    assert not np.array_equal(fresh.trainable_weights[0].numpy(), moved.trainable_weights[0].numpy())

    run = tmp_path / "from_first.weights.h5"
    record = json.load(open(run / "run.json"))
    json.dump({**record, "limit": None}, open(run / "run.json", "w"))  # stand in for a full-data run
    metadata = export_run(str(run), str(tmp_path / "preset"))
    assert metadata["initial_weights"] == {"source": str(tmp_path / "first.weights.h5"), "sha256": record["initial_weights"]["sha256"]}
    assert "| initial weights | `" in (tmp_path / "preset" / "README.md").read_text()

    with pytest.raises(ValueError, match="initial_weights='nope': neither a weights file"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "a"), initial_weights="nope", **kwargs)
    with pytest.raises(zoo.PresetError, match="Could not load weights"):  # another architecture's preset
        train("fsnn_fmnist", output_dir=str(tmp_path / "b"), initial_weights="fsnn_mnist", **kwargs)
    with pytest.raises(ValueError, match="a resumed run continues from its checkpoint"):
        train("fsnn_fmnist", output_dir=str(run), resume=True, initial_weights=str(tmp_path / "first.weights.h5"),
              data_dir=root)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_held_out_validation_examples_replace_the_test_set_during_training(tmp_path):
    """validation_examples=N: the last N training examples are not trained on and are what
    the epochs report as val_; the test set is evaluated once, at the end."""
    from keras_fsnn import zoo

    root = shared_data("fashion_mnist")
    kwargs = dict(data_dir=root, limit=300, batch_size=100, verbose=0, epochs=1, model_overrides={"time_steps": 2},
                  jit_compile=QUICK_JIT)
    run = tmp_path / "run"
    result = train("fsnn_fmnist", output_dir=str(run), validation_examples=100, **kwargs)
    assert result["examples"] == 300 and result["validation"]["examples"] == 100
    model = keras.saving.load_model(run / "model.keras")
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2  # 200 examples, batch 100
    log = (run / "log.csv").read_text().splitlines()
    row = dict(zip(log[0].split(","), log[-1].split(",")))
    assert float(row["val_accuracy"]) == pytest.approx(result["validation"]["accuracy"], abs=1e-6)
    assert json.load(open(run / "run.json"))["validation_examples"] == 100

    with pytest.raises(ValueError, match=r"these differ .*'validation_examples': \(100, 50\)"):
        train("fsnn_fmnist", output_dir=str(run), resume=True, validation_examples=50, epochs=2, data_dir=root)
    record = json.load(open(run / "run.json"))
    json.dump({**record, "limit": None}, open(run / "run.json", "w"))  # stand in for a full-data run
    metadata = export_run(str(run), str(tmp_path / "preset"))
    assert metadata["validation_examples"] == 100 and metadata["validation_accuracy"] == result["validation"]["accuracy"]
    assert "| validation | the last 100 training images were held out" in (tmp_path / "preset" / "README.md").read_text()

    with pytest.raises(ValueError, match="validation_examples=300: the training set has 300 examples"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "a"), validation_examples=300, **kwargs)
    with pytest.raises(ValueError, match=r"`validation_examples` must be an integer >= 1; received validation_examples=0"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "b"), validation_examples=0, **kwargs)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Stop training by an exception after `batch` (0-based) of `epoch`, like a killed process."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt


# numpy: the input path of a machine without TensorFlow (the JAX GPU machine), so rerun under JAX
@pytest.mark.parametrize("pipeline", ["tf_data", pytest.param("numpy", marks=pytest.mark.backend)])
def test_a_run_interrupted_within_an_epoch_resumes_from_its_last_step_checkpoint(tmp_path, pipeline):
    root = shared_data("fashion_mnist")
    kwargs = dict(data_dir=root, limit=300, batch_size=100, verbose=0, model_overrides={"time_steps": 3},
                  pipeline=pipeline, jit_compile=QUICK_JIT)  # 3 steps per epoch; resuming under XLA: the test above
    straight = train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), epochs=2, **kwargs)
    with pytest.raises(Interrupt):  # killed after step 2 of epoch 1; a checkpoint after every step
        train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), epochs=2, checkpoint_every=1,
              callbacks=[InterruptAt(epoch=0, batch=1)], **kwargs)
    state = tmp_path / "resumed" / "state.json"
    assert json.load(open(state)) == {"finished_epochs": 0, "finished_steps": 2}
    run = (tmp_path / "resumed" / "run.json").read_text()
    with pytest.raises(ValueError, match=r"has trained 0 epochs and 2 steps of the next: pass --epochs 1 or more"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), resume=True, epochs=0, data_dir=root)
    assert (tmp_path / "resumed" / "run.json").read_text() == run  # a refused resume changes nothing
    # killed between writing the checkpoint and state.json: the checkpoint's step count wins
    state.write_text(json.dumps({"finished_epochs": 0, "finished_steps": 1}))

    resumed = train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), resume=True, data_dir=root, verbose=0,
                    jit_compile=QUICK_JIT)
    assert json.load(open(state)) == {"finished_epochs": 2}
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
    log = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1"]  # one row per epoch
    with pytest.raises(ValueError, match=r"`checkpoint_every` must be an integer >= 1; received checkpoint_every=0"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "c"), checkpoint_every=0)


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(ValueError, match=r"`name` must be one of 'fsnn_mnist', 'fsnn_fmnist'"):
        train("vgg16")


def test_bad_options_and_missing_data_write_no_run_folder(tmp_path):
    with pytest.raises(ValueError, match=r"neuron='lif' does not apply to 'spide_mnist'"):
        train("spide_mnist", output_dir=str(tmp_path / "a"), model_overrides={"neuron": "lif"})
    with pytest.raises(ValueError, match=r"backward_scale=10.0 does not apply to 'fsnn_mnist'"):
        train("fsnn_mnist", output_dir=str(tmp_path / "b"), model_overrides={"backward_scale": 10.0})
    with pytest.raises(Exception, match="idx"):
        train("fsnn_mnist", data_dir=str(tmp_path / "empty"), output_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"`random_shift` must be an integer >= 0; received random_shift=-2"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "d"), random_shift=-2)
    with pytest.raises(TypeError, match=r"`random_flip` must be True or False; received random_flip='on'"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "e"), random_flip="on")
    with pytest.raises(ValueError, match=r"random_shift=2: augmentation applies to images .* 'nmnist' gives frame"):
        train("fsnn_nmnist", output_dir=str(tmp_path / "f"), random_shift=2)
    assert not any((tmp_path / d).exists() for d in "abcdef")  # a corrected command can run there


def test_solver_and_solver_tolerance_reach_every_implicit_block_and_are_checked_first(tmp_path):
    from keras_fsnn import cli, solvers
    from keras_fsnn.training.trainer import build_model

    for name in ("fsnn_mnist", "mpis_fmnist"):
        model = build_model(name, solver="gmres", solver_tol=1e-2, time_steps=2)
        blocks = [layer for layer in model.layers if hasattr(layer, "backward")]
        assert blocks and all(b.backward.tol == 1e-2 and b.get_config()["solver_tol"] == 1e-2 for b in blocks)
        assert all(b.backward.solve is solvers.gmres and b.get_config()["solver"] == "gmres" for b in blocks)
    with pytest.raises(SystemExit):  # argparse: the CLI offers exactly the library's solvers
        cli.main(["train", "fsnn_fmnist", "--solver", "newton", "--output-dir", str(tmp_path / "run")])
    for name in solvers.SOLVERS:
        with pytest.raises(ValueError, match="solver_tol"):  # accepted by the parser, refused later
            cli.main(["train", "fsnn_fmnist", "--solver", name, "--solver-tol", "-1",
                      "--output-dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=r"`solver_tol` must lie in \[0.0, inf\); received solver_tol=-1.0"):
        cli.main(["train", "fsnn_fmnist", "--solver-tol", "-1", "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_numpy_batches_are_a_pure_function_of_seed_and_epoch():
    from keras_fsnn.datasets import DATASETS
    from keras_fsnn.datasets.numpy_pipeline import ArrayBatches, EpochBatches

    info = DATASETS["cifar10"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10)
    crop_flip = info.augmentation
    running = EpochBatches(info, images, labels, 4, seed=7, augmentation=crop_flip)  # 3 batches per epoch
    running.on_epoch_end()  # Keras calls it at odd times (also when fit starts): it changes nothing
    resumed = EpochBatches(info, images, labels, 4, seed=7, first_epoch=1, augmentation=crop_flip)
    within = EpochBatches(info, images, labels, 4, seed=7, first_epoch=1, augmentation=crop_flip, first_batch=2)
    assert running.num_batches is None  # one endless sequence, epoch after epoch
    for i in range(6):
        (xa, ya), (xb, yb) = running[3 + i], resumed[i]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(within[0][1], resumed[2][1])
    np.testing.assert_array_equal(within[1][0], resumed[3][0])
    assert not np.array_equal(resumed[0][1], resumed[3][1])  # epochs are shuffled differently
    x, y = resumed[0]
    assert x.dtype == np.float32 and x.shape == (4, 32, 32, 3) and 0 <= x.min() and x.max() <= 1
    order, offsets, _ = resumed.draws(1)
    for image, label in zip(x, y):  # a crop of the zero-padded original, maybe flipped
        padded = np.pad(images[label].astype("float32") / 255, ((4, 4), (4, 4), (0, 0)))
        dy, dx = offsets[list(order).index(label)]
        crop = padded[dy:dy + 32, dx:dx + 32]
        assert np.array_equal(image, crop) or np.array_equal(image, crop[:, ::-1])
    assert sorted(np.concatenate([resumed[i][1] for i in range(3)])) == list(range(10))  # a permutation
    batches = list(ArrayBatches(info, images, labels, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2] and np.array_equal(batches[2][1], [8, 9])


TRAIN_WITHOUT_TENSORFLOW = NO_TENSORFLOW + '''
from keras_fsnn.training import train
result = train("fsnn_fmnist", data_dir=sys.argv[1], output_dir=sys.argv[2], epochs=1, limit=200, batch_size=100,
               verbose=0, model_overrides={"time_steps": 3})
assert "tensorflow" not in sys.modules
print("accuracy", result["accuracy"])
'''


def test_training_runs_on_jax_without_tensorflow_installed(tmp_path):
    """The GPU machine has JAX but no TensorFlow: the trainer falls back to NumPy batches."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    root = shared_data("fashion_mnist")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", TRAIN_WITHOUT_TENSORFLOW, root, str(tmp_path / "run")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout
    assert json.load(open(tmp_path / "run" / "run.json"))["pipeline"] == "numpy"


@pytest.mark.parametrize("name, dataset, overrides, augmentation", [
    ("fsnn_fmnist", "fashion_mnist", {"time_steps": 3}, {"random_shift": 2}),
    ("spide_mnist", "mnist", {"time_steps": 3, "backward_time_steps": 5, "simulation_dtype": "bfloat16"}, {}),
    ("mpis_fmnist", "fashion_mnist", {"time_steps": 3, "gradient": "one_step", "rates": "first_step"}, {}),
])
def test_export_turns_a_full_run_into_a_verified_preset(tmp_path, name, dataset, overrides, augmentation):
    from keras_fsnn import zoo

    root = shared_data(dataset)
    run = tmp_path / "run"
    result = train(name, output_dir=str(run), data_dir=root, epochs=1, limit=128, batch_size=64, verbose=0,
                   model_overrides=overrides, jit_compile=QUICK_JIT, **augmentation)
    with pytest.raises(zoo.PresetError, match="trained on a subset"):
        export_run(str(run), str(tmp_path / "refused"))
    record = json.load(open(run / "run.json"))
    json.dump({**record, "limit": None}, open(run / "run.json", "w"))  # stand in for a full-data run

    metadata = export_run(str(run), str(tmp_path / name), note="One epoch on 128 images.")
    assert metadata["test_accuracy"] == result["accuracy"] and metadata["test_slice"]["examples"] == SLICE
    assert metadata["weights_sha256"] == zoo.sha256(str(tmp_path / name / zoo.WEIGHTS_FILE))
    assert metadata["time_steps"] == 3 and metadata["epochs"] == 1
    preset = zoo.load(str(tmp_path / name))
    trained = keras.saving.load_model(run / "model.keras", compile=False)
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(preset(x)), keras.ops.convert_to_numpy(trained(x)))
    card = (tmp_path / name / "README.md").read_text()
    assert f"**{100 * result['accuracy']:.2f}%**" in card
    assert "1 epoch, SGD momentum 0.9, lr" in card and "batch 64" in card
    assert ("random shifts of up to 2 px" in card) == bool(augmentation)  # the card says how it was trained
    assert metadata["note"] == "One epoch on 128 images." and "Note: One epoch on 128 images." in card
    assert metadata["simulation_dtype"] == overrides.get("simulation_dtype", "float32")
    assert ("bfloat16 currents" in card) == ("simulation_dtype" in overrides)
    if name.startswith("spide"):
        backward = metadata["backward"]
        assert backward["time_steps"] == 5 and backward["scale"] == 100.0 and 0 <= backward["firing_rate_last_epoch"] <= 1
        assert "T_B = 5 steps of ternary neurons" in card
    else:
        assert "backward" not in metadata and "ternary" not in card
    if name.startswith("mpis"):  # ImplicitStreams: rates and residuals stream by stream
        assert metadata["firing_rate_layers"] == ["s1_1", "s1_2", "s1_3", "s2_1", "s2_2", "s2_3"]
        assert len(metadata["residual_at_T_per_stream"]) == 2
        assert metadata["residual_at_T"] == max(metadata["residual_at_T_per_stream"])
        assert "stream 2 layer 3: " in card and "per stream: " in card
    else:
        assert metadata["firing_rate_layers"] == [str(i + 1) for i in range(len(metadata["firing_rates"]))]
        assert "residual_at_T_per_stream" not in metadata and "layer 1: " in card


def test_a_failed_export_leaves_the_existing_preset_as_it_was(tmp_path):
    from keras_fsnn import zoo

    run = tmp_path / "run"
    train("fsnn_fmnist", output_dir=str(run), data_dir=shared_data("fashion_mnist"), epochs=1, limit=64,
          batch_size=64, verbose=0, model_overrides={"time_steps": 2}, jit_compile=QUICK_JIT)
    record = json.load(open(run / "run.json"))
    json.dump({**record, "limit": None}, open(run / "run.json", "w"))
    preset = tmp_path / "zoo" / "fsnn_fmnist"
    preset.mkdir(parents=True)
    before = {"config.json": '{"architecture": "fsnn_fmnist", "arguments": {}}', "README.md": "the published card",
              "metadata.json": '{"description": "the published description"}', zoo.WEIGHTS_FILE: "published weights"}
    for file, text in before.items():
        (preset / file).write_text(text)

    # the test-slice check runs after the new weights are written: make it fail there
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        export_run(str(run), str(preset), data_dir=str(tmp_path / "nowhere"))
    assert {p.name: p.read_text() for p in preset.iterdir()} == before
    assert sorted(p.name for p in preset.parent.iterdir()) == ["fsnn_fmnist"]  # no staging folder left

    metadata = export_run(str(run), str(preset), data_dir=shared_data("fashion_mnist"))  # a good one replaces it
    assert metadata["description"] == "the published description"
    assert sorted(p.name for p in preset.iterdir()) == ["README.md", "config.json", "metadata.json", zoo.WEIGHTS_FILE]
    assert sorted(p.name for p in preset.parent.iterdir()) == ["fsnn_fmnist"]
    (tmp_path / "plain").mkdir()
    assert preset.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkdtemp's private 0700
