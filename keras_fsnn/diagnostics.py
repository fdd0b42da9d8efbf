"""Where a layer keeps what a user wants to watch: per-layer firing rates, the equilibrium
residual of the forward simulation, and the residual and iteration count of the backward
pass (computed inside a custom gradient, so it only reaches Python through
`backend.report`); for the spike-based backward (SPIDE) also its firing rate. Besides the
last call's values, the sums over an epoch's training calls, which a monitor reads once
per epoch instead of copying values to the host after every batch."""

import numpy as np

FIELDS = ("backward_residual", "backward_iterations", "backward_failed", "backward_firing_rate")
KINDS = (float, int, bool, float)


class BackwardReport:
    """The backward passes of one layer: the last one's relative residual, iterations
    (solver iterations or backward time steps), failure flag and, if reported, the backward
    stage's firing rate; and their sums since the last `reset()`.

    On TensorFlow `backend.report` assigns `variables` and adds to `sums` (works under
    XLA); on JAX it calls `store` from a host callback, which keeps both on the host.
    `values()` reads whichever was written last. A backward mode reports the first values
    in `FIELDS` order (three, or all four). `sums` holds [passes, residual, iterations,
    failures, firing rate].
    """

    SUMS = 5

    def __init__(self, variables, sums):
        self.variables, self.sums = variables, sums
        self._host = None
        self._host_sums = None

    def store(self, *values):
        self._host = [kind(np.asarray(v)) for kind, v in zip(KINDS, values)]
        update = np.array(self.sum_update([float(v) for v in self._host]))
        self._host_sums = update if self._host_sums is None else self._host_sums + update

    def sum_update(self, values):
        """[1, residual, iterations, failed, firing rate] of one pass, for `sums`."""
        return [1.0] + list(values) + [0.0] * (4 - len(values))

    def values(self):
        if self._host is not None:
            values = self._host
        else:
            values = [kind(np.asarray(v.numpy() if hasattr(v, "numpy") else v)) for kind, v in zip(KINDS, self.variables)]
        return dict(zip(FIELDS, values))

    def epoch(self):
        """Means over the passes since `reset()` ({} without any), and the failures."""
        from keras_fsnn import backend

        backend.flush_reports()
        sums = self._host_sums if self._host_sums is not None else np.asarray(
            self.sums.numpy() if hasattr(self.sums, "numpy") else self.sums)
        passes = float(sums[0])
        if passes == 0:
            return {}
        reported = FIELDS[:len(self.variables)]
        means = {name: float(total) / passes for name, total in zip(FIELDS, sums[1:]) if name in reported}
        means.pop("backward_failed", None)
        means["backward_failures"] = int(round(float(sums[3])))
        return means

    def reset(self):
        self._host_sums = None
        self.sums.assign(np.zeros(self.SUMS, "float32"))
