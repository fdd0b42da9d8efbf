"""The spiking simulation follows paper 000 eq. 2, 10, 30, 33 (and paper 002 eq. 1 for the
resting potential), checked against an independent NumPy simulation."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import FeedbackSpikingBlock
from keras_fsnn.neurons import get_neuron


def reference_rates(x, kernels, biases, feedback, leak, threshold, u_rest, steps, sequence):
    """NumPy eq. 10/33: dense stages, feedback from the last layer delayed one step."""
    n = len(kernels)
    batch = x.shape[0]
    u = [np.zeros((batch, k.shape[1])) for k in kernels]
    counts = [np.zeros_like(v) for v in u]
    last = np.zeros_like(u[-1])
    for t in range(steps):
        frame = x[:, t] if sequence else x
        spikes = None
        for l in range(n):
            source = frame if l == 0 else spikes
            current = source @ kernels[l] + biases[l]
            if l == 0:
                current = current + last @ feedback
            u[l] = leak * u[l] + current
            spikes = (u[l] >= threshold).astype(float)
            u[l] = u[l] - (threshold - u_rest) * spikes
            counts[l] = leak * counts[l] + spikes
        last = spikes
    norm = steps if leak == 1.0 else (1 - leak**steps) / (1 - leak)
    return [c / norm for c in counts]


@pytest.mark.backend
@pytest.mark.parametrize(
    "neuron,leak,u_rest,sequence",
    [("if", None, 0.0, False), ("lif", 0.9, 0.0, False), ("if", None, -2.0, False), ("lif", 0.95, 0.0, True)],
)
def test_simulation_matches_numpy_reference(neuron, leak, u_rest, sequence):
    rng = np.random.default_rng(0)
    steps, d_in, widths = 25, 6, [7, 5]
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Dense(w) for w in widths],
        feedback=keras.layers.Dense(widths[0], use_bias=False),
        time_steps=steps, neuron=neuron, leak=leak, threshold=2.0, resting_potential=u_rest,
        spectral_norm=False, input_type="sequence" if sequence else "static",
    )
    shape = (4, steps, d_in) if sequence else (4, d_in)
    x = (rng.uniform(0, 1, shape) < 0.4).astype("float32") if sequence else rng.uniform(-1, 2, shape).astype("float32")
    block.build(shape)
    kernels = [rng.normal(0, 1.0, s.kernel.shape) for s in block.forward]
    biases = [rng.normal(0.5, 0.3, s.bias.shape) for s in block.forward]
    feedback = rng.normal(0, 0.5, block.feedback.kernel.shape)
    for stage, k, b in zip(block.forward, kernels, biases):
        stage.kernel.assign(k)
        stage.bias.assign(b)
    block.feedback.kernel.assign(feedback)

    got = [ops.convert_to_numpy(r) for r in block.simulate(x, record_residuals=False)["rates"]]
    want = reference_rates(
        x.astype("float64"), [np.asarray(k, "float32") for k in kernels], [np.asarray(b, "float32") for b in biases],
        np.asarray(feedback, "float32"), block.neuron.leak, 2.0, u_rest, steps, sequence,
    )
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), want[-1], atol=1e-5)
    assert np.ptp(want[-1]) > 0  # the reference is not trivially all-zero or all-one


def test_if_neuron_count_is_floor_of_integrated_current():
    neuron = get_neuron("if", threshold=2.0)
    current = ops.convert_to_tensor(np.array([0.73, 1.31, 2.5, -0.4], "float32"))
    u = ops.zeros((4,))
    total = ops.zeros((4,))
    for _ in range(40):
        u, s = neuron.step(u, current)
        total = neuron.accumulate(total, s)
    expected = np.minimum(np.floor(np.maximum(np.array([0.73, 1.31, 2.5, -0.4]), 0) * 40 / 2.0), 40)
    np.testing.assert_array_equal(ops.convert_to_numpy(total), expected)


def test_lif_weighted_rate_normaliser():
    neuron = get_neuron("lif", leak=0.9)
    spikes = np.array([1, 0, 1, 1, 0, 1], "float32")
    total = ops.zeros(())
    for s in spikes:
        total = neuron.accumulate(total, ops.convert_to_tensor(s))
    weights = 0.9 ** np.arange(len(spikes) - 1, -1, -1)
    want = (weights * spikes).sum() / weights.sum()
    got = float(total / neuron.normaliser(len(spikes)))
    assert got == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(neuron.time_weights(6)), weights, rtol=1e-6)


def test_resting_potential_sets_rate_map_scale():
    neuron = get_neuron("if", threshold=1.0, resting_potential=-1.0)
    assert neuron.reset_amount == 2.0
    z = ops.convert_to_tensor(np.array([-1.0, 0.5, 1.0, 3.0], "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(neuron.rate_map(z)), [0.0, 0.25, 0.5, 1.0])


@pytest.mark.backend
def test_sequence_of_identical_frames_equals_static_input():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 5)).astype("float32")
    kwargs = dict(time_steps=12, neuron="lif", leak=0.9, spectral_norm=False)
    static = FeedbackSpikingBlock([keras.layers.Dense(8)], keras.layers.Dense(8, use_bias=False), **kwargs)
    sequence = FeedbackSpikingBlock([keras.layers.Dense(8)], keras.layers.Dense(8, use_bias=False), input_type="sequence", **kwargs)
    static.build(x.shape)
    sequence.build((3, 12, 5))
    sequence.set_weights(static.get_weights())
    frames = np.repeat(x[:, None], 12, axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(static(x)), ops.convert_to_numpy(sequence(frames)), atol=1e-6)


@pytest.mark.backend
def test_feed_forward_block_without_feedback():
    rng = np.random.default_rng(2)
    block = FeedbackSpikingBlock([keras.layers.Dense(6), keras.layers.Dense(4)], feedback=None, time_steps=20,
                                 neuron="lif", leak=0.9, spectral_norm=False)
    x = rng.uniform(-1, 2, (3, 5)).astype("float32")
    block.build(x.shape)
    kernels = [ops.convert_to_numpy(s.kernel) for s in block.forward]
    biases = [ops.convert_to_numpy(s.bias) for s in block.forward]
    want = reference_rates(x.astype("float64"), kernels, biases, np.zeros((4, 6)), 0.9, 2.0, 0.0, 20, False)
    np.testing.assert_allclose(ops.convert_to_numpy(block(x)), want[-1], atol=1e-5)
    clone = FeedbackSpikingBlock.from_config(block.get_config())
    assert clone.feedback is None
    with pytest.raises(ValueError, match=r"`spectral_norm` restricts the feedback weight, but feedback=None"):
        FeedbackSpikingBlock([keras.layers.Dense(6)], feedback=None)
