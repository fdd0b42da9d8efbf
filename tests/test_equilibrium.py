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


@pytest.mark.backend
def test_simulate_compiles_once_and_always_reads_the_current_weights():
    """simulate() runs as one compiled computation, reused from call to call (eager JAX
    would compile its loop anew each time); new weights must reach it, not stale ones."""
    keras.utils.set_random_seed(0)
    block = contraction_block(20)
    x = np.random.default_rng(2).uniform(-1, 2, (4, 12)).astype("float32")
    first = block.simulate(x)
    again = block.simulate(x)
    assert len(block.__dict__["_compiled_calls"]) == 1
    direct = block._simulate_outputs(ops.convert_to_tensor(x), True, False)  # not compiled
    for a, b in zip([first["residuals"], *first["rates"]], [direct["residuals"], *direct["rates"]]):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ops.convert_to_numpy(again["rates"][0]), ops.convert_to_numpy(first["rates"][0]))

    block.set_weights([2.0 * w for w in block.get_weights()])
    changed = block.simulate(x)
    direct = block._simulate_outputs(ops.convert_to_tensor(x), True, False)
    assert not np.array_equal(ops.convert_to_numpy(changed["rates"][0]), ops.convert_to_numpy(first["rates"][0]))
    np.testing.assert_allclose(ops.convert_to_numpy(changed["rates"][0]), ops.convert_to_numpy(direct["rates"][0]),
                               rtol=1e-6, atol=1e-7)
    counts = block.simulate(x, record_residuals=False, count_spikes=True)["counts"]  # another compiled entry
    assert len(block.__dict__["_compiled_calls"]) == 2 and ops.convert_to_numpy(counts[0]).max() <= 20
