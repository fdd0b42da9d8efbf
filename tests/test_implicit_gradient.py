"""The implicit gradient (IDE, paper 000 §3.2, eq. 3) equals independent references:
a dense linear solve of the adjoint equation for a dense block, and autodiff through many
iterations of the fixed-point map for a conv multi-layer block with batch norm and dropout.
Every solver. Each test also shows the feedback term matters (the Jacobian-free gradient
is measurably different), so it could fail."""

import keras
import numpy as np
import pytest
from conftest import EXECUTION_MODES, cosine, value_and_grads
from keras import ops

from keras_fsnn import FeedbackSpikingBlock

SOLVERS = [("broyden", 40), ("fixed_point", 300), ("gmres", 40)]
# Under the other backend (tests/test_other_backend.py) the conv check runs for Broyden only:
# the solvers are backend-independent keras.ops code; what differs is the custom gradient.
SOLVERS_BROYDEN_ON_BOTH_BACKENDS = [pytest.param("broyden", 40, marks=pytest.mark.backend), ("fixed_point", 300),
                                    ("gmres", 40)]


def dense_block(solver, steps, rng, d_in=10, d=16):
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Dense(d)], feedback=keras.layers.Dense(d, use_bias=False),
        time_steps=200, threshold=2.0, solver=solver, solver_steps=steps, solver_tol=1e-9,
        spectral_norm=False,
    )
    block.build((None, d_in))
    w = rng.normal(size=(d, d))
    block.feedback.kernel.assign(1.6 * w / np.linalg.norm(w, 2))  # ||W||_2 / V_th = 0.8
    block.forward[0].kernel.assign(rng.normal(0, 1.0, (d_in, d)))
    block.forward[0].bias.assign(rng.normal(1.0, 0.5, d))
    return block


@pytest.mark.backend
@pytest.mark.parametrize("solver,steps", SOLVERS)
def test_dense_block_gradient_equals_dense_adjoint_solve(solver, steps):
    rng = np.random.default_rng(0)
    block = dense_block(solver, steps, rng)
    x = keras.Variable(rng.uniform(-1, 1, (5, 10)).astype("float32"))
    c = rng.normal(size=(5, 16)).astype("float32")
    stage, feedback = block.forward[0], block.feedback
    variables = [stage.kernel, stage.bias, feedback.kernel, x]
    _, grads = value_and_grads(lambda: ops.sum(block(x, training=True) * c), variables)

    # Reference: f(a) = clip((a W + x F + b) / V_th, 0, 1) at a = a[T]; per sample
    # J = diag(m) W^T / V_th, y = (I - J^T)^{-1} g, delta = m * y / V_th.
    a = ops.convert_to_numpy(block(x)).astype("float64")
    xs, kf, b, kw = (np.asarray(ops.convert_to_numpy(v), "float64") for v in (x, stage.kernel, stage.bias, feedback.kernel))
    pre = (a @ kw + xs @ kf + b) / 2.0
    m = ((pre > 0) & (pre < 1)).astype(float)
    assert 0.2 < m.mean() < 0.95  # the map is neither saturated nor silent here
    y = np.stack([np.linalg.solve(np.eye(16) - (m[i][:, None] * kw.T / 2.0).T, c[i]) for i in range(5)])
    delta = m * y / 2.0
    want = [xs.T @ delta, delta.sum(0), a.T @ delta, delta @ kf.T]
    for got_g, want_g in zip(grads, want):
        assert cosine([got_g], [want_g]) >= 0.999
        np.testing.assert_allclose(got_g, want_g, rtol=2e-3, atol=2e-4)
    delta_jacobian_free = m * c / 2.0
    jacobian_free = [xs.T @ delta_jacobian_free, delta_jacobian_free.sum(0), a.T @ delta_jacobian_free, delta_jacobian_free @ kf.T]
    assert cosine(jacobian_free, want) < 0.99
    assert block.diagnostics()["backward_residual"] < 1e-4 or keras.backend.backend() == "jax"


def conv_block(solver, steps):
    block = FeedbackSpikingBlock(
        forward=[
            keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization()]),
            keras.Sequential([keras.layers.Conv2D(6, 3, strides=2, padding="same"), keras.layers.BatchNormalization()]),
        ],
        feedback=keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False),
        time_steps=30, threshold=2.0, dropout=0.2, solver=solver, solver_steps=steps, solver_tol=1e-9,
        spectral_norm=True, norm_bound=1.5, seed=7,
    )
    block.build((None, 8, 8, 2))
    for stage in block.forward:
        stage.layers[1].gamma.assign(np.full(stage.layers[1].gamma.shape, 1.2, "float32"))
        stage.layers[1].beta.assign(np.full(stage.layers[1].beta.shape, 0.8, "float32"))
    block.norm_restriction.alpha.assign(1.5)
    return block


