"""The datasets through tensorflow-datasets: keras_fsnn's builders prepare the official files
offline (dummy files in the official formats, tests/dummy_data.py), tfds and the files give
the same arrays in the same order, the event readers read what the formats hold, and a
training run through tfds equals one through the files and resumes exactly."""

import json

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("dill")  # tfds.testing needs it

import dummy_data  # noqa: E402
from test_training import assert_same_run  # noqa: E402

from keras_fsnn import datasets  # noqa: E402
from keras_fsnn.datasets import events, readers, tfds_builders  # noqa: E402
from keras_fsnn.training import train  # noqa: E402


def _dummy_folder(name, write):
    import tempfile

    folder = tempfile.mkdtemp(prefix=f"keras_fsnn_dummy_{name}_")
    write(folder)
    return folder


class MnistBuilderTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tfds_builders.KerasFsnnMnist
    SPLITS = {"train": 60, "test": 20}
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # the readers are plain Python file I/O

    @classmethod
    def setUpClass(cls):
        cls.EXAMPLE_DIR = _dummy_folder("mnist", dummy_data.write_mnist)
        super().setUpClass()


class NmnistBuilderTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tfds_builders.KerasFsnnNmnist
    SPLITS = {"train": 20, "test": 10}
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False

    @classmethod
    def setUpClass(cls):
        cls.EXAMPLE_DIR = _dummy_folder("nmnist", dummy_data.write_nmnist)
        super().setUpClass()


def test_tfds_and_the_files_give_the_same_arrays(tmp_path):
    dummy_data.write_mnist(tmp_path / "data" / "mnist", train=50, test=30, seed=3)
    dummy_data.write_nmnist(tmp_path / "data" / "nmnist", train_per_digit=1, test_per_digit=1, events=500)
    kept = {}
    for name, time_steps in (("mnist", 30), ("nmnist", 30), ("nmnist", 12)):  # N-MNIST's shipped config and another
        for split in ("train", "test"):
            files = datasets.load_arrays(name, split, tmp_path / "data", source="files", time_steps=time_steps)
            through_tfds = datasets.load_arrays(name, split, tmp_path / "data", source="tfds", time_steps=time_steps,
                                                tfds_dir=tmp_path / "tfds")
            assert through_tfds[0].dtype == files[0].dtype and through_tfds[1].dtype == np.int64
            np.testing.assert_array_equal(through_tfds[0], files[0])
            np.testing.assert_array_equal(through_tfds[1], files[1])
            kept[name, split] = files
    for config in ("frames_3ms_30", "frames_3ms_12"):
        assert (tmp_path / "tfds" / "keras_fsnn_nmnist" / config).is_dir()
    # "auto" without the files reads the prepared tfds dataset
    auto = datasets.load_arrays("mnist", "test", tmp_path / "elsewhere", tfds_dir=tmp_path / "tfds")
    np.testing.assert_array_equal(auto[0], kept["mnist", "test"][0])
    with pytest.raises(readers.DatasetNotFoundError, match="keras_fsnn_fashion_mnist"):
        datasets.load_arrays("fashion_mnist", "test", tmp_path / "elsewhere", source="tfds", tfds_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="`source` must be one of"):
        datasets.load_arrays("mnist", "test", tmp_path / "data", source="tfrecord")


def test_nmnist_frames_of_many_recordings_equal_one_by_one(tmp_path):
    folder = dummy_data.write_nmnist(tmp_path, train_per_digit=1, test_per_digit=0, events=2000, seed=5)
    paths = [path for path, _ in events.nmnist_files(folder, "train")]
    together = events.read_nmnist_files(paths, time_steps=30)
    one_by_one = np.stack([readers.nmnist_frames(*readers.read_nmnist_events(p)) for p in paths])
    np.testing.assert_array_equal(together, one_by_one)
    assert together.shape == (10, 30, 34, 34, 2) and together.max() == 1 and together.sum() > 0


