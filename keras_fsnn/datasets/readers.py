"""Readers for the datasets' official file formats, into NumPy arrays.

Images come back as uint8 arrays (N, H, W, C) and labels as int64 (N,); N-MNIST comes back
as uint8 spike frames (N, T, 34, 34, 2). Pure NumPy, so they work without TensorFlow (the
GPU machine runs Keras on JAX only).
"""

import gzip
import os
import pickle

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where it was looked for; the message says where and how to get it."""


def _find(candidates):
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def read_idx(path):
    """Read one IDX file (gzip or raw): magic 0x0000 08 dims, big-endian sizes, uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape} ({int(np.prod(shape))} bytes), found {body.size}.")
    return body.reshape(shape)


def read_mnist_format(folder, split):
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
    images = read_idx(found[0])[..., None]
    labels = read_idx(found[1]).astype("int64")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels for split {split!r}.")
    return images, labels


def read_cifar(folder, split, num_classes):
    """CIFAR-10/100 from the official python pickles or from an `.npz` of arrays
    (x_train, y_train, x_test, y_test), whichever is in `folder`."""
    name = "cifar10" if num_classes == 10 else "cifar100"
    npz = _find([os.path.join(folder, f"{name}.npz"), os.path.join(folder, name, f"{name}.npz")])
    if npz:
        with np.load(npz) as data:
            return data[f"x_{split}"], data[f"y_{split}"].astype("int64").reshape(-1)
    if num_classes == 10:
        base = _find_dir([os.path.join(folder, "cifar-10-batches-py"), folder], "test_batch")
        if base is None:
            raise DatasetNotFoundError([os.path.join(folder, f"{name}.npz"), os.path.join(folder, "cifar-10-batches-py")])
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = b"labels"
    else:
        base = _find_dir([os.path.join(folder, "cifar-100-python"), folder], "test")
        if base is None:
            raise DatasetNotFoundError([os.path.join(folder, f"{name}.npz"), os.path.join(folder, "cifar-100-python")])
        files = ["train" if split == "train" else "test"]
        label_key = b"fine_labels"
    images, labels = [], []
    for file in files:
        with open(os.path.join(base, file), "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], np.int64))
    return np.concatenate(images), np.concatenate(labels)


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
    bit. Shape (time_steps, 34, 34, 2), uint8.

    The released loader drops bin 0 and fills only slots 0..T-2 (the last frame is always
    empty); here all T frames hold data, as the paper's "first 30 time steps" reads."""
    frames = np.zeros((time_steps, 34, 34, 2), np.uint8)
    slot = np.ceil(timestamp / bin_us).astype(np.int64) - 1
    keep = (slot >= 0) & (slot < time_steps) & (x < 34) & (y < 34)
    frames[slot[keep], x[keep], y[keep], polarity[keep].astype(np.int64)] = 1
    return frames


def read_nmnist(folder, split, time_steps=30):
    """N-MNIST from the official folders `Train/<digit>/*.bin` and `Test/<digit>/*.bin`."""
    base = os.path.join(folder, "Train" if split == "train" else "Test")
    if not os.path.isdir(base):
        raise DatasetNotFoundError([base])
    frames, labels = [], []
    for digit in range(10):
        directory = os.path.join(base, str(digit))
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if name.endswith(".bin"):
                frames.append(nmnist_frames(*read_nmnist_events(os.path.join(directory, name)), time_steps=time_steps))
                labels.append(digit)
    if not frames:
        raise DatasetNotFoundError([os.path.join(base, "<digit>", "*.bin")])
    return np.stack(frames), np.asarray(labels, np.int64)


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
