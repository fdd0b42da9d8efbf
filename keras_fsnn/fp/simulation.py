"""Exact event-driven simulation of feed-forward LIF layers, vectorised over a batch.

Paper 004 §4.2, Algorithm 1, for every neuron of a layer and every sample of a batch at
once. The neuron model, the closed form of the potential between events (the paper's
A e^{-alpha t} + B e^{-beta t}, written V(t) = e^{-beta t} (c + a E(t))) and the crossing
solver are in `keras_fsnn.fp.neuron`.

How the batch is vectorised. All neurons of a layer see the same time-sorted list of input
events of their sample, so the input part of the coefficients after input event e is a
cumulative sum over events (one array op for the whole batch and layer):

    a_e = sum_{e' <= e} W_{src(e'), n} e^{alpha g_e'}
    c_e = -sum_{e' <= e} W_{src(e'), n} e^{alpha g_e'} E(g_e') - theta sum_{own f} e^{beta f}

and only the reset sum depends on the neuron's own spikes. V and V' at every event time
then come from per-sample factors (e^{-beta t}, E(t), e^{-alpha t}) times these sums, with no
transcendental function per neuron. Two ways to walk the events:

* few input events per sample (<= EVENT_MAJOR_LIMIT, the first layer): event by event, as
  Algorithm 1; in each interval every (sample, neuron) pair is checked at once, and the
  pairs that fired look for further crossings after their reset;
* many events (deeper layers, hundreds of input spikes): in rounds of one spike per pair;
  a round checks all remaining intervals of every pair that may still fire at once, takes
  the first interval holding a crossing and solves it. The number of rounds is the largest
  spike count, and for a first-spike loss the output layer needs a single round.

A crossing is located exactly (`neuron.crossing_bracket`: end points and the only critical
point of V) and solved by `neuron.solve_crossing`; the reset subtracts theta e^{beta f} from
the pair's c.

Causal graph (paper 004 §4.1, Alg. 1 "add entire queue"). Under the kernel model every
input spike that arrives before an output spike f, and every earlier spike of the same
neuron, enters the threshold equation V_n(f) = theta; nothing is ever removed from the
queue. Because input events are time-sorted per sample, the causal inputs of an output
spike are exactly the first `n_causal` events of `LayerSpikes.input_order`, and its causal
own spikes are the neuron's earlier spikes: `LayerSpikes.causal_set` lists them.

Spike times are in the same time units as the inputs; `inf` pads spike arrays (no spike).
Simulation stops at the horizon t_max: inputs at or after t_max are ignored and no spike
after t_max is produced.
"""

from dataclasses import dataclass, field

import numpy as np

from keras_fsnn import validation
from keras_fsnn.fp import neuron


