"""`to_nir`: a trained FeedbackSpikingBlock model as a NIR graph (docs/nir.md).

The model is a chain: input -> layers before the block (Normalization, Flatten, ...) ->
the block -> layers after it (Flatten, the Dense readout). Every linear layer becomes its
NIR node in channels-first layout, batch norm (inference mode: stored statistics) folded
into the map before it; the neurons, the feedback cycle and the averaging readout follow
`keras_fsnn.nir.semantics`. What NIR cannot express exactly is a ValueError naming the
layer, never a different graph.
"""

import keras
import nir
import numpy as np

from keras_fsnn import neurons
from keras_fsnn.layers import FeedbackSpikingBlock, TernaryCouple
from keras_fsnn.layers.equilibrium import EquilibriumLayer
from keras_fsnn.nir import semantics

MAPPED = ("Dense, Conv2D (symmetric padding), ZeroPadding2D (symmetric), BatchNormalization (folded into the map "
          "before it), Normalization (per channel), Flatten and Dropout (none at inference)")


def to_nir(model_or_block, dt=semantics.DT):
    """The NIR graph of a trained model around one `FeedbackSpikingBlock` (or of the block
    alone, whose output is then its average rate).

    Args:
        model_or_block: a keras.Model that is a chain of layers with one
            FeedbackSpikingBlock (the zoo's `fsnn_fmnist`, `fsnn_mnist`, ...), or a built
            FeedbackSpikingBlock.
        dt: the time one simulation step stands for (the integrators' tau and r are
            scaled by it; the discrete semantics do not change).

    Returns:
        a `nir.NIRGraph`; `nir.write(path, graph)` saves it.

    Raises:
        ValueError: naming the layer, for what NIR cannot express exactly: a
            Conv2DTranspose feedback, SPIDE's TernaryCouple, input_type="sequence", a
            bfloat16 simulation, a registered neuron other than IF / LIF, asymmetric
            padding, a layer with no NIR counterpart.
    """
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"Argument `dt` must be a finite number > 0 (the time of one step); received dt={dt!r}.")
    before, block, after, input_shape = _parts(model_or_block)
    if before and isinstance(before[0], keras.layers.Permute) and tuple(before[0].dims) == (2, 3, 1):
        before, input_shape = before[1:], semantics.chw_to_hwc(input_shape)  # a channels-first input (from_nir's)
    _check_block(block)
    graph = _GraphBuilder()
    graph.add("input", nir.Input(input_type={"input": np.array(semantics.hwc_to_chw(input_shape))}))
    source, shape, order = graph.chain(before, input_shape, "input", "input", None)
    neuron = block.neuron
    n = len(block.forward)
    shapes = block._layer_shapes
    for l in range(n):
        source_l = source if l == 0 else f"layer{l}.spike"
        stage_input = (shape, order) if l == 0 else (shapes[l - 1], None)
        end, out_shape, _ = graph.chain(_layers_of(block.forward[l]), stage_input[0], f"forward{l + 1}", source_l,
                                        stage_input[1])
        _check_shape(out_shape, shapes[l], f"forward[{l}]")
        graph.neuron(f"layer{l + 1}", neuron, shapes[l], dt)
        graph.edge(end, f"layer{l + 1}.membrane")
    if block.feedback is not None:
        params = block._parameters(False)[block._feedback_index]  # the kernel as restricted (spectral norm)
        values = {id(v): keras.ops.convert_to_numpy(p) for v, p in zip(block.feedback.trainable_variables, params[0])}
        end, out_shape, _ = graph.chain(_layers_of(block.feedback), shapes[-1], "feedback", f"layer{n}.spike", None,
                                        values)
        _check_shape(out_shape, shapes[0], "feedback")
        graph.edge(end, "layer1.membrane")
    end, out_shape, _ = graph.chain(after, shapes[-1], "readout", f"layer{n}.spike", None)
    graph.readout(end, out_shape, neuron.leak, block.time_steps, dt)
    metadata = {
        "producer": semantics.PRODUCER, "semantics": semantics.SEMANTICS, "dt": dt, "time_steps": block.time_steps,
        "neuron": neuron.name, "leak": neuron.leak, "threshold": neuron.threshold,
        "resting_potential": neuron.resting_potential, "layers": n, "model": getattr(model_or_block, "name", ""),
    }
    return nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata=metadata)


