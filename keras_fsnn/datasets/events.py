"""Event-camera recordings into spike frames, vectorised over many recordings at once.

N-MNIST (Orchard et al. 2015; paper 000 §5.2, F.3.1): `.bin` files of 5-byte events, binned
into `time_steps` frames of `bin_us` microseconds (3 ms, the first 30), a pixel that fires
in a bin being a 1 (`readers.nmnist_frames` is the one-recording form of the same rule).

CIFAR10-DVS (Li et al. 2017; paper 002 F.4): jAER AEDAT 2.0 files of a DVS128 (a text
header of `#` lines, then big-endian (address, timestamp) uint32 pairs; x = address bits
1-7, y = bits 8-14, polarity = bit 0), turned into `frames` frames holding equal numbers of
events, each pixel's event count per polarity (the released SPIDE code's spikingjelly
conversion, "split by number"), then resized from 128x128 to `size` x `size` by a bilinear
(triangle) filter widened by the scale factor, as an antialiased image resize does. The
axes follow the released code: row = 127 - y, column = 127 - x, channel = 1 - polarity.
(Its resize goes through 8-bit PIL images, which wraps counts above 1; that is not
reproduced: the frames here are the resized counts themselves.)

Pure NumPy, like readers.py.
"""

import os

import numpy as np

from keras_fsnn.datasets.readers import DatasetNotFoundError, read_nmnist_events

DVS128 = 128
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_DVS_PER_CLASS = 1000


def nmnist_frames_batch(recordings, time_steps=30, bin_us=3000):
    """(N, time_steps, 34, 34, 2) uint8 frames of N recordings, each (x, y, polarity,
    timestamp) as `readers.read_nmnist_events` returns them, with one scatter for all:
    frame k holds the events with time in (k * bin_us, (k + 1) * bin_us]."""
    frames = np.zeros((len(recordings), time_steps, 34, 34, 2), np.uint8)
    if not recordings:
        return frames
    sample = np.concatenate([np.full(len(r[0]), i, np.int64) for i, r in enumerate(recordings)])
    x, y, polarity, timestamp = (np.concatenate([r[j] for r in recordings]) for j in range(4))
    slot = np.ceil(timestamp / bin_us).astype(np.int64) - 1
    keep = (slot >= 0) & (slot < time_steps) & (x < 34) & (y < 34)
    frames[sample[keep], slot[keep], x[keep], y[keep], polarity[keep].astype(np.int64)] = 1
    return frames


def read_nmnist_files(paths, time_steps=30, bin_us=3000):
    """Frames of the N-MNIST `.bin` files `paths` (see `nmnist_frames_batch`)."""
    return nmnist_frames_batch([read_nmnist_events(p) for p in paths], time_steps, bin_us)


def nmnist_files(folder, split):
    """[(path, digit)] of an N-MNIST split (`Train/<digit>/*.bin` or `Test/...`), sorted."""
    base = os.path.join(folder, "Train" if split == "train" else "Test")
    files = [(os.path.join(base, str(d), name), d) for d in range(10) if os.path.isdir(os.path.join(base, str(d)))
             for name in sorted(os.listdir(os.path.join(base, str(d)))) if name.endswith(".bin")]
    if not files:
        raise DatasetNotFoundError([os.path.join(base, "<digit>", "*.bin")])
    return files


def read_aedat_dvs128(path):
    """(x, y, polarity, timestamp) of a jAER AEDAT 2.0 file from a DVS128 (module docstring)."""
    with open(path, "rb") as f:
        data = f.read()
    start = 0
    while data.startswith(b"#", start):  # header lines
        end = data.find(b"\n", start)
        if end < 0:
            raise ValueError(f"{path}: the AEDAT header never ends (no event data).")
        start = end + 1
    body = np.frombuffer(data, dtype=">u4", offset=start) if (len(data) - start) % 8 == 0 else None
    if body is None:
        raise ValueError(f"{path}: {len(data) - start} bytes of events is not a whole number of 8-byte "
                         "(address, timestamp) pairs (truncated file?).")
    address, timestamp = body[0::2].astype(np.int64), body[1::2].astype(np.int64)
    return (address & 0xFE) >> 1, (address & 0x7F00) >> 8, address & 1, timestamp


def event_count_frames(x, y, polarity, frames=30):
    """(frames, 128, 128, 2) float32 event counts of one DVS128 recording, frame j holding
    events [j n // frames, (j + 1) n // frames) of its n events (the last one the rest), on
    the released code's axes (module docstring)."""
    n = len(x)
    per_frame = n // frames
    index = np.minimum(np.arange(n) // max(per_frame, 1), frames - 1) if per_frame else np.full(n, frames - 1)
    flat = np.ravel_multi_index((index, DVS128 - 1 - y, DVS128 - 1 - x, 1 - polarity), (frames, DVS128, DVS128, 2))
    return np.bincount(flat, minlength=frames * DVS128 * DVS128 * 2).astype(np.float32).reshape(
        frames, DVS128, DVS128, 2)


def resize_matrix(source, target):
    """(target, source) weights of a bilinear resize with antialiasing: a triangle filter of
    half-width max(1, source / target) input pixels around each output pixel's centre,
    rows normalised to 1."""
    scale = source / target
    support = max(scale, 1.0)
    centres = (np.arange(target) + 0.5) * scale
    distance = np.abs((np.arange(source) + 0.5)[None, :] - centres[:, None]) / support
    weights = np.maximum(0.0, 1.0 - distance)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def cifar10_dvs_frames(recordings, frames=30, size=48):
    """(N, frames, size, size, 2) float32 frames of N CIFAR10-DVS recordings (module
    docstring), the 128x128 event counts resized to size x size in one product."""
    counts = np.stack([event_count_frames(x, y, p, frames) for x, y, p, _ in recordings])
    matrix = resize_matrix(DVS128, size)
    return np.einsum("ri,nfijc,sj->nfrsc", matrix, counts, matrix, optimize=True).astype(np.float32)


def cifar10_dvs_files(folder, names):
    """[(path, label)] of the CIFAR10-DVS recordings `names` ("<class>/cifar10_<class>_<i>.aedat")."""
    files = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DatasetNotFoundError([path])
        files.append((path, CIFAR10_DVS_CLASSES.index(name.split("/")[0])))
    return files


def cifar10_dvs_test_indices(seed=0, test_fraction=0.1):
    """{class: sorted test indices}: a 9:1 split of every class's 1000 recordings
    (`<class>/cifar10_<class>_<i>.aedat`, i = 0..999), the first 100 of a NumPy
    `default_rng(seed)` permutation per class, classes in order. The split file shipped
    with the package (splits/cifar10_dvs.json) is this with seed 0."""
    rng = np.random.default_rng(seed)
    count = int(round(CIFAR10_DVS_PER_CLASS * test_fraction))
    return {name: sorted(int(i) for i in rng.permutation(CIFAR10_DVS_PER_CLASS)[:count]) for name in CIFAR10_DVS_CLASSES}


def shipped_cifar10_dvs_split():
    """{"train": names, "test": names} of the shipped split file (see
    `cifar10_dvs_test_indices`), each sorted by class, then index."""
    import json

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits", "cifar10_dvs.json")) as f:
        test = json.load(f)["test"]
    split = {"train": [], "test": []}
    for name in CIFAR10_DVS_CLASSES:
        held = set(test[name])
        for i in range(CIFAR10_DVS_PER_CLASS):
            split["test" if i in held else "train"].append(f"{name}/cifar10_{name}_{i}.aedat")
    return split
