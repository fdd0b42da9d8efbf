"""Does a third-party NIR simulator (Norse) run our exported graphs with our spikes?

Two steps, two environments:

    # 1. the repo's environment (Keras): export, and record our spikes and logits
    python examples/nir_consumer_check.py prepare --model fsnn_fmnist --examples 1000 \
        --data-dir ../shared/datasets --out /tmp/nircheck/fsnn_fmnist
    python examples/nir_consumer_check.py prepare --model digits_conv --out /tmp/nircheck/digits_conv
    # 2. a venv with numpy, nir, torch and norse only (no keras, no keras_fsnn)
    python examples/nir_consumer_check.py check --in /tmp/nircheck/fsnn_fmnist

`prepare` writes out/graph.nir (`keras_fsnn.nir.to_nir`) and out/reference.npz: the images
(N, C, H, W), labels, our per-neuron spike counts per layer (the block's own simulation,
channels first) and our logits (`model.predict`). `digits_conv` is examples/train_digits.py's
two-conv-layer model with a 3x3 Conv2D feedback from layer 2 to layer 1, trained here briefly.

`check` reads graph.nir and runs it with `norse.torch.from_nir` (nirtorch's executor: nodes
in depth-first order from the input, an edge that closes a cycle carries the previous step's
output). Norse has no I, LI, Threshold or Scale node, so the graph is rewritten first:

* Each neuron, written (keras_fsnn/nir/semantics.py) as membrane I -> Threshold(theta) ->
  Scale(-(V_th - u_rest)) -> back into the I, becomes one CubaLIF with tau_syn = dt = 1,
  tau_mem = r = 2**100, v_leak = 0, w_in = 1, v_threshold = theta, and a reset that subtracts
  -scale. Under Norse's forward Euler (dt = 1) this is v <- v + I, spike z = [v > theta]
  (= [v >= V_th] in float32), v <- v - z (V_th - u_rest): the same spikes as the graph's
  pre-reset membrane, which adds the reset one step late (v[t] = v[t-1] - reset s[t-1] +
  I[t]), and as our simulation. In float32: the membrane step v + 2**-100 (2**100 I - v)
  rounds to v + I (powers of two scale exactly; the leak term is far below the rounding),
  but the synapse returns I_prev + (I - I_prev), which is I only up to one rounding: the
  check counts both and reports how close to V_th any potential came. Edges into the I go
  into the CubaLIF, the Threshold's other outgoing edges leave from it. LI membranes (LIF
  neurons) are refused: Norse's v + (r I - v)/tau is not our lambda v + I in float32.
* The readout integrator (an I with no Threshold; Norse has none) is integrated in NumPy:
  the node feeding it (the readout Affine) is read at every step and v += dt r y, so Norse
  computes W s[t] + b and we only do the graph's own sum.
* Flatten: NIR's start_dim/end_dim count the per-sample axes (the node's input_type has no
  batch axis) but Norse passes them to torch.nn.Flatten, which counts the batch: shifted by 1.

Spikes are recorded without cutting the graph: a forward hook on each CubaLIF module reads
its spikes, its input I and its previous state, and the reset callable sees the pre-reset
potential v; so we also count the updates where Norse's v differs from float32 v_prev + I,
and each neuron's smallest |v - V_th|, to explain any differing neuron.
"""

import argparse
import os
import re
import sys
import time

import numpy as np


def prepare(args):
    import keras
    import nir

    import keras_fsnn
    import keras_fsnn.nir
    from keras_fsnn.inspection import block_inputs, spiking_blocks

    if args.model == "digits_conv":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import train_digits

        x_train, x, y_train, y = train_digits.load_digits(args.seed)  # the 450 test digits
        model = train_digits.build_model(args.time_steps, "if", 0.0, "broyden", args.seed, feedback="conv")
        steps = int(np.ceil(len(x_train) / 64))  # as train_digits.main
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [steps * int(args.epochs * 0.6), steps * int(args.epochs * 0.85)], [0.05, 0.005, 0.0005])
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=2)
    else:
        model = keras_fsnn.zoo.load(args.model)
        dataset = next(p["metadata"]["dataset"] for p in keras_fsnn.zoo.list_presets() if p["name"] == args.model)
        x, y = keras_fsnn.datasets.load_arrays(dataset, "test", data_dir=args.data_dir)
        x = x.astype("float32") / 255.0
    x, y = np.asarray(x, np.float32)[: args.examples], np.asarray(y)[: args.examples]
    x = x.reshape((len(x),) + tuple(model.inputs[0].shape[1:]))
    os.makedirs(args.out, exist_ok=True)
    nir.write(os.path.join(args.out, "graph.nir"), keras_fsnn.nir.to_nir(model))
    (block,) = spiking_blocks(model)
    counts = block.simulate(block_inputs(model, block, x), record_residuals=False, count_spikes=True)["counts"]
    counts = [np.asarray(keras.ops.convert_to_numpy(c)) for c in counts]
    counts = [c.transpose(0, 3, 1, 2) if c.ndim == 4 else c for c in counts]  # NIR's channels first
    logits = model.predict(x, batch_size=250, verbose=0)
    images = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
    np.savez(os.path.join(args.out, "reference.npz"), images=images, labels=y, logits=logits,
             **{f"counts{l + 1}": c for l, c in enumerate(counts)})
    print(f"{args.model}: wrote {args.out}/graph.nir and reference.npz ({len(x)} examples, T = {block.time_steps}, "
          f"our accuracy {np.mean(np.argmax(logits, 1) == y):.4f}, spikes per layer "
          f"{[int(c.sum()) for c in counts]})")