def _parts(model_or_block):
    """(layers before the block, the block, layers after it, the block's input shape)."""
    if isinstance(model_or_block, EquilibriumLayer):
        block = model_or_block
        if not block.built:
            raise ValueError(f"The block {block.name!r} is not built: call it on data (or build it) before to_nir.")
        return [], _only_block(block), [], tuple(block.input_spec.shape[1:])
    if not isinstance(model_or_block, keras.Model):
        raise TypeError(f"Argument `model_or_block` must be a keras.Model holding one FeedbackSpikingBlock, or a "
                        f"FeedbackSpikingBlock; received {type(model_or_block).__name__}.")
    model = model_or_block
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    spiking = [layer for layer in layers if isinstance(layer, (EquilibriumLayer, TernaryCouple))]
    if len(spiking) != 1:
        raise ValueError(f"to_nir exports a model with exactly one spiking block; model {model.name!r} has "
                         f"{len(spiking)}: {[layer.name for layer in spiking]}.")
    block = _only_block(spiking[0])
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"to_nir exports a chain of layers with one input and one output; model {model.name!r} has "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    previous = model.inputs[0]
    for layer in layers:  # each layer must take the output of the one before it
        if layer.input is not previous:
            raise ValueError(f"to_nir exports a chain of layers; layer {layer.name!r} of model {model.name!r} does "
                             "not take the output of the layer before it.")
        previous = layer.output
    index = layers.index(block)
    return layers[:index], block, layers[index + 1:], tuple(model.inputs[0].shape[1:])


def _only_block(layer):
    if isinstance(layer, TernaryCouple):
        raise ValueError(f"Layer {layer.name!r} is a TernaryCouple: SPIDE's ternary neurons (spikes -1/0/+1 with two "
                         "thresholds) have no NIR node; export the model's forward FeedbackSpikingBlock instead.")
    if not isinstance(layer, FeedbackSpikingBlock):
        raise ValueError(f"Layer {layer.name!r} is a {type(layer).__name__}; to_nir exports FeedbackSpikingBlock "
                         "models (ImplicitStreams' parallel fused streams are not mapped yet).")
    return layer


def _check_block(block):
    name = block.name
    if block.input_type != "static":
        raise ValueError(f"Block {name!r} has input_type={block.input_type!r}: its first layer is driven by frame t "
                         "at step t and its readout weighs the frames, which the graph's static input does not say; "
                         "to_nir exports input_type='static' blocks.")
    if block.simulation_dtype != "float32":
        raise ValueError(f"Block {name!r} simulates in {block.simulation_dtype} (simulation_dtype): its spikes come "
                         "from rounded currents that a float32 NIR graph would not reproduce; rebuild it with "
                         "simulation_dtype='float32' (same weights) to export it.")
    if type(block.neuron) not in (neurons.IF, neurons.LIF):
        raise ValueError(f"Block {name!r} uses neuron {block.neuron!r}; to_nir maps the IF and LIF neurons "
                         "(subtractive reset) only.")
    if isinstance(block.feedback, keras.layers.Conv2DTranspose):
        raise ValueError(f"Block {name!r}: its feedback {block.feedback.name!r} is a Conv2DTranspose (strides "
                         f"{block.feedback.strides}); NIR has no transposed convolution nor up-sampling node, so it "
                         "cannot hold this feedback.")


def _layers_of(stage):
    return list(stage.layers) if isinstance(stage, keras.Sequential) else [stage]


def _check_shape(shape, expected, what):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{what} maps to {tuple(shape)} in the graph, but the block's layer has shape "
                         f"{tuple(expected)}.")


def _numpy(variable, values):
    value = values.get(id(variable)) if values else None
    return np.asarray(keras.ops.convert_to_numpy(variable) if value is None else value, np.float64)


def _is_linear(layer):
    return getattr(layer, "activation", keras.activations.linear) in (keras.activations.linear, None)


