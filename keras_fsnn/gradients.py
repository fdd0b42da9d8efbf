"""Backward modes: how a block turns the gradient at its simulated equilibrium into weight
gradients. A mode is a small configuration object, looked up by name in `GRADIENTS`.

The shared skeleton (see `FeedbackSpikingBlock.call`): simulate spikes for T steps with no
gradient, read the (weighted) average rates a[T], evaluate the fixed-point map once with
autodiff, z = f(a[T]), and let the backward mode decide what gradient reaches z. A mode
with `through_time = True` (the BPTT baseline) instead differentiates the simulation.
"""

import keras
from keras import ops

from keras_fsnn import backend, solvers, surrogates, validation


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
        solver: "broyden" (default, the paper's choice) or "fixed_point" (the damped
            iteration y <- (y + J^T y + g)/2 of paper 000 F.3.2).
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


GRADIENTS = {"ide": ImplicitDifferentiation, "bptt": BackpropagationThroughTime, "one_step": OneStepGradient}


def get_gradient(name, solver="broyden", solver_steps=30, solver_tol=1e-5, surrogate=None, surrogate_width=1.0):
    """Build a backward mode by name ("ide" | "bptt" | "one_step") from the block's arguments."""
    mode = validation.choose("gradient", name, GRADIENTS)
    if mode is not BackpropagationThroughTime:
        if surrogate is not None:
            raise ValueError(
                f"Argument `surrogate` applies to gradient='bptt' only; received surrogate={surrogate!r} "
                f"with gradient={name!r} (IDE never differentiates the spike function).")
        if mode is OneStepGradient:
            return OneStepGradient()
        return ImplicitDifferentiation(solver=solver, steps=solver_steps, tol=solver_tol)
    return BackpropagationThroughTime(surrogate or "rectangular", surrogate_width)
