"""Helpers shared by the spiking layers: each layer is built from "stages", ordinary Keras
layers (a Dense, a Conv2D, a Sequential of conv + batch norm) that map the previous
layer's spikes or rates to an input current, and calls them statelessly with explicit
float32 parameters so the same stage serves the simulation, the fixed-point map and the
adjoint solve."""

import inspect

import keras
from keras import ops

from keras_fsnn import backend
from keras_fsnn.layers.forward_input_gradient import use_forward_input_gradients


SIMULATION_DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}


def stage_current(stage, takes_training, params, inputs, mask=None, training=False, compute_dtype="float32"):
    """The output current of `stage` on `inputs` with parameters `params` = (trainable,
    non-trainable), in float32, times the dropout `mask` if given; and the stage's state
    updates (batch-norm moving statistics in training).

    compute_dtype="bfloat16" runs the stage's own ops (conv, dense, batch norm in inference)
    in bfloat16, as under Keras's "mixed_bfloat16" policy: the float32 parameters and inputs
    are cast on the way in, the current comes back as float32. Meant for the spike
    simulations, whose inputs (0/1 or -1/0/+1 spikes) bfloat16 holds exactly; it returns no
    state updates (inference only).
    """
    if compute_dtype != "float32":
        return _low_precision_current(stage, takes_training, params, inputs, mask, compute_dtype), []
    trainable, non_trainable = params
    kwargs = {"training": training} if takes_training else {}
    use_forward_input_gradients(stage)  # J^T's convs fast inside XLA's while loops
    current, updates = stage.stateless_call(trainable, non_trainable, inputs, **kwargs)
    current = ops.cast(current, "float32")
    if mask is not None:
        current = current * mask
    return current, updates


def _low_precision_current(stage, takes_training, params, inputs, mask, compute_dtype):
    # The stage (and every layer inside it) is called through `__call__` under a mixed
    # policy, so Keras casts its inputs and autocasts its float32 variables, here mapped to
    # `params`, to `compute_dtype`; the stage's own policy is restored afterwards.
    layers = stage._flatten_layers(include_self=True, recursive=True)
    policies = [layer.dtype_policy for layer in layers]
    mapping = list(zip(stage.trainable_variables + stage.non_trainable_variables, params[0] + params[1]))
    try:
        for layer in layers:
            layer.dtype_policy = f"mixed_{compute_dtype}"
        with keras.StatelessScope(state_mapping=mapping):
            current = stage(inputs, training=False) if takes_training else stage(inputs)
    finally:
        for layer, policy in zip(layers, policies):
            layer.dtype_policy = policy
    current = ops.cast(current, "float32")
    return current * mask if mask is not None else current


def stage_parameters(stage):
    """(trainable, non-trainable) values of `stage` as float32 tensors autodiff tracks."""
    return ([read_float32(v) for v in stage.trainable_variables],
            [read_float32(v) for v in stage.non_trainable_variables])


def diagnostic_variable(layer, name, shape=()):
    """A non-trainable float32 variable of `layer` that records what a user watches (firing
    rates, residuals). Averaged over replicas under a distribution strategy (each replica
    sees its part of the batch); a failure flag stays non-zero if any replica failed."""
    return layer.add_weight(shape=shape, initializer="zeros", trainable=False, aggregation="mean", name=name)


def read_float32(variable):
    # Under a mixed-precision policy a read inside `__call__` is autocast to float16; the
    # simulation, the fixed-point map and the adjoint solve all run in float32.
    value = backend.read(variable)
    return ops.cast(value, "float32") if "float" in str(value.dtype) else value


def average_input(x, input_type, neuron, time_steps):
    """x_bar, what the fixed-point map sees: the input itself (input_type "static") or the
    mean of the frames of a (batch, T, ...) sequence, weighted by lambda^(T-1-t) for LIF
    (paper 000 §4.1: the weighted average input the rates converge with)."""
    if input_type == "static":
        return x
    weights = neuron.time_weights(time_steps)
    weights = ops.reshape(weights / ops.sum(weights), (1, time_steps) + (1,) * (len(x.shape) - 2))
    return ops.sum(x * weights, axis=1)


def numeric_inputs(layer, inputs):
    """`inputs`, refused (TypeError) unless of a numeric or boolean dtype."""
    if not hasattr(inputs, "dtype"):
        return inputs
    dtype = str(getattr(inputs.dtype, "name", inputs.dtype))
    if not (dtype == "bool" or "int" in dtype or "float" in dtype):
        raise TypeError(f"Layer '{layer.name}' takes numeric inputs (spike frames, images, currents); received "
                        f"inputs of dtype {dtype!r}.")
    return inputs


def sample_norm(x):
    return ops.sqrt(ops.sum(ops.square(ops.reshape(x, (ops.shape(x)[0], -1))), axis=-1))


def call_takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def check_stage(name, layer):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"Argument `{name}` must be a Keras layer; received {name}={layer!r}.")
    inner = layer._flatten_layers(include_self=True, recursive=True)
    for sub in inner:
        if isinstance(sub, (keras.layers.Dropout, keras.layers.SpatialDropout2D)):
            raise ValueError(
                f"Argument `{name}` contains a {type(sub).__name__} layer, which would draw a new "
                "mask at every time step; use the block's `dropout` argument (variational "
                "dropout, one mask for all T steps) instead."
            )


def build_stage(layer, input_shape, name):
    try:
        if not layer.built:
            layer.build(input_shape)
        return tuple(layer.compute_output_shape(input_shape))
    except Exception as error:  # re-raised with the stage's name
        raise ValueError(
            f"Argument `{name}` ({type(layer).__name__}) cannot take an input of shape "
            f"{tuple(input_shape)}: {error}"
        ) from error