class _GraphBuilder:
    """Nodes and edges of the graph being written."""

    def __init__(self):
        self.nodes = {}
        self.edges = []

    def add(self, name, node):
        self.nodes[name] = node

    def edge(self, source, target):
        self.edges.append((source, target))

    def neuron(self, name, neuron, shape, dt):
        """Membrane, spike and reset nodes of a layer (semantics module docstring)."""
        shape = semantics.hwc_to_chw(shape)
        ones = np.ones(shape, np.float32)
        if neuron.leak == 1.0:
            membrane = nir.I(r=ones / np.float32(dt))
        else:
            tau, r = semantics.leak_time_constant(neuron.leak, dt)
            membrane = nir.LI(tau=ones * np.float32(tau), r=ones * np.float32(r), v_leak=0 * ones)
        self.add(f"{name}.membrane", membrane)
        self.add(f"{name}.spike", nir.Threshold(threshold=ones * semantics.nir_threshold(neuron.threshold)))
        self.add(f"{name}.reset", nir.Scale(scale=ones * np.float32(-neuron.leak * neuron.reset_amount)))
        self.edges += [(f"{name}.membrane", f"{name}.spike"), (f"{name}.spike", f"{name}.reset"),
                       (f"{name}.reset", f"{name}.membrane")]

    def readout(self, source, shape, leak, steps, dt):
        """The integrator whose value at step T is the average over the T steps of its input."""
        ones = np.ones(semantics.hwc_to_chw(shape), np.float32)
        z = semantics.normaliser(leak, steps)
        if leak == 1.0:
            average = nir.I(r=ones / np.float32(z * dt))
        else:
            tau, _ = semantics.leak_time_constant(leak, dt)
            average = nir.LI(tau=ones * np.float32(tau), r=ones * np.float32(tau / (dt * z)), v_leak=0 * ones)
        self.add("readout.average", average)
        self.add("output", nir.Output(output_type={"output": np.array(ones.shape)}))
        self.edges += [(source, "readout.average"), ("readout.average", "output")]

    def chain(self, layers, shape, label, source, order, values=None):
        """Add the nodes of a chain of Keras layers after node `source`, whose per-sample
        Keras shape is `shape` (`order`: the flatten order of a flattened channels-last
        map, see semantics.flatten_order). Returns (last node, output shape, order)."""
        pending = []  # [name, kind, fields]: nodes still open to batch-norm folding
        padding = None
        for layer in layers:
            where = f"{label}: layer {layer.name!r} ({type(layer).__name__})"
            if padding is not None and type(layer) is not keras.layers.Conv2D:
                raise ValueError(f"{where} follows a ZeroPadding2D; NIR pads only inside a Conv2d.")
            if not _is_linear(layer):
                raise ValueError(f"{where} has activation {layer.activation.__name__!r}; NIR's affine nodes are "
                                 "linear (the neurons are the only nonlinearity).")
            if isinstance(layer, keras.layers.Dropout):
                continue
            if isinstance(layer, keras.layers.ZeroPadding2D):
                (top, bottom), (left, right) = layer.padding
                if top != bottom or left != right:
                    raise ValueError(f"{where} pads asymmetrically {layer.padding}; NIR's Conv2d pads symmetrically.")
                padding = (top, left)
                continue
            if isinstance(layer, keras.layers.Normalization):
                pending.append(self._normalization(layer, shape, where))
            elif isinstance(layer, keras.layers.Flatten):
                if len(shape) == 1:
                    continue
                pending.append([layer.name, "flatten", {"input_type": semantics.hwc_to_chw(shape)}])
                order = semantics.flatten_order(shape)
                shape = (int(np.prod(shape)),)
            elif type(layer) is keras.layers.Dense:
                if len(shape) != 1:
                    raise ValueError(f"{where} acts on the last axis of a {shape} input; flatten first.")
                weight = _numpy(layer.kernel, values)
                weight = (weight[order] if order is not None else weight).T
                bias = _numpy(layer.bias, values) if layer.use_bias else None
                pending.append([layer.name, "affine", {"weight": weight, "bias": bias}])
                shape, order = (layer.units,), None
            elif type(layer) is keras.layers.Conv2D:
                node, shape = _conv(layer, shape, padding, where, values)
                pending.append([layer.name, "conv", node])
                padding = None
            elif isinstance(layer, keras.layers.BatchNormalization):
                _fold_batch_norm(layer, pending, where, values)
            else:
                raise ValueError(f"{where} has no exact NIR counterpart; to_nir maps {MAPPED}.")
        for name, kind, fields in pending:
            # from_nir's layer names are the node names, and stay; others are named by kind, since
            # Keras's own names (dense_7) change with every model built
            node_name = name if name.startswith(f"{label}.") else self._free(f"{label}.{NODE_NAMES[kind]}")
            self.add(node_name, _node(kind, fields))
            self.edge(source, node_name)
            source = node_name
        return source, shape, order

    def _free(self, name):
        candidate, k = name, 1
        while candidate in self.nodes:
            k += 1
            candidate = f"{name}{k}"
        return candidate

    @staticmethod
    def _normalization(layer, shape, where):
        """(x - mean) / max(sqrt(variance), epsilon), per channel: a depthwise 1x1 Conv2d
        (an image) or a diagonal Affine (a vector)."""
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64)
        std = np.maximum(np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64)),
                         keras.backend.epsilon())
        channels = shape[-1]
        if mean.size not in (1, channels) or std.size not in (1, channels) or layer.axis not in ((-1,), (len(shape),)):
            raise ValueError(f"{where} normalises with statistics of shape {mean.shape} along axis {layer.axis}; "
                             "to_nir maps per-channel (last axis) or scalar statistics.")
        scale = np.broadcast_to(1.0 / std.reshape(-1), (channels,))
        shift = np.broadcast_to(-mean.reshape(-1) / std.reshape(-1), (channels,))
        if len(shape) == 3:
            return [layer.name, "normalise", {"weight": scale.reshape(channels, 1, 1, 1), "bias": shift, "stride": (1, 1),
                                         "padding": (0, 0), "dilation": (1, 1), "groups": channels,
                                         "input_shape": tuple(shape[:2])}]
        return [layer.name, "normalise_vector", {"weight": np.diag(scale), "bias": shift}]


