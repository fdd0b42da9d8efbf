"""The current-based LIF neuron of paper 004 in closed form, and its exact threshold crossings.

Paper 004 (Lee, Haghighatshoar, Karbasi, "Exact gradient computation for spiking neural
networks through forward propagation"), §2.2 eq. 2 and 4-5, §4.2 and Algorithm 1.

A neuron i receives spikes at times g from input neurons j through a synapse with rate
alpha = 1/tau_s and has membrane rate beta = 1/tau_n (both in 1/time units, alpha != beta).
An input spike at g adds, for t > g, W_ji * h(t - g) to the membrane potential, with the
post-synaptic kernel (eq. 2)

    h(u) = (e^{-alpha u} - e^{-beta u}) / (beta - alpha),   u > 0   (0 for u <= 0)

which is continuous, h(0) = 0, so the potential has no jumps at input spikes. When the
potential reaches the threshold theta (a membrane potential) the neuron fires and the
potential drops by theta ("reset by subtraction", acting on the membrane: the reset kernel is
theta * e^{-beta (t - f)}). With F_i the neuron's own firing times (eq. 4/5):

    V_i(t) = sum_j W_ji sum_{g in F_j, g < t} h(t - g) - theta sum_{f in F_i, f < t} e^{-beta (t - f)}.

Between two events (an input spike or an own spike) the potential is a sum of two
exponentials (paper: A e^{-alpha t} + B e^{-beta t}). Writing it around the membrane decay,

    V(t) = e^{-beta t} (c + a E(t)),   E(t) = (e^{(beta - alpha) t} - 1) / (beta - alpha),
    a = sum_{inputs g < t} W e^{alpha g},
    c = -sum_{inputs g < t} W e^{alpha g} E(g) - theta sum_{own f < t} e^{beta f},

(the same function: A = a / (beta - alpha), B = c - A), the coefficients are plain
cumulative sums over past events in absolute time, and the synaptic current is
I(t) = a e^{-alpha t}, so V'(t) = -beta V(t) + a e^{-alpha t}. Unlike (A, B), which are
1/(beta - alpha) times larger than V and cancel (1e-13 error for the Yin-Yang setting
beta - alpha = 1e-3), (a, c) carry no such factor: E is evaluated with expm1. Times must
keep e^{max(alpha, beta) t} finite (`check_time_range`).

A sum of two exponentials has at most one critical point, so on an interval [lo, hi] the
first crossing of theta is found exactly: bracket it by the end points and the extremum,
then refine by safeguarded Newton iterations to the rounding level of V (no time grid).
Everything here is vectorised over arbitrary array shapes, float64.
"""

import numpy as np

from keras_fsnn import validation

# e^{max(alpha, beta) * t} must stay far from float64 overflow (e^709).
MAX_RATE_TIMES_TIME = 600.0


def check_rates(alpha, beta, theta):
    """Validate (alpha, beta, theta): rates > 0 (1/time), alpha != beta, threshold > 0."""
    alpha = validation.number("alpha", alpha, low=0.0, low_open=True)
    beta = validation.number("beta", beta, low=0.0, low_open=True)
    theta = validation.number("theta", theta, low=0.0, low_open=True)
    if alpha == beta:
        raise ValueError(
            "Arguments `alpha` (synaptic rate) and `beta` (membrane rate) must differ: the kernel "
            "h(u) = (e^{-alpha u} - e^{-beta u}) / (beta - alpha) of paper 004 eq. 2 is undefined for "
            f"alpha == beta; received alpha={alpha!r}, beta={beta!r}.")
    return alpha, beta, theta


def check_time_range(t_max, alpha, beta):
    """Validate the simulation horizon t_max > 0 (time units) against float64 range."""
    t_max = validation.number("t_max", t_max, low=0.0, low_open=True)
    if max(alpha, beta) * t_max > MAX_RATE_TIMES_TIME:
        raise ValueError(
            f"Argument `t_max` is too long for the rates: max(alpha, beta) * t_max must be <= "
            f"{MAX_RATE_TIMES_TIME:g} so that e^(rate * t) stays finite in float64; received "
            f"t_max={t_max!r} with alpha={alpha!r}, beta={beta!r}. Rescale time (multiply the rates "
            "and divide the times by the same factor).")
    return t_max


def kernel(u, alpha, beta):
    """h(u) = (e^{-alpha u} - e^{-beta u}) / (beta - alpha) for u > 0, else 0 (eq. 2).

    The potential (in units of W) that one input spike adds u time units after it arrives.
    Computed as e^{-beta u} * expm1((beta - alpha) u) / (beta - alpha), exact for alpha ~ beta.
    """
    u = np.asarray(u, dtype=np.float64)
    positive = u > 0
    safe = np.where(positive, u, 0.0)
    d = beta - alpha
    value = np.exp(-beta * safe) * np.expm1(d * safe) / d
    return np.where(positive, value, 0.0)


