"""`from_nir`: a NIR graph as a Keras model around one FeedbackSpikingBlock (docs/nir.md).

The graph's neurons are found first: the membrane / Threshold / reset-Scale cycle that
`to_nir` writes (`keras_fsnn.nir.semantics`), or another library's IF / LIF node read with
subtractive reset (`reset="subtract"`). Between them only chains of linear nodes may sit.
They must form our block: input -> layer 1 -> ... -> layer N, an optional feedback from
layer N into layer 1 (for N = 1 a layer's own recurrent map), and a readout from layer N
that averages over the T steps (or layer N's spikes themselves, read as rates). A CubaLIF
with tau_syn = dt and w_in = 1 filters nothing under forward Euler and reads as a LIF.
Anything else is a ValueError naming the node.
"""

import collections
import os

import keras
import nir
import numpy as np

from keras_fsnn import neurons
from keras_fsnn.layers import FeedbackSpikingBlock
from keras_fsnn.nir import semantics

LINEAR = (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.SumPool2d, nir.AvgPool2d)
WEIGHTED = (nir.Affine, nir.Linear, nir.Conv2d)
RESETS = {"subtract": "subtract"}


def from_nir(graph, time_steps=None, reset=None, gradient="ide", dt=None, name=None):
    """A Keras model that runs NIR graph `graph` (a `nir.NIRGraph` or a file's path).

    Args:
        graph: the graph, or the path of a file `nir.write` wrote.
        time_steps: T; by default the graph's metadata (graphs `to_nir` wrote) or the T
            its averaging readout implies.
        reset: how to read other libraries' IF / LIF nodes, which NIR specifies with reset
            to `v_reset`: "subtract" reads them with subtractive reset by
            v_threshold - v_reset, our neuron (the reading of simulators whose IF subtracts,
            e.g. snnTorch's `reset_mechanism="subtract"`). Graphs `to_nir` wrote need none.
        gradient: the block's backward mode, for training the imported model further.
        dt: the time of one step (default: the graph's metadata, else 1).
        name: the model's name.

    Returns:
        a keras.Model taking inputs in the graph's layout (channels first: (C, H, W)),
        whose output is the graph's Output at step T.
    """
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(os.fspath(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"Argument `graph` must be a nir.NIRGraph or the path of a NIR file; received "
                        f"{type(graph).__name__}.")
    if reset is not None and reset not in RESETS:
        raise ValueError(f"Argument `reset` must be None or 'subtract'; received reset={reset!r}.")
    metadata = {k: _plain(v) for k, v in (graph.metadata or {}).items()}
    ours = metadata.get("producer") == semantics.PRODUCER
    dt = float(dt if dt is not None else metadata.get("dt", semantics.DT))
    reader = _GraphReader(graph, reset, dt)
    layers, feedback, readout = reader.block_structure()
    neuron = reader.common_neuron(layers)
    steps = _time_steps(time_steps, metadata if ours else {}, reader, readout, neuron.leak)
    builder = _KerasBuilder(reader)
    shape = semantics.chw_to_hwc(reader.shape_of(reader.input_name))
    inputs = keras.Input(tuple(int(d) for d in semantics.hwc_to_chw(shape)), name="input")
    x = keras.layers.Permute((2, 3, 1), name="channels_last")(inputs) if len(shape) == 3 else inputs
    first = layers[0].input_chain
    weighted = [i for i, node in enumerate(first) if isinstance(reader.nodes[node], WEIGHTED)]
    if not weighted:
        raise ValueError("from_nir: no Affine, Linear or Conv2d node feeds the first layer's neurons; the block's "
                         "first stage needs a weighted map.")
    split = weighted[-1]  # before it: the input's preprocessing (normalisation, flatten), outside the block
    before, shape, order = builder.layers(first[:split], shape, None)
    for layer in before:
        x = layer(x)
    stages = []
    for l, layer in enumerate(layers):
        chain = first[split:] if l == 0 else layer.input_chain
        stage, out_shape, _ = builder.layers(chain, shape if l == 0 else layers[l - 1].keras_shape,
                                             order if l == 0 else None)
        layer.check_shape(out_shape)
        stages.append(_stage(stage, f"forward{l + 1}"))
    feedback_stage = None
    if feedback is not None:
        stage, out_shape, _ = builder.layers(feedback, layers[-1].keras_shape, None)
        layers[0].check_shape(out_shape)
        feedback_stage = _stage(stage, "feedback")
    block = FeedbackSpikingBlock(forward=stages, feedback=feedback_stage, time_steps=steps, neuron=neuron,
                                 gradient=gradient, spectral_norm=False, name="fsnn")
    x = block(x)
    after, _, _ = builder.layers(readout.chain if readout is not None else [], layers[-1].keras_shape, None)
    for layer in after:
        x = layer(x)
    model = keras.Model(inputs, x, name=name or str(metadata.get("model") or "from_nir"))
    builder.assign_weights()
    return model


def _plain(value):
    value = value.decode() if isinstance(value, bytes) else value
    return value.item() if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0) \
        else value


