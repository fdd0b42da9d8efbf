"""Discrete-time integrate-and-fire neurons and the firing-rate map of their equilibrium.

Paper 000 (IDE), eq. 2, 7, 30 and 33; paper 002 (SPIDE), eq. 1 for the resting potential.
One step of a neuron with leak lambda (1 for IF), threshold V_th and resting potential u_rest:

    u[t+1/2] = lambda * u[t] + I[t]                      (integrate the input current I)
    s[t+1]   = H(u[t+1/2] - V_th)                        (spike: 1 where u >= V_th)
    u[t+1]   = u[t+1/2] - (V_th - u_rest) * s[t+1]       (reset by subtraction)

Membranes start at 0. Potentials and thresholds are in the same (arbitrary) units as the
input current; a spike is 0 or 1. The (weighted) average firing rate after t steps is

    a[t] = sum_{tau=1..t} lambda^(t-tau) s[tau] / sum_{tau=1..t} lambda^(t-tau)

(the plain mean of the spikes for IF), and at equilibrium it satisfies a = sigma(z / (V_th -
u_rest)) where z is the average input current and sigma clamps to [0, 1] (paper 000
Theorem 2 / Proposition 2; paper 002 §4.3 for u_rest != 0).

A neuron is an option object: `neuron="lif"` (with the short forms `leak`, `threshold`,
`resting_potential`) or `neurons.LIF(leak=0.95, threshold=2.0)`, resolved by `get` the way
`keras.initializers.get` resolves a name, a config or an instance. A model of one's own
subclasses `Neuron` (its step, its rate map and that map's slope) and is made known by
`register_neuron`; the layers then train, save and load it like the built-in ones.
"""

import keras
import numpy as np
from keras import ops

from keras_fsnn import options, validation


FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo("float32").tiny: below it 1 / x overflows
FLOAT32_MAX = 3.4028234663852886e38


