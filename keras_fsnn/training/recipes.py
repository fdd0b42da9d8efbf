"""Training recipes of the zoo models: paper 000 appendix F.3.2 (all: SGD momentum 0.9,
lr 0.05, weight decay 5e-4, batch 128, 100 epochs, dropout 0.2; decay x0.1 at epochs
30/60/90 for MNIST, Fashion-MNIST and N-MNIST, at 50/75 with 400 warmup iterations for
CIFAR; the adjoint solved by Broyden with 30 iterations, by 30 fixed-point iterations for
N-MNIST; no augmentation except CIFAR's random crop and flip). Every field can be
overridden from the command line."""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from keras_fsnn import datasets, validation


@dataclass(frozen=True)
class Recipe:
    architecture: str
    dataset: str
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple = (30, 60, 90)
    warmup_steps: int = 0
    # training augmentation (datasets.Augmentation); None: the dataset's paper augmentation
    random_shift: int = None
    random_flip: bool = None

    def with_overrides(self, overrides):
        """This recipe with the fields in `overrides` (a dict, as saved in a run.json) replaced;
        each value is checked first (`check_overrides`)."""
        overrides = check_overrides(self, overrides)
        return dataclasses.replace(self, **overrides)

    def augmentation(self):
        paper = datasets.DATASETS[self.dataset].augmentation
        return datasets.Augmentation(paper.shift if self.random_shift is None else self.random_shift,
                                     paper.flip if self.random_flip is None else self.random_flip)

    def summary(self):
        """One line for a model card: the schedule, the optimizer and the augmentation."""
        parts = [f"{self.epochs} epoch{'s' * (self.epochs != 1)}", f"SGD momentum {self.momentum}",
                 f"lr {self.learning_rate}", f"milestones {list(self.milestones)}"]
        if self.warmup_steps:
            parts.append(f"{self.warmup_steps} warmup step{'s' * (self.warmup_steps != 1)}")
        parts += [f"weight decay {self.weight_decay}", f"batch {self.batch_size}"]
        augmentation = self.augmentation()
        if augmentation.shift:
            parts.append(f"random shifts of up to {augmentation.shift} px")
        if augmentation.flip:
            parts.append("random horizontal flips")
        return ", ".join(parts)


def check_overrides(recipe, overrides):
    """`overrides` (recipe fields -> values) checked against what `recipe` allows, with
    milestones as a tuple. Each error names the field, the value and what is allowed:

    epochs and batch_size: integers >= 1; learning_rate and weight_decay: finite, >= 0;
    momentum: in [0, 1); warmup_steps: an integer >= 0; milestones: integers >= 1, strictly
    increasing; random_shift: an integer >= 0 and smaller than the image (a shift of the
    whole height or width leaves only padding); random_flip: True or False; augmentation
    only for image datasets. Whether the milestones fall within the epochs is
    `check_milestones`' (a resumed run may end before its last milestone)."""
    if not isinstance(overrides, dict):
        raise TypeError(f"Argument `recipe_overrides` must be a dict of recipe fields; received {overrides!r}.")
    overrides = dict(overrides)
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("architecture", "dataset", "model_kwargs")]
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"Recipe field {key}={value!r} does not exist; the fields are {', '.join(fields)}.")
    for key in ("epochs", "batch_size"):
        if key in overrides:
            overrides[key] = validation.integer(key, overrides[key], minimum=1)
    for key in ("learning_rate", "weight_decay"):
        if key in overrides:
            overrides[key] = validation.number(key, overrides[key], low=0.0, high=math.inf, high_open=True)
    if "momentum" in overrides:
        overrides["momentum"] = validation.number("momentum", overrides["momentum"], low=0.0, high=1.0, high_open=True)
    if "warmup_steps" in overrides:
        overrides["warmup_steps"] = validation.integer("warmup_steps", overrides["warmup_steps"], minimum=0)
    if "milestones" in overrides:
        overrides["milestones"] = _milestones(overrides["milestones"])
    asked = {k: overrides[k] for k in ("random_shift", "random_flip") if overrides.get(k) is not None}
    shape = datasets.DATASETS[recipe.dataset].shape
    if "random_shift" in asked:
        validation.integer("random_shift", asked["random_shift"], minimum=0)
    if "random_flip" in asked:
        validation.boolean("random_flip", asked["random_flip"])
    if asked and len(shape) != 3:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in asked.items())}: augmentation applies to images "
                         f"(H, W, C); {recipe.dataset!r} gives frame sequences {shape}.")
    if asked.get("random_shift", 0) >= min(shape[:2]):
        raise ValueError(f"Argument `random_shift` must be smaller than the {recipe.dataset} images "
                         f"({shape[0]}x{shape[1]} pixels: at most {min(shape[:2]) - 1}); "
                         f"received random_shift={asked['random_shift']!r}.")
    return overrides


