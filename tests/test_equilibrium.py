"""Firing rates converge to the fixed point of f as T grows (paper 000 Theorem 2, §5.4)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import FeedbackSpikingBlock


def contraction_block(time_steps, neuron="if"):
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Dense(32)], feedback=keras.layers.Dense(32, use_bias=False),
        time_steps=time_steps, neuron=neuron, threshold=2.0, spectral_norm=True, norm_bound=1.0,
    )
    block.build((None, 12))
    return block


@pytest.mark.backend
def test_residual_decreases_with_time_steps_for_a_contraction():
    x = np.random.default_rng(0).uniform(-1, 2, (8, 12)).astype("float32")
    finals = []
    for steps in (10, 100, 1000):
        keras.utils.set_random_seed(0)
        block = contraction_block(steps)
        trace = ops.convert_to_numpy(block.simulate(x)["residuals"])
        assert trace.shape == (steps,)
        finals.append(float(trace[-1]))
    # ||W||_2 / V_th = 0.5: a contraction. IF rates have precision 1/t, so the residual
    # should fall roughly like 1/t.
    assert finals[0] > finals[1] > finals[2]
    assert finals[2] < finals[0] / 20


@pytest.mark.backend
def test_rates_approach_the_fixed_point_of_f():
    keras.utils.set_random_seed(0)
    block = contraction_block(1000)
    x = np.random.default_rng(1).uniform(-1, 2, (4, 12)).astype("float32")
    params = block._parameters(False)
    a = ops.zeros((4, 32))
    for _ in range(200):
        a = block.fixed_point_map(a, x, params, [])[0]
    rates = block(x)
    assert np.abs(ops.convert_to_numpy(rates - a)).max() < 0.02
    assert 0.1 < float(ops.mean(a)) < 0.9