@pytest.mark.parametrize("solver,steps", SOLVERS_BROYDEN_ON_BOTH_BACKENDS)
def test_conv_multilayer_gradient_with_bn_and_dropout_equals_unrolled_autodiff(solver, steps, always_fused):
    rng = np.random.default_rng(1)
    block = conv_block(solver, steps)
    x = rng.uniform(0, 1, (4, 8, 8, 2)).astype("float32")
    c = rng.normal(size=(4, 4, 4, 6)).astype("float32")
    masks = block._dropout_masks(4, True)
    block._dropout_masks = lambda batch, training: masks if training else []

    # The exact fixed point a° of the training-mode map (batch statistics, these masks),
    # found by iterating f; the block's backward is evaluated there.
    params = block._parameters(False)
    a = ops.zeros((4, 4, 4, 6))
    for _ in range(300):
        a = block.fixed_point_map(a, x, params, masks, training=True)[0]
    gap = ops.convert_to_numpy(block.fixed_point_map(a, x, params, masks, training=True)[0] - a)
    assert np.abs(gap).max() < 1e-5  # converged to float32 precision
    fixed = ops.convert_to_numpy(a)
    assert 0.05 < np.mean((fixed > 0) & (fixed < 1))
    block._simulate = lambda x_, params_, masks_, **options: ([ops.convert_to_tensor(fixed)] * 2, None,
                                                            np.zeros(len(fixed), bool))

    variables = list(block.trainable_variables)
    # in every execution mode: graph mode fuses the solver's bookkeeping and the rate map's
    # gradient (backend.fused, backend.fused_gradient), XLA compiles the whole step
    implicit_by_mode = {mode: value_and_grads(lambda: ops.sum(block(x, training=True) * c), variables, mode)[1]
                        for mode in EXECUTION_MODES}

    def unrolled(iterations):
        def loss():
            params_ = block._parameters(False)
            a_ = ops.convert_to_tensor(fixed)
            for _ in range(iterations):
                a_ = block.fixed_point_map(a_, x, params_, masks, training=True)[0]
            return ops.sum(a_ * c)
        return loss

    _, reference = value_and_grads(unrolled(80), variables)
    _, jacobian_free = value_and_grads(unrolled(1), variables)
    names = [v.path for v in variables]
    # A conv bias right before training-mode batch norm has zero gradient (BN removes the
    # mean); those entries are float noise and are left out of the per-variable check.
    largest = max(np.abs(g).max() for g in reference)
    nonzero = [i for i, g in enumerate(reference) if np.abs(g).max() > 1e-3 * largest]
    assert len(nonzero) >= 6, names  # conv kernels, BN gamma/beta, feedback kernel
    for implicit in implicit_by_mode.values():
        assert cosine(implicit, reference) >= 0.999
        for i in nonzero:
            assert cosine([implicit[i]], [reference[i]]) >= 0.999, names[i]
    assert cosine(jacobian_free, reference) < 0.995


@pytest.mark.backend
def test_feed_forward_block_gradient_is_the_one_pass_gradient_of_f():
    rng = np.random.default_rng(3)
    block = FeedbackSpikingBlock([keras.layers.Dense(8)], feedback=None, time_steps=50, spectral_norm=False)
    block.build((None, 5))
    block.forward[0].bias.assign(rng.normal(1.0, 0.5, 8).astype("float32"))
    x = rng.uniform(-1, 1, (4, 5)).astype("float32")
    c = rng.normal(size=(4, 8)).astype("float32")
    stage = block.forward[0]
    _, grads = value_and_grads(lambda: ops.sum(block(x, training=True) * c), [stage.kernel, stage.bias])
    kf, b = ops.convert_to_numpy(stage.kernel), ops.convert_to_numpy(stage.bias)
    pre = (x @ kf + b) / 2.0
    delta = ((pre > 0) & (pre < 1)) * c / 2.0
    np.testing.assert_allclose(grads[0], x.T @ delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1], delta.sum(0), rtol=1e-4, atol=1e-6)
