"""Convolutions whose input gradient is itself made of forward convolutions.

The adjoint solve applies J^T once per iteration inside a while loop, and for a conv
stage J^T contains the conv's input gradient. Autodiff expresses that gradient as a
convolution with the kernel's in/out axes swapped (dim_labels `b01f_01oi`), and for a
strided conv also with a dilated input. XLA's CPU compiler makes the first canonical (a
transposed copy of the kernel, then its Eigen kernel) at the top level of a program but
not inside a while loop, where it falls back to a naive loop nest, and the dilated form
is slow everywhere: 156 ms instead of 23 ms for F64C5's 5x5, 64->64 conv on a
(128, 14, 14, 64) batch, and 41 ms instead of 7 ms for a 3x3 stride-2 256->256 conv on a
(32, 16, 16, 256) batch, under JAX and under TensorFlow's XLA alike
(benchmarks/xla_conv_gradient.py; TensorFlow's graph mode is as fast either way). Writing
the gradient as what it is,

    stride 1:  dx = conv(pad(dy, (k - 1 - p_before, k - 1 - p_after)), flip(W)^T, "valid"),
    stride s:  dx[s i + a] = (conv of dy with the taps t = a + p + s d of flip(W)^T)[i],

one stride-1 convolution per output phase a, interleaved (`_input_gradient`; at stride 1
the first formula is its one phase; the phases' kernels are cut once per forward call),
gives every backend forward convolutions it runs at full speed, with no multiply-add the
gradient does not need. The kernel gradient is the backend's own. Dilated and grouped
convs, and Conv*Transpose, keep Keras's gradient.
"""

import itertools
import types

import keras
from keras import ops

from keras_fsnn import backend

_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def eligible(layer):
    """Whether `layer` is an undilated, ungrouped Conv1D/2D/3D with "valid" or "same"
    padding (any strides), the case the forward-conv input gradient covers exactly."""
    return (isinstance(layer, _CONVOLUTIONS) and all(d == 1 for d in layer.dilation_rate)
            and layer.groups == 1 and layer.padding in ("valid", "same"))


def conv(inputs, kernel, padding, data_format, strides=1):
    """`ops.conv(inputs, kernel, strides, padding, data_format)` with the input gradient
    computed by forward convolutions (see the module docstring)."""
    rank = len(kernel.shape) - 2
    strides = (strides,) * rank if isinstance(strides, int) else tuple(strides)

    def forward(x, w):
        return ops.conv(x, w, strides=strides, padding=padding, data_format=data_format)

    @ops.custom_gradient
    def convolve(x, w):
        y = forward(x, w)
        # the per-phase kernels are made here, once, not in every pullback (the adjoint solve
        # pulls back through this conv once per iteration); unused, they are pruned
        input_gradient = _input_gradient(w, tuple(x.shape), tuple(y.shape), strides, padding, data_format)

        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            _, kernel_pullback = backend.vjp(lambda w: forward(x, w), w)
            return input_gradient(upstream), kernel_pullback(upstream)

        return y, gradient

    # a variable (a stage called outside a stateless call) is read first: its gradient
    # flows through the read, and the custom gradient sees plain tensors
    kernel = backend.read(kernel) if isinstance(kernel, keras.Variable) else ops.convert_to_tensor(kernel)
    return convolve(ops.convert_to_tensor(inputs), kernel)


