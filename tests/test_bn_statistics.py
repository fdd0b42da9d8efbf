"""Issue 36: which batch-norm statistics each `bn_statistics` mode uses, checked against an
independent float64 reference of the implicit gradient: f written out in NumPy with batch
norm, its Jacobian and its parameter derivatives by central differences, the adjoint by a
dense solve. "paper": f and its Jacobian both in the call's (training) mode, batch
statistics everywhere. "released_code" (pkuxmq/IDE-FSNN, seed-code.md §2.5): f in
training mode, its Jacobian with batch statistics in layer 1's batch norm (of F^1 x, the
input layer's, which stays in training mode) and stored statistics in layers 2..N; and
the input layer's moving statistics are updated twice per step, as that code's batch norm
runs twice."""

import keras
import numpy as np
import pytest
from conftest import cosine, value_and_grads
from keras import ops

from keras_fsnn import FeedbackSpikingBlock

V_TH, EPS, MOMENTUM = 2.0, 1e-5, 0.9
D_IN, BATCH = 5, 6


def stage(units):
    return keras.Sequential([keras.layers.Dense(units), keras.layers.BatchNormalization(momentum=MOMENTUM,
                                                                                        epsilon=EPS)])


def make_block(mode, widths, rng):
    block = FeedbackSpikingBlock([stage(w) for w in widths], keras.layers.Dense(widths[0], use_bias=False),
                                 time_steps=5, threshold=V_TH, bn_statistics=mode, spectral_norm=False,
                                 solver="broyden", solver_steps=80, solver_tol=1e-12)
    block.build((None, D_IN))
    for s in block.forward:
        dense, bn = s.layers
        dense.kernel.assign(rng.normal(0, 1.0, dense.kernel.shape))
        dense.bias.assign(rng.normal(0.5, 0.5, dense.bias.shape))
        bn.gamma.assign(rng.uniform(0.8, 1.6, bn.gamma.shape))
        bn.beta.assign(rng.uniform(0.5, 1.5, bn.beta.shape))
        # stored statistics far from the batch's, so that the modes' Jacobians differ
        bn.moving_mean.assign(rng.normal(0, 1.0, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.3, 3.0, bn.moving_variance.shape))
    w = rng.normal(size=block.feedback.kernel.shape)
    block.feedback.kernel.assign(1.2 * w / np.linalg.norm(w, 2))
    return block


def batch_norm(h, gamma, beta, mean, var, batch):
    if batch:
        mean, var = h.mean(0), h.var(0)
    return gamma * (h - mean) / np.sqrt(var + EPS) + beta


def snapshot(block):
    return {v.path: np.asarray(ops.convert_to_numpy(v), np.float64) for v in block.variables}


def reference_gradient(block, params, x, a_last, c, jacobian_batch):
    """dL/dtheta of L = sum(c * output) at the rates a_last, for f in training mode and the
    adjoint's Jacobian with batch statistics in the layers `jacobian_batch(l)` says;
    `params`: the block's variables before the step (a training call updates the moving
    statistics)."""
    prefix = [s.layers for s in block.forward]

    def f(a, p, batch_of):
        h = x @ p[prefix[0][0].kernel.path] + p[prefix[0][0].bias.path]
        bn = prefix[0][1]
        current = batch_norm(h, p[bn.gamma.path], p[bn.beta.path], p[bn.moving_mean.path],
                             p[bn.moving_variance.path], batch_of(0)) + a @ p[block.feedback.kernel.path]
        rate = np.clip(current / V_TH, 0, 1)
        for l in range(1, len(prefix)):
            dense, bn = prefix[l]
            h = rate @ p[dense.kernel.path] + p[dense.bias.path]
            rate = np.clip(batch_norm(h, p[bn.gamma.path], p[bn.beta.path], p[bn.moving_mean.path],
                                      p[bn.moving_variance.path], batch_of(l)) / V_TH, 0, 1)
        return rate

    shape, h = a_last.shape, 1e-6
    flat = a_last.reshape(-1)
    jacobian = np.stack([(f((flat + h * e).reshape(shape), params, jacobian_batch)
                          - f((flat - h * e).reshape(shape), params, jacobian_batch)).reshape(-1) / (2 * h)
                         for e in np.eye(flat.size)], axis=1)
    adjoint = np.linalg.solve((np.eye(flat.size) - jacobian).T, c.reshape(-1))
    grads = {}
    for variable in block.trainable_variables:
        value = params[variable.path]
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = dict(params), dict(params)
            plus[variable.path], minus[variable.path] = value.copy(), value.copy()
            plus[variable.path][index] += h
            minus[variable.path][index] -= h
            diff = f(a_last, plus, lambda l: True) - f(a_last, minus, lambda l: True)  # f in training mode
            grad[index] = adjoint @ diff.reshape(-1) / (2 * h)
        grads[variable.path] = grad
    return grads, jacobian