def kernel_derivative(u, alpha, beta):
    """h'(u) = (beta e^{-beta u} - alpha e^{-alpha u}) / (beta - alpha) for u > 0, else 0."""
    u = np.asarray(u, dtype=np.float64)
    positive = u > 0
    safe = np.where(positive, u, 0.0)
    value = (beta * np.exp(-beta * safe) - alpha * np.exp(-alpha * safe)) / (beta - alpha)
    return np.where(positive, value, 0.0)


def growth(t, alpha, beta):
    """E(t) = (e^{(beta - alpha) t} - 1) / (beta - alpha), by expm1 (exact for alpha ~ beta)."""
    d = beta - alpha
    return np.expm1(d * t) / d


def potential(t, a, c, alpha, beta):
    """V(t) = e^{-beta t} (c + a E(t)) and V'(t) = -beta V(t) + a e^{-alpha t}, and the size of
    the terms summed (for the rounding level of V)."""
    decay = np.exp(-beta * t)
    drive = a * growth(t, alpha, beta) * decay
    rest = c * decay
    value = rest + drive
    return value, -beta * value + a * np.exp(-alpha * t), np.abs(rest) + np.abs(drive)


def critical_time(a, c, alpha, beta):
    """The only critical point of V: a e^{-alpha t} = beta V(t) at

        e^{(beta - alpha) t*} = (beta / alpha) (1 - c (beta - alpha) / a),

    t* = [log1p((beta - alpha) / alpha) + log1p(-c (beta - alpha) / a)] / (beta - alpha)
    (NaN where there is none). V''(t*) = -alpha a e^{-alpha t*}: a maximum iff a > 0.
    """
    d = beta - alpha
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (np.log1p(d / alpha) + np.log1p(-c * d / a)) / d


def crossing_bracket(a, c, lo, hi, alpha, beta, theta, v_lo=None, v_hi=None):
    """Where V(t) = e^{-beta t} (c + a E(t)) first reaches theta on [lo, hi].

    V has at most one critical point t* (`critical_time`), a maximum iff a > 0. So
    max_[lo, hi] V is one of V(lo), V(hi), V(t*), and the first crossing lies on a branch
    where V increases:

        V(lo) >= theta                     -> at lo (degenerate: starts at threshold)
        t* in (lo, hi) a max, V(t*) >= theta -> in (lo, t*]
        t* in (lo, hi) a min, V(hi) >= theta -> in [t*, hi]  (V decreases, then rises)
        otherwise, V(hi) >= theta            -> in (lo, hi]  (V increases on [lo, hi])

    Args (arrays broadcasting together): a, c: coefficients (potential units); lo, hi:
        interval ends (time); alpha, beta, theta: scalars; v_lo, v_hi: V(lo) and V(hi) when
        the caller has them already (the decision then uses exactly those values).

    Returns:
        (found, left, right, at_left): boolean mask of intervals that contain a crossing,
        and a bracket [left, right] on which V is increasing with V(left) < theta <= V(right)
        (at_left marks the degenerate V(lo) >= theta case, whose crossing is lo itself).
    """
    a, c, lo, hi = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, c, lo, hi)))
    v_lo = potential(lo, a, c, alpha, beta)[0] if v_lo is None else v_lo
    v_hi = potential(hi, a, c, alpha, beta)[0] if v_hi is None else v_hi
    t_star, peak = interior_peak(a, c, lo, hi, alpha, beta, theta)
    inside = np.isfinite(t_star)
    is_min = inside & ~(a > 0)
    at_left = v_lo >= theta
    rises = v_hi >= theta
    found = at_left | rises | peak
    left = np.where(is_min & rises, t_star, lo)
    right = np.where(peak, t_star, hi)
    return found, left, right, at_left


def interior_peak(a, c, lo, hi, alpha, beta, theta):
    """(t*, peak): the critical point where it lies inside (lo, hi) (NaN elsewhere), and
    whether it is a maximum with V(t*) >= theta (the crossing hides between lo and hi)."""
    t_star = critical_time(a, c, alpha, beta)
    inside = np.isfinite(t_star) & (t_star > lo) & (t_star < hi)
    t_star = np.where(inside, t_star, np.nan)
    v_star = potential(np.where(inside, t_star, lo), a, c, alpha, beta)[0]
    return t_star, inside & (a > 0) & (v_star >= theta)