def _input_gradient(w, input_shape, output_shape, strides, padding, data_format):
    """The input gradient dy -> dx of a conv with kernel `w`, as one stride-1 conv per
    output phase; the phases' kernels are cut from `w` here, once.

    Along an axis of input length n, kernel k, stride s and leading pad p, input position
    s i + a (phase a = 0..s-1) receives dy[i - d] w[t] from the taps t = a + p + s d; so
    phase a is a stride-1 correlation of dy with those taps (reversed, in/out swapped), and
    the phases interleave into dx. Every multiply-add is one the gradient needs (no zeros
    inserted, unlike a transposed conv). At stride 1 there is one phase: the conv of the
    padded dy with the flipped kernel."""
    rank = len(w.shape) - 2
    channels_first = data_format == "channels_first"
    if channels_first:
        input_shape = (input_shape[0],) + tuple(input_shape[2:]) + (input_shape[1],)
        output_shape = (output_shape[0],) + tuple(output_shape[2:]) + (output_shape[1],)
    sizes = tuple(input_shape[1:-1])
    kernel_size = tuple(w.shape[:rank])
    outputs = tuple(output_shape[1:-1])
    leading = [0 if padding == "valid" else max((m - 1) * s + k - n, 0) // 2
               for n, k, s, m in zip(sizes, kernel_size, strides, outputs)]
    lengths = [-(-n // s) for n, s in zip(sizes, strides)]  # every phase padded to ceil(n / s)
    swapped = ops.swapaxes(w, -1, -2)

    def plan(offsets):
        """Phase `offsets`: (the pad widths and window of dy, the phase's kernel), or None
        where no tap reaches the phase (a kernel smaller than the stride)."""
        taps, widths, starts = [], [(0, 0)], []
        for a, n, k, s, p, m, length in zip(offsets, sizes, kernel_size, strides, leading, outputs, lengths):
            axis_taps = [t for t in range(k) if (t - a - p) % s == 0][::-1]  # d = (t - a - p) / s, descending
            if not axis_taps:
                return None
            d_max, d_min = (axis_taps[0] - a - p) // s, (axis_taps[-1] - a - p) // s
            before = max(0, d_max)
            widths.append((before, max(0, length - d_min - m)))
            starts.append((before - d_max, length + len(axis_taps) - 1))
            taps.append(axis_taps)
        sub = swapped
        for axis, axis_taps in enumerate(taps):
            sub = ops.take(sub, axis_taps, axis=axis)
        return widths, starts, sub

    phases = {offsets: plan(offsets) for offsets in itertools.product(*(range(s) for s in strides))}

    def phase(dy, offsets):
        if phases[offsets] is None:  # no tap reaches this phase: zeros
            one = ops.zeros_like(dy[(slice(None),) + (slice(0, 1),) * rank + (slice(0, 1),)])
            return one * ops.zeros((1,) + tuple(lengths) + (w.shape[-2],), dy.dtype)
        widths, starts, sub = phases[offsets]
        window = ops.pad(dy, widths + [(0, 0)])
        if any(start or size != window.shape[axis + 1] for axis, (start, size) in enumerate(starts)):
            window = window[(slice(None),) + tuple(slice(start, start + size) for start, size in starts)]
        return ops.conv(window, sub, strides=1, padding="valid")

    def interleave(dy, axis, offsets):
        """The phases with fixed `offsets` on the axes before `axis`, interleaved along
        `axis` and the ones after it: (batch, lengths..., channels)."""
        if axis == rank:
            return phase(dy, offsets)
        parts = [interleave(dy, axis + 1, offsets + (a,)) for a in range(strides[axis])]
        if len(parts) == 1:  # stride 1 along this axis: nothing to interleave
            return parts[0]
        stacked = ops.stack(parts, axis=axis + 2)  # (batch, L_0 s_0, ..., L_axis, s_axis, L_axis+1, ...)
        shape = [-1] + list(stacked.shape[1:])  # the batch may be unknown (a graph's while loop)
        merged = shape[:axis + 1] + [shape[axis + 1] * shape[axis + 2]] + shape[axis + 3:]
        return ops.reshape(stacked, merged)

    def input_gradient(dy):
        if channels_first:
            dy = ops.moveaxis(dy, 1, -1)
        dx = interleave(dy, 0, ())
        if any(length * s != n for length, s, n in zip(lengths, strides, sizes)):
            dx = dx[(slice(None),) + tuple(slice(0, n) for n in sizes)]
        return ops.moveaxis(dx, -1, 1) if channels_first else dx

    return input_gradient


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
    return conv(inputs, kernel, layer.padding, layer.data_format, layer.strides)
