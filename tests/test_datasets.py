"""Dataset readers on the real files (shapes, dtypes, label counts, the normalisation
statistics), on files written in the official formats for those not available here, and
their errors."""

import gzip
import os
import pickle

import numpy as np
import pytest
from data_paths import shared_data

from keras_fsnn import datasets
from keras_fsnn.datasets import readers


def test_mnist_real_files():
    root = shared_data("mnist")
    x, y = datasets.load_arrays("mnist", "train", root)
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    pixels = x.astype("float64") / 255.0
    assert pixels.mean() == pytest.approx(0.1307, abs=1e-4)  # the paper's normalisation constants
    assert pixels.std() == pytest.approx(0.3081, abs=1e-4)
    x_test, y_test = datasets.load_arrays("mnist", "test", root)
    assert x_test.shape == (10000, 28, 28, 1) and len(y_test) == 10000


def test_fashion_mnist_real_files():
    root = shared_data("fashion_mnist")
    x, y = datasets.load_arrays("fashion_mnist", "train", root)
    assert x.shape == (60000, 28, 28, 1) and np.bincount(y).tolist() == [6000] * 10
    x_test, y_test = datasets.load_arrays("fashion_mnist", "test", root)
    assert x_test.shape == (10000, 28, 28, 1) and np.bincount(y_test).tolist() == [1000] * 10


def test_cifar10_real_npz():
    root = shared_data("cifar10")
    x, y = datasets.load_arrays("cifar10", "train", root)
    assert x.shape == (50000, 32, 32, 3) and x.dtype == np.uint8 and np.bincount(y).tolist() == [5000] * 10
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    mean = (x.astype("float64") / 255.0).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-4)
    x_test, y_test = datasets.load_arrays("cifar10", "test", root)
    assert x_test.shape == (10000, 32, 32, 3) and np.bincount(y_test).tolist() == [1000] * 10


def test_cifar_python_pickles(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches.append((data, labels))
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    x, y = datasets.load_arrays("cifar10", "train", str(tmp_path), source="files")
    assert x.shape == (20, 32, 32, 3) and y.tolist() == sum((b[1] for b in batches[:5]), [])
    # channel-first rows of 1024 per colour -> HWC
    np.testing.assert_array_equal(x[0, :, :, 1], batches[0][0][0, 1024:2048].reshape(32, 32))
    hundred = tmp_path / "c100" / "cifar-100-python"
    hundred.mkdir(parents=True)
    with open(hundred / "test", "wb") as f:
        pickle.dump({b"data": batches[5][0], b"fine_labels": [99, 0, 5, 7], b"coarse_labels": [1, 2, 3, 4]}, f)
    x, y = datasets.load_arrays("cifar100", "test", str(tmp_path / "c100"), source="files")
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [99, 0, 5, 7]


def write_nmnist_bin(path, events):
    """events: (x, y, polarity, timestamp_us) -> the official 5-byte format."""
    raw = bytearray()
    for x, y, p, t in events:
        raw += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(raw))


def test_nmnist_binary_events_are_binned_in_3ms_frames(tmp_path):
    digit = tmp_path / "Test" / "7"
    digit.mkdir(parents=True)
    events = [(3, 5, 1, 1), (3, 5, 1, 2999), (10, 20, 0, 3000), (33, 33, 1, 3001), (0, 0, 0, 90000), (1, 1, 1, 90001)]
    write_nmnist_bin(digit / "00001.bin", events)
    x, y, p, t = readers.read_nmnist_events(str(digit / "00001.bin"))
    assert x.tolist() == [3, 3, 10, 33, 0, 1] and p.tolist() == [1, 1, 0, 1, 0, 1] and t.tolist() == [e[3] for e in events]
    frames, labels = datasets.load_arrays("nmnist", "test", str(tmp_path), source="files")
    assert frames.shape == (1, 30, 34, 34, 2) and labels.tolist() == [7]
    assert frames[0, 0, 3, 5, 1] == 1 and frames[0, 0, 10, 20, 0] == 1  # (0, 3 ms]
    assert frames[0, 1, 33, 33, 1] == 1  # (3, 6 ms]
    assert frames[0, 29, 0, 0, 0] == 1  # 90 ms is the end of frame 30
    assert frames.sum() == 4  # the event after 90 ms is beyond the first 30 frames


def test_truncated_files_are_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(500))
    with pytest.raises(ValueError, match="truncated"):
        readers.read_idx(str(path))
    (tmp_path / "bad.bin").write_bytes(bytes(7))
    with pytest.raises(ValueError, match="5-byte events"):
        readers.read_nmnist_events(str(tmp_path / "bad.bin"))


