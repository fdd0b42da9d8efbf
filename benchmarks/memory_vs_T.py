"""Peak training memory against T: IDE (constant) versus BPTT (grows with T).

    python benchmarks/memory_vs_T.py                                  # both models, T = 10 30 100 300
    python benchmarks/memory_vs_T.py --models conv --gradients ide --time-steps 10 30 100

Every (model, gradient, T) trains a few `train_on_batch` steps (jit_compile=True) in its
own process, so each starts from a fresh allocator. Measured:
  * TensorFlow: the allocator's peak, `tf.config.experimental.get_memory_info("CPU:0")
    ["peak"]` (needs the default oneDNN build; with TF_ENABLE_ONEDNN_OPTS=0 it is not
    available), minus what was held before the first step (weights and data);
  * JAX: the compiled train step's temporary buffers, XLA `memory_analysis()`;
  * both: the process's peak resident set size (ru_maxrss), which includes the framework.
On a GPU (JAX) the XLA figure is the device's temporary memory for the step.

Gradients: "ide" (Broyden, the default), "ide_fp" (IDE with the fixed-point solver),
"ide_gmres" (IDE with GMRES) and "bptt" ("one_step" too for mpis). Models: "conv", a
reduced AlexNet-F-like FSNN sized for a 2-core CPU (32x32x3 input,
32C3s-64C3-64C3s-64C3-64C3, F32C3u feedback, batch 16); "f400", the paper's Fashion-MNIST
model (784-400 with a 400-400 feedback, batch 128); "mpis", the zoo's two-stream
Fashion-MNIST MPIS network 16C3-32C3s-48C3 (`keras_fsnn.models.mpis_fmnist`, batch 128;
IDE modes and one_step, no BPTT).

    python benchmarks/memory_vs_T.py --models f400 mpis --gradients ide one_step --time-steps 30 100

Targets: IDE T=300 / T=10 <= 1.10; IDE / BPTT at T = 100 <= 0.15.
"""

import argparse
import json
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from common import run_worker, xla_temp_bytes  # noqa: E402


def build(model_name, time_steps, gradient):
    """(model, batch, input shape); gradient "ide" (Broyden), "ide_fp" (IDE with the
    fixed-point solver, no Broyden history), "ide_gmres" (one Krylov basis) or "bptt"."""
    import keras

    import keras_fsnn

    solver = {"ide_fp": "fixed_point", "ide_gmres": "gmres"}.get(gradient)
    options = {"gradient": "ide", "solver": solver} if solver else {"gradient": gradient}
    if model_name == "mpis":  # the zoo's Fashion-MNIST MPIS (paper 003 Table 1): 16C3-32C3s-48C3, two streams
        model = keras_fsnn.models.mpis_fmnist(time_steps=time_steps, **options)
        return model, 128, (28, 28, 1)

    def conv(filters, strides=1):
        return keras.Sequential([keras.layers.Conv2D(filters, 3, strides=strides, padding="same"),
                                 keras.layers.BatchNormalization()])

    if model_name == "conv":
        block = keras_fsnn.FeedbackSpikingBlock(
            forward=[conv(32, 2), conv(64), conv(64, 2), conv(64), conv(64)],
            feedback=keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", use_bias=False),
            time_steps=time_steps, neuron="lif", leak=0.99, dropout=0.2, **options)
        inputs = keras.Input((32, 32, 3))
        batch, shape = 16, (32, 32, 3)
    else:
        block = keras_fsnn.FeedbackSpikingBlock(
            forward=[keras.Sequential([keras.layers.Dense(400), keras.layers.BatchNormalization()])],
            feedback=keras.layers.Dense(400, use_bias=False), time_steps=time_steps, dropout=0.2, **options)
        inputs = keras.Input((784,))
        batch, shape = 128, (784,)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(block(inputs)))
    return keras.Model(inputs, outputs), batch, shape