JACOBIAN = {"paper": lambda l: True, "released_code": lambda l: l == 0}


@pytest.mark.backend
@pytest.mark.parametrize("widths", [(6,), (6, 4)], ids=["one_layer", "two_layers"])
@pytest.mark.parametrize("mode", ["paper", "released_code"])
def test_gradient_equals_a_float64_reference_with_the_modes_statistics(mode, widths):
    rng = np.random.default_rng(11)
    block = make_block(mode, widths, rng)
    x = rng.uniform(-1, 1, (BATCH, D_IN))
    c = rng.normal(size=(BATCH, widths[-1]))
    # the rates the simulation would give are replaced by fixed ones inside (0, 1) for every
    # layer: the gradient is defined at whatever rates the simulation returns
    rates = [rng.uniform(0.1, 0.9, (BATCH, w)) for w in widths]
    block._simulate = lambda *args, **options: ([ops.convert_to_tensor(r, "float32") for r in rates], None,
                                                np.zeros(BATCH, bool))
    variables = list(block.trainable_variables)
    params = snapshot(block)
    _, got = value_and_grads(lambda: ops.sum(block(x.astype("float32"), training=True) * c.astype("float32")),
                             variables)
    want, jacobian = reference_gradient(block, params, x, rates[-1], c, JACOBIAN[mode])
    other, _ = reference_gradient(block, params, x, rates[-1], c,
                                  JACOBIAN["released_code" if mode == "paper" else "paper"])
    assert np.abs(jacobian).max() > 0.1  # the feedback matters here
    for variable, g in zip(variables, got):
        w = want[variable.path]
        if np.linalg.norm(w) < 1e-6 * max(np.linalg.norm(v) for v in want.values()):
            np.testing.assert_allclose(g, 0, atol=1e-5)  # a bias right before training-mode batch norm
            continue
        assert cosine([g], [w]) >= 0.99999, variable.path
        assert np.linalg.norm(g - w) / np.linalg.norm(w) <= 1e-4, variable.path
    if len(widths) > 1:  # the other convention gives a measurably different gradient
        assert cosine([want[v.path] for v in variables], [other[v.path] for v in variables]) < 0.9999


@pytest.mark.parametrize("mode, input_updates", [("paper", 1), ("released_code", 2)])
def test_moving_statistics_are_updated_once_or_as_the_released_code_twice(mode, input_updates):
    rng = np.random.default_rng(2)
    block = make_block(mode, (6, 4), rng)
    x = rng.uniform(-1, 1, (BATCH, D_IN))
    rates = [rng.uniform(0.1, 0.9, (BATCH, w)) for w in (6, 4)]
    block._simulate = lambda *args, **options: ([ops.convert_to_tensor(r, "float32") for r in rates], None,
                                                np.zeros(BATCH, bool))
    p = {v.path: np.asarray(ops.convert_to_numpy(v), np.float64) for v in block.variables}
    (dense1, bn1), (dense2, bn2) = (s.layers for s in block.forward)
    block(x.astype("float32"), training=True)
    h1 = x @ p[dense1.kernel.path] + p[dense1.bias.path]  # the input layer's statistics: of F^1 x, the same each time
    keep = MOMENTUM ** input_updates
    for variable, batch in ((bn1.moving_mean, h1.mean(0)), (bn1.moving_variance, h1.var(0))):
        np.testing.assert_allclose(ops.convert_to_numpy(variable), keep * p[variable.path] + (1 - keep) * batch,
                                   rtol=1e-5, atol=1e-6)
    # layer 2: the statistics of f's layer-2 input at the rates, once in both modes
    a1 = np.clip((batch_norm(h1, p[bn1.gamma.path], p[bn1.beta.path], 0, 1, True)
                  + rates[-1] @ p[block.feedback.kernel.path]) / V_TH, 0, 1)
    h2 = a1 @ p[dense2.kernel.path] + p[dense2.bias.path]
    for variable, batch in ((bn2.moving_mean, h2.mean(0)), (bn2.moving_variance, h2.var(0))):
        np.testing.assert_allclose(ops.convert_to_numpy(variable),
                                   MOMENTUM * p[variable.path] + (1 - MOMENTUM) * batch, rtol=1e-5, atol=1e-6)
