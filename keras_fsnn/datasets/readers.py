"""Readers for the datasets' official file formats, into NumPy arrays.

Images come back as uint8 arrays (N, H, W, C) and labels as int64 (N,); N-MNIST comes back
as uint8 spike frames (N, T, 34, 34, 2). Pure NumPy, so they work without TensorFlow (the
GPU machine runs Keras on JAX only).
"""

import gzip
import os
import pickle
import zipfile
import zlib

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_IMAGE = (28, 28)
CIFAR_ROW = 3 * 32 * 32  # bytes per image in the official pickles: 1024 red, 1024 green, 1024 blue


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where it was looked for; the message says where and how to get it."""


def _find(candidates):
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def _read_bytes(path):
    """The bytes of `path`, decompressed when it ends in `.gz`; a truncated or corrupted gzip
    file is a ValueError naming it."""
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError as error:
        raise ValueError(f"{path} is truncated: its gzip stream ends early ({error}). Fetch the file again.") from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a valid gzip file ({error}): it is corrupted. Fetch the file again.") from error


def read_idx(path, ndim=None):
    """Read one IDX file (gzip or raw): magic 0x0000 08 dims, big-endian sizes, uint8 data.
    `ndim`, when given, is the number of dimensions the file must have. A file that is not
    IDX, or whose length disagrees with its header, is a ValueError naming it."""
    data = _read_bytes(path)
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes: magic number {data[:4].hex() or 'missing'} "
                         f"({len(data)} bytes in all); expected 00000801 (labels) or 00000803 (images).")
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its header declares {dims} dimensions ({header} bytes of header), "
                         f"but the file has {len(data)} bytes.")
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path} holds a {dims}-dimensional array (magic number {data[:4].hex()}); expected "
                         f"{ndim} dimensions (magic number 000008{ndim:02x}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    found = len(data) - header
    if found < size:
        raise ValueError(f"{path} is truncated: header says {shape} ({size} bytes), found {found}.")
    if found > size:
        raise ValueError(f"{path} is corrupted: header says {shape} ({size} bytes), but {found} bytes follow it.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_labels(labels, num_classes, where):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}; found {labels.min()}..{labels.max()}.")


def read_mnist_format(folder, split, num_classes=10):
    """MNIST or Fashion-MNIST from the four official idx files (`.gz` or not) in `folder`."""
    images_name, labels_name = IDX_FILES[split]
    looked = []
    found = []
    for name in (images_name, labels_name):
        candidates = [os.path.join(folder, name + ".gz"), os.path.join(folder, name),
                      os.path.join(folder, name.replace("-idx", ".idx") + ".gz")]
        looked.extend(candidates[:2])
        found.append(_find(candidates))
    if None in found:
        raise DatasetNotFoundError(looked)
    images = read_idx(found[0], ndim=3)
    labels = read_idx(found[1], ndim=1).astype("int64")
    if images.shape[1:] != MNIST_IMAGE:
        raise ValueError(f"{found[0]} holds images of {images.shape[1]}x{images.shape[2]} pixels; expected "
                         f"{MNIST_IMAGE[0]}x{MNIST_IMAGE[1]}.")
    if len(images) != len(labels):
        raise ValueError(f"{found[0]} has {len(images)} images but {found[1]} has {len(labels)} labels "
                         f"(split {split!r}): one of them is from another set or damaged.")
    _check_labels(labels, num_classes, found[1])
    return images[..., None], labels


def read_cifar(folder, split, num_classes):
    """CIFAR-10/100 from the official python pickles or from an `.npz` of arrays
    (x_train, y_train, x_test, y_test), whichever is in `folder`. A damaged file is a
    ValueError (a missing batch of a present set a FileNotFoundError) naming it."""
    name = "cifar10" if num_classes == 10 else "cifar100"
    npz = _find([os.path.join(folder, f"{name}.npz"), os.path.join(folder, name, f"{name}.npz")])
    if npz:
        return read_cifar_npz(npz, split, num_classes)
    if num_classes == 10:
        base = _find_dir([os.path.join(folder, "cifar-10-batches-py"), folder], "test_batch")
        if base is None:
            raise DatasetNotFoundError([os.path.join(folder, f"{name}.npz"), os.path.join(folder, "cifar-10-batches-py")])
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = b"labels"
        needed = "data_batch_1 ... data_batch_5 and test_batch"
    else:
        base = _find_dir([os.path.join(folder, "cifar-100-python"), folder], "test")
        if base is None:
            raise DatasetNotFoundError([os.path.join(folder, f"{name}.npz"), os.path.join(folder, "cifar-100-python")])
        files = ["train" if split == "train" else "test"]
        label_key = b"fine_labels"
        needed = "train and test"
    images, labels = [], []
    for file in files:
        path = os.path.join(base, file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {base} must hold the official pickles {needed}.")
        batch_images, batch_labels = read_cifar_pickle(path, label_key, num_classes)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar_pickle(path, label_key, num_classes):
    """(images, labels) of one official CIFAR python pickle (a dict of `data`, rows of 3072
    bytes, and `label_key`)."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except OSError:
        raise
    except Exception as error:  # a damaged pickle fails in many ways
        raise ValueError(f"{path} is not a readable CIFAR python pickle ({type(error).__name__}: {error}): it is "
                         "truncated or corrupted. Fetch it again.") from error
    keys = (b"data", label_key)
    if not isinstance(batch, dict) or not all(k in batch or k.decode() in batch for k in keys):
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict with the keys {keys[0]!r} and {keys[1]!r}; "
                         f"found {found}.")
    data, labels = (batch[k] if k in batch else batch[k.decode()] for k in keys)
    try:
        data = np.asarray(data, np.uint8)
        labels = np.asarray(labels, np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"{path}: its data or labels are not arrays of integers ({error}).") from error
    if data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        raise ValueError(f"{path}: data of shape {data.shape}; expected (images, {CIFAR_ROW}), one row of "
                         f"3x32x32 bytes per image.")
    if len(data) != len(labels):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels.")
    _check_labels(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar_npz(path, split, num_classes):
    """(images, labels) of `split` from an `.npz` holding x_train, y_train, x_test and y_test
    (uint8 images (N, 32, 32, 3), labels (N,) or (N, 1))."""
    keys = (f"x_{split}", f"y_{split}")
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"PK\x03\x04", b"\x93NUMPY")):
        raise ValueError(f"{path} is not an .npz archive: it starts with {head!r}, not with a zip file's b'PK\\x03\\x04'.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz archive ({type(error).__name__}: {error}): it is "
                         "truncated or corrupted.") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array of shape {archive.shape}, not an .npz archive of "
                         "x_train, y_train, x_test and y_test.")
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise ValueError(f"{path} has no array {', '.join(missing)}; it holds {', '.join(archive.files) or 'none'} "
                             "(expected x_train, y_train, x_test, y_test).")
        arrays = []
        for key in keys:
            try:
                arrays.append(archive[key])
            except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
                raise ValueError(f"{path}: its array {key!r} cannot be read ({type(error).__name__}: {error}): the "
                                 "file is truncated or corrupted.") from error
    images, labels = arrays
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path}: {keys[0]} has shape {images.shape}; expected (N, 32, 32, 3).")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu" or images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{path}: {keys[0]} must hold bytes 0..255 (uint8); found dtype {images.dtype}.")
        images = images.astype(np.uint8)
    if labels.dtype.kind not in "iu" or labels.size != len(images) or labels.ndim > 2:
        raise ValueError(f"{path}: {keys[1]} must hold one integer label per image ({len(images)}, {keys[0]}'s "
                         f"length); found dtype {labels.dtype}, shape {labels.shape}.")
    labels = labels.astype("int64").reshape(-1)
    _check_labels(labels, num_classes, f"{path} ({keys[1]})")
    return images, labels


