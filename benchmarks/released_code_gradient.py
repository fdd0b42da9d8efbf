"""One training step's weight gradients: the authors' PyTorch IDE code vs keras_fsnn.

Copies a zoo preset's weights (fsnn_fmnist = F400, fsnn_mnist = F64C5) into the released
model of pkuxmq/IDE-FSNN (models/snn_ide_fc.py, models/snn_ide_conv.py, imported from the
folder given by --authors-repo; nothing of it is copied here), runs one training step on the
same batch of real test images in both (dropout 0, Broyden with the same iteration budget,
cross-entropy of the readout logits averaged over the batch, no optimizer update) and
compares, per tensor, the weight gradients of keras_fsnn with bn_statistics="released_code"
(and "paper", for contrast) against the authors': cosine and ||g_ours - g_theirs|| /
||g_theirs||. Also compared: the loss, the simulated rates (fraction identical), the
restricted feedback weight after the power iteration, and the batch-norm running statistics
after the step (PyTorch updates running_var with the unbiased batch variance, Keras with the
biased one; the table shows the raw difference and the one left after converting theirs).

Columns besides the plain comparison, to locate what remains:
  * released_code_tight: both sides with --tight-steps Broyden iterations (the solvers' own
    differences; the authors' solver stops once its absolute residual is below
    2e-10 sqrt(size), ours runs all iterations at solver_tol=0 and keeps each sample's best);
  * "authors fed our rates": the authors' step with their simulated rates replaced by ours
    (their simulation still runs, for its batch-norm updates): what differs in the backward
    alone, without the spike decisions of the forward simulation;
  * control: our own step with the input stage's bias shifted by --control-shift, which the
    training-mode batch norm cancels in real arithmetic: how much float32 rounding alone moves
    the spikes and the gradient (against our unshifted step, not the authors').
The spectral-norm vectors: --sn-vectors preset copies the preset's power-iteration vectors
(the two codes then differ by one half power iteration, so sigma differs at ~1e-5); svd sets
both to the exact leading singular vectors (the same restricted weight to float32).

The script runs in the Python that has keras_fsnn and re-invokes itself in a Python that has
torch (--torch-python; the two exchange .npz files in a temporary folder):

    nice -n 10 python3 benchmarks/released_code_gradient.py --authors-repo /tmp/ide-fsnn \
        --torch-python /path/to/venv-with-torch/bin/python

One Python with both works too (then --torch-python defaults to it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = {
    # name: (dataset, kind, hidden shape (H, W, C) or units)
    "fsnn_fmnist": ("fashion_mnist", "fc"),
    "fsnn_mnist": ("mnist", "conv"),
}
TENSORS = ["input_kernel", "input_bias", "bn_gamma", "bn_beta", "feedback_kernel", "alpha", "readout_kernel",
           "readout_bias"]
MOMENTUM = 0.9  # Keras momentum of the presets' batch norms (PyTorch's 0.1)


# ---------------------------------------------------------------- layouts (Keras <-> PyTorch)


def kernel_to_torch(kernel):
    """Dense (in, out) -> (out, in); Conv2D (kh, kw, in, out) -> (out, in, kh, kw)."""
    return kernel.T if kernel.ndim == 2 else kernel.transpose(3, 2, 0, 1)


def kernel_from_torch(weight):
    return weight.T if weight.ndim == 2 else weight.transpose(2, 3, 1, 0)


def readout_to_torch(kernel, hidden):
    """Keras flattens (H, W, C) rates, PyTorch (C, H, W): reorder the readout's rows."""
    if hidden is None:
        return kernel.T
    h, w, c = hidden
    return kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)


def readout_from_torch(weight, hidden):
    if hidden is None:
        return weight.T
    h, w, c = hidden
    return weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def normalise(v):
    return v / (np.linalg.norm(v) + 1e-12)


# ---------------------------------------------------------------- keras_fsnn side


