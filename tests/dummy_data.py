"""Small made-up datasets in the official file formats, for the dataset tests (never copies
of real data): random pixels and random events, written as the real files are.

    python tests/dummy_data.py OUT        # writes OUT/mnist, OUT/nmnist, OUT/cifar10_dvs

  * MNIST / Fashion-MNIST: the four idx files, gzipped (big-endian magic 0x0803 images,
    0x0801 labels, then the dimensions);
  * N-MNIST: Train/<digit>/<n>.bin and Test/<digit>/<n>.bin, 5 bytes per event (x, y,
    polarity bit + 23-bit microsecond timestamp), 300 ms of events;
  * CIFAR10-DVS: <class>/cifar10_<class>_<i>.aedat, a jAER AEDAT 2.0 header, then
    big-endian (address, timestamp) uint32 pairs of a DVS128 (x in bits 1-7, y in bits
    8-14, polarity in bit 0).
"""

import gzip
import os
import struct
import sys

import numpy as np

from keras_fsnn.datasets.events import CIFAR10_DVS_CLASSES


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_mnist(folder, train=60, test=20, seed=0):
    """The four idx files of an MNIST-format dataset of `train` + `test` random images."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), np.arange(n) % 10)


def nmnist_bytes(x, y, polarity, timestamp):
    return np.stack([x, y, (polarity << 7) | ((timestamp >> 16) & 0x7F), (timestamp >> 8) & 0xFF, timestamp & 0xFF],
                    axis=1).astype(np.uint8).tobytes()


def random_events(rng, count, size, duration_us):
    timestamp = np.sort(rng.integers(1, duration_us, count))
    return rng.integers(0, size, count), rng.integers(0, size, count), rng.integers(0, 2, count), timestamp


def write_nmnist(folder, train_per_digit=2, test_per_digit=1, events=4000, seed=0):
    """N-MNIST folders of random 300 ms recordings, `events` events each."""
    rng = np.random.default_rng(seed)
    for split, per_digit in (("Train", train_per_digit), ("Test", test_per_digit)):
        for digit in range(10):
            os.makedirs(os.path.join(folder, split, str(digit)), exist_ok=True)
            for n in range(per_digit):
                with open(os.path.join(folder, split, str(digit), f"{n:05d}.bin"), "wb") as f:
                    f.write(nmnist_bytes(*random_events(rng, events, 34, 300_000)))
    return folder


def aedat_bytes(x, y, polarity, timestamp):
    address = (np.asarray(y, np.uint32) << 8) | (np.asarray(x, np.uint32) << 1) | np.asarray(polarity, np.uint32)
    body = np.stack([address, np.asarray(timestamp, np.uint32)], axis=1).astype(">u4").tobytes()
    return b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# made up for keras-fsnn's tests\r\n" + body


def write_cifar10_dvs(folder, indices=(0, 1, 2), events=3000, seed=0):
    """CIFAR10-DVS class folders holding recordings `indices` of every class."""
    rng = np.random.default_rng(seed)
    for name in CIFAR10_DVS_CLASSES:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in indices:
            with open(os.path.join(folder, name, f"cifar10_{name}_{i}.aedat"), "wb") as f:
                f.write(aedat_bytes(*random_events(rng, events, 128, 1_000_000)))
    return folder


if __name__ == "__main__":
    out = sys.argv[1]
    write_mnist(os.path.join(out, "mnist"))
    write_nmnist(os.path.join(out, "nmnist"))
    write_cifar10_dvs(os.path.join(out, "cifar10_dvs"))
    print(f"wrote {out}/mnist, {out}/nmnist, {out}/cifar10_dvs")