def _conv(layer, shape, padding, where, values):
    if layer.data_format != "channels_last" or len(shape) != 3:
        raise ValueError(f"{where}: to_nir maps channels_last 2-D convolutions of (H, W, C) inputs.")
    kernel = np.asarray(layer.kernel_size)
    strides = np.asarray(layer.strides)
    dilation = np.asarray(layer.dilation_rate)
    size = np.asarray(shape[:2])
    if layer.padding == "same":
        out = -(-size // strides)
        total = np.maximum((out - 1) * strides + (kernel - 1) * dilation + 1 - size, 0)
        if np.any(total % 2):
            raise ValueError(f"{where} has padding='same' with strides {tuple(map(int, strides))} on "
                             f"{tuple(map(int, size))}, which pads {tuple(map(int, total))} unevenly; NIR's Conv2d pads symmetrically (use an explicit symmetric "
                             "ZeroPadding2D and padding='valid').")
        pad = total // 2
    else:
        pad = np.zeros(2, int)
    if padding is not None:
        pad = pad + np.asarray(padding)
    weight = _numpy(layer.kernel, values).transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    bias = _numpy(layer.bias, values) if layer.use_bias else None
    out = (size + 2 * pad - (kernel - 1) * dilation - 1) // strides + 1
    fields = {"weight": weight, "bias": bias, "stride": tuple(int(s) for s in strides),
              "padding": tuple(int(p) for p in pad), "dilation": tuple(int(d) for d in dilation),
              "groups": int(layer.groups), "input_shape": tuple(int(s) for s in size)}
    return fields, (int(out[0]), int(out[1]), int(layer.filters))


def _fold_batch_norm(layer, pending, where, values):
    """BN(z) = gamma (z - mean) / sqrt(var + eps) + beta folded into the map z = W x + b before it."""
    if not pending or pending[-1][1] not in ("affine", "conv", "normalise", "normalise_vector"):
        raise ValueError(f"{where} does not follow a Dense or Conv2D, so it cannot be folded into one.")
    if layer.axis not in (-1, 3, 1) or (layer.axis == 1 and pending[-1][1] == "conv"):
        raise ValueError(f"{where} normalises axis {layer.axis}; to_nir folds batch norm over the channels only.")
    mean = _numpy(layer.moving_mean, values)
    scale = 1.0 / np.sqrt(_numpy(layer.moving_variance, values) + layer.epsilon)
    if layer.gamma is not None:
        scale = scale * _numpy(layer.gamma, values)
    shift = -mean * scale + (_numpy(layer.beta, values) if layer.beta is not None else 0.0)
    fields = pending[-1][2]
    weight = fields["weight"]
    fields["weight"] = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    bias = fields["bias"] if fields["bias"] is not None else 0.0
    fields["bias"] = bias * scale + shift


NODE_NAMES = {"flatten": "flatten", "affine": "affine", "conv": "conv", "normalise": "normalise",
              "normalise_vector": "normalise"}


def _node(kind, fields):
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    kind = {"normalise": "conv", "normalise_vector": "affine"}.get(kind, kind)
    if kind == "flatten":
        return nir.Flatten(input_type={"input": np.array(fields["input_type"])}, start_dim=0, end_dim=-1)
    if kind == "affine":
        if fields["bias"] is None:
            return nir.Linear(weight=f32(fields["weight"]))
        return nir.Affine(weight=f32(fields["weight"]), bias=f32(fields["bias"]))
    bias = fields["bias"] if fields["bias"] is not None else np.zeros(fields["weight"].shape[0])
    return nir.Conv2d(input_shape=fields["input_shape"], weight=f32(fields["weight"]), stride=fields["stride"],
                      padding=fields["padding"], dilation=fields["dilation"], groups=fields["groups"], bias=f32(bias))
