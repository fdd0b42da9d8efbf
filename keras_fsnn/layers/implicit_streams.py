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
(`gradient="ide"`), or the cheaper one-step gradient (`gradient="one_step"`); the
skeleton (`layers/equilibrium.py`) runs the simulation and f from the one wiring below.
The output is the "equivalent pathway" of §4.2: f applied once to the simulated rates.

Switches reproducing the released code (seed-code.md §4, §10 item 7), documented as such:
`rates="first_step"` (the code returns the first step's spikes / sum lambda^i instead of
the average over T), `gradient="one_step"` (the code's effective backward).
"""

import math

import keras
from keras import ops

from keras_fsnn import validation
from keras_fsnn.layers.equilibrium import EquilibriumLayer
from keras_fsnn.layers.stages import build_stage

RATES = {"average": "average", "first_step": "first_step"}
OUTPUTS = {"map": "map", "rates": "rates"}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class ImplicitStreams(EquilibriumLayer):
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
        rates: "average" (paper: (weighted) average over T) or "first_step" (released code).
        output: "map" (f applied once to the simulated rates, paper §4.2) or "rates" (the
            simulated rates themselves).
        return_all: return the list of every stream's rates instead of the last one's.
        time_steps, neuron (default "lif", with `leak`, `threshold`, `resting_potential`),
            dropout (variational: one mask per call, on every stage's current; a list:
            one rate per stage), gradient ("ide" with `solver`, `solver_steps`,
            `solver_tol`, the paper's; "one_step", the released code's; or a
            `BackwardMode` that does not differentiate through the simulation), input_type ("static": images (batch, H, W, C); "sequence":
            (batch, T, H, W, C) spike frames, frame t driving step t of stream 1, f seeing
            their (lambda-weighted) average), simulation_dtype, seed: as in
            FeedbackSpikingBlock.

    Batch norm follows FeedbackSpikingBlock's paper mode: stored statistics inside the
    simulation, the call's mode in f (batch statistics in training, moving statistics
    updated).
    """

    _per_group_residuals = True

    def __init__(self, inject, stages, transforms, downsample=(), upsample=(), fusion_layer=1, rates="average",
                 output="map", return_all=False, time_steps=30, neuron="lif", **kwargs):
        super().__init__(time_steps=time_steps, neuron=neuron, **kwargs)
        if self.backward.through_time:
            raise ValueError(
                f"gradient={self.backward.name!r} differentiates through the simulation, which ImplicitStreams does not "
                "offer: paper 003 trains MPIS implicitly; and under XLA TensorFlow cannot differentiate its "
                "up-sampling inside the time loop. Use gradient='ide' (the paper's) or 'one_step' (the released code's).")
        inject, transforms = _layer_list("inject", inject), _layer_list("transforms", transforms)
        downsample, upsample = _layer_list("downsample", downsample), _layer_list("upsample", upsample)
        stages = [_layer_list(f"stages[{i}]", s) for i, s in enumerate(_layer_list("stages", stages, nested=True))]
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
        self.inject, self.stages, self.transforms = inject, stages, transforms
        self.downsample, self.upsample = downsample, upsample
        self.num_streams = n
        self.rates = validation.choose("rates", rates, RATES)
        self.output_mode = validation.choose("output", output, OUTPUTS)
        self.return_all = validation.boolean("return_all", return_all)
        self._first_step_rates = self.rates == "first_step"
        self._output_map = self.output_mode == "map"
        # One flat list of stages; a stage's position indexes its parameters, dropout mask
        # and state updates (a stage object used twice has two positions).
        groups = [("inject", inject), ("transforms", transforms)] + [
            (f"stages[{i}]", stream) for i, stream in enumerate(stages)] + [("downsample", downsample),
                                                                             ("upsample", upsample)]
        positions, labels, flat = {}, [], []
        for group, layers in groups:
            positions[group] = list(range(len(flat), len(flat) + len(layers)))
            labels += [f"{group}[{j}]" for j in range(len(layers))]
            flat += layers
        self._positions = positions
        self._set_stages(flat, labels)
        self._input_stages = tuple(positions["inject"])
        self._last = [i * self.depth + self.depth - 1 for i in range(n)]

    # ------------------------------------------------------------------ the topology

    def _build_stages(self, frame_shape):
        if len(frame_shape) != 4:
            expected = "(batch, T, H, W, C) frames" if self.input_type == "sequence" else "images (batch, H, W, C)"
            raise ValueError(f"ImplicitStreams takes {expected}; received a per-step input of shape {frame_shape}.")
        zero_shapes, layer_shapes = [], []
        stage_shapes = [None] * len(self._stages)
        height, width = frame_shape[1], frame_shape[2]
        p = self._positions
        for i in range(self.num_streams):
            shape = frame_shape if i == 0 else (frame_shape[0], -(-height // 2**i), -(-width // 2**i), frame_shape[3])
            zero_shapes.append(shape)
            shapes = [build_stage(self.inject[i], shape, f"inject[{i}]")]
            stage_shapes[p["inject"][i]] = shapes[0]
            for j, stage in enumerate(self.stages[i]):
                shapes.append(build_stage(stage, shapes[-1], f"stages[{i}][{j}]"))
                stage_shapes[p[f"stages[{i}]"][j]] = shapes[-1]
            back = build_stage(self.transforms[i], shapes[-1], f"transforms[{i}]")
            if tuple(back[1:]) != tuple(shapes[0][1:]):
                raise ValueError(f"Argument `transforms[{i}]` maps stream {i + 1}'s last layer {tuple(shapes[-1][1:])} "
                                 f"to {tuple(back[1:])}, but its layer 1 has shape {tuple(shapes[0][1:])}.")
            stage_shapes[p["transforms"][i]] = back
            layer_shapes.append(shapes)
        l = self.fusion_layer - 1
        for i in range(self.num_streams - 1):
            above, below = layer_shapes[i][l], layer_shapes[i + 1][l]
            for name, module, source, target in (("downsample", self.downsample[i], above, below),
                                                 ("upsample", self.upsample[i], below, above)):
                out = build_stage(module, source, f"{name}[{i}]")
                if tuple(out[1:]) != tuple(target[1:]):
                    raise ValueError(f"Argument `{name}[{i}]` maps {tuple(source[1:])} to {tuple(out[1:])}; the "
                                     f"stream it feeds has shape {tuple(target[1:])} at layer {self.fusion_layer}.")
                stage_shapes[p[name][i]] = out
        self._zero_shapes = zero_shapes
        self._stage_shapes = stage_shapes
        self._stream_shapes = layer_shapes
        self._layer_shapes = [tuple(shape[1:]) for shapes in layer_shapes for shape in shapes]
        self._sizes = [math.prod(shapes[-1][1:]) for shapes in layer_shapes]

    def _input_values(self, x):
        """x for stream 1, zeros at 1/2^(i-1) resolution for stream i > 1."""
        batch = ops.shape(x)[0]
        return [x] + [ops.zeros((batch,) + tuple(shape[1:]), "float32") for shape in self._zero_shapes[1:]]

    def _network(self, first, last, activate, run):
        """One pass through every stream (global layer index i * L + j): layer 1 gets its
        input current + Trans_i(last_i); after layer `fusion_layer` the streams exchange
        their activity (eq. 6); the other layers get their stage's current."""
        L, p = self.depth, self._positions
        activity = [None] * (self.num_streams * L)

        def feed(i, j, inputs):
            activity[i * L + j] = activate(i * L + j, run(p[f"stages[{i}]"][j - 1], inputs))

        for i in range(self.num_streams):
            activity[i * L] = activate(i * L, first[i] + run(p["transforms"][i], last[i]))
            for j in range(1, self.fusion_layer):
                feed(i, j, activity[i * L + j - 1])
        l = self.fusion_layer - 1
        fused = [activity[i * L + l] for i in range(self.num_streams)]
        for i in range(self.num_streams - 1):
            fused[i + 1] = fused[i + 1] + run(p["downsample"][i], activity[i * L + l])
            fused[i] = fused[i] + run(p["upsample"][i], activity[(i + 1) * L + l])
        for i in range(self.num_streams):
            for j in range(self.fusion_layer, L):
                feed(i, j, fused[i] if j == self.fusion_layer else activity[i * L + j - 1])
        return activity

    def _split(self, flat):
        """(batch, sum D_i) -> per-stream last-layer tensors."""
        parts, start = [], 0
        for i, size in enumerate(self._sizes):
            shape = (-1,) + tuple(self._stream_shapes[i][-1][1:])
            parts.append(ops.reshape(flat[:, start:start + size], shape))
            start += size
        return parts

    def _join(self, parts):
        return ops.concatenate([ops.reshape(p, (ops.shape(p)[0], -1)) for p in parts], axis=-1)

    def _rate_labels(self):
        return [f"s{i + 1}_{j + 1}" for i in range(self.num_streams) for j in range(self.depth)]

    def _outputs(self, output):
        parts = self._split(output)
        return parts if self.return_all else parts[-1]

    def _simulation_outputs(self, out):
        rates = out["rates"]  # per stream, per layer
        out["rates"] = [rates[i * self.depth:(i + 1) * self.depth] for i in range(self.num_streams)]
        return out

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        shapes = [(input_shape[0],) + tuple(s[-1][1:]) for s in self._stream_shapes]
        return shapes if self.return_all else shapes[-1]

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(fusion_layer=self.fusion_layer, rates=self.rates, output=self.output_mode,
                      return_all=self.return_all)
        # a stage object used in several places is serialised once; its other places
        # refer to the first by its position in the flat stage list
        first = {}
        serialised = []
        for k, stage in enumerate(self._stages):
            serialised.append({"same_as": first[id(stage)]} if id(stage) in first
                              else keras.saving.serialize_keras_object(stage))
            first.setdefault(id(stage), k)
        p = self._positions
        config.update({key: [serialised[k] for k in p[key]] for key in ("inject", "transforms", "downsample",
                                                                        "upsample")})
        config["stages"] = [[serialised[k] for k in p[f"stages[{i}]"]] for i in range(self.num_streams)]
        return config

    @classmethod
    def from_config(cls, config):
        config = cls._legacy_config(config)
        flat = []  # in the order of the flat stage list, so that `same_as` finds its stage

        def deserialise(entry):
            stage = flat[entry["same_as"]] if "same_as" in entry else keras.saving.deserialize_keras_object(entry)
            flat.append(stage)
            return stage

        config["inject"] = [deserialise(s) for s in config["inject"]]
        config["transforms"] = [deserialise(s) for s in config["transforms"]]
        config["stages"] = [[deserialise(s) for s in stream] for stream in config["stages"]]
        for key in ("downsample", "upsample"):
            config[key] = [deserialise(s) for s in config[key]]
        return cls(**config)


def _layer_list(argument, value, nested=False):
    """A list or tuple (of stages; `nested`: of lists of stages), else a TypeError naming it."""
    if not isinstance(value, (list, tuple)):
        what = "a list with one list of stages per stream" if nested else "a list of Keras layers"
        raise TypeError(f"Argument `{argument}` must be {what}; received {argument}={value!r}.")
    return list(value)
