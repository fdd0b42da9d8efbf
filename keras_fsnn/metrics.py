"""Spiking-activity metrics of a model: average firing rate and synaptic operations.

The average firing rate of a model is the number of spikes its spiking neurons emit per
neuron and per time step, over every neuron of every FeedbackSpikingBlock (paper 000
Table 5 reports it per layer):

    rate = sum_blocks sum_layers spikes / (sum_blocks sum_layers neurons * T),

over the FeedbackSpikingBlocks and ImplicitStreams layers (every stream's layers).

It is a plain spike count (unweighted, also for LIF), measured by simulating the blocks
in inference mode. SynOps (spikes times fan-out, see `keras_fsnn.energy`) are per sample.

These quantities come from a simulation of the network, not from (y_true, y_pred), so
they are not `keras.metrics.Metric` objects: `keras_fsnn.callbacks.FiringRateLogger`
measures them at the end of every epoch and writes them into the epoch logs, where
History, CSVLogger, TensorBoard and keras-tuner objectives find them.
"""

import numpy as np
from keras import ops

from keras_fsnn.inspection import block_inputs, spiking_layers


def spiking_activity(model, x, batch_size=256, synops=False):
    """Average firing rate of `model` on inputs `x` (an array of model inputs).

    Returns {"firing_rate": float, "layers": [{"block", "layer", "neurons", "firing_rate"}],
    and with `synops=True` "synops": SynOps per sample summed over all blocks}.
    Raises ValueError if the model has no FeedbackSpikingBlock.
    """
    from keras_fsnn.energy import synaptic_operations

    from keras_fsnn.layers import ImplicitStreams

    blocks = spiking_layers(model)
    if not blocks:
        raise ValueError(f"Model '{model.name}' has no spiking layer, so it has no firing rate.")
    if synops and any(isinstance(b, ImplicitStreams) for b in blocks):
        raise ValueError("synops=True is implemented for FeedbackSpikingBlock only, not for ImplicitStreams.")
    x = np.asarray(x)
    spikes = {}  # (block index, layer index) -> total spike count
    neurons = {}
    total_synops = 0.0
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        for b, block in enumerate(blocks):
            inputs = block_inputs(model, block, chunk)
            counts = block.simulate(inputs, record_residuals=False, count_spikes=True)["counts"]
            for l, count in enumerate(counts):
                spikes[b, l] = spikes.get((b, l), 0.0) + float(ops.sum(count))
                neurons[b, l] = int(np.prod(ops.shape(count)[1:]))
            if synops:
                rows = synaptic_operations(block, inputs)["connections"]
                total_synops += sum(r["synops"] for r in rows) * len(chunk)
    steps = {b: block.time_steps for b, block in enumerate(blocks)}
    layers = [{"block": blocks[b].name, "layer": l + 1, "neurons": neurons[b, l],
               "firing_rate": spikes[b, l] / (neurons[b, l] * steps[b] * len(x))} for (b, l) in spikes]
    total = sum(spikes.values()) / (sum(neurons[k] * steps[k[0]] for k in neurons) * len(x))
    result = {"firing_rate": total, "layers": layers}
    if synops:
        result["synops"] = total_synops / len(x)
    return result