def worker(model_name, gradient, time_steps, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model, batch, shape = build(model_name, time_steps, gradient)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch,) + shape).astype("float32")
    y = rng.integers(0, 10, batch)
    result = {"model": model_name, "gradient": gradient, "time_steps": time_steps, "backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        baseline = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        for _ in range(steps):
            model.train_on_batch(x, y)
        result["peak_bytes"] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - baseline
        result["peak_source"] = "TF allocator peak"
    else:
        model.train_on_batch(x, y)
        result["peak_bytes"] = xla_temp_bytes(model, x, y)
        result["peak_source"] = "XLA temp bytes"
        for _ in range(steps - 1):
            model.train_on_batch(x, y)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def run(model_name, gradient, time_steps, steps):
    return run_worker(__file__, (model_name, gradient, time_steps), steps,
                      {"model": model_name, "gradient": gradient, "time_steps": time_steps})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["conv", "f400"], choices=["conv", "f400", "mpis"])
    parser.add_argument("--gradients", nargs="+", default=["ide", "ide_fp", "bptt"],
                        choices=["ide", "ide_fp", "ide_gmres", "bptt", "one_step"])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[10, 30, 100, 300])
    parser.add_argument("--steps", type=int, default=3, help="training steps per configuration")
    parser.add_argument("--plot", default=os.path.join(RESULTS, "memory_vs_T.png"))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.steps)
        return None

    rows = [run(m, g, t, args.steps) for m in args.models for g in args.gradients for t in args.time_steps]
    mib = 2.0**20
    ok = [r for r in rows if "error" not in r]
    source = ok[0]["peak_source"] if ok else "peak"
    print(f"Training memory against T ({ok[0]['backend'] if ok else '?'} backend, {source}; peak RSS includes the framework)")
    print(f"{'model':<6} {'gradient':<8} {'T':>5} {source + ' MiB':>24} {'vs T=' + str(args.time_steps[0]):>9} {'peak RSS MiB':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<6} {r['gradient']:<8} {r['time_steps']:>5} {'failed: ' + r['error']}")
            continue
        first = next(x for x in ok if x["model"] == r["model"] and x["gradient"] == r["gradient"])
        print(f"{r['model']:<6} {r['gradient']:<8} {r['time_steps']:>5} {r['peak_bytes'] / mib:24.1f} "
              f"{r['peak_bytes'] / first['peak_bytes']:9.3f} {r['peak_rss_bytes'] / mib:13.1f}")

    def peak(model, gradient, t):
        match = [r for r in ok if r["model"] == model and r["gradient"] == gradient and r["time_steps"] == t]
        return match[0]["peak_bytes"] if match else None

    for model in args.models:
        lo, hi = args.time_steps[0], args.time_steps[-1]
        if peak(model, "ide", lo) and peak(model, "ide", hi):
            ratio = peak(model, "ide", hi) / peak(model, "ide", lo)
            print(f"{model}: IDE T={hi} / T={lo} = {ratio:.3f} ({'meets' if ratio <= 1.10 else 'MISSES'} <= 1.10)")
        for ide in ("ide", "ide_fp", "ide_gmres"):
            if peak(model, ide, 100) and peak(model, "bptt", 100):
                ratio = peak(model, ide, 100) / peak(model, "bptt", 100)
                print(f"{model}: {ide.upper()} / BPTT at T=100 = {ratio:.3f} ({'meets' if ratio <= 0.15 else 'MISSES'} <= 0.15)")
    if args.plot and ok:
        plot(ok, args.plot)
        print(f"plot: {args.plot}")
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    models = sorted({r["model"] for r in rows})
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for axis, model in zip(axes[0], models):
        for gradient, style in (("ide", "o-"), ("ide_fp", "^-"), ("ide_gmres", "v-"), ("bptt", "s--"),
                                ("one_step", "d:")):
            points = sorted((r["time_steps"], r["peak_bytes"] / 2**20) for r in rows if r["model"] == model and r["gradient"] == gradient)
            if points:
                axis.plot(*zip(*points), style, label=gradient.upper())
        axis.set(title=f"{model}: training memory", xlabel="time steps T", ylabel=f"{rows[0]['peak_source']} (MiB)",
                 xscale="log", yscale="log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
