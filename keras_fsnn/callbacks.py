"""Keras callbacks that watch feedback spiking blocks while a model trains."""

import math
import warnings

import keras

from keras_fsnn.inspection import block_inputs, spiking_blocks, spiking_layers, stream_rows  # noqa: F401 (their old home)


class EquilibriumMonitor(keras.callbacks.Callback):
    """Log each spiking layer's firing rates, equilibrium residuals and solver residuals,
    plot the convergence curve, and warn when a layer diverges.

    At the end of every epoch, adds to the epoch logs (so they reach `History`, CSVLogger
    or TensorBoard), for each FeedbackSpikingBlock or ImplicitStreams `name` (whose rates
    are `name/rate_s{stream}_{layer}`), the mean over the epoch's training batches of:
    `name/rate_l` (mean firing rate of layer l, paper 000 Table 5),
    `name/forward_residual` (||f(a[T]) - a[T]||, mean per-sample L2 norm, training mode),
    `name/backward_residual`, `name/backward_iterations` (the adjoint solve) and, for the
    spike-based backward, `name/backward_firing_rate` (paper 002 Fig. 2). (Means, not the
    last batch's values: one batch of a well-trained model is a noisy sample.) The layers
    sum these on the device during the epoch (`EquilibriumLayer.epoch_diagnostics`), so
    the monitor copies nothing to the host between batches: on an accelerator, a copy
    after every batch would stall it.

    With `probe` (a batch of model inputs), it also simulates each block on the probe at
    the end of every epoch and records the residual curve ||f(a[t]) - a[t]||, t = 1..T
    (paper 000 Fig. 1): `name/residual_t{t}` for t = 1, T/4, T/2, T goes to the logs, the
    whole curve to `self.curves[name]` (one array per epoch), and `plot(path)` draws the
    curves to a PNG (needs matplotlib). Put the monitor before a TensorBoard callback in
    the list so TensorBoard writes these entries too.

    At the end of every epoch it checks the epoch's backward passes and rates: failed
    solves (residual not below 1 or non-finite; the solver then contributes a zero adjoint
    for the failed entries, never NaN) or non-finite rates raise a `RuntimeWarning` that
    names the layer, the epoch and how many batches failed. `raise_on_divergence=True`
    checks after every batch instead (one copy to the host per batch) and stops training
    with a `RuntimeError` naming the batch.

    Non-finite data: a training sample whose input or currents held a NaN or +-inf makes
    the step's loss NaN and leaves every weight finite (`EquilibriumLayer.call`); at the
    end of that epoch (after that batch with `raise_on_divergence=True`) the monitor raises
    a `RuntimeError` naming the layer, the epoch, the first such batch and how many samples
    were affected (`raise_on_nonfinite=False`: a `RuntimeWarning` instead). The epoch logs
    carry `name/nonfinite_samples`.
    """

    def __init__(self, probe=None, raise_on_divergence=False, raise_on_nonfinite=True):
        super().__init__()
        from keras_fsnn import validation

        self.probe = probe
        self.raise_on_divergence = validation.boolean("raise_on_divergence", raise_on_divergence)
        self.raise_on_nonfinite = validation.boolean("raise_on_nonfinite", raise_on_nonfinite)
        self.curves = {}
        self._epoch = 0
        self._layers = None

    def set_model(self, model):
        super().set_model(model)
        self._layers = spiking_layers(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        for layer in self._layers or []:
            layer.reset_epoch_diagnostics()

    def on_train_batch_end(self, batch, logs=None):
        if not self.raise_on_divergence:
            return
        for layer in spiking_layers(self.model):
            d = layer.diagnostics()
            if d["nonfinite_samples"]:
                raise RuntimeError(self._nonfinite_message(layer, d["nonfinite_samples"], batch + 1))
            if d["backward_failed"] or not all(math.isfinite(v) for k, v in d.items() if k.startswith("rate_")):
                raise RuntimeError(self._message(layer, f"batch {batch}", d))

    def _message(self, layer, where, d):
        return (f"{type(layer).__name__} '{layer.name}' diverged at epoch {self._epoch + 1}, {where}: backward "
                f"residual {d['backward_residual']:.3g} after {d['backward_iterations']:.3g} iterations, firing rates "
                f"{[round(v, 4) for k, v in d.items() if k.startswith('rate_')]}. Try more solver_steps, a smaller "
                "norm_bound or learning rate, or spectral_norm=True.")

    def _nonfinite_message(self, layer, samples, batch):
        return (f"{type(layer).__name__} '{layer.name}' received non-finite values at epoch {self._epoch + 1}: "
                f"{samples} training sample(s) had a NaN or infinite input or current, the first in batch "
                f"{batch} of the epoch (counted from 1). Their outputs were 0 with no gradient, the loss was "
                "NaN, and they reached no gradient. Check the data (e.g. "
                "numpy.isfinite(x).all()) or, for finite inputs, the scale of the inputs and weights.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for layer in spiking_layers(self.model):
            means = layer.epoch_diagnostics()
            if means is None:  # no training batch this epoch (e.g. called by hand): the last call
                means = {key: value for key, value in layer.diagnostics().items() if key != "backward_failed"}
            failures = means.pop("backward_failures", 0)
            batches = means.pop("training_batches", 0)
            first = means.pop("first_nonfinite_batch", 0)
            if means.get("nonfinite_samples"):
                message = self._nonfinite_message(layer, means["nonfinite_samples"], first)
                if self.raise_on_nonfinite:
                    raise RuntimeError(message)
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            for key, value in means.items():
                logs[f"{layer.name}/{key}"] = value
            rates_ok = all(math.isfinite(v) for k, v in means.items() if k.startswith("rate_"))
            if failures or not rates_ok:
                where = (f"{failures} of its {batches} training batches" if failures
                         else f"its {batches} training batches (non-finite rates)")
                warnings.warn(self._message(layer, where, {**layer.diagnostics(), **means}), RuntimeWarning,
                              stacklevel=2)
            if self.probe is not None:
                curve = keras.ops.convert_to_numpy(layer.simulate(block_inputs(self.model, layer, self.probe))["residuals"])
                self.curves.setdefault(layer.name, []).append(curve)
                # ImplicitStreams: one curve per stream, logged as name/s{i}_residual_t{t}
                for stream, stream_curve in stream_rows(curve):
                    tag = "" if stream is None else f"s{stream}_"
                    steps = len(stream_curve)
                    for t in sorted({1, max(1, steps // 4), max(1, steps // 2), steps}):
                        logs[f"{layer.name}/{tag}residual_t{t}"] = float(stream_curve[t - 1])

    def plot(self, path):
        """Draw every recorded residual curve (one line per epoch) to a PNG at `path`."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.curves:
            raise ValueError("No residual curves recorded: pass probe=... to EquilibriumMonitor and train.")
        figure, axes = plt.subplots(1, len(self.curves), figsize=(5 * len(self.curves), 3.5), squeeze=False)
        for axis, (name, curves) in zip(axes[0], self.curves.items()):
            for epoch, curve in enumerate(curves):
                for stream, row in stream_rows(curve):
                    tag = "" if stream is None else f", stream {stream}"
                    axis.plot(range(1, len(row) + 1), row, label=f"epoch {epoch + 1}{tag}")
            axis.set(title=f"{name}: convergence to the equilibrium", xlabel="time step t",
                     ylabel="||f(a[t]) - a[t]||", yscale="log")
            axis.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path


class FiringRateLogger(keras.callbacks.Callback):
    """Write the model's average firing rate (and SynOps) into the epoch logs.

    At the end of every epoch, simulates the model's spiking blocks on up to
    `max_examples` inputs of `data` (the first ones, so every epoch and every trial sees
    the same inputs) and adds `{prefix}firing_rate` (spikes per neuron per time step over
    all spiking neurons, `keras_fsnn.metrics.spiking_activity`) and, with `synops=True`,
    `{prefix}synops` (per sample). Put it before callbacks that read the logs
    (CSVLogger, TensorBoard; keras-tuner adds its own after the user's).

    With `rate_bound`, it also logs `{prefix}accuracy_within_rate`: the epoch's
    `{prefix}accuracy` when the firing rate is at most `rate_bound`, and that accuracy
    minus 1 otherwise, so maximising it finds the most accurate model within the bound
    and ranks every model within the bound above every model over it.

    Args:
        data: model inputs: an array, an `(x, y[, sample_weight])` tuple, or a
            `tf.data.Dataset` / iterable of such batches (the validation data).
        max_examples: how many inputs to simulate.
        synops: also log the synaptic operations per sample.
        rate_bound: see above; needs an "accuracy" metric (and validation data for the
            "val_" prefix).
        prefix: "val_" (default) for validation data, "" for training data.
    """

    def __init__(self, data, max_examples=512, synops=False, rate_bound=None, prefix="val_"):
        super().__init__()
        from keras_fsnn import validation

        self.max_examples = validation.integer("max_examples", max_examples, minimum=1)
        self.synops = validation.boolean("synops", synops)
        self.rate_bound = None if rate_bound is None else validation.number("rate_bound", rate_bound, low=0.0, high=1.0)
        self.prefix = prefix
        self.inputs = first_inputs(data, self.max_examples)

    def on_epoch_end(self, epoch, logs=None):
        from keras_fsnn.metrics import spiking_activity

        if logs is None:
            return
        activity = spiking_activity(self.model, self.inputs, synops=self.synops)
        logs[f"{self.prefix}firing_rate"] = activity["firing_rate"]
        if self.synops:
            logs[f"{self.prefix}synops"] = activity["synops"]
        if self.rate_bound is not None:
            key = f"{self.prefix}accuracy"
            if key not in logs:
                raise ValueError(
                    f"FiringRateLogger(rate_bound={self.rate_bound}) needs '{key}' in the epoch logs; "
                    f"compile the model with metrics=['accuracy'] and pass validation data. Logs: {sorted(logs)}.")
            penalty = 0.0 if activity["firing_rate"] <= self.rate_bound else 1.0
            logs[f"{self.prefix}accuracy_within_rate"] = float(logs[key]) - penalty


def first_inputs(data, max_examples):
    """The first `max_examples` model inputs of `data` (see FiringRateLogger) as NumPy."""
    import numpy as np

    if isinstance(data, tuple):
        data = data[0]
    if hasattr(data, "shape"):
        return np.asarray(data[:max_examples])
    taken, count = [], 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = np.asarray(x)
        taken.append(x[: max_examples - count])
        count += len(taken[-1])
        if count >= max_examples:
            break
    if not taken:
        raise ValueError("Argument `data` holds no examples.")
    return np.concatenate(taken)
