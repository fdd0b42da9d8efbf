"""The prepared GPU job of examples/gpu (docs/backends.md), run here on the CPU through the
same code path as on the lent machine: the dataset packed into two parts, the machine's two
calls through examples/gpu/device.sh under JAX with TensorFlow unimportable (part 1 only in
the first call), the files it leaves in $OUT, and their export here to a verified preset."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import NO_TENSORFLOW
from data_paths import shared_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "gpu"))

import transport  # noqa: E402

def small_cifar(folder, train=48, test=32):
    """A CIFAR-10-format file of smooth random images (the job's plumbing is the subject)."""
    rng = np.random.default_rng(0)

    def images(count):
        coarse = rng.integers(0, 256, (count, 8, 8, 3))
        return np.clip(np.kron(coarse, np.ones((1, 4, 4, 1))) + rng.integers(-8, 9, (count, 32, 32, 3)), 0, 255)

    os.makedirs(folder / "cifar10")
    np.savez(folder / "cifar10" / "cifar10.npz", x_train=images(train).astype(np.uint8),
             y_train=rng.integers(0, 10, train).astype(np.uint8), x_test=images(test).astype(np.uint8),
             y_test=rng.integers(0, 10, test).astype(np.uint8))


def test_packing_is_lossless_and_checked(tmp_path):
    rng = np.random.default_rng(1)
    for shape in [(7, 32, 32, 3), (3, 5, 9, 3), (1, 1, 1, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(transport.decode_images(transport.encode_images(images), *shape[:3]), images)
    x = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 255)] * 5)
    arrays = {"train": (x[:7], np.arange(7, dtype=np.uint8)), "test": (x[7:], np.arange(3, dtype=np.uint8))}
    folders = transport.pack_dataset("cifar10", arrays, str(tmp_path), parts=3)
    manifests = [json.load(open(os.path.join(f, "part.json"))) for f in folders]
    assert [m["segments"] for m in manifests] == [[["train", 0, 3]], [["train", 3, 7]], [["test", 0, 3]]]
    decoded = [transport.decode_part(f) for f in folders]
    back = transport.assemble(decoded)
    for split in arrays:
        np.testing.assert_array_equal(back[split][0], arrays[split][0])
        np.testing.assert_array_equal(back[split][1], arrays[split][1])
    with pytest.raises(FileNotFoundError, match=r"parts \[2\] of 3"):
        transport.assemble([decoded[0], decoded[2]])
    damaged = decoded[1][1].copy()
    damaged[0, 0, 0, 0] ^= 1
    with pytest.raises(ValueError, match="do not match the sha256"):
        transport.assemble([decoded[0], (decoded[1][0], damaged, decoded[1][2]), decoded[2]])
    with open(os.path.join(folders[0], "part.xz"), "r+b") as f:
        f.seek(20)
        f.write(b"\0")
    with pytest.raises(ValueError, match="part.xz is damaged"):
        transport.decode_part(folders[0])

    data = rng.integers(0, 256, 2500, dtype=np.uint8).tobytes()
    (tmp_path / "file.bin").write_bytes(data)
    (tmp_path / "pieces").mkdir()
    manifest = transport.split_file(str(tmp_path / "file.bin"), str(tmp_path / "pieces"), "file", piece_bytes=1000)
    assert [p["bytes"] for p in manifest["pieces"]] == [1000, 1000, 500]
    assert open(transport.join_file(manifest, str(tmp_path / "pieces"), str(tmp_path / "joined")), "rb").read() == data
    (tmp_path / "pieces" / "file.part01").write_bytes(b"x" * 1000)
    with pytest.raises(ValueError, match="file.part01 is damaged"):
        transport.join_file(manifest, str(tmp_path / "pieces"), str(tmp_path / "joined2"))


def test_packing_real_cifar10_images_is_lossless():
    x, _ = __import__("keras_fsnn").datasets.load_arrays("cifar10", "test", shared_data("cifar10"))
    images = x[:500]
    coded = transport.encode_images(images)
    np.testing.assert_array_equal(transport.decode_images(coded, *images.shape[:3]), images)


