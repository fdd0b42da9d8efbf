"""ExactSpikingNetwork: a feed-forward LIF network trained with exact spike-time gradients.

Paper 004 (forward propagation, FP). Inputs are spike times, outputs are the first spike
time of each output neuron; the predicted class is the neuron that fires first. Training
computes dL/dW exactly by the implicit function theorem at every firing time
(`keras_fsnn.fp.gradients`) and applies it with a Keras optimizer.

    import keras
    from keras_fsnn.fp import ExactSpikingNetwork, FirstSpikeCrossEntropy

    net = ExactSpikingNetwork([5, 150, 3], alpha=0.999, beta=1.0, theta=1.0, t_max=2.0,
                              weight_init=[(1.5, 0.8), (2.0, 0.1)],
                              loss=FirstSpikeCrossEntropy(tau0=0.2, tau1=1.0, gamma=0.005), seed=0)
    history = net.fit(x_times, y, epochs=300, batch_size=150,
                      optimizer=keras.optimizers.Adam(5e-4, epsilon=1e-8),
                      validation_data=(x_test, y_test), callbacks=[keras.callbacks.CSVLogger("log.csv")])
    first_times = net.predict_times(x_test)   # (n, 3), t_max where a neuron stays silent
    classes = net.predict(x_test)

Why not `keras.Model.fit`. The forward pass is an event-driven NumPy simulation whose
event structure (how many spikes each neuron fires, which ones are causal) differs from
sample to sample and changes with every weight update; the gradient is not obtained by
differentiating a traced graph but by a forward-substitution solve over that ragged causal
graph. A fixed-size padded representation would have to be sized for the worst sample and
re-traced whenever it grows, and the backends' autodiff would have nothing to do. So
`fit` here is a plain loop that keeps Keras' contracts instead: a Keras optimizer
(`optimizer.apply_gradients` on the network's `keras.Variable` weights), Keras callbacks
(`keras.callbacks.CallbackList`: History, ProgbarLogger's progress bar, EarlyStopping,
CSVLogger, LearningRateScheduler, ModelCheckpoint with save_weights_only=True and a
".weights.h5" path, ...), and logs with `loss`, `accuracy`, `val_loss`, `val_accuracy`.

Backends: the weights are `keras.Variable`s of dtype float64. TensorFlow (the project's
default) and torch hold them as such; JAX needs JAX_ENABLE_X64=1, otherwise it stores them in
float32 (a warning says so; everything else stays float64).
"""

import json
import math
import os
import warnings

import keras
import numpy as np

from keras_fsnn import validation
from keras_fsnn.fp import gradients, neuron, simulation
from keras_fsnn.fp.losses import FirstSpikeCrossEntropy, first_spike_predictions

HIDDEN_INIT = (3.0, 1.0)  # paper 004 Tables 1-2: hidden weights N(3, 1)
OUTPUT_INIT = (2.0, 0.1)  # paper 004 Tables 1-3: output weights N(2, 0.1)