class Neuron:
    """An integrate-and-fire neuron: leak lambda in (0, 1], threshold V_th and resting
    potential u_rest (a spike subtracts V_th - u_rest). Subclass it for another model and
    override what differs: `step`, `rate_map` and `rate_map_slope` (the equilibrium map
    f and its derivative, which the fixed-point map, the adjoint and SPIDE's backward use),
    `accumulate` / `normaliser` for another rate weighting; `get_config` must return the
    constructor's arguments.

    Args:
        leak: lambda, the factor the membrane keeps per step; 1 is the IF neuron; None: the
            class's `default_leak`.
        threshold: V_th, the membrane potential at which the neuron spikes.
        resting_potential: u_rest < V_th; a spike subtracts V_th - u_rest.
    """

    name = None
    default_leak = 1.0

    def __init__(self, leak=None, threshold=2.0, resting_potential=0.0):
        leak = self.default_leak if leak is None else leak
        self.leak = validation.number("leak", leak, low=0.0, high=1.0, low_open=True)
        if self.leak < 1.0 and float(np.float32(self.leak)) == 1.0:  # the rate's normaliser would be 0 / 0
            raise ValueError(
                f"Argument `leak` must be 1 or a number that float32, in which the simulation runs, does not round "
                f"to 1 (at most about 1 - 2^-24 = 0.99999994); received leak={leak!r}.")
        self.threshold = validation.number("threshold", threshold)
        self.resting_potential = validation.number("resting_potential", resting_potential)
        if not FLOAT32_TINY <= self.threshold - self.resting_potential <= FLOAT32_MAX:
            raise ValueError(
                "Argument `threshold` must be greater than `resting_potential`, by at least float32's "
                f"smallest normal number {FLOAT32_TINY:.7g} and at most its largest {FLOAT32_MAX:.7g} (the reset "
                "subtracts threshold - resting_potential, and the rate map divides by it, in float32); "
                f"received threshold={threshold!r}, resting_potential={resting_potential!r}.")

    @property
    def reset_amount(self):
        """V_th - u_rest: what a spike subtracts, and the scale of the rate map."""
        return self.threshold - self.resting_potential

    def step(self, potential, current, spike=None):
        """One step of eq. 2: returns the new membrane potential and the spikes (0./1.).

        `spike(v)` is the spike function of v = u - V_th; the default is the Heaviside step
        with no gradient, a surrogate (keras_fsnn.surrogates) makes the step differentiable.
        """
        potential = potential * self.leak + current if self.leak != 1.0 else potential + current
        if spike is None:
            spikes = ops.cast(ops.greater_equal(potential, self.threshold), potential.dtype)
        else:
            spikes = spike(potential - self.threshold)
        return potential - self.reset_amount * spikes, spikes

    def initial_state(self, zeros):
        """The membrane state at t = 0 (a potential of 0)."""
        return zeros

    def accumulate(self, total, spikes):
        """Running (weighted) spike count: total <- lambda * total + s."""
        return total * self.leak + spikes if self.leak != 1.0 else total + spikes

    def normaliser(self, steps):
        """sum_{i=0}^{steps-1} lambda^i, the denominator of the weighted rate (steps for IF)."""
        steps = ops.cast(steps, "float32")
        if self.leak == 1.0:
            return steps
        return (1.0 - ops.power(self.leak, steps)) / (1.0 - self.leak)

    def time_weights(self, steps):
        """lambda^(T-1-tau) for tau = 0..T-1: the weights of the weighted average input."""
        exponents = ops.cast(ops.arange(steps - 1, -1, -1), "float32")
        return ops.power(self.leak, exponents)

    def rate_map(self, current):
        """sigma(z / (V_th - u_rest)): the equilibrium firing rate for average current z."""
        return ops.clip(current / self.reset_amount, 0.0, 1.0)

    def rate_map_slope(self, rates):
        """The derivative of the rate map where it gave `rates`, as (mask, gain): the slope
        is gain where mask = 1 (rates strictly inside (0, 1): sigma is linear there) and 0
        elsewhere; gain = 1 / (V_th - u_rest). SPIDE's backward neurons see signals
        through it (paper 002 eq. 7: m^l and rho)."""
        mask = ops.cast(ops.logical_and(rates > 0.0, rates < 1.0), "float32")
        return mask, 1.0 / self.reset_amount

    def get_config(self):
        return {"leak": self.leak, "threshold": self.threshold, "resting_potential": self.resting_potential}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({options})"


NeuronModel = Neuron  # the earlier name


@keras.saving.register_keras_serializable(package="keras_fsnn")
class IF(Neuron):
    """Integrate-and-fire neuron (lambda = 1)."""

    name = "if"
    default_leak = 1.0

    def __init__(self, leak=None, threshold=2.0, resting_potential=0.0):
        if leak not in (None, 1.0, 1):
            raise ValueError(
                f"Argument `leak` must be 1.0 (or None) for neuron='if'; received leak={leak!r}. "
                "Use neuron='lif' for a leaky neuron.")
        super().__init__(1.0, threshold, resting_potential)


@keras.saving.register_keras_serializable(package="keras_fsnn")
class LIF(Neuron):
    """Leaky integrate-and-fire neuron (0 < lambda <= 1; paper 000 uses 0.95 and 0.99)."""

    name = "lif"
    default_leak = 0.95


NEURONS = {"if": IF, "lif": LIF}
SHORT_FORMS = ("leak", "threshold", "resting_potential")  # a layer's arguments that build its neuron


def register_neuron(name, package="keras_fsnn_user"):
    """Class decorator: make a `Neuron` subclass known as `neuron=name` to every layer (and
    serialisable, under `package`, so `.keras` files holding it load).

        @keras_fsnn.neurons.register_neuron("adaptive")
        class Adaptive(keras_fsnn.neurons.Neuron): ...
    """
    return options.registrar(NEURONS, Neuron, "neuron", name, package)


