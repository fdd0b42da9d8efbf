"""Backward modes: how a spiking equilibrium layer turns the gradient at its simulated
equilibrium into weight gradients.

Every layer runs the same skeleton (`keras_fsnn.layers.equilibrium`): simulate the spikes
for T steps with no gradient, read the (weighted) average rates a[T] of the last layer(s),
and hand a mode an `EquilibriumProblem`: the equilibrium, the fixed-point map f (pure, as a
function of a and explicit operands), its value z = f(a[T]) recorded by autodiff, the
per-layer rates and the layer itself. The mode returns the layer's output, a[T] carrying
the gradient it defines:

    IDE       (I - J_f^T)^{-1} g through z: implicit differentiation (paper 000)
    OneStep   g through z unchanged: the Jacobian-free gradient (the released MPIS code)
    BPTT      the simulation itself differentiated, surrogate spike derivative (baseline)
    SPIDE     the adjoint solved by a second, spiking stage of ternary neurons (paper 002)

A mode is a small option object, resolved by `get` from a name with the layer's short-form
arguments (`gradient="ide", solver="gmres"`), a config or an instance; `register_gradient`
adds one's own. An option the chosen mode does not use is an error, never ignored.
"""

import copy

import keras
from keras import ops

from keras_fsnn import backend, neurons, options, solvers, surrogates, validation
from keras_fsnn.diagnostics import FIELDS


class BackwardMode:
    """The interface of a backward mode (see the module docstring).

    Class attributes: `name` (its registry key), `through_time` (True: the layer simulates
    with `self.spike`, differentiably, and `attach` gets those rates as the equilibrium),
    `report_fields` (what it reports: `diagnostics.FIELDS[:3]` or all four) and
    `short_forms` ({layer argument: constructor argument} of the layer arguments that
    configure it, e.g. IDE's `solver_steps` -> `steps`)."""

    name = None
    through_time = False
    report_fields = FIELDS[:3]
    short_forms = {}
    spike = None

    def attach(self, problem):
        """The layer's output for `problem` (an `EquilibriumProblem`), carrying this mode's
        gradient."""
        raise NotImplementedError

    def bind(self, layer):
        """This mode as `layer` uses it (a copy where the mode keeps per-layer state); raises
        ValueError if `layer` cannot use it."""
        return self

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def layer_arguments(self):
        """This mode's options as the layer's short-form arguments (what a layer's config
        stores for a registered mode), or None where one has no short form."""
        config, inverse = self.get_config(), {v: k for k, v in self.short_forms.items()}
        if not set(config) <= set(inverse):
            return None
        return {inverse[key]: value for key, value in config.items()}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def _passthrough(z, equilibrium, gradient_of):
    """`equilibrium` as the value, and `gradient_of(g, *operands)` as the gradient reaching
    z (the same shape); nothing reaches the equilibrium itself."""

    @ops.custom_gradient
    def attached(z, a):
        def grad(*args, upstream=None):
            g = args[0] if upstream is None else upstream
            return gradient_of(g), ops.zeros_like(a)

        return a + ops.zeros_like(z), grad

    return attached(z, equilibrium)


