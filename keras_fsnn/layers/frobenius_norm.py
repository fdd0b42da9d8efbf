"""Frobenius-norm restriction of the feedback weight, estimated with spikes-friendly noise
probes (paper 002 appendix D.2; seed-code.md §3.5)."""

import keras
import numpy as np
from keras import ops

from keras_fsnn import validation


@keras.saving.register_keras_serializable(package="keras_fsnn")
class FrobeniusNormRestriction(keras.layers.Layer):
    """Re-parameterise a kernel as W = min(c, F) * W / F, where F estimates ||W||_F.

    ||W||_2 <= ||W||_F, so bounding the Frobenius norm bounds the spectral norm the
    convergence theorems need (paper 002 Theorems 1-2). The norm is estimated with the
    Hutchinson estimator, F^2 = E_{v ~ N(0, I)} ||W v||^2 = tr(W^T W), from `probes`
    Gaussian vectors drawn afresh at every training call (the paper's 64 samples: "source
    neurons outputting noises and target neurons accumulating signals"); F is a constant
    for the gradient, as in the released code. The last training estimate is kept in a
    variable and used at inference, so a saved model reproduces its outputs exactly.

    The kernel is taken as a matrix with the output units as columns (Keras layout
    (..., units)); ||W||_F does not depend on the reshaping.

    Args:
        bound: c > 0 (paper 002: 2; 10 for CIFAR10-DVS).
        probes: number of Gaussian probe vectors per estimate (paper: 64).
    """

    def __init__(self, bound=2.0, probes=64, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bound = validation.number("norm_bound", bound, low=0.0, low_open=True)
        self.probes = validation.integer("norm_probes", probes, minimum=1)

    def build(self, kernel_shape):
        self.estimate = self.add_weight(shape=(), initializer="ones", trainable=False, name="norm_estimate")

    def initialize_from(self, kernel):
        """Start the stored estimate at the exact norm of `kernel`."""
        self.estimate.assign(np.float32(np.linalg.norm(np.asarray(kernel, dtype="float64"))))

    def call(self, kernel, training=False, seed=None):
        if training:
            matrix = ops.reshape(ops.stop_gradient(kernel), (-1, ops.shape(kernel)[-1]))
            noise = keras.random.normal((ops.shape(matrix)[-1], self.probes), seed=seed)
            squared = ops.mean(ops.sum(ops.square(ops.matmul(matrix, noise)), axis=0))
            estimate = ops.sqrt(squared + 1e-12)
            self.estimate.assign(estimate)
        else:
            estimate = ops.convert_to_tensor(self.estimate)
        estimate = ops.stop_gradient(estimate)
        return kernel * (ops.minimum(estimate, self.bound) / estimate)

    def compute_output_shape(self, kernel_shape):
        return kernel_shape

    def get_config(self):
        return {**super().get_config(), "bound": self.bound, "probes": self.probes}