def test_the_gpu_job_runs_end_to_end_on_the_cpu(tmp_path):
    pytest.importorskip("jax")
    import train_cifar

    from keras_fsnn import zoo
    from keras_fsnn.training import get_recipe
    from keras_fsnn.training.budget import StepTiming, plan_schedule

    data, parts, home, guard = tmp_path / "data", tmp_path / "parts", tmp_path / "machine", tmp_path / "notf"
    small_cifar(data)
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_TENSORFLOW)
    here = dict(os.environ, FSNN_GPU_PARTS=str(parts), FSNN_GPU_HOME=str(home))
    # the machine's calls: this Python, which has Keras already (no wheels to install)
    env = dict(here, PYTHON=sys.executable, PYTHONPATH=str(guard), FSNN_GPU_WHEELS=str(tmp_path / "no-wheels"))
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", "gpu", "train_cifar.py"), "prepare",
                    "--data-dir", str(data), "--no-wheels"], env=here, check=True, capture_output=True)
    assert sorted(os.listdir(parts)) == ["cifar10-1", "cifar10-2"]
    os.rename(parts / "cifar10-2", tmp_path / "cifar10-2")  # the first call carries part 1 only

    def machine(call, *arguments):
        out = tmp_path / f"out{call}"
        out.mkdir()
        done = subprocess.run(["bash", os.path.join(ROOT, "examples", "gpu", "device.sh"), *arguments],
                              env=dict(env, OUT=str(out)), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return out

    tiny = ["--set", "time_steps=2", "--set", "solver_steps=4", "--batch-size", "16"]
    out1 = machine(1, "probe", "alexnet_f", *tiny, "--steps", "2")
    probe = json.load(open(out1 / "probe.json"))
    assert probe["environment"]["backend"] == "jax" and probe["timing"]["step_seconds"] > 0
    assert probe["model_overrides"] == {**train_cifar.GPU_OVERRIDES, "time_steps": 2, "solver_steps": 4}

    with pytest.raises(subprocess.CalledProcessError):  # part 2 has not travelled yet
        subprocess.run(["bash", os.path.join(ROOT, "examples", "gpu", "device.sh"), "train", "alexnet_f", *tiny],
                       env=dict(env, OUT=str(tmp_path / "refused")), check=True, capture_output=True)
    os.rename(tmp_path / "cifar10-2", parts / "cifar10-2")
    # at most two epochs (3 steps and 1 evaluation batch each), in a budget the planner's own figures
    # size for them with room for the imports and the data (a loaded CI machine is slow and uneven)
    need = plan_schedule(get_recipe("alexnet_f"), StepTiming.from_dict(probe["timing"]), 1e6, 3, 1, 1)
    budget = 120 + need.reserved_seconds + 2 * need.epoch_seconds
    out2 = machine(2, "train", "alexnet_f", *tiny, "--epochs", "2", "--budget", str(round(budget)))
    run, result = json.load(open(out2 / "run.json")), json.load(open(out2 / "result.json"))
    plan = run["time_budget"]
    assert plan["timing"] == probe["timing"]  # planned from call 1's measurement
    assert run["recipe_overrides"]["epochs"] == plan["epochs"] == 2
    assert run["pipeline"] == "numpy" and result["examples"] == 32
    assert result["trained_steps"] == 3 * plan["epochs"] or result["time_budget"]["stopped"]
    assert len(open(out2 / "log.csv").read().splitlines()) == 1 + -(-result["trained_steps"] // 3)
    pieces = json.load(open(out2 / "weights.json"))["pieces"]
    assert sorted(os.listdir(out2)) == sorted(["log.csv", "result.json", "run.json", "weights.json"]
                                              + [p["name"] for p in pieces])

    metadata = train_cifar.main(["export", str(out2), "--to", str(tmp_path / "zoo" / "alexnet_f"),
                                 "--data-dir", str(data)])
    preset = tmp_path / "zoo" / "alexnet_f"
    assert metadata["test_accuracy"] == result["accuracy"]
    assert metadata["weights_sha256"] == zoo.sha256(str(preset / zoo.WEIGHTS_FILE))
    assert metadata["time_budget"]["epochs"] == plan["epochs"] and metadata["simulation_dtype"] == "bfloat16"
    card = (preset / "README.md").read_text()
    assert f"{round(plan['budget_seconds'])} s wall-clock budget" in card and "jax" in card
    loaded = zoo.load(str(preset))
    trained = model_that_came_back(run, out2, tmp_path)
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(trained(x)))


def model_that_came_back(run, folder, tmp_path):
    """The model of `run` with the weights that came back in `folder`, built here."""
    from keras_fsnn.training import build_model

    model = build_model(run["name"], **run["model_overrides"])
    model.load_weights(transport.join_file(json.load(open(folder / "weights.json")), str(folder),
                                           str(tmp_path / "came.weights.h5")))
    return model