def _uniform(array, what):
    values = np.unique(np.asarray(array, np.float64))
    if values.size != 1:
        raise ValueError(f"from_nir: {what} differs between neurons ({values.size} values); keras_fsnn's layers have "
                         "one value for all their neurons.")
    return float(values[0])


def _stage(layers, name):
    return layers[0] if len(layers) == 1 else keras.Sequential(layers, name=name)


class _Neuron:
    """One layer of spiking neurons: its membrane node (where currents arrive), its spike
    node (what it sends), its parameters and the chain of linear nodes feeding it."""

    def __init__(self, membrane, spike, internal, params, shape):
        self.membrane, self.spike, self.internal, self.params = membrane, spike, internal, params
        self.keras_shape = semantics.chw_to_hwc(shape)
        self.input_chain = None

    def check_shape(self, shape):
        if tuple(shape) != tuple(self.keras_shape):
            raise ValueError(f"from_nir: the map into {self.membrane!r} gives shape {semantics.hwc_to_chw(shape)}, "
                             f"its neurons have {semantics.hwc_to_chw(self.keras_shape)}.")


# the readout: the chain of linear nodes from the last layer's spikes into the integrator
# that averages them, and that integrator
_Readout = collections.namedtuple("_Readout", "chain integrator")


class _GraphReader:
    """The graph's nodes and edges, its neurons (`neurons`: membrane node -> _Neuron) and
    the block structure they form (`block_structure`)."""

    def __init__(self, graph, reset, dt):
        self.nodes, self.reset, self.dt = graph.nodes, reset, dt
        for node_name, node in self.nodes.items():
            if isinstance(node, nir.NIRGraph):
                raise ValueError(f"from_nir: node {node_name!r} is a nested NIRGraph; flatten the graph first.")
        self.successors = {n: [] for n in self.nodes}
        self.predecessors = {n: [] for n in self.nodes}
        for source, target in graph.edges:
            for end in (source, target):
                if end not in self.nodes:
                    raise ValueError(f"from_nir: the edge ({source!r}, {target!r}) names no node {end!r}.")
            self.successors[source].append(target)
            self.predecessors[target].append(source)
        inputs = [n for n, node in self.nodes.items() if isinstance(node, nir.Input)]
        outputs = [n for n, node in self.nodes.items() if isinstance(node, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"from_nir reads graphs with one Input and one Output; this one has inputs {inputs} and "
                             f"outputs {outputs}.")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.neurons = self._find_neurons()

    def shape_of(self, name):
        node = self.nodes[name]
        types = node.input_type if isinstance(node, nir.Input) else node.output_type
        return tuple(int(d) for d in np.asarray(next(iter(types.values()))).reshape(-1))

    # ------------------------------------------------------------ neurons

    def _find_neurons(self):
        found = {}
        claimed = set()
        for name, node in self.nodes.items():
            if isinstance(node, (nir.I, nir.LI)):
                loop = self._reset_loop(name)
                if loop is not None:
                    spike, reset = loop
                    found[name] = _Neuron(name, spike, {name, spike, reset}, self._loop_params(name, spike, reset),
                                          self.shape_of(spike))
                    claimed |= {spike, reset}
            elif isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
                found[name] = _Neuron(name, name, {name}, self._node_params(name), self.shape_of(name))
            elif isinstance(node, nir.CubaLI):
                raise ValueError(f"from_nir: node {name!r} is a CubaLI, a filtered leaky integrator; keras_fsnn's "
                                 "models have no such node (their readout averages the rates over the T steps).")
        for name, node in self.nodes.items():
            if isinstance(node, nir.Threshold) and name not in claimed:
                raise ValueError(f"from_nir: Threshold {name!r} is not part of a membrane -> Threshold -> Scale -> "
                                 "membrane reset cycle (keras_fsnn.nir.semantics), which is the neuron it can read.")
        return found

    def _reset_loop(self, membrane):
        for spike in self.successors[membrane]:
            if not isinstance(self.nodes[spike], nir.Threshold):
                continue
            for reset in self.successors[spike]:
                if isinstance(self.nodes[reset], nir.Scale) and self.successors[reset] == [membrane]:
                    return spike, reset
        return None

    def _gain_and_leak(self, name):
        node = self.nodes[name]
        if isinstance(node, (nir.I, nir.IF)):
            return self.dt * _uniform(node.r, f"{name}.r"), 1.0
        if isinstance(node, nir.CubaLIF):
            # tau_syn = dt: under forward Euler the synaptic current is its input, I[t] = w_in S[t]
            if not np.isclose(self.dt / _uniform(node.tau_syn, f"{name}.tau_syn"), 1.0, rtol=1e-6) or \
                    _uniform(node.w_in, f"{name}.w_in") != 1.0:
                raise ValueError(f"from_nir: node {name!r} is a CubaLIF whose synaptic current filter (tau_syn = "
                                 f"{np.ravel(node.tau_syn)[0]:g}, w_in = {np.ravel(node.w_in)[0]:g}) keras_fsnn's "
                                 "neurons do not have; it reads CubaLIF with tau_syn = dt and w_in = 1 only.")
            tau = _uniform(node.tau_mem, f"{name}.tau_mem")
            if _uniform(node.v_leak, f"{name}.v_leak") != 0.0:
                raise ValueError(f"from_nir: {name!r} leaks towards v_leak = {node.v_leak.flat[0]}; keras_fsnn's "
                                 "neurons leak towards 0.")
            return self.dt * _uniform(node.r, f"{name}.r") / tau, semantics.leak_of(tau, self.dt)
        if _uniform(node.v_leak, f"{name}.v_leak") != 0.0:
            raise ValueError(f"from_nir: {name!r} leaks towards v_leak = {node.v_leak.flat[0]}; keras_fsnn's "
                             "neurons leak towards 0.")
        tau = _uniform(node.tau, f"{name}.tau")
        return self.dt * _uniform(node.r, f"{name}.r") / tau, semantics.leak_of(tau, self.dt)

    def _unit_gain(self, name):
        gain, leak = self._gain_and_leak(name)
        if not np.isclose(gain, 1.0, rtol=1e-6, atol=0.0):
            raise ValueError(f"from_nir: membrane {name!r} has input gain {gain:g} (dt r for I / IF, dt r / tau for "
                             "LI / LIF); keras_fsnn's neurons add their input current with gain 1.")
        return leak

    def _loop_params(self, membrane, spike, reset):
        leak = self._unit_gain(membrane)
        threshold = semantics.our_threshold(_uniform(self.nodes[spike].threshold, f"{spike}.threshold"))
        amount = -_uniform(self.nodes[reset].scale, f"{reset}.scale") / leak
        return {"leak": leak, "threshold": threshold, "resting_potential": threshold - amount}

    def _node_params(self, name):
        node = self.nodes[name]
        if self.reset is None:
            raise ValueError(f"from_nir: node {name!r} is a NIR {type(node).__name__}, which resets to v_reset; "
                             "keras_fsnn's neurons subtract V_th - u_rest instead. Pass reset='subtract' to read it "
                             "with subtractive reset by v_threshold - v_reset (as simulators whose IF subtracts do).")
        leak = self._unit_gain(name)
        threshold = semantics.our_threshold(_uniform(node.v_threshold, f"{name}.v_threshold"))
        return {"leak": leak, "threshold": threshold,
                "resting_potential": _uniform(node.v_reset, f"{name}.v_reset")}

    def common_neuron(self, layers):
        params = [layer.params for layer in layers]
        if any(p != params[0] for p in params[1:]):
            raise ValueError(f"from_nir: the layers' neurons differ ({params}); a FeedbackSpikingBlock has one neuron "
                             "model for all its layers.")
        p = params[0]
        if p["leak"] == 1.0:
            return neurons.IF(threshold=p["threshold"], resting_potential=p["resting_potential"])
        return neurons.LIF(leak=p["leak"], threshold=p["threshold"], resting_potential=p["resting_potential"])

    # ------------------------------------------------------------ structure

    def _paths_from(self, source, skip):
        """Every chain of linear nodes from `source` (not into `skip`), as (nodes, end)."""
        paths = []
        for first in self.successors[source]:
            if first in skip:
                continue
            chain, node = [], first
            while not (node in self.neurons or node == self.output_name or self._is_integrator(node)):
                if not isinstance(self.nodes[node], LINEAR):
                    raise ValueError(f"from_nir: node {node!r} is a {type(self.nodes[node]).__name__}; between "
                                     "neurons from_nir reads Affine, Linear, Conv2d, Flatten, SumPool2d and AvgPool2d.")
                if len(self.successors[node]) != 1 or len(self.predecessors[node]) != 1:
                    raise ValueError(f"from_nir: node {node!r} branches or joins ({self.predecessors[node]} -> "
                                     f"{node!r} -> {self.successors[node]}); a FeedbackSpikingBlock's maps are chains.")
                chain.append(node)
                node = self.successors[node][0]
            paths.append((chain, node))
        return paths

    def _is_integrator(self, name):
        return isinstance(self.nodes[name], (nir.I, nir.LI)) and name not in self.neurons

    def block_structure(self):
        """(layers in order, the feedback chain or None, the readout or None)."""
        starts = self._paths_from(self.input_name, ())
        if len(starts) != 1 or starts[0][1] not in self.neurons:
            raise ValueError("from_nir: the Input must feed exactly one chain of linear nodes into the first layer's "
                             f"neurons; it feeds {[end for _, end in starts]}.")
        chain, end = starts[0]
        layers = [self.neurons[end]]
        layers[0].input_chain = chain
        feedback = readout = None
        while True:
            current = layers[-1]
            paths = self._paths_from(current.spike, current.internal)
            onward = [(c, e) for c, e in paths if e in self.neurons and self.neurons[e] not in layers]
            back = [(c, e) for c, e in paths if e in self.neurons and self.neurons[e] in layers]
            out = [(c, e) for c, e in paths if e not in self.neurons]
            if len(onward) > 1:
                raise ValueError(f"from_nir: layer {current.membrane!r} feeds several layers "
                                 f"{[e for _, e in onward]}; a FeedbackSpikingBlock is a chain of layers.")
            if onward:
                if back or out:
                    raise ValueError(f"from_nir: layer {current.membrane!r} feeds {[e for _, e in back + out]} too; "
                                     "only the last layer may feed back (into layer 1) or reach the output.")
                nxt = self.neurons[onward[0][1]]
                nxt.input_chain = onward[0][0]
                layers.append(nxt)
                continue
            if len(back) > 1 or (back and back[0][1] != layers[0].membrane):
                raise ValueError(f"from_nir: the last layer {current.membrane!r} feeds back into "
                                 f"{[e for _, e in back]}; a FeedbackSpikingBlock feeds back into layer 1 only.")
            feedback = back[0][0] if back else None
            if len(out) != 1:
                raise ValueError(f"from_nir: the last layer {current.membrane!r} must reach the Output by one chain; "
                                 f"it reaches {[e for _, e in out]}.")
            readout = self._readout(*out[0], current)
            break
        missing = [n for n, neuron in self.neurons.items() if neuron not in layers]
        if missing:
            raise ValueError(f"from_nir: the neurons {missing} are not on the chain input -> layer 1 -> ... -> output.")
        self._check_membrane_inputs(layers, feedback)
        return layers, feedback, readout

    def _check_membrane_inputs(self, layers, feedback):
        for l, layer in enumerate(layers):
            expected = 1 + (l == 0 and feedback is not None) + (len(layer.internal) > 1)
            if len(self.predecessors[layer.membrane]) != expected:
                raise ValueError(f"from_nir: {layer.membrane!r} has inputs {self.predecessors[layer.membrane]}; "
                                 "a layer's neurons take one map of the layer before (layer 1: and the feedback).")

    def _readout(self, chain, end, last):
        if end == self.output_name:
            if chain:
                raise ValueError("from_nir: the output is a map of the last layer's spikes at each step, not an "
                                 "average over the steps; keras_fsnn's models output the average (an integrator "
                                 "of gain 1/T before the Output, as to_nir writes).")
            return None  # the rates themselves
        if self.successors[end] != [self.output_name]:
            raise ValueError(f"from_nir: integrator {end!r} must feed the Output alone.")
        return _Readout(chain, end)

    def readout_normaliser(self, readout, leak):
        """Z of the readout integrator (its gain is 1/Z) and its leak."""
        gain, readout_leak = self._gain_and_leak(readout.integrator)
        if not np.isclose(readout_leak, leak, rtol=1e-6, atol=1e-7):
            raise ValueError(f"from_nir: the readout integrator {readout.integrator!r} leaks by {readout_leak:g} per "
                             f"step, the neurons by {leak:g}; it would not compute their (weighted) average rate.")
        return 1.0 / gain


def _time_steps(time_steps, metadata, reader, readout, leak):
    """T: the argument, else the graph's metadata, else what its averaging readout implies
    (its gain is 1/Z, Z = sum_{i<T} lambda^i); a T the readout does not average over is an
    error, since the graph's output at step T would not be the model's."""
    if time_steps is None:
        time_steps = metadata.get("time_steps")
    implied = None
    if readout is not None:
        z = reader.readout_normaliser(readout, leak)
        implied = z if leak == 1.0 else np.log(max(1.0 - z * (1.0 - leak), 1e-300)) / np.log(leak)
        implied = int(round(implied)) if np.isclose(implied, round(implied), rtol=0, atol=1e-3) else None
        if implied is None or not np.isclose(semantics.normaliser(leak, implied), z, rtol=1e-5):
            raise ValueError(f"from_nir: the readout integrator {readout.integrator!r} has gain {1 / z:g}, which is "
                             "1/Z for no whole number of steps T (Z = sum_{i<T} lambda^i); it does not average.")
        if time_steps is not None and int(time_steps) != implied:
            raise ValueError(f"from_nir: time_steps={time_steps} but the graph's readout averages over {implied} "
                             "steps; its output at another step is not the average rate's readout.")
    if time_steps is None:
        time_steps = implied
    if time_steps is None:
        raise ValueError("from_nir: the graph does not say how many steps to simulate; pass time_steps=T.")
    if isinstance(time_steps, bool) or int(time_steps) != time_steps or int(time_steps) < 1:
        raise ValueError(f"Argument `time_steps` must be an integer >= 1; received time_steps={time_steps!r}.")
    return int(time_steps)


class _KerasBuilder:
    """Keras layers (channels last) for chains of NIR nodes, with their weights kept until
    the model is built."""

    def __init__(self, reader):
        self.reader = reader
        self.weights = []

    def assign_weights(self):
        for layer, values in self.weights:
            layer.set_weights(values)

    def layers(self, chain, shape, order):
        layers = []
        for name in chain:
            node = self.reader.nodes[name]
            made, shape, order = self._layer(name, node, tuple(shape), order)
            layers += made
        return layers, shape, order

    def _layer(self, name, node, shape, order):
        if isinstance(node, nir.Flatten):
            if node.end_dim != -1 or node.start_dim not in (0, 1):
                raise ValueError(f"from_nir: Flatten {name!r} flattens dims {node.start_dim}..{node.end_dim}; "
                                 "from_nir reads a flatten of the whole sample.")
            return [keras.layers.Flatten(name=name)], (int(np.prod(shape)),), semantics.flatten_order(shape)
        if isinstance(node, (nir.Affine, nir.Linear)):
            weight = np.asarray(node.weight, np.float32)
            if weight.ndim != 2 or len(shape) != 1 or weight.shape[1] != shape[0]:
                raise ValueError(f"from_nir: {type(node).__name__} {name!r} maps {weight.shape[1:]} but receives "
                                 f"{semantics.hwc_to_chw(shape)}.")
            kernel = np.empty_like(weight.T)
            kernel[order if order is not None else slice(None)] = weight.T
            bias = isinstance(node, nir.Affine)
            layer = keras.layers.Dense(weight.shape[0], use_bias=bias, name=name)
            self.weights.append((layer, [kernel] + ([np.asarray(node.bias, np.float32)] if bias else [])))
            return [layer], (weight.shape[0],), None
        if isinstance(node, nir.Conv2d):
            return self._conv(name, node, shape)
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            return self._pool(name, node, shape)
        raise ValueError(f"from_nir: node {name!r} ({type(node).__name__}) cannot be read.")

    def _conv(self, name, node, shape):
        if len(shape) != 3:
            raise ValueError(f"from_nir: Conv2d {name!r} receives a vector of {shape}.")
        weight = np.asarray(node.weight, np.float32)  # (out, in / groups, kh, kw)
        layers, padding = [], node.padding
        if isinstance(padding, str):
            if padding == "same" and tuple(np.atleast_1d(node.stride)) not in ((1,), (1, 1)):
                raise ValueError(f"from_nir: Conv2d {name!r} has padding 'same' with stride {node.stride}.")
            keras_padding = padding
        else:
            pad = tuple(int(p) for p in np.broadcast_to(padding, (2,)))
            if any(pad):
                layers.append(keras.layers.ZeroPadding2D(((pad[0], pad[0]), (pad[1], pad[1])), name=f"{name}.pad"))
            keras_padding = "valid"
        conv = keras.layers.Conv2D(weight.shape[0], weight.shape[2:], strides=tuple(np.broadcast_to(node.stride, (2,))),
                                   padding=keras_padding, dilation_rate=tuple(np.broadcast_to(node.dilation, (2,))),
                                   groups=int(node.groups), name=name)
        layers.append(conv)
        self.weights.append((conv, [weight.transpose(2, 3, 1, 0), np.asarray(node.bias, np.float32)]))
        out = keras.Sequential(layers).compute_output_shape((None,) + shape)[1:]
        return layers, tuple(int(d) for d in out), None

    def _pool(self, name, node, shape):
        kernel = tuple(int(k) for k in np.broadcast_to(node.kernel_size, (2,)))
        stride = tuple(int(s) for s in np.broadcast_to(node.stride, (2,)))
        pad = tuple(int(p) for p in np.broadcast_to(node.padding, (2,)))
        layers = [keras.layers.ZeroPadding2D(((pad[0], pad[0]), (pad[1], pad[1])), name=f"{name}.pad")] if any(pad) \
            else []
        channels = shape[-1]
        if isinstance(node, nir.AvgPool2d):  # counts the padding, as PyTorch's count_include_pad=True
            layers.append(keras.layers.AveragePooling2D(kernel, stride, name=name))
        else:  # a sum: a depthwise convolution with a kernel of ones, exact on spikes
            conv = keras.layers.Conv2D(channels, kernel, strides=stride, groups=channels, use_bias=False, name=name)
            self.weights.append((conv, [np.ones(kernel + (1, channels), np.float32)]))
            layers.append(conv)
        out = keras.Sequential(layers).compute_output_shape((None,) + shape)[1:]
        return layers, tuple(int(d) for d in out), None
