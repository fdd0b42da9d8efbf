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
from keras_fsnn.models.implicit_stream_networks import mpis_network
from keras_fsnn.models.spide_networks import (
    SPIDE_ARCHITECTURES,
    spide_alexnet_f,
    spide_cifarnet_f,
    spide_lenet,
    spide_mnist,
)

ARCHITECTURES = {**ARCHITECTURES, **SPIDE_ARCHITECTURES}

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
    "mpis_network",
    "spide_alexnet_f",
    "spide_cifarnet_f",
    "spide_lenet",
    "spide_mnist",
]
