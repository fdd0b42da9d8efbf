"""Peak training memory of one FSNN at several T: IDE's memory must not grow with T.

    python benchmarks/memory.py                      # T = 10, 30, 100 (target: T=100 / T=10 <= 1.10)
    python benchmarks/memory.py --time-steps 10 30 100 300 --batch 64

Each T runs in its own process (a fresh allocator), trains the same conv FSNN (32x32x3
input, 32C3s-64C3-64C3s with a transposed-conv feedback, F32C3u; IF, Broyden 30) for a
few `train_on_batch` steps with jit_compile=True, and reports:
  * TensorFlow: the allocator's peak bytes, `tf.config.experimental.get_memory_info
    ("CPU:0")["peak"]` (needs the default oneDNN build), minus the bytes held before the
    first step (weights, data);
  * JAX: the compiled train step's temporary bytes from XLA's `memory_analysis()`;
  * both: the process's peak resident set size (ru_maxrss), which includes the framework.
The ratios to the smallest T are printed side by side.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(time_steps, batch, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras
    import numpy as np

    import keras_fsnn

    keras.utils.set_random_seed(0)
    block = keras_fsnn.FeedbackSpikingBlock(
        forward=[
            keras.Sequential([keras.layers.Conv2D(32, 3, strides=2, padding="same"), keras.layers.BatchNormalization()]),
            keras.Sequential([keras.layers.Conv2D(64, 3, padding="same"), keras.layers.BatchNormalization()]),
            keras.Sequential([keras.layers.Conv2D(64, 3, strides=2, padding="same"), keras.layers.BatchNormalization()]),
        ],
        feedback=keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", use_bias=False),
        time_steps=time_steps, dropout=0.2, solver="broyden", solver_steps=30,
    )
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(block(inputs))))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch)

    result = {"time_steps": time_steps, "backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        baseline = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        for _ in range(steps):
            model.train_on_batch(x, y)
        result["peak_bytes"] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - baseline
        result["peak_source"] = "TF allocator peak"
    else:
        import jax

        model.train_on_batch(x, y)
        trainer = model.train_function
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        try:
            compiled = jax.jit(model.train_step).lower(state, (x, y)).compile()
            result["peak_bytes"] = compiled.memory_analysis().temp_size_in_bytes
            result["peak_source"] = "XLA temp bytes"
        except Exception as error:  # the trainer's signature differs between Keras versions
            result["peak_bytes"] = None
            result["peak_source"] = f"unavailable ({type(error).__name__})"
        del trainer
        for _ in range(steps):
            model.train_on_batch(x, y)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.steps)
        return

    rows = []
    for t in args.time_steps:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(t), "--batch", str(args.batch), "--steps", str(args.steps)],
            capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    base = rows[0]
    mib = 2.0**20
    print(f"IDE training memory, backend {base['backend']}, batch {args.batch}, conv FSNN 32C3s-64C3-64C3s (F32C3u)")
    print(f"{'T':>6} {base['peak_source'] + ' (MiB)':>26} {'ratio':>7} {'peak RSS (MiB)':>16} {'ratio':>7}")
    for row in rows:
        peak = row["peak_bytes"]
        peak_text = f"{peak / mib:26.1f} {peak / base['peak_bytes']:7.3f}" if peak and base["peak_bytes"] else f"{'n/a':>26} {'':>7}"
        print(f"{row['time_steps']:>6} {peak_text} {row['peak_rss_bytes'] / mib:16.1f} "
              f"{row['peak_rss_bytes'] / base['peak_rss_bytes']:7.3f}")
    last = rows[-1]
    if last["peak_bytes"] and base["peak_bytes"]:
        ratio = last["peak_bytes"] / base["peak_bytes"]
        verdict = "meets" if ratio <= 1.10 else "MISSES"
        print(f"T={last['time_steps']} / T={base['time_steps']}: {ratio:.3f} ({verdict} the target <= 1.10)")


if __name__ == "__main__":
    main()
