"""The papers' feedback spiking networks as Keras models (paper 000 Tables 1-3 and their
footnotes; seed-code.md §2.3 for the exact layer settings of the released code).

Every model takes images as floats in [0, 1] in the dataset's shape ((28, 28, 1),
(32, 32, 3); N-MNIST: (T, 34, 34, 2) spike frames) and normalises them with a
`Normalization` layer inside the model, so a user never handles dataset constants. The
readout is a Dense layer on the flattened last-layer (weighted) average firing rate.

Layer settings follow the released code: conv -> batch norm (momentum 0.9 = PyTorch's 0.1,
epsilon 1e-5) for every forward stage, bias on forward convs, a bias-free feedback with the
spectral-norm restriction (c = 1), "uniform then normalise per output unit" kernels
(`UnitNormUniform`); strided convs pad explicitly like PyTorch's padding=(k-1)//2.

Parameter counts follow the papers' convention, `count_parameters`: every trainable
weight (batch-norm gamma/beta included) except the spectral-norm scale alpha; batch-norm
moving statistics, power-iteration vectors and the normalisation constants are not
trainable and not counted.
"""

import keras

from keras_fsnn.initializers import UnitNormUniform
from keras_fsnn.layers import FeedbackSpikingBlock, SpectralNormRestriction

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # used for Fashion-MNIST too (paper 000 F.3.1)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
ALEXNET_F_CHANNELS = (96, 256, 384, 384, 256)
CIFARNET_F_CHANNELS = (128, 256, 512, 1024, 512)


def count_parameters(model):
    """Trainable weights except spectral-norm alphas: the papers' parameter counts."""
    alphas = {id(layer.alpha) for layer in model._flatten_layers(include_self=True, recursive=True)
              if isinstance(layer, SpectralNormRestriction)}
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights if id(w) not in alphas))


def _conv_stage(filters, kernel_size, strides, padding, batch_norm=True, use_bias=True, initializer=None):
    layers = []
    if padding:
        layers.append(keras.layers.ZeroPadding2D(padding))
    layers.append(keras.layers.Conv2D(filters, kernel_size, strides=strides, use_bias=use_bias,
                                      kernel_initializer=initializer or UnitNormUniform()))
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    return keras.Sequential(layers)


def _dense_stage(units, batch_norm=True):
    layers = [keras.layers.Dense(units, kernel_initializer=UnitNormUniform())]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    return keras.Sequential(layers)


def _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, default_leak,
                   bn_statistics="paper", simulation_dtype="float32", solver_tol=None):
    if neuron == "lif" and leak is None:
        leak = default_leak
    # the solver options are the implicit gradient's: given only where it takes them
    solve = {k: v for k, v in (("solver", solver), ("solver_steps", solver_steps), ("solver_tol", solver_tol))
             if v is not None}
    return dict(time_steps=time_steps, neuron=neuron, leak=leak, threshold=threshold, dropout=dropout,
                gradient=gradient, bn_statistics=bn_statistics, spectral_norm=True, norm_bound=1.0,
                simulation_dtype=simulation_dtype, **solve)


def _normalise(inputs, normalization):
    """The dataset normalisation as a layer: `normalization` = (mean, std), per channel or
    scalar, or None for inputs that need none."""
    if normalization is None:
        return inputs
    mean, std = normalization
    variance = [s**2 for s in std] if isinstance(std, (list, tuple)) else std**2
    return keras.layers.Normalization(mean=mean, variance=variance, name="normalise")(inputs)


def _classifier(name, inputs, normalised, block, num_classes):
    rates = block(normalised)
    logits = keras.layers.Dense(num_classes, name="readout")(keras.layers.Flatten(name="flatten")(rates))
    return keras.Model(inputs, logits, name=name)


# ---------------------------------------------------------------- general builders


def feedback_dense_network(input_shape, num_classes, units, normalization=None, name="feedback_dense_network",
                           **block_options):
    """Input -> flatten -> one dense layer of `units` spiking neurons with a dense feedback
    (the F400 shape) -> linear readout of the rates. `block_options` go to the
    FeedbackSpikingBlock (time_steps, neuron, leak, threshold, dropout, solver, ...)."""
    inputs = keras.Input(tuple(input_shape), name="image")
    flat = keras.layers.Flatten(name="flatten_input")(_normalise(inputs, normalization))
    block = FeedbackSpikingBlock(
        forward=[_dense_stage(units)],
        feedback=keras.layers.Dense(units, use_bias=False, kernel_initializer=UnitNormUniform()),
        name="fsnn", **block_options)
    return _classifier(name, inputs, flat, block, num_classes)


