"""Small made-up datasets in the official file formats, for the dataset tests (never copies
of real data): random pixels and random events, written as the real files are.

    python tests/dummy_data.py OUT        # writes OUT/mnist, OUT/nmnist, OUT/cifar10_dvs, OUT/dvs_gesture

  * MNIST / Fashion-MNIST: the four idx files, gzipped (big-endian magic 0x0803 images,
    0x0801 labels, then the dimensions);
  * N-MNIST: Train/<digit>/<n>.bin and Test/<digit>/<n>.bin, 5 bytes per event (x, y,
    polarity bit + 23-bit microsecond timestamp), 300 ms of events;
  * CIFAR10-DVS: <class>/cifar10_<class>_<i>.aedat, a jAER AEDAT 2.0 header, then
    big-endian (address, timestamp) uint32 pairs of a DVS128 (x in bits 1-7, y in bits
    8-14, polarity in bit 0);
  * DVS128 Gesture: DvsGesture/user*_fluorescent.aedat in AEDAT 3.1 (little-endian packets
    of polarity events), their _labels.csv and trials_to_train.txt / trials_to_test.txt.
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


def aedat31_bytes(x, y, polarity, timestamp, per_packet=500, extra_packet=True):
    """An AEDAT 3.1 file of polarity events in packets of `per_packet` (timestamps past 2^31
    through the packets' overflow count), with a packet of another event type first."""
    out = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"]
    if extra_packet:  # a special-event packet (type 0, 8 bytes per event), skipped by readers
        out.append(struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 2, 2, 2) + bytes(16))
    timestamp = np.asarray(timestamp, np.int64)
    # a packet holds at most per_packet events, all of one overflow count (as a camera writes them)
    group = np.arange(len(x)) // per_packet * 2**20 + (timestamp >> 31)
    for start, stop in zip(*_runs(group)):
        part = slice(start, stop)
        overflow = int(timestamp[start] >> 31)
        data = (np.asarray(x[part], np.uint32) << 17) | (np.asarray(y[part], np.uint32) << 2) \
            | (np.asarray(polarity[part], np.uint32) << 1) | 1
        body = np.stack([data, (timestamp[part] & 0x7FFFFFFF).astype(np.uint32)], axis=1).astype("<u4").tobytes()
        count = len(data)
        out.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, count, count, count) + body)
    return b"".join(out)


def _runs(values):
    """(starts, stops) of the runs of equal consecutive values."""
    edges = np.flatnonzero(np.diff(values)) + 1
    return np.concatenate([[0], edges]), np.concatenate([edges, [len(values)]])


def write_dvs_gesture(folder, users=(1, 2, 3), gestures=11, events_per_gesture=400, seed=0):
    """DvsGesture/: a recording per user with every gesture once (a labels csv of its segments),
    users 1..n-1 listed for training and the last for testing."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = []
    for user in users:
        name = f"user{user:02d}_fluorescent"
        rows, recording = [], []
        for g in range(gestures):
            start = 1_000_000 * (g + 1)
            x, y, p, t = random_events(rng, events_per_gesture, 128, 800_000)
            recording.append((x, y, p, t + start))
            rows.append(f"{g + 1},{start},{start + 800_000}")
        x, y, p, t = (np.concatenate([r[j] for r in recording]) for j in range(4))
        with open(os.path.join(folder, name + ".aedat"), "wb") as f:
            f.write(aedat31_bytes(x, y, p, t))
        with open(os.path.join(folder, name + "_labels.csv"), "w") as f:
            f.write("class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n")
        names.append(name + ".aedat")
    with open(os.path.join(folder, "trials_to_train.txt"), "w") as f:
        f.write("\n".join(names[:-1]) + "\n")
    with open(os.path.join(folder, "trials_to_test.txt"), "w") as f:
        f.write(names[-1] + "\n")
    return folder


if __name__ == "__main__":
    out = sys.argv[1]
    write_mnist(os.path.join(out, "mnist"))
    write_nmnist(os.path.join(out, "nmnist"))
    write_cifar10_dvs(os.path.join(out, "cifar10_dvs"))
    write_dvs_gesture(os.path.join(out, "dvs_gesture", "DvsGesture"))
    print(f"wrote {out}/mnist, {out}/nmnist, {out}/cifar10_dvs, {out}/dvs_gesture")