@keras.saving.register_keras_serializable(package="keras_fsnn")
class IDE(BackwardMode):
    """Implicit differentiation of the equilibrium a* = f(a*) (paper 000 §3.2, §4.2,
    Algorithm 1).

    The forward value is the SNN's rate a[T]; in the backward the incoming gradient
    g = dL/da[T] is replaced by the solution y of the adjoint equation

        (I - J_f^T) y = g,      J_f = df/da at a[T],

    and y flows on through z = f(a[T]) to every weight and to the input, which gives
    dL/dtheta = (df/dtheta)^T (I - J_f^T)^{-1} g (eq. 3). Nothing is stored per time step:
    the backward needs only a[T], the average input and the weights. The spike function is
    never differentiated.

    Args:
        solver: "broyden" (default, the paper's choice), "gmres" (the optimal Krylov solver
            of this linear equation, cheaper where J^T acts per sample), "fixed_point" (the
            damped iteration y <- (y + J^T y + g)/2 of paper 000 F.3.2) or a solver
            registered with `solvers.register_solver`.
        steps: the most solver iterations (paper: 30); each costs one J^T product.
        tol: stop early once every sample's relative residual ||y - J^T y - g||/||g|| < tol.
        memory: the solver's memory (Broyden: history slots, default 27; GMRES: the cycle
            length m, default 30); None: the solver's default.
    """

    name = "ide"
    short_forms = {"solver": "solver", "solver_steps": "steps", "solver_tol": "tol", "solver_memory": "memory"}

    def __init__(self, solver="broyden", steps=30, tol=1e-5, memory=None):
        self.solver = validation.choose("solver", solver, {k: k for k in solvers.SOLVERS})
        self.solve = solvers.get_solver(self.solver)
        self.steps = validation.integer("solver_steps", steps, minimum=1)
        self.tol = validation.number("solver_tol", tol, low=0.0)
        self.memory = None if memory is None else validation.integer("solver_memory", memory, minimum=1)
        if self.memory is not None and not solvers.takes_memory(self.solver):
            raise ValueError(f"Argument `solver_memory`={memory!r}: solver={self.solver!r} keeps no memory.")

    def get_config(self):
        config = {"solver": self.solver, "steps": self.steps, "tol": self.tol}
        return {**config, "memory": self.memory} if self.memory is not None else config

    def solve_adjoint(self, pullback, g):
        options = {"memory": self.memory} if self.memory is not None else {}
        return self.solve(pullback, g, steps=self.steps, tol=self.tol, **options)

    def attach(self, problem):
        z = problem.value()
        operands = problem.operands
        flat = keras.tree.flatten(operands)

        @ops.custom_gradient
        def implicit(z, a, *flat_operands):
            def grad(*args, upstream=None):
                g = args[0] if upstream is None else upstream
                nest = keras.tree.pack_sequence_as(operands, list(flat_operands))
                _, pullback = backend.vjp(lambda v: problem.adjoint_map(v, nest), a)
                result = self.solve_adjoint(pullback, g)
                backend.report(problem.report, result.residual, result.iterations, result.failed)
                return (result.solution, ops.zeros_like(a)) + tuple(ops.zeros_like(t) for t in flat_operands)

            return a + ops.zeros_like(z), grad

        return implicit(z, problem.equilibrium, *flat)


ImplicitDifferentiation = IDE


@keras.saving.register_keras_serializable(package="keras_fsnn")
class OneStep(BackwardMode):
    """The Jacobian-free ("one-step") gradient: the incoming gradient g = dL/da[T] is sent
    through z = f(a[T]) unchanged, i.e. (I - J_f^T)^{-1} is replaced by I and
    dL/dtheta = (df/dtheta)^T g. No solve, so a backward costs one pass through f; it is
    exact only where J_f = 0 (a feed-forward block). It is what the released MPIS code
    effectively trains with (seed-code.md §4.4) and what paper 003's reported speed
    matches; offered as a documented switch, not as the default.
    """

    name = "one_step"

    def attach(self, problem):
        return _passthrough(problem.value(), problem.equilibrium, lambda g: g)


OneStepGradient = OneStep


