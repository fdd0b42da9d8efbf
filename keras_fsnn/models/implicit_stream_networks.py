"""MPIS networks (paper 003 §4.1, Fig. 1-2) built from `ImplicitStreams`.

`mpis_network` builds N streams of the same layer plan at resolutions 1, 1/2, 1/4, ...:
each stream's layer 1 is conv(c_1, stride s_1) -> batch norm of the input (stream 1) or of
zeros (the others), its FEB layers are conv(c_j, s_j) -> batch norm, its Trans is a
bias-free conv-transpose back to layer 1's shape, the streams are fused after
`fusion_layer` by a stride-2 conv (down) and nearest-neighbour up-sampling (up), and a
Dense readout classifies the last (smallest) stream's equilibrium rates.

The papers' zoo presets (`mpis_fmnist`, ...; the MPIS issue) build on this; it is also the
family of `keras_fsnn.tuner.HyperMPIS`.
"""

import math

import keras

from keras_fsnn import validation
from keras_fsnn.initializers import UnitNormUniform
from keras_fsnn.layers import ImplicitStreams


def _conv(filters, strides):
    return keras.Sequential([
        keras.layers.Conv2D(filters, 3, strides=strides, padding="same", kernel_initializer=UnitNormUniform()),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
    ])


def _analog(filters, kernel_size, strides, threshold, use_bias=True):
    """conv -> batch norm -> DBReLU(z) = clamp(z / V_th, 0, 1): the released code's analog
    stem and head layers (seed-code.md §4.2)."""
    return keras.Sequential([
        keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                            kernel_initializer=UnitNormUniform()),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
        keras.layers.Rescaling(1.0 / threshold),
        keras.layers.ReLU(max_value=1.0),
    ])


def mpis_network(input_shape, num_classes, channels=(16, 32, 48), strides=(1, 2, 1), num_streams=2, fusion_layer=1,
                 normalization=None, stem=(), head=False, crop=None, input_type="static", threshold=2.0,
                 name="mpis_network", **stream_options):
    """An MPIS classifier. `channels[j]`, `strides[j]`: layer j+1 of every stream;
    `stream_options` go to ImplicitStreams (time_steps, neuron, leak, dropout, solver,
    solver_steps, gradient, rates, output, seed).

    Options of the released code's topology (seed-code.md §4.2): `stem` = channels of
    analog conv -> BN -> DBReLU layers before the streams (the last one with stride 2);
    `head=True` (two streams): the readout sees DBReLU(BN(conv_s2(a_1))) + a_2, then a
    1x1 conv -> BN -> DBReLU, instead of the last stream's rates directly; `crop` pixels
    are cut from every border first (N-MNIST: 34 -> 32); `input_type="sequence"` takes
    (T, H, W, C) spike frames."""
    channels, strides = tuple(channels), tuple(strides)
    if len(channels) < 2 or len(strides) != len(channels):
        raise ValueError(f"Arguments `channels` and `strides` must have the same length >= 2; received "
                         f"channels={channels!r}, strides={strides!r}.")
    num_streams = validation.integer("num_streams", num_streams, minimum=1)
    if head and num_streams != 2:
        raise ValueError(f"Argument `head=True` (the released code's head) needs num_streams=2; received "
                         f"num_streams={num_streams!r}.")
    back = math.prod(strides[1:])

    def stream():
        return ([_conv(channels[0], strides[0])], [_conv(c, s) for c, s in zip(channels[1:], strides[1:])],
                keras.layers.Conv2DTranspose(channels[0], 3, strides=back, padding="same", use_bias=False,
                                             kernel_initializer=UnitNormUniform(axis=-2)))

    parts = [stream() for _ in range(num_streams)]
    fused_channels = channels[fusion_layer - 1] if fusion_layer <= len(channels) else channels[-1]
    streams = ImplicitStreams(
        inject=[p[0][0] for p in parts], stages=[p[1] for p in parts], transforms=[p[2] for p in parts],
        downsample=[keras.layers.Conv2D(fused_channels, 3, strides=2, padding="same") for _ in range(num_streams - 1)],
        upsample=[keras.layers.UpSampling2D(2) for _ in range(num_streams - 1)],
        fusion_layer=fusion_layer, threshold=threshold, input_type=input_type, return_all=bool(head), name="streams",
        **stream_options)
    sequence = input_type == "sequence"
    inputs = keras.Input(tuple(input_shape), name="frames" if sequence else "image")
    x = inputs
    if crop:
        cropping = keras.layers.Cropping2D(crop)
        x = keras.layers.TimeDistributed(cropping, name="crop")(x) if sequence else cropping(x)
    if normalization is not None:
        mean, std = normalization
        variance = [s**2 for s in std] if isinstance(std, (list, tuple)) else std**2
        x = keras.layers.Normalization(mean=mean, variance=variance, name="normalise")(x)
    for k, filters in enumerate(stem):
        x = _analog(filters, 3, 2 if k == len(stem) - 1 else 1, threshold)(x)
    rates = streams(x)
    if head:
        first, second = rates
        top = keras.layers.Add(name="head_fuse")([_analog(channels[-1], 3, 2, threshold)(first), second])
        rates = _analog(channels[-1], 1, 1, threshold, use_bias=False)(top)
    logits = keras.layers.Dense(num_classes, name="readout")(keras.layers.Flatten(name="flatten")(rates))
    return keras.Model(inputs, logits, name=name)


# ---------------------------------------------------------------- the paper's models

