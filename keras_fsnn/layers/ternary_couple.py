"""TernaryCouple: ternary spiking neurons (-1, 0, +1) built from pairs of ordinary IF neurons.

Paper 002 (SPIDE) §4.1, eq. 6, Figure 1. These are the neurons of SPIDE's spike-based
backward stage (`FeedbackSpikingBlock(gradient="spide")`), where they carry signed
gradient information; as a layer they run on any sequence of input currents.
"""

import keras
from keras import ops

from keras_fsnn import neurons, validation
from keras_fsnn.layers.stages import numeric_inputs

OUTPUTS = {"spikes": "spikes", "rates": "rates"}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class TernaryCouple(keras.layers.Layer):
    """Ternary spiking neurons driven by a sequence of input currents.

    Each unit integrates its input current I[t] and emits +1 when its membrane potential
    reaches V_th, -1 when it reaches -V_th, resetting by V_th - u_rest (see
    `keras_fsnn.neurons.TernaryNeuron` for the equations). With realisation="coupled"
    every unit is the paper's pair of IF neurons with opposite inputs and a shared reset;
    "direct" simulates the ternary neuron in one membrane. Both give identical spikes.

        couple = keras_fsnn.TernaryCouple(threshold=0.5, resting_potential=-0.5)
        spikes = couple(currents)            # (batch, T, ...) -> (batch, T, ...) in {-1, 0, 1}

    Over T steps of a constant current I, the average output approaches
    clamp(I / (V_th - u_rest), -1, 1) (paper 002 eq. 8-9).

    Args:
        threshold: V_th > 0 (paper 002 backward stage: 0.5).
        resting_potential: u_rest < V_th (paper: -V_th, which makes the rate an unbiased
            estimate, Proposition 1).
        leak: lambda in (0, 1]; 1 is the IF neuron.
        realisation: "coupled" (two IF neurons per unit, the paper's construction) or
            "direct".
        output: "spikes" (batch, T, ...) or "rates": the (lambda-weighted) average spike
            value over the T steps, (batch, ...), as for the block's firing rates.

    Input: (batch, T, ...) currents, T >= 1 (the time axis is axis 1). A unit whose
    current is NaN or +-inf at some step outputs NaN at every step (and as its rate): a
    neuron makes no spike of a NaN potential, so its output would otherwise look like a
    silent unit's.
    """

    def __init__(self, threshold=0.5, resting_potential=-0.5, leak=1.0, realisation="coupled", output="spikes",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.neuron = neurons.TernaryNeuron(threshold, resting_potential, leak, realisation)
        self.output_mode = validation.choose("output", output, OUTPUTS)

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                "TernaryCouple expects a sequence of currents of shape (batch, time, features...); "
                f"received input shape {tuple(input_shape)}.")
        if input_shape[1] is None or input_shape[1] < 1:
            raise ValueError(
                "TernaryCouple needs a known number of time steps >= 1 (axis 1); received input shape "
                f"{tuple(input_shape)}.")

    def compute_output_shape(self, input_shape):
        if self.output_mode == "rates":
            return (input_shape[0],) + tuple(input_shape[2:])
        return tuple(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(numeric_inputs(self, inputs), *args, **kwargs)

    def call(self, inputs):
        currents = ops.cast(inputs, "float32")
        steps = currents.shape[1]
        neuron = self.neuron
        time_major = ops.moveaxis(currents, 1, 0)

        def step(carry, current):
            state = neuron.step(carry[0], current)
            return state, state  # Keras' TensorFlow scan needs the outputs shaped like the carry

        zeros = ops.zeros_like(time_major[0])
        _, (_, spikes) = ops.scan(step, (neuron.initial_state(zeros), zeros), time_major)
        invalid = ops.logical_not(ops.isfinite(ops.sum(ops.stop_gradient(currents) * 0.0, axis=1)))  # per unit
        if self.output_mode == "spikes":
            return ops.where(ops.expand_dims(invalid, 1), float("nan"), ops.moveaxis(spikes, 0, 1))
        weights = neuron.time_weights(steps)
        weights = ops.reshape(weights / ops.sum(weights), (steps,) + (1,) * (len(spikes.shape) - 1))
        return ops.where(invalid, float("nan"), ops.sum(spikes * weights, axis=0))

    def get_config(self):
        return {**super().get_config(), "threshold": self.neuron.threshold,
                "resting_potential": self.neuron.resting_potential, "leak": self.neuron.leak,
                "realisation": self.neuron.realisation, "output": self.output_mode}
