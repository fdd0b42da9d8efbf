"""The SPIDE paper's networks (paper 002 Table 3, appendix D.3; seed-code.md §3.2, §3.6).

All are trained with gradient="spide": forward IF neurons with V_th = 1, u_rest = -V_th
(the reset subtracts 2), backward ternary neurons with V_th^b = 0.5, u_rest^b = -0.5, no
batch norm, and the feedback restricted by the Hutchinson Frobenius-norm estimate with
c = 2. The input convention is the zoo's: floats in [0, 1], normalisation inside.
"""

import keras

from keras_fsnn.initializers import UnitNormUniform
from keras_fsnn.layers import FeedbackSpikingBlock
from keras_fsnn.models.feedback_networks import (
    ALEXNET_F_CHANNELS,
    CIFAR_MEAN,
    CIFAR_STD,
    CIFARNET_F_CHANNELS,
    MNIST_MEAN,
    MNIST_STD,
    _classifier,
    _conv_stage,
    _normalise,
    feedback_multilayer_network,
)


def kaiming_normal():
    """PyTorch's kaiming_normal_ (fan-in, gain sqrt 2, untruncated), the MNIST models' init."""
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _spide_options(time_steps, threshold, backward_time_steps, backward_scale, dropout, norm_bound, feedback,
                   gradient="spide", simulation_dtype="float32"):
    options = dict(time_steps=time_steps, neuron="if", threshold=threshold, resting_potential=-threshold,
                   dropout=dropout, gradient=gradient, spectral_norm=False, frobenius_norm=feedback, norm_bound=norm_bound,
                   simulation_dtype=simulation_dtype)
    if gradient == "spide":
        options.update(backward_time_steps=backward_time_steps, backward_threshold=0.5, backward_resting_potential=-0.5,
                       backward_scale=backward_scale)
    return options


def spide_mnist(num_classes=10, time_steps=30, backward_time_steps=100, backward_scale=100.0, threshold=1.0,
                dropout=0.2, norm_bound=2.0, gradient="spide", simulation_dtype="float32", name="spide_mnist"):
    """MNIST 64C5s-64C5s-64C5 (F64C3u): 28x28 -> 14x14x64 -> 7x7x64 -> 7x7x64, with a
    64->64 3x3 stride-2 conv-transpose feedback from layer 3 to layer 1; 274,826 parameters
    (paper 002 Table 3: 275K). Paper: T_F = 30, T_B = 100, loss scale 100, 99.34%.
    `gradient="ide"` trains the same network by the implicit solve instead (a comparison;
    the backward_* arguments are then unused)."""
    inputs = keras.Input((28, 28, 1), name="image")
    normalised = _normalise(inputs, (MNIST_MEAN, MNIST_STD))
    conv = lambda strides: _conv_stage(64, 5, strides, 2, batch_norm=False, initializer=kaiming_normal())  # noqa: E731
    block = FeedbackSpikingBlock(
        forward=[conv(2), conv(2), conv(1)],
        feedback=keras.layers.Conv2DTranspose(64, 3, strides=2, padding="same", use_bias=False,
                                              kernel_initializer=kaiming_normal()),
        name="fsnn", **_spide_options(time_steps, threshold, backward_time_steps, backward_scale, dropout,
                                      norm_bound, True, gradient, simulation_dtype))
    return _classifier(name, inputs, normalised, block, num_classes)


def spide_lenet(num_classes=10, time_steps=30, backward_time_steps=100, backward_scale=100.0, threshold=0.5,
                dropout=0.5, simulation_dtype="float32", name="spide_lenet"):
    """The degraded feed-forward LeNet 15C5-P2-40C5-P2-300 (no feedback): conv 15 5x5 ->
    spiking 2x2 average pool -> conv 40 5x5 -> spiking pool -> dense 300, every stage a
    spiking layer; variational dropout only on the dense layer; 606,740 parameters (paper
    002 Table 3: 607K). Paper: V_th = 0.5, u_rest = -0.5 (the released code: 1 / -1),
    99.44%."""
    inputs = keras.Input((28, 28, 1), name="image")
    normalised = _normalise(inputs, (MNIST_MEAN, MNIST_STD))
    conv = lambda filters: keras.layers.Conv2D(filters, 5, padding="same", kernel_initializer=kaiming_normal())  # noqa: E731
    dense = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(300, kernel_initializer=kaiming_normal())])
    block = FeedbackSpikingBlock(
        forward=[conv(15), keras.layers.AveragePooling2D(2), conv(40), keras.layers.AveragePooling2D(2), dense],
        feedback=None,
        name="fsnn", **_spide_options(time_steps, threshold, backward_time_steps, backward_scale,
                                      [0.0, 0.0, 0.0, 0.0, dropout], 2.0, False,
                                      simulation_dtype=simulation_dtype))
    return _classifier(name, inputs, normalised, block, num_classes)


def _spide_cifar(channels, num_classes, time_steps, backward_time_steps, backward_scale, dropout, feedback_scale,
                 name, simulation_dtype="float32"):
    options = _spide_options(time_steps, 1.0, backward_time_steps, backward_scale, dropout, 2.0, True,
                             simulation_dtype=simulation_dtype)
    return feedback_multilayer_network((32, 32, 3), num_classes, channels, (CIFAR_MEAN, CIFAR_STD), name=name,
                                       batch_norm=False, feedback_initializer=UnitNormUniform(axis=-2, scale=feedback_scale),
                                       **options)


def spide_alexnet_f(num_classes=10, time_steps=30, backward_time_steps=250, backward_scale=400.0, dropout=0.2,
                    feedback_scale=1.0, simulation_dtype="float32", name="spide_alexnet_f"):
    """AlexNet-F without batch norm, 96C3s-256C3-384C3s-384C3-256C3 (F96C3u): 3,706,762
    parameters for CIFAR-10, 5,181,412 for CIFAR-100. Paper 002: T_B = 250, loss scale 400
    (CIFAR-10), 89.61%. `feedback_scale=0.1` reproduces the released code's x0.1 on the
    feedback's initial weights (not in the paper)."""
    return _spide_cifar(ALEXNET_F_CHANNELS, num_classes, time_steps, backward_time_steps, backward_scale, dropout,
                        feedback_scale, name, simulation_dtype)


def spide_cifarnet_f(num_classes=10, time_steps=30, backward_time_steps=250, backward_scale=400.0, dropout=0.25,
                     feedback_scale=1.0, simulation_dtype="float32", name="spide_cifarnet_f"):
    """CIFARNet-F without batch norm, 128C3s-256C3-512C3s-1024C3-512C3 (F128C3u):
    11,835,146 parameters for CIFAR-10, 14,784,356 for CIFAR-100. Paper 002: T_B = 250,
    loss scale 400 (CIFAR-10) / 500 (CIFAR-100), 89.94% / 64.00%."""
    return _spide_cifar(CIFARNET_F_CHANNELS, num_classes, time_steps, backward_time_steps, backward_scale, dropout,
                        feedback_scale, name, simulation_dtype)


SPIDE_ARCHITECTURES = {
    "spide_mnist": spide_mnist,
    "spide_lenet": spide_lenet,
    "spide_alexnet_f": spide_alexnet_f,
    "spide_cifarnet_f": spide_cifarnet_f,
}
