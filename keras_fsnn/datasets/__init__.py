"""Datasets of the papers, read from the official files in a local folder (or through
tensorflow-datasets when it is installed and has the data), as NumPy arrays or as batched
pipelines with the papers' preprocessing.

Images are returned as uint8 (N, H, W, C); pipelines yield float32 images in [0, 1] (the
normalisation is a layer inside every zoo model) and int64 labels. Augmentation follows
paper 000 F.3.1 by default: random crop (zero padding 4) and horizontal flip for CIFAR,
none for the others; an `Augmentation` asks for another.

Where the files are looked for, in order: `data_dir/<name>/`, then `data_dir/` itself,
where `data_dir` is the argument, else the `KERAS_FSNN_DATA` environment variable, else
`~/.keras/datasets`.
"""

import os
from dataclasses import dataclass

import numpy as np

from keras_fsnn import validation
from keras_fsnn.datasets import readers
from keras_fsnn.datasets.readers import DatasetNotFoundError


@dataclass(frozen=True)
class Augmentation:
    """Random translation by up to `shift` pixels in each direction (zero-pad `shift`
    pixels on every side, crop a random window of the original size) and, with `flip`, a
    random horizontal flip. `Augmentation()` does nothing."""

    shift: int = 0
    flip: bool = False

    def __post_init__(self):
        validation.integer("shift", self.shift, minimum=0)
        validation.boolean("flip", self.flip)

    def __bool__(self):
        return self.shift > 0 or self.flip


PAPER_CIFAR_AUGMENTATION = Augmentation(shift=4, flip=True)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple
    num_classes: int
    sizes: tuple  # (train, test)
    files: str  # what to put in the folder
    tfds_name: str = None
    augmentation: Augmentation = Augmentation()  # the paper's, for training
    # a file or folder whose presence shows a folder holds the official files (None: the
    # test split is read to see), and a subfolder of the official archive to look in too
    marker: str = None
    subfolder: str = None


DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, (60000, 10000),
                         "the four official idx files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                         "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz", "mnist"),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, (60000, 10000),
                                 "the four official idx .gz files (same names as MNIST)", "fashion_mnist"),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, (50000, 10000),
                           "cifar-10-batches-py/ (the official python pickles) or cifar10.npz with "
                           "x_train, y_train, x_test, y_test", "cifar10",
                           augmentation=PAPER_CIFAR_AUGMENTATION),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, (50000, 10000),
                            "cifar-100-python/ (the official python pickles) or cifar100.npz", "cifar100",
                            augmentation=PAPER_CIFAR_AUGMENTATION),
    "nmnist": DatasetInfo("nmnist", (30, 34, 34, 2), 10, (60000, 10000),
                          "the official Train/<digit>/*.bin and Test/<digit>/*.bin event files", marker="Train"),
    # 9:1 per class by the shipped split file (events.py); (30, 48, 48, 2) float32 frames
    "cifar10_dvs": DatasetInfo("cifar10_dvs", (30, 48, 48, 2), 10, (9000, 1000),
                               "the official <class>/cifar10_<class>_<i>.aedat files (the ten class zips, "
                               "extracted)", marker="airplane"),
    # every labelled gesture segment; the split is the dataset's own trials_to_*.txt. The
    # counts are not recorded here: no copy of the dataset was available to count them.
    "dvs_gesture": DatasetInfo("dvs_gesture", (30, 48, 48, 2), 11, (None, None),
                               "DvsGesture/: the user*_*.aedat recordings, their *_labels.csv files and "
                               "trials_to_train.txt, trials_to_test.txt (the dataset's tar, extracted)",
                               marker="trials_to_train.txt", subfolder="DvsGesture"),
    # Embedded: scikit-learn's 1,797 8x8 handwritten digits, no files needed.
    "digits": DatasetInfo("digits", (8, 8, 1), 10, (1347, 450), "nothing (bundled with scikit-learn)"),
}

SPLITS = {"train": "train", "test": "test"}


