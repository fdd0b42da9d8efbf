"""Solvers for the adjoint equation of implicit differentiation.

Paper 000 §3.2 and Algorithm 1: the gradient of a loss L at an equilibrium a* = f(a*) needs
y = (I - J_f^T)^{-1} g with g = dL/da* and J_f the Jacobian of f at a*. Both solvers see
J_f^T only through `apply_jt(y)` (a vector-Jacobian product) and treat every sample of the
batch as its own linear system (the Jacobian of the block is block-diagonal per sample,
up to batch-statistics coupling in training-mode batch norm, which the residual still
measures exactly).

Each solver returns a `SolveResult`: the iterate with the lowest residual seen, its relative
residual ||y - J^T y - g|| / ||g|| (the largest over the batch), the number of iterations
run, and whether it failed (residual non-finite or not below 1, i.e. no better than y = 0).
Non-finite entries of the solution are replaced by 0 so a failed solve never turns into NaN
weights; the failure is reported instead.
"""

from typing import NamedTuple

from keras import ops

from keras_fsnn import validation

_TINY = 1e-30


class SolveResult(NamedTuple):
    solution: object
    residual: object
    iterations: object
    failed: object


def _per_sample(x):
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x), axis=-1))


def _finish(best, best_residual, iterations, shape):
    finite = ops.isfinite(best_residual)
    residual = ops.max(ops.where(finite, best_residual, float("inf")))
    solution = ops.where(ops.isfinite(best), best, ops.zeros_like(best))
    failed = ops.logical_not(ops.less(residual, 1.0))
    return SolveResult(ops.reshape(solution, shape), residual, iterations, failed)


def _keep_best(candidate, residual, best, best_residual):
    better = ops.logical_and(ops.isfinite(residual), ops.less(residual, best_residual))
    best = ops.where(better[:, None], candidate, best)
    return best, ops.where(better, residual, best_residual)


def fixed_point(apply_jt, rhs, steps=30, tol=1e-5):
    """Damped fixed-point iteration y <- (y + J^T y + g) / 2 from y = g (paper 000 F.3.2).

    This is the paper's formula. The released N-MNIST script iterates y <- (J^T y + g) / 2,
    which converges to (2I - J^T)^{-1} g instead; it is not offered.
    """
    shape = ops.shape(rhs)
    g = _per_sample(rhs)
    g_norm = _norm(g) + _TINY

    def matvec(y):
        return _per_sample(apply_jt(ops.reshape(y, shape)))

    def cond(i, y, best, best_residual):
        return ops.logical_and(ops.less(i, steps), ops.greater(ops.max(best_residual), tol))

    def body(i, y, best, best_residual):
        jy = matvec(y)
        residual = _norm(y - jy - g) / g_norm
        best, best_residual = _keep_best(y, residual, best, best_residual)
        return i + 1, 0.5 * (y + jy + g), best, best_residual

    start = (ops.convert_to_tensor(0, "int32"), g, ops.zeros_like(g), ops.ones_like(g_norm))
    i, _, best, best_residual = ops.while_loop(cond, body, start, maximum_iterations=steps)
    return _finish(best, best_residual, i, shape)


_BLOCK = 7  # history slots per block (see `broyden`)