def test_aedat_events_round_trip_and_frames_of_equal_event_counts(tmp_path):
    rng = np.random.default_rng(0)
    x, y, p, t = dummy_data.random_events(rng, 95, 128, 10_000)
    path = tmp_path / "cifar10_airplane_0.aedat"
    path.write_bytes(dummy_data.aedat_bytes(x, y, p, t))
    read = events.read_aedat_dvs128(str(path))
    for a, b in zip(read, (x, y, p, t)):
        np.testing.assert_array_equal(a, b)
    counts = events.cifar10_dvs_frames([read], frames=30, size=128)[0]  # at 128 the resize is the identity
    # 95 events in 30 frames: 3 in each, the last frame the rest (8)
    np.testing.assert_array_equal(counts.sum(axis=(1, 2, 3)), [3] * 29 + [8])
    # the released code's axes: row 127 - y, column 127 - x, channel 1 - polarity
    first = np.zeros((128, 128, 2), np.float32)
    np.add.at(first, (127 - y[:3], 127 - x[:3], 1 - p[:3]), 1.0)
    np.testing.assert_array_equal(counts[0], first)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="not a whole number of 8-byte"):
        events.read_aedat_dvs128(str(path))


def test_resize_matrix_keeps_constants_and_totals():
    matrix = events.resize_matrix(128, 48)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    image = np.full((128, 128), 3.0, np.float32)
    np.testing.assert_allclose(matrix @ image @ matrix.T, 3.0, rtol=1e-5)
    assert np.all(np.count_nonzero(matrix, axis=1) <= 7)  # a triangle of half-width 128/48 pixels


def test_the_shipped_cifar10_dvs_split_is_the_seeded_9_to_1_split():
    split = events.shipped_cifar10_dvs_split()
    assert len(split["train"]) == 9000 and len(split["test"]) == 1000 and not set(split["train"]) & set(split["test"])
    for name in events.CIFAR10_DVS_CLASSES:
        assert sum(n.startswith(name + "/") for n in split["test"]) == 100
    with open(events.os.path.join(events.os.path.dirname(events.__file__), "splits", "cifar10_dvs.json")) as f:
        assert json.load(f)["test"] == events.cifar10_dvs_test_indices(seed=0)


def test_cifar10_dvs_through_tfds_equals_the_files(tmp_path, monkeypatch):
    """The builder on a small split (two recordings per class; the real one needs all 10,000
    files): the same frames as the file path, (30, 48, 48, 2) float32."""
    dummy_data.write_cifar10_dvs(tmp_path / "cifar10_dvs", indices=(0, 1, 2), events=600)
    small = {"train": [f"{c}/cifar10_{c}_{i}.aedat" for c in events.CIFAR10_DVS_CLASSES for i in (0, 1)],
             "test": [f"{c}/cifar10_{c}_2.aedat" for c in events.CIFAR10_DVS_CLASSES]}
    monkeypatch.setattr(events, "shipped_cifar10_dvs_split", lambda: small)
    for split, count in (("train", 20), ("test", 10)):
        files = datasets.load_arrays("cifar10_dvs", split, tmp_path, source="files")
        through_tfds = datasets.load_arrays("cifar10_dvs", split, tmp_path, source="tfds", tfds_dir=tmp_path / "tfds")
        assert files[0].shape == (count, 30, 48, 48, 2) and files[0].dtype == np.float32
        np.testing.assert_array_equal(through_tfds[0], files[0])
        np.testing.assert_array_equal(through_tfds[1], files[1])
        # each output pixel a weighted mean of inputs: the events' total shrinks by about the area
        np.testing.assert_allclose(files[0].sum(axis=(1, 2, 3, 4)), 600 * (48 / 128) ** 2, rtol=0.1)


