"""The adjoint solvers solve (I - A^T) y = g, report their residual and iterations, and
report failure (with a finite, never-NaN solution) when there is no contraction."""

import numpy as np
import pytest
from conftest import EXECUTION_MODES, in_mode
from keras import ops

from keras_fsnn import solvers


def linear_system(rng, batch=3, size=12, radius=0.7):
    a = rng.normal(size=(batch, size, size))
    a = np.stack([m * radius / np.max(np.abs(np.linalg.eigvals(m))) for m in a])
    g = rng.normal(size=(batch, size))
    return a, g


def apply_jt(a):
    at = ops.convert_to_tensor(np.transpose(a, (0, 2, 1)).astype("float32"))
    return lambda y: ops.einsum("bij,bj->bi", at, y)


@pytest.mark.parametrize("name,steps", [("broyden", 40), ("fixed_point", 200), ("gmres", 40)])
def test_solver_matches_dense_solve(name, steps):
    rng = np.random.default_rng(0)
    a, g = linear_system(rng)
    result = solvers.get_solver(name)(apply_jt(a), ops.convert_to_tensor(g.astype("float32")), steps=steps, tol=1e-6)
    want = np.stack([np.linalg.solve(np.eye(12) - a[i].T, g[i]) for i in range(3)])
    np.testing.assert_allclose(ops.convert_to_numpy(result.solution), want, rtol=1e-3, atol=1e-4)
    assert float(result.residual) < 1e-5
    assert not bool(result.failed)
    assert 1 <= int(result.iterations) <= steps


def test_broyden_needs_fewer_iterations_than_fixed_point():
    rng = np.random.default_rng(1)
    a, g = linear_system(rng, radius=0.9)
    rhs = ops.convert_to_tensor(g.astype("float32"))
    broyden = solvers.broyden(apply_jt(a), rhs, steps=200, tol=1e-5)
    fixed = solvers.fixed_point(apply_jt(a), rhs, steps=200, tol=1e-5)
    assert int(broyden.iterations) < int(fixed.iterations)


@pytest.mark.parametrize("name", ["broyden", "fixed_point", "gmres"])
def test_divergence_is_reported_and_solution_stays_finite(name):
    rng = np.random.default_rng(2)
    a, g = linear_system(rng, radius=3.0)  # I - A^T is solvable, but no iteration contracts
    result = solvers.get_solver(name)(apply_jt(a * 1e20), ops.convert_to_tensor(g.astype("float32")), steps=30)
    assert bool(result.failed)
    assert np.all(np.isfinite(ops.convert_to_numpy(result.solution)))


def test_unknown_solver_lists_known_ones():
    with pytest.raises(ValueError, match=r"`solver`.*'broyden', 'fixed_point', 'gmres'.*'newton'"):
        solvers.get_solver("newton")


def dense_broyden(a, g, steps, memory):
    """Textbook limited-memory good Broyden with an explicit inverse-Jacobian matrix per
    sample: H = -I + sum of the `memory` newest u v^T, step = -H G(y). Returns the iterate
    with the lowest residual, as the solver does."""
    results = []
    for a_i, g_i in zip(a.astype(np.float64), g.astype(np.float64)):
        G = lambda y: a_i.T @ y + g_i - y  # noqa: E731
        pairs, y, gy = [], np.zeros_like(g_i), g_i.copy()
        H = -np.eye(len(g_i))
        step = -H @ gy
        best, best_residual = None, np.inf
        for _ in range(steps):
            y_new = y + step
            gy_new = G(y_new)
            residual = np.linalg.norm(gy_new) / np.linalg.norm(g_i)
            if residual < best_residual:
                best, best_residual = y_new, residual
            d_gy = gy_new - gy
            v = H.T @ step
            u = (step - H @ d_gy) / (v @ d_gy)
            pairs = (pairs + [(u, v)])[-memory:]
            H = -np.eye(len(g_i)) + sum(np.outer(p, q) for p, q in pairs)
            y, gy, step = y_new, gy_new, -H @ gy_new
        results.append(best)
    return np.stack(results)


@pytest.mark.parametrize("steps,memory", [(25, 9), (25, 14), (25, 3), (20, 27), (12, 1)])
@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_broyden_recurrence_matches_the_textbook_method_with_a_full_matrix(steps, memory, mode, always_fused):
    """The solver's history-free step recurrence, its ring buffer (memory < steps) and its
    blocks of 7 slots (a partial last block, a single block, no wrap, a memory of one pair)
    give the iterates of Broyden's method with an explicit H; eagerly, in graph mode (its
    bookkeeping compiled by `backend.fused`) and under XLA."""
    rng = np.random.default_rng(3)
    a, g = linear_system(rng, batch=4, size=40, radius=0.97)
    solve = in_mode(lambda rhs: solvers.broyden(apply_jt(a), rhs, steps=steps, tol=0.0, memory=memory), mode)
    result = solve(ops.convert_to_tensor(g.astype("float32")))
    assert int(result.iterations) == steps
    want = dense_broyden(a, g, steps, memory)
    np.testing.assert_allclose(ops.convert_to_numpy(result.solution), want, rtol=2e-3, atol=2e-4)


