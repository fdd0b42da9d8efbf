from keras_fsnn.models.feedback_networks import (
    ARCHITECTURES,
    alexnet_f,
    cifarnet_f,
    count_parameters,
    feedback_conv_network,
    feedback_dense_network,
    feedback_multilayer_network,
    fsnn_fmnist,
    fsnn_mnist,
    fsnn_nmnist,
)
from keras_fsnn.models.implicit_stream_networks import (
    MPIS_ARCHITECTURES,
    mpis_cifar10,
    mpis_cifar10_large,
    mpis_cifar100,
    mpis_cifar100_large,
    mpis_fmnist,
    mpis_network,
    mpis_nmnist,
)
from keras_fsnn.models.spide_networks import (
    SPIDE_ARCHITECTURES,
    spide_alexnet_f,
    spide_cifarnet_f,
    spide_lenet,
    spide_mnist,
)

ARCHITECTURES = {**ARCHITECTURES, **SPIDE_ARCHITECTURES, **MPIS_ARCHITECTURES}

__all__ = [
    "ARCHITECTURES",
    "alexnet_f",
    "cifarnet_f",
    "count_parameters",
    "feedback_conv_network",
    "feedback_dense_network",
    "feedback_multilayer_network",
    "fsnn_fmnist",
    "fsnn_mnist",
    "fsnn_nmnist",
    "mpis_cifar10",
    "mpis_cifar100",
    "mpis_cifar100_large",
    "mpis_cifar10_large",
    "mpis_fmnist",
    "mpis_network",
    "mpis_nmnist",
    "spide_alexnet_f",
    "spide_cifarnet_f",
    "spide_lenet",
    "spide_mnist",
]
