"""Where a block keeps what a user wants to watch: per-layer firing rates, the equilibrium
residual of the forward simulation, and the residual and iteration count of the backward
solve (the part computed inside a custom gradient, which only reaches Python through
`backend.report`)."""

import numpy as np


class BackwardReport:
    """The last backward solve of one block: relative residual, iterations, failure flag.

    On TensorFlow `backend.report` assigns `variables` (works under XLA); on JAX it calls
    `store` from a host callback. `values()` reads whichever was written last.
    """

    def __init__(self, residual, iterations, failed):
        self.variables = (residual, iterations, failed)
        self._host = None

    def store(self, residual, iterations, failed):
        self._host = (float(residual), int(iterations), bool(failed))

    def values(self):
        if self._host is not None:
            residual, iterations, failed = self._host
        else:
            residual, iterations, failed = (np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in self.variables)
            residual, iterations, failed = float(residual), int(iterations), bool(failed)
        return {"backward_residual": residual, "backward_iterations": iterations, "backward_failed": failed}