def test_missing_data_says_where_it_looked_and_what_to_put_there(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError) as error:
        datasets.load_arrays("mnist", "train", str(tmp_path), source="files")
    message = str(error.value)
    assert os.path.join(str(tmp_path), "mnist", "train-images-idx3-ubyte.gz") in message
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message and "KERAS_FSNN_DATA" in message


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"`name` must be one of 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'nmnist'"):
        datasets.load_arrays("imagenet")


def test_pipeline_gives_unit_range_floats_and_augments_cifar():
    root = shared_data("cifar10")
    x, y = datasets.load_arrays("cifar10", "test", root)
    plain = next(iter(datasets.make_pipeline("cifar10", "test", batch_size=8, arrays=(x[:8], y[:8]))))
    augmented = next(iter(datasets.make_pipeline("cifar10", "test", batch_size=8, training=False, augment=True, arrays=(x[:8], y[:8]))))
    images = plain[0].numpy()
    assert images.dtype == np.float32 and images.shape == (8, 32, 32, 3) and 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_allclose(images, x[:8] / 255.0, atol=1e-6)
    assert augmented[0].shape == (8, 32, 32, 3) and not np.allclose(augmented[0].numpy(), images)


def _is_shifted_copy(image, original, shift, flipped_too):
    """True when `image` is a window of `original` zero-padded by `shift`, maybe flipped."""
    padded = np.pad(original, ((shift, shift), (shift, shift), (0, 0)))
    height, width = original.shape[:2]
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            window = padded[dy:dy + height, dx:dx + width]
            if np.array_equal(image, window) or (flipped_too and np.array_equal(image, window[:, ::-1])):
                return True
    return False


def test_augmentation_shifts_and_flips_as_asked_in_every_pipeline():
    from keras_fsnn.datasets.numpy_pipeline import EpochBatches
    from keras_fsnn.training.trainer import epoch_pipeline

    info = datasets.DATASETS["mnist"]
    rng = np.random.default_rng(0)
    raw = rng.integers(1, 256, (16, 28, 28, 1), dtype=np.uint8)  # no zero pixel: a shift always shows
    labels = np.arange(16)
    originals = raw.astype("float32") / 255
    for augmentation in (datasets.Augmentation(shift=2), datasets.Augmentation(shift=1, flip=True)):
        pipelines = {
            "make_pipeline": datasets.make_pipeline("mnist", batch_size=16, augment=augmentation, arrays=(raw, labels)),
            "tf_data": epoch_pipeline(info, raw, labels, 16, 0, 1, seed=3, augmentation=augmentation),
            "numpy": [EpochBatches(info, raw, labels, 16, seed=3, augmentation=augmentation)[0]],
        }
        for name, pipeline in pipelines.items():
            x, y = (np.asarray(t) for t in next(iter(pipeline)))
            assert x.shape == (16, 28, 28, 1) and x.dtype == np.float32, name
            assert all(_is_shifted_copy(image, originals[label], augmentation.shift, augmentation.flip)
                       for image, label in zip(x, y)), name
            assert sum(np.array_equal(image, originals[label]) for image, label in zip(x, y)) < 8, name
    plain = next(iter(datasets.make_pipeline("mnist", batch_size=16, augment=datasets.Augmentation(), arrays=(raw, labels))))
    assert sorted(np.asarray(plain[1])) == list(range(16))
    assert all(np.array_equal(image, originals[label]) for image, label in zip(np.asarray(plain[0]), np.asarray(plain[1])))
    assert datasets.DATASETS["cifar10"].augmentation == datasets.Augmentation(4, True)  # paper 000 F.3.1
    assert not datasets.DATASETS["fashion_mnist"].augmentation


def test_bad_augmentation_is_refused():
    with pytest.raises(ValueError, match=r"`shift` must be an integer >= 0; received shift=-1"):
        datasets.Augmentation(shift=-1)
    with pytest.raises(TypeError, match=r"`flip` must be True or False; received flip='yes'"):
        datasets.Augmentation(shift=2, flip="yes")
    with pytest.raises(TypeError, match=r"`augment` must be an Augmentation, True, False or None; received augment='shift'"):
        datasets.make_pipeline("mnist", augment="shift", arrays=(np.zeros((2, 28, 28, 1), np.uint8), np.zeros(2)))


def test_embedded_digits_need_no_files():
    pytest.importorskip("sklearn")
    x_train, y_train = datasets.load_arrays("digits", "train", data_dir="/nonexistent")
    x_test, y_test = datasets.load_arrays("digits", "test")
    assert x_train.shape == (1347, 8, 8, 1) and x_test.shape == (450, 8, 8, 1)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert np.bincount(y_train).min() >= 130 and np.bincount(y_test).min() >= 43
