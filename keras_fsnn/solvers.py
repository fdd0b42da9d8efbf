"""Solvers for the adjoint equation of implicit differentiation.

Paper 000 §3.2 and Algorithm 1: the gradient of a loss L at an equilibrium a* = f(a*) needs
y = (I - J_f^T)^{-1} g with g = dL/da* and J_f the Jacobian of f at a*. Every solver sees
J_f^T only through `apply_jt(y)` (a vector-Jacobian product) and treats every sample of the
batch as its own linear system (the Jacobian of the block is block-diagonal per sample,
up to batch-statistics coupling in training-mode batch norm, which the residual still
measures exactly). `broyden` is the paper's; `gmres` is the optimal Krylov method for this
linear equation and the cheapest where J_f acts per sample; `fixed_point` is the damped
iteration.

Each solver returns a `SolveResult`: the iterate with the lowest residual seen, its relative
residual ||y - J^T y - g|| / ||g|| (the largest over the batch), the number of iterations
run, and whether it failed (residual non-finite or not below 1, i.e. no better than y = 0).
Non-finite entries of the solution are replaced by 0 so a failed solve never turns into NaN
weights; the failure is reported instead.
"""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_fsnn import backend, validation

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

    def _local(self, k, slot):
        """Whether slot `slot` lies in block k, and its index there (clipped into the block)."""
        inside = ops.logical_and(ops.greater_equal(slot, self.starts[k]), ops.less(slot, self.starts[k] + self.lengths[k]))
        return inside, ops.clip(slot - self.starts[k], 0, self.lengths[k] - 1)

    def read(self, blocks, slot):
        """Slot `slot` of the history: (batch, size)."""
        if backend.updates_in_place():  # a select over the blocks, no conditional (see `write`)
            value = None
            for k, b in enumerate(blocks):
                inside, local = self._local(k, slot)
                row = ops.take(b, local, axis=1)
                value = row if value is None else ops.where(inside, row, value)
            return value
        return ops.switch(slot // _BLOCK, [
            lambda blocks, k=k: ops.take(blocks[k], slot - self.starts[k], axis=1)
            for k in range(len(blocks))], blocks)

    def write(self, blocks, slot, value):
        """The blocks with `value` (batch, size) in slot `slot`.

        Where the compiler updates arrays in place (XLA), every block gets a one-row update
        (the new row in its block, the old row written back elsewhere): a conditional
        would hand the whole history through its branches, which XLA copies, two full
        copies per iteration. In TensorFlow's graph mode an update copies its block, so
        the conditional writes into the one block that holds the slot."""
        zero = ops.zeros((), ops.dtype(slot))  # indices of one integer type (JAX with x64)
        if backend.updates_in_place():
            updated = []
            for k, b in enumerate(blocks):
                inside, local = self._local(k, slot)
                row = ops.where(inside, value, ops.take(b, local, axis=1))
                updated.append(ops.slice_update(b, [zero, local, zero], row[:, None, :]))
            return tuple(updated)

        def write_into(k):
            def branch(blocks, value):
                new = ops.slice_update(blocks[k], [zero, slot - self.starts[k], zero], value[:, None, :])
                return blocks[:k] + (new,) + blocks[k + 1:]
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
    rebuilding it. All of it but J^T and the two writes is `update`, which TensorFlow's
    graph mode runs as one XLA computation (`backend.fused`).

    A pair is kept only where v . dG is usable and u is finite (the sum of its entries), so
    no non-finite value enters the history. Both conditions also make the writes of u and v
    depend on every read of both histories, and the pair to evict is read right after the
    previous iteration's writes (carried to the next): under XLA, where the history is
    updated in place, no read is then left unordered with a write, which would make XLA copy
    the history at every iteration (docs/benchmarks.md).
    """
    shape = ops.shape(rhs)
    g = _per_sample(rhs)
    g_norm = _norm(g) + _TINY
    memory = min(memory, steps)
    history = _History(memory)

    def h_times(i, us, vs, x):  # H x
        return -x + history.combine(us, history.project(vs, x, i), i)

    def times_h(i, us, vs, x):  # x^T H
        return -x + history.combine(vs, history.project(us, x, i), i)

    def dot(a, b):
        return ops.sum(a * b, axis=-1, keepdims=True)

    def update(i, y, jt_y, gy, step, us, vs, u_old, v_old, best, best_residual):
        """An iteration's arithmetic but the J^T product: G(y) from J^T y, the residual, the
        rank-one pair (u, v) and the next step. It only reads the history and returns the
        pair to write, so that a compiled `update` never copies the history out. (u_old,
        v_old): the pair this iteration's write evicts."""
        gy_new = jt_y + g - y
        residual = _norm(gy_new) / g_norm
        best, best_residual = _keep_best(y, residual, best, best_residual)

        d_gy = gy_new - gy
        v = times_h(i, us, vs, step)
        h_d_gy = h_times(i, us, vs, d_gy)
        denominator = dot(v, d_gy)
        usable = ops.logical_and(ops.greater(ops.abs(denominator), _TINY), ops.isfinite(denominator))
        u = (step - h_d_gy) / ops.where(usable, denominator, 1.0)
        usable = ops.logical_and(usable, ops.isfinite(ops.sum(u, axis=-1, keepdims=True)))
        u = ops.where(usable, u, 0.0)
        v = ops.where(usable, v, 0.0)
        step_new = step - h_d_gy - u * dot(v, gy_new) + u_old * dot(v_old, gy_new)
        return y + step_new, gy_new, step_new, u, v, best, best_residual

    update = backend.fused(update)

    def cond(i, y, gy, step, us, vs, u_old, v_old, best, best_residual):
        return ops.logical_and(ops.less(i, steps), ops.greater(ops.max(best_residual), tol))

    def body(i, y, gy, step, us, vs, u_old, v_old, best, best_residual):
        # y: the point to evaluate (the last one + step); gy: G at the last one
        jt_y = _per_sample(apply_jt(ops.reshape(y, shape)))
        y_next, gy, step, u, v, best, best_residual = update(i, y, jt_y, gy, step, us, vs, u_old, v_old, best,
                                                             best_residual)
        slot = ops.mod(i, memory)
        us, vs = history.write(us, slot, u), history.write(vs, slot, v)
        evicted = ops.mod(i + 1, memory)  # the slot the next iteration overwrites (this one's if memory is 1)
        return i + 1, y_next, gy, step, us, vs, history.read(us, evicted), history.read(vs, evicted), best, best_residual

    # from y = 0: G(0) = g, and the first step is -H G(0) = g
    zeros = ops.zeros_like(g)
    empty = history.zeros(ops.shape(g)[0], ops.shape(g)[1], g.dtype)
    start = (ops.convert_to_tensor(0, "int32"), g, g, g, empty, empty, zeros, zeros, zeros, ops.ones_like(g_norm))
    out = ops.while_loop(cond, body, start, maximum_iterations=steps)
    return _finish(out[8], out[9], out[0], shape)


