"""SynOps counts match hand-computed values on tiny blocks."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import FeedbackSpikingBlock
from keras_fsnn.energy import DEVICES, energy_report, synaptic_operations

# SynOps use keras.ops and simulate() (whose compiled call is tested on both backends in
# test_equilibrium): nothing here differs by backend


def test_dense_block_synops_are_spike_counts_times_fanout():
    block = FeedbackSpikingBlock([keras.layers.Dense(4), keras.layers.Dense(3)], keras.layers.Dense(4, use_bias=False),
                                 time_steps=10, spectral_norm=False)
    x = np.random.default_rng(0).uniform(0, 1, (2, 5)).astype("float32")
    block.build(x.shape)
    block.forward[0].bias.assign(np.array([0.9, 0.5, 0.0, 2.0], "float32"))
    block.forward[0].kernel.assign(np.zeros((5, 4), "float32"))
    block.forward[1].kernel.assign(np.eye(4, 3, dtype="float32") * 1.6)
    block.forward[1].bias.assign(np.zeros(3, "float32"))
    block.feedback.kernel.assign(np.zeros((3, 4), "float32"))
    counts = [ops.convert_to_numpy(c) for c in block.simulate(x, record_residuals=False, count_spikes=True)["counts"]]
    # layer 1 integrates its bias: floor(10 * b / 2) spikes (capped at 10)
    np.testing.assert_array_equal(counts[0][0], [4, 2, 0, 10])
    result = synaptic_operations(block, x)
    rows = {r["connection"]: r for r in result["connections"]}
    assert rows["F1 (input)"]["input_macs"] == 5 * 4  # dense: every input to every unit, once
    assert rows["F2"]["synops"] == pytest.approx(counts[0].sum(1).mean() * 3)  # fan-out 3
    assert rows["W1 (feedback)"]["synops"] == pytest.approx(counts[1].sum(1).mean() * 4)  # fan-out 4
    assert result["layers"][0]["spike_rate"] == pytest.approx(counts[0].mean() / 10)


def test_conv_fanout_counts_padding_exactly():
    # One spike in every pixel of a 4x4 map, 3x3 'same' conv to 2 channels: a pixel reaches
    # 4 (corner), 6 (edge) or 9 (interior) output positions per output channel.
    block = FeedbackSpikingBlock([keras.layers.Conv2D(1, 3, padding="same")], keras.layers.Conv2D(1, 3, padding="same", use_bias=False),
                                 time_steps=1, spectral_norm=False)
    block.build((None, 4, 4, 1))
    connection = keras.layers.Conv2D(2, 3, padding="same")
    connection.build((None, 4, 4, 1))
    from keras_fsnn.energy import _ones_kernel_apply

    total = float(ops.sum(_ones_kernel_apply(connection, ops.ones((1, 4, 4, 1)))))
    assert total == 2 * (4 * 4 + 8 * 6 + 4 * 9)


def test_energy_report_uses_the_device_registry():
    block = FeedbackSpikingBlock([keras.layers.Dense(8)], keras.layers.Dense(8, use_bias=False), time_steps=5)
    x = np.random.default_rng(1).uniform(0, 3, (3, 4)).astype("float32")
    report = energy_report(block, x, device="loihi")
    expected = report["synops_per_sample"] * 23.6e-12 + report["input_macs_per_sample"] * 23.6e-12
    assert report["joules_per_sample"] == pytest.approx(expected)
    assert report["synops_per_sample"] > 0 and "Davies" in report["source"]
    with pytest.raises(ValueError, match=r"`device` must be one of 'loihi', 'truenorth', 'cmos_45nm'"):
        energy_report(block, x, device="gpu")
    assert set(DEVICES) == {"loihi", "truenorth", "cmos_45nm"}


def test_synops_count_pooling_stages_one_synapse_per_input():
    """Issue 31 bug 5: SynOps and the energy report refused pooling stages, so they failed on
    the shipped spide_lenet. An average pool's spike reaches one output neuron of its
    window: its SynOps are the spikes it receives."""
    from keras_fsnn.inspection import block_inputs, spiking_blocks
    from keras_fsnn.models import spide_lenet

    model = spide_lenet(time_steps=4)
    block = spiking_blocks(model)[0]
    x = block_inputs(model, block, np.random.default_rng(0).uniform(0, 1, (3, 28, 28, 1)).astype("float32"))
    counts = [ops.convert_to_numpy(c) for c in block.simulate(x, record_residuals=False, count_spikes=True)["counts"]]
    rows = energy_report(block, x)["connections"]
    assert [r["connection"] for r in rows] == ["F1 (input)", "F2", "F3", "F4", "F5"]  # F2, F4: the pools
    assert rows[1]["synops"] == pytest.approx(counts[0].sum() / 3, rel=1e-6)
    assert rows[3]["synops"] == pytest.approx(counts[2].sum() / 3, rel=1e-6)
    with pytest.raises(ValueError, match="MaxPooling2D layer before .* SynOps count linear connections"):
        bad = FeedbackSpikingBlock([keras.layers.Conv2D(4, 3), keras.layers.MaxPooling2D(2)], None,
                                   spectral_norm=False, time_steps=2)
        bad.build((None, 8, 8, 1))
        synaptic_operations(bad, np.zeros((1, 8, 8, 1), "float32"))
