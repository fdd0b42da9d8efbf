"""Preparing N-MNIST-sized event data into frames: one recording at a time against the
vectorised reader and the tensorflow-datasets builder, per 1,000 recordings.

    python benchmarks/event_preparation.py                 # 2,000 made-up recordings
    python benchmarks/event_preparation.py --recordings 5000 --events 4500

The recordings are made up (tests/dummy_data.py: random events over 300 ms on 34x34, two
polarities, `--events` each; real N-MNIST recordings hold about 4,000 on average) and
written in the official `.bin` format, so every path reads real files. Timed on a warm
page cache after a first untimed read of the files, the median of 3 (the preparation once):
  * "one at a time": each recording read and binned by itself (`readers.nmnist_frames`),
    as the file reader did before 2026-12-06;
  * "reader": `readers.read_nmnist`, now `events.CHUNK` recordings binned per scatter
    (`events.read_nmnist_files`; what `load_arrays(..., source="files")` does on every load);
  * "tfds prepare": the `keras_fsnn_nmnist` builder's one-time preparation (the vectorised
    binning, then tfds's serialisation and writing of the frames);
  * "tfds load": reading the prepared frames back (every later load).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import dummy_data  # noqa: E402
from keras_fsnn import datasets  # noqa: E402
from keras_fsnn.datasets import events, readers  # noqa: E402


def timed(fn, repeats=1):
    """(median seconds of `repeats` calls, the last result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=2000, help="training recordings (a tenth more for test)")
    parser.add_argument("--events", type=int, default=4000, help="events per recording")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="event_preparation_")
    try:
        folder = os.path.join(work, "nmnist")
        per_digit = max(1, args.recordings // 10)
        dummy_data.write_nmnist(folder, train_per_digit=per_digit, test_per_digit=max(1, per_digit // 10),
                                events=args.events)
        n = per_digit * 10
        readers.read_nmnist(folder, "train")  # warm the page cache
        paths = [path for path, _ in events.nmnist_files(folder, "train")]
        single_s, single = timed(lambda: np.stack([readers.nmnist_frames(*readers.read_nmnist_events(p))
                                                   for p in paths]), repeats=3)
        reader_s, (frames, labels) = timed(lambda: readers.read_nmnist(folder, "train"), repeats=3)
        np.testing.assert_array_equal(single, frames)
        tfds_dir = os.path.join(work, "tfds")
        prepare_s, _ = timed(lambda: datasets.prepare_tfds("nmnist", data_dir=work, tfds_dir=tfds_dir))
        load_s, (loaded, loaded_labels) = timed(lambda: datasets.load_arrays("nmnist", "train", work, source="tfds",
                                                                             tfds_dir=tfds_dir), repeats=3)
        np.testing.assert_array_equal(loaded, frames)
        np.testing.assert_array_equal(loaded_labels, labels)
        test_n = max(1, per_digit // 10) * 10
        print(f"\n{n} training + {test_n} test recordings of {args.events} events, 30 frames of 3 ms; "
              f"{os.cpu_count()} CPU cores; seconds per 1,000 recordings:\n")
        print("| path | s per 1,000 | vs one at a time |\n| --- | --- | --- |")
        for label, seconds, count in (("one recording at a time (the previous reader)", single_s, n),
                                      (f"reader, {events.CHUNK} recordings per scatter", reader_s, n),
                                      ("tfds prepare, once (train + test)", prepare_s, n + test_n),
                                      ("tfds load of the prepared frames", load_s, n)):
            per = seconds / count * 1000
            print(f"| {label} | {per:.2f} | {per / (single_s / n * 1000):.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