def keras_side(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import keras_fsnn

    torch_python = args.torch_python or os.environ.get("TORCH_PYTHON") or sys.executable
    report = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "torch_python": torch_python,
              "sn_vectors": args.sn_vectors, "alpha": args.alpha,
              "keras": keras.__version__, "tensorflow": tf.__version__, "models": {}}
    workdir = tempfile.mkdtemp(prefix="released_code_gradient_")
    for name in args.models:
        dataset, kind = MODELS[name]
        images, labels = keras_fsnn.datasets.load_arrays(dataset, "test", data_dir=args.data_dir)
        x = (images[:args.batch].astype("float32") / 255.0)
        y = labels[:args.batch].astype("int64")

        def build(mode, steps):
            model = keras_fsnn.zoo.load(name, bn_statistics=mode, dropout=0.0, solver="broyden", solver_steps=steps,
                                        solver_tol=0.0)
            restriction = model.get_layer("fsnn").norm_restriction
            if args.sn_vectors == "svd":  # exact leading singular vectors: the power iteration keeps them
                kernel = np.asarray(model.get_layer("fsnn").feedback.kernel.numpy(), "float64")
                left, _, right = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), full_matrices=False)
                restriction.u.assign(left[:, 0].astype("float32"))
                restriction.v.assign(right[0].astype("float32"))
            if args.alpha is not None:
                restriction.alpha.assign(np.float32(args.alpha))
            return model

        model = build("released_code", args.steps)
        state = export_state(model, x, y, kind)
        state_path = os.path.join(workdir, f"{name}_state.npz")
        np.savez(state_path, **state)

        runs = {}
        for label, mode, steps in (("released_code", "released_code", args.steps), ("paper", "paper", args.steps),
                                   ("released_code_tight", "released_code", args.tight_steps),
                                   ("released_code_rounding", "released_code", args.steps if args.control else 0)):
            if steps <= 0:
                continue
            start = time.perf_counter()
            model = build(mode, steps)
            if label == "released_code_rounding":
                # Control: shift the input stage's bias by a constant. Batch norm in training mode
                # subtracts the batch mean, so the stage's output is mathematically unchanged;
                # only float32 rounding differs. Compared with our unshifted step, not the authors'.
                bias = [l for l in model.get_layer("fsnn").forward[0].layers if hasattr(l, "kernel")][0].bias
                bias.assign(bias + np.float32(args.control_shift))
            runs[label] = our_step(model, x, y, kind, state)
            runs[label]["seconds"] = time.perf_counter() - start
            print(f"[{name}] ours {label}: loss {runs[label]['loss']:.6f}, {runs[label]['seconds']:.1f} s, "
                  f"backward residual {runs[label]['diagnostics'].get('backward_residual')}", flush=True)

        theirs_path = os.path.join(workdir, f"{name}_theirs.npz")
        rates = runs["released_code"]["rates"]
        np.savez(os.path.join(workdir, f"{name}_our_rates.npz"),
                 rates=rates if kind == "fc" else rates.transpose(0, 3, 1, 2))
        specs = [f"plain:{args.steps}"] + ([f"plain:{args.tight_steps}"] if args.tight_steps > 0 else [])
        specs.append(f"our_rates:{args.steps}")
        command = [torch_python, os.path.abspath(__file__), "--worker", "--authors-repo", args.authors_repo,
                   "--state", state_path, "--out", theirs_path, "--threads", str(args.threads),
                   "--rates-from", os.path.join(workdir, f"{name}_our_rates.npz"), "--runs", *specs]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"the PyTorch worker failed ({torch_python}); see above")
        print(done.stdout.strip(), flush=True)
        print(f"[{name}] authors' code: {time.perf_counter() - start:.1f} s", flush=True)
        theirs = unpack(np.load(theirs_path), specs)

        report["models"][name] = compare(name, kind, state, runs, theirs, args)
    report["workdir"] = workdir
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"json: {args.json}")