def default_data_dir():
    return os.environ.get("KERAS_FSNN_DATA") or os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def load_arrays(name, split="train", data_dir=None, source="auto", time_steps=30, tfds_dir=None):
    """(images, labels) of a dataset split as NumPy arrays.

    Args:
        name: "mnist", "fashion_mnist", "cifar10", "cifar100", "nmnist", "cifar10_dvs",
            "dvs_gesture" or "digits" (scikit-learn's bundled 8x8 digits, split 75/25 stratified with seed 0).
        split: "train" or "test".
        data_dir: the folder of the official files (see the module docstring).
        source: "files" (read the official files), "tfds" (through tensorflow-datasets: the
            keras_fsnn builder's dataset in `tfds_dir`, prepared from the official files the
            first time, else tfds's own builder of that name if prepared there; nothing is
            downloaded) or "auto" (the files, then tfds's prepared datasets). "files" and
            "tfds" give the same arrays in the same order (tfds_builders.py).
        time_steps: N-MNIST frames per sample.
        tfds_dir: tensorflow-datasets' data_dir (None: its default, $TFDS_DATA_DIR or
            ~/tensorflow_datasets).
    """
    info = validation.choose("name", name, DATASETS)
    split = validation.choose("split", split, SPLITS)
    validation.choose("source", source, SOURCES)
    if info.name == "digits":
        return readers.read_sklearn_digits(split)
    data_dir = check_folder("data_dir", data_dir) or default_data_dir()
    tfds_dir = check_folder("tfds_dir", tfds_dir)
    looked = []
    if source in ("auto", "files"):
        for folder in _file_folders(info, data_dir):
            try:
                return _read_files(info, folder, split, time_steps)
            except DatasetNotFoundError as missing:
                looked.extend(missing.args[0] if missing.args and isinstance(missing.args[0], list) else [folder])
    if source in ("auto", "tfds"):
        try:
            return _read_tfds(info, split, data_dir, time_steps, tfds_dir, prepare=(source == "tfds"), looked=looked)
        except ImportError:
            if source == "tfds":
                raise ImportError("source='tfds' needs tensorflow-datasets: pip install keras-fsnn[tfds]") from None
    raise DatasetNotFoundError(
        f"Dataset {info.name!r} ({split}) was not found. Looked for:\n  " + "\n  ".join(looked)
        + f"\nPut {info.files} in {os.path.join(data_dir, info.name)} (or pass data_dir=..., or set "
        "KERAS_FSNN_DATA). Nothing is downloaded."
    )


SOURCES = {"auto": "auto", "files": "files", "tfds": "tfds"}