def gmres(apply_jt, rhs, steps=30, tol=1e-5, memory=30):
    """Restarted GMRES on (I - J^T) y = g, from y = 0 (Saad & Schultz, 1986).

    A cycle of GMRES from the residual r = g - (I - J^T) y finds the correction in the
    Krylov space span{r, J^T r, ..., (J^T)^{k-1} r} that leaves the smallest residual. The
    adjoint equation is linear, so for a per-sample J this is the optimal Krylov solver:
    after k J^T products no method built from them has a smaller residual, Broyden
    included. It is also cheaper per iteration: one (batch, memory + 1, size) basis instead
    of Broyden's two (batch, 27, size) histories, read twice per iteration (classical
    Gram-Schmidt: h = V w, then w - V^T h) against Broyden's four reads. A cycle has at most
    `memory` iterations (GMRES(m)); the default, 30, makes the paper's 30 steps one cycle.

    The small least-squares problem min ||beta e_1 - H_k z|| (H_k: the Arnoldi Hessenberg
    matrix) is kept in QR form, one Givens rotation per iteration, so its residual
    |(Q_k^T)[k, 0]| is known without forming the correction. When every sample's is below
    its target, or the iterations are spent, the correction V_k z is formed and the true
    residual measured with one more J^T product (not counted in `iterations`); that is what
    is reported. Each sample has its own Krylov space, which is exact when J^T acts per
    sample. Training-mode batch norm inside f couples the samples slightly, so the true
    residual can stay above the estimate; a new cycle then starts from the true residual,
    until the tolerance is met or `steps` iterations have been run in all. Unlike the
    stationary iterations, GMRES needs no contraction: it converges whenever I - J^T is
    invertible.
    """
    shape = ops.shape(rhs)
    g = _per_sample(rhs)
    batch, size = ops.shape(g)[0], ops.shape(g)[1]
    g_norm = _norm(g) + _TINY
    memory = min(memory, steps)
    slots = memory + 1  # v_0 ... v_memory; the last is written but never used
    basis = _History(slots)
    floor = 10.0 * float(np.finfo(keras.backend.standardize_dtype(g.dtype)).eps)

    def A(v):
        return v - _per_sample(apply_jt(ops.reshape(v, shape)))

    def unit(index, n):
        return ops.one_hot(index, n, dtype=g.dtype)

    def row(matrix, e):  # e^T matrix for a one-hot e, per sample
        return ops.sum(matrix * e[None, :, None], axis=1)

    def cycle(r, budget, targets):
        """Arnoldi from r for at most `budget` iterations, until the least-squares residual
        relative to ||r|| is below `targets` (batch,) for every sample. Returns the
        correction V_k z and k."""

        def cond(k, v, blocks, qt, triangle, estimate):
            return ops.logical_and(ops.less(k, budget), ops.any(ops.greater(estimate, targets)))

        def body(k, v, blocks, qt, triangle, estimate):
            # Arnoldi: w = A v_k made orthogonal to v_0 ... v_k; column k of H is (h, ||w||).
            w = A(v)
            h = basis.project(blocks, w, k + 1)
            w = w - basis.combine(blocks, h, k + 1)
            w_norm = _norm(w)
            v_next = ops.where((w_norm > _TINY)[:, None], w / (w_norm[:, None] + _TINY), 0.0)
            blocks = basis.write(blocks, k + 1, v_next)
            e_k, e_next = unit(k, slots), unit(k + 1, slots)
            column = ops.squeeze(ops.matmul(qt, (h + w_norm[:, None] * e_next)[:, :, None]), -1)
            # One Givens rotation zeroes the subdiagonal entry ||w|| against column[k].
            a, b = ops.sum(column * e_k, axis=1), w_norm
            radius = ops.sqrt(a * a + b * b)
            rotates = radius > _TINY
            c = ops.where(rotates, a / (radius + _TINY), 1.0)[:, None]
            s = ops.where(rotates, b / (radius + _TINY), 0.0)[:, None]
            # A column with nothing left (v_k = 0 after an exact breakdown) gets R[k, k] = 1;
            # it multiplies v_k = 0, so its z_k is harmless.
            diagonal = ops.where(rotates, radius, 1.0)
            r_column = column * (1.0 - e_k - e_next) + diagonal[:, None] * e_k
            triangle = triangle + r_column[:, :memory, None] * unit(k, memory)[None, None, :]
            row_k, row_next = row(qt, e_k), row(qt, e_next)
            qt = (qt + e_k[None, :, None] * (c * row_k + s * row_next - row_k)[:, None, :]
                  + e_next[None, :, None] * (c * row_next - s * row_k - row_next)[:, None, :])
            estimate = ops.abs(ops.sum(qt[:, :, 0] * e_next, axis=1))
            return k + 1, v_next, blocks, qt, triangle, estimate

        r_norm = _norm(r)
        v0 = r / (r_norm[:, None] + _TINY)
        first, *rest = basis.zeros(batch, size, g.dtype)
        blocks = (ops.concatenate([v0[:, None, :], first[:, 1:]], axis=1), *rest)
        qt = ops.broadcast_to(ops.eye(slots, dtype=g.dtype), (batch, slots, slots))
        triangle = ops.zeros((batch, memory, memory), dtype=g.dtype)
        start = (ops.convert_to_tensor(0, "int32"), v0, blocks, qt, triangle, ops.ones_like(r_norm))
        k, _, blocks, qt, triangle, _ = ops.while_loop(cond, body, start, maximum_iterations=memory)
        # z = R_k^{-1} (||r|| Q_k^T e_1)[:k]. The unused trailing part of R is set to the
        # identity with a zero right-hand side, so one fixed-size triangular solve gives z.
        used = ops.cast(ops.less(ops.arange(memory), k), g.dtype)
        triangle = triangle + ops.eye(memory, dtype=g.dtype)[None] * (1.0 - used)[None, None, :]
        gamma = r_norm[:, None] * qt[:, :memory, 0] * used[None, :]
        z = ops.squeeze(ops.solve_triangular(triangle, gamma[:, :, None], lower=False), -1)
        z = ops.concatenate([z, ops.zeros((batch, 1), dtype=g.dtype)], axis=1)
        return basis.combine(blocks, z, k), k

    def outer_cond(i, y, r, best, best_residual):
        return ops.logical_and(ops.less(i, steps), ops.greater(ops.max(best_residual), tol))

    def outer_body(i, y, r, best, best_residual):
        # A cycle also ends at `floor` (a few float epsilons), where its estimate stops
        # meaning anything, so that a coupled or rounding-limited solve is refined from r.
        targets = ops.maximum(tol * g_norm / (_norm(r) + _TINY), floor)
        correction, k = cycle(r, ops.minimum(steps - i, memory), targets)
        y = y + correction
        r = g - A(y)
        best, best_residual = _keep_best(y, _norm(r) / g_norm, best, best_residual)
        return i + ops.maximum(k, 1), y, r, best, best_residual

    zeros = ops.zeros_like(g)
    start = (ops.convert_to_tensor(0, "int32"), zeros, g, zeros, ops.ones_like(g_norm))
    i, _, _, best, best_residual = ops.while_loop(outer_cond, outer_body, start, maximum_iterations=steps)
    return _finish(best, best_residual, i, shape)


SOLVERS = {"broyden": broyden, "fixed_point": fixed_point, "gmres": gmres}


def get_solver(name):
    """Look a solver up by name ("broyden" | "fixed_point" | "gmres" | a registered one)."""
    return validation.choose("solver", name, SOLVERS)


def register_solver(name, solver):
    """Make `solver(apply_jt, rhs, steps, tol[, memory]) -> SolveResult` known as
    `solver=name` to IDE (`gradients.IDE(solver=name)` and the layers' short form)."""
    name = str(name).lower()
    if not callable(solver):
        raise TypeError(f"register_solver({name!r}, ...) needs a function; received {solver!r}.")
    if name in SOLVERS and SOLVERS[name] is not solver:
        raise ValueError(f"A solver named {name!r} is registered already.")
    SOLVERS[name] = solver
    return solver


def takes_memory(name):
    """Whether the solver `name` has a `memory` option."""
    import inspect

    return "memory" in inspect.signature(get_solver(name)).parameters
