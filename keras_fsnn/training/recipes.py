"""Training recipes of the zoo models: paper 000 appendix F.3.2 (all: SGD momentum 0.9,
lr 0.05, weight decay 5e-4, batch 128, 100 epochs, dropout 0.2; decay x0.1 at epochs
30/60/90 for MNIST, Fashion-MNIST and N-MNIST, at 50/75 with 400 warmup iterations for
CIFAR; the adjoint solved by Broyden with 30 iterations, by 30 fixed-point iterations for
N-MNIST; no augmentation except CIFAR's random crop and flip). Every field can be
overridden from the command line."""

import dataclasses
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
        """This recipe with the fields in `overrides` (a dict, as saved in a run.json) replaced."""
        overrides = dict(overrides)
        if "milestones" in overrides:
            overrides["milestones"] = tuple(overrides["milestones"])
        asked = {k: overrides[k] for k in ("random_shift", "random_flip") if overrides.get(k) is not None}
        if "random_shift" in asked:
            validation.integer("random_shift", asked["random_shift"], minimum=0)
        if "random_flip" in asked:
            validation.boolean("random_flip", asked["random_flip"])
        if asked and len(datasets.DATASETS[self.dataset].shape) != 3:
            raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in asked.items())}: augmentation applies to images "
                             f"(H, W, C); {self.dataset!r} gives frame sequences {datasets.DATASETS[self.dataset].shape}.")
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
