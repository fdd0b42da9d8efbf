from keras_fsnn.models.feedback_networks import (
    ARCHITECTURES,
    alexnet_f,
    cifarnet_f,
    count_parameters,
    fsnn_fmnist,
    fsnn_mnist,
    fsnn_nmnist,
)

__all__ = ["ARCHITECTURES", "alexnet_f", "cifarnet_f", "count_parameters", "fsnn_fmnist", "fsnn_mnist", "fsnn_nmnist"]
