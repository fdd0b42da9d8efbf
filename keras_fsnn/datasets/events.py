"""Event-camera recordings into spike frames, vectorised over many recordings at once.

N-MNIST (Orchard et al. 2015; paper 000 §5.2, F.3.1): `.bin` files of 5-byte events, binned
into `time_steps` frames of `bin_us` microseconds (3 ms, the first 30), a pixel that fires
in a bin being a 1 (`readers.nmnist_frames` is the one-recording form).

CIFAR10-DVS (Li et al. 2017; paper 002 F.4): jAER AEDAT 2.0 files of a DVS128 (a text
header of `#` lines, then big-endian (address, timestamp) uint32 pairs; x = address bits
1-7, y = bits 8-14, polarity = bit 0), turned into `frames` frames holding equal numbers of
events, each pixel's event count per polarity (the released SPIDE code's spikingjelly
conversion, "split by number"), then resized from 128x128 to `size` x `size` by a bilinear
(triangle) filter widened by the scale factor, as an antialiased image resize does. The
axes follow the released code: row = 127 - y, column = 127 - x, channel = 1 - polarity.
(Its resize goes through 8-bit PIL images, which wraps counts above 1; that is not
reproduced: the frames here are the resized counts themselves.)

DVS128 Gesture (Amir et al. 2017): AEDAT 3.1 recordings (`read_aedat31_polarity`), each cut
into its labelled gesture segments by its `_labels.csv`, the train/test trials as the
dataset's own `trials_to_train.txt` / `trials_to_test.txt` list them; frames as for
CIFAR10-DVS (equal event counts, 128 -> `size`), on the sensor's axes (row y, column x,
channel polarity). No seed paper uses it.

Pure NumPy, like readers.py.
"""

import os

import numpy as np

from keras_fsnn.datasets.readers import DatasetNotFoundError, read_nmnist_events

DVS128 = 128
CHUNK = 10  # recordings binned together (benchmarks/event_preparation.py: larger chunks were slower)
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


def in_chunks(files, read, size):
    """(frames, labels) of `files` [(path, label)], `size` recordings at a time, `read`
    making the frames of a list of paths: bounded memory, one vectorised call per chunk."""
    for start in range(0, len(files), size):
        chunk = files[start:start + size]
        yield read([path for path, _ in chunk]), np.asarray([label for _, label in chunk], np.int64)


def concatenated(parts):
    """(frames, labels) of (frames, labels) parts, joined."""
    parts = list(parts)
    return np.concatenate([frames for frames, _ in parts]), np.concatenate([labels for _, labels in parts])


def read_cifar10_dvs_files(paths, frames=30, size=48):
    """Frames of the CIFAR10-DVS `.aedat` files `paths` (see `cifar10_dvs_frames`)."""
    return cifar10_dvs_frames([read_aedat_dvs128(path) for path in paths], frames, size)


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


