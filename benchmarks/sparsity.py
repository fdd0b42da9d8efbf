"""Firing sparsity of trained zoo models (paper 000 Table 5) and their accuracy when
simulated for fewer or more steps than they were trained with (Table 7).

    python benchmarks/sparsity.py --data-dir DATA                     # every trained preset
    python benchmarks/sparsity.py --data-dir DATA --presets fsnn_mnist --time-steps 5 10 15 20 25 30

For each preset and each T: test accuracy on the first `--limit` test images (default
2000), the mean spike rate of every spiking layer (spikes per neuron per step, plain
counts, the quantity of Table 5) and the neuron-weighted total, the SynOps per image
(keras_fsnn.energy) and the energy on Loihi. Writes a PNG of accuracy and rate against T.
MPIS presets (ImplicitStreams) list their layers stream after stream and have no SynOps or
energy figure (nan): keras_fsnn.energy covers FeedbackSpikingBlock only.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_fsnn import datasets, zoo  # noqa: E402
from keras_fsnn.callbacks import block_inputs, spiking_layers  # noqa: E402
from keras_fsnn.energy import energy_report  # noqa: E402
from keras_fsnn.layers import FeedbackSpikingBlock  # noqa: E402

sys.path.insert(0, HERE)
from common import DEFAULT_DATA, figure, save  # noqa: E402


def measure(name, time_steps, data_dir, limit, batch_size=250):
    model = zoo.load(name, time_steps=time_steps)
    metadata = [e for e in zoo.list_presets() if e["name"] == name][0]["metadata"]
    x, y = datasets.load_arrays(metadata["dataset"], "test", data_dir)
    x, y = x[:limit], y[:limit]
    block = spiking_layers(model)[0]
    # SynOps / energy are implemented for FeedbackSpikingBlock only (NaN for ImplicitStreams,
    # whose layers are listed stream after stream)
    energy = isinstance(block, FeedbackSpikingBlock)
    correct, counts, synops, joules = 0, None, 0.0, 0.0
    for start in range(0, len(y), batch_size):
        images = x[start:start + batch_size].astype("float32") / 255.0
        correct += int(np.sum(np.argmax(ops.convert_to_numpy(model(images)), -1) == y[start:start + batch_size]))
        inside = block_inputs(model, block, images)
        spikes = block.simulate(inside, record_residuals=False, count_spikes=True)["counts"]
        batch_counts = [float(ops.sum(c)) for c in spikes]
        counts = batch_counts if counts is None else [a + b for a, b in zip(counts, batch_counts)]
        neurons = [int(np.prod(ops.shape(c)[1:])) for c in spikes]
        if energy:
            report = energy_report(block, inside, device="loihi")
            synops += report["synops_per_sample"] * len(images)
            joules += report["joules_per_sample"] * len(images)
    if not energy:
        synops = joules = float("nan")
    rates = [c / (n * len(y) * time_steps) for c, n in zip(counts, neurons)]
    total = sum(r * n for r, n in zip(rates, neurons)) / sum(neurons)
    return {"preset": name, "T": time_steps, "accuracy": correct / len(y), "rates": rates, "total_rate": total,
            "synops": synops / len(y), "joules": joules / len(y), "examples": len(y)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--presets", nargs="+")
    parser.add_argument("--time-steps", type=int, nargs="+", default=[5, 10, 15, 20, 25, 30])
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--plot", default=os.path.join(HERE, "results", "sparsity.png"))
    args = parser.parse_args(argv)
    presets = args.presets or [e["name"] for e in zoo.list_presets() if e["metadata"].get("status") == "trained"]
    rows = []
    print(f"{'preset':<14} {'T':>3} {'accuracy':>9} {'rate per layer':<44} {'total':>7} {'SynOps/img':>11} {'Loihi uJ/img':>13}")
    for name in presets:
        for t in args.time_steps:
            row = measure(name, t, args.data_dir, args.limit)
            rows.append(row)
            print(f"{name:<14} {t:>3} {row['accuracy']:9.4f} {', '.join(f'{r:.4f}' for r in row['rates']):<44} "
                  f"{row['total_rate']:7.4f} {row['synops']:11.3g} {row['joules'] * 1e6:13.3f}", flush=True)
    if args.plot and rows:
        fig, (left, right) = figure(2)
        for name in presets:
            points = [(r["T"], r["accuracy"], r["total_rate"]) for r in rows if r["preset"] == name]
            t, acc, rate = zip(*points)
            left.plot(t, acc, "o-", label=name)
            right.plot(t, rate, "o-", label=name)
        left.set(title="test accuracy vs simulated T", xlabel="T", ylabel="accuracy")
        right.set(title="average firing rate vs T", xlabel="T", ylabel="spikes / neuron / step")
        left.legend()
        save(fig, args.plot)
    return rows


if __name__ == "__main__":
    main()
