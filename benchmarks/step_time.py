"""Training step time and throughput: IDE (Broyden, fixed point) and BPTT, eager / graph /
XLA, where the time goes, and the forward simulation's FLOP/s against the machine's peak.

    python benchmarks/step_time.py                       # all models and modes (~10 min on 2 cores)
    python benchmarks/step_time.py --models f400 --repeats 20
    python benchmarks/step_time.py --backends tensorflow jax --models f400 conv   # backend column + ratio
    python benchmarks/step_time.py --models f400 mpis --time-steps 30            # MPIS vs IDE F400
    python benchmarks/step_time.py --models f400 alexnet_f --solvers broyden gmres --modes graph xla --no-bptt

Everything is measured in one process, side by side (machines here are noisy; compare
the ratios). Models:
  * f400: the paper's Fashion-MNIST FSNN, batch 128, T = 5 (the authors' PyTorch code:
    0.024 s per training step on this kind of machine; target 0.012 s);
  * alexnet_f: the paper's AlexNet-F (CIFAR-10), batch 32, T = 30 (PyTorch: 3.55 s; target
    1.77 s);
  * conv: the reduced AlexNet-F-like FSNN of memory_vs_T, batch 16, T = 30 (all gradient
    modes and execution modes);
  * mpis: the two-stream Fashion-MNIST MPIS network of memory_vs_T, batch 128, T = 30 (IDE
    and one-step gradient; an epoch is 469 such steps).
Columns: median seconds per `train_on_batch` step and images/s; "simulation" is the
median of the compiled no-gradient T-step simulation alone, "rest" = step - simulation
(the differentiable f pass, the adjoint solve or BPTT's backward, the optimiser); FLOP/s
counts the dense multiply-adds the simulation performs (2 per MAC), against the peak of
a float32 matmul measured in the same run. With `--backends tensorflow jax` the script runs
itself once per backend (a fresh process each, one after the other in this run) and adds a
table of the XLA steps of both backends with the ratio JAX / TensorFlow. `--solvers` chooses
the adjoint solvers of the IDE rows (default: Broyden, the paper's), `--modes` the execution
modes, `--no-bptt` leaves the BPTT rows out. The last lines compare each model's fastest IDE
row with the authors' PyTorch time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_fsnn  # noqa: E402
from keras_fsnn.energy import _ones_kernel_apply  # noqa: E402

sys.path.insert(0, HERE)
from common import compiled, median_seconds  # noqa: E402

PYTORCH_SECONDS = {"f400": 0.024, "alexnet_f": 3.55}


def model_for(name, gradient, solver, time_steps):
    kwargs = dict(gradient=gradient, time_steps=time_steps)
    if gradient == "ide":
        kwargs["solver"] = solver
    if name == "mpis":
        return keras_fsnn.models.mpis_network((28, 28, 1), 10, (16, 32, 48), (1, 2, 1), num_streams=2, neuron="lif",
                                              leak=0.95, dropout=0.2, **kwargs), 128, (28, 28, 1)
    if name == "f400":
        return keras_fsnn.models.fsnn_fmnist(**kwargs), 128, (28, 28, 1)
    if name == "alexnet_f":
        return keras_fsnn.models.alexnet_f(**kwargs), 32, (32, 32, 3)
    sys.path.insert(0, HERE)
    from memory_vs_T import build

    # the conv model of memory_vs_T names its IDE solvers by gradient key
    key = {"broyden": "ide", "fixed_point": "ide_fp", "gmres": "ide_gmres"}[solver] if gradient == "ide" else gradient
    model, batch, shape = build("conv", time_steps, key)
    return model, batch, shape


def simulation_flops(block, x):
    """Dense FLOPs of one T-step simulation of `block` on `x` (2 per multiply-add)."""
    macs = 0.0
    frame = ops.ones_like(x[:1] if block.input_type == "static" else x[:1, 0])
    shapes = block._stage_shapes
    macs += float(ops.sum(_ones_kernel_apply(block.forward[0], frame))) * (1 if block.input_type == "static" else block.time_steps)
    for l in range(1, len(block.forward)):
        macs += float(ops.sum(_ones_kernel_apply(block.forward[l], ops.ones((1,) + tuple(shapes[l - 1][1:]))))) * block.time_steps
    if block.feedback is not None:
        macs += float(ops.sum(_ones_kernel_apply(block.feedback, ops.ones((1,) + tuple(shapes[len(block.forward) - 1][1:]))))) * block.time_steps
    return 2.0 * macs * int(x.shape[0])


def matmul_peak(size=2048, repeats=10):
    a = keras.random.normal((size, size))
    b = keras.random.normal((size, size))
    fn = compiled(lambda a, b: ops.matmul(a, b))
    seconds = median_seconds(lambda: ops.convert_to_numpy(fn(a, b)[0, 0]), repeats, warmup=2)
    return 2.0 * size**3 / seconds


def measure(name, gradient, solver, mode, time_steps, repeats):
    keras.utils.set_random_seed(0)
    model, batch, shape = model_for(name, gradient, solver, time_steps)
    model.compile(keras_fsnn.training.CoupledSGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=(mode == "eager"), jit_compile=(mode == "xla"))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch,) + shape).astype("float32")
    y = rng.integers(0, 10, batch)
    step = median_seconds(lambda: model.train_on_batch(x, y), repeats, warmup=2)
    row = {"model": name, "gradient": f"ide/{solver}" if gradient == "ide" else gradient, "mode": mode,
           "T": time_steps, "batch": batch, "step": step, "images_per_s": batch / step}
    if mode == "xla" and keras_fsnn.callbacks.spiking_blocks(model):
        block = keras_fsnn.callbacks.spiking_blocks(model)[0]
        inputs = keras_fsnn.callbacks.block_inputs(model, block, x)
        params = keras.tree.map_structure(ops.stop_gradient, block._parameters(False))
        simulate = compiled(lambda v: block._simulate(v, params, [])[0][-1])
        row["simulation"] = median_seconds(lambda: ops.convert_to_numpy(simulate(inputs)[0, 0]), repeats, warmup=2)
        row["flops"] = simulation_flops(block, inputs) / row["simulation"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["f400", "conv", "alexnet_f"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--time-steps", type=int, help="T for every model (default: f400 5, the others 30)")
    parser.add_argument("--backends", nargs="+", choices=["tensorflow", "jax"],
                        help="run once per backend and compare (default: the active backend only)")
    parser.add_argument("--solvers", nargs="+", default=["broyden"], choices=sorted(keras_fsnn.solvers.SOLVERS),
                        help="adjoint solvers of the IDE rows (conv always adds fixed_point)")
    parser.add_argument("--modes", nargs="+", default=["eager", "graph", "xla"], choices=["eager", "graph", "xla"])
    parser.add_argument("--no-bptt", action="store_true", help="leave out the BPTT rows")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # where a per-backend child writes its rows
    args = parser.parse_args(argv)
    if args.backends:
        return compare_backends(args)

    peak = matmul_peak()
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    plan = []
    for name in args.models:
        t = args.time_steps or (5 if name == "f400" else 30)
        if name == "mpis":
            plan += [(name, "ide", "broyden", "xla", t), (name, "one_step", None, "xla", t)]
            continue
        modes = {"conv": ("eager", "graph", "xla"), "alexnet_f": ("graph", "xla")}.get(name, ("eager", "graph", "xla"))
        solvers = args.solvers + (["fixed_point"] if name == "conv" and "fixed_point" not in args.solvers else [])
        plan += [(name, "ide", s, m, t) for s in solvers for m in modes]
        if not args.no_bptt:
            plan += [(name, "bptt", None, m, t) for m in (modes if name == "conv" else ("xla",))]
    plan = [entry for entry in plan if entry[3] in args.modes]
    rows = []
    print(f"{'model':<10} {'gradient':<16} {'mode':<6} {'T':>3} {'batch':>5} {'s/step':>8} {'img/s':>8} "
          f"{'simulation':>10} {'rest':>6} {'sim GFLOP/s':>11} {'of peak':>7}")
    for entry in plan:
        row = measure(*entry, repeats=args.repeats if entry[0] != "alexnet_f" else max(3, args.repeats // 3))
        rows.append(row)
        extra = ""
        if "simulation" in row:
            extra = (f"{row['simulation']:10.4f} {row['step'] - row['simulation']:6.3f} {row['flops'] / 1e9:11.1f} "
                     f"{row['flops'] / peak:7.1%}")
        print(f"{row['model']:<10} {row['gradient']:<16} {row['mode']:<6} {row['T']:>3} {row['batch']:>5} "
              f"{row['step']:8.4f} {row['images_per_s']:8.1f} {extra}", flush=True)
    for name, reference in PYTORCH_SECONDS.items():
        ours = [r for r in rows if r["model"] == name and r["gradient"].startswith("ide/")]
        if ours:
            best = min(ours, key=lambda r: r["step"])
            ratio = best["step"] / reference
            print(f"{name}: fastest IDE row {best['gradient']} {best['mode']} {best['step']:.4f} s per step vs "
                  f"the authors' PyTorch {reference} s: ratio {ratio:.2f} "
                  f"({'meets' if ratio <= 0.5 else 'MISSES'} the target <= 0.5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    return rows


def compare_backends(args):
    """Every requested backend in its own process; then the XLA rows side by side."""
    results = {}
    for backend in args.backends:
        print(f"\n=== KERAS_BACKEND={backend}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "rows.json")
            command = [sys.executable, os.path.abspath(__file__), "--models", *args.models,
                       "--repeats", str(args.repeats), "--solvers", *args.solvers, "--modes", *args.modes,
                       "--json", path] + (["--no-bptt"] if args.no_bptt else [])
            if args.time_steps:
                command += ["--time-steps", str(args.time_steps)]
            subprocess.run(command, env=dict(os.environ, KERAS_BACKEND=backend), check=True)
            with open(path) as f:
                results[backend] = json.load(f)
    first, *others = args.backends
    print(f"\nXLA training step, seconds (median), side by side; ratio = other / {first}")
    print(f"{'model':<10} {'gradient':<16} {'T':>3} {'batch':>5} " + " ".join(f"{b:>10}" for b in args.backends)
          + "".join(f" {b + '/' + first:>16}" for b in others))
    for row in results[first]:
        if row["mode"] != "xla":
            continue
        key = (row["model"], row["gradient"], row["T"], row["batch"])
        steps = {b: next((r["step"] for r in results[b] if r["mode"] == "xla"
                          and (r["model"], r["gradient"], r["T"], r["batch"]) == key), float("nan"))
                 for b in args.backends}
        print(f"{key[0]:<10} {key[1]:<16} {key[2]:>3} {key[3]:>5} " + " ".join(f"{steps[b]:10.4f}" for b in args.backends)
              + "".join(f" {steps[b] / steps[first]:16.2f}" for b in others), flush=True)
    return results


if __name__ == "__main__":
    main()
