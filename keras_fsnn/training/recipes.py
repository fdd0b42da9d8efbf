"""Training recipes of the zoo models: paper 000 appendix F.3.2 (all: SGD momentum 0.9,
lr 0.05, weight decay 5e-4, batch 128, 100 epochs, dropout 0.2; decay x0.1 at epochs
30/60/90 for MNIST, Fashion-MNIST and N-MNIST, at 50/75 with 400 warmup iterations for
CIFAR; the adjoint solved by Broyden with 30 iterations, by 30 fixed-point iterations for
N-MNIST). Every field can be overridden from the command line."""

from dataclasses import dataclass, field

from keras_fsnn import validation


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


CIFAR = dict(milestones=(50, 75), warmup_steps=400)

RECIPES = {
    "fsnn_mnist": Recipe("fsnn_mnist", "mnist"),
    "fsnn_fmnist": Recipe("fsnn_fmnist", "fashion_mnist"),
    "fsnn_nmnist": Recipe("fsnn_nmnist", "nmnist", {"solver": "fixed_point"}),
    "alexnet_f": Recipe("alexnet_f", "cifar10", **CIFAR),
    "cifarnet_f": Recipe("cifarnet_f", "cifar10", **CIFAR),
    "alexnet_f_cifar100": Recipe("alexnet_f", "cifar100", {"num_classes": 100}, **CIFAR),
    "cifarnet_f_cifar100": Recipe("cifarnet_f", "cifar100", {"num_classes": 100}, **CIFAR),
}


def get_recipe(name):
    return validation.choose("name", name, RECIPES)