def rewrite(graph):
    """The graph with each I/Threshold/Scale neuron as a CubaLIF named after its Threshold.
    Returns (graph, neurons {name: (V_th, reset amount)}, readout (source node, dt * r))."""
    import nir

    nodes, edges = dict(graph.nodes), list(graph.edges)
    out_of = lambda a: [b for s, b in edges if s == a]  # noqa: E731
    dt = float(graph.metadata.get("dt", 1.0))
    neurons, readout = {}, None
    for m, node in graph.nodes.items():
        if not isinstance(node, (nir.I, nir.LI)):
            continue
        spikes = [s for s in out_of(m) if isinstance(nodes[s], nir.Threshold)]
        if isinstance(node, nir.LI):
            sys.exit(f"{m} is an LI (a LIF neuron's membrane or readout): Norse's CubaLIF leak v + (r I - v)/tau "
                     "is not our lambda v + I in float32, so this check reads IF graphs only (I membranes).")
        if not spikes:  # the readout integrator
            (src,) = [a for a, b in edges if b == m]
            readout = (src, dt * np.asarray(node.r, np.float64))
            edges = [(src, b) for b in out_of(m)] + [e for e in edges if m not in e]
            del nodes[m]
            continue
        (s,) = spikes
        (c,) = [c for c in out_of(s) if isinstance(nodes[c], nir.Scale) and out_of(c) == [m]]
        if out_of(m) != [s] or not np.allclose(np.asarray(node.r) * dt, 1.0):
            sys.exit(f"{m}: not a gain-1 membrane read only by its Threshold; cannot map it to a CubaLIF.")
        theta = np.asarray(nodes[s].threshold, np.float32)
        one = np.ones(theta.shape, np.float32)
        big = np.float32(2.0**100)
        nodes[s] = nir.CubaLIF(tau_syn=one, tau_mem=big * one, r=big * one, v_leak=0 * one, v_threshold=theta,
                               w_in=one)
        neurons[s] = (np.nextafter(theta, np.float32(np.inf)), -np.asarray(nodes[c].scale, np.float32))
        edges = [(a if a != m else s, b) for a, b in edges if (a, b) not in ((m, s), (s, c), (c, m))]
        edges = [(a, b if b != m else s) for a, b in edges]
        del nodes[m], nodes[c]
    for name, node in nodes.items():
        if isinstance(node, nir.Flatten):  # torch.nn.Flatten counts the batch axis, NIR does not
            shifted = nir.Flatten.__new__(nir.Flatten)
            shifted.__dict__.update(node.__dict__, start_dim=node.start_dim + 1,
                                    end_dim=node.end_dim + (node.end_dim >= 0))
            nodes[name] = shifted
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), neurons, readout