@keras.saving.register_keras_serializable(package="keras_fsnn")
class BPTT(BackwardMode):
    """BPTT with a surrogate spike derivative: the baseline IDE is compared against (STBP,
    paper 000 ref. [44], Table 4). The same T-step simulation as IDE is unrolled and
    differentiated, each spike H(u - V_th) getting the surrogate derivative h(u - V_th)
    (gradients also flow through the reset). Memory grows with T: every step's state is
    kept for the backward pass.

    Batch norm inside the simulation uses stored statistics exactly as in the IDE forward
    pass; the moving statistics are updated by the same training-mode evaluation of f at
    a[T] as in IDE (its value is not used), so both modes train the same model.

    Args:
        surrogate: "rectangular" (STBP, default), "triangle" or "sigmoid".
        width: the surrogate's width a, in units of membrane potential.
    """

    name = "bptt"
    through_time = True
    short_forms = {"surrogate": "surrogate", "surrogate_width": "width"}

    def __init__(self, surrogate="rectangular", width=1.0):
        self.spike = surrogates.get_surrogate(surrogate, width)

    def get_config(self):
        return {"surrogate": self.spike.name, "width": self.spike.width}

    def attach(self, problem):
        return problem.equilibrium  # the simulated rates, differentiable through the simulation


BackpropagationThroughTime = BPTT