class ExactSpikingNetwork:
    """A feed-forward network of current-based LIF neurons (paper 004 §2) with exact gradients.

    Every neuron integrates its input spikes through the kernel h(u) = (e^{-alpha u} -
    e^{-beta u}) / (beta - alpha) and fires when its potential reaches theta, which
    subtracts theta e^{-beta (t - f)} (reset by subtraction); see `keras_fsnn.fp.neuron`.
    Spike times are simulated exactly (no time grid) up to t_max.

    Args:
        layer_sizes: [inputs, hidden..., classes], e.g. [5, 150, 3].
        alpha: synaptic rate 1/tau_s (1/time units), > 0.
        beta: membrane rate 1/tau_n (1/time units), > 0, != alpha.
        theta: firing threshold (a membrane potential), > 0.
        t_max: simulation horizon (time units); an output neuron that has not fired by then
            counts as firing at t_max.
        weight_init: one (mean, std) normal per weight layer, or None for N(3, 1) on hidden
            layers and N(2, 0.1) on the output layer (paper 004 Tables 1-2).
        loss: a `FirstSpikeCrossEntropy` (default: tau0=0.2, tau1=1, gamma=0).
        own_spike_terms: True (default) solves the exact system including the dependence of
            a firing time on the same neuron's earlier spikes (paper eq. 9); False drops those
            entries of L as the released code does (seed fact 10c), for reproduction only.
        seed: seed of the weight initialisation (and of the default shuffling in `fit`).
        name: a name for logs and files.
    """

    def __init__(self, layer_sizes, alpha=1.0, beta=0.99, theta=1.0, t_max=2.0, weight_init=None, loss=None,
                 own_spike_terms=True, seed=None, name="exact_spiking_network"):
        if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__") or len(layer_sizes) < 2:
            raise ValueError(
                "Argument `layer_sizes` must be a list of at least two layer widths [inputs, ..., classes]; "
                f"received layer_sizes={layer_sizes!r}.")
        self.layer_sizes = [validation.integer(f"layer_sizes[{i}]", n, minimum=1) for i, n in enumerate(layer_sizes)]
        self.alpha, self.beta, self.theta = neuron.check_rates(alpha, beta, theta)
        self.t_max = neuron.check_time_range(t_max, self.alpha, self.beta)
        self.weight_init = self._check_init(weight_init)
        if loss is None:
            loss = FirstSpikeCrossEntropy()
        elif isinstance(loss, dict):
            loss = FirstSpikeCrossEntropy.from_config(loss)
        if not isinstance(loss, FirstSpikeCrossEntropy):
            raise TypeError("Argument `loss` must be a keras_fsnn.fp.FirstSpikeCrossEntropy or its config dict; "
                            f"received loss={loss!r}.")
        self.loss = loss
        self.own_spike_terms = validation.boolean("own_spike_terms", own_spike_terms)
        self.seed = None if seed is None else validation.integer("seed", seed, minimum=0)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Argument `name` must be a non-empty string; received name={name!r}.")
        self.name = name
        rng = np.random.default_rng(self.seed)
        self.variables = [
            keras.Variable(rng.normal(mean, std, (n_in, n_out)), dtype="float64", name=f"kernel_{index}")
            for index, ((mean, std), n_in, n_out) in enumerate(
                zip(self.weight_init, self.layer_sizes[:-1], self.layer_sizes[1:]))
        ]
        if keras.ops.convert_to_numpy(self.variables[0].value).dtype != np.float64:
            warnings.warn(
                f"The {keras.backend.backend()} backend stores these float64 weights in "
                f"{keras.ops.convert_to_numpy(self.variables[0].value).dtype} (for JAX, set JAX_ENABLE_X64=1 "
                "before importing keras). Simulation and gradients stay float64, but the weights and the "
                "optimizer's steps are rounded to that precision.", stacklevel=2)
        self.optimizer = None
        self.stop_training = False
        self.history = None

    def _check_init(self, weight_init):
        layers = len(self.layer_sizes) - 1
        if weight_init is None:
            return [HIDDEN_INIT] * (layers - 1) + [OUTPUT_INIT]
        if not hasattr(weight_init, "__len__") or len(weight_init) != layers:
            raise ValueError(
                f"Argument `weight_init` must give one (mean, std) pair per weight layer ({layers} for "
                f"layer_sizes={self.layer_sizes}); received weight_init={weight_init!r}.")
        out = []
        for index, pair in enumerate(weight_init):
            if not hasattr(pair, "__len__") or len(pair) != 2:
                raise ValueError(f"Argument `weight_init[{index}]` must be a (mean, std) pair; received {pair!r}.")
            out.append((validation.number(f"weight_init[{index}][0]", pair[0]),
                        validation.number(f"weight_init[{index}][1]", pair[1], low=0.0)))
        return out

    # ----------------------------------------------------------------------------- weights
    @property
    def trainable_variables(self):
        return list(self.variables)

    @property
    def weights(self):
        """The kernels as float64 NumPy arrays, (N_{l-1}, N_l) each (W[i, n]: input i -> neuron n)."""
        return [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in self.variables]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        if len(weights) != len(self.variables):
            raise ValueError(f"Argument `weights` must hold {len(self.variables)} arrays; received {len(weights)}.")
        for index, (variable, value) in enumerate(zip(self.variables, weights)):
            value = np.asarray(value, np.float64)
            if value.shape != tuple(variable.shape):
                raise ValueError(f"Argument `weights[{index}]` must have shape {tuple(variable.shape)}; "
                                 f"received shape {value.shape}.")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"Argument `weights[{index}]` must be finite.")
            variable.assign(value)

    # ---------------------------------------------------------------------- checks of data
    def _check_x(self, x, argument="x"):
        x = simulation.as_spike_array(x, argument)
        if x.shape[1] != self.layer_sizes[0]:
            raise ValueError(
                f"Argument `{argument}` must have {self.layer_sizes[0]} input neurons (axis 1); received shape "
                f"{x.shape[:2] if x.shape[2] == 1 else x.shape}.")
        return x

    def _check_y(self, y, count, argument="y"):
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != count:
            raise ValueError(f"Argument `{argument}` must be a 1-D array of {count} class indices (one per "
                             f"sample); received shape {y.shape}.")
        if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.layer_sizes[-1]):
            raise ValueError(f"Argument `{argument}` must hold integer classes in [0, {self.layer_sizes[-1] - 1}]; "
                             f"received dtype {y.dtype}, range [{y.min()}, {y.max()}].")
        return y.astype(np.int64)

    # ------------------------------------------------------------------------- inference
    def simulate(self, x_times, first_spike_only=False):
        """The exact spikes of every layer (`keras_fsnn.fp.simulation.NetworkSpikes`)."""
        x = self._check_x(x_times, "x_times")
        return simulation.simulate_network(x, self.weights, self.alpha, self.beta, self.theta, self.t_max,
                                           first_spike_only=first_spike_only)

    def predict_times(self, x_times, batch_size=500):
        """First spike time of each output neuron, (batch, classes); t_max if it never fires."""
        x = self._check_x(x_times, "x_times")
        batch_size = validation.integer("batch_size", batch_size, minimum=1)
        weights = self.weights
        out = [simulation.simulate_network(x[i:i + batch_size], weights, self.alpha, self.beta, self.theta,
                                           self.t_max, first_spike_only=True).first_output_times()
               for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.layer_sizes[-1]))

    def predict(self, x_times, batch_size=500):
        """The predicted classes: the output neuron that fires first (ties: lowest index)."""
        return first_spike_predictions(self.predict_times(x_times, batch_size))

    def evaluate(self, x, y, batch_size=500, return_dict=True):
        """Mean loss and accuracy on (x, y): {"loss": ..., "accuracy": ...}."""
        times = self.predict_times(x, batch_size)
        y = self._check_y(y, times.shape[0])
        loss, _ = self.loss(times, y)
        logs = {"loss": float(loss.mean()), "accuracy": float((first_spike_predictions(times) == y).mean())}
        return logs if return_dict else [logs["loss"], logs["accuracy"]]

    # -------------------------------------------------------------------------- training
    def compute_gradients(self, x, y):
        """Mean loss, accuracy and exact gradients dL/dW on one batch (forward propagation).

        Returns:
            (loss, accuracy, grads, record): grads is a list of float64 arrays shaped like
            the kernels; record the simulated `NetworkSpikes` (output: first spikes only).
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        weights = self.weights
        record = simulation.simulate_network(x, weights, self.alpha, self.beta, self.theta, self.t_max,
                                             first_spike_only=True)
        times = record.first_output_times()
        loss, time_grad = self.loss(times, y)
        grads = gradients.first_spike_weight_gradients(record, weights, time_grad / x.shape[0], self.alpha,
                                                       self.beta, self.theta, self.own_spike_terms)
        accuracy = float((first_spike_predictions(times) == y).mean())
        return float(loss.mean()), accuracy, grads, record

    def train_on_batch(self, x, y, optimizer=None):
        """One optimizer step on (x, y); returns {"loss", "accuracy"} measured before the step."""
        optimizer = self._resolve_optimizer(optimizer)
        loss, accuracy, grads, _ = self.compute_gradients(x, y)
        if not all(np.all(np.isfinite(g)) for g in grads):
            raise FloatingPointError(
                "Non-finite exact gradient: a firing time sits at a tangency of the potential (dV/dt = 0), "
                "where it is not differentiable. Lower the learning rate.")
        # backend tensors of the variables' dtype: the torch optimizers take no NumPy arrays
        grads = [keras.ops.convert_to_tensor(g, dtype=v.dtype) for g, v in zip(grads, self.variables)]
        optimizer.apply_gradients(zip(grads, self.variables))
        return {"loss": loss, "accuracy": accuracy}

    def _resolve_optimizer(self, optimizer):
        if optimizer is not None:
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                raise TypeError(f"Argument `optimizer` must be a keras.optimizers.Optimizer; received {optimizer!r}.")
            self.optimizer = optimizer
        if self.optimizer is None:
            raise ValueError("No optimizer: pass optimizer=keras.optimizers.Adam(...) to fit (or train_on_batch).")
        return self.optimizer

    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None, callbacks=None, validation_data=None,
            shuffle=True, verbose="auto", initial_epoch=0, shuffle_seed=None):
        """Train with exact gradients and a Keras optimizer, calling Keras callbacks.

        Args:
            x: (n, inputs) or (n, inputs, K) input spike times; y: (n,) integer classes.
            epochs, batch_size, initial_epoch: as in `keras.Model.fit`.
            optimizer: a `keras.optimizers.Optimizer` (kept for later calls; required the
                first time).
            callbacks: Keras callbacks; they see this network as `callback.model` (with
                `optimizer`, `stop_training`, `get_weights`/`set_weights`, `save_weights`).
            validation_data: (x_val, y_val), evaluated after every epoch.
            shuffle: reshuffle the training set every epoch (seeded by `shuffle_seed`,
                default: the network's seed).
            verbose: "auto"/1 (progress bar), 2 (one line per epoch) or 0.

        Returns:
            the `keras.callbacks.History` (`history.history["accuracy"]`, ...).
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        epochs = validation.integer("epochs", epochs, minimum=0)
        batch_size = validation.integer("batch_size", batch_size, minimum=1)
        initial_epoch = validation.integer("initial_epoch", initial_epoch, minimum=0)
        shuffle = validation.boolean("shuffle", shuffle)
        if verbose not in ("auto", 0, 1, 2):
            raise ValueError(f"Argument `verbose` must be one of 'auto', 0, 1, 2; received verbose={verbose!r}.")
        verbose = 1 if verbose == "auto" else verbose
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("Argument `validation_data` must be a pair (x_val, y_val); received "
                                 f"{type(validation_data).__name__}.")
            x_val = self._check_x(validation_data[0], "validation_data[0]")
            y_val = self._check_y(validation_data[1], x_val.shape[0], "validation_data[1]")
        optimizer = self._resolve_optimizer(optimizer)
        if not optimizer.built:
            optimizer.build(self.variables)
        n = x.shape[0]
        steps = max(1, math.ceil(n / batch_size))
        rng = np.random.default_rng(self.seed if shuffle_seed is None else shuffle_seed)
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=epochs,
            steps=steps)
        self.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else np.arange(n)
            seen = loss_sum = correct = 0.0
            for step in range(steps):
                callback_list.on_train_batch_begin(step)
                index = order[step * batch_size:(step + 1) * batch_size]
                batch_logs = self.train_on_batch(x[index], y[index])
                seen += index.size
                loss_sum += batch_logs["loss"] * index.size
                correct += batch_logs["accuracy"] * index.size
                logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
                callback_list.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = dict(logs)
            if validation_data is not None:
                val = self.evaluate(x_val, y_val)
                logs.update({"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
            callback_list.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        callback_list.on_train_end(logs)
        return self.history

    # ----------------------------------------------------------------------- serialising
    def get_config(self):
        return {
            "layer_sizes": list(self.layer_sizes),
            "alpha": self.alpha,
            "beta": self.beta,
            "theta": self.theta,
            "t_max": self.t_max,
            "weight_init": [list(pair) for pair in self.weight_init],
            "loss": self.loss.get_config(),
            "own_spike_terms": self.own_spike_terms,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def save_weights(self, filepath, overwrite=True):
        """Write the kernels (float64, exact) and the config to `filepath`: ".npz" or
        ".weights.h5" (the suffix ModelCheckpoint(save_weights_only=True) uses)."""
        filepath = os.fspath(filepath)
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{filepath} exists and overwrite=False.")
        config = json.dumps(self.get_config())
        weights = self.weights
        if filepath.endswith(".weights.h5"):
            import h5py

            with h5py.File(filepath, "w") as handle:
                handle.attrs["config"] = config
                for index, kernel in enumerate(weights):
                    handle.create_dataset(f"kernel_{index}", data=kernel)
        elif filepath.endswith(".npz"):
            np.savez(filepath, config=np.array(config), **{f"kernel_{i}": w for i, w in enumerate(weights)})
        else:
            raise ValueError(f"Argument `filepath` must end with '.npz' or '.weights.h5'; received filepath={filepath!r}.")

    @staticmethod
    def _read(filepath):
        filepath = os.fspath(filepath)
        if filepath.endswith(".weights.h5"):
            import h5py

            with h5py.File(filepath, "r") as handle:
                config = json.loads(handle.attrs["config"])
                kernels = [np.asarray(handle[f"kernel_{i}"]) for i in range(len(config["layer_sizes"]) - 1)]
        elif filepath.endswith(".npz"):
            with np.load(filepath) as data:
                config = json.loads(str(data["config"]))
                kernels = [data[f"kernel_{i}"] for i in range(len(config["layer_sizes"]) - 1)]
        else:
            raise ValueError(f"Argument `filepath` must end with '.npz' or '.weights.h5'; received filepath={filepath!r}.")
        return config, kernels

    def load_weights(self, filepath):
        """Load kernels written by `save_weights` (their layer sizes must match)."""
        config, kernels = self._read(filepath)
        if config["layer_sizes"] != self.layer_sizes:
            raise ValueError(f"{os.fspath(filepath)} holds a network with layer_sizes={config['layer_sizes']}; this one "
                             f"has layer_sizes={self.layer_sizes}.")
        self.set_weights(kernels)

    def save(self, filepath, overwrite=True):
        """Same as `save_weights` (the file carries the config): `ExactSpikingNetwork.load` rebuilds it."""
        self.save_weights(filepath, overwrite=overwrite)

    @classmethod
    def load(cls, filepath):
        """A network rebuilt from a file written by `save`/`save_weights`."""
        config, kernels = cls._read(filepath)
        network = cls.from_config(config)
        network.set_weights(kernels)
        return network

    def summary(self, print_fn=print):
        params = sum(int(np.prod(v.shape)) for v in self.variables)
        print_fn(f"{self.name}: {'-'.join(map(str, self.layer_sizes))} LIF (alpha={self.alpha:g}, beta={self.beta:g}, "
                 f"theta={self.theta:g}, t_max={self.t_max:g}), {params} weights, exact FP gradients"
                 f"{'' if self.own_spike_terms else ' (released-code L: no own-spike terms)'}")

    def __repr__(self):
        return f"ExactSpikingNetwork({self.layer_sizes}, alpha={self.alpha}, beta={self.beta}, theta={self.theta}, " \
               f"t_max={self.t_max})"
