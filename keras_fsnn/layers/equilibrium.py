"""EquilibriumLayer: the one skeleton of every spiking layer trained at its equilibrium.

Papers 000 (IDE), 002 (SPIDE) and 003 (MPIS) share it. A layer holds stages (Keras layers
that map spikes or rates to input currents) wired into spiking layers, and a call is

    params  = every stage's (trainable, non-trainable) values, float32 (a feedback kernel
              restricted by its norm restriction)
    masks   = variational dropout: one Bernoulli mask per stage output and sample, drawn
              once per call and used at all T steps (paper 000 F.3.2)
    rates   = T steps of the spiking network (the wiring below, the neuron's `step`) with no
              gradient; a^l[T] the (weighted) average rate of every spiking layer
    a*      = the rates of the last layer(s), which converge to a* = f(a*)
    output  = the backward mode's value at a*, carrying the gradient it defines (IDE,
              SPIDE, one-step, BPTT: keras_fsnn.gradients)
    then, in training, the stages' batch-norm statistics are updated from f evaluated at
    a* in training mode, and the diagnostics are recorded on the device.

A subclass says only what differs: its stages (`_stages`, one flat list; the positions in
it index parameters, dropout masks and state updates), their shapes (`_build_stages`), and
its wiring,

    _network(first, last, activate, run) -> the activity of every spiking layer,

one pass through the network: `first` are the input stages' currents, `last` the previous
step's activity of the last layer(s) (the feedback, delayed one step), `run(k, inputs)`
stage k's current, and `activate(j, current)` what spiking layer j makes of its current:
the neuron's spikes in the simulation, the rate map sigma(z) in the fixed-point map f.
The same wiring thus gives the T-step simulation (paper 000 eq. 10 / 33) and f (Theorem 3),
as Keras's RNN gives a cell its loop (`keras/src/layers/rnn/rnn.py`).

The layer's options are option objects resolved like `keras.initializers.get` (a name, a
config or an instance): `neuron` (keras_fsnn.neurons) and `gradient`
(keras_fsnn.gradients), with their short forms (`leak`, `threshold`, `resting_potential`;
`solver`, `solver_steps`, `solver_tol`, `surrogate`, `backward_time_steps`, ...) as keyword
arguments; a short form the chosen neuron or mode does not use is an error.
"""

import keras
from keras import ops

from keras_fsnn import backend, gradients, neurons, validation
from keras_fsnn.diagnostics import BackwardReport
from keras_fsnn.layers.stages import (
    SIMULATION_DTYPES,
    average_input,
    call_takes_training,
    check_stage,
    diagnostic_variable,
    numeric_inputs,
    sample_norm,
    stage_current,
    stage_parameters,
)

INPUT_TYPES = {"static": "static", "sequence": "sequence"}
SHORT_FORMS = neurons.SHORT_FORMS + gradients.SHORT_FORMS
CONFIG_VERSION = 2  # configs written before it store every option, the unused ones too


class EquilibriumProblem:
    """What a backward mode gets from one call of an `EquilibriumLayer` (see gradients.py).

    Attributes: `layer`, `training`, `x_bar` (the (weighted) average input f sees),
    `params` (differentiable) and `frozen` (the same, gradient stopped), `masks` (dropout),
    `rates` (every spiking layer's a^l[T]), `equilibrium` (the last layers' rates, joined
    into the layer's equilibrium vector; differentiable only for `through_time` modes),
    `operands` = (x_bar, frozen, masks) with no gradient, to be passed explicitly into a
    custom gradient, and `report` (the layer's BackwardReport)."""

    def __init__(self, layer, training, x_bar, params, frozen, masks, rates, equilibrium):
        self.layer, self.training = layer, training
        self.x_bar, self.params, self.frozen, self.masks = x_bar, params, frozen, masks
        self.rates, self.equilibrium = rates, equilibrium
        self.operands = (ops.stop_gradient(x_bar), frozen, masks)
        self.report = layer._backward_report
        self._value = None

    def adjoint_map(self, a, operands):
        """f(a) with `operands` = (x_bar, params, masks): the map whose Jacobian enters the
        adjoint equation (in the layer's adjoint batch-norm mode)."""
        x_bar, params, masks = operands
        return self.layer.fixed_point_map(a, x_bar, params, masks, self.layer._adjoint_training(self.training))[0]

    def value(self):
        """z = f(a*) in the call's mode, recorded by autodiff through the weights and x_bar."""
        if self._value is None:
            self._value = self.layer.fixed_point_map(self.equilibrium, self.x_bar, self.params, self.masks,
                                                     self.training)
        return self._value[0]

    def statistics(self):
        """(z, state updates) of f at a*: `value()`'s if a mode evaluated it, else with no
        gradient (for the batch-norm updates and the forward residual)."""
        if self._value is None:
            self._value = self.layer.fixed_point_map(ops.stop_gradient(self.equilibrium),
                                                     ops.stop_gradient(self.x_bar), self.frozen, self.masks,
                                                     self.training)
        return self._value