def test_training_through_tfds_equals_the_files_and_resumes_exactly(tmp_path):
    dummy_data.write_mnist(tmp_path / "data" / "fashion_mnist", train=120, test=60, seed=1)
    kwargs = dict(data_dir=str(tmp_path / "data"), batch_size=60, verbose=0, model_overrides={"time_steps": 2},
                  jit_compile=False)
    files = train("fsnn_fmnist", output_dir=str(tmp_path / "files"), epochs=2, data_source="files", **kwargs)
    tfds_dir = str(tmp_path / "tfds")
    straight = train("fsnn_fmnist", output_dir=str(tmp_path / "straight"), epochs=2, data_source="tfds",
                     tfds_dir=tfds_dir, **kwargs)
    assert_same_run(tmp_path / "files", tmp_path / "straight", files, straight)
    train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), epochs=1, data_source="tfds", tfds_dir=tfds_dir,
          **kwargs)
    run = json.load(open(tmp_path / "resumed" / "run.json"))
    assert run["data_source"] == "tfds" and run["tfds_dir"] == tfds_dir
    resumed = train("fsnn_fmnist", output_dir=str(tmp_path / "resumed"), resume=True, epochs=2, verbose=0,
                    jit_compile=False, data_dir=str(tmp_path / "gone"))  # the saved source: tfds, prepared
    assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
    with pytest.raises(ValueError, match="`data_source` must be one of"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "bad"), data_source="hdf5")


def test_dvs_gesture_segments_through_tfds_equal_the_files(tmp_path):
    folder = dummy_data.write_dvs_gesture(tmp_path / "dvs_gesture" / "DvsGesture", events_per_gesture=300)
    # AEDAT 3.1: packets, a skipped non-polarity packet, timestamps past 2^31 via the overflow
    x, y, p, t = dummy_data.random_events(np.random.default_rng(1), 1200, 128, 1000)
    t = t + (1 << 31) - 500
    path = tmp_path / "one.aedat"
    path.write_bytes(dummy_data.aedat31_bytes(x, y, p, np.sort(t), per_packet=500))
    for a, b in zip(events.read_aedat31_polarity(str(path)), (x, y, p, np.sort(t))):
        np.testing.assert_array_equal(a, b)
    files = datasets.load_arrays("dvs_gesture", "train", tmp_path, source="files")
    assert files[0].shape == (22, 30, 48, 48, 2)  # 2 training users x 11 gestures
    np.testing.assert_array_equal(files[1], np.tile(np.arange(11), 2))
    through_tfds = datasets.load_arrays("dvs_gesture", "test", tmp_path, source="tfds", tfds_dir=tmp_path / "tfds")
    np.testing.assert_array_equal(through_tfds[0], datasets.load_arrays("dvs_gesture", "test", tmp_path)[0])
    assert len(list(folder.glob("*.aedat"))) == 3
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="runs past the end of the file"):
        events.read_aedat31_polarity(str(path))


def test_tfds_own_prepared_mnist_is_read_when_ours_is_not(tmp_path):
    """tfds's own `mnist` builder, prepared offline from the real files (it checks their
    checksums, so dummy files cannot stand in): read when keras_fsnn's is not prepared,
    the same images and labels in tfds's own order."""
    from data_paths import shared_data

    folder = shared_data("mnist") + "/mnist"
    theirs = tfds.builder("mnist", data_dir=str(tmp_path / "tfds"))
    theirs.download_and_prepare(download_dir=str(tmp_path / "downloads"), download_config=tfds.download.DownloadConfig(
        manual_dir=folder, try_download_gcs=False))
    images, labels = datasets.load_arrays("mnist", "test", tmp_path / "no_files", source="auto",
                                          tfds_dir=tmp_path / "tfds")
    files = datasets.load_arrays("mnist", "test", folder, source="files")
    assert images.shape == files[0].shape and not np.array_equal(labels, files[1])  # another order

    def ordered(x, y):  # by label, then by the image's bytes
        keys = sorted(range(len(y)), key=lambda i: (y[i], x[i].tobytes()))
        return x[keys], y[keys]

    for a, b in zip(ordered(images, labels), ordered(*files)):
        np.testing.assert_array_equal(a, b)
