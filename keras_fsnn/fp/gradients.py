"""Exact gradients of firing times by forward propagation (paper 004 §3, Theorems 4-6, Alg. 2).

Every spike f of a neuron n (layer l) satisfies its threshold equation (paper eq. 9):

    V_n(f) - theta = sum_i W_in sum_{g in F_i, g < f} h(f - g)
                     - theta sum_{f' in F_n, f' < f} e^{-beta (f - f')} - theta = 0

where F_i are the spikes of the inputs i of n (network inputs, constants, for the first
layer; spikes of layer l-1 otherwise) and F_n the neuron's own earlier spikes. Stacking all
F spikes of a sample gives V(F, W) = 0. By the implicit function theorem (Theorem 5),

    L dF/dW = -dV/dW,   L = dV/dF   (eq. 10)

and, with the spikes sorted by time, L is lower triangular (Theorem 4) with entries

    L[f, f]  = dV_n/dt at f-  = sum_i W_in sum_g h'(f - g) + theta beta sum_{f'<f} e^{-beta (f - f')} > 0
    L[f, g]  = -W_in h'(f - g)                 for an input spike g < f of input neuron i
    L[f, f'] = -theta beta e^{-beta (f - f')}  for an earlier spike f' of the same neuron
    dV_f/dW_in = sum_{g in F_i, g < f} h(f - g)       (Remark 5)

with h the kernel of `keras_fsnn.fp.neuron` and h' its derivative. The third kind of entry
(the dependence of a firing time on the same neuron's earlier spikes, through the reset) is
in the paper's equations but missing from the released code (seed fact 10c); it is
included here unless `own_spike_terms=False` asks for the released behaviour (the diagonal
keeps its reset term either way, as in the released code).

Two solvers of the same system:

* `reference_jacobian`: Algorithm 2 literally, for one sample: all spikes sorted globally
  by time, L (F x F) and dV/dW (F x P) built densely, forward substitution row by row.
* `network_tangents` (used for training): the same forward substitution in block form,
  vectorised over the batch. In a feed-forward network a spike of layer l depends on the
  column W_l[:, n] of its own neuron directly and on earlier layers only through its input
  spikes, so the rows of dF/dW are propagated layer by layer (paper Remark 6: the neurons
  of a layer are independent given their inputs); within a neuron the spikes are solved in
  time order, which is the forward substitution over the own-spike block of L.

Weights are flattened layer after layer, each (N_in, N_out) kernel in row-major order:
parameter index offset_l + i * N_l + n is W_l[i, n].
"""

import numpy as np

from keras_fsnn.fp import neuron


def parameter_offsets(weights):
    """Start index of each layer's kernel in the flat parameter vector, and the total."""
    sizes = [int(np.size(w)) for w in weights]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return offsets[:-1], int(offsets[-1])