def get(identifier, leak=None, threshold=None, resting_potential=None):
    """The neuron `identifier` names: a registered name ("if", "lif", ...) built with the
    short forms given (None: the neuron's default), a `Neuron` instance, or its
    `keras.saving.serialize_keras_object` config (`keras_fsnn.options`)."""
    short = {"leak": leak, "threshold": threshold, "resting_potential": resting_potential}
    return options.resolve("neuron", identifier, NEURONS, Neuron, "neuron", short, lambda cls, given: cls(**given))


def get_neuron(name, leak=None, threshold=2.0, resting_potential=0.0):
    """A named neuron with its arguments checked (the earlier entry point; see `get`)."""
    return get(name, leak=leak, threshold=threshold, resting_potential=resting_potential)


class TernaryNeuron(Neuron):
    """The ternary spiking neuron of paper 002 §4.1, eq. 6, with leak lambda (1 for IF):

        u[t+1/2] = lambda * u[t] + I[t]
        s[t+1]   = +1 if u[t+1/2] >= V_th,  -1 if u[t+1/2] <= -V_th,  0 otherwise
        u[t+1]   = u[t+1/2] - (V_th - u_rest) * s[t+1]

    It is realised either directly (one membrane, `realisation="direct"`) or, as the paper
    proposes for hardware that only has ordinary neurons, by a coupled pair of IF neurons
    (`realisation="coupled"`): neuron 1 receives I, neuron 2 receives -I, each spikes at
    V_th and subtracts V_th - u_rest, and each spike also reaches the partner through a
    connection of weight V_th - u_rest, which resets it by the same amount (the shared
    reset); the output is s_1 - s_2. The pair keeps u_2 = -u_1 exactly (negation is exact
    in floating point), so both realisations give identical spike trains.

    Args:
        threshold: V_th > 0.
        resting_potential: u_rest < V_th (paper 002's backward stage: V_th = 0.5,
            u_rest = -0.5, so spikes are exactly -1, 0, +1 with reset 1).
        leak: lambda in (0, 1].
        realisation: "direct" or "coupled".
    """

    def __init__(self, threshold=0.5, resting_potential=-0.5, leak=1.0, realisation="direct"):
        validation.number("threshold", threshold, low=0.0, low_open=True)
        super().__init__(leak, threshold, resting_potential)
        self.realisation = validation.choose("realisation", realisation, TERNARY_REALISATIONS)

    def initial_state(self, zeros):
        """Membrane state at t = 0: the potential (direct) or the pair stacked on a new
        leading axis (coupled)."""
        return zeros if self.realisation == "direct" else ops.stack([zeros, zeros])

    name = "ternary"

    def get_config(self):
        return {**super().get_config(), "realisation": self.realisation}

    def rate_map(self, current):
        """clamp(z / (V_th - u_rest), -1, 1): the average spike value for average current z."""
        return ops.clip(current / self.reset_amount, -1.0, 1.0)

    def step(self, state, current, spike=None):
        """One step: returns the new state and the ternary spikes (-1., 0., +1.). The
        (weighted) spike average uses the inherited `accumulate` / `normaliser`."""
        if self.realisation == "direct":
            potential = state
            potential = potential * self.leak + current if self.leak != 1.0 else potential + current
            spikes = (ops.cast(ops.greater_equal(potential, self.threshold), potential.dtype)
                      - ops.cast(ops.less_equal(potential, -self.threshold), potential.dtype))
            return potential - self.reset_amount * spikes, spikes
        first, second = state[0], state[1]
        if self.leak != 1.0:
            first, second = first * self.leak, second * self.leak
        first, second = first + current, second - current
        spike_1 = ops.cast(ops.greater_equal(first, self.threshold), first.dtype)
        spike_2 = ops.cast(ops.greater_equal(second, self.threshold), second.dtype)
        # own reset, and the partner's spike arriving through the coupling weight V_th - u_rest
        first = first - self.reset_amount * spike_1 + self.reset_amount * spike_2
        second = second - self.reset_amount * spike_2 + self.reset_amount * spike_1
        return ops.stack([first, second]), spike_1 - spike_2


TERNARY_REALISATIONS = {"direct": "direct", "coupled": "coupled"}