@keras.saving.register_keras_serializable(package="keras_fsnn")
class SPIDE(BackwardMode):
    """SPIDE: the adjoint equation solved by spiking dynamics (paper 002 §4.2, eq. 7-11,
    Algorithm 2), so the backward pass is event-driven too.

    After the forward stage (T_F steps) the layer keeps each layer's rate a^l, the slopes of
    the rate map there (m^l = [0 < a^l < 1] and rho = 1 / (V_th - u_rest) for (L)IF
    neurons: `Neuron.rate_map_slope`) and the average input. The backward stage runs T_B
    steps of ternary neurons (`keras_fsnn.neurons.TernaryNeuron`, V_th^b, u_rest^b) along
    the transposed connections:

        u^N[t+1] = u^N[t] + s g + rho W^1T (D_f . m^1 . s^1[t])  - (V_b - u_b) s^N[t+1]
        u^l[t+1] = u^l[t] + rho F^{l+1}T (D^{l+1} . m^{l+1} . s^{l+1}[t+1]) - (V_b - u_b) s^l[t+1]

    where g = dL/da^N arrives from the layers above, s is the gain `scale` (the paper's loss
    scale, undone on the result), D are the dropout masks and each spike carries the value
    +-(V_b - u_b). The time-averaged spikes beta^l converge to the implicit-differentiation
    solution: beta^N -> (I - J_f^T)^{-1} s g and beta^l to its image in layer l
    (Theorems 1-2). The weight gradients are local products of the two stages' rates,

        dL/dF^l = rho (m^l . beta^l) a^{l-1}T / s,   dL/db^l = rho m^l . beta^l / s,
        dL/dW^1 = rho (m^1 . beta^1) a^NT / s        (a^0 = the average input),

    computed here by sending rho m^l beta^l / s into each stage's current F^l(a^{l-1}) as its
    gradient, which works for any linear stage (dense, conv, conv-transpose, pooling). As in
    the paper (Algorithm 2) and the released code, the dropout mask takes part in the
    propagation but not in the weight gradient. The transposed connections are the
    stages' vector-Jacobian products, exact for these linear stages. It needs a chain of
    stages with a feedback (a `FeedbackSpikingBlock`) without batch norm (paper 002 §4.4).

    Args:
        time_steps: T_B >= 1, backward steps (paper: 100 MNIST, 250 CIFAR).
        threshold: V_th^b > 0 (paper: 0.5).
        resting_potential: u_rest^b < V_th^b (paper: -V_th^b, Proposition 1; 0 gives the
            ablation "w/o B").
        scale: s > 0, the gain on g (paper: 100 MNIST, 400 CIFAR-10, 500 CIFAR-100). The
            paper multiplies the loss by s and divides the learning rate by s; applying s
            inside the backward stage and dividing the result by s is the same update
            without touching the loss or the optimizer (for weight decay see docs/spide.md).
    The backward neurons leak like the layer's forward neurons (lambda), and beta is the
    lambda-weighted average (the released code's LIF variant).
    """

    name = "spide"
    report_fields = FIELDS
    short_forms = {"backward_time_steps": "time_steps", "backward_threshold": "threshold",
                   "backward_resting_potential": "resting_potential", "backward_scale": "scale"}

    def __init__(self, time_steps=100, threshold=0.5, resting_potential=-0.5, scale=1.0):
        self.time_steps = validation.integer("backward_time_steps", time_steps, minimum=1)
        validation.number("backward_threshold", threshold, low=0.0, low_open=True)
        validation.number("backward_resting_potential", resting_potential)
        if not threshold > resting_potential:
            raise ValueError(
                "Argument `backward_threshold` must be greater than `backward_resting_potential`; received "
                f"backward_threshold={threshold!r}, backward_resting_potential={resting_potential!r}.")
        self.scale = validation.number("backward_scale", scale, low=0.0, low_open=True)
        self.neuron = neurons.TernaryNeuron(threshold, resting_potential, 1.0)

    def get_config(self):
        return {"time_steps": self.time_steps, "threshold": self.neuron.threshold,
                "resting_potential": self.neuron.resting_potential, "scale": self.scale}

    def bind(self, layer):
        if not hasattr(layer, "spiking_backward_graph"):
            raise ValueError(f"gradient='spide' needs a chain of stages with a feedback (a FeedbackSpikingBlock); "
                             f"{type(layer).__name__} '{layer.name}' is not one.")
        for k, stage in enumerate(layer._stages):
            if any(isinstance(sub, keras.layers.BatchNormalization)
                   for sub in stage._flatten_layers(include_self=True, recursive=True)):
                raise ValueError(
                    f"Stage {k} ({stage.name}) contains BatchNormalization, but gradient='spide' has no batch "
                    "norm (paper 002 §4.4: batch statistics are not available to neuromorphic hardware, and the "
                    "spiking backward stage cannot train them). Remove it or use gradient='ide'.")
        bound = copy.copy(self)
        bound.neuron = neurons.TernaryNeuron(self.neuron.threshold, self.neuron.resting_potential, layer.neuron.leak)
        return bound

    def propagate(self, g, transposes, masks, rho):
        """The T_B-step backward stage.

        Args:
            g: the (already scaled) input current of the last layer, shaped like a^N.
            transposes: N functions; transposes[l] maps a signal on layer l+1's neurons
                (zero-based) to a current on layer l's, v -> F^{l+1}T (D^{l+1} . v), and
                transposes[N-1] is the feedback's W^1T (D_f . v) (None without feedback).
            masks: m^1..m^N (float 0/1), rho: the rate map's slope where it is linear
                (1 / (V_th - u_rest)).

        Returns (betas, firing_rate): beta^1..beta^N and the fraction of (neuron, step)
        pairs that fired a +-1 spike.
        """
        n = len(masks)
        neuron = self.neuron
        value = neuron.reset_amount
        zeros = [ops.zeros_like(m) for m in masks]

        def body(t, state):
            potentials, totals, first_spikes, count = state
            potentials, totals = list(potentials), list(totals)
            current = g
            if transposes[-1] is not None:
                current = g + rho * transposes[-1](masks[0] * first_spikes)
            spikes = [None] * n
            for layer in range(n - 1, -1, -1):
                if layer < n - 1:
                    current = rho * transposes[layer](masks[layer + 1] * spikes[layer + 1])
                potentials[layer], s = neuron.step(potentials[layer], current)
                spikes[layer] = value * s
                totals[layer] = neuron.accumulate(totals[layer], spikes[layer])
                count = count + ops.sum(ops.abs(s))
            return potentials, totals, spikes[0], count

        state = ([neuron.initial_state(z) for z in zeros], list(zeros), zeros[0], ops.zeros((), "float32"))
        _, totals, _, count = backend.time_loop(self.time_steps, body, state)
        neurons_total = sum(ops.cast(ops.size(m), "float32") for m in masks) * self.time_steps
        return [total / neuron.normaliser(self.time_steps) for total in totals], count / neurons_total

    def residual(self, beta_last, g, transposes, masks, rho):
        """Mean relative residual ||beta^N - g - J^T beta^N|| / ||g|| of the adjoint equation."""
        y = beta_last
        for layer in range(len(masks) - 1, 0, -1):
            y = rho * transposes[layer - 1](masks[layer] * y)
        mapped = rho * transposes[-1](masks[0] * y) if transposes[-1] is not None else 0.0
        norm = lambda v: ops.sqrt(ops.sum(ops.square(ops.reshape(v, (ops.shape(v)[0], -1))), axis=-1))  # noqa: E731
        return ops.mean(norm(beta_last - g - mapped) / ops.maximum(norm(g), 1e-12))

    def attach(self, problem):
        """The equilibrium, whose gradient reaches the layer's stage currents (computed on
        the saved rates) from the spiking backward stage."""
        layer = problem.layer
        currents = layer.spiking_currents(problem)
        operands = problem.operands + (problem.rates,)
        flat = keras.tree.flatten(operands)
        n_currents = len(currents)

        @ops.custom_gradient
        def spiking_backward(a, *args):
            def grad(*grads, upstream=None):
                g = grads[0] if upstream is None else upstream
                nest = keras.tree.pack_sequence_as(operands, list(args[n_currents:]))
                transposes, masks, rho = layer.spiking_backward_graph(nest)
                g_scaled = self.scale * g
                betas, firing_rate = self.propagate(g_scaled, transposes, masks, rho)
                residual = self.residual(betas[-1], g_scaled, transposes, masks, rho)
                failed = ops.logical_not(ops.all(ops.isfinite(betas[-1])))
                backend.report(problem.report, residual, self.time_steps, failed, firing_rate)
                cotangents = [rho * m * b / self.scale for m, b in zip(masks, betas)]
                if n_currents > len(masks):  # the feedback feeds layer 1
                    cotangents.append(cotangents[0])
                zeros = tuple(ops.zeros_like(t) for t in args[n_currents:])
                return (ops.zeros_like(a),) + tuple(cotangents) + zeros

            # the value is the simulated equilibrium, as in every mode (IDE: a + 0 * z); the
            # currents enter the gradient only
            return a + ops.zeros_like(sum(ops.sum(c) for c in args[:n_currents])), grad

        return spiking_backward(problem.equilibrium, *currents, *flat)


