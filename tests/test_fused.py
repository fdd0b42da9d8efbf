"""`backend.fused` and `backend.fused_gradient` (TensorFlow's graph mode compiles them with
XLA; eagerly, under XLA and on JAX they are the function itself) change no value and no
gradient, in any execution mode; graph mode fuses from a size threshold on."""

import keras
import numpy as np
import pytest
from conftest import EXECUTION_MODES, in_mode
from keras import ops

from keras_fsnn import backend


def clipped_norm(x, w):  # elementwise work and reductions over two arguments, like f's pieces
    z = ops.clip(x * w[None, :] - 0.3, 0.0, 1.0)
    return z * ops.sum(ops.square(x), axis=-1, keepdims=True)


@pytest.mark.backend
@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_fused_gives_the_function_s_values(mode, always_fused):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(6, 50)).astype("float32"), rng.normal(size=50).astype("float32")
    got = in_mode(lambda x, w: backend.fused(clipped_norm)(x, w), mode)(x, w)
    np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(clipped_norm(x, w)), rtol=1e-6, atol=1e-6)


@pytest.mark.backend
@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_fused_gradient_gives_the_function_s_value_and_vector_jacobian_product(mode, always_fused):
    """Against the function's own autodiff, in float64 where the backend has it (the clip's
    kinks avoided)."""
    dtype = "float64" if keras.backend.backend() == "tensorflow" or _jax_x64() else "float32"
    precision = 1e-12 if dtype == "float64" else 1e-5

    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(6, 50)), rng.normal(size=50)
    cotangent = rng.normal(size=(6, 50))
    keep = np.abs(x * w - 0.3) > 1e-3
    keep &= np.abs(x * w - 1.3) > 1e-3
    x = np.where(keep, x, 0.05)

    def vjp_of(fn):
        def run(x, w, cotangent):
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                with tf.GradientTape() as tape:
                    tape.watch([x, w])
                    value = fn(x, w)
                return value, tape.gradient(value, [x, w], output_gradients=cotangent)
            import jax

            value, pullback = jax.vjp(fn, x, w)
            return value, list(pullback(cotangent))
        return run

    tensors = [ops.convert_to_tensor(t, dtype) for t in (x, w, cotangent)]
    value, grads = in_mode(vjp_of(backend.fused_gradient(clipped_norm)), mode)(*tensors)
    want_value, want_grads = vjp_of(clipped_norm)(*tensors)
    # the value is the function's own ops: bit for bit, except where XLA compiles the whole
    # computation (and may reorder a sum)
    tolerance = precision if mode == "xla" else 0.0
    np.testing.assert_allclose(ops.convert_to_numpy(value), ops.convert_to_numpy(want_value), rtol=tolerance, atol=0)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), rtol=precision, atol=precision)


def _jax_x64():
    import jax

    return bool(jax.config.jax_enable_x64)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's graph mode")
def test_graph_mode_fuses_from_the_size_threshold_on():
    """Below FUSE_FROM values per sample the op-by-op graph stays (no XLA compilation per
    traced shape); from it on, fn is one call that XLA must compile."""
    import tensorflow as tf

    from keras_fsnn.backend import tensorflow_backend

    def xla_calls(size):
        spec = [tf.TensorSpec((None, size)), tf.TensorSpec((size,))]
        graph = tf.function(lambda x, w: backend.fused(clipped_norm)(x, w)).get_concrete_function(*spec).graph
        return [op for op in graph.get_operations()
                if "PartitionedCall" in op.type and op.get_attr("_XlaMustCompile")]

    assert not xla_calls(tensorflow_backend.FUSE_FROM - 1)
    assert len(xla_calls(tensorflow_backend.FUSE_FROM)) == 1
