"""The conventions that `to_nir` writes and `from_nir` reads, in one place.

Discrete time (dt = 1 step), t = 1..T, everything at 0 before t = 1. One of our neurons,

    u[t] = lambda u[t-1] + I[t] - (V_th - u_rest) s[t],   s[t] = [lambda u[t-1] + I[t] >= V_th],

is written as three NIR nodes around the *pre-reset* potential v[t] = lambda u[t-1] + I[t]:

    membrane  I (lambda = 1) or LI (tau = dt / (1 - lambda), r = tau / dt, v_leak = 0):
              v[t] = lambda v[t-1] + (sum of its inputs at t)     (forward Euler, gain 1)
    spike     Threshold(theta):  s[t] = [v[t] > theta], theta the float32 number just below
              V_th, so that v > theta is v >= V_th for every float32 v
    reset     Scale(-lambda (V_th - u_rest)), an edge spike -> reset -> membrane

since v[t] = lambda (v[t-1] - (V_th - u_rest) s[t-1]) + I[t]. The reset edge and the
feedback edge (layer N's spikes -> W^1 -> layer 1's membrane) close cycles; each carries
the value of the previous step. That is what a simulator that runs the nodes in order from
the input, taking the last step's output along an edge that closes a cycle, computes.
The input is the same image at every step (a static input). The readout integrates its
affine map of the spikes, W s[t] + b, in an integrator of gain 1/Z (I with r = 1/T for
IF; LI with the neurons' lambda and r = tau / (dt Z), Z = sum_i lambda^i, for LIF): its
value at t = T is W a + b with a the (weighted) average rate, the model's logits.

Shapes are NIR's, channels first ((C, H, W)); Keras's are channels last.
"""

import numpy as np

PRODUCER = "keras_fsnn"
DT = 1.0
SEMANTICS = (
    "keras_fsnn discrete time, dt = 1: membranes (I / LI, forward Euler, gain 1) hold the pre-reset potential, "
    "start at 0 and sum their inputs each step; Threshold fires at v > theta (theta = the float32 number below "
    "V_th); a spike -> Scale(-lambda (V_th - u_rest)) -> membrane edge subtracts the reset at the next step; edges "
    "that close a cycle (reset, feedback) carry the previous step's value; the input is the same image every "
    "step; the Output at step T is the logits (the readout integrator averages W s[t] + b over the T steps)."
)


def nir_threshold(v_th):
    """NIR's Threshold fires at v > theta, ours at u >= V_th: theta is the float32 number
    just below V_th."""
    return np.nextafter(np.float32(v_th), np.float32(-np.inf))


def our_threshold(theta):
    """The inverse of `nir_threshold`: V_th, the float32 number just above theta."""
    return float(np.nextafter(np.float32(theta), np.float32(np.inf)))


def leak_time_constant(leak, dt=DT):
    """LI's tau (and r = tau / dt, the gain-1 resistance) for a leak lambda = 1 - dt / tau."""
    tau = dt / (1.0 - leak)
    return tau, tau / dt


def leak_of(tau, dt=DT):
    return 1.0 - dt / tau


def normaliser(leak, steps):
    """Z = sum_{i<T} lambda^i: the weighted average rate divides the weighted count by it."""
    return float(steps) if leak == 1.0 else (1.0 - leak**steps) / (1.0 - leak)


def hwc_to_chw(shape):
    """Keras's per-sample shape (H, W, C) as NIR's (C, H, W); a vector stays."""
    shape = tuple(int(d) for d in shape)
    return (shape[-1],) + shape[:-1] if len(shape) == 3 else shape


def chw_to_hwc(shape):
    shape = tuple(int(d) for d in shape)
    return shape[1:] + (shape[0],) if len(shape) == 3 else shape


def flatten_order(hwc_shape):
    """p with x_chw_flat = x_hwc_flat[p]: Keras's Flatten of a channels-last map orders the
    values (H, W, C), NIR's of a channels-first one (C, H, W)."""
    if len(hwc_shape) != 3:
        return None
    return np.arange(int(np.prod(hwc_shape))).reshape(hwc_shape).transpose(2, 0, 1).reshape(-1)
