"""The Yin-Yang dataset (Kriener, Goeltz, Petrovici 2021) and its spike-time encoding.

Definition (the published generator): points (x, y) are drawn uniformly from the square
[0, 2 r_big]^2 and kept if they lie inside the big circle of radius r_big = 0.5 centred at
(r_big, r_big). Each point belongs to one of three classes:

    d_right = |(x, y) - (1.5 r_big, r_big)|,   d_left = |(x, y) - (0.5 r_big, r_big)|
    dot   (2) if d_right < r_small or d_left < r_small             (r_small = 0.1)
    else  (1) if d_right <= r_small, or r_small < d_left <= r_big / 2,
              or (y > r_big and d_right > r_big / 2)
    else  (0)

(the generator calls label 1 "is_yin" while listing the class names as ("yin", "yang",
"dot"); the labels here are the generator's numbers). Classes are balanced by rejection:
for every sample a target class is drawn first, then points are drawn until one of that
class comes up. The features are (x, y, 1 - x, 1 - y). Everything comes from one
`numpy.random.RandomState(seed)` in the generator's order (randint(3) for the class, then
rand(2) per candidate point), so a split is a pure function of its seed and identical to
the published one: train = seed 42 / 5000 samples, validation = seed 41 / 1000, test =
seed 40 / 1000 (paper 004 §5.3 uses train and test).

Spike-time encoding (paper 004 Table 3 and the released `yin_yang_snn.py` agree): each
feature v in [0, 1] fires once at t = v (T - t_early) + t_early, T = 2, t_early = 0.15, and
a fifth "bias" input fires at t_bias = 0.9. The bias neuron is input 4 for every sample
(the paper's network, `bias_slot="fixed"`). The released code inserts the bias time with
`searchsorted` into the unsorted 4-vector, so which input neuron carries the bias (and
which feature each neuron gets) changes from sample to sample (seed fact 10a);
`bias_slot="searchsorted"` reproduces that.
"""

import numpy as np

from keras_fsnn import validation

SPLITS = {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
CLASS_NAMES = ("yin", "yang", "dot")
BIAS_SLOTS = {"fixed": "fixed", "searchsorted": "searchsorted"}


def _label(x, y, r_small, r_big):
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    if d_right < r_small or d_left < r_small:
        return 2
    is_yin = (d_right <= r_small) or (r_small < d_left <= 0.5 * r_big) or (y > r_big and d_right > 0.5 * r_big)
    return int(is_yin)


def yin_yang(size, seed, r_small=0.1, r_big=0.5):
    """`size` Yin-Yang samples from `RandomState(seed)`: features (size, 4) float64 (x, y,
    1 - x, 1 - y) in [0, 1] and labels (size,) int64 in {0, 1, 2}."""
    size = validation.integer("size", size, minimum=0)
    seed = validation.integer("seed", seed, minimum=0)
    r_small = validation.number("r_small", r_small, low=0.0, low_open=True)
    r_big = validation.number("r_big", r_big, low=0.0, low_open=True)
    if not r_small < 0.5 * r_big:
        raise ValueError(f"Argument `r_small` must be < r_big / 2; received r_small={r_small!r}, r_big={r_big!r}.")
    rng = np.random.RandomState(seed)
    features = np.empty((size, 4))
    labels = np.empty(size, np.int64)
    for index in range(size):
        goal = rng.randint(3)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if np.sqrt((x - r_big) ** 2 + (y - r_big) ** 2) > r_big:
                continue
            if _label(x, y, r_small, r_big) == goal:
                break
        features[index] = (x, y, 1.0 - x, 1.0 - y)
        labels[index] = goal
    return features, labels


def load_yin_yang(split="train"):
    """(features, labels) of a published split: "train" (5000, seed 42), "validation"
    (1000, seed 41) or "test" (1000, seed 40)."""
    size, seed = validation.choose("split", split, SPLITS)
    return yin_yang(size, seed)


def encode_yin_yang(features, t_max=2.0, t_early=0.15, t_bias=0.9, bias_slot="fixed"):
    """Spike times (n, 5) of Yin-Yang features (n, 4): t = v (t_max - t_early) + t_early and a
    bias spike at t_bias (input 4 for "fixed"; see the module docstring for "searchsorted")."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != 4:
        raise ValueError(f"Argument `features` must have shape (n, 4); received shape {features.shape}.")
    t_max = validation.number("t_max", t_max, low=0.0, low_open=True)
    t_early = validation.number("t_early", t_early, low=0.0, high=t_max)
    t_bias = validation.number("t_bias", t_bias, low=0.0)
    mode = validation.choose("bias_slot", bias_slot, BIAS_SLOTS)
    times = features * (t_max - t_early) + t_early
    if mode == "fixed":
        return np.concatenate([times, np.full((times.shape[0], 1), t_bias)], axis=1)
    return np.stack([np.insert(row, np.searchsorted(row, t_bias), t_bias) for row in times])


__all__ = ["BIAS_SLOTS", "CLASS_NAMES", "SPLITS", "encode_yin_yang", "load_yin_yang", "yin_yang"]
