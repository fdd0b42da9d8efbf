"""Training step time side by side with the authors' PyTorch code (pkuxmq/IDE-FSNN).

    python benchmarks/vs_authors.py --authors-repo /tmp/ide-fsnn --torch-python /tmp/torchvenv/bin/python

The procedure (their code is imported from a checkout, never copied here):

    git clone https://github.com/pkuxmq/IDE-FSNN /tmp/ide-fsnn       # or the `fetch` tool's mirror
    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy   # CPU build
    python benchmarks/vs_authors.py --authors-repo /tmp/ide-fsnn --torch-python /tmp/torchvenv/bin/python

Both codes run full training steps of the same model on the same real batches: the T-step
forward simulation, the implicit backward by Broyden (30 iterations at most; theirs stops at
an absolute residual of 2e-10 sqrt(size), ours at `solver_tol` relative to the gradient, the
worst sample of the batch) and an SGD update (momentum 0.9, coupled weight decay 5e-4).
Ours follows our zoo recipe's optimiser and schedule; theirs runs at the learning rate ours
has when the timed steps begin. (AlexNet-F's recipe warms up over 400 steps; at a full 0.05
on a few cycled batches of 32, the authors' model left the pretrained state within a few
steps, its loss rising to 20 and its solves to 30 iterations.) The losses of both sides are
printed, the first warm-up step's as a check that both simulate the same network. The
PyTorch side is a persistent worker process (--torch-python; the two exchange .npz files),
so the frameworks alternate: each round times `--steps` steps of ours in every mode, then
`--steps` of theirs, on a machine where nothing else runs; both use `--threads` threads.
Models:
  * f400: the fsnn_fmnist preset (F400, IF, T = 5), batch 128, Fashion-MNIST;
  * f64c5: the fsnn_mnist preset (F64C5, IF, T = 30), batch 128, MNIST;
  * alexnet_f: AlexNet-F (LIF 0.99, T = 30), batch 32, CIFAR-10. It has no trained preset:
    ours is seeded and first trained for `--pretrain-steps` steps (50 by default) on other
    real training batches, so that the batch norms' moving statistics have settled
    (momentum 0.9: 0.9^50 < 1%) as they are in any real training run. At step 0 they are
    (0, 1), and the stored-statistics Jacobian of the authors' backward (and of our
    `--bn-statistics released_code`) is then far more contractive than at any later step:
    3 instead of 13-15 Broyden iterations (docs/benchmarks.md).
The trained (or pretrained) weights and statistics are copied into the authors' model, so both
sides simulate the same network and need similar solver iteration counts (printed beside the
times: what one step costs depends on them).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

MODELS = {
    # name: (zoo entry, dataset, batch, the authors' model kind)
    "f400": ("fsnn_fmnist", "fashion_mnist", 128, "fc"),
    "f64c5": ("fsnn_mnist", "mnist", 128, "conv"),
    "alexnet_f": ("alexnet_f", "cifar10", 32, "multilayer"),
}
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4

from released_code_gradient import (  # noqa: E402
    add_authors_arguments, kernel_to_torch, load_feedback_and_readout, prepare_authors_code, readout_to_torch)


# ---------------------------------------------------------------- weights in PyTorch layout


def stage_tensors(stage):
    """(kernel, bias, batch norm) of a forward stage: Conv2D/Dense, then batch norm."""
    weighted = [l for l in stage.layers if hasattr(l, "kernel")][0]
    bn = [l for l in stage.layers if hasattr(l, "moving_mean")]
    return weighted, (bn[0] if bn else None)


def export(model, kind):
    """The block's weights as the authors' state_dict names expect them (numpy arrays)."""
    block = model.get_layer("fsnn")
    state = {}
    restriction = block.norm_restriction
    fb = np.asarray(block.feedback.kernel.numpy())
    matrix = fb.reshape(-1, fb.shape[-1]).astype("float64")
    u0 = np.asarray(restriction.u.numpy(), "float64")
    u = u0 @ matrix
    u /= np.linalg.norm(u)
    v = u0 if fb.ndim == 2 else u0.reshape(fb.shape[:3]).transpose(2, 0, 1).ravel()
    state["feedback"] = (kernel_to_torch(fb), float(restriction.alpha.numpy()), u.astype("float32"), v.astype("float32"))
    stages = []
    for stage in block.forward:
        weighted, bn = stage_tensors(stage)
        entry = {"kernel": kernel_to_torch(np.asarray(weighted.kernel.numpy())), "bias": np.asarray(weighted.bias.numpy())}
        if bn is not None:
            entry.update(gamma=np.asarray(bn.gamma.numpy()), beta=np.asarray(bn.beta.numpy()),
                         mean=np.asarray(bn.moving_mean.numpy()), var=np.asarray(bn.moving_variance.numpy()))
        stages.append(entry)
    hidden = None if kind == "fc" else tuple(int(d) for d in block._layer_shapes[-1])
    readout = model.get_layer("readout")
    flat = {"time_steps": np.array(block.time_steps), "threshold": np.array(float(block.neuron.threshold)),
            "leak": np.array(float(getattr(block.neuron, "leak", 1.0) or 1.0)),
            "hidden": np.array(hidden if hidden else (-1, -1, -1)),
            "readout_kernel": readout_to_torch(np.asarray(readout.kernel.numpy()), hidden),
            "readout_bias": np.asarray(readout.bias.numpy()),
            "feedback_kernel": state["feedback"][0], "alpha": np.array(state["feedback"][1], "float32"),
            "sn_u": state["feedback"][2], "sn_v": state["feedback"][3], "stages": np.array(len(stages))}
    for i, entry in enumerate(stages):
        flat.update({f"stage{i}_{k}": v for k, v in entry.items()})
    return flat


# ---------------------------------------------------------------- ours (Keras)


def bn_statistics_override(entry, bn_statistics):
    """{"bn_statistics": ...} for an architecture with batch norm in its block, else {}."""
    import inspect

    from keras_fsnn.training.trainer import ARCHITECTURES, get_recipe

    accepted = inspect.signature(ARCHITECTURES[get_recipe(entry).architecture]).parameters
    return {"bn_statistics": bn_statistics} if "bn_statistics" in accepted else {}


def keras_side(args):
    import keras_fsnn  # before keras: its TensorFlow CPU defaults (keras_fsnn/_environment.py)
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    from keras_fsnn.training import trainer
    from keras_fsnn.training.recipes import get_recipe

    workdir = tempfile.mkdtemp(prefix="vs_authors_")
    worker = subprocess.Popen([args.torch_python or sys.executable, os.path.abspath(__file__), "--worker",
                               "--authors-repo", args.authors_repo, "--threads", str(args.threads)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(**message):
        worker.stdin.write(json.dumps(message) + "\n")
        worker.stdin.flush()
        line = worker.stdout.readline()
        if not line:
            raise SystemExit("the PyTorch worker stopped; see its error above")
        return json.loads(line)

    print(f"keras {keras.__version__} ({keras.backend.backend()}), threads {args.threads}, "
          f"bn_statistics {args.bn_statistics!r}, solver_tol {args.solver_tol or 'the recipe'}", flush=True)
    ours, theirs, info, losses = {}, {}, {}, {}
    for name in args.models:
        entry, dataset, batch, kind = MODELS[name]
        images, labels = keras_fsnn.datasets.load_arrays(dataset, "train", data_dir=args.data_dir)
        x = [images[i * batch:(i + 1) * batch].astype("float32") / 255.0 for i in range(args.batches)]
        y = [labels[i * batch:(i + 1) * batch].astype("int64") for i in range(args.batches)]
        recipe = get_recipe(entry)
        trained = keras_fsnn.zoo.read_metadata(keras_fsnn.zoo.locate(entry)).get("status") == keras_fsnn.zoo.TRAINED
        models = {}
        for mode in args.modes:
            keras.utils.set_random_seed(0)
            overrides = bn_statistics_override(entry, args.bn_statistics)
            if args.solver_tol is not None:
                overrides["solver_tol"] = args.solver_tol
            model = trainer.build_model(entry, **overrides)
            if trained:
                keras_fsnn.zoo.load_weights(model, keras_fsnn.zoo.pretrained_weights_path(keras_fsnn.zoo.locate(entry)))
            trainer.compile_model(model, recipe, 1000, {"graph": False, "xla": True}[mode])
            models[mode] = model
        first = models[args.modes[0]]
        if not trained and args.pretrain_steps:
            pretrain(first, images, labels, batch, args)
            for model in models.values():
                model.set_weights(first.get_weights())
        state = export(first, kind)
        normalise = first.get_layer("normalise")
        state.update({f"x{i}": np.asarray(normalise(xi)).transpose(0, 3, 1, 2).astype("float32") for i, xi in enumerate(x)})
        state.update({f"y{i}": yi for i, yi in enumerate(y)})
        path = os.path.join(workdir, f"{name}.npz")
        learning_rate = float(keras.ops.convert_to_numpy(first.optimizer.learning_rate))
        np.savez(path, **state, kind=np.array(kind), batches=np.array(args.batches),
                 learning_rate=np.array(learning_rate))
        reply = ask(command="build", name=name, state=path)
        print(f"[{name}] learning rate (both): {learning_rate:.4g}", flush=True)
        info[name] = {"batch": batch, "time_steps": int(state["time_steps"]), "auto": trainer.auto_jit_compile(first),
                      "authors_parameters": reply["parameters"], "parameters": int(first.count_params())}
        warm_up = {mode: [model.train_on_batch(x[i], y[i], return_dict=True)["loss"] for i in range(2)]
                   for mode, model in models.items()}  # tracing / compilation, two steps
        warm_up["authors"] = ask(command="steps", name=name, steps=2)["losses"]
        print(f"[{name}] built and warmed up: ours {info[name]['parameters']:,} parameters, theirs "
              f"{reply['parameters']:,}; the two warm-up steps' losses (the same network on the same batches: "
              f"equal at the first) " + ", ".join(f"{side} {v[0]:.4f} {v[1]:.4f}" for side, v in warm_up.items()),
              flush=True)
        for r in range(args.rounds):
            for mode, model in models.items():
                block = model.get_layer("fsnn")
                times, iterations = [], []  # (iterations, relative residual at stop) per step
                for s in range(args.steps):
                    i = s % args.batches
                    start = time.perf_counter()
                    logs = model.train_on_batch(x[i], y[i], return_dict=True)
                    times.append(time.perf_counter() - start)
                    losses.setdefault((name, mode), []).append(float(logs["loss"]))
                    solve = block.diagnostics()
                    iterations.append((solve.get("backward_iterations"), solve.get("backward_residual")))
                ours.setdefault((name, mode), []).append((times, iterations))
            reply = ask(command="steps", name=name, steps=args.steps)
            theirs.setdefault(name, []).append((reply["seconds"], list(zip(reply["iterations"], reply["residuals"]))))
            losses.setdefault((name, "authors"), []).extend(reply["losses"])
            print(f"[{name}] round {r + 1}: " + ", ".join(
                f"ours {mode} {statistics.median(ours[(name, mode)][-1][0]):.4f} s{solves(ours[(name, mode)][-1][1])}"
                for mode in models) + f", theirs {statistics.median(reply['seconds']):.4f} s{solves(theirs[name][-1][1])}"
                + "; mean loss " + ", ".join(f"{side} {statistics.mean(losses[(name, side)][-args.steps:]):.4f}"
                                             for side in [*models, "authors"]), flush=True)
        del models
    worker.stdin.write(json.dumps({"command": "quit"}) + "\n")
    worker.stdin.close()
    worker.wait()
    report(args, ours, theirs, info)


def pretrain(model, images, labels, batch, args):
    """Train `model` for `args.pretrain_steps` steps on real batches that the timed steps do not use."""
    start = time.perf_counter()
    offset = args.batches * batch
    for s in range(args.pretrain_steps):
        first = offset + (s * batch) % (len(images) - offset - batch)
        model.train_on_batch(images[first:first + batch].astype("float32") / 255.0,
                             labels[first:first + batch].astype("int64"))
    print(f"pretrained {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s", flush=True)


def solves(pairs):
    """The bracket after a time: min-max Broyden iterations and relative residual at stop."""
    its = [i for i, _ in pairs if i is not None]
    res = [r for _, r in pairs if r is not None]
    if not its:
        return ""
    return f" ({min(its):.0f}-{max(its):.0f}; {min(res):.1e}-{max(res):.1e})" if res else f" ({min(its)}-{max(its)})"


def report(args, ours, theirs, info):
    print(f"\nMedian seconds per training step over {args.steps} steps per round, {args.rounds} rounds "
          f"(the frameworks alternating); in brackets, per step (min-max): Broyden iterations; the relative "
          f"residual at which the solve stopped (theirs: ||g|| / ||g_0|| of the whole batch, the largest of a "
          f"step's solves; ours: the worst sample's).\n")
    head = ["model", "batch, T", "authors' PyTorch"] + [f"ours, {m}" for m in args.modes] + \
        [f"ratio {m}" for m in args.modes] + ["auto picks"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    summary = {}
    for name in info:
        rounds = theirs[name]
        t = [statistics.median(s) for s, _ in rounds]
        cells = [name, f"{info[name]['batch']}, {info[name]['time_steps']}",
                 "-".join(f"{v:.4f}" for v in sorted(t)) + " s" + solves([p for _, ps in rounds for p in ps])]
        ratios = []
        for mode in args.modes:
            rs = ours[(name, mode)]
            o = [statistics.median(s) for s, _ in rs]
            cells.append("-".join(f"{v:.4f}" for v in sorted(o)) + " s" + solves([p for _, ps in rs for p in ps]))
            ratios.append(f"{statistics.median(o) / statistics.median(t):.2f}")
            summary[f"{name}_{mode}"] = o
        summary[f"{name}_authors"] = t
        print("| " + " | ".join(cells + ratios + ["xla" if info[name]["auto"] else "graph"]) + " |")
    print("\nratio = median of our round medians / median of theirs (below 1: ours is faster)")
    for name in info:  # the conservative reading where their rounds drift (their solves failing more as they train)
        fastest = min(statistics.median(s) for s, _ in theirs[name])
        print(f"{name}, against their fastest round ({fastest:.4f} s): " + ", ".join(
            f"{mode} {statistics.median(statistics.median(s) for s, _ in ours[(name, mode)]) / fastest:.2f}"
            for mode in args.modes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "round_medians": summary}, f, indent=1)


# ---------------------------------------------------------------- theirs (PyTorch worker)


def torch_worker(args):
    torch = prepare_authors_code(args.authors_repo, args.threads)
    import modules.snnide_module as snnide_module
    import modules.snnide_multilayer_module as multilayer_module

    solves = []
    for module in (snnide_module, multilayer_module):
        original = module.broyden

        def recording(*a, _original=original, **kw):
            result = _original(*a, **kw)
            solves.append((int(result["nstep"]), result["diff"] / max(result["trace"][0], 1e-30)))
            return result

        module.broyden = recording

    built = {}
    for line in sys.stdin:
        message = json.loads(line)
        if message["command"] == "quit":
            break
        if message["command"] == "build":
            built[message["name"]] = build_theirs(np.load(message["state"]), torch)
            model = built[message["name"]][0]
            reply = {"parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
        else:
            model, optimizer, batches = built[message["name"]]
            seconds, iterations, residuals, losses = [], [], [], []
            model.train()
            for s in range(message["steps"]):
                x, y = batches[s % len(batches)]
                del solves[:]
                start = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                seconds.append(time.perf_counter() - start)
                iterations.append(sum(n for n, _ in solves))
                residuals.append(max(r for _, r in solves))
                losses.append(loss.item())
            reply = {"seconds": seconds, "iterations": iterations, "residuals": residuals, "losses": losses}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def build_theirs(s, torch):
    from models.snn_ide_conv import SNNIDEConvNet
    from models.snn_ide_conv_multilayer import SNNIDEConvMultiLayerNet
    from models.snn_ide_fc import SNNIDEFCNet

    kind = str(s["kind"])
    leak = float(s["leak"])
    cfg = {"num_classes": 10, "threshold": 30, "time_step": int(s["time_steps"]), "vth": float(s["threshold"]),
           "dropout": 0.2, "leaky": None if leak >= 1.0 else leak}
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    torch.manual_seed(0)
    if kind == "fc":
        cfg.update(dim_in=s["stage0_kernel"].shape[1], dim_hidden=s["stage0_kernel"].shape[0])
        model = SNNIDEFCNet({"MODEL": cfg, "OPTIM": {"solver": "broy"}})
        stages, feedback = [(model.network_x.fc, model.network_x.bn)], model.network_s.fc
    elif kind == "conv":
        h, w, c = (int(d) for d in s["hidden"])
        k = s["stage0_kernel"].shape[-1]
        cfg.update(c_in=s["stage0_kernel"].shape[1], c_hidden=c, h_hidden=h, w_hidden=w, kernel_size_x=k,
                   stride_x=2, padding_x=(k - 1) // 2, pooling_x=False, kernel_size_s=s["feedback_kernel"].shape[-1])
        model = SNNIDEConvNet({"MODEL": cfg, "OPTIM": {"solver": "broy"}})
        stages, feedback = [(model.network_x.conv, model.network_x.bn)], model.network_s.conv
    else:  # AlexNet-F as cifar_alexnetf.py configures it
        cfg.update(c_in=3, c_hidden=96, kernel_size_x=3, stride_x=2, padding_x=1, pooling_x=False, c_s1=256, c_s2=384,
                   c_s3=384, c_s4=256, kernel_size_s=3, h_hidden=8, w_hidden=8)
        model = SNNIDEConvMultiLayerNet({"MODEL": cfg, "OPTIM": {"solver": "broy"}})
        stages = [(m.conv, m.bn) for m in (model.network_x, model.network_s1, model.network_s2, model.network_s3,
                                           model.network_s4)]
        feedback = model.network_s5.convT
    if len(stages) != int(s["stages"]):
        raise SystemExit(f"the authors' model has {len(stages)} stages, ours {int(s['stages'])}")
    with torch.no_grad():
        for i, (layer, bn) in enumerate(stages):
            if tuple(layer.weight.shape) != s[f"stage{i}_kernel"].shape:
                raise SystemExit(f"stage {i}: their {tuple(layer.weight.shape)} vs our {s[f'stage{i}_kernel'].shape}")
            layer.weight.copy_(t(s[f"stage{i}_kernel"]))
            layer.bias.copy_(t(s[f"stage{i}_bias"]))
            if bn is not None and f"stage{i}_gamma" in s:
                bn.weight.copy_(t(s[f"stage{i}_gamma"]))
                bn.bias.copy_(t(s[f"stage{i}_beta"]))
                bn.running_mean.copy_(t(s[f"stage{i}_mean"]))
                bn.running_var.copy_(t(s[f"stage{i}_var"]))
        if tuple(feedback.weight_w.shape) != s["feedback_kernel"].shape:
            raise SystemExit(f"feedback: their {tuple(feedback.weight_w.shape)} vs our {s['feedback_kernel'].shape}")
        load_feedback_and_readout(feedback, model.classifier, s, t)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(s["learning_rate"]), momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    batches = []
    for i in range(int(s["batches"])):
        x = t(s[f"x{i}"])
        batches.append((x.reshape(len(x), -1) if kind == "fc" else x, t(s[f"y{i}"])))
    return model, optimizer, batches


def main():
    from common import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_authors_arguments(parser)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per round and framework")
    parser.add_argument("--batches", type=int, default=4, help="distinct real training batches, cycled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow's inter-op pool (ours)")
    parser.add_argument("--bn-statistics", default="paper", choices=["paper", "released_code"],
                        help="ours, for models with batch norm in the block: 'released_code' computes what the "
                             "authors' code computes (docs/ide.md), the like-for-like comparison")
    parser.add_argument("--solver-tol", type=float, default=None,
                        help="ours: the adjoint solve's relative tolerance (default: the recipe's, 1e-5 for the worst "
                             "sample; theirs stops at an absolute 2e-10 sqrt(size) for the whole batch, so compare "
                             "the residuals each reaches)")
    parser.add_argument("--pretrain-steps", type=int, default=50,
                        help="models without a trained preset (alexnet_f): ours is trained this many steps (on other "
                             "batches) before the comparison, so that its batch-norm statistics have settled (0: compare "
                             "at initialisation)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch_worker(args)
    else:
        args.torch_python = args.torch_python or os.environ.get("TORCH_PYTHON")
        keras_side(args)


if __name__ == "__main__":
    main()
