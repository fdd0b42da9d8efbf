"""Exact spike-time gradients by forward propagation (FP) for event-driven LIF networks.

Paper 004 (Lee, Haghighatshoar, Karbasi, AISTATS 2023). Independent of the FSNN layers of
this package; NumPy float64 throughout, Keras for the optimizer, callbacks and variables.

    neuron      the LIF kernel and the exact threshold-crossing solver (§2, §4.2)
    simulation  exact event-driven simulation of feed-forward layers with causal sets (Alg. 1)
    gradients   the implicit-function-theorem system L dF/dW = -dV/dW, forward substitution (§3, Alg. 2)
    losses      first-spike cross-entropy (§5.3); spike-count/rate losses for surrogate baselines
    model       ExactSpikingNetwork: predict_times / predict / fit with a Keras optimizer

See docs/fp.md.
"""

from keras_fsnn.fp import gradients, losses, neuron, simulation
from keras_fsnn.fp.losses import FirstSpikeCrossEntropy, first_spike_predictions
from keras_fsnn.fp.model import ExactSpikingNetwork
from keras_fsnn.fp.simulation import (
    LayerSpikes,
    NetworkSpikes,
    simulate_layer,
    simulate_network,
)

__all__ = [
    "ExactSpikingNetwork",
    "FirstSpikeCrossEntropy",
    "LayerSpikes",
    "NetworkSpikes",
    "first_spike_predictions",
    "gradients",
    "losses",
    "neuron",
    "simulate_layer",
    "simulate_network",
    "simulation",
]
