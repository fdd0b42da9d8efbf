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


def count_parameters(model):
    """Trainable weights except spectral-norm alphas: the papers' parameter counts."""
    alphas = {id(layer.alpha) for layer in model._flatten_layers(include_self=True, recursive=True)
              if isinstance(layer, SpectralNormRestriction)}
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights if id(w) not in alphas))


def _conv_stage(filters, kernel_size, strides, padding, batch_norm=True, use_bias=True):
    layers = []
    if padding:
        layers.append(keras.layers.ZeroPadding2D(padding))
    layers.append(keras.layers.Conv2D(filters, kernel_size, strides=strides, use_bias=use_bias,
                                      kernel_initializer=UnitNormUniform()))
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    return keras.Sequential(layers)


def _dense_stage(units, batch_norm=True):
    layers = [keras.layers.Dense(units, kernel_initializer=UnitNormUniform())]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
    return keras.Sequential(layers)


def _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, default_leak,
                   bn_statistics="paper"):
    if neuron == "lif" and leak is None:
        leak = default_leak
    return dict(time_steps=time_steps, neuron=neuron, leak=leak, threshold=threshold, dropout=dropout,
                solver=solver, solver_steps=solver_steps, gradient=gradient, bn_statistics=bn_statistics,
                spectral_norm=True, norm_bound=1.0)


def _classifier(name, inputs, normalised, block, num_classes):
    rates = block(normalised)
    logits = keras.layers.Dense(num_classes, name="readout")(keras.layers.Flatten(name="flatten")(rates))
    return keras.Model(inputs, logits, name=name)


def fsnn_mnist(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
               solver="broyden", solver_steps=30, gradient="ide", bn_statistics="paper", name="fsnn_mnist"):
    """MNIST 64C5s (F64C5): conv 1->64 5x5 stride 2 (14x14x64 neurons) with a 64->64 5x5
    conv feedback; 229,642 parameters (paper 000 Table 1: 229K). Paper: T = 30, LIF 0.95."""
    inputs = keras.Input((28, 28, 1), name="image")
    normalised = keras.layers.Normalization(mean=MNIST_MEAN, variance=MNIST_STD**2, name="normalise")(inputs)
    block = FeedbackSpikingBlock(
        forward=[_conv_stage(64, 5, 2, 2)],
        feedback=keras.layers.Conv2D(64, 5, padding="same", use_bias=False, kernel_initializer=UnitNormUniform()),
        name="fsnn", **_block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics))
    return _classifier(name, inputs, normalised, block, num_classes)


def fsnn_fmnist(num_classes=10, time_steps=5, neuron="if", leak=None, threshold=2.0, dropout=0.2,
                solver="broyden", solver_steps=30, gradient="ide", bn_statistics="paper", name="fsnn_fmnist"):
    """Fashion-MNIST 400 (F400): dense 784->400 with a 400->400 feedback; 478,810
    parameters (paper 000 Table 2: 478K). Paper: T = 5. Uses the MNIST normalisation
    constants, as the paper and the released code do."""
    inputs = keras.Input((28, 28, 1), name="image")
    normalised = keras.layers.Normalization(mean=MNIST_MEAN, variance=MNIST_STD**2, name="normalise")(inputs)
    flat = keras.layers.Flatten(name="flatten_input")(normalised)
    block = FeedbackSpikingBlock(
        forward=[_dense_stage(400)],
        feedback=keras.layers.Dense(400, use_bias=False, kernel_initializer=UnitNormUniform()),
        name="fsnn", **_block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics))
    return _classifier(name, inputs, flat, block, num_classes)


def fsnn_nmnist(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
                solver="broyden", solver_steps=30, gradient="ide", bn_statistics="paper", name="fsnn_nmnist"):
    """N-MNIST 64C5s (F64C5) on (T, 34, 34, 2) spike frames, padding 2 (17x17x64 neurons);
    290,762 parameters, the paper's 291K. The released script pads by 1 (269,642)."""
    inputs = keras.Input((time_steps, 34, 34, 2), name="frames")
    block = FeedbackSpikingBlock(
        forward=[_conv_stage(64, 5, 2, 2)],
        feedback=keras.layers.Conv2D(64, 5, padding="same", use_bias=False, kernel_initializer=UnitNormUniform()),
        input_type="sequence", name="fsnn",
        **_block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.95, bn_statistics))
    return _classifier(name, inputs, inputs, block, num_classes)


def _multilayer_cifar(name, channels, num_classes, options):
    """c1 C3s - c2 C3 - c3 C3s - c4 C3 - c5 C3 with a conv-transpose feedback c5 -> c1
    (F{c1}C3u): 32x32 -> 16x16 (layers 1-2) -> 8x8 (layers 3-5) -> 16x16 feedback."""
    c1, c2, c3, c4, c5 = channels
    inputs = keras.Input((32, 32, 3), name="image")
    normalised = keras.layers.Normalization(
        mean=CIFAR_MEAN, variance=[s**2 for s in CIFAR_STD], name="normalise")(inputs)
    block = FeedbackSpikingBlock(
        forward=[
            _conv_stage(c1, 3, 2, 1),
            _conv_stage(c2, 3, 1, 1),
            _conv_stage(c3, 3, 2, 1),
            _conv_stage(c4, 3, 1, 1),
            _conv_stage(c5, 3, 1, 1),
        ],
        feedback=keras.layers.Conv2DTranspose(c1, 3, strides=2, padding="same", use_bias=False,
                                              kernel_initializer=UnitNormUniform(axis=-2)),
        name="fsnn", **options)
    return _classifier(name, inputs, normalised, block, num_classes)


def alexnet_f(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
              solver="broyden", solver_steps=30, gradient="ide", bn_statistics="paper", name="alexnet_f"):
    """AlexNet-F, 96C3s-256C3-384C3s-384C3-256C3 (F96C3u): 3,709,514 parameters for
    CIFAR-10, 5,184,164 for CIFAR-100 (paper 000 Table 3: 3.7M / 5.2M). Paper: T = 30 or
    100, LIF 0.99."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.99, bn_statistics)
    return _multilayer_cifar(name, (96, 256, 384, 384, 256), num_classes, options)


def cifarnet_f(num_classes=10, time_steps=30, neuron="if", leak=None, threshold=2.0, dropout=0.2,
               solver="broyden", solver_steps=30, gradient="ide", bn_statistics="paper", name="cifarnet_f"):
    """CIFARNet-F, 128C3s-256C3-512C3s-1024C3-512C3 (F128C3u): 11,840,010 parameters for
    CIFAR-10, 14,789,220 for CIFAR-100 (paper 000 Table 3: 11.8M / 14.8M)."""
    options = _block_options(time_steps, neuron, leak, threshold, dropout, solver, solver_steps, gradient, 0.99, bn_statistics)
    return _multilayer_cifar(name, (128, 256, 512, 1024, 512), num_classes, options)


ARCHITECTURES = {
    "fsnn_mnist": fsnn_mnist,
    "fsnn_fmnist": fsnn_fmnist,
    "fsnn_nmnist": fsnn_nmnist,
    "alexnet_f": alexnet_f,
    "cifarnet_f": cifarnet_f,
}
