"""ImplicitStreams: multi-parallel implicit streams (MPIS, paper 003 §4).

N implicit streams (IS) run side by side at decreasing resolutions. Stream i has L
spiking layers: layer 1 receives its input stage's current and the feedback of its Trans
module; layers 2..L form its feature-extraction block (FEB: conv -> batch norm ->
variational dropout -> spiking neurons, paper Fig. 2). After layer l (`fusion_layer`)
the streams exchange their spikes (eq. 6): the input of stage l+1 of stream i is

    s_i^l + D_{i-1}(s_{i-1}^l) + U_i(s_{i+1}^l),

D the down-sampling module from the stream above, U the up-sampling module from the
stream below (for N = 2, the paper's models, this is eq. 6 exactly; for N > 2 only
neighbouring streams are fused directly). The input is injected into stream 1 only:
stream i > 1 gets its input stage applied to zeros at 1/2^(i-1) of the input's
resolution, i.e. a constant current (paper: "the initial inputs of all ISs are set to
zero"; the released code does the same).

All streams are simulated jointly for T steps (LIF or IF, membranes start at 0, the Trans
feedback delayed one step, as in FeedbackSpikingBlock), and the last-layer (weighted)
average rates of all streams a = (a_1, ..., a_N) converge to the joint fixed point of

    f(a) = the same network with every spiking neuron replaced by
           DBReLU(z) = clamp(z / V_th, 0, 1)                          (eq. 10).

Backward (§4.2, eq. 8): implicit differentiation of that joint map by the core's solvers
(`gradient="ide"`), or the cheaper one-step gradient (`gradient="one_step"`). The
output is the "equivalent pathway" of §4.2: f applied once to the simulated rates.

Switches reproducing the released code (seed-code.md §4, §10 item 7), documented as such:
`rates="first_step"` (the code returns the first step's spikes / sum lambda^i instead of
the average over T), `gradient="one_step"` (the code's effective backward).
"""

import math

import keras
from keras import ops

from keras_fsnn import backend, gradients, neurons, validation
from keras_fsnn.diagnostics import BackwardReport
from keras_fsnn.layers.stages import (
    SIMULATION_DTYPES,
    average_input,
    build_stage,
    call_takes_training,
    check_stage,
    diagnostic_variable,
    sample_norm,
    stage_current,
    stage_parameters,
)