def _find_dir(candidates, marker):
    for path in candidates:
        if os.path.isfile(os.path.join(path, marker)):
            return path
    return None


def read_nmnist_events(path):
    """Events of one N-MNIST `.bin` file (Orchard et al. 2015): 5 bytes per event,
    x (8 bits), y (8 bits), polarity (1 bit) and a 23-bit timestamp in microseconds.
    Returns (x, y, polarity, timestamp) arrays."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of 5-byte events (truncated file?).")
    raw = raw.reshape(-1, 5).astype(np.uint32)
    x, y = raw[:, 0], raw[:, 1]
    polarity = raw[:, 2] >> 7
    timestamp = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    return x, y, polarity, timestamp


def nmnist_frames(x, y, polarity, timestamp, time_steps=30, bin_us=3000):
    """Bin events into `time_steps` frames of `bin_us` microseconds (paper 000 F.3.1: 3 ms
    bins, the first 30): frame k holds the events with (k * bin_us, (k+1) * bin_us] of
    time, as TSSL-BP's ceil(ts / 3000) binning; a pixel that fires in a bin is a 1. Axes
    follow the released IDE loader (row = x, column = y); the channel is the polarity
    bit. Shape (time_steps, 34, 34, 2), uint8. One recording of
    `events.nmnist_frames_batch`.

    The released loader drops bin 0 and fills only slots 0..T-2 (the last frame is always
    empty); here all T frames hold data, as the paper's "first 30 time steps" reads."""
    from keras_fsnn.datasets.events import nmnist_frames_batch

    return nmnist_frames_batch([(x, y, polarity, timestamp)], time_steps, bin_us)[0]


def read_nmnist(folder, split, time_steps=30):
    """N-MNIST from the official folders `Train/<digit>/*.bin` and `Test/<digit>/*.bin`,
    binned `events.CHUNK` recordings at a time (`events.read_nmnist_files`)."""
    from keras_fsnn.datasets import events

    return events.concatenated(events.in_chunks(events.nmnist_files(folder, split),
                                                lambda paths: events.read_nmnist_files(paths, time_steps), events.CHUNK))


def read_sklearn_digits(split):
    """scikit-learn's 8x8 digits (grey levels 0..16, scaled to uint8 0..255), split 75/25,
    stratified, with seed 0 (the split of examples/train_digits.py)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise ImportError("The 'digits' dataset is scikit-learn's: pip install scikit-learn.") from error
    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target.astype(np.int64), test_size=0.25, random_state=0, stratify=data.target)
    return (x_train, y_train) if split == "train" else (x_test, y_test)