SpikeBasedImplicitDifferentiation = SPIDE

GRADIENTS = {"ide": IDE, "bptt": BPTT, "one_step": OneStep, "spide": SPIDE}
SHORT_FORMS = tuple(key for mode in GRADIENTS.values() for key in mode.short_forms)


def register_gradient(name, package="keras_fsnn_user"):
    """Class decorator: make a `BackwardMode` subclass known as `gradient=name` to every
    layer (and serialisable under `package`, so `.keras` files holding it load)."""
    return options.registrar(GRADIENTS, BackwardMode, "backward mode", name, package)


def get(identifier, **short):
    """The backward mode `identifier` names: a registered name ("ide", "bptt", "one_step",
    "spide", ...) built from the layer's short-form arguments in `short` (None: not given;
    e.g. solver="gmres" for "ide"), a `BackwardMode` instance or its config
    (`keras_fsnn.options`). A short form the mode does not take raises ValueError naming it."""

    def build(cls, given):
        for argument, value in given.items():
            if argument not in cls.short_forms:
                users = [n for n, mode in GRADIENTS.items() if argument in mode.short_forms]
                where = f"applies to gradient={users[0]!r} only" if len(users) == 1 else "is not a layer argument"
                raise ValueError(f"Argument `{argument}` {where}; received {argument}={value!r} with "
                                 f"gradient={cls.name!r}.")
        return cls(**{cls.short_forms[k]: v for k, v in given.items()})

    return options.resolve("gradient", identifier, GRADIENTS, BackwardMode, "backward mode", short, build)
