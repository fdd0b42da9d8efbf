"""Open-Neuromorphic-style SNN library benchmark: one Linear + LIF layer driven by spikes,
batch 16, T = 500, n input and n LIF neurons, forward and backward time and peak memory,
IDE vs BPTT.

    python benchmarks/neuromorphic_harness.py                          # n = 512 ... 4096 (CPU)
    python benchmarks/neuromorphic_harness.py --neurons 512 1024 2048 4096 8192 16384

Each (n, gradient) runs in its own process. The layer is a FeedbackSpikingBlock with
forward=[Dense(n)], feedback=None (a feed-forward LIF layer, leak 0.9, V_th = 1) and
input_type="sequence"; input spikes are Bernoulli(0.1), the loss a cross-entropy of a
10-way readout of the rates. "forward" is the median compiled inference call; "backward"
the median training step minus the forward; memory as in memory_vs_T.py. With no
feedback, IDE's adjoint is trivial (J_f = 0): its backward is one pass of f at the
average input, while BPTT differentiates all 500 steps.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)

from common import figure, median_seconds, save  # noqa: E402
BATCH, STEPS = 16, 500


def worker(neurons, gradient, repeats):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras
    import numpy as np

    import keras_fsnn

    keras.utils.set_random_seed(0)
    block = keras_fsnn.FeedbackSpikingBlock([keras.layers.Dense(neurons)], feedback=None, time_steps=STEPS,
                                            neuron="lif", leak=0.9, threshold=1.0, spectral_norm=False,
                                            gradient=gradient, input_type="sequence")
    inputs = keras.Input((STEPS, neurons))
    model = keras.Model(inputs, keras.layers.Dense(10)(block(inputs)))
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(BATCH, STEPS, neurons)) < 0.1).astype("float32")
    y = rng.integers(0, 10, BATCH)

    result = {"neurons": neurons, "gradient": gradient, "backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        baseline = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        step = median_seconds(lambda: model.train_on_batch(x, y), repeats)
        result["peak_bytes"] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - baseline
    else:
        import jax

        step = median_seconds(lambda: model.train_on_batch(x, y), repeats)
        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                 [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])
        result["peak_bytes"] = jax.jit(model.train_step).lower(state, (x, y)).compile().memory_analysis().temp_size_in_bytes
    forward = median_seconds(lambda: model.predict_on_batch(x), repeats)
    result.update(forward=forward, backward=max(step - forward, 0.0), step=step,
                  peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--gradients", nargs="+", default=["ide", "bptt"], choices=["ide", "bptt"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", default=os.path.join(RESULTS, "neuromorphic_harness.png"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], args.repeats)
        return None

    rows = []
    for n in args.neurons:
        for gradient in args.gradients:
            out = subprocess.run([sys.executable, __file__, "--worker", str(n), gradient, "--repeats", str(args.repeats)],
                                 capture_output=True, text=True)
            if out.returncode:
                rows.append({"neurons": n, "gradient": gradient, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:160]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = 2.0**20
    ok = [r for r in rows if "error" not in r]
    print(f"Linear + LIF, batch {BATCH}, T = {STEPS} ({ok[0]['backend'] if ok else '?'} backend, "
          f"{'TF allocator peak' if ok and ok[0]['backend'] == 'tensorflow' else 'XLA temp bytes'})")
    print(f"{'neurons':>8} {'gradient':<8} {'forward s':>10} {'backward s':>11} {'peak MiB':>9} {'RSS MiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['neurons']:>8} {r['gradient']:<8} failed: {r['error']}")
        else:
            print(f"{r['neurons']:>8} {r['gradient']:<8} {r['forward']:10.3f} {r['backward']:11.3f} "
                  f"{r['peak_bytes'] / mib:9.1f} {r['peak_rss_bytes'] / mib:8.1f}")
    for n in args.neurons:
        pair = {r["gradient"]: r for r in ok if r["neurons"] == n}
        if {"ide", "bptt"} <= set(pair):
            print(f"n={n}: IDE / BPTT backward time {pair['ide']['backward'] / max(pair['bptt']['backward'], 1e-9):.3f}, "
                  f"peak memory {pair['ide']['peak_bytes'] / pair['bptt']['peak_bytes']:.3f}")
    if args.plot and ok:
        fig, (left, right) = figure(2)
        for gradient, style in (("ide", "o-"), ("bptt", "s--")):
            points = sorted((r["neurons"], r["forward"] + r["backward"], r["peak_bytes"] / mib) for r in ok if r["gradient"] == gradient)
            if points:
                n, t, m = zip(*points)
                left.plot(n, t, style, label=gradient.upper())
                right.plot(n, m, style, label=gradient.upper())
        left.set(title="forward + backward time", xlabel="neurons", ylabel="seconds", xscale="log", yscale="log")
        right.set(title="peak training memory", xlabel="neurons", ylabel="MiB", xscale="log", yscale="log")
        left.legend()
        right.legend()
        save(fig, args.plot)
    return rows


if __name__ == "__main__":
    main()