class EquilibriumLayer(keras.layers.Layer):
    """Base class of the spiking equilibrium layers (module docstring). Subclasses set
    `_stages` (via `_set_stages`) and implement `_build_stages`, `_network` and
    `_input_values`; see FeedbackSpikingBlock and ImplicitStreams.

    Common arguments: `time_steps` (T >= 1), `neuron` (a name, config or
    `keras_fsnn.neurons.Neuron`), `dropout` (a rate in [0, 1), or one per stage),
    `gradient` (a name, config or `keras_fsnn.gradients.BackwardMode`), `input_type`
    ("static": the same input current at every step; "sequence": (batch, T, ...) frames,
    frame t driving step t), `simulation_dtype` ("float32" or "bfloat16": the precision of
    the simulation's per-step currents), `seed` (of the dropout masks), and the short forms
    of the neuron's and the mode's options.
    """

    _per_group_residuals = False  # simulate()'s residuals: (T,) or (groups, T)
    _first_step_rates = False  # count only the first step's spikes (the released MPIS code)
    _output_map = False  # output the value of f(a*) instead of a* (MPIS, paper 003 §4.2)

    def __init__(self, time_steps=30, neuron="if", dropout=0.0, gradient="ide", input_type="static",
                 simulation_dtype="float32", seed=None, **kwargs):
        backend.check_supported()
        short = {key: kwargs.pop(key) for key in list(kwargs) if key in SHORT_FORMS}
        # Spike counts and membrane potentials need float32 (bfloat16 counts exactly only
        # up to 256), and the fixed-point map and the adjoint solve run in float32: the
        # layer keeps a float32 policy under a global mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.time_steps = validation.integer("time_steps", time_steps, minimum=1)
        self.neuron = neurons.get(neuron, **{k: short.pop(k, None) for k in neurons.SHORT_FORMS})
        self.backward = gradients.get(gradient, **short)
        self._dropout_argument = dropout
        self.input_type = validation.choose("input_type", input_type, INPUT_TYPES)
        self.simulation_dtype = validation.choose("simulation_dtype", simulation_dtype, SIMULATION_DTYPES)
        if self.simulation_dtype != "float32" and self.backward.through_time:
            raise ValueError(
                f"simulation_dtype={simulation_dtype!r} runs the spike simulation in low precision, but "
                f"gradient={self.backward.name!r} differentiates through that simulation; use "
                "simulation_dtype='float32' with it.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _set_stages(self, stages, labels):
        """Record the flat stage list (`labels`: each stage's argument name for errors),
        check every stage, the dropout rates and the backward mode against them."""
        for stage, label in zip(stages, labels):
            check_stage(label, stage)
        self._stages = list(stages)
        self._takes_training = [call_takes_training(stage) for stage in self._stages]
        self.dropout = _dropout_rates(self._dropout_argument, len(self._stages))
        self.backward = self.backward.bind(self)

    # ------------------------------------------------------------------ subclass hooks

    def _build_stages(self, frame_shape):
        """Build every stage for per-step inputs of `frame_shape`; set `_stage_shapes` (the
        output shape of every stage, by position), `_layer_shapes` (the per-sample shape of
        every spiking layer) and `_last` (the indices of the last layer(s))."""
        raise NotImplementedError

    def _network(self, first, last, activate, run):
        raise NotImplementedError

    def _input_values(self, x):
        """What each input stage (`_input_stages`) receives for the input `x`."""
        return [x]

    _input_stages = (0,)

    def _join(self, parts):
        """The equilibrium vector of the last layers' activities (one tensor)."""
        return parts[0]

    def _split(self, joined):
        return [joined]

    def _restrict(self, params, training):
        """Hook: replace restricted parameters (a feedback kernel) by their restricted value."""
        return params

    def _adjoint_training(self, training):
        """The batch-norm mode of f inside the adjoint solve (the paper's: the call's): a
        bool, or one per stage."""
        return training

    def _input_statistics_updates(self, training):
        """How often a training step updates the input stages' state (batch-norm moving
        statistics) with the statistics of their input: once (FeedbackSpikingBlock's
        bn_statistics="released_code": twice, as the released code's batch norm runs twice)."""
        return 1

    def _simulation_training(self, training):
        """Whether the input stages run in training mode inside the simulation (no: stored
        statistics; FeedbackSpikingBlock's bn_statistics="released_code" says yes)."""
        return False

    def _rate_labels(self):
        return [str(j + 1) for j in range(len(self._layer_shapes))]

    def _outputs(self, output):
        return output

    # ------------------------------------------------------------------ build

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_type == "sequence":
            if len(input_shape) < 3:
                raise ValueError(
                    "With input_type='sequence' the input must be (batch, time, features...); "
                    f"received input shape {input_shape}.")
            if input_shape[1] is not None and input_shape[1] != self.time_steps:
                raise ValueError(
                    f"The input sequence has {input_shape[1]} frames but time_steps={self.time_steps}; "
                    "they must be equal (crop or pad the frames).")
            frame_shape = (input_shape[0],) + input_shape[2:]
        else:
            frame_shape = input_shape
        self._build_stages(frame_shape)
        # later calls are checked against the built shape (Keras's own message names the axis)
        self.input_spec = keras.InputSpec(shape=(None,) + input_shape[1:])
        self._rates = diagnostic_variable(self, "firing_rates", (len(self._layer_shapes),))
        self._forward_residual = diagnostic_variable(self, "forward_residual")
        # a mode that reports less keeps fewer variables: what its weights files hold
        self._backward_report = BackwardReport(
            [diagnostic_variable(self, name) for name in self.backward.report_fields],
            diagnostic_variable(self, "backward_epoch_sums", (BackwardReport.SUMS,)))
        # rates, forward residual and the number of training calls, summed over an epoch
        # on the device (EquilibriumMonitor reads them once per epoch)
        self._epoch_sums = diagnostic_variable(self, "epoch_sums", (len(self._layer_shapes) + 2,))
        # non-finite samples: in the last call, in the epoch, and the epoch's first such batch
        self._nonfinite = diagnostic_variable(self, "nonfinite_samples", (3,))
        self._accumulators = [self._backward_report.sums, self._epoch_sums, self._nonfinite]

    # ------------------------------------------------------------------ pieces

    def _parameters(self, training):
        """(trainable, non-trainable) values of every stage, as float32 tensors that autodiff
        tracks, restricted where the layer restricts them."""
        return self._restrict([stage_parameters(stage) for stage in self._stages], training)

    def _dropout_masks(self, batch, training):
        """One variational mask per stage output ([] without dropout)."""
        rates = self.dropout if isinstance(self.dropout, tuple) else (self.dropout,) * len(self._stages)
        if not training or not any(rates):
            return []
        masks = []
        for rate, shape in zip(rates, self._stage_shapes):
            if rate == 0.0:
                masks.append(ops.ones((batch,) + tuple(shape[1:]), "float32"))
                continue
            keep = 1.0 - rate
            noise = keras.random.uniform((batch,) + tuple(shape[1:]), seed=self.seed_generator)
            masks.append(ops.cast(ops.less(noise, keep), "float32") / keep)
        return masks

    def _runner(self, params, masks, training=False, compute_dtype="float32", updates=None):
        """run(k, inputs): stage k's current (its state updates into `updates[k]`);
        `training` is a bool or one per stage."""

        def run(k, inputs):
            mode = training[k] if isinstance(training, (list, tuple)) else training
            current, stage_updates = stage_current(self._stages[k], self._takes_training[k], params[k], inputs,
                                                   masks[k] if masks else None, mode, compute_dtype)
            if updates is not None:
                updates[k] = stage_updates
            return current

        return run

    def _average_input(self, x):
        return average_input(x, self.input_type, self.neuron, self.time_steps)

    def fixed_point_map(self, a, x_bar, params, masks, training=False):
        """f(a) for the equilibrium vector `a`, given the (average) input `x_bar`, and every
        stage's state updates (by position): the wiring with the rate map as activation."""
        updates = [[] for _ in self._stages]
        run = self._runner(params, masks, training, updates=updates)
        first = [run(k, v) for k, v in zip(self._input_stages, self._input_values(x_bar))]
        rate_map = backend.fused_gradient(self.neuron.rate_map)
        activity = self._network(first, self._split(a), lambda j, current: rate_map(current), run)
        return self._join([activity[j] for j in self._last]), updates

    def _simulate(self, x, params, masks, record_residuals=False, spike=None, count_spikes=False,
                  first_stage_training=False):
        """T steps of the spiking network (stored batch-norm statistics).

        Returns every spiking layer's (weighted) average rate a^l[T]; if asked, the
        residual ||f(a[t]) - a[t]|| (mean over the batch) of each last-layer group at every
        step t = 1..T, or (`count_spikes`) every layer's plain spike counts instead; and
        which samples met a non-finite current (NaN or +-inf) at some step, (batch,) bool.
        A neuron makes no spike of a NaN potential, so without this flag such a sample
        would look like a silent, finite one.
        """
        neuron = self.neuron
        batch = ops.shape(x)[0]
        dtype = "float32" if spike is not None else self.simulation_dtype
        zeros = [ops.zeros((batch,) + tuple(shape), "float32") for shape in self._layer_shapes]
        run = self._runner(params, masks, compute_dtype=dtype)
        x_bar = self._average_input(x)
        sequence = self.input_type == "sequence"
        constant_run = self._runner(params, masks, first_stage_training)
        constant = [None if sequence and i == 0 else constant_run(k, v)
                    for i, (k, v) in enumerate(zip(self._input_stages, self._input_values(x_bar)))]
        groups = len(self._last)

        def body(t, state):
            potentials, counts, last, residuals, plain, poison = state
            new_potentials = list(potentials)
            poisons = [poison]
            first = constant
            if sequence:  # frame t drives the first input stage; the others are constant
                first = [run(self._input_stages[0], ops.take(x, t, axis=1))] + constant[1:]

            def activate(j, current):
                new_potentials[j], spikes = neuron.step(potentials[j], current, spike)
                poisons[0] = poisons[0] + _poison(current)
                return spikes

            spikes = self._network(first, last, activate, run)
            if self._first_step_rates:  # the released MPIS code keeps the first step's spikes only
                keep = ops.cast(ops.equal(t, 0), "float32")
                new_counts = [c + keep * s for c, s in zip(counts, spikes)]
            else:
                new_counts = [neuron.accumulate(c, s) for c, s in zip(counts, spikes)]
            if record_residuals:
                scale = neuron.normaliser(self.time_steps if self._first_step_rates else t + 1)
                rate = self._join([new_counts[j] / scale for j in self._last])
                mapped, _ = self.fixed_point_map(rate, x_bar, params, masks)
                step = ops.stack([ops.mean(sample_norm(d)) for d in self._split(mapped - rate)])
                residuals = residuals + ops.expand_dims(step, 1) * ops.one_hot(t, self.time_steps)[None, :]
            if count_spikes:
                plain = [c + s for c, s in zip(plain, spikes)]
            return new_potentials, new_counts, [spikes[j] for j in self._last], residuals, plain, poisons[0]

        state = (list(zeros), list(zeros), [zeros[j] for j in self._last],
                 ops.zeros((groups, self.time_steps), "float32"), list(zeros) if count_spikes else [],
                 ops.zeros((batch,), "float32"))
        _, counts, _, residuals, plain, poison = backend.time_loop(self.time_steps, body, state)
        scale = neuron.normaliser(self.time_steps)
        if not self._per_group_residuals:
            residuals = residuals[0]
        extra = plain if count_spikes else (residuals if record_residuals else None)
        return [count / scale for count in counts], extra, ops.logical_not(ops.isfinite(poison))

    # ------------------------------------------------------------------ call

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(numeric_inputs(self, inputs), *args, **kwargs)  # before Keras converts them

    def call(self, inputs, training=False):
        """simulate -> a* -> the backward mode's output (module docstring).

        Non-finite data (docs/ide.md, "Non-finite data"): a sample whose input holds a NaN
        or +-inf, or whose simulation meets a non-finite current, is computed on zeros, so
        nothing non-finite reaches a gradient or a weight. Its output is NaN in inference;
        in training it is 0 with no gradient, and the layer adds a NaN loss term, so the
        step's loss is NaN (`keras.callbacks.TerminateOnNaN` stops there) and
        `EquilibriumMonitor` raises an error naming the batch.
        """
        training = bool(training)
        x = ops.cast(inputs, "float32")
        invalid = ops.logical_not(ops.isfinite(_poison(x)))
        x = _zero_rows(invalid, x)
        params = self._parameters(training)
        masks = self._dropout_masks(ops.shape(x)[0], training)
        frozen = keras.tree.map_structure(ops.stop_gradient, params)
        mode = self.backward
        if mode.through_time:  # the simulation itself is differentiated
            rates, _, overflow = self._simulate(x, params, masks, spike=mode.spike)
        else:
            rates, _, overflow = self._simulate(ops.stop_gradient(x), frozen, masks,
                                                first_stage_training=self._simulation_training(training))
            rates = [ops.stop_gradient(rate) for rate in rates]
        invalid = ops.logical_or(invalid, overflow)  # overflow: finite inputs, a non-finite current
        rates = [_zero_rows(invalid, rate) for rate in rates]
        x_bar = self._average_input(_zero_rows(invalid, x))
        equilibrium = self._join([rates[j] for j in self._last])
        problem = EquilibriumProblem(self, training, x_bar, params, frozen, masks, rates, equilibrium)
        output = mode.attach(problem)
        if self._output_map:  # the value of f(a*), the gradient of the mode
            output = output + ops.stop_gradient(problem.value() - equilibrium)
        output = _mark_rows(invalid, output, training)
        rate_means = ops.stack([ops.mean(ops.stop_gradient(rate)) for rate in rates])
        self._record_nonfinite(ops.sum(ops.cast(invalid, "float32")), training)
        if training:
            z, updates = problem.statistics()
            for _ in range(self._input_statistics_updates(training) - 1):  # the input stages' state, once more
                for k, value in zip(self._input_stages, self._input_values(problem.operands[0])):
                    if updates[k]:
                        updates[k] = stage_current(self._stages[k], self._takes_training[k],
                                                   (frozen[k][0], updates[k]), value, training=True)[1]
            for stage, stage_updates in zip(self._stages, updates):
                for variable, value in zip(stage.non_trainable_variables, stage_updates):
                    variable.assign(ops.stop_gradient(value))
            residual = ops.mean(sample_norm(ops.stop_gradient(z) - ops.stop_gradient(equilibrium)))
            self._forward_residual.assign(residual)
            self._epoch_sums.assign_add(ops.concatenate([rate_means, ops.stack([residual, 1.0])]))
        self._rates.assign(rate_means)
        return self._outputs(ops.cast(output, self.compute_dtype))

    def _record_nonfinite(self, count, training):
        """Record the call's number of non-finite samples; in training also the epoch's
        total and its first such batch (1-based; 0: none), and add the NaN loss term."""
        _, epoch_count, first = ops.unstack(self._nonfinite.value)
        if training:
            self.add_loss(ops.where(count > 0, float("nan"), 0.0))
            first = ops.where(ops.logical_and(first == 0, count > 0), self._epoch_sums[-1] + 1, first)
            epoch_count = epoch_count + count
        self._nonfinite.assign(ops.stack([count, epoch_count, first]))

    # ------------------------------------------------------------------ user API

    def simulate(self, inputs, record_residuals=True, count_spikes=False):
        """Run the spiking simulation alone (inference mode, no gradient).

        Returns a dict with "rates" (every spiking layer's (weighted) average rate at T)
        and, if `record_residuals`, "residuals": ||f(a[t]) - a[t]|| averaged over the
        batch for t = 1..T (paper 000 §5.4, Fig. 1; one row per stream for
        ImplicitStreams); with `count_spikes`, "counts": the number of spikes of every
        neuron over the T steps, per layer.
        """
        x = ops.cast(numeric_inputs(self, inputs), "float32")
        if not self.built:
            self.build(x.shape)
        return backend.compiled_call(self, ("simulate", record_residuals, count_spikes),
                                     lambda x: self._simulate_outputs(x, record_residuals, count_spikes), x)

    def _simulate_outputs(self, x, record_residuals, count_spikes):
        params = keras.tree.map_structure(ops.stop_gradient, self._parameters(False))
        out = {}
        if count_spikes:
            out["rates"], out["counts"], invalid = self._simulate(x, params, [], count_spikes=True)
        if record_residuals or not count_spikes:
            out["rates"], residuals, invalid = self._simulate(x, params, [], record_residuals)
            if record_residuals:
                out["residuals"] = residuals
        for key in ("rates", "counts"):  # a sample that met a non-finite current: NaN
            if key in out:
                out[key] = [_mark_rows(invalid, value, False) for value in out[key]]
        return self._simulation_outputs(out)

    def _simulation_outputs(self, out):
        return out

    def diagnostics(self):
        """The last call's mean firing rate per spiking layer (`rate_<label>`), forward
        residual ||f(a[T]) - a[T]|| (training calls) and backward pass (residual,
        iterations, failure; SPIDE: its firing rate) as Python numbers."""
        if not self.built:
            raise ValueError(f"Layer '{self.name}' has not been called yet: diagnostics() reports the last call.")
        rates = ops.convert_to_numpy(self._rates)
        out = {f"rate_{label}": float(r) for label, r in zip(self._rate_labels(), rates)}
        out["forward_residual"] = float(ops.convert_to_numpy(self._forward_residual))
        out.update(self._backward_report.values())
        out["nonfinite_samples"] = int(ops.convert_to_numpy(self._nonfinite)[0])
        return out

    def epoch_diagnostics(self):
        """The means of `diagnostics()` over the training calls since the last
        `reset_epoch_diagnostics()` (accumulated on the device, read once), with
        "training_batches" and, from the backward passes, "backward_failures" (how many
        failed), "nonfinite_samples" (how many samples had a non-finite input or current,
        see `call`) and "first_nonfinite_batch" (the first such training batch, 1-based; 0:
        none); None before any training call."""
        if not self.built:
            return None
        sums = ops.convert_to_numpy(self._epoch_sums)
        batches = float(sums[-1])
        if batches == 0:
            return None
        out = {f"rate_{label}": float(v) / batches for label, v in zip(self._rate_labels(), sums[:-2])}
        out["forward_residual"] = float(sums[-2]) / batches
        # a mode that reports no backward pass (one-step, BPTT) shows its last values, as before
        backward = self._backward_report.epoch() or {
            **{k: v for k, v in self._backward_report.values().items() if k != "backward_failed"},
            "backward_failures": 0}
        out.update(backward)
        out["training_batches"] = int(batches)
        nonfinite = ops.convert_to_numpy(self._nonfinite)
        out.update(nonfinite_samples=int(nonfinite[1]), first_nonfinite_batch=int(nonfinite[2]))
        return out

    def reset_epoch_diagnostics(self):
        if not self.built:
            return
        self._epoch_sums.assign(ops.zeros(self._epoch_sums.shape, "float32"))
        self._nonfinite.assign(ops.zeros((3,), "float32"))
        self._backward_report.reset()

    # ------------------------------------------------------------------ saving

    def _saved_variables(self):
        """The variables every weights file holds (the epoch accumulators, added later, are
        written after the RNG state, and files without them still load)."""
        return [v for v in self._trainable_variables + self._non_trainable_variables
                if not any(v is u for u in getattr(self, "_accumulators", []))]

    def save_own_variables(self, store):
        # The dropout RNG state is saved too, so a resumed run draws the masks an
        # uninterrupted run would have drawn (Keras does not save SeedGenerator states).
        saved = self._saved_variables()
        for i, variable in enumerate(saved):
            store[str(i)] = variable
        store[str(len(saved))] = ops.convert_to_numpy(self.seed_generator.state)
        for i, variable in enumerate(getattr(self, "_accumulators", []), start=len(saved) + 1):
            store[str(i)] = variable

    def load_own_variables(self, store):
        saved, extra = self._saved_variables(), getattr(self, "_accumulators", [])
        keys = set(store.keys())
        expected = {str(i) for i in range(len(saved))}
        optional = {str(i) for i in range(len(saved), len(saved) + 1 + len(extra))}
        if not expected <= keys or not keys <= expected | optional:
            raise ValueError(
                f"Layer '{self.name}' expected {len(saved)} variables (and its RNG state), but received "
                f"{len(keys)} variables during loading. Expected: {[v.name for v in saved]}")
        for i, variable in enumerate(saved):
            variable.assign(store[str(i)])
        if str(len(saved)) in keys:
            self.seed_generator.state.assign(store[str(len(saved))])
        for i, variable in enumerate(extra, start=len(saved) + 1):
            if str(i) in keys:
                variable.assign(store[str(i)])

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(time_steps=self.time_steps, dropout=list(self.dropout) if isinstance(self.dropout, tuple)
                      else self.dropout, input_type=self.input_type, simulation_dtype=self.simulation_dtype,
                      seed=self.seed, config_version=CONFIG_VERSION)
        config.update(_option_config("neuron", self.neuron, neurons.NEURONS, neurons.SHORT_FORMS))
        mode = self.backward
        short = mode.layer_arguments() if gradients.GRADIENTS.get(mode.name) is type(mode) else None
        if short is None:
            config["gradient"] = keras.saving.serialize_keras_object(mode)
        else:
            config.update(gradient=mode.name, **short)
        return config

    @classmethod
    def _legacy_config(cls, config):
        """A config written before CONFIG_VERSION, which stored every option, also those
        the chosen backward mode ignored: those are dropped (they had no effect)."""
        config = dict(config)
        if config.pop("config_version", None) is not None:
            return config
        mode = gradients.GRADIENTS.get(str(config.get("gradient", "ide")).lower())
        for key in gradients.SHORT_FORMS:
            if mode is not None and key not in mode.short_forms:
                config.pop(key, None)
        return config


def _poison(x):
    """Per sample: 0 where every value of `x` is finite, NaN where one is NaN or +-inf
    (x * 0 is NaN exactly there; the sum cannot overflow). No gradient."""
    x = ops.stop_gradient(x)
    return ops.sum(ops.reshape(x, (ops.shape(x)[0], -1)) * 0.0, axis=-1)


def _rows(flags, like):
    return ops.reshape(flags, (ops.shape(like)[0],) + (1,) * (len(like.shape) - 1))


def _zero_rows(flags, x):
    """`x` with the samples where `flags` (batch,) is True set to 0 (and no gradient)."""
    return ops.where(_rows(flags, x), 0.0, x)


def _mark_rows(flags, output, training):
    """The flagged samples' output: NaN in inference, 0 with no gradient in training."""
    return _zero_rows(flags, output) if training else ops.where(_rows(flags, output), float("nan"), output)


def _option_config(argument, option, registry, short_forms):
    """A neuron as the layer's config stores it: its name and short forms when it is a
    registered class whose options are exactly those, else its serialised config."""
    config = option.get_config()
    if registry.get(option.name) is type(option) and set(config) <= set(short_forms):
        return {argument: option.name, **config}
    return {argument: keras.saving.serialize_keras_object(option)}


def _dropout_rates(dropout, stages):
    """One rate for all stages (a float) or a tuple with one rate per stage."""
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != stages:
            raise ValueError(
                f"Argument `dropout` as a list needs one rate per stage ({stages}); received dropout={list(dropout)!r}.")
        return tuple(validation.number(f"dropout[{i}]", r, low=0.0, high=1.0, high_open=True) for i, r in enumerate(dropout))
    return validation.number("dropout", dropout, low=0.0, high=1.0, high_open=True)
