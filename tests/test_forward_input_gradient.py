"""The convolution whose input gradient is made of forward convolutions (the adjoint
solve's J^T inside while loops: one for stride 1, one per output phase for strides) has
the value, input gradient and kernel gradient of the backend's own convolution, in float64,
for every padding, kernel size, stride and rank it covers, input sizes that the stride
divides and ones it does not, and kernels smaller than the stride. Under JAX float64 needs
`JAX_ENABLE_X64=1` (`KERAS_BACKEND=jax JAX_ENABLE_X64=1 pytest tests/test_forward_input_gradient.py`);
without it the module is skipped rather than compared in float32."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import backend
from keras_fsnn.layers import forward_input_gradient

if keras.backend.backend() == "jax":
    import jax

    if not jax.config.jax_enable_x64:
        pytest.skip("float64 under JAX needs JAX_ENABLE_X64=1", allow_module_level=True)


def _gradients(fn, x, w, dy):
    x, w, dy = (ops.convert_to_tensor(v) for v in (x, w, dy))
    value, x_pullback = backend.vjp(lambda x: fn(x, w), x)
    _, w_pullback = backend.vjp(lambda w: fn(x, w), w)
    return [ops.convert_to_numpy(v) for v in (value, x_pullback(dy), w_pullback(dy))]


@pytest.mark.parametrize("rank,kernel,stride,size", [
    (1, 4, 1, 6), (2, 1, 1, 6), (2, 2, 1, 6), (2, 3, 1, 6), (2, 5, 1, 6), (3, 3, 1, 6),
    (1, 3, 2, 7), (1, 5, 3, 8), (2, 1, 2, 6), (2, 2, 2, 7), (2, 3, 2, 8), (2, 3, 2, 7), (2, 5, 2, 9), (2, 3, 3, 8),
    (3, 3, 2, 5)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_value_and_gradients_equal_the_backends_conv(rank, kernel, stride, size, padding):
    rng = np.random.default_rng(rank * 100 + kernel * 10 + stride + size)
    x = rng.standard_normal((2,) + (size,) * rank + (3,))
    w = rng.standard_normal((kernel,) * rank + (3, 4))
    dy = rng.standard_normal(ops.shape(ops.conv(x, w, stride, padding)))
    want = _gradients(lambda x, w: ops.conv(x, w, stride, padding), x, w, dy)
    got = _gradients(lambda x, w: forward_input_gradient.conv(x, w, padding, "channels_last", stride), x, w, dy)
    for name, a, b in zip(("value", "input gradient", "kernel gradient"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="TensorFlow's CPU convolutions are channels-last only")
def test_channels_first_strided_gradients_equal_the_backends_conv():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((3, 3, 3, 4))
    conv = lambda x, w: ops.conv(x, w, 2, "same", data_format="channels_first")  # noqa: E731
    dy = rng.standard_normal(ops.shape(conv(x, w)))
    want = _gradients(conv, x, w, dy)
    got = _gradients(lambda x, w: forward_input_gradient.conv(x, w, "same", "channels_first", 2), x, w, dy)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_only_undilated_ungrouped_convolutions_are_given_it_and_compute_the_same():
    plain = keras.layers.Conv2D(4, 3, padding="same")
    strided = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    dilated = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same")
    transpose = keras.layers.Conv2DTranspose(4, 3, padding="same")
    stage = keras.Sequential([plain, strided, dilated, transpose])
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    before = ops.convert_to_numpy(stage(x))
    forward_input_gradient.use_forward_input_gradients(stage)
    forward_input_gradient.use_forward_input_gradients(stage)
    assert [("convolution_op" in vars(layer)) for layer in stage.layers] == [True, True, False, False]
    np.testing.assert_allclose(ops.convert_to_numpy(stage(x)), before, rtol=1e-5, atol=1e-6)