def dense_gmres(a, g, steps):
    """Per sample, the y in span{g, A g, ..., A^(k-1) g} (A = I - a^T) with the smallest
    residual, by a float64 least-squares solve over an orthonormalised Krylov basis."""
    results = []
    for a_i, g_i in zip(a.astype(np.float64), g.astype(np.float64)):
        A = np.eye(len(g_i)) - a_i.T
        krylov = [g_i]
        for _ in range(steps - 1):
            krylov.append(A @ krylov[-1])
        basis, _ = np.linalg.qr(np.stack(krylov, axis=1))
        z, *_ = np.linalg.lstsq(A @ basis, g_i, rcond=None)
        results.append(basis @ z)
    return np.stack(results)


@pytest.mark.parametrize("steps", [1, 3, 6, 9])
def test_gmres_gives_the_minimal_residual_krylov_iterate(steps):
    """After k iterations GMRES's iterate is the least-squares solution over the k-dimensional
    Krylov space, and its residual is no larger than Broyden's after the same k products
    (Broyden's iterates lie in the same space)."""
    rng = np.random.default_rng(4)
    a, g = linear_system(rng, batch=4, size=40, radius=0.97)
    rhs = ops.convert_to_tensor(g.astype("float32"))
    result = solvers.gmres(apply_jt(a), rhs, steps=steps, tol=0.0)
    assert int(result.iterations) == steps
    np.testing.assert_allclose(ops.convert_to_numpy(result.solution), dense_gmres(a, g, steps), rtol=2e-3, atol=2e-4)
    broyden = solvers.broyden(apply_jt(a), rhs, steps=steps, tol=0.0)
    assert float(result.residual) <= float(broyden.residual) * (1 + 1e-4)


def test_gmres_with_a_short_memory_restarts_and_still_converges():
    rng = np.random.default_rng(6)
    a, g = linear_system(rng, batch=3, size=40, radius=0.97)
    rhs = ops.convert_to_tensor(g.astype("float32"))
    full = solvers.gmres(apply_jt(a), rhs, steps=300, tol=1e-5, memory=40)
    short = solvers.gmres(apply_jt(a), rhs, steps=300, tol=1e-5, memory=5)  # GMRES(5)
    want = np.stack([np.linalg.solve(np.eye(40) - a[i].T, g[i]) for i in range(3)])
    for result in (full, short):
        np.testing.assert_allclose(ops.convert_to_numpy(result.solution), want, rtol=1e-3, atol=1e-3)
        assert float(result.residual) < 1e-5 and not bool(result.failed)
    # a 40-dimensional system: at most 40 iterations in exact arithmetic, more when restarts
    # throw the older directions away
    assert int(full.iterations) <= 42 and int(short.iterations) > int(full.iterations) + 20


def test_gmres_solves_a_system_no_stationary_iteration_contracts_on():
    rng = np.random.default_rng(2)
    a, g = linear_system(rng, radius=3.0)  # spectral radius of J^T is 3
    rhs = ops.convert_to_tensor(g.astype("float32"))
    result = solvers.gmres(apply_jt(a), rhs, steps=40, tol=1e-5)
    want = np.stack([np.linalg.solve(np.eye(12) - a[i].T, g[i]) for i in range(3)])
    np.testing.assert_allclose(ops.convert_to_numpy(result.solution), want, rtol=1e-3, atol=1e-3)
    assert float(result.residual) < 1e-4 and not bool(result.failed)
    assert bool(solvers.fixed_point(apply_jt(a), rhs, steps=40).failed)


def test_gmres_restarts_from_the_true_residual_when_the_samples_are_coupled():
    """A J^T that mixes the samples (as training-mode batch norm does) breaks the per-sample
    Krylov relation; the restarted cycles still drive the true residual down."""
    rng = np.random.default_rng(5)
    a, g = linear_system(rng, batch=4, size=12, radius=0.7)
    per_sample = apply_jt(a)

    def coupled(y):  # per-sample part plus 0.1 x the batch mean
        return per_sample(y) + 0.1 * ops.mean(y, axis=0, keepdims=True)

    result = solvers.gmres(coupled, ops.convert_to_tensor(g.astype("float32")), steps=60, tol=1e-5)
    stacked = np.zeros((48, 48))  # the whole batch's J^T as one matrix
    for i in range(4):
        stacked[12 * i:12 * (i + 1), 12 * i:12 * (i + 1)] = a[i].T
    stacked += 0.1 / 4 * np.kron(np.ones((4, 4)), np.eye(12))
    stacked = np.eye(48) - stacked
    want = np.linalg.solve(stacked, g.reshape(-1)).reshape(4, 12)
    np.testing.assert_allclose(ops.convert_to_numpy(result.solution), want, rtol=1e-3, atol=1e-3)
    assert float(result.residual) < 1e-5 and not bool(result.failed)