def layer_tangents(input_times, input_tangents, weights, times, alpha, beta, theta, own_spike_terms=True):
    """Rows of dF/dW for the spikes of one layer, given those of its input spikes.

    Args:
        input_times: (batch, N_in, Q) input spike times (inf-padded, ascending along Q).
        input_tangents: None when the inputs are network inputs (constants); else a pair
            (own, prev) for the input spikes: own (batch, N_in, Q, M) = d g / d W_{l-1}[:, i]
            (the column of the neuron that fired g, M its fan-in) and prev (batch, N_in, Q,
            P) = d g / d (all kernels before W_{l-1}, flattened), P possibly 0.
        weights: (N_in, N_out) kernel W_l.
        times: (batch, N_out, K) this layer's spike times (inf-padded, ascending along K).
        alpha, beta, theta: neuron constants.
        own_spike_terms: include L[f, f'] for the same neuron's earlier spikes (exact).

    Returns:
        (own, prev, slope): own (batch, N_out, K, N_in) = d f / d W_l[:, n]; prev (batch,
        N_out, K, P') = d f / d (W_1..W_{l-1} flattened), P' = P + M * N_in; slope (batch,
        N_out, K) = L[f, f] = dV/dt at the spike (0 for padding). Padding rows are 0.

    How. The kernel factorises, h(f - g) = (e^{-alpha f} e^{alpha g} - e^{-beta f} e^{beta g})
    / (beta - alpha) for g < f, so every sum over the causal input spikes g of input neuron i
    is a masked sum of per-input factors times per-spike factors: no exponential per
    (spike, input spike) pair. Rounding: relative 2 eps / |beta - alpha| (2e-13 for the
    Yin-Yang rates), far below what the gradient needs. Only real spikes are processed
    (compressed); the contraction with the input spikes' tangents runs over the batch in
    padded form.
    """
    weights = np.asarray(weights, np.float64)
    batch, n_out, k = times.shape
    n_in = weights.shape[0]
    d = beta - alpha
    g = np.asarray(input_times, np.float64)
    finite_g = np.isfinite(g)
    ea_g = np.where(finite_g, np.exp(alpha * np.where(finite_g, g, 0.0)), 0.0)  # (b, i, q)
    eb_g = np.where(finite_g, np.exp(beta * np.where(finite_g, g, 0.0)), 0.0)

    # The spikes of the layer, compressed: (b, n, slot) of each, ordered so that the spikes
    # of one neuron are consecutive and in time order (slot j of spike s is at s - k_s + j).
    b_idx, n_idx, k_idx = np.nonzero(np.isfinite(times))
    f = times[b_idx, n_idx, k_idx]
    ea_f = np.exp(-alpha * f)[:, None]
    eb_f = np.exp(-beta * f)[:, None]
    causal = (g[b_idx] < f[:, None, None]).astype(np.float64)  # (s, i, q): g before f
    sum_a = np.einsum("siq,siq->si", causal, ea_g[b_idx])
    sum_b = np.einsum("siq,siq->si", causal, eb_g[b_idx])
    direct = (ea_f * sum_a - eb_f * sum_b) / d  # dV/dW_l[i, n] = sum_g h(f - g)
    w = weights.T[n_idx]  # (s, i): W[i, n] of the spike's neuron
    slope = np.einsum("si,si->s", w, (beta * eb_f * sum_b - alpha * ea_f * sum_a) / d)  # sum W h'
    # Reset of the same neuron's earlier spikes: theta beta sum_{j<k} e^{-beta (f_k - f_j)}.
    grown = np.cumsum(np.exp(beta * f))
    before = np.concatenate([[0.0], grown])
    row_start = np.arange(f.size) - k_idx
    slope = slope + theta * beta * eb_f[:, 0] * (before[np.arange(f.size)] - before[row_start])

    if input_tangents is None:
        rhs_prev = np.zeros((f.size, 0))
    else:
        in_own, in_prev = input_tangents
        # dV/dg = -W_in h'(f - g) for causal g, contracted with the input spikes' tangents
        # over the batch in padded form (no per-spike copy of the tangents).
        mask = (g[:, None, None, :, :] < times[:, :, :, None, None])  # (b, n, k, i, q)
        valid = np.isfinite(times)
        ea_p = np.where(valid, np.exp(-alpha * np.where(valid, times, 0.0)), 0.0)[..., None, None]
        eb_p = np.where(valid, np.exp(-beta * np.where(valid, times, 0.0)), 0.0)[..., None, None]
        wp = weights.T[None, :, None, :, None]
        coupling = np.where(mask, -wp * (beta * eb_p * eb_g[:, None, None] - alpha * ea_p * ea_g[:, None, None]) / d,
                            0.0)
        from_own = np.einsum("bnkiq,biqm->bnkmi", coupling, in_own, optimize=True).reshape(batch, n_out, k, -1)
        if in_prev.shape[-1]:
            from_prev = np.einsum("bnkiq,biqp->bnkp", coupling, in_prev, optimize=True)
            rhs_prev = np.concatenate([from_prev, from_own], axis=-1)
        else:
            rhs_prev = from_own
        rhs_prev = rhs_prev[b_idx, n_idx, k_idx]

    # Forward substitution within each neuron, slot by slot (time order):
    # d f_k = -(rhs_k + sum_{j<k} L[k, j] d f_j) / L[k, k].
    own_c = np.zeros_like(direct)
    prev_c = np.zeros_like(rhs_prev)
    for slot in range(k):
        rows = np.nonzero(k_idx == slot)[0]
        r_own, r_prev = direct[rows], rhs_prev[rows]
        if slot and own_spike_terms:
            earlier = rows[:, None] - slot + np.arange(slot)[None, :]  # (rows, slot)
            block = -theta * beta * np.exp(-beta * (f[rows, None] - f[earlier]))
            r_own = r_own + np.einsum("rj,rjp->rp", block, own_c[earlier])
            if prev_c.shape[1]:
                r_prev = r_prev + np.einsum("rj,rjp->rp", block, prev_c[earlier])
        own_c[rows] = -r_own / slope[rows, None]
        prev_c[rows] = -r_prev / slope[rows, None]

    own = np.zeros((batch, n_out, k, n_in))
    own[b_idx, n_idx, k_idx] = own_c
    prev = np.zeros((batch, n_out, k, prev_c.shape[1]))
    prev[b_idx, n_idx, k_idx] = prev_c
    slopes = np.zeros((batch, n_out, k))
    slopes[b_idx, n_idx, k_idx] = slope
    return own, prev, slopes