def check_folder(argument, value):
    """`value` as a path string, or None; TypeError naming `argument` for anything else."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"Argument `{argument}` must be a folder path (str or os.PathLike) or None; received "
                        f"{argument}={value!r}.")
    return os.fspath(value) if value else None


def _file_folders(info, data_dir):
    folders = (os.path.join(data_dir, info.name), data_dir)
    return folders + tuple(os.path.join(f, info.subfolder) for f in folders) if info.subfolder else folders


def _read_files(info, folder, split, time_steps):
    if info.name in ("mnist", "fashion_mnist"):
        return readers.read_mnist_format(folder, split, info.num_classes)
    if info.name in ("cifar10", "cifar100"):
        return readers.read_cifar(folder, split, info.num_classes)
    if info.name == "cifar10_dvs":
        from keras_fsnn.datasets import events

        files = events.cifar10_dvs_files(folder, events.shipped_cifar10_dvs_split()[split])
        return events.concatenated(events.in_chunks(files, events.read_cifar10_dvs_files, events.CHUNK))
    if info.name == "dvs_gesture":
        from keras_fsnn.datasets import events

        return events.read_gesture(folder, split)
    return readers.read_nmnist(folder, split, time_steps or 30)


def prepare_tfds(name, data_dir=None, tfds_dir=None, time_steps=30):
    """Prepare the tensorflow-datasets dataset of `name` (keras_fsnn's builder,
    tfds_builders.py) in `tfds_dir` from the official files under `data_dir` (in
    `data_dir/<name>` or `data_dir` itself); a prepared one is left as it is. Returns the
    builder (`builder.data_dir` is where the dataset lies). Nothing is downloaded."""
    info = validation.choose("name", name, {k: v for k, v in DATASETS.items() if k != "digits"})
    data_dir = check_folder("data_dir", data_dir) or default_data_dir()
    tfds_dir = check_folder("tfds_dir", tfds_dir)
    from keras_fsnn.datasets import tfds_builders

    for folder in _file_folders(info, data_dir):
        if _has_files(info, folder):
            return tfds_builders.prepare(info.name, folder, tfds_dir, time_steps)
    raise DatasetNotFoundError(f"Dataset {info.name!r}: no official files in {os.path.join(data_dir, info.name)} "
                               f"or {data_dir}. Put {info.files} there.")


def _has_files(info, folder):
    """Whether `folder` holds the dataset's official files: its `marker` is there, or (no
    marker: a static dataset) its test split reads (the reader then validates them)."""
    if info.marker:
        return os.path.exists(os.path.join(folder, info.marker))
    try:
        _read_files(info, folder, "test", None)
    except DatasetNotFoundError:
        return False
    return True


def _read_tfds(info, split, data_dir, time_steps, tfds_dir, prepare, looked):
    """The split through tensorflow-datasets: keras_fsnn's builder if prepared in tfds_dir
    (or, with `prepare`, prepared now from the official files under data_dir), else tfds's
    own builder `info.tfds_name` if prepared there. Raises DatasetNotFoundError."""
    import tensorflow_datasets as tfds

    from keras_fsnn.datasets import tfds_builders

    ours = tfds_builders.builder(info.name, tfds_dir, time_steps)
    if ours.is_prepared():
        return tfds_builders.read(ours, split)
    looked.append(f"tensorflow-datasets '{ours.name}/{ours.builder_config.name if ours.builder_config else ''}' "
                  f"prepared in {ours.data_dir_root}")
    if prepare:
        try:
            return tfds_builders.read(prepare_tfds(info.name, data_dir, tfds_dir, time_steps), split)
        except DatasetNotFoundError as missing:
            looked.append(str(missing))
    if info.tfds_name:
        theirs = tfds.builder(info.tfds_name, data_dir=tfds_dir)
        if theirs.is_prepared():
            return tfds_builders.read(theirs, split)
        looked.append(f"tensorflow-datasets '{info.tfds_name}' prepared in {theirs.data_dir_root}")
    raise DatasetNotFoundError(looked)


def make_pipeline(name, split="train", data_dir=None, batch_size=128, training=None, augment=None,
                  shuffle_seed=0, source="auto", limit=None, arrays=None):
    """A batched `tf.data.Dataset` of (float32 images in [0, 1], int64 labels).

    `training` (default: split == "train") shuffles each epoch. `augment`: an
    `Augmentation`, True for the dataset's paper augmentation (random crop + flip for
    CIFAR, none for the others), False for none, or None (default): the paper's when
    training. `limit` keeps the first `limit` examples (a fixed slice, for quick checks).
    """
    import tensorflow as tf

    info = validation.choose("name", name, DATASETS)
    images, labels = arrays if arrays is not None else load_arrays(name, split, data_dir, source)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    training = (split == "train") if training is None else training
    if augment is None:
        augment = training
    if isinstance(augment, bool):
        augment = info.augmentation if augment else Augmentation()
    elif not isinstance(augment, Augmentation):
        raise TypeError(f"Argument `augment` must be an Augmentation, True, False or None; received augment={augment!r}.")

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)

    def prepare(image, label):
        image = tf.cast(image, tf.float32) / 255.0 if image.dtype == tf.uint8 and info.name != "nmnist" else tf.cast(image, tf.float32)
        return augment_image(image, augment, info.shape), label

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def augment_image(image, augmentation, shape, seed=None):
    """One image (H, W, C) under `augmentation`, by tf.image ops: stateless ones seeded with
    `seed` (an int64 pair; the flip uses seed + 1) when given, else TensorFlow's global RNG."""
    import tensorflow as tf

    if augmentation.shift:
        pad = 2 * augmentation.shift
        image = tf.image.resize_with_crop_or_pad(image, shape[0] + pad, shape[1] + pad)
        image = (tf.image.random_crop(image, shape) if seed is None
                 else tf.image.stateless_random_crop(image, shape, seed=seed))
    if augmentation.flip:
        image = (tf.image.random_flip_left_right(image) if seed is None
                 else tf.image.stateless_random_flip_left_right(image, seed=seed + 1))
    return image


__all__ = ["Augmentation", "DATASETS", "DatasetInfo", "DatasetNotFoundError", "augment_image", "default_data_dir", "load_arrays", "make_pipeline", "prepare_tfds"]