class _History:
    """The (batch, memory, size) history of one Broyden factor, kept as blocks of up to
    `_BLOCK` slots so that blocks no step has written yet are never read.

    Slot s is first written by iteration s, so before iteration i only the slots below
    min(i, memory) hold anything; the others are zero and contribute nothing to the
    products. Skipping them (a `cond` per block) halves a 30-iteration solve's memory
    traffic, which is what a Broyden iteration costs at conv-layer sizes on a CPU.
    """

    def __init__(self, memory):
        self.starts = list(range(0, memory, _BLOCK))
        self.lengths = [min(_BLOCK, memory - start) for start in self.starts]

    def zeros(self, batch, size, dtype):
        return tuple(ops.zeros((batch, n, size), dtype=dtype) for n in self.lengths)

    def _if_written(self, i, start, read, shape, dtype):
        return ops.cond(ops.greater(i, start), read, lambda: ops.zeros(shape, dtype))

    def project(self, blocks, x, i):
        """history . x per sample and slot: (batch, size) -> (batch, memory)."""
        return ops.concatenate([
            self._if_written(i, start, lambda b=b: ops.squeeze(ops.matmul(b, x[:, :, None]), -1),
                             (ops.shape(x)[0], n), x.dtype)
            for b, start, n in zip(blocks, self.starts, self.lengths)], axis=1)

    def combine(self, blocks, weights, i):
        """sum_m weights[b, m] history[b, m]: (batch, memory) -> (batch, size). A batched
        matmul, which TensorFlow's CPU kernels run at twice the speed of the einsum."""
        total = 0.0
        for b, start, n in zip(blocks, self.starts, self.lengths):
            w = weights[:, None, start:start + n]
            total = total + self._if_written(i, start, lambda b=b, w=w: ops.squeeze(ops.matmul(w, b), 1),
                                             (ops.shape(b)[0], ops.shape(b)[2]), b.dtype)
        return total

    def replace(self, blocks, slot, value):
        """Write `value` (batch, size) into `slot`; returns (what the slot held, new blocks)."""
        batch, size = ops.shape(value)[0], ops.shape(value)[1]

        def write_into(k):
            def branch(blocks, value):
                at = [0, slot - self.starts[k], 0]
                old = ops.squeeze(ops.slice(blocks[k], at, (batch, 1, size)), 1)
                new = ops.slice_update(blocks[k], at, value[:, None, :])
                return old, blocks[:k] + (new,) + blocks[k + 1:]
            return branch

        return ops.switch(slot // _BLOCK, [write_into(k) for k in range(len(blocks))], blocks, value)


def broyden(apply_jt, rhs, steps=30, tol=1e-5, memory=27):
    """Limited-memory Broyden's method on G(y) = J^T y + g - y = 0, from y = 0.

    The quasi-Newton root finder of the DEQ line of work that IDE uses (paper 000 §3.2,
    F.3.2: "Broyden's method ... with the threshold as 30"). The inverse Jacobian of G is
    approximated per sample as H = -I + sum_k u_k v_k^T, with the `memory` most recent
    rank-one ("good Broyden") updates in a ring buffer; each step y <- y - H G(y) costs one
    J^T product.

    With dy = the last step, dG = G(y + dy) - G(y), v = H^T dy and u = (dy - H dG) / (v . dG),
    the update H' = H + u v^T - u_o v_o^T (u_o, v_o: the pair it evicts) gives the next step
    without another pass over the history, because H G(y) = -dy:

        -H' G(y + dy) = dy - H dG - u (v . G(y + dy)) + u_o (v_o . G(y + dy)).

    So an iteration reads the written part of the (batch, memory, size) history twice per
    factor (for v and H dG) and writes one slot of each, instead of re-reading and
    rebuilding it.
    """
    shape = ops.shape(rhs)
    g = _per_sample(rhs)
    g_norm = _norm(g) + _TINY
    memory = min(memory, steps)
    history = _History(memory)

    def G(y):
        return _per_sample(apply_jt(ops.reshape(y, shape))) + g - y

    def h_times(i, us, vs, x):  # H x
        return -x + history.combine(us, history.project(vs, x, i), i)

    def times_h(i, us, vs, x):  # x^T H
        return -x + history.combine(vs, history.project(us, x, i), i)

    def dot(a, b):
        return ops.sum(a * b, axis=-1, keepdims=True)

    def cond(i, y, gy, step, us, vs, best, best_residual):
        return ops.logical_and(ops.less(i, steps), ops.greater(ops.max(best_residual), tol))

    def body(i, y, gy, step, us, vs, best, best_residual):
        y_new = y + step
        gy_new = G(y_new)
        residual = _norm(gy_new) / g_norm
        best, best_residual = _keep_best(y_new, residual, best, best_residual)

        d_gy = gy_new - gy
        v = times_h(i, us, vs, step)
        h_d_gy = h_times(i, us, vs, d_gy)
        denominator = dot(v, d_gy)
        usable = ops.logical_and(ops.greater(ops.abs(denominator), _TINY), ops.isfinite(denominator))
        safe_denominator = ops.where(usable, denominator, 1.0)
        u = ops.where(usable, (step - h_d_gy) / safe_denominator, 0.0)
        v = ops.where(usable, v, 0.0)
        slot = ops.mod(i, memory)
        u_old, us = history.replace(us, slot, u)
        v_old, vs = history.replace(vs, slot, v)
        step_new = step - h_d_gy - u * dot(v, gy_new) + u_old * dot(v_old, gy_new)
        return i + 1, y_new, gy_new, step_new, us, vs, best, best_residual

    zeros = ops.zeros_like(g)
    empty = history.zeros(ops.shape(g)[0], ops.shape(g)[1], g.dtype)
    start = (ops.convert_to_tensor(0, "int32"), zeros, g, g, empty, empty, zeros, ops.ones_like(g_norm))
    out = ops.while_loop(cond, body, start, maximum_iterations=steps)
    return _finish(out[6], out[7], out[0], shape)


SOLVERS = {"broyden": broyden, "fixed_point": fixed_point}


def get_solver(name):
    """Look a solver up by name ("broyden" | "fixed_point")."""
    return validation.choose("solver", name, SOLVERS)
