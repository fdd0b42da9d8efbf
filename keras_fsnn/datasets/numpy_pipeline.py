"""Training and evaluation batches without TensorFlow: `keras.utils.PyDataset`s over NumPy
arrays, for the JAX backend on a machine that has no TensorFlow (the project's GPU
machine). Same preprocessing as the tf.data pipelines (scale to [0, 1]; an
`Augmentation`: zero-pad, random crop of the original size, random horizontal flip), with
the same guarantee: the order and augmentation of epoch e are a pure function of
(seed, e), so a resumed run draws the batches an uninterrupted one would have. The draws
are `epoch_draws`', which the trainer's tf.data pipeline applies too: both pipelines give
the same batches."""

import math

import keras
import numpy as np


def _scale(images, info):
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 and info.name != "nmnist" else images.astype("float32")


def epoch_draws(seed, epoch, count, augmentation=None):
    """(order, crop origins in the zero-padded image, flips) of epoch `epoch` of `count`
    examples, drawn by NumPy from (seed, epoch) alone: a permutation of range(count) and,
    for an `augmentation` that does something, per example (dy, dx) in [0, 2 * shift] and
    a flip (else None, None)."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(count)
    offsets = flips = None
    if augmentation:
        offsets = rng.integers(0, 2 * augmentation.shift + 1, (count, 2))
        flips = (rng.random(count) < 0.5) & augmentation.flip
    return order, offsets, flips


class EpochBatches(keras.utils.PyDataset):
    """Shuffled batches (augmented by `augmentation`, a `datasets.Augmentation`), epoch after
    epoch, as one endless sequence: item i is batch `first_batch + i` counted from the start
    of epoch `first_epoch`, so it is a pure function of (seed, i) whatever Keras calls in
    between (it calls `on_epoch_end` also when a fit starts). Give fit `steps_per_epoch`; a
    resumed epoch starts with `first_batch` = the batches already trained on."""

    def __init__(self, info, images, labels, batch_size, seed, first_epoch=0, augmentation=None, first_batch=0):
        super().__init__()
        self.info, self.images, self.labels = info, images, np.asarray(labels)
        self.batch_size, self.seed, self.augmentation = int(batch_size), int(seed), augmentation
        self.first_epoch, self.first_batch = int(first_epoch), int(first_batch)
        self.batches_per_epoch = math.ceil(len(self.labels) / self.batch_size)
        self._drawn = (None,)

    @property
    def num_batches(self):
        return None  # endless: epochs follow one another

    def draws(self, epoch):
        """(order, crop origins in the zero-padded image, flips) of `epoch`: `epoch_draws`'
        of (seed, epoch). The last epoch's are kept, as one tuple: workers reading concurrently
        never see a half-replaced epoch."""
        drawn = self._drawn
        if drawn[0] != epoch:
            drawn = self._drawn = (epoch, *epoch_draws(self.seed, epoch, len(self.labels), self.augmentation))
        return drawn[1:]

    def __getitem__(self, index):
        epoch, index = divmod(self.first_batch + index, self.batches_per_epoch)
        order, offsets, flips = self.draws(self.first_epoch + epoch)
        positions = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.labels)))
        chosen = order[positions]
        images = self.images[chosen]
        if self.augmentation:  # each image's crop is a window of the zero-padded batch
            height, width = images.shape[1:3]
            shift = self.augmentation.shift
            padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(1, 2))
            crops = windows[np.arange(len(positions)), offsets[positions, 0], offsets[positions, 1]]  # (n, C, H, W)
            crops = np.where(flips[positions][:, None, None, None], crops[..., ::-1], crops)
            images = crops.transpose(0, 2, 3, 1)
        images = _scale(images, self.info)
        return images, self.labels[chosen]


class ArrayBatches(keras.utils.PyDataset):
    """Batches in order, no augmentation (evaluation); iterable as (x, y) pairs."""

    def __init__(self, info, images, labels, batch_size):
        super().__init__()
        self.info, self.images, self.labels, self.batch_size = info, images, np.asarray(labels), int(batch_size)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        if index >= len(self):
            raise IndexError(index)
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return _scale(self.images[part], self.info), self.labels[part]

    def __iter__(self):
        return (self[i] for i in range(len(self)))