def export_state(model, x, y, kind):
    """The preset's weights in PyTorch layout, the normalised batch and the labels."""
    block = model.get_layer("fsnn")
    stage = block.forward[0]
    dense_or_conv = [l for l in stage.layers if hasattr(l, "kernel")][0]
    bn = stage.layers[-1]
    restriction = block.norm_restriction
    readout = model.get_layer("readout")
    hidden = None if kind == "fc" else tuple(int(d) for d in block._layer_shapes[0])
    fb = np.asarray(block.feedback.kernel.numpy())
    u0 = np.asarray(restriction.u.numpy(), "float64")
    # Ours (M = kernel as (rows, out)): v1 = n(u0 M), u1 = n(M v1), sigma = u1^T M v1.
    # Theirs (W = (out, rows')): v1' = n(W^T u0'), u1' = n(W v1'), sigma' = u1'^T W v1'.
    # With u0' = n(u0 M) (= our v1) their v1' is our u1, and their sigma is ||W u1||
    # against our v1^T W u1: equal for converged vectors (see the restricted-weight row).
    matrix = fb.reshape(-1, fb.shape[-1]).astype("float64")
    u_theirs = normalise(u0 @ matrix)
    v_theirs = u0 if fb.ndim == 2 else u0.reshape(fb.shape[:3]).transpose(2, 0, 1).ravel()
    x_norm = np.asarray(model.get_layer("normalise")(x))
    if kind == "fc":
        x_norm = x_norm.reshape(len(x), -1)
    else:
        x_norm = x_norm.transpose(0, 3, 1, 2)
    return {
        "kind": np.array(kind), "time_steps": np.array(block.time_steps),
        "threshold": np.array(float(block.neuron.threshold)),
        "hidden": np.array(hidden if hidden is not None else (-1, -1, -1)),
        "units": np.array(int(block._layer_shapes[0][-1])),
        "x": x_norm.astype("float32"), "y": y,
        "input_kernel": kernel_to_torch(np.asarray(dense_or_conv.kernel.numpy())),
        "input_bias": np.asarray(dense_or_conv.bias.numpy()),
        "bn_gamma": np.asarray(bn.gamma.numpy()), "bn_beta": np.asarray(bn.beta.numpy()),
        "bn_mean": np.asarray(bn.moving_mean.numpy()), "bn_var": np.asarray(bn.moving_variance.numpy()),
        "feedback_kernel": kernel_to_torch(fb), "alpha": np.array(float(restriction.alpha.numpy()), "float32"),
        "sn_u": u_theirs.astype("float32"), "sn_v": v_theirs.astype("float32"),
        "readout_kernel": readout_to_torch(np.asarray(readout.kernel.numpy()), hidden),
        "readout_bias": np.asarray(readout.bias.numpy()),
    }


