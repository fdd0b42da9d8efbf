"""The stride-1 convolution whose input gradient is a forward convolution (the adjoint
solve's J^T inside while loops) has the value, input gradient and kernel gradient of the
backend's own convolution, in float64, for every padding, kernel size and rank it covers."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import backend
from keras_fsnn.layers import forward_input_gradient


def _gradients(fn, x, w, dy):
    x, w, dy = (ops.convert_to_tensor(v) for v in (x, w, dy))
    value, x_pullback = backend.vjp(lambda x: fn(x, w), x)
    _, w_pullback = backend.vjp(lambda w: fn(x, w), w)
    return [ops.convert_to_numpy(v) for v in (value, x_pullback(dy), w_pullback(dy))]


@pytest.mark.parametrize("rank,kernel", [(1, 4), (2, 1), (2, 2), (2, 3), (2, 5), (3, 3)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_value_and_gradients_equal_the_backends_conv(rank, kernel, padding):
    rng = np.random.default_rng(rank * 10 + kernel)
    x = rng.standard_normal((2,) + (6,) * rank + (3,))
    w = rng.standard_normal((kernel,) * rank + (3, 4))
    dy = rng.standard_normal(ops.shape(ops.conv(x, w, 1, padding)))
    want = _gradients(lambda x, w: ops.conv(x, w, 1, padding), x, w, dy)
    got = _gradients(lambda x, w: forward_input_gradient.conv(x, w, padding, "channels_last"), x, w, dy)
    for name, a, b in zip(("value", "input gradient", "kernel gradient"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


def test_only_plain_stride_one_convolutions_are_given_it_and_compute_the_same():
    plain = keras.layers.Conv2D(4, 3, padding="same")
    strided = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    dilated = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same")
    transpose = keras.layers.Conv2DTranspose(4, 3, padding="same")
    stage = keras.Sequential([plain, strided, dilated, transpose])
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    before = ops.convert_to_numpy(stage(x))
    forward_input_gradient.use_forward_input_gradients(stage)
    forward_input_gradient.use_forward_input_gradients(stage)
    assert [("convolution_op" in vars(layer)) for layer in stage.layers] == [True, False, False, False]
    np.testing.assert_allclose(ops.convert_to_numpy(stage(x)), before, rtol=1e-5, atol=1e-6)