def network_tangents(record, weights, alpha, beta, theta, own_spike_terms=True):
    """dF/dW of every spike of every layer, by forward propagation layer after layer.

    Args:
        record: `keras_fsnn.fp.simulation.NetworkSpikes` of the batch.
        weights: the kernels the record was simulated with.

    Returns:
        list (one per layer) of (own, prev, slope) as in `layer_tangents`.
    """
    out = []
    inputs, tangents = record.inputs, None
    for kernel, layer in zip(weights, record.layers):
        own, prev, slope = layer_tangents(inputs, tangents, kernel, layer.times, alpha, beta, theta, own_spike_terms)
        out.append((own, prev, slope))
        inputs, tangents = layer.times, (own, prev)
    return out


def dense_jacobian(own, prev, weights, layer_index):
    """The rows d f / d W (all kernels, flattened) of one layer's spikes, (batch, N, K, P)."""
    offsets, total = parameter_offsets(weights)
    batch, n_out, k, n_in = own.shape
    full = np.zeros((batch, n_out, k, total))
    full[..., : prev.shape[-1]] = prev
    start = offsets[layer_index]
    for n in range(n_out):
        full[:, n, :, start + np.arange(n_in) * n_out + n] = np.moveaxis(own[:, n], -1, 0)
    return full


def first_spike_weight_gradients(record, weights, time_gradient, alpha, beta, theta, own_spike_terms=True):
    """dL/dW of a loss of the output first-spike times, by forward propagation.

    Args:
        record: NetworkSpikes (the output layer may be simulated with first spikes only).
        weights: the kernels.
        time_gradient: (batch, N_out) dL/dt of each output neuron's first spike (the loss
            is summed over the batch: pass per-sample gradients divided by the batch size
            for a mean). Neurons that never fired have t = t_max fixed: their dF/dW is 0.

    Returns:
        list of arrays shaped like `weights`.
    """
    tangents = network_tangents_first(record, weights, alpha, beta, theta, own_spike_terms)
    own, prev = tangents
    g = np.where(np.isfinite(record.output.first_times), time_gradient, 0.0)
    offsets, _ = parameter_offsets(weights)
    flat_prev = np.einsum("bn,bnp->p", g, prev) if prev.shape[-1] else np.zeros(0)
    grads = []
    for index, kernel in enumerate(weights[:-1]):
        start = offsets[index]
        grads.append(flat_prev[start:start + kernel.size].reshape(kernel.shape))
    grads.append(np.einsum("bn,bni->in", g, own))
    return grads