def solve_crossing(a, c, left, right, alpha, beta, theta, rtol=1e-14, max_iterations=100):
    """Solve e^{-beta t} (c + a E(t)) = theta on brackets where V increases.

    Safeguarded Newton: each iterate shrinks the bracket [left, right] (V(left) < theta <=
    V(right)); a Newton step that leaves it (or meets V' <= 0) is replaced by bisection.
    An entry has converged when its Newton step is below rtol * max(1, |t|) or its residual
    |V(t) - theta| is at the rounding level of V (2 eps times the size of its terms),
    whichever comes first (usually 3-6 iterations).

    Returns:
        (t, residual, iterations): the crossing times, V(t) - theta there, and the number of
        iterations used. Raises RuntimeError with the worst residual if the iteration does
        not settle within max_iterations.
    """
    a, c, lo, hi = (np.array(x, dtype=np.float64) for x in np.broadcast_arrays(a, c, left, right))
    if a.size == 0:
        return lo.copy(), np.zeros_like(lo), 0
    v_lo = potential(lo, a, c, alpha, beta)[0]
    v_hi = potential(hi, a, c, alpha, beta)[0]
    # Start from the secant (regula falsi) point of the bracket.
    with np.errstate(divide="ignore", invalid="ignore"):
        x = lo + (theta - v_lo) * (hi - lo) / (v_hi - v_lo)
    x = np.where(np.isfinite(x) & (x >= lo) & (x <= hi), x, 0.5 * (lo + hi))
    eps = np.finfo(np.float64).eps
    todo = np.arange(x.size)  # entries still iterating (converged ones drop out)
    for iteration in range(1, max_iterations + 1):
        xs, aa, cc = x[todo], a[todo], c[todo]
        v, dv, size = potential(xs, aa, cc, alpha, beta)
        gap = v - theta
        settled = np.abs(gap) <= 2.0 * eps * (size + theta)
        below = gap < 0
        lo[todo] = np.where(below, xs, lo[todo])
        hi[todo] = np.where(below, hi[todo], xs)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = xs - gap / dv
        bad = ~((new >= lo[todo]) & (new <= hi[todo]) & (dv > 0))
        new = np.where(bad, 0.5 * (lo[todo] + hi[todo]), new)
        done = settled | (np.abs(new - xs) <= rtol * np.maximum(1.0, np.abs(xs)))
        x[todo] = np.where(settled, xs, new)
        todo = todo[~done]
        if not todo.size:
            break
    else:
        v = potential(x, a, c, alpha, beta)[0]
        raise RuntimeError(
            f"solve_crossing did not converge in {max_iterations} iterations; worst residual "
            f"|V(t) - theta| = {np.max(np.abs(v - theta)):.3e}.")
    v = potential(x, a, c, alpha, beta)[0]
    return x, v - theta, iteration


def first_crossing(a, c, lo, hi, alpha, beta, theta):
    """The first time in [lo, hi] at which e^{-beta t} (c + a E(t)) = theta, else inf."""
    a, c, lo, hi = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, c, lo, hi)))
    found, left, right, at_left = crossing_bracket(a, c, lo, hi, alpha, beta, theta)
    out = np.full(found.shape, np.inf)
    out[found & at_left] = left[found & at_left]
    solve = found & ~at_left
    if np.any(solve):
        out[solve] = solve_crossing(a[solve], c[solve], left[solve], right[solve], alpha, beta, theta)[0]
    return out


def simulate_neuron(input_times, input_weights, alpha, beta, theta, t_max):
    """Algorithm 1 for one neuron, event by event (the readable reference for the batched
    simulator in `keras_fsnn.fp.simulation`).

    Args:
        input_times: 1-D array of input spike times (time units; inf = no spike).
        input_weights: 1-D array, the weight W_ji of each input spike.
        alpha, beta, theta: synaptic rate, membrane rate (1/time), threshold (potential).
        t_max: horizon; crossings after t_max are not simulated.

    Returns:
        (times, n_causal): the output firing times (sorted) and, for each, how many of the
        time-sorted input spikes precede it (its causal inputs are those, plus all of the
        neuron's own earlier spikes).
    """
    alpha, beta, theta = check_rates(alpha, beta, theta)
    t_max = check_time_range(t_max, alpha, beta)
    times = np.asarray(input_times, dtype=np.float64).ravel()
    weights = np.asarray(input_weights, dtype=np.float64).ravel()
    order = np.argsort(times, kind="stable")
    times, weights = times[order], weights[order]
    keep = times < t_max
    times, weights = times[keep], weights[keep]
    a = c = 0.0
    spikes, causal = [], []
    last_spike = -np.inf
    for e in range(len(times)):
        a += weights[e] * np.exp(alpha * times[e])
        c -= weights[e] * np.exp(alpha * times[e]) * growth(times[e], alpha, beta)
        end = times[e + 1] if e + 1 < len(times) else t_max
        while True:
            lo = max(times[e], last_spike)
            if not lo < end:
                break
            t = first_crossing(a, c, lo, end, alpha, beta, theta)
            if not np.isfinite(t):
                break
            t = float(t)
            spikes.append(t)
            causal.append(e + 1)
            c -= theta * np.exp(beta * t)
            last_spike = t
    return np.asarray(spikes), np.asarray(causal, dtype=np.int64)
