"""MPIS against IDE on Fashion-MNIST (paper 003 Table 1): training time per epoch and peak
training memory, side by side, at T = 30 and T = 100.

    python benchmarks/mpis_vs_ide.py                       # ~15 min on 2 CPU cores
    python benchmarks/mpis_vs_ide.py --time-steps 30 --steps 3

Rows: the IDE F400 model (`fsnn_fmnist`, Broyden), the zoo's two-stream MPIS
(`mpis_fmnist`) with the paper's implicit backward ("ide") and with the one-step gradient
the released code trains with ("one_step"); batch 128, random images of the dataset's
shape. Each (model, gradient, T) runs in its own process, with the execution mode the
trainer picks (`auto_jit_compile`: XLA for F400, graph mode for the convolutional MPIS on
TensorFlow), one untimed step, then `--steps` timed `train_on_batch` steps. Time per epoch
= median step x 469 (60,000 images / 128). Memory: TensorFlow's allocator peak during the
timed steps minus what was held before (weights, data); on JAX the compiled step's XLA
temporary bytes. The paper's Table 1 (GPU): MPIS 30 s / 1.2 GB at both T = 30 and 100; its
time column is most likely one epoch.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import run_worker, xla_temp_bytes  # noqa: E402

STEPS_PER_EPOCH = 469
ROWS = [("f400", "ide"), ("mpis", "ide"), ("mpis", "one_step")]


def worker(model_name, gradient, time_steps, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import keras
    import numpy as np

    import keras_fsnn
    from keras_fsnn.training.trainer import auto_jit_compile

    keras.utils.set_random_seed(0)
    if model_name == "f400":
        model, batch, shape = keras_fsnn.models.fsnn_fmnist(time_steps=time_steps, neuron="lif"), 128, (28, 28, 1)
    else:
        model, batch, shape = keras_fsnn.models.mpis_fmnist(time_steps=time_steps, gradient=gradient), 128, (28, 28, 1)
    jit = auto_jit_compile(model)
    model.compile(keras_fsnn.training.CoupledSGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch,) + shape).astype("float32")
    y = rng.integers(0, 10, batch)
    model.train_on_batch(x, y)
    result = {"model": model_name, "gradient": gradient, "T": time_steps, "mode": "xla" if jit else "graph"}
    tracking = keras.backend.backend() == "tensorflow"
    if tracking:
        import tensorflow as tf

        baseline = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    result["step"] = statistics.median(times)
    if tracking:
        result["peak_bytes"] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - baseline
    else:
        result["peak_bytes"] = xla_temp_bytes(model, x, y)
    print(json.dumps(result))


def run(model_name, gradient, time_steps, steps):
    return run_worker(__file__, (model_name, gradient, time_steps), steps,
                      {"model": model_name, "gradient": gradient, "T": time_steps})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-steps", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], int(args.worker[2]), args.steps)

    import keras

    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores; Fashion-MNIST shapes, batch 128")
    rows = [run(m, g, t, args.steps) for t in args.time_steps for m, g in ROWS]
    print(f"{'model':<6}{'gradient':<10}{'T':>5}{'mode':>7}{'s/step':>9}{'s/epoch':>9}{'peak MiB':>10}{'vs F400 time':>14}"
          f"{'vs F400 mem':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<6}{r['gradient']:<10}{r['T']:>5}  failed: {r['error']}")
            continue
        base = next((b for b in rows if b["model"] == "f400" and b["T"] == r["T"] and "error" not in b), None)
        ratios = (f"{r['step'] / base['step']:14.2f}{r['peak_bytes'] / base['peak_bytes']:13.2f}" if base else "")
        print(f"{r['model']:<6}{r['gradient']:<10}{r['T']:>5}{r['mode']:>7}{r['step']:9.3f}{r['step'] * STEPS_PER_EPOCH:9.0f}"
              f"{r['peak_bytes'] / 2**20:10.1f}{ratios}")
    lo, hi = min(args.time_steps), max(args.time_steps)
    for m, g in ROWS:
        pair = [r for r in rows if r["model"] == m and r["gradient"] == g and "error" not in r and r["T"] in (lo, hi)]
        if len(pair) == 2 and lo != hi:
            a, b = sorted(pair, key=lambda r: r["T"])
            print(f"{m} {g}: memory T={hi} / T={lo} = {b['peak_bytes'] / a['peak_bytes']:.3f}, "
                  f"time T={hi} / T={lo} = {b['step'] / a['step']:.2f}")
    return rows


if __name__ == "__main__":
    main()