def network_tangents_first(record, weights, alpha, beta, theta, own_spike_terms=True):
    """(own, prev) rows of dF/dW for the first spike of each output neuron only.

    A spike can only depend on earlier spikes, so hidden spikes after the latest output
    first spike of a sample cannot affect the loss and are dropped (as in the released
    code); the output layer is solved at K = 1 (a first spike has no earlier own spikes).
    """
    first = record.output.times[:, :, :1]
    if first.shape[2] == 0:
        first = np.full(record.output.counts.shape + (1,), np.inf)
    fired = np.isfinite(first[:, :, 0])
    horizon = np.where(fired, first[:, :, 0], -np.inf).max(axis=1)  # (batch,)
    inputs, tangents = record.inputs, None
    for kernel, layer in zip(weights[:-1], record.layers[:-1]):
        times = np.where(layer.times < horizon[:, None, None], layer.times, np.inf)
        times = times[:, :, : int(np.isfinite(times).sum(axis=2).max(initial=0))]
        own, prev, _ = layer_tangents(inputs, tangents, kernel, times, alpha, beta, theta, own_spike_terms)
        inputs, tangents = times, (own, prev)
    own, prev, _ = layer_tangents(inputs, tangents, weights[-1], first, alpha, beta, theta, own_spike_terms)
    return own[:, :, 0], prev[:, :, 0]


def reference_jacobian(input_times, layer_times, weights, alpha, beta, theta, own_spike_terms=True):
    """Algorithm 2 for one sample: global time order, dense L and dV/dW, forward substitution.

    Args:
        input_times: (N_0, Q) or (N_0,) input spike times of the sample (inf = none).
        layer_times: list of (N_l, K_l) spike times of each layer (inf-padded).
        weights: the kernels.

    Returns:
        dict with `spikes` (list of (layer, neuron, k, time) in time order), `L` (F x F,
        lower triangular), `dVdW` (F x P) and `dFdW` (F x P) with L dFdW = -dVdW.
    """
    inputs = np.asarray(input_times, np.float64)
    if inputs.ndim == 1:
        inputs = inputs[:, None]
    offsets, total = parameter_offsets(weights)
    spikes = [(l, n, k, float(t)) for l, times in enumerate(layer_times)
              for n in range(times.shape[0]) for k, t in enumerate(times[n]) if np.isfinite(t)]
    spikes.sort(key=lambda s: (s[3], s[0]))
    index = {(l, n, k): row for row, (l, n, k, _) in enumerate(spikes)}
    F = len(spikes)
    L = np.zeros((F, F))
    dVdW = np.zeros((F, total))
    for row, (l, n, k, f) in enumerate(spikes):
        kernel = np.asarray(weights[l], np.float64)
        n_out = kernel.shape[1]
        source = inputs if l == 0 else layer_times[l - 1]
        for i in range(source.shape[0]):
            for q, g in enumerate(source[i]):
                if not (np.isfinite(g) and g < f):
                    continue
                dVdW[row, offsets[l] + i * n_out + n] += neuron.kernel(f - g, alpha, beta)
                slope = kernel[i, n] * neuron.kernel_derivative(f - g, alpha, beta)
                L[row, row] += slope
                if l > 0:
                    L[row, index[(l - 1, i, q)]] -= slope
        for j in range(k):
            fj = layer_times[l][n, j]
            term = theta * beta * np.exp(-beta * (f - fj))
            L[row, row] += term
            if own_spike_terms:
                L[row, index[(l, n, j)]] -= term
    dFdW = np.zeros((F, total))
    for row in range(F):  # forward substitution (L is lower triangular in time order)
        dFdW[row] = -(dVdW[row] + L[row, :row] @ dFdW[:row]) / L[row, row]
    return {"spikes": spikes, "L": L, "dVdW": dVdW, "dFdW": dFdW}