MNIST_NORMALISATION = (0.1307, 0.3081)
CIFAR_NORMALISATION = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def _options(time_steps, leak, dropout, solver, solver_steps, gradient, rates, simulation_dtype="float32",
             solver_tol=None):
    solve = {k: v for k, v in (("solver", solver), ("solver_steps", solver_steps), ("solver_tol", solver_tol))
             if v is not None}
    return dict(time_steps=time_steps, neuron="lif", leak=leak, dropout=dropout, gradient=gradient, rates=rates,
                simulation_dtype=simulation_dtype, **solve)


def mpis_fmnist(num_classes=10, time_steps=30, leak=0.95, dropout=0.2, solver=None, solver_steps=None,
                solver_tol=None, gradient="ide", rates="average", simulation_dtype="float32",
                name="mpis_fmnist"):
    """Fashion-MNIST MPIS, two streams of 16C3-32C3s-48C3 (paper 003 Table 1,
    "16C3-32C3-48C3-FC10"), fused after layer 1, with the released code's head; 100,682
    parameters. The paper states 133K but not the layout behind it; this one follows the
    released N-MNIST model's topology (seed-code.md §4.2). Paper: 93.14% at T = 30."""
    return mpis_network((28, 28, 1), num_classes, (16, 32, 48), (1, 2, 1), head=True,
                        normalization=MNIST_NORMALISATION, name=name,
                        **_options(time_steps, leak, dropout, solver, solver_steps, gradient, rates, simulation_dtype,
                                   solver_tol))


def mpis_nmnist(num_classes=10, time_steps=30, leak=0.95, dropout=0.2, solver=None, solver_steps=None,
                solver_tol=None, gradient="ide", rates="average", simulation_dtype="float32",
                name="mpis_nmnist"):
    """N-MNIST MPIS, two streams of 32C3-32C3s-64C3 on (T, 34, 34, 2) spike frames cropped
    to 32x32, as the released `MPIS_neuro`: 185,578 parameters (the paper's Table 1 says
    213K for this structure). Paper: 99.31% at T = 30."""
    return mpis_network((time_steps, 34, 34, 2), num_classes, (32, 32, 64), (1, 2, 1), head=True, crop=1,
                        input_type="sequence", name=name,
                        **_options(time_steps, leak, dropout, solver, solver_steps, gradient, rates, simulation_dtype,
                                   solver_tol))


def _mpis_cifar(channels, num_classes, time_steps, leak, dropout, solver, solver_steps, gradient, rates, name,
                simulation_dtype="float32", solver_tol=None):
    return mpis_network((32, 32, 3), num_classes, channels, (1, 1, 2), stem=(128, 128), head=True,
                        normalization=CIFAR_NORMALISATION, name=name,
                        **_options(time_steps, leak, dropout, solver, solver_steps, gradient, rates, simulation_dtype,
                                   solver_tol))


def mpis_cifar10_large(num_classes=10, time_steps=30, leak=0.999, dropout=0.2, solver=None, solver_steps=None,
                       solver_tol=None, gradient="ide", rates="average", simulation_dtype="float32",
                       name="mpis_cifar10_large"):
    """CIFAR MPIS as released (`MPIS_static`): analog stem 128C3-128C3s, two streams of
    256C3-512C3-1024C3s with ConvT Trans, fusion conv 256, head; 28,512,138 parameters
    (CIFAR-10) / 29,986,788 (CIFAR-100): the paper's 28.5M / 30.0M models (Table 3:
    93.27% / 74.40% at T = 30)."""
    return _mpis_cifar((256, 512, 1024), num_classes, time_steps, leak, dropout, solver, solver_steps, gradient,
                       rates, name, simulation_dtype, solver_tol)


def mpis_cifar100_large(num_classes=100, name="mpis_cifar100_large", **kwargs):
    """The 30.0M CIFAR-100 model of paper 003 Table 3 (29,986,788 parameters)."""
    return mpis_cifar10_large(num_classes=num_classes, name=name, **kwargs)


def mpis_cifar10(num_classes=10, time_steps=30, leak=0.999, dropout=0.2, solver=None, solver_steps=None,
                 solver_tol=None, gradient="ide", rates="average", simulation_dtype="float32",
                 name="mpis_cifar10"):
    """The 11.8M CIFAR-10 MPIS of paper 003 Table 3 (92.79% at T = 30). Neither the paper
    nor the released code gives its layout; this keeps the released topology with streams
    of 320C3-384C3-448C3s: 11,787,658 parameters."""
    return _mpis_cifar((320, 384, 448), num_classes, time_steps, leak, dropout, solver, solver_steps, gradient,
                       rates, name, simulation_dtype, solver_tol)


def mpis_cifar100(num_classes=100, time_steps=30, leak=0.999, dropout=0.2, solver=None, solver_steps=None,
                  solver_tol=None, gradient="ide", rates="average", simulation_dtype="float32",
                  name="mpis_cifar100"):
    """The 14.8M CIFAR-100 MPIS of paper 003 Table 3 (73.19% at T = 30); layout not
    published, ours: streams of 320C3-384C3-544C3s, 14,756,356 parameters."""
    return _mpis_cifar((320, 384, 544), num_classes, time_steps, leak, dropout, solver, solver_steps, gradient,
                       rates, name, simulation_dtype, solver_tol)


MPIS_ARCHITECTURES = {
    "mpis_fmnist": mpis_fmnist,
    "mpis_nmnist": mpis_nmnist,
    "mpis_cifar10": mpis_cifar10,
    "mpis_cifar100": mpis_cifar100,
    "mpis_cifar10_large": mpis_cifar10_large,
    "mpis_cifar100_large": mpis_cifar100_large,
}
