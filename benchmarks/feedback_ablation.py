"""How much a trained MPIS model owes to its feedback: test accuracy, firing rates and
equilibrium residual with the Trans modules (each stream's feedback from its last layer to
its first, paper 003 eq. 6) as trained, and with their weights set to zero.

    python benchmarks/feedback_ablation.py --data-dir DATA                      # mpis_fmnist preset
    python benchmarks/feedback_ablation.py --data-dir DATA --weights RUN/checkpoint.keras --limit 2000

With zero Trans weights every stream's first layer sees the input drive only, so f(a) is
the network's feed-forward DBReLU pass whatever a is: the accuracy gap between the two
rows is what the implicit (feedback) part of the model adds. Both rows use the same model
object, the same images and the same T; `--weights` takes a `.keras` file (a run folder's
checkpoint.keras or model.keras, whose own configuration is used) or a `.weights.h5` file
for the preset's architecture.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_fsnn import datasets, zoo  # noqa: E402
from keras_fsnn.callbacks import spiking_layers  # noqa: E402
from keras_fsnn.layers import ImplicitStreams  # noqa: E402
from keras_fsnn.training import evaluate, load_for_evaluation  # noqa: E402

sys.path.insert(0, HERE)
from common import DEFAULT_DATA  # noqa: E402


def streams_layers(model):
    """The model's ImplicitStreams layers; an error for a model without one."""
    layers = [layer for layer in spiking_layers(model) if isinstance(layer, ImplicitStreams)]
    if not layers:
        raise ValueError("feedback_ablation.py needs a model with an ImplicitStreams layer (an MPIS preset); "
                         f"the model's spiking layers are {[type(layer).__name__ for layer in spiking_layers(model)]}.")
    return layers


def zero_feedback(layers):
    """Set every weight of the ImplicitStreams layers' Trans modules to zero, in place."""
    for layer in layers:
        for transform in layer.transforms:
            for variable in transform.weights:
                variable.assign(np.zeros(variable.shape, variable.dtype))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--preset", default="mpis_fmnist")
    parser.add_argument("--weights", default="pretrained", help="'pretrained', or a .keras / .weights.h5 file")
    parser.add_argument("--limit", type=int, help="evaluate on the first N test images (default: all)")
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)

    with open(os.path.join(zoo.locate(args.preset), "metadata.json")) as f:  # locate names the known presets
        dataset = json.load(f)["dataset"]
    model = load_for_evaluation(args.preset, args.weights)
    layers = streams_layers(model)

    def measure():
        data = datasets.make_pipeline(dataset, "test", args.data_dir, batch_size=args.batch_size,
                                      limit=args.limit)
        return evaluate(model, data)

    rows = [("feedback as trained", measure())]
    zero_feedback(layers)
    rows.append(("Trans weights = 0", measure()))
    print(f"{args.preset} ({args.weights}), {rows[0][1]['examples']} test images, T = {rows[0][1]['time_steps']}")
    print(f"{'':<20} {'accuracy':>9} {'residual per stream':<22} rates per layer (stream after stream)")
    for label, result in rows:
        residuals = " ".join(f"{r:.3f}" for r in result["residual_at_T_per_stream"])
        rates = " ".join(f"{r:.3f}" for r in result["firing_rates"])
        print(f"{label:<20} {100 * result['accuracy']:>8.2f}% {residuals:<22} {rates}")
    print(f"accuracy the feedback adds: {100 * (rows[0][1]['accuracy'] - rows[1][1]['accuracy']):+.2f}%")


if __name__ == "__main__":
    main()
