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


def mpis_network(input_shape, num_classes, channels=(16, 32, 48), strides=(1, 2, 1), num_streams=2, fusion_layer=1,
                 normalization=None, name="mpis_network", **stream_options):
    """An MPIS classifier. `channels[j]`, `strides[j]`: layer j+1 of every stream;
    `stream_options` go to ImplicitStreams (time_steps, neuron, leak, threshold, dropout,
    solver, solver_steps, gradient, rates, output, seed)."""
    channels, strides = tuple(channels), tuple(strides)
    if len(channels) < 2 or len(strides) != len(channels):
        raise ValueError(f"Arguments `channels` and `strides` must have the same length >= 2; received "
                         f"channels={channels!r}, strides={strides!r}.")
    num_streams = validation.integer("num_streams", num_streams, minimum=1)
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
        fusion_layer=fusion_layer, name="streams", **stream_options)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        variance = [s**2 for s in std] if isinstance(std, (list, tuple)) else std**2
        x = keras.layers.Normalization(mean=mean, variance=variance, name="normalise")(x)
    rates = streams(x)
    logits = keras.layers.Dense(num_classes, name="readout")(keras.layers.Flatten(name="flatten")(rates))
    return keras.Model(inputs, logits, name=name)
