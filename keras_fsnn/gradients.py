"""Backward modes: how a block turns the gradient at its simulated equilibrium into weight
gradients. A mode is a small configuration object, looked up by name in `GRADIENTS`.

The shared skeleton (see `FeedbackSpikingBlock.call`): simulate spikes for T steps with no
gradient, read the (weighted) average rates a[T], evaluate the fixed-point map once with
autodiff, z = f(a[T]), and let the backward mode decide what gradient reaches z. A mode
with `through_time = True` (the BPTT baseline) instead differentiates the simulation.
"""

import keras
from keras import ops

from keras_fsnn import backend, neurons, solvers, surrogates, validation


class ImplicitDifferentiation:
    """IDE: implicit differentiation of the equilibrium a* = f(a*) (paper 000 §3.2, §4.2,
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
            of this linear equation, cheaper where J^T acts per sample) or "fixed_point"
            (the damped iteration y <- (y + J^T y + g)/2 of paper 000 F.3.2).
        steps: the most solver iterations (paper: 30); each costs one J^T product.
        tol: stop early once every sample's relative residual ||y - J^T y - g||/||g|| < tol.
    """

    name = "ide"
    through_time = False

    def __init__(self, solver="broyden", steps=30, tol=1e-5):
        self.solve = solvers.get_solver(solver)
        self.steps = validation.integer("solver_steps", steps, minimum=1)
        self.tol = validation.number("solver_tol", tol, low=0.0)

    def attach(self, fixed_point_map, z, equilibrium, operands, report=None):
        """Return `equilibrium` carrying the implicit gradient through `z`.

        Args:
            fixed_point_map: pure function (a, operands) -> f(a), the map whose Jacobian
                enters the adjoint equation.
            z: fixed_point_map(equilibrium, operands), recorded by autodiff.
            equilibrium: the simulated rates a[T] (no gradient).
            operands: a nest of tensors f depends on (weights, average input, masks); they are
                passed explicitly so no traced value is captured by the custom gradient.
            report: a `BackwardReport` that receives the solve's residual and iterations.
        """
        flat = keras.tree.flatten(operands)

        @ops.custom_gradient
        def implicit(z, a, *flat_operands):
            def grad(*args, upstream=None):
                g = args[0] if upstream is None else upstream
                nest = keras.tree.pack_sequence_as(operands, list(flat_operands))
                _, pullback = backend.vjp(lambda v: fixed_point_map(v, nest), a)
                result = self.solve(pullback, g, steps=self.steps, tol=self.tol)
                if report is not None:
                    backend.report(report, result.residual, result.iterations, result.failed)
                zeros = tuple(ops.zeros_like(t) for t in flat_operands)
                return (result.solution, ops.zeros_like(a)) + zeros

            return a + ops.zeros_like(z), grad

        return implicit(z, equilibrium, *flat)


class BackpropagationThroughTime:
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

    def __init__(self, surrogate="rectangular", width=1.0):
        self.spike = surrogates.get_surrogate(surrogate, width)


class OneStepGradient:
    """The Jacobian-free ("one-step") gradient: the incoming gradient g = dL/da[T] is sent
    through z = f(a[T]) unchanged, i.e. (I - J_f^T)^{-1} is replaced by I and
    dL/dtheta = (df/dtheta)^T g. No solve, so a backward costs one pass through f; it is
    exact only where J_f = 0 (a feed-forward block). It is what the released MPIS code
    effectively trains with (seed-code.md §4.4) and what paper 003's reported speed
    matches; offered as a documented switch, not as the default.
    """

    name = "one_step"
    through_time = False

    def attach(self, fixed_point_map, z, equilibrium, operands, report=None):
        @ops.custom_gradient
        def passthrough(z, a):
            def grad(*args, upstream=None):
                g = args[0] if upstream is None else upstream
                return g, ops.zeros_like(a)

            return a + ops.zeros_like(z), grad

        return passthrough(z, equilibrium)


