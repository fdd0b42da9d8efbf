"""TensorFlow implementations of the backend-specific operations (see `__init__`)."""

import tensorflow as tf


def read(variable):
    return tf.convert_to_tensor(variable)


def vjp(fn, primal):
    # One persistent tape records fn(primal) once; every pullback reuses the recording,
    # also from inside a solver's while-loop body (graph mode and XLA).
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(primal)
        value = fn(primal)

    def pullback(cotangent):
        return tape.gradient(value, primal, output_gradients=cotangent,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return value, pullback


def report(sink, *values):
    """Store `values` in the variables of `sink` (a `BackwardReport`)."""
    for variable, value in zip(sink.variables, values):
        variable.assign(tf.cast(value, variable.dtype))


def time_loop(steps, body, state):
    return tf.while_loop(lambda t, _: t < steps, lambda t, value: (t + 1, body(t, value)),
                         (tf.constant(0), state), maximum_iterations=steps)[1]