RATES = {"average": "average", "first_step": "first_step"}
INPUT_TYPES = {"static": "static", "sequence": "sequence"}
OUTPUTS = {"map": "map", "rates": "rates"}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class ImplicitStreams(keras.layers.Layer):
    """N parallel, mutually fused implicit spiking streams whose output is the last
    stream's equilibrium firing rate (or every stream's, `return_all=True`).

    Example (two streams, 16 -> 32 channels, fused after layer 1, as paper 003 Table 1):

        def conv(c, s=1):
            return keras.Sequential([keras.layers.Conv2D(c, 3, s, padding="same"),
                                     keras.layers.BatchNormalization()])
        streams = keras_fsnn.ImplicitStreams(
            inject=[conv(16), conv(16)],
            stages=[[conv(32)], [conv(32)]],
            transforms=[keras.layers.Conv2D(16, 3, padding="same", use_bias=False)] * 2 ...,
            downsample=[keras.layers.Conv2D(16, 3, strides=2, padding="same")],
            upsample=[keras.layers.UpSampling2D(2)],
            fusion_layer=1, time_steps=30, neuron="lif", leak=0.95)

    Args:
        inject: N input stages, one per stream: stage i maps the input (stream 1) or
            zeros at 1/2^(i-1) resolution (stream i > 1) to layer 1's current.
        stages: N lists of L - 1 stages, the FEB layers 2..L of each stream (the same L
            for every stream).
        transforms: N Trans modules: stream i's last-layer spikes -> a current of its
            layer 1's shape.
        downsample: N - 1 modules, D_i: layer-l spikes of stream i -> stream i+1's shape.
        upsample: N - 1 modules, U_i: layer-l spikes of stream i+1 -> stream i's shape.
        fusion_layer: l in 1..L-1, the layer after which the streams are fused.
        time_steps, neuron, leak, threshold, dropout, solver, solver_steps, solver_tol,
            seed: as in FeedbackSpikingBlock (dropout is variational: one mask per call,
            on every stage's current).
        gradient: "ide" (implicit differentiation of the joint map, paper) or "one_step".
        rates: "average" (paper: (weighted) average over T) or "first_step" (released code).
        output: "map" (f applied once to the simulated rates, paper §4.2) or "rates" (the
            simulated rates themselves).
        return_all: return the list of every stream's rates instead of the last one's.
        input_type: "static" (an image batch (batch, H, W, C), the same current every
            step) or "sequence" ((batch, T, H, W, C) spike frames, frame t driving step t
            of stream 1; f sees their (lambda-weighted) average, as in FeedbackSpikingBlock).
        simulation_dtype: "float32" or "bfloat16", the precision of the per-step currents
            of the spike simulation, as in FeedbackSpikingBlock (f and the adjoint stay
            float32).

    Batch norm follows FeedbackSpikingBlock's paper mode: stored statistics inside the
    simulation, the call's mode in f (batch statistics in training, moving statistics
    updated).
    """

    def __init__(self, inject, stages, transforms, downsample=(), upsample=(), fusion_layer=1, time_steps=30,
                 neuron="lif", leak=None, threshold=2.0, dropout=0.0, solver="broyden", solver_steps=30,
                 solver_tol=1e-5, gradient="ide", rates="average", output="map", return_all=False, seed=None,
                 input_type="static", simulation_dtype="float32", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        inject, stages, transforms = list(inject), [list(s) for s in stages], list(transforms)
        downsample, upsample = list(downsample), list(upsample)
        n = len(inject)
        if n < 1 or len(stages) != n or len(transforms) != n:
            raise ValueError(
                "Arguments `inject`, `stages` and `transforms` must each hold one entry per stream (N >= 1); "
                f"received {len(inject)} inject, {len(stages)} stages, {len(transforms)} transforms.")
        if len(downsample) != n - 1 or len(upsample) != n - 1:
            raise ValueError(
                f"Arguments `downsample` and `upsample` must hold N - 1 = {n - 1} modules each; received "
                f"{len(downsample)} and {len(upsample)}.")
        depths = {len(s) for s in stages}
        if len(depths) != 1:
            raise ValueError(f"Argument `stages` must give every stream the same number of layers; received "
                             f"{[len(s) for s in stages]} stages per stream.")
        self.depth = depths.pop() + 1  # L, counting layer 1
        self.fusion_layer = validation.integer("fusion_layer", fusion_layer, minimum=1)
        if n > 1 and self.fusion_layer > self.depth - 1:
            raise ValueError(
                f"Argument `fusion_layer` must lie in 1..L-1 = 1..{self.depth - 1} (the fused spikes feed the next "
                f"layer's stage); received fusion_layer={fusion_layer!r} with L = {self.depth}.")
        for name, group in (("inject", inject), ("transforms", transforms), ("downsample", downsample),
                            ("upsample", upsample)):
            for i, layer in enumerate(group):
                check_stage(f"{name}[{i}]", layer)
        for i, stream in enumerate(stages):
            for j, layer in enumerate(stream):
                check_stage(f"stages[{i}][{j}]", layer)

        self.inject, self.stages, self.transforms = inject, stages, transforms
        self.downsample, self.upsample = downsample, upsample
        self.num_streams = n
        self.time_steps = validation.integer("time_steps", time_steps, minimum=1)
        self.neuron = neurons.get_neuron(neuron, leak, threshold, 0.0)
        self.dropout = validation.number("dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.backward = gradients.get_gradient(gradient, solver=solver, solver_steps=solver_steps,
                                               solver_tol=solver_tol)
        if self.backward.name not in ("ide", "one_step"):
            raise ValueError("Argument `gradient` must be 'ide' or 'one_step' for ImplicitStreams; received "
                             f"gradient={gradient!r}.")
        self.rates = validation.choose("rates", rates, RATES)
        self.output_mode = validation.choose("output", output, OUTPUTS)
        self.return_all = validation.boolean("return_all", return_all)
        self.input_type = validation.choose("input_type", input_type, INPUT_TYPES)
        self.simulation_dtype = validation.choose("simulation_dtype", simulation_dtype, SIMULATION_DTYPES)
        self.seed = seed
        self._config = dict(fusion_layer=self.fusion_layer, time_steps=self.time_steps, neuron=self.neuron.name,
                            leak=self.neuron.leak, threshold=self.neuron.threshold, dropout=self.dropout,
                            solver=solver, solver_steps=solver_steps, solver_tol=solver_tol, gradient=gradient,
                            rates=self.rates, output=self.output_mode, return_all=self.return_all, seed=seed,
                            input_type=self.input_type, simulation_dtype=self.simulation_dtype)
        # One flat list of stages; `_index` finds a stage's parameters and dropout mask.
        self._all = (inject + transforms + [layer for stream in stages for layer in stream]
                     + downsample + upsample)
        self._takes_training = [call_takes_training(layer) for layer in self._all]
        self._index = {id(layer): k for k, layer in enumerate(self._all)}
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ------------------------------------------------------------------ build

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_type == "sequence":
            if len(input_shape) != 5:
                raise ValueError("With input_type='sequence' ImplicitStreams takes frames (batch, T, H, W, C); "
                                 f"received input shape {input_shape}.")
            if input_shape[1] is not None and input_shape[1] != self.time_steps:
                raise ValueError(f"The input sequence has {input_shape[1]} frames but time_steps={self.time_steps}; "
                                 "they must be equal (crop or pad the frames).")
            input_shape = (input_shape[0],) + input_shape[2:]
        elif len(input_shape) != 4:
            raise ValueError(f"ImplicitStreams takes images (batch, H, W, C); received input shape {input_shape}.")
        self._zero_shapes, self._layer_shapes = [], []
        height, width = input_shape[1], input_shape[2]
        for i in range(self.num_streams):
            shape = input_shape if i == 0 else (input_shape[0], -(-height // 2**i), -(-width // 2**i), input_shape[3])
            self._zero_shapes.append(shape)
            shapes = [build_stage(self.inject[i], shape, f"inject[{i}]")]
            for j, stage in enumerate(self.stages[i]):
                shapes.append(build_stage(stage, shapes[-1], f"stages[{i}][{j}]"))
            back = build_stage(self.transforms[i], shapes[-1], f"transforms[{i}]")
            if tuple(back[1:]) != tuple(shapes[0][1:]):
                raise ValueError(f"Argument `transforms[{i}]` maps stream {i + 1}'s last layer {tuple(shapes[-1][1:])} "
                                 f"to {tuple(back[1:])}, but its layer 1 has shape {tuple(shapes[0][1:])}.")
            self._layer_shapes.append(shapes)
        l = self.fusion_layer - 1
        for i in range(self.num_streams - 1):
            above, below = self._layer_shapes[i][l], self._layer_shapes[i + 1][l]
            for name, module, source, target in (("downsample", self.downsample[i], above, below),
                                                 ("upsample", self.upsample[i], below, above)):
                out = build_stage(module, source, f"{name}[{i}]")
                if tuple(out[1:]) != tuple(target[1:]):
                    raise ValueError(f"Argument `{name}[{i}]` maps {tuple(source[1:])} to {tuple(out[1:])}; the "
                                     f"stream it feeds has shape {tuple(target[1:])} at layer {self.fusion_layer}.")
        self._sizes = [math.prod(shapes[-1][1:]) for shapes in self._layer_shapes]
        self._rates_variable = diagnostic_variable(self, "firing_rates", (sum(len(s) for s in self._layer_shapes),))
        self._forward_residual = diagnostic_variable(self, "forward_residual")
        self._backward_report = BackwardReport(
            *[diagnostic_variable(self, name) for name in ("backward_residual", "backward_iterations", "backward_failed")])

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        shapes = [(input_shape[0],) + tuple(s[-1][1:]) for s in self._layer_shapes]
        return shapes if self.return_all else shapes[-1]

    # ------------------------------------------------------------------ pieces

    def _current(self, layer, params, inputs, masks, training=False, compute_dtype="float32"):
        k = self._index[id(layer)]
        return stage_current(layer, self._takes_training[k], params[k], inputs, masks[k] if masks else None, training,
                             compute_dtype)

    def _dropout_masks(self, batch, training):
        if not training or self.dropout == 0.0:
            return []
        keep = 1.0 - self.dropout
        masks = []
        for layer in self._all:
            shape = self._output_shape_of(layer)
            noise = keras.random.uniform((batch,) + tuple(shape[1:]), seed=self.seed_generator)
            masks.append(ops.cast(ops.less(noise, keep), "float32") / keep)
        return masks

    def _output_shape_of(self, layer):
        l = self.fusion_layer - 1
        for i in range(self.num_streams):
            if layer is self.inject[i] or layer is self.transforms[i]:
                return self._layer_shapes[i][0]
            for j, stage in enumerate(self.stages[i]):
                if layer is stage:
                    return self._layer_shapes[i][j + 1]
        for i in range(self.num_streams - 1):
            if layer is self.downsample[i]:
                return self._layer_shapes[i + 1][l]
            if layer is self.upsample[i]:
                return self._layer_shapes[i][l]
        raise KeyError(layer.name)

    def _average_input(self, x):
        return average_input(x, self.input_type, self.neuron, self.time_steps)

    def _inputs(self, x):
        """What each stream's input stage sees: x for stream 1, zeros for the others."""
        batch = ops.shape(x)[0]
        return [x] + [ops.zeros((batch,) + tuple(shape[1:]), "float32") for shape in self._zero_shapes[1:]]

    def _network(self, first_currents, last, activate, params, masks, training=False, compute_dtype="float32"):
        """One pass through every stream from the last-layer activity `last` (a list per
        stream): layer 1 gets `first_currents[i]` + Trans_i(last_i); `activate(i, j,
        current)` turns layer j's current into its activity (spikes or rates). Returns the
        activity of every layer of every stream and the stages' state updates."""
        activity = [[None] * self.depth for _ in range(self.num_streams)]
        updates = {}

        def run(layer, inputs):
            current, stage_updates = self._current(layer, params, inputs, masks, training, compute_dtype)
            updates[id(layer)] = stage_updates
            return current

        def feed(i, j, inputs):
            activity[i][j] = activate(i, j, run(self.stages[i][j - 1], inputs))

        for i in range(self.num_streams):
            activity[i][0] = activate(i, 0, first_currents[i] + run(self.transforms[i], last[i]))
            for j in range(1, self.fusion_layer):
                feed(i, j, activity[i][j - 1])
        l = self.fusion_layer - 1
        fused = [activity[i][l] for i in range(self.num_streams)]
        for i in range(self.num_streams - 1):
            fused[i + 1] = fused[i + 1] + run(self.downsample[i], activity[i][l])
            fused[i] = fused[i] + run(self.upsample[i], activity[i + 1][l])
        for i in range(self.num_streams):
            for j in range(self.fusion_layer, self.depth):
                feed(i, j, fused[i] if j == self.fusion_layer else activity[i][j - 1])
        return activity, updates

    def _split(self, flat):
        """(batch, sum D_i) -> per-stream last-layer tensors."""
        parts, start = [], 0
        for i, size in enumerate(self._sizes):
            shape = (-1,) + tuple(self._layer_shapes[i][-1][1:])
            parts.append(ops.reshape(flat[:, start:start + size], shape))
            start += size
        return parts

    @staticmethod
    def _join(parts):
        return ops.concatenate([ops.reshape(p, (ops.shape(p)[0], -1)) for p in parts], axis=-1)

    def fixed_point_map(self, a, x, params, masks, training=False):
        """f(a) for the joint last-layer rates `a` (batch, sum D_i) given the (average) input
        `x`, and the stage updates."""
        firsts = [self._current(self.inject[i], params, inp, masks, training)
                  for i, inp in enumerate(self._inputs(x))]
        activity, updates = self._network([c for c, _ in firsts], self._split(a),
                                          lambda i, j, z: self.neuron.rate_map(z), params, masks, training)
        for i, (_, stage_updates) in enumerate(firsts):
            updates[id(self.inject[i])] = stage_updates
        return self._join([stream[-1] for stream in activity]), updates

    def _simulate(self, x, params, masks, record_residuals=False, count_spikes=False):
        """T joint steps; per-layer rates of every stream (list of lists) and, if asked,
        each stream's residual ||f(a[t])_i - a_i[t]|| (mean over the batch), t = 1..T,
        or (`count_spikes`) the plain spike counts of every layer instead."""
        neuron = self.neuron
        batch = ops.shape(x)[0]
        sequence = self.input_type == "sequence"
        x_bar = self._average_input(x)
        firsts = [self._current(self.inject[i], params, inp, masks)[0] for i, inp in enumerate(self._inputs(x_bar))]
        zeros = [[ops.zeros((batch,) + tuple(s[1:]), "float32") for s in shapes] for shapes in self._layer_shapes]
        first_step = self.rates == "first_step"

        def body(t, state):
            potentials, counts, last, residuals, plain = state
            new_potentials = [list(p) for p in potentials]

            def activate(i, j, current):
                new_potentials[i][j], spikes = neuron.step(potentials[i][j], current)
                return spikes

            currents = firsts
            if sequence:  # frame t drives stream 1; the other streams' inputs are constant
                currents = [self._current(self.inject[0], params, ops.take(x, t, axis=1), masks,
                                          compute_dtype=self.simulation_dtype)[0]] + firsts[1:]
            spikes, _ = self._network(currents, last, activate, params, masks, compute_dtype=self.simulation_dtype)
            if first_step:  # the released code keeps the first step's spikes only
                keep = ops.cast(ops.equal(t, 0), "float32")
                new_counts = [[c + keep * s for c, s in zip(cs, ss)] for cs, ss in zip(counts, spikes)]
            else:
                new_counts = [[neuron.accumulate(c, s) for c, s in zip(cs, ss)] for cs, ss in zip(counts, spikes)]
            if record_residuals:
                scale = neuron.normaliser(self.time_steps if first_step else t + 1)
                rate = self._join([c[-1] / scale for c in new_counts])
                mapped, _ = self.fixed_point_map(rate, x_bar, params, masks)
                difference = self._split(mapped - rate)
                step = ops.stack([ops.mean(sample_norm(d)) for d in difference])
                residuals = residuals + ops.expand_dims(step, 1) * ops.one_hot(t, self.time_steps)[None, :]
            if count_spikes:
                plain = [[c + s for c, s in zip(cs, ss)] for cs, ss in zip(plain, spikes)]
            return new_potentials, new_counts, [s[-1] for s in spikes], residuals, plain

        state = (zeros, zeros, [z[-1] for z in zeros], ops.zeros((self.num_streams, self.time_steps), "float32"),
                 zeros if count_spikes else [])
        _, counts, _, residuals, plain = backend.time_loop(self.time_steps, body, state)
        scale = neuron.normaliser(self.time_steps)
        return [[c / scale for c in stream] for stream in counts], (plain if count_spikes else residuals)

    # ------------------------------------------------------------------ call

    def call(self, inputs, training=False):
        training = bool(training)
        x = ops.cast(inputs, "float32")
        params = [stage_parameters(layer) for layer in self._all]
        masks = self._dropout_masks(ops.shape(x)[0], training)
        frozen = keras.tree.map_structure(ops.stop_gradient, params)
        rates, _ = self._simulate(ops.stop_gradient(x), frozen, masks)
        equilibrium = ops.stop_gradient(self._join([stream[-1] for stream in rates]))
        x_bar = self._average_input(x)
        z, updates = self.fixed_point_map(equilibrium, x_bar, params, masks, training)

        def adjoint_map(a, operands):
            x_, params_, masks_ = operands
            return self.fixed_point_map(a, x_, params_, masks_, training)[0]

        operands = (ops.stop_gradient(x_bar), frozen, masks)
        output = self.backward.attach(adjoint_map, z, equilibrium, operands, report=self._backward_report)
        if self.output_mode == "map":  # the value of f(a[T]), the gradient of the chosen mode
            output = output + ops.stop_gradient(z - equilibrium)

        if training:
            for layer in self._all:
                for variable, value in zip(layer.non_trainable_variables, updates.get(id(layer), [])):
                    variable.assign(ops.stop_gradient(value))
            self._forward_residual.assign(ops.mean(sample_norm(ops.stop_gradient(z) - equilibrium)))
        self._rates_variable.assign(ops.stack([ops.mean(r) for stream in rates for r in stream]))
        parts = self._split(output)
        return parts if self.return_all else parts[-1]

    # ------------------------------------------------------------------ user API

    def simulate(self, inputs, record_residuals=True, count_spikes=False):
        """The joint simulation alone (inference mode): {"rates": per stream, per layer,
        "residuals": (N, T), stream i's ||f(a[t])_i - a_i[t]|| averaged over the batch};
        with `count_spikes`, "counts": every layer's spike counts over T steps, stream after
        stream (one flat list)."""
        x = ops.cast(inputs, "float32")
        if not self.built:
            self.build(x.shape)
        return backend.compiled_call(self, ("simulate", record_residuals, count_spikes),
                                     lambda x: self._simulate_outputs(x, record_residuals, count_spikes), x)

    def _simulate_outputs(self, x, record_residuals, count_spikes):
        params = keras.tree.map_structure(ops.stop_gradient, [stage_parameters(layer) for layer in self._all])
        out = {}
        if count_spikes:
            out["rates"], counts = self._simulate(x, params, [], count_spikes=True)
            out["counts"] = [c for stream in counts for c in stream]
        if record_residuals or not count_spikes:
            out["rates"], residuals = self._simulate(x, params, [], record_residuals)
            if record_residuals:
                out["residuals"] = residuals
        return out

    def diagnostics(self):
        """Last call's mean rate of every layer (`rate_s{stream}_{layer}`), forward
        residual and backward solve, as Python numbers."""
        values = ops.convert_to_numpy(self._rates_variable)
        keys = [f"rate_s{i + 1}_{j + 1}" for i, shapes in enumerate(self._layer_shapes) for j in range(len(shapes))]
        out = {k: float(v) for k, v in zip(keys, values)}
        out["forward_residual"] = float(ops.convert_to_numpy(self._forward_residual))
        out.update(self._backward_report.values())
        return out

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        serialize = keras.saving.serialize_keras_object
        config.update(
            inject=[serialize(s) for s in self.inject],
            stages=[[serialize(s) for s in stream] for stream in self.stages],
            transforms=[serialize(s) for s in self.transforms],
            downsample=[serialize(s) for s in self.downsample],
            upsample=[serialize(s) for s in self.upsample],
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("inject", "transforms", "downsample", "upsample"):
            config[key] = [deserialize(s) for s in config[key]]
        config["stages"] = [[deserialize(s) for s in stream] for stream in config["stages"]]
        return cls(**config)
