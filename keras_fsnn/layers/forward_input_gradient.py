"""Stride-1 convolutions whose input gradient is itself a forward convolution.

The adjoint solve applies J^T once per iteration inside a while loop, and for a conv
stage J^T contains the conv's input gradient. Autodiff expresses that gradient as a
convolution with the kernel's in/out axes swapped (dim_labels `b01f_01oi`). XLA's CPU
compiler makes such a convolution canonical (a transposed copy of the kernel, then its
Eigen kernel) at the top level of a program but not inside a while loop, where it falls
back to a naive loop nest: 160 ms instead of 23 ms for F64C5's 5x5, 64->64 conv on a
(128, 14, 14, 64) batch, under JAX and under TensorFlow's XLA alike
(benchmarks/xla_conv_gradient.py). Writing the gradient as what it is for stride 1,

    dx = conv(pad(dy, (k - 1 - p_before, k - 1 - p_after)), flip(W)^T, "valid"),

W flipped along its spatial axes and its in/out axes swapped (a loop invariant), gives
every backend a forward convolution it runs at full speed. The kernel gradient is the
backend's own. Strided, dilated and grouped convs, and Conv*Transpose (whose input gradient
already is a forward conv), keep Keras's gradient.
"""

import types

import keras
from keras import ops

from keras_fsnn import backend

_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def eligible(layer):
    """Whether `layer` is a plain stride-1, undilated, ungrouped Conv1D/2D/3D, the case the
    forward-conv input gradient covers exactly."""
    return (isinstance(layer, _CONVOLUTIONS)
            and all(s == 1 for s in layer.strides) and all(d == 1 for d in layer.dilation_rate)
            and layer.groups == 1 and layer.padding in ("valid", "same"))


def _spatial_pads(kernel_size, padding):
    """(before, after) zero padding of each spatial axis in the forward conv: none for
    "valid"; for "same" at stride 1, k - 1 in all with the extra one after (XLA, oneDNN and
    Keras agree)."""
    if padding == "valid":
        return [(0, 0) for _ in kernel_size]
    return [((k - 1) // 2, k // 2) for k in kernel_size]


def conv(inputs, kernel, padding, data_format):
    """`ops.conv(inputs, kernel, strides=1, padding=padding, data_format=data_format)` with
    the input gradient computed as a forward convolution (see the module docstring)."""
    rank = len(kernel.shape) - 2
    kernel_size = tuple(kernel.shape[:rank])
    spatial = list(range(1, rank + 1)) if data_format == "channels_last" else list(range(2, rank + 2))
    gradient_pads = [(k - 1 - before, k - 1 - after)
                     for k, (before, after) in zip(kernel_size, _spatial_pads(kernel_size, padding))]

    def forward(x, w):
        return ops.conv(x, w, strides=1, padding=padding, data_format=data_format)

    @ops.custom_gradient
    def convolve(x, w):
        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            flipped = ops.swapaxes(ops.flip(w, axis=tuple(range(rank))), -1, -2)
            if all(before == after for before, after in gradient_pads) and padding == "same":
                dx = ops.conv(upstream, flipped, strides=1, padding="same", data_format=data_format)
            else:
                widths = [(0, 0)] * (rank + 2)
                for axis, pads in zip(spatial, gradient_pads):
                    widths[axis] = pads
                dx = ops.conv(ops.pad(upstream, widths), flipped, strides=1, padding="valid",
                              data_format=data_format)
            _, kernel_pullback = backend.vjp(lambda w: forward(x, w), w)
            return dx, kernel_pullback(upstream)

        return forward(x, w), gradient

    # a variable (a stage called outside a stateless call) is read first: its gradient
    # flows through the read, and the custom gradient sees plain tensors
    kernel = backend.read(kernel) if isinstance(kernel, keras.Variable) else ops.convert_to_tensor(kernel)
    return convolve(ops.convert_to_tensor(inputs), kernel)


def use_forward_input_gradients(stage):
    """Make the eligible convolutions inside `stage` (a layer, possibly a Sequential)
    differentiate their input with `conv`. Idempotent, and permanent for those layers: their
    values and gradients are Keras's own (tests/test_forward_input_gradient.py), only the
    form of the input gradient changes. (Installing and removing it around each call is not
    safe: a distribution strategy's replicas call the same layers from several threads.)"""
    for layer in stage._flatten_layers(include_self=True, recursive=True):
        if eligible(layer) and "convolution_op" not in vars(layer):
            object.__setattr__(layer, "convolution_op", types.MethodType(_convolution_op, layer))


def _convolution_op(layer, inputs, kernel):
    return conv(inputs, kernel, layer.padding, layer.data_format)
