"""Synaptic operations (SynOps) and energy estimates of feedback spiking blocks.

A synaptic operation is one spike delivered over one synapse: a spike of neuron i costs
fanout(i) accumulations, the number of neurons it connects to. For each connection of a
block (F^2..F^N between spiking layers, and the feedback W^1 from layer N to layer 1) the
SynOps of one sample over T steps are

    SynOps = sum_i count_i * fanout(i) = sum_j (A count)_j,

where count_i is neuron i's number of spikes in T steps and A the 0/1 connectivity of the
linear operation: the connection applied with an all-ones kernel and no bias to the spike
counts, which is exact for any padding and stride. The first stage F^1 sees the input:
for a static (real-valued) input its current is computed once, `input_macs` multiply-
accumulates; for a spike-sequence input it is counted as SynOps like the others.

Energy: SynOps times the energy per synaptic operation of a device, plus the input MACs
times the device's energy per MAC (`DEVICES`; figures as published, see each entry).
"""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_fsnn import validation


@dataclass(frozen=True)
class Device:
    name: str
    joules_per_synop: float
    joules_per_mac: float
    source: str


DEVICES = {
    "loihi": Device("loihi", 23.6e-12, 23.6e-12,
                    "Intel Loihi, 23.6 pJ per synaptic spike operation (Davies et al., IEEE Micro 2018, Table 2); "
                    "input MACs are charged as synaptic operations"),
    "truenorth": Device("truenorth", 26e-12, 26e-12,
                        "IBM TrueNorth, 26 pJ per synaptic event (Merolla et al., Science 2014)"),
    "cmos_45nm": Device("cmos_45nm", 0.9e-12, 4.6e-12,
                        "45 nm CMOS, 32-bit float: add 0.9 pJ per SynOp, multiply-add 4.6 pJ per MAC "
                        "(Horowitz, ISSCC 2014)"),
}


# Layers that connect neurons with fixed weights (their connectivity is all there is to
# count) or only move values around; anything else without a kernel has no SynOps count.
FIXED_CONNECTIONS = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
                     keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                     keras.layers.GlobalAveragePooling3D, keras.layers.UpSampling1D, keras.layers.UpSampling2D,
                     keras.layers.UpSampling3D)
REARRANGEMENTS = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute, keras.layers.ZeroPadding1D,
                  keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D, keras.layers.Cropping1D,
                  keras.layers.Cropping2D, keras.layers.Cropping3D, keras.layers.Identity)


def _connection(stage):
    """The layers of a stage up to and including its linear operation (the layer with a
    kernel), i.e. the stage without batch norm and what follows; a stage without a kernel
    (average pooling, up-sampling, ...) is its own fixed connection."""
    layers = stage.layers if isinstance(stage, keras.Sequential) else [stage]
    prefix = []
    for layer in layers:
        prefix.append(layer)
        if getattr(layer, "kernel", None) is not None:
            return prefix
        if not isinstance(layer, FIXED_CONNECTIONS + REARRANGEMENTS):
            raise ValueError(
                f"Stage {stage.name} has a {type(layer).__name__} layer before (or without) a layer with a kernel; "
                "SynOps count linear connections: Dense and convolution layers, average pooling, up-sampling, and "
                "layers that only rearrange values (Flatten, Reshape, padding, cropping).")
    return prefix


def _ones_kernel_apply(stage, values):
    """A (counts) for the connection of `stage`: its linear op with kernel 1, bias 0 (a
    pooling layer's average becomes the sum over its window: one synapse per input)."""
    out = values
    for layer in _connection(stage):
        if getattr(layer, "kernel", None) is None:
            area = 1.0
            if isinstance(layer, FIXED_CONNECTIONS[:3]):
                area = float(np.prod(layer.pool_size))
            elif isinstance(layer, FIXED_CONNECTIONS[3:6]):
                spatial = out.shape[1:-1] if layer.data_format == "channels_last" else out.shape[2:]
                area = float(np.prod(spatial))
            out = layer(out) * area
            continue
        replaced = [ops.ones(v.shape, v.dtype) if v is layer.kernel else ops.zeros(v.shape, v.dtype)
                    for v in layer.trainable_variables]
        out, _ = layer.stateless_call(replaced, [ops.convert_to_tensor(v) for v in layer.non_trainable_variables], out)
    return out


def synaptic_operations(block, inputs):
    """SynOps per sample of every connection of `block` on `inputs` (what the block sees).

    Returns {"connections": [...], "layers": [...]}: per connection its name, "from"/"to"
    layers, "synops" (mean per sample over T steps) and "input_macs" (static input: the
    multiply-accumulates of F^1, computed once); per spiking layer its neuron count and
    spike rate (spikes per neuron per step, unweighted).
    """
    from keras_fsnn.layers import FeedbackSpikingBlock

    if not isinstance(block, FeedbackSpikingBlock):
        raise TypeError(f"Argument `block` must be a FeedbackSpikingBlock; received {type(block).__name__}.")
    counts = block.simulate(inputs, record_residuals=False, count_spikes=True)["counts"]
    n = len(block.forward)
    batch = float(ops.shape(counts[0])[0])

    def synops(stage, source):
        return float(ops.sum(_ones_kernel_apply(stage, source))) / batch

    rows = []
    x = ops.cast(inputs, "float32")
    if block.input_type == "static":
        ones = ops.ones_like(x[:1])
        rows.append({"connection": "F1 (input)", "from": "input", "to": "layer 1", "synops": 0.0,
                     "input_macs": float(ops.sum(_ones_kernel_apply(block.forward[0], ones)))})
    else:
        rows.append({"connection": "F1 (input spikes)", "from": "input", "to": "layer 1",
                     "synops": synops(block.forward[0], ops.sum(x, axis=1)), "input_macs": 0.0})
    for l in range(1, n):
        rows.append({"connection": f"F{l + 1}", "from": f"layer {l}", "to": f"layer {l + 1}",
                     "synops": synops(block.forward[l], counts[l - 1]), "input_macs": 0.0})
    if block.feedback is not None:
        rows.append({"connection": "W1 (feedback)", "from": f"layer {n}", "to": "layer 1",
                     "synops": synops(block.feedback, counts[-1]), "input_macs": 0.0})
    layers = [{"layer": f"layer {l + 1}", "neurons": int(np.prod(ops.shape(c)[1:])),
               "spike_rate": float(ops.mean(c)) / block.time_steps} for l, c in enumerate(counts)]
    return {"connections": rows, "layers": layers}


def energy_report(block, inputs, device="loihi"):
    """SynOps and the energy estimate (joules per sample) of `block` on `device`."""
    spec = validation.choose("device", device, DEVICES)
    counted = synaptic_operations(block, inputs)
    connections = counted["connections"]
    total_synops = sum(r["synops"] for r in connections)
    total_macs = sum(r["input_macs"] for r in connections)
    return {
        "device": spec.name,
        "source": spec.source,
        "connections": connections,
        "layers": counted["layers"],
        "synops_per_sample": total_synops,
        "input_macs_per_sample": total_macs,
        "joules_per_sample": total_synops * spec.joules_per_synop + total_macs * spec.joules_per_mac,
    }