def event_count_frames(rows, columns, channels, frames=30, size=DVS128):
    """(frames, size, size, 2) float32 event counts of one recording whose events sit at
    (`rows`, `columns`, `channels`), frame j holding events [j n // frames, (j + 1) n //
    frames) of its n events, the last frame the rest ("split by number")."""
    n = len(rows)
    per_frame = n // frames
    index = np.minimum(np.arange(n) // per_frame, frames - 1) if per_frame else np.full(n, frames - 1)
    flat = np.ravel_multi_index((index, rows, columns, channels), (frames, size, size, 2))
    return np.bincount(flat, minlength=frames * size * size * 2).astype(np.float32).reshape(frames, size, size, 2)


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


def dvs128_frames(recordings, frames=30, size=48, released_axes=False):
    """(N, frames, size, size, 2) float32 frames of N DVS128 recordings (x, y, polarity,
    timestamp): event counts in `frames` frames of equal event counts, resized from 128x128
    to size x size in one product. `released_axes`: CIFAR10-DVS's axes as the released code
    has them (row 127 - y, column 127 - x, channel 1 - polarity), else row y, column x,
    channel polarity."""
    def counts(x, y, p):
        if released_axes:
            return event_count_frames(DVS128 - 1 - y, DVS128 - 1 - x, 1 - p, frames)
        return event_count_frames(y, x, p, frames)

    if not recordings:
        return np.zeros((0, frames, size, size, 2), np.float32)
    stacked = np.stack([counts(x, y, p) for x, y, p, _ in recordings])
    matrix = resize_matrix(DVS128, size)
    return np.einsum("ri,nfijc,sj->nfrsc", matrix, stacked, matrix, optimize=True).astype(np.float32)


def cifar10_dvs_frames(recordings, frames=30, size=48):
    """Frames of CIFAR10-DVS recordings (module docstring): `dvs128_frames` on the released
    code's axes."""
    return dvs128_frames(recordings, frames, size, released_axes=True)


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


# ---------------------------------------------------------------- DVS128 Gesture

GESTURE_CLASSES = 11
POLARITY_EVENT = 1  # AEDAT 3.1 event type


def read_aedat31_polarity(path):
    """(x, y, polarity, timestamp) of the valid polarity events of an AEDAT 3.1 file (the
    DVS128 Gesture recordings; iniVation's documented format): a text header ending in
    `#!END-HEADER`, then packets of a 28-byte little-endian header (type, source, event
    size, timestamp offset, timestamp overflow, capacity, number, valid) and `number`
    events; a polarity event (type 1) is a uint32 (bit 0 valid, bit 1 polarity, y in bits
    2-16, x in bits 17-31) and a 31-bit timestamp in microseconds, extended by the
    packet's overflow count."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    marker = b"#!END-HEADER\r\n"
    offset = data.find(marker)
    if offset < 0:
        raise ValueError(f"{path}: no '#!END-HEADER' line: not an AEDAT 3.1 file.")
    offset += len(marker)
    parts = []
    while offset < len(data):
        if offset + 28 > len(data):
            raise ValueError(f"{path}: a packet header is cut short at byte {offset} (truncated file?).")
        kind, _, size, _, overflow, _, number, _ = struct.unpack_from("<hhiiiiii", data, offset)
        offset += 28
        if offset + size * number > len(data):
            raise ValueError(f"{path}: a packet of {number} events of {size} bytes runs past the end of the file "
                             "(truncated file?).")
        if kind == POLARITY_EVENT:
            if size != 8:
                raise ValueError(f"{path}: polarity events of {size} bytes; AEDAT 3.1 has 8.")
            body = np.frombuffer(data, "<u4", count=2 * number, offset=offset).reshape(-1, 2).astype(np.int64)
            parts.append(body[body[:, 0] & 1 == 1] | np.array([0, overflow << 31]))
        offset += size * number
    events = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    data, timestamp = events[:, 0], events[:, 1]
    return (data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1, timestamp


def gesture_segments(recording, labels_path):
    """[(events, label)] of one DVS128 Gesture recording: the events of each row of its
    `_labels.csv` (class 1..11, start and end in microseconds, [start, end)), label class - 1."""
    x, y, polarity, timestamp = recording
    rows = np.loadtxt(labels_path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    segments = []
    for label, start, end in rows:
        if not 1 <= label <= GESTURE_CLASSES:
            raise ValueError(f"{labels_path}: class {label} is outside 1..{GESTURE_CLASSES}.")
        keep = (timestamp >= start) & (timestamp < end)
        segments.append(((x[keep], y[keep], polarity[keep], timestamp[keep]), int(label) - 1))
    return segments


def gesture_trials(folder, split):
    """The recordings of a DVS128 Gesture split, as the dataset's own `trials_to_train.txt` /
    `trials_to_test.txt` list them: [(aedat path, labels csv path)]."""
    listing = os.path.join(folder, f"trials_to_{split}.txt")
    if not os.path.isfile(listing):
        raise DatasetNotFoundError([listing])
    with open(listing) as f:
        names = [line.strip() for line in f if line.strip()]
    trials = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DatasetNotFoundError([path])
        trials.append((path, path[: -len(".aedat")] + "_labels.csv"))
    return trials


def gesture_frames(path, labels_path, frames=30, size=48):
    """(frames, labels) of one DVS128 Gesture recording's labelled gestures (row y, column
    x, channel polarity)."""
    segments = gesture_segments(read_aedat31_polarity(path), labels_path)
    return dvs128_frames([e for e, _ in segments], frames, size), np.asarray([label for _, label in segments], np.int64)


def read_gesture(folder, split, frames=30, size=48):
    """(frames (N, frames, size, size, 2) float32, labels) of a DVS128 Gesture split: every
    labelled segment of every listed recording."""
    return concatenated(gesture_frames(path, labels, frames, size) for path, labels in gesture_trials(folder, split))