def our_step(model, x, y, kind, state):
    import keras
    import tensorflow as tf

    block = model.get_layer("fsnn")
    probe = keras.Model(model.inputs, [model.outputs[0], block.output])
    with tf.GradientTape() as tape:
        logits, rates = probe([x], training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    names = [v.path for v in model.trainable_variables]
    assert len(grads) == len(TENSORS), names
    out = {"grads": {t: (np.zeros(v.shape, "float32") if g is None else np.asarray(g))
                     for t, g, v in zip(TENSORS, grads, model.trainable_variables)},
           "variables": dict(zip(TENSORS, names)), "loss": float(loss), "rates": np.asarray(rates),
           "logits": np.asarray(logits), "diagnostics": block.diagnostics()}
    bn = block.forward[0].layers[-1]
    out["bn_mean"] = np.asarray(bn.moving_mean.numpy())
    out["bn_var"] = np.asarray(bn.moving_variance.numpy())
    restriction = block.norm_restriction
    fb = np.asarray(block.feedback.kernel.numpy(), "float64")
    matrix = fb.reshape(-1, fb.shape[-1])
    u, v = np.asarray(restriction.u.numpy(), "float64"), np.asarray(restriction.v.numpy(), "float64")
    sigma = float(u @ matrix @ v)
    alpha = float(np.clip(restriction.alpha.numpy(), -restriction.bound, restriction.bound))
    out["sigma"] = sigma
    out["restricted"] = (fb * alpha / sigma).astype("float32")
    return out


# ---------------------------------------------------------------- the authors' code (PyTorch)


def load_feedback_and_readout(feedback, classifier, state, tensor):
    """Our feedback (kernel, spectral-norm scale alpha, power-iteration vectors u, v) and
    readout, from `state` (numpy arrays in their layout) into the authors' modules (in a
    torch.no_grad() block); `tensor` makes a torch tensor of an array."""
    feedback.weight_w.copy_(tensor(state["feedback_kernel"]))
    feedback.weight_g.fill_(float(state["alpha"]))
    feedback.weight_u.copy_(tensor(state["sn_u"]))
    feedback.weight_v.copy_(tensor(state["sn_v"]))
    classifier.weight.copy_(tensor(state["readout_kernel"]))
    classifier.bias.copy_(tensor(state["readout_bias"]))


def prepare_authors_code(authors_repo, threads):
    """Import torch with `threads` threads and put the authors' checkout on sys.path; returns
    torch. modules/broyden.py imports scipy.optimize.root and termcolor.colored, which the
    training step never calls; stand-ins let it import where they are not installed."""
    import types

    import torch

    torch.set_num_threads(threads)
    repo = os.path.abspath(authors_repo)
    if not os.path.isfile(os.path.join(repo, "modules", "snnide_module.py")):
        raise SystemExit(f"--authors-repo {repo}: no modules/snnide_module.py (a checkout of pkuxmq/IDE-FSNN?)")
    sys.path.insert(0, repo)
    for missing, attribute in (("scipy.optimize", "root"), ("termcolor", "colored")):
        try:
            __import__(missing)
        except ImportError:
            parts = missing.split(".")
            for i in range(1, len(parts) + 1):
                module = sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
            setattr(module, attribute, lambda *a, **k: None)
            if len(parts) > 1:
                setattr(sys.modules[parts[0]], parts[1], module)
    return torch


def torch_side(args):
    torch = prepare_authors_code(args.authors_repo, args.threads)
    import modules.snnide_module as snnide_module
    from models.snn_ide_conv import SNNIDEConvNet
    from models.snn_ide_fc import SNNIDEFCNet

    s = dict(np.load(args.state))
    kind = str(s["kind"])
    hidden = None if kind == "fc" else tuple(int(d) for d in s["hidden"])
    results = {}
    for spec in args.runs:
        kind_of_run, steps = spec.split(":")
        steps = int(steps)
        model_cfg = {"num_classes": 10, "threshold": steps, "time_step": int(s["time_steps"]),
                     "vth": float(s["threshold"]), "dropout": 0.0, "leaky": None}
        torch.manual_seed(0)
        if kind == "fc":
            model_cfg.update(dim_in=s["input_kernel"].shape[1], dim_hidden=int(s["units"]))
            model = SNNIDEFCNet({"MODEL": model_cfg, "OPTIM": {"solver": "broy"}})
            layer_x, layer_s, ide = model.network_x.fc, model.network_s.fc, model.snn_ide_fc
        else:
            h, w, c = hidden
            k = s["input_kernel"].shape[-1]
            model_cfg.update(c_in=s["input_kernel"].shape[1], c_hidden=c, h_hidden=h, w_hidden=w, kernel_size_x=k,
                             stride_x=2, padding_x=(k - 1) // 2, pooling_x=False,
                             kernel_size_s=s["feedback_kernel"].shape[-1])
            model = SNNIDEConvNet({"MODEL": model_cfg, "OPTIM": {"solver": "broy"}})
            layer_x, layer_s, ide = model.network_x.conv, model.network_s.conv, model.snn_ide_conv
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
        with torch.no_grad():
            layer_x.weight.copy_(t(s["input_kernel"]))
            layer_x.bias.copy_(t(s["input_bias"]))
            bn = model.network_x.bn
            bn.weight.copy_(t(s["bn_gamma"]))
            bn.bias.copy_(t(s["bn_beta"]))
            bn.running_mean.copy_(t(s["bn_mean"]))
            bn.running_var.copy_(t(s["bn_var"]))
            load_feedback_and_readout(layer_s, model.classifier, s, t)

        solves = []
        original = snnide_module.broyden

        def recording_broyden(*a, **kw):
            info = original(*a, **kw)
            solves.append({"nstep": int(info["nstep"]), "lowest_step": int(info["lowest_step"]),
                           "residual": float(info["diff"]), "initial": float(info["trace"][0]),
                           "eps": float(info["eps"])})
            return info

        snnide_module.broyden = recording_broyden
        if kind_of_run == "our_rates":
            # the authors' step with the simulated rates replaced by ours: their simulation
            # still runs (and updates the batch norm as usual); only its returned rates change
            injected = torch.from_numpy(np.load(args.rates_from)["rates"])
            simulate = model.snn_func.snn_forward
            model.snn_func.snn_forward = lambda *a, **k: (simulate(*a, **k), injected)[1]
        captured = {}
        hook = ide.register_forward_hook(lambda module, inputs, output: captured.update(rates=output.detach()))
        model.train()
        x = torch.from_numpy(s["x"])
        target = torch.from_numpy(s["y"])
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        hook.remove()
        snnide_module.broyden = original

        rates = captured["rates"].numpy()
        if kind == "conv":
            rates = rates.transpose(0, 2, 3, 1)
        grads = {
            "input_kernel": kernel_from_torch(layer_x.weight.grad.numpy()),
            "input_bias": layer_x.bias.grad.numpy(),
            "bn_gamma": bn.weight.grad.numpy(), "bn_beta": bn.bias.grad.numpy(),
            "feedback_kernel": kernel_from_torch(layer_s.weight_w.grad.numpy()),
            "alpha": np.asarray(layer_s.weight_g.grad.numpy() if layer_s.weight_g.grad is not None else 0.0),
            "readout_kernel": readout_from_torch(model.classifier.weight.grad.numpy(), hidden),
            "readout_bias": model.classifier.bias.grad.numpy(),
        }
        with torch.no_grad():
            w = layer_s.weight_w
            w_mat = w.reshape(w.shape[0], -1)
            sigma = float(torch.dot(layer_s.weight_u, torch.mv(w_mat, layer_s.weight_v)))
        prefix = spec + "_"
        results.update({prefix + "grad_" + k: np.asarray(v, "float32") for k, v in grads.items()})
        results.update({prefix + "loss": np.array(float(loss)), prefix + "rates": rates,
                        prefix + "logits": logits.detach().numpy(),
                        prefix + "bn_mean": bn.running_mean.numpy().copy(), prefix + "bn_var": bn.running_var.numpy().copy(),
                        prefix + "restricted": kernel_from_torch(layer_s.weight.detach().numpy()),
                        prefix + "sigma": np.array(sigma),
                        prefix + "solves": np.array(json.dumps(solves))})
        print(f"  authors' code, {spec}: loss {float(loss):.6f}, solves {solves}", flush=True)
    results["torch"] = np.array(torch.__version__)
    np.savez(args.out, **results)


def unpack(npz, specs):
    out = {"torch": str(npz["torch"])}
    for spec in specs:
        p = spec + "_"
        out[spec] = {"grads": {t: npz[p + "grad_" + t] for t in TENSORS}, "loss": float(npz[p + "loss"]),
                      "rates": npz[p + "rates"], "logits": npz[p + "logits"], "bn_mean": npz[p + "bn_mean"],
                      "bn_var": npz[p + "bn_var"], "restricted": npz[p + "restricted"], "sigma": float(npz[p + "sigma"]),
                      "solves": json.loads(str(npz[p + "solves"]))}
    return out


# ---------------------------------------------------------------- comparison


def agreement(ours, theirs):
    a, b = np.asarray(ours, "float64").ravel(), np.asarray(theirs, "float64").ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return {"cosine": None, "relative": 0.0, "note": "both zero", "norm_theirs": 0.0}
    cosine = float(a @ b / (na * nb)) if na and nb else None
    relative = float(np.linalg.norm(a - b) / nb) if nb else float("inf")
    return {"cosine": cosine, "relative": relative, "norm_theirs": float(nb), "norm_ours": float(na)}


def bn_reference(state, kind):
    """The batch mean and (biased) variance per channel of the input stage's output
    (kernel x + bias, before batch norm), in float64."""
    x = state["x"].astype("float64")
    kernel = state["input_kernel"].astype("float64")
    if kind == "fc":
        pre = x @ kernel.T + state["input_bias"]
        axes = (0,)
    else:
        out_c, in_c, k, _ = kernel.shape
        pad = (k - 1) // 2
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        h = (x.shape[2] + 2 * pad - k) // 2 + 1
        pre = np.zeros((x.shape[0], out_c, h, h))
        for i in range(k):
            for j in range(k):
                patch = xp[:, :, i:i + 2 * h - 1:2, j:j + 2 * h - 1:2]  # (B, in, h, h)
                pre += np.einsum("bchw,oc->bohw", patch, kernel[:, :, i, j])
        pre += state["input_bias"][None, :, None, None]
        axes = (0, 2, 3)
    mean, var = pre.mean(axis=axes), pre.var(axis=axes)
    n = pre.size // pre.shape[1]
    var0 = state["bn_var"].astype("float64")
    return {"mean": mean, "var": var,
            # our biased-variance update expressed as PyTorch's (for the control row)
            "torch_var_of": lambda ours_var: ours_var + (1 - MOMENTUM ** 2) * var / (n - 1)}


def compare(name, kind, state, runs, theirs, args):
    n = len(state["y"]) * (1 if kind == "fc" else int(np.prod(state["hidden"][:2])))
    mean0, var0 = state["bn_mean"].astype("float64"), state["bn_var"].astype("float64")
    out = {"kind": kind, "batch": int(len(state["y"])), "time_steps": int(state["time_steps"]),
           "steps": args.steps, "tight_steps": args.tight_steps, "bn_values_per_channel": n, "runs": {}}
    ref = theirs[f"plain:{args.steps}"]
    pairs = [("released_code", "released_code", f"plain:{args.steps}"), ("paper", "paper", f"plain:{args.steps}")]
    if args.tight_steps > 0:
        pairs.append(("released_code_tight", "released_code_tight", f"plain:{args.tight_steps}"))
    pairs.append(("released_code vs authors fed our rates", "released_code", f"our_rates:{args.steps}"))
    if "released_code_rounding" in runs:
        pairs.append(("control: ours bias-shifted vs ours", "released_code_rounding", None))
    reference = bn_reference(state, kind)
    out["bn_reference"] = {}
    for label, run, spec in pairs:
        if run not in runs:
            continue
        ours = runs[run]
        if spec is None:  # the control: against our own unshifted step, as if it were theirs
            base = runs["released_code"]
            th = {**base, "bn_var": reference["torch_var_of"](base["bn_var"]), "solves": []}
        else:
            th = theirs[spec]
        row = {"against": spec or "ours (released_code)",
               "tensors": {t: agreement(ours["grads"][t], th["grads"][t]) for t in TENSORS}}
        all_ours = np.concatenate([ours["grads"][t].ravel() for t in TENSORS])
        all_theirs = np.concatenate([th["grads"][t].ravel() for t in TENSORS])
        row["tensors"]["all"] = agreement(all_ours, all_theirs)
        row["loss_ours"], row["loss_theirs"] = ours["loss"], th["loss"]
        row["logits"] = agreement(ours["logits"], th["logits"])
        row["rates_identical"] = float(np.mean(ours["rates"] == th["rates"]))
        row["rates_max_abs_diff"] = float(np.max(np.abs(ours["rates"] - th["rates"])))
        row["restricted_feedback"] = agreement(ours["restricted"], th["restricted"])
        row["sigma_ours"], row["sigma_theirs"] = ours["sigma"], th["sigma"]
        # running statistics: ours vs theirs; theirs' variance converted to the biased one
        # (their two updates: v = 0.81 v0 + 0.19 * unbiased; unbiased = biased * n / (n - 1))
        c = MOMENTUM ** 2
        unbiased = (th["bn_var"].astype("float64") - c * var0) / (1 - c)
        theirs_biased = c * var0 + (1 - c) * unbiased * (n - 1) / n
        row["bn_mean"] = agreement(ours["bn_mean"], th["bn_mean"])
        row["bn_var_raw"] = agreement(ours["bn_var"], th["bn_var"])
        row["bn_var_converted"] = agreement(ours["bn_var"], theirs_biased)
        row["bn_var_raw_max_ratio"] = float(np.max(np.abs(th["bn_var"] / ours["bn_var"] - 1)))
        row["diagnostics_ours"] = ours["diagnostics"]
        row["solves_theirs"] = th["solves"]
        row["seconds_ours"] = ours["seconds"]
        out["runs"][label] = row
        if run in ("released_code", "paper"):
            # against a float64 evaluation of the input stage's batch statistics
            c = MOMENTUM ** 2 if run == "released_code" else MOMENTUM
            out["bn_reference"][run] = {
                "ours_mean": agreement(ours["bn_mean"], c * mean0 + (1 - c) * reference["mean"]),
                "ours_var": agreement(ours["bn_var"], c * var0 + (1 - c) * reference["var"])}
            if run == "released_code":
                out["bn_reference"]["authors"] = {
                    "mean": agreement(th["bn_mean"], c * mean0 + (1 - c) * reference["mean"]),
                    "var": agreement(th["bn_var"], c * var0 + (1 - c) * reference["var"] * n / (n - 1))}
    # each side's 30-iteration gradient against its own tight solve
    if args.tight_steps > 0 and "released_code_tight" in runs:
        out["own_tight"] = {
            "ours": {t: agreement(runs["released_code"]["grads"][t], runs["released_code_tight"]["grads"][t])
                     for t in TENSORS},
            "theirs": {t: agreement(ref["grads"][t], theirs[f"plain:{args.tight_steps}"]["grads"][t]) for t in TENSORS},
        }
    out["torch"] = theirs["torch"]
    return out


def fmt(a, key):
    value = a.get(key)
    if value is None:
        return a.get("note", "-")
    if key == "cosine":
        return f"{value:.8f}"
    return f"{value:.2e}"


def print_report(report):
    print()
    print(f"command: {report['command']}")
    for name, m in report["models"].items():
        runs = m["runs"]
        print(f"\n## {name} (spectral-norm vectors: {report['sn_vectors']}, alpha: "
              f"{'preset' if report['alpha'] is None else report['alpha']}; {m['kind']}, T = {m['time_steps']}, batch {m['batch']}, Broyden {m['steps']}, "
              f"tight {m['tight_steps']})\n")
        labels = list(runs)
        header = "| tensor | ||g_theirs|| | " + " | ".join(f"{l}: cosine | {l}: rel. diff" for l in labels) + " |"
        print(header)
        print("|" + " --- |" * (2 + 2 * len(labels)))
        for t in TENSORS + ["all"]:
            cells = [f"{runs[labels[0]]['tensors'][t]['norm_theirs']:.3e}"]
            for l in labels:
                a = runs[l]["tensors"][t]
                cells += [fmt(a, "cosine"), fmt(a, "relative")]
            print(f"| {t} | " + " | ".join(cells) + " |")
        print()
        print("| quantity | " + " | ".join(labels) + " |")
        print("|" + " --- |" * (1 + len(labels)))
        rows = [
            ("loss ours / theirs", lambda r: f"{r['loss_ours']:.7f} / {r['loss_theirs']:.7f}"),
            ("logits rel. diff", lambda r: fmt(r["logits"], "relative")),
            ("rates identical", lambda r: f"{100 * r['rates_identical']:.4f}%"),
            ("rates max |diff|", lambda r: f"{r['rates_max_abs_diff']:.3g}"),
            ("restricted feedback rel. diff", lambda r: fmt(r["restricted_feedback"], "relative")),
            ("sigma ours / theirs", lambda r: f"{r['sigma_ours']:.7f} / {r['sigma_theirs']:.7f}"),
            ("BN running mean rel. diff", lambda r: fmt(r["bn_mean"], "relative")),
            ("BN running var rel. diff (raw)", lambda r: fmt(r["bn_var_raw"], "relative")),
            ("BN running var max |theirs/ours - 1| (raw)", lambda r: f"{r['bn_var_raw_max_ratio']:.2e}"),
            ("BN running var rel. diff (theirs converted to biased)", lambda r: fmt(r["bn_var_converted"], "relative")),
            ("backward residual ours (rel., max over samples) / iterations",
             lambda r: f"{r['diagnostics_ours'].get('backward_residual', float('nan')):.2e} / "
                       f"{r['diagnostics_ours'].get('backward_iterations')}"),
            ("backward residual theirs (abs., batch norm / initial) / steps",
             lambda r: "; ".join(f"{s['residual']:.2e} / {s['initial']:.2e}, {s['nstep']} (lowest {s['lowest_step']})"
                                 for s in r["solves_theirs"])),
        ]
        for title, cell in rows:
            print(f"| {title} | " + " | ".join(cell(runs[l]) for l in labels) + " |")
        ref = m["bn_reference"]
        print("\nRunning statistics after the step against a float64 evaluation of the batch statistics "
              "(rel. diff; each side's own update rule):")
        print(f"ours released_code: mean {fmt(ref['released_code']['ours_mean'], 'relative')}, "
              f"var {fmt(ref['released_code']['ours_var'], 'relative')}; authors: mean "
              f"{fmt(ref['authors']['mean'], 'relative')}, var {fmt(ref['authors']['var'], 'relative')}; "
              f"ours paper (one update): mean {fmt(ref['paper']['ours_mean'], 'relative')}, "
              f"var {fmt(ref['paper']['ours_var'], 'relative')}")
        print(f"\nBN values per channel n = {m['bn_values_per_channel']}: unbiased/biased = n/(n-1) = "
              f"{m['bn_values_per_channel'] / (m['bn_values_per_channel'] - 1):.6f}")
        if "own_tight" in m:
            print("\nEach side's gradient with the short solve against its own tight solve (rel. diff):\n")
            print("| tensor | ours | theirs |")
            print("| --- | --- | --- |")
            for t in TENSORS:
                print(f"| {t} | {fmt(m['own_tight']['ours'][t], 'relative')} | "
                      f"{fmt(m['own_tight']['theirs'][t], 'relative')} |")


# ---------------------------------------------------------------- entry point


def add_authors_arguments(parser):
    """--authors-repo and --torch-python, the flags of every side-by-side with the authors' code."""
    parser.add_argument("--authors-repo", required=True, help="a checkout of pkuxmq/IDE-FSNN (imported, not copied)")
    parser.add_argument("--torch-python", default=None,
                        help="a Python with torch 2.13 for the authors' code (default: $TORCH_PYTHON, else this one)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_authors_arguments(parser)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--data-dir", default="/work/shared/datasets")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="Broyden iterations of the compared step (paper: 30)")
    parser.add_argument("--tight-steps", type=int, default=200,
                        help="Broyden iterations of the tight solve on both sides (0: skip)")
    parser.add_argument("--sn-vectors", choices=["preset", "svd"], default="preset",
                        help="the spectral-norm power-iteration vectors: the preset's (one power iteration from "
                             "them gives slightly different sigmas in the two codes, see export_state) or the "
                             "exact leading singular vectors of the feedback kernel (the same restricted weight)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="set the spectral-norm scale alpha in both (the presets' is just above the clip "
                             "bound 1, where its gradient is 0 in both codes; e.g. 0.9 exercises it)")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the rounding control (our step with the input stage's bias shifted by "
                             "--control-shift, which batch norm cancels exactly in real arithmetic)")
    parser.add_argument("--control-shift", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    # the PyTorch worker's arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--runs", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--rates-from", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch_side(args)
    else:
        keras_side(args)


if __name__ == "__main__":
    main()
