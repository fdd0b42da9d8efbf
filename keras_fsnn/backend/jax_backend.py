"""JAX implementations of the backend-specific operations (see `__init__`)."""

import jax
import keras
import numpy as np


def read(variable):
    return variable.value


def vjp(fn, primal):
    value, pullback = jax.vjp(fn, primal)
    return value, lambda cotangent: pullback(cotangent)[0]


def report(sink, *values):
    """Send `values` to the host and store them on `sink` (a `BackwardReport`)."""

    def store(*host_values):
        sink.store(*[np.asarray(v) for v in host_values])

    jax.debug.callback(store, *values)


def flush_reports():
    """Wait for the host callbacks of the computations dispatched so far."""
    jax.effects_barrier()


def time_loop(steps, body, state):
    return jax.lax.fori_loop(0, steps, body, state)  # static bounds: lowered to a scan


def fused(fn):
    return fn  # traced into the surrounding jit, which XLA fuses as a whole


def fused_gradient(fn):
    return fn  # its gradient is traced into the surrounding jit


def updates_in_place():
    # under jit XLA updates arrays in place (eagerly each op copies, but eager JAX is for debugging)
    return True


def on_active_rows(fn, rows, *aligned):
    # jit needs static shapes: every row is computed (silent rows give zero anyway).
    return fn(rows, *aligned)


def compiled_call(layer, key, fn, *tensors):
    if any(isinstance(t, jax.core.Tracer) for t in tensors):
        return fn(*tensors)
    cache = layer.__dict__.setdefault("_compiled_calls", {})  # untracked by Keras
    variables = layer.variables
    if key not in cache:
        def pure(values, *arguments):  # the layer's variables as arguments, not as constants
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*arguments)

        cache[key] = jax.jit(pure)
    return cache[key]([variable.value for variable in variables], *tensors)
