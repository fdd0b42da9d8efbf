"""Helpers shared by the benchmark scripts: median timing and PNG figures."""

import json
import os
import statistics
import subprocess
import sys
import time

# where the benchmarks look for the real datasets unless --data-dir says otherwise
DEFAULT_DATA = os.environ.get("KERAS_FSNN_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets")


def median_seconds(fn, repeats, warmup=1):
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled(fn, xla=True):
    """`fn` compiled on the active backend: TensorFlow `tf.function` (with XLA when `xla`,
    else graph mode), JAX `jax.jit` (always XLA)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=xla)
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def figure(columns, width=5.0, height=3.6):
    """A matplotlib figure with `columns` side-by-side axes (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    return fig, list(axes[0])


def save(fig, path):
    """Write `fig` to the PNG `path` (creating its folder), close it and say where."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def run_worker(script, arguments, steps, identity):
    """Run `script --worker ARGUMENTS --steps STEPS` in a fresh process (its own allocator)
    and return the JSON dict it prints last, or `identity` with an "error" entry."""
    out = subprocess.run([sys.executable, script, "--worker", *map(str, arguments), "--steps", str(steps)],
                         capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {**identity, "error": tail[:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def xla_temp_bytes(model, x, y):
    """JAX: the temporary buffer bytes of the model's compiled train step (XLA memory analysis)."""
    import jax

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])
    return jax.jit(model.train_step).lower(state, (x, y)).compile().memory_analysis().temp_size_in_bytes