class SpikeBasedImplicitDifferentiation:
    """SPIDE: the adjoint equation solved by spiking dynamics (paper 002 §4.2, eq. 7-11,
    Algorithm 2), so the backward pass is event-driven too.

    After the forward stage (T_F steps) the block keeps each layer's rate a^l, the masks
    m^l = [0 < a^l < 1] and the average input. The backward stage runs T_B steps of ternary
    neurons (`keras_fsnn.neurons.TernaryNeuron`, V_th^b, u_rest^b) along the transposed
    connections, with rho = 1 / (V_th - u_rest) of the forward neurons:

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
    stages' vector-Jacobian products, exact for these linear stages.

    Args:
        time_steps: T_B >= 1, backward steps (paper: 100 MNIST, 250 CIFAR).
        threshold: V_th^b > 0 (paper: 0.5).
        resting_potential: u_rest^b < V_th^b (paper: -V_th^b, Proposition 1; 0 gives the
            ablation "w/o B").
        scale: s > 0, the gain on g (paper: 100 MNIST, 400 CIFAR-10, 500 CIFAR-100). The
            paper multiplies the loss by s and divides the learning rate by s; applying s
            inside the backward stage and dividing the result by s is the same update
            without touching the loss or the optimizer (for weight decay see docs/spide.md).
        leak: lambda of the forward neurons; the backward neurons leak alike and beta is the
            lambda-weighted average (the released code's LIF variant).
    """

    name = "spide"
    through_time = False

    def __init__(self, time_steps=100, threshold=0.5, resting_potential=-0.5, scale=1.0, leak=1.0):
        self.time_steps = validation.integer("backward_time_steps", time_steps, minimum=1)
        validation.number("backward_threshold", threshold, low=0.0, low_open=True)
        validation.number("backward_resting_potential", resting_potential)
        if not threshold > resting_potential:
            raise ValueError(
                "Argument `backward_threshold` must be greater than `backward_resting_potential`; received "
                f"backward_threshold={threshold!r}, backward_resting_potential={resting_potential!r}.")
        self.scale = validation.number("backward_scale", scale, low=0.0, low_open=True)
        self.neuron = neurons.TernaryNeuron(threshold, resting_potential, leak)

    def propagate(self, g, transposes, masks, rho):
        """The T_B-step backward stage.

        Args:
            g: the (already scaled) input current of the last layer, shaped like a^N.
            transposes: N functions; transposes[l] maps a signal on layer l+1's neurons
                (zero-based) to a current on layer l's, v -> F^{l+1}T (D^{l+1} . v), and
                transposes[N-1] is the feedback's W^1T (D_f . v) (None without feedback).
            masks: m^1..m^N (float 0/1), rho: 1 / (V_th - u_rest).

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
                # Summed as a reduction, not `g + ...`: TensorFlow's grappler merges the add
                # tree potential + g + feedback into one AddN, rewrites a large AddN inside a
                # loop into a temporary variable, and the second training step then fails
                # with AlreadyExistsError (TF graph mode, batch >= ~64).
                current = ops.sum(ops.stack([g, rho * transposes[-1](masks[0] * first_spikes)]), axis=0)
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

    def attach(self, currents, equilibrium, operands, backward_graph, report=None):
        """Return `equilibrium` whose gradient reaches `currents` from the spiking backward.

        Args:
            currents: the differentiable stage currents F^1(a^0), ..., F^N(a^{N-1}) and, with
                a feedback, W^1(a^N), each computed on the saved (constant) rates.
            equilibrium: a^N[T_F] (no gradient).
            operands: a nest of tensors the backward needs, passed explicitly so nothing
                traced is captured by the custom gradient.
            backward_graph: pure function operands -> (transposes, masks, rho) (see
                `propagate`).
            report: a `BackwardReport` receiving residual, T_B, failure and firing rate.
        """
        flat = keras.tree.flatten(operands)
        n_currents = len(currents)

        @ops.custom_gradient
        def spiking_backward(a, *args):
            def grad(*grads, upstream=None):
                g = grads[0] if upstream is None else upstream
                nest = keras.tree.pack_sequence_as(operands, list(args[n_currents:]))
                transposes, masks, rho = backward_graph(nest)
                g_scaled = self.scale * g
                betas, firing_rate = self.propagate(g_scaled, transposes, masks, rho)
                if report is not None:
                    residual = self.residual(betas[-1], g_scaled, transposes, masks, rho)
                    failed = ops.logical_not(ops.all(ops.isfinite(betas[-1])))
                    backend.report(report, residual, self.time_steps, failed, firing_rate)
                cotangents = [rho * m * b / self.scale for m, b in zip(masks, betas)]
                if n_currents > len(masks):  # the feedback feeds layer 1
                    cotangents.append(cotangents[0])
                zeros = tuple(ops.zeros_like(t) for t in args[n_currents:])
                return (ops.zeros_like(a),) + tuple(cotangents) + zeros

            return a + sum(ops.sum(c) * 0.0 for c in args[:n_currents]), grad

        return spiking_backward(equilibrium, *currents, *flat)


GRADIENTS = {"ide": ImplicitDifferentiation, "bptt": BackpropagationThroughTime, "one_step": OneStepGradient,
             "spide": SpikeBasedImplicitDifferentiation}


SPIDE_DEFAULTS = {"backward_time_steps": 100, "backward_threshold": 0.5, "backward_resting_potential": -0.5,
                  "backward_scale": 1.0}


def get_gradient(name, solver="broyden", solver_steps=30, solver_tol=1e-5, surrogate=None, surrogate_width=1.0,
                 spide_options=None, leak=1.0):
    """Build a backward mode by name ("ide" | "bptt" | "one_step" | "spide") from the
    block's arguments. `spide_options` holds the block's backward_* arguments (None where
    not given); they apply to gradient="spide" only."""
    mode = validation.choose("gradient", name, GRADIENTS)
    given = {k: v for k, v in (spide_options or {}).items() if v is not None}
    if mode is SpikeBasedImplicitDifferentiation:
        options = {**SPIDE_DEFAULTS, **given}
        return SpikeBasedImplicitDifferentiation(
            options["backward_time_steps"], options["backward_threshold"], options["backward_resting_potential"],
            options["backward_scale"], leak)
    if given:
        argument, value = next(iter(given.items()))
        raise ValueError(
            f"Argument `{argument}` applies to gradient='spide' only (the spike-based backward stage); "
            f"received {argument}={value!r} with gradient={name!r}.")
    if mode is not BackpropagationThroughTime:
        if surrogate is not None:
            raise ValueError(
                f"Argument `surrogate` applies to gradient='bptt' only; received surrogate={surrogate!r} "
                f"with gradient={name!r} (IDE never differentiates the spike function).")
        if mode is OneStepGradient:
            return OneStepGradient()
        return ImplicitDifferentiation(solver=solver, steps=solver_steps, tol=solver_tol)
    return BackpropagationThroughTime(surrogate or "rectangular", surrogate_width)
