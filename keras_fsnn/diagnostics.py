"""Where a block keeps what a user wants to watch: per-layer firing rates, the equilibrium
residual of the forward simulation, and the residual and iteration count of the backward
pass (computed inside a custom gradient, so it only reaches Python through
`backend.report`); for the spike-based backward (SPIDE) also its firing rate."""

import numpy as np

FIELDS = ("backward_residual", "backward_iterations", "backward_failed", "backward_firing_rate")
KINDS = (float, int, bool, float)


class BackwardReport:
    """The last backward pass of one layer: relative residual, iterations (solver
    iterations or backward time steps), failure flag and, if given, the backward stage's
    firing rate.

    On TensorFlow `backend.report` assigns `variables` (works under XLA); on JAX it calls
    `store` from a host callback. `values()` reads whichever was written last. A backward
    mode reports the first values in `FIELDS` order (three, or all four).
    """

    def __init__(self, *variables):
        self.variables = variables
        self._host = None

    def store(self, *values):
        self._host = [kind(np.asarray(v)) for kind, v in zip(KINDS, values)]

    def values(self):
        if self._host is not None:
            values = self._host
        else:
            values = [kind(np.asarray(v.numpy() if hasattr(v, "numpy") else v)) for kind, v in zip(KINDS, self.variables)]
        return dict(zip(FIELDS, values))
