"""Finding the spiking layers of a model and what they receive: the helpers that callbacks,
metrics, the trainer and the benchmarks share (kept here so that none of them imports
another for it)."""

import keras


def spiking_layers(model):
    """Every spiking equilibrium layer inside `model` (FeedbackSpikingBlock, ImplicitStreams
    and any other `EquilibriumLayer`), searched recursively, in model order."""
    from keras_fsnn.layers.equilibrium import EquilibriumLayer

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, EquilibriumLayer)]


def spiking_blocks(model):
    """Every FeedbackSpikingBlock inside `model` (searched recursively)."""
    from keras_fsnn.layers import FeedbackSpikingBlock

    return [layer for layer in spiking_layers(model) if isinstance(layer, FeedbackSpikingBlock)]


def block_inputs(model, block, x):
    """What `block` receives inside the functional `model` when the model is given `x`."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, block.input)(x, training=False)


def stream_rows(curve):
    """A residual curve as (stream, row) pairs: [(None, curve)] for a block's (T,) curve,
    [(1, row 1), (2, row 2), ...] for ImplicitStreams' (streams, T)."""
    return [(None, curve)] if curve.ndim == 1 else [(i + 1, row) for i, row in enumerate(curve)]