@dataclass
class LayerSpikes:
    """The spikes of one layer for a batch.

    Attributes:
        times: (batch, neurons, K) float64 firing times, ascending along K, padded with inf.
        counts: (batch, neurons) int64 number of spikes of each neuron.
        n_causal: (batch, neurons, K) int64: for each spike, how many of its layer's
            time-sorted input events precede it (0 for padding).
        input_order: (batch, E) int64: the layer's input events in time order, as flat
            indices (input neuron * K_in + slot) into its input times (batch, N_in, K_in).
        input_slots: K_in, the last axis of the input times (to decode `input_order`).
    """

    times: np.ndarray
    counts: np.ndarray
    n_causal: np.ndarray
    input_order: np.ndarray
    input_slots: int

    @property
    def first_times(self):
        """(batch, neurons) first firing time of each neuron (inf if it never fired)."""
        return self.times[:, :, 0] if self.times.shape[2] else np.full(self.counts.shape, np.inf)

    def causal_set(self, sample, neuron_index, spike):
        """The causal set of one spike (paper 004 §4.1): the input spikes that precede it, as
        a list of (input neuron, spike slot) pairs in time order, and the indices of the same
        neuron's earlier spikes."""
        if not spike < self.counts[sample, neuron_index]:
            raise ValueError(
                f"Argument `spike` must index an existing spike: neuron {neuron_index} of sample {sample} "
                f"fired {self.counts[sample, neuron_index]} times; received spike={spike!r}.")
        events = self.input_order[sample, : self.n_causal[sample, neuron_index, spike]]
        inputs = [(int(e) // self.input_slots, int(e) % self.input_slots) for e in events]
        return inputs, list(range(spike))


@dataclass
class NetworkSpikes:
    """The spikes of every layer of a feed-forward network for a batch.

    Attributes:
        inputs: (batch, N_0, K_0) input spike times (inf = no spike).
        layers: one `LayerSpikes` per weight layer (hidden layers, then the output layer).
        t_max: the simulation horizon.
    """

    inputs: np.ndarray
    layers: list = field(default_factory=list)
    t_max: float = np.inf

    @property
    def output(self):
        return self.layers[-1]

    def first_output_times(self):
        """(batch, classes) first spike of each output neuron, t_max where it never fired."""
        first = self.output.first_times
        return np.where(np.isfinite(first), first, self.t_max)

    def spike_counts(self):
        """Total spikes per layer, averaged over the batch."""
        return [float(layer.counts.sum(axis=1).mean()) for layer in self.layers]


def as_spike_array(times, argument="x_times"):
    """Input spike times as a float64 (batch, neurons, K) array.

    Accepts (batch, neurons) (one spike per input neuron) or (batch, neurons, K) padded
    with inf; times must be >= 0 (inf = no spike); NaN is rejected.
    """
    array = np.asarray(times, dtype=np.float64)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"Argument `{argument}` must have shape (batch, neurons) or (batch, neurons, spikes); "
            f"received shape {np.shape(times)}.")
    for bad, rule in ((np.isnan(array), "must not contain NaN (use inf for 'no spike')"),
                      (array < 0, "must hold spike times >= 0 (inf = no spike)")):
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            where = where[:2] if array.shape[2] == 1 and np.ndim(times) == 2 else where
            raise ValueError(f"Argument `{argument}` {rule}; received {argument}[{', '.join(map(str, where))}]="
                             f"{float(array[where + (0,) * (3 - len(where))])!r}.")
    return array


def simulate_layer(input_times, weights, alpha, beta, theta, t_max, max_spikes=None, spike_limit=10000):
    """Exact firing times of one feed-forward layer for a batch (Algorithm 1, vectorised).

    Args:
        input_times: (batch, N_in, K_in) input spike times, inf-padded.
        weights: (N_in, N_out) synaptic weights W_ji (potential units per unit kernel).
        alpha, beta, theta: synaptic and membrane rates (1/time, alpha != beta), threshold.
        t_max: horizon (time): no spikes at or after t_max.
        max_spikes: stop simulating a neuron after this many spikes (1: first spikes only,
            enough for first-spike losses on the output layer); None simulates all.
        spike_limit: a neuron that fires more often than this raises RuntimeError (runaway
            weights), instead of looping for a long time.

    Returns:
        LayerSpikes.
    """
    alpha, beta, theta = neuron.check_rates(alpha, beta, theta)
    t_max = neuron.check_time_range(t_max, alpha, beta)
    if max_spikes is not None:
        max_spikes = validation.integer("max_spikes", max_spikes, minimum=1)
    input_times = as_spike_array(input_times, "input_times")
    weights = np.asarray(weights, dtype=np.float64)
    batch, n_in, k_in = input_times.shape
    if weights.ndim != 2 or weights.shape[0] != n_in:
        raise ValueError(
            f"Argument `weights` must have shape (N_in, N_out) with N_in={n_in} (the input neurons); "
            f"received shape {weights.shape}.")
    n_out = weights.shape[1]

    flat = input_times.reshape(batch, n_in * k_in)
    flat = np.where(flat < t_max, flat, np.inf)
    order = np.argsort(flat, axis=1, kind="stable")
    events = np.take_along_axis(flat, order, axis=1)
    n_events = int(np.isfinite(events).sum(axis=1).max()) if batch else 0
    events, order = events[:, :n_events], order[:, :n_events]

    def empty():
        return LayerSpikes(np.full((batch, n_out, 0), np.inf), np.zeros((batch, n_out), np.int64),
                           np.zeros((batch, n_out, 0), np.int64), order, k_in)

    if n_events == 0 or n_out == 0:
        return empty()

    finite = np.isfinite(events)
    g = np.where(finite, events, 0.0)
    w_ev = weights[order // k_in] * finite[:, :, None]  # (batch, E, N_out)
    drive = np.exp(alpha * g)
    a_coef = np.cumsum(w_ev * drive[:, :, None], axis=1)  # a_e
    c_coef = -np.cumsum(w_ev * (drive * neuron.growth(g, alpha, beta))[:, :, None], axis=1)  # c_e
    # Pairs (sample, neuron) as rows, events as columns.
    a_coef = a_coef.transpose(0, 2, 1).reshape(batch * n_out, n_events)
    c_coef = c_coef.transpose(0, 2, 1).reshape(batch * n_out, n_events)
    # Interval e is [bounds[e], bounds[e + 1]]; padding events sit at t_max (empty intervals).
    bounds = np.concatenate([np.where(finite, events, t_max), np.full((batch, 1), t_max)], axis=1)
    sample_of = np.repeat(np.arange(batch), n_out)
    factors = (bounds, np.exp(-beta * bounds), neuron.growth(bounds, alpha, beta), np.exp(-alpha * bounds))
    walk = _walk_events if n_events <= EVENT_MAJOR_LIMIT else _rounds
    found_pairs, found_times, found_causal, found_slot, counts = walk(
        a_coef, c_coef, factors, sample_of, alpha, beta, theta, max_spikes, spike_limit, n_out, t_max)

    if not found_pairs:
        return empty()
    pairs = np.concatenate(found_pairs)
    k_out = int(counts.max())
    times = np.full((batch * n_out, k_out), np.inf)
    n_causal = np.zeros((batch * n_out, k_out), np.int64)
    slots = np.concatenate(found_slot)
    times[pairs, slots] = np.concatenate(found_times)
    n_causal[pairs, slots] = np.concatenate(found_causal)
    return LayerSpikes(times.reshape(batch, n_out, k_out), counts.reshape(batch, n_out),
                       n_causal.reshape(batch, n_out, k_out), order, k_in)


# Layers with at most this many input events per sample are walked event by event (each
# check is one pass over the (sample, neuron) pairs); layers with more are simulated in
# rounds of one spike per pair (each check covers all intervals at once).
EVENT_MAJOR_LIMIT = 16


def _bound_values(a, c, factors, rows, columns, alpha, beta):
    """V and V' at interval bounds from per-sample factors (e^{-beta t}, E(t), e^{-alpha t}
    at each bound), shared by all neurons of a sample: no transcendental per neuron."""
    _, decay, growth, current = factors
    if isinstance(columns, tuple):  # broadcast form: rows is a slice, columns index the rest
        index = (rows,) + columns
    else:
        index = (rows, columns)
    d, g, s = decay[index], growth[index], current[index]
    v = d * (c + a * g)
    return v, -beta * v + a * s


def _crossing_times(a, c, lo, hi, v_lo, v_hi, alpha, beta, theta):
    """Exact crossings on intervals known to hold one (found by the bound/peak checks)."""
    ok, left, right, at_left = neuron.crossing_bracket(a, c, lo, hi, alpha, beta, theta, v_lo=v_lo, v_hi=v_hi)
    if not ok.all():  # the checks and the bracket use the same values; this cannot happen
        raise RuntimeError("Inconsistent crossing bracket in simulate_layer (please report).")
    t = left.copy()
    solve = ~at_left
    if solve.any():
        t[solve] = neuron.solve_crossing(a[solve], c[solve], left[solve], right[solve], alpha, beta, theta)[0]
    return t


def _per_pair(values, n_out):
    """(batch, 1 or n_out, E) -> (batch * n_out, E), one row per (sample, neuron) pair."""
    batch, _, events = values.shape
    return np.broadcast_to(values, (batch, n_out, events)).reshape(batch * n_out, events)


def _check_limit(counts, spike_limit, n_out, t_max):
    if counts.max() > spike_limit:
        worst = int(np.argmax(counts))
        raise RuntimeError(
            f"A neuron fired more than spike_limit={spike_limit} times before t_max={t_max} "
            f"(sample {worst // n_out}, neuron {worst % n_out}); the weights are probably "
            "diverging. Lower the learning rate or raise spike_limit.")


def _walk_events(a_coef, c_coef, factors, sample_of, alpha, beta, theta, max_spikes, spike_limit, n_out, t_max):
    """Algorithm 1 in event order, vectorised over (sample, neuron) pairs: in each interval
    between input events, find the crossings of all pairs, then the further crossings of the
    pairs that just fired (after their reset), until none is left."""
    bounds = factors[0]
    pairs_total, n_events = a_coef.shape
    reset = np.zeros(pairs_total)
    counts = np.zeros(pairs_total, np.int64)
    out_pairs, out_times, out_causal, out_slot = [], [], [], []
    for e in range(n_events):
        a = a_coef[:, e]
        c = c_coef[:, e] - reset
        v0, dv0 = _bound_values(a, c, factors, sample_of, e, alpha, beta)
        v1, dv1 = _bound_values(a, c, factors, sample_of, e + 1, alpha, beta)
        lo, hi = bounds[sample_of, e], bounds[sample_of, e + 1]
        valid = lo < hi
        if max_spikes is not None:
            valid &= counts < max_spikes
        hit = valid & ((v0 >= theta) | (v1 >= theta))
        maybe = np.nonzero(valid & ~hit & (a > 0) & (dv0 > 0) & (dv1 < 0))[0]
        if maybe.size:
            hit[maybe] = neuron.interior_peak(a[maybe], c[maybe], lo[maybe], hi[maybe], alpha, beta, theta)[1]
        current = np.nonzero(hit)[0]
        v_lo, v_hi = v0[current], v1[current]
        start = lo[current]
        while current.size:
            t = _crossing_times(a[current], c_coef[current, e] - reset[current], start, hi[current], v_lo, v_hi,
                                alpha, beta, theta)
            out_pairs.append(current)
            out_times.append(t)
            out_causal.append(np.full(current.size, e + 1))
            out_slot.append(counts[current])
            counts[current] += 1
            reset[current] += theta * np.exp(beta * t)
            _check_limit(counts, spike_limit, n_out, t_max)
            # Further crossings in the same interval, after the reset.
            keep = t < hi[current]
            if max_spikes is not None:
                keep &= counts[current] < max_spikes
            current, start = current[keep], t[keep]
            if not current.size:
                break
            a_cur, c_cur, hi_cur = a[current], c_coef[current, e] - reset[current], hi[current]
            found, _, _, _ = neuron.crossing_bracket(a_cur, c_cur, start, hi_cur, alpha, beta, theta)
            current, start = current[found], start[found]
            v_lo = neuron.potential(start, a[current], c_coef[current, e] - reset[current], alpha, beta)[0]
            v_hi = neuron.potential(hi[current], a[current], c_coef[current, e] - reset[current], alpha, beta)[0]
    return out_pairs, out_times, out_causal, out_slot, counts


def _rounds(a_coef, c_coef, factors, sample_of, alpha, beta, theta, max_spikes, spike_limit, n_out, t_max):
    """Rounds of one spike per (sample, neuron) pair: each round checks all remaining
    intervals of every pair that may still fire at once, takes the first that holds a
    crossing and solves it."""
    bounds = factors[0]
    pairs_total, n_events = a_coef.shape
    reset = np.zeros(pairs_total)
    last = np.full(pairs_total, -np.inf)
    counts = np.zeros(pairs_total, np.int64)
    out_pairs, out_times, out_causal, out_slot = [], [], [], []
    active = np.arange(pairs_total)
    last_interval = np.zeros(pairs_total, np.int64)  # the interval holding the last own spike
    while active.size:
        col0 = int(last_interval[active].min())
        a = a_coef[active, col0:]
        c = c_coef[active, col0:] - reset[active, None]
        if active.size == pairs_total and col0 == 0 and not np.isfinite(last).any():
            # First round, every pair: broadcast the per-sample factors over the neurons.
            batch = pairs_total // n_out
            shaped = [x[:, None, :] for x in factors]
            a3, c3 = a.reshape(batch, n_out, -1), c.reshape(batch, n_out, -1)
            whole, starts, ends = slice(None), slice(0, n_events), slice(1, n_events + 1)
            v0, dv0 = (_per_pair(x, n_out) for x in _bound_values(a3, c3, shaped, whole, (whole, starts), alpha, beta))
            v1, dv1 = (_per_pair(x, n_out) for x in _bound_values(a3, c3, shaped, whole, (whole, ends), alpha, beta))
            lo, hi = _per_pair(shaped[0][:, :, starts], n_out), _per_pair(shaped[0][:, :, ends], n_out)
        else:
            rows = sample_of[active][:, None]
            starts, ends = np.arange(col0, n_events)[None, :], np.arange(col0 + 1, n_events + 1)[None, :]
            lo, hi = bounds[rows, starts], bounds[rows, ends]
            v0, dv0 = _bound_values(a, c, factors, rows, starts, alpha, beta)
            v1, dv1 = _bound_values(a, c, factors, rows, ends, alpha, beta)
        # After an own spike, its interval starts at the spike, not at the input event.
        fired = np.nonzero(np.isfinite(last[active]))[0]
        if fired.size:
            col = last_interval[active[fired]] - col0
            lo[fired, col] = last[active[fired]]
            v0[fired, col], dv0[fired, col] = neuron.potential(lo[fired, col], a[fired, col], c[fired, col],
                                                               alpha, beta)[:2]
        valid = lo < hi
        found = valid & ((v0 >= theta) | (v1 >= theta))
        # A crossing can also hide between two bounds below threshold, at an interior
        # maximum (V' > 0 at lo, < 0 at hi).
        maybe = np.nonzero(valid & ~found & (a > 0) & (dv0 > 0) & (dv1 < 0))
        if maybe[0].size:
            found[maybe] = neuron.interior_peak(a[maybe], c[maybe], lo[maybe], hi[maybe], alpha, beta, theta)[1]
        fires = found.any(axis=1)
        if not fires.any():
            break
        sel = np.nonzero(fires)[0]
        interval = found[sel].argmax(axis=1)
        pairs = active[sel]
        t = _crossing_times(a[sel, interval], c[sel, interval], lo[sel, interval], hi[sel, interval],
                            v0[sel, interval], v1[sel, interval], alpha, beta, theta)
        column = interval + col0
        out_pairs.append(pairs)
        out_times.append(t)
        out_causal.append(column + 1)
        out_slot.append(counts[pairs])
        counts[pairs] += 1
        reset[pairs] += theta * np.exp(beta * t)
        last[pairs] = t
        last_interval[pairs] = column
        _check_limit(counts, spike_limit, n_out, t_max)
        keep = np.ones(pairs.size, bool) if max_spikes is None else counts[pairs] < max_spikes
        active = pairs[keep]
    return out_pairs, out_times, out_causal, out_slot, counts


def simulate_network(input_times, weights, alpha, beta, theta, t_max, first_spike_only=False, spike_limit=10000):
    """Exact simulation of a feed-forward network, layer after layer (paper 004 §4.2).

    Args:
        input_times: (batch, N_0) or (batch, N_0, K_0) input spike times (>= 0, inf = none).
        weights: list of (N_{l-1}, N_l) weight matrices.
        alpha, beta, theta, t_max: as in `simulate_layer`.
        first_spike_only: simulate only the first spike of each output neuron (what
            first-spike losses and predictions need); hidden layers are always complete.

    Returns:
        NetworkSpikes.
    """
    inputs = as_spike_array(input_times, "input_times")
    record = NetworkSpikes(inputs, [], float(t_max))
    current = inputs
    for index, kernel in enumerate(weights):
        last = index == len(weights) - 1
        layer = simulate_layer(current, kernel, alpha, beta, theta, t_max,
                               max_spikes=1 if (last and first_spike_only) else None, spike_limit=spike_limit)
        record.layers.append(layer)
        current = layer.times
    return record


def euler_simulation(input_times, weights, alpha, beta, theta, t_max, dt):
    """Fixed-step simulation of the same network on a time grid (for checking the exact one).

    The synaptic current I and the membrane V of each neuron obey dI/dt = -alpha I +
    sum_j W_ji sum_g delta(t - g) and dV/dt = -beta V + I; V >= theta emits a spike and
    subtracts theta from V. Each step of length dt integrates both linear ODEs exactly
    (exponential integrator) and inserts every input spike at its exact time within the
    step, so the only discretisation error is that a crossing is detected at the end of the
    step in which it happens: grid spike times are late by less than dt (while no two
    events of one neuron fall into the same step).

    Returns:
        list (per layer) of lists (per sample) of lists (per neuron) of spike times.
    """
    alpha, beta, theta = neuron.check_rates(alpha, beta, theta)
    inputs = as_spike_array(input_times, "input_times")
    steps = int(np.ceil(t_max / dt))
    batch = inputs.shape[0]
    layer_in = [[list(inputs[b, i][np.isfinite(inputs[b, i])]) for i in range(inputs.shape[1])] for b in range(batch)]
    out = []
    for kernel in weights:
        kernel = np.asarray(kernel, np.float64)
        n_out = kernel.shape[1]
        layer_out = []
        for b in range(batch):
            events = sorted((t, i) for i, ts in enumerate(layer_in[b]) for t in ts if t < t_max)
            current = np.zeros(n_out)
            potential = np.zeros(n_out)
            spikes = [[] for _ in range(n_out)]
            pointer = 0
            for step in range(steps):
                t0, t1 = step * dt, min((step + 1) * dt, t_max)
                now = t0
                while True:
                    nxt = events[pointer][0] if pointer < len(events) and events[pointer][0] < t1 else t1
                    span = nxt - now
                    ea, eb = np.exp(-alpha * span), np.exp(-beta * span)
                    potential = eb * potential + current * (ea - eb) / (beta - alpha)
                    current = ea * current
                    now = nxt
                    if nxt == t1:
                        break
                    current = current + kernel[events[pointer][1]]
                    pointer += 1
                fired = potential >= theta
                for n in np.nonzero(fired)[0]:
                    spikes[n].append(t1)
                potential = potential - theta * fired
            layer_out.append(spikes)
        out.append(layer_out)
        layer_in = layer_out
    return out