def feedback_conv_network(input_shape, num_classes, filters, kernel_size=5, strides=2, normalization=None,
                          input_type="static", name="feedback_conv_network", **block_options):
    """Input -> one conv layer of spiking neurons (`filters` channels, `kernel_size`,
    `strides`, PyTorch-style padding (k-1)//2) with a same-size conv feedback (the F64C5
    shape) -> linear readout of the rates. With input_type="sequence" the input is
    (T, H, W, C) spike frames."""
    inputs = keras.Input(tuple(input_shape), name="frames" if input_type == "sequence" else "image")
    normalised = _normalise(inputs, normalization)
    block = FeedbackSpikingBlock(
        forward=[_conv_stage(filters, kernel_size, strides, (kernel_size - 1) // 2)],
        feedback=keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                                     kernel_initializer=UnitNormUniform()),
        input_type=input_type, name="fsnn", **block_options)
    return _classifier(name, inputs, normalised, block, num_classes)


def feedback_multilayer_network(input_shape, num_classes, channels, normalization=None,
                                name="feedback_multilayer_network", batch_norm=True, feedback_initializer=None,
                                **block_options):
    """c1 C3s - c2 C3 - c3 C3s - c4 C3 - c5 C3 with a conv-transpose feedback c5 -> c1
    (F{c1}C3u, the AlexNet-F / CIFARNet-F shape): H x W -> H/2 (layers 1-2) -> H/4
    (layers 3-5) -> H/2 feedback. `channels` = (c1, ..., c5); `batch_norm=False` drops the
    batch norms (SPIDE)."""
    if len(channels) != 5:
        raise ValueError(f"Argument `channels` must hold 5 channel counts (c1..c5); received channels={channels!r}.")
    c1, c2, c3, c4, c5 = channels
    inputs = keras.Input(tuple(input_shape), name="image")
    normalised = _normalise(inputs, normalization)
    block = FeedbackSpikingBlock(
        forward=[
            _conv_stage(c1, 3, 2, 1, batch_norm),
            _conv_stage(c2, 3, 1, 1, batch_norm),
            _conv_stage(c3, 3, 2, 1, batch_norm),
            _conv_stage(c4, 3, 1, 1, batch_norm),
            _conv_stage(c5, 3, 1, 1, batch_norm),
        ],
        feedback=keras.layers.Conv2DTranspose(c1, 3, strides=2, padding="same", use_bias=False,
                                              kernel_initializer=feedback_initializer or UnitNormUniform(axis=-2)),
        name="fsnn", **block_options)
    return _classifier(name, inputs, normalised, block, num_classes)


# ---------------------------------------------------------------- the papers' models


def fsnn_mnist(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
               solver=None, solver_steps=None, solver_tol=None, gradient="ide", bn_statistics="paper",
               simulation_dtype="float32", name="fsnn_mnist"):
    """MNIST 64C5s (F64C5): conv 1->64 5x5 stride 2 (14x14x64 neurons) with a 64->64 5x5
    conv feedback; 229,642 parameters (paper 000 Table 1: 229K). Paper: T = 30, IF
    (99.49%) or LIF 0.95 (99.53%)."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics,
                             simulation_dtype, solver_tol)
    return feedback_conv_network((28, 28, 1), num_classes, 64, 5, 2, normalization=(MNIST_MEAN, MNIST_STD),
                                 name=name, **options)


def fsnn_fmnist(num_classes=10, time_steps=5, neuron="if", leak=None, threshold=2.0, dropout=0.2,
                solver=None, solver_steps=None, solver_tol=None, gradient="ide", bn_statistics="paper",
               simulation_dtype="float32", name="fsnn_fmnist"):
    """Fashion-MNIST 400 (F400): dense 784->400 with a 400->400 feedback; 478,810
    parameters (paper 000 Table 1: 478K). Paper: T = 5. Uses the MNIST normalisation
    constants, as the paper and the released code do."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics,
                             simulation_dtype, solver_tol)
    return feedback_dense_network((28, 28, 1), num_classes, 400, normalization=(MNIST_MEAN, MNIST_STD),
                                  name=name, **options)


def fsnn_nmnist(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
                solver="fixed_point", solver_steps=None, solver_tol=None, gradient="ide", bn_statistics="paper",
               simulation_dtype="float32", name="fsnn_nmnist"):
    """N-MNIST 64C5s (F64C5) on (T, 34, 34, 2) spike frames, padding 2 (17x17x64 neurons);
    290,762 parameters, the paper's 291K. The released script pads by 1 (269,642). The
    adjoint is solved by 30 fixed-point iterations, as the paper trains it (F.3.2)."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics,
                             simulation_dtype, solver_tol)
    return feedback_conv_network((time_steps, 34, 34, 2), num_classes, 64, 5, 2, input_type="sequence",
                                 name=name, **options)


def alexnet_f(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
              solver=None, solver_steps=None, solver_tol=None, gradient="ide", bn_statistics="paper",
               simulation_dtype="float32", name="alexnet_f"):
    """AlexNet-F, 96C3s-256C3-384C3s-384C3-256C3 (F96C3u): 3,709,514 parameters for
    CIFAR-10, 5,184,164 for CIFAR-100 (paper 000 Table 3: 3.7M / 5.2M). Paper: T = 30 or
    100, LIF 0.99."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.99, bn_statistics,
                             simulation_dtype, solver_tol)
    return feedback_multilayer_network((32, 32, 3), num_classes, ALEXNET_F_CHANNELS, (CIFAR_MEAN, CIFAR_STD),
                                       name=name, **options)


def cifarnet_f(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
               solver=None, solver_steps=None, solver_tol=None, gradient="ide", bn_statistics="paper",
               simulation_dtype="float32", name="cifarnet_f"):
    """CIFARNet-F, 128C3s-256C3-512C3s-1024C3-512C3 (F128C3u): 11,840,010 parameters for
    CIFAR-10, 14,789,220 for CIFAR-100 (paper 000 Table 3: 11.8M / 14.8M)."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.99, bn_statistics,
                             simulation_dtype, solver_tol)
    return feedback_multilayer_network((32, 32, 3), num_classes, CIFARNET_F_CHANNELS, (CIFAR_MEAN, CIFAR_STD),
                                       name=name, **options)


ARCHITECTURES = {
    "fsnn_mnist": fsnn_mnist,
    "fsnn_fmnist": fsnn_fmnist,
    "fsnn_nmnist": fsnn_nmnist,
    "alexnet_f": alexnet_f,
    "cifarnet_f": cifarnet_f,
}