def _milestones(milestones):
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (list, tuple)):
        raise TypeError(f"Argument `milestones` must be a list of epochs (integers); received milestones={milestones!r}.")
    for value in milestones:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Argument `milestones` must hold integers >= 1 (epochs at which the learning rate is "
                             f"divided by 10); received milestones={list(milestones)!r}.")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"Argument `milestones` must be strictly increasing; received milestones={list(milestones)!r}.")
    return tuple(int(m) for m in milestones)


def check_milestones(milestones, epochs):
    """Milestones of a new run must fall within its `epochs`: the learning rate is divided
    at the start of epoch m (counted from 0), so m in 1 .. epochs - 1 (a later one never
    acts)."""
    milestones = _milestones(milestones)
    outside = [m for m in milestones if m >= epochs]
    if outside:
        allowed = f"1 .. {epochs - 1}" if epochs > 1 else "none: a 1-epoch run has no epoch to decay at"
        raise ValueError(f"Argument `milestones` must lie within the run's {epochs} epoch{'s' * (epochs != 1)} "
                         f"({allowed}); received milestones={list(milestones)!r} with epochs={epochs}.")
    return milestones


CIFAR = dict(milestones=(50, 75), warmup_steps=400)


def spide_weight_decay(scale, decay=5e-4):
    """SPIDE multiplies the loss by s and divides the learning rate by s but keeps the
    coupled weight decay 5e-4 (paper 002 D.3, seed-code.md fact 5): relative to the
    unscaled gradient the decay is 5e-4 / s. Our blocks apply s inside the spiking backward
    stage instead (`backward_scale`), so the optimizer sees unscaled gradients with the
    unscaled learning rate, and the same update needs weight decay 5e-4 / s."""
    return decay / scale

RECIPES = {
    "fsnn_mnist": Recipe("fsnn_mnist", "mnist"),
    "fsnn_fmnist": Recipe("fsnn_fmnist", "fashion_mnist"),
    "fsnn_nmnist": Recipe("fsnn_nmnist", "nmnist"),  # its architecture solves by fixed point
    "alexnet_f": Recipe("alexnet_f", "cifar10", **CIFAR),
    "cifarnet_f": Recipe("cifarnet_f", "cifar10", **CIFAR),
    "alexnet_f_cifar100": Recipe("alexnet_f", "cifar100", {"num_classes": 100}, **CIFAR),
    "cifarnet_f_cifar100": Recipe("cifarnet_f", "cifar100", {"num_classes": 100}, **CIFAR),
    # SPIDE (paper 002 appendix D.3, seed-code.md §3.6)
    "spide_mnist": Recipe("spide_mnist", "mnist", weight_decay=spide_weight_decay(100)),
    "spide_lenet": Recipe("spide_lenet", "mnist", epochs=60, learning_rate=0.1, milestones=(20, 40),
                          weight_decay=spide_weight_decay(100)),
    "spide_alexnet_f": Recipe("spide_alexnet_f", "cifar10", weight_decay=spide_weight_decay(400), **CIFAR),
    "spide_cifarnet_f": Recipe("spide_cifarnet_f", "cifar10", weight_decay=spide_weight_decay(400), **CIFAR),
    # MPIS: the released code's settings (seed-code.md §4.5; the paper gives none), 500 epochs cut
    # to 100 (the learning rate is 1e-4 of its start by then); warmup 500 iterations
    "mpis_fmnist": Recipe("mpis_fmnist", "fashion_mnist", learning_rate=0.1, milestones=(15, 50), warmup_steps=500),
    "mpis_nmnist": Recipe("mpis_nmnist", "nmnist", learning_rate=0.1, milestones=(15, 50), warmup_steps=500),
    "mpis_cifar10": Recipe("mpis_cifar10", "cifar10", learning_rate=0.01, milestones=(15, 40, 80), warmup_steps=500),
    "mpis_cifar100": Recipe("mpis_cifar100", "cifar100", learning_rate=0.01, milestones=(15, 40, 80), warmup_steps=500),
    "mpis_cifar10_large": Recipe("mpis_cifar10_large", "cifar10", learning_rate=0.01, milestones=(15, 40, 80),
                                warmup_steps=500),
    "mpis_cifar100_large": Recipe("mpis_cifar100_large", "cifar100", learning_rate=0.01, milestones=(15, 40, 80),
                                 warmup_steps=500),
    "spide_cifarnet_f_cifar100": Recipe("spide_cifarnet_f", "cifar100", {"num_classes": 100, "backward_scale": 500.0},
                                        weight_decay=spide_weight_decay(500), **CIFAR),
}


def get_recipe(name):
    return validation.choose("name", name, RECIPES)