def check(args):
    start = time.time()
    import nir
    import norse
    import norse.torch as nt
    import torch

    torch.set_num_threads(args.threads)
    graph = nir.read(os.path.join(args.input, "graph.nir"))
    ref = np.load(os.path.join(args.input, "reference.npz"))
    steps = int(graph.metadata["time_steps"])
    g, neurons, (readout_src, gain) = rewrite(graph)
    names = sorted(neurons, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])

    def no_reset(*_):
        raise RuntimeError("every CubaLIF gets its own reset below")

    net = nt.from_nir(g, dt=1.0, reset_method=no_reset, ignore_warnings=True)
    rec = {}  # per neuron node: pre-reset v of this step, counts, margins, arithmetic deviations

    def attach(name):
        v_th, amount = (torch.from_numpy(a) for a in neurons[name])
        cell = net.get_submodule(name.replace(".", "_"))

        def reset(z, v, _reset, _th):  # z = [v > theta] = [v >= V_th]; subtract V_th - u_rest
            rec[name]["v"] = v
            return v - z * amount

        cell.lif.p = cell.lif.p._replace(reset_method=reset)

        def hook(module, inputs, output):  # inputs: (I, (synapse state, membrane state)) after step 1
            r, v = rec[name], rec[name]["v"]
            v_prev = inputs[1][1].v if len(inputs) > 1 else torch.zeros_like(v)
            r["counts"] += output[0]
            r["margin"] = torch.minimum(r["margin"], (v - v_th).abs())
            i_syn = output[1][0].v  # the synapse's output: I_prev + (I - I_prev) in float32, not always I
            r["deviations"] += np.array([int((i_syn != inputs[0]).sum()), int((v != v_prev + i_syn).sum()),
                                         int((v != v_prev + inputs[0]).sum())])
        cell.register_forward_hook(hook)

    for name in names:
        attach(name)
    ys = []
    net.get_submodule(readout_src.replace(".", "_")).register_forward_hook(lambda m, i, o: ys.append(o))

    images, n = ref["images"], len(ref["images"])
    counts, margins, logits, deviations = {s: [] for s in names}, {s: [] for s in names}, [], 0
    with torch.no_grad():
        for b in range(0, n, args.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[b:b + args.batch]))
            for s in names:
                shape = (len(x),) + neurons[s][0].shape
                rec[s] = {"counts": torch.zeros(shape), "margin": torch.full(shape, np.inf), "deviations": 0}
            state, ys[:] = None, []
            for _ in range(steps):  # the same image at every step
                _, state = net(x, state)
            logits.append(sum(gain * y.double().numpy() for y in ys))  # readout I: v += dt r y, t = 1..T
            for s in names:
                counts[s].append(rec[s]["counts"].numpy())
                margins[s].append(rec[s]["margin"].numpy())
                deviations += rec[s]["deviations"]
    logits = np.concatenate(logits)
    theirs = [np.concatenate(counts[s]) for s in names]
    margin = [np.concatenate(margins[s]).reshape(n, -1) for s in names]
    ours = [ref[f"counts{l}"] for l in range(1, len(names) + 1)]
    diff = [(o != t).reshape(n, -1) for o, t in zip(ours, theirs)]

    print(f"torch {torch.__version__}, norse {norse.__version__}, nir {nir.version}; {args.input}/graph.nir: "
          f"{len(names)} spiking layer(s), T = {steps}, {n} examples")
    for l, s in enumerate(names):
        print(f"layer {l + 1} ({s}, {diff[l].shape[1]} neurons, shape {ours[l].shape[1:]}): identical per-neuron "
              f"counts {1 - diff[l].mean():.6f} ({int(diff[l].sum())} of {diff[l].size} differ), max |difference| "
              f"{int(np.abs(ours[l] - theirs[l]).max())}; spikes: Norse {int(theirs[l].sum())}, "
              f"ours {int(ours[l].sum())}")
    differ = np.any([d.any(1) for d in diff], axis=0)
    print(f"samples with any difference: {int(differ.sum())} of {n}")
    labels, ours_pred, norse_pred = ref["labels"], np.argmax(ref["logits"], 1), np.argmax(logits, 1)
    print(f"accuracy: Norse {np.mean(norse_pred == labels):.4f}, ours {np.mean(ours_pred == labels):.4f}; "
          f"prediction agreement {np.mean(norse_pred == ours_pred):.4f}; max |logit difference| "
          f"{np.abs(logits - ref['logits']).max():.3g}")
    updates = n * steps * sum(d.shape[1] for d in diff)
    print(f"Norse's arithmetic vs float32 v + I, of {updates} neuron updates: synapse output != I in "
          f"{deviations[0]}, membrane v + (r I_syn - v)/2**100 != v + I_syn in {deviations[1]}, "
          f"v != v_prev + I in {deviations[2]}")
    smallest = np.min([m.min(1) for m in margin], axis=0)  # per sample, over every neuron, layer and step
    near = smallest <= 16 * float(np.spacing(neurons[names[0]][0].flat[0]))
    for i in np.flatnonzero(differ)[: args.explain]:  # why: a potential within rounding of V_th?
        own = min(m[i][d[i]].min(initial=np.inf) for m, d in zip(margin, diff))
        print(f"  sample {i}: differing neurons per layer {[int(d[i].sum()) for d in diff]}; smallest |v - V_th| "
              f"in Norse: {smallest[i]:.3g} in the sample, {own:.3g} of a differing neuron: "
              f"{'a rounding tie (then propagated)' if near[i] else 'NOT a rounding tie'}")
    print(f"closest calls: smallest |v - V_th| {smallest.min():.3g} (float32 spacing at V_th "
          f"{float(np.spacing(neurons[names[0]][0].flat[0])):.3g}); samples with a potential within 16 spacings "
          f"of V_th: {int(near.sum())}, of them with a difference {int((near & differ).sum())}")
    print(f"wall time (imports included) {time.time() - start:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="export and record our spikes (Keras environment)")
    p.add_argument("--model", default="fsnn_fmnist", help="an IF zoo preset (fsnn_fmnist) or digits_conv")
    p.add_argument("--examples", type=int, default=None, help="the first N test images (default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=5, help="digits_conv training")
    p.add_argument("--time-steps", type=int, default=10, help="digits_conv's T")
    p.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check", help="run the graph in Norse and compare (torch/norse environment)")
    c.add_argument("--in", dest="input", required=True)
    c.add_argument("--batch", type=int, default=250)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--explain", type=int, default=10, help="differing samples to explain")
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else check(args)


if __name__ == "__main__":
    main()
