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
]
