"""Keras callbacks that watch feedback spiking blocks while a model trains."""

import math
import warnings

import keras


def spiking_blocks(model):
    """Every FeedbackSpikingBlock inside `model` (searched recursively)."""
    from keras_fsnn.layers import FeedbackSpikingBlock

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, FeedbackSpikingBlock)]


class EquilibriumMonitor(keras.callbacks.Callback):
    """Log each block's firing rates and solver residuals, and warn when it diverges.

    At the end of every epoch, adds to the epoch logs (so they reach `History`, CSVLogger
    or TensorBoard), for each FeedbackSpikingBlock `name`:
    `name/rate_l` (mean firing rate of layer l, paper 000 Table 5), `name/forward_residual`
    (||f(a[T]) - a[T]||, mean per-sample L2 norm, training mode) and
    `name/backward_residual`, `name/backward_iterations` (the adjoint solve).

    After every training batch it checks the last backward solve and the rates: a failed
    solve (residual not below 1 or non-finite; the solver then contributes a zero adjoint
    for the failed entries, never NaN) or non-finite rates raise a `RuntimeWarning` that
    names the block, the epoch and the batch. `raise_on_divergence=True` stops training
    with a `RuntimeError` instead.
    """

    def __init__(self, raise_on_divergence=False):
        super().__init__()
        self.raise_on_divergence = raise_on_divergence
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for block in spiking_blocks(self.model):
            d = block.diagnostics()
            rates_ok = all(math.isfinite(v) for k, v in d.items() if k.startswith("rate_"))
            if d["backward_failed"] or not rates_ok:
                message = (
                    f"FeedbackSpikingBlock '{block.name}' diverged at epoch {self._epoch + 1}, "
                    f"batch {batch}: backward residual {d['backward_residual']:.3g} after "
                    f"{d['backward_iterations']} iterations, firing rates "
                    f"{[round(v, 4) for k, v in d.items() if k.startswith('rate_')]}. "
                    "Try more solver_steps, a smaller norm_bound or learning rate, or "
                    "spectral_norm=True."
                )
                if self.raise_on_divergence:
                    raise RuntimeError(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for block in spiking_blocks(self.model):
            d = block.diagnostics()
            for key, value in d.items():
                if key != "backward_failed":
                    logs[f"{block.name}/{key}"] = value
