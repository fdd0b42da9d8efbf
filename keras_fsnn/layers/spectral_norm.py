"""Spectral-norm restriction of the feedback weight (paper 000 eq. 35, appendix F.1)."""

import keras
import numpy as np
from keras import ops

from keras_fsnn import validation


@keras.saving.register_keras_serializable(package="keras_fsnn")
class SpectralNormRestriction(keras.layers.Layer):
    """Re-parameterise a kernel as W = clip(alpha, -c, c) * W / ||W||_2.

    Paper 000 eq. 35: the convergence theorems need ||W||_2 <= gamma * V_th with gamma < 1;
    with V_th = 2 and c = 1 this gives gamma = 0.5. alpha is learnable and starts at the
    initial spectral norm (so it starts clipped at c when ||W_init||_2 >= c, as in the
    released code). ||W||_2 is estimated by one power iteration per training call with
    persistent vectors u, v (Miyato et al.'s spectral normalisation); the gradient flows
    through sigma = u^T W v with u and v held constant. Inference uses the stored vectors,
    so a saved model reproduces its outputs exactly.

    The norm is that of the kernel reshaped to a matrix with the output units as columns
    (Keras layout (..., units)). It equals the released code's norm of the PyTorch weight
    reshaped with dim 0 first (a transpose and a permutation, which keep singular values),
    and it is the norm of the kernel matrix, not the operator norm of the convolution.

    Args:
        bound: c > 0, the clip range of alpha (paper: c = 1).
    """

    def __init__(self, bound=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bound = validation.number("norm_bound", bound, low=0.0, low_open=True)

    def build(self, kernel_shape):
        kernel_shape = tuple(kernel_shape)
        rows = int(np.prod(kernel_shape[:-1]))
        self.u = self.add_weight(shape=(rows,), initializer="random_normal", trainable=False, name="u")
        self.v = self.add_weight(
            shape=(kernel_shape[-1],), initializer="random_normal", trainable=False, name="v"
        )
        self.alpha = self.add_weight(shape=(), initializer="ones", trainable=True, name="alpha")

    def initialize_from(self, kernel):
        """Set u, v to the leading singular vectors of `kernel` and alpha to its norm."""
        matrix = np.asarray(kernel, dtype="float64").reshape(-1, np.shape(kernel)[-1])
        left, singular, right = np.linalg.svd(matrix, full_matrices=False)
        self.u.assign(left[:, 0].astype("float32"))
        self.v.assign(right[0].astype("float32"))
        self.alpha.assign(np.float32(singular[0]))

    def call(self, kernel, training=False, seed=None):
        # `seed` is unused: the interface of the block's norm restrictions (see frobenius_norm).
        matrix = ops.reshape(kernel, (-1, ops.shape(kernel)[-1]))
        u, v = ops.convert_to_tensor(self.u), ops.convert_to_tensor(self.v)
        if training:
            frozen = ops.stop_gradient(matrix)
            v = _normalise(ops.matmul(u, frozen))
            u = _normalise(ops.matmul(frozen, v))
            self.u.assign(u)
            self.v.assign(v)
        sigma = ops.sum(ops.stop_gradient(u) * ops.matmul(matrix, ops.stop_gradient(v)))
        alpha = ops.clip(ops.convert_to_tensor(self.alpha), -self.bound, self.bound)
        return kernel * (alpha / sigma)

    def compute_output_shape(self, kernel_shape):
        return kernel_shape

    def get_config(self):
        return {**super().get_config(), "bound": self.bound}


def _normalise(x):
    return x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-12)
