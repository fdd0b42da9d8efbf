"""tensorflow-datasets builders of the papers' datasets, prepared offline from the official
files in tfds's `manual_dir`.

Each builder reads what keras_fsnn.datasets reads (readers.py, events.py) and stores it in
the files' own order (`disable_shuffling`), so a split read back through tfds is the same
arrays, example for example, as the files give, and a seeded training run sees the same
batches either way. The event datasets are stored as frames: preparing them, the slow
part, happens once (tfds shows a progress bar), and every later load reads the frames.

    keras_fsnn_mnist, keras_fsnn_fashion_mnist, keras_fsnn_cifar10, keras_fsnn_cifar100
        the official idx / pickle / npz files, uint8 images
    keras_fsnn_nmnist/frames_3ms_30
        N-MNIST Train/<digit>/*.bin and Test/<digit>/*.bin, (30, 34, 34, 2) uint8 frames of
        3 ms (paper 000 F.3.1); other frame counts by `NmnistConfig`
    keras_fsnn_cifar10_dvs/frames_30_48px
        CIFAR10-DVS <class>/cifar10_<class>_<i>.aedat, (30, 48, 48, 2) float32 frames (paper
        002 F.4), split 9:1 per class by the shipped split file (events.py)
    keras_fsnn_dvs_gesture/frames_30_48px
        DVS128 Gesture's AEDAT 3.1 recordings, one example per labelled gesture, the same
        frames, the dataset's own train/test trials

`builder(name, tfds_dir, time_steps)` gives the builder of a keras_fsnn dataset name;
`prepare(...)` prepares one from a folder of official files. Importing this module needs
tensorflow-datasets (`pip install keras-fsnn[tfds]`).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from keras_fsnn.datasets import events, readers


class OfficialFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A keras_fsnn dataset (`DATASET`, a key of keras_fsnn.datasets.DATASETS) as a tfds
    dataset, generated from the official files in `manual_dir`, in their order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    DATASET = None

    @property
    def _dataset(self):
        from keras_fsnn.datasets import DATASETS

        return DATASETS[self.DATASET]

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the dataset's official files (keras_fsnn.datasets.DATASETS[name].files says which) in the manual_dir; "
        "`keras-fsnn prepare NAME --data-dir DIR` does it from DIR/NAME or DIR.")

    def _example_shape(self):
        return self._dataset.shape

    def _example_dtype(self):
        return np.uint8

    def _info(self):
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self._example_shape(), dtype=self._example_dtype(),
                                          encoding=tfds.features.Encoding.ZLIB),
            "label": tfds.features.ClassLabel(num_classes=self._dataset.num_classes),
        })
        return self.dataset_info_from_configs(features=features, supervised_keys=("image", "label"),
                                              disable_shuffling=True,
                                              description=f"keras_fsnn's {self.DATASET}, from the official files.")

    def _split_generators(self, dl_manager):
        folder = str(dl_manager.manual_dir)
        return {split: self._generate_examples(folder, split) for split in ("train", "test")}

    def _generate_examples(self, folder, split):
        yield from _examples([self._read(folder, split)])

    def _read(self, folder, split):
        from keras_fsnn.datasets import _read_files

        return _read_files(self._dataset, folder, split, None)


class KerasFsnnMnist(OfficialFilesBuilder):
    DATASET = "mnist"


class KerasFsnnFashionMnist(OfficialFilesBuilder):
    DATASET = "fashion_mnist"


class KerasFsnnCifar10(OfficialFilesBuilder):
    DATASET = "cifar10"


class KerasFsnnCifar100(OfficialFilesBuilder):
    DATASET = "cifar100"


@dataclasses.dataclass(eq=False)
class NmnistConfig(tfds.core.BuilderConfig):
    """N-MNIST frames: `time_steps` bins of `bin_us` microseconds."""

    time_steps: int = 30
    bin_us: int = 3000


def nmnist_config(time_steps=30, bin_us=3000):
    return NmnistConfig(name=f"frames_{bin_us // 1000}ms_{time_steps}", time_steps=time_steps, bin_us=bin_us,
                        description=f"{time_steps} frames of {bin_us / 1000:g} ms")


class KerasFsnnNmnist(OfficialFilesBuilder):
    DATASET = "nmnist"
    BUILDER_CONFIGS = [nmnist_config()]

    def _example_shape(self):
        return (self.builder_config.time_steps, 34, 34, 2)

    def _generate_examples(self, folder, split):
        config = self.builder_config
        read = lambda paths: events.read_nmnist_files(paths, config.time_steps, config.bin_us)  # noqa: E731
        yield from _examples(events.in_chunks(events.nmnist_files(folder, split), read, events.CHUNK))


@dataclasses.dataclass(eq=False)
class Dvs128Config(tfds.core.BuilderConfig):
    """DVS128 frames (CIFAR10-DVS, DVS128 Gesture): `frames` frames of equal event counts,
    resized to `size` x `size`."""

    frames: int = 30
    size: int = 48


class KerasFsnnCifar10Dvs(OfficialFilesBuilder):
    DATASET = "cifar10_dvs"
    BUILDER_CONFIGS = [Dvs128Config(name="frames_30_48px", description="30 frames of equal event counts, 48x48")]

    def _example_shape(self):
        return (self.builder_config.frames, self.builder_config.size, self.builder_config.size, 2)

    def _example_dtype(self):
        return np.float32

    def _generate_examples(self, folder, split):
        config = self.builder_config
        files = events.cifar10_dvs_files(folder, events.shipped_cifar10_dvs_split()[split])
        read = lambda paths: events.read_cifar10_dvs_files(paths, config.frames, config.size)  # noqa: E731
        yield from _examples(events.in_chunks(files, read, events.CHUNK))


class KerasFsnnDvsGesture(KerasFsnnCifar10Dvs):
    DATASET = "dvs_gesture"
    BUILDER_CONFIGS = [Dvs128Config(name="frames_30_48px", description="30 frames of equal event counts, 48x48")]

    def _generate_examples(self, folder, split):  # a recording at a time: its gestures' frames
        config = self.builder_config
        yield from _examples(events.gesture_frames(path, labels, config.frames, config.size)
                             for path, labels in events.gesture_trials(folder, split))


def _examples(chunks):
    """(key, example) pairs of (frames, labels) chunks, keys counting from 0 in order."""
    key = 0
    for frames, labels in chunks:
        for frame, label in zip(frames, labels):
            yield key, {"image": frame, "label": int(label)}
            key += 1


BUILDERS = {b.DATASET: b for b in (KerasFsnnMnist, KerasFsnnFashionMnist, KerasFsnnCifar10, KerasFsnnCifar100,
                                   KerasFsnnNmnist, KerasFsnnCifar10Dvs, KerasFsnnDvsGesture)}


def builder(name, tfds_dir=None, time_steps=30):
    """The keras_fsnn builder of dataset `name` with its data in `tfds_dir` (None: tfds's
    default, $TFDS_DATA_DIR or ~/tensorflow_datasets); N-MNIST with `time_steps` frames."""
    cls = BUILDERS[name]
    config = nmnist_config(time_steps) if name == "nmnist" else None
    if config is not None and config.name in {c.name for c in cls.BUILDER_CONFIGS}:
        config = config.name  # a registered config is asked for by name (tfds refuses an equal object)
    return cls(data_dir=tfds_dir, config=config)


def prepare(name, manual_dir, tfds_dir=None, time_steps=30):
    """Prepare (once) the tfds dataset of `name` from the official files in `manual_dir`;
    returns its builder. Nothing is downloaded."""
    built = builder(name, tfds_dir, time_steps)
    if not built.is_prepared():
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        built.download_and_prepare(download_config=config)
    return built


def read(built, split):
    """(images, labels) NumPy arrays of `split` of a prepared builder, in stored order."""
    data = built.as_dataset(split=split, batch_size=-1, as_supervised=True, shuffle_files=False)
    images, labels = tfds.as_numpy(data)
    return np.asarray(images), np.asarray(labels, np.int64)
