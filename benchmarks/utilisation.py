"""How close a training step is to the machine's limit: FLOPs per step, achieved GFLOP/s
against a peak measured in the same run, and the dense floor, for the zoo's models.

    python benchmarks/utilisation.py                                  # TensorFlow: graph and XLA
    KERAS_BACKEND=jax python benchmarks/utilisation.py                # JAX: XLA
    python benchmarks/utilisation.py --models fsnn_mnist --repeats 5

FLOPs are counted per layer (2 per multiply-add of every Dense and convolution, the dense
convention of PyTorch's and fvcore's counters; batch norm and the neurons' elementwise work
are not counted) from the stages one evaluation of f actually calls, recorded by running
f once. With P_in the input stages' work (static input: computed once per step) and P the
rest of one network pass, a step of an implicit model does

    simulation      P_in + T P                     (sequence input: T (P_in + P))
    f pass          P_in + P                       (z = f(a*), recorded once)
    its backward    (P_in + P) + P                 (kernel gradients, then input gradients)
    adjoint solve   n P                            (one J^T per Broyden iteration; SPIDE: T_B steps)

with n the step's measured backward iterations. The peak is the fastest float32 dense
product this process runs: a 2048^3 matmul and each model's largest convolution, both in
TensorFlow's graph mode (oneDNN) and under XLA, the maximum taken (a utilisation above 100%
would mean a wrong timing or count). The dense floor is the step's FLOPs at that peak.
The CIFAR models run at batch 32, the others at their recipe's 128.
Every model trains on the first real training batches of its dataset (`--data-dir`) with
the preset's trained weights where there are some (so the solver iterations are those of
a trained network), else its seeded initial weights.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_fsnn  # noqa: E402  (before keras: its TensorFlow CPU defaults, keras_fsnn/_environment.py)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402
from common import DEFAULT_DATA, compiled, median_seconds  # noqa: E402
from keras_fsnn.layers import equilibrium  # noqa: E402
from keras_fsnn.training import trainer  # noqa: E402
from keras_fsnn.training.recipes import get_recipe  # noqa: E402

MODELS = ("fsnn_fmnist", "fsnn_mnist", "alexnet_f", "cifarnet_f", "mpis_fmnist", "mpis_cifar10", "spide_mnist",
          "spide_lenet")
# the CIFAR models at batch 32 (as in benchmarks/vs_authors.py), the others at their recipe's
BATCH_SIZES = {"alexnet_f": 32, "cifarnet_f": 32, "mpis_cifar10": 32}
CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


# ---------------------------------------------------------------- counting


def layer_macs(layer, input_shape):
    """(multiply-adds per sample, output shape) of one layer on `input_shape` (batch 1)."""
    output_shape = tuple(layer.compute_output_shape(input_shape))
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0.0, output_shape
    spatial = slice(1, -1) if getattr(layer, "data_format", "channels_last") == "channels_last" else slice(2, None)
    if isinstance(layer, CONVOLUTIONS):  # every output position: kernel taps x in/groups x out
        return float(np.prod(output_shape[spatial]) * np.prod(kernel.shape)), output_shape
    if isinstance(layer, TRANSPOSED):  # every input position scatters one kernel
        return float(np.prod(input_shape[spatial]) * np.prod(kernel.shape)), output_shape
    if isinstance(layer, keras.layers.Dense):
        return float(np.prod(input_shape[1:-1]) * np.prod(kernel.shape)), output_shape
    raise TypeError(f"cannot count the multiply-adds of {type(layer).__name__} {layer.name}")


def stage_macs(stage, input_shape):
    """Multiply-adds per sample of a stage (a layer or a Sequential of layers)."""
    layers = stage.layers if isinstance(stage, keras.Sequential) else [stage]
    total, shape = 0.0, (1,) + tuple(input_shape[1:])
    for layer in layers:
        if isinstance(layer, keras.Sequential):
            macs, shape = stage_macs(layer, shape), tuple(layer.compute_output_shape(shape))
        else:
            macs, shape = layer_macs(layer, shape)
        total += macs
    return total


def network_macs(block, x):
    """(P_in, P): multiply-adds per sample of the input stages and of the rest of one
    evaluation of f, from the stages f calls (recorded by evaluating it once)."""
    calls = []
    original = equilibrium.stage_current

    def recording(stage, takes_training, params, inputs, *args, **kwargs):
        calls.append((stage, tuple(inputs.shape)))
        return original(stage, takes_training, params, inputs, *args, **kwargs)

    x_bar = block._average_input(ops.convert_to_tensor(x[:1]))
    a = ops.zeros((1,) + tuple(block._join([ops.zeros((1,) + tuple(block._layer_shapes[j])) for j in block._last]).shape[1:]))
    equilibrium.stage_current = recording
    try:
        block.fixed_point_map(a, x_bar, block._parameters(False), [])
    finally:
        equilibrium.stage_current = original
    inputs = {id(block._stages[k]) for k in block._input_stages}
    p_in = sum(stage_macs(s, shape) for s, shape in calls if id(s) in inputs)
    p = sum(stage_macs(s, shape) for s, shape in calls if id(s) not in inputs)
    return p_in, p, calls


def step_flops(block, batch, p_in, p, iterations):
    """(simulation, whole step) FLOPs of one training step (module docstring)."""
    steps = block.time_steps
    simulation = (steps * (p_in + p)) if block.input_type == "sequence" else (p_in + steps * p)
    step = simulation + (p_in + p) + (p_in + 2 * p) + iterations * p
    return 2.0 * batch * simulation, 2.0 * batch * step


# ---------------------------------------------------------------- timing


def dense_rate(fn, args, flops, mode, repeats):
    run = compiled(fn, xla=(mode == "xla"))
    seconds = median_seconds(lambda: ops.convert_to_numpy(ops.sum(run(*args))), repeats, warmup=2)
    return flops / seconds


def peaks(largest_convs, modes, repeats):
    """{(what, mode): GFLOP/s} of a 2048^3 matmul and each model's largest convolution."""
    out = {}
    a, b = keras.random.normal((2048, 2048)), keras.random.normal((2048, 2048))
    for mode in modes:
        out[("matmul 2048", mode)] = dense_rate(lambda a, b: ops.matmul(a, b), (a, b), 2.0 * 2048**3, mode, repeats)
        for name, (layer, shape, macs) in largest_convs.items():
            x = keras.random.normal(shape)
            kernel = ops.convert_to_tensor(layer.kernel)
            fn = lambda x, w, layer=layer: ops.conv(x, w, strides=layer.strides, padding=layer.padding,  # noqa: E731
                                                     data_format=layer.data_format, dilation_rate=layer.dilation_rate)
            out[(f"{name} conv", mode)] = dense_rate(fn, (x, kernel), 2.0 * macs * shape[0], mode, repeats)
    return out


def largest_conv(calls, batch):
    """(layer, input shape at `batch`, multiply-adds per sample) of the heaviest convolution."""
    best = None
    for stage, shape in calls:
        layers = stage.layers if isinstance(stage, keras.Sequential) else [stage]
        shape = (1,) + tuple(shape[1:])
        for layer in layers:
            macs, out = layer_macs(layer, shape)
            if isinstance(layer, CONVOLUTIONS) and layer.groups == 1 and (best is None or macs > best[2]):
                best = (layer, (batch,) + shape[1:], macs)
            shape = out
    return best


def measure(name, modes, repeats, data_dir, batches):
    recipe = get_recipe(name)
    folder = keras_fsnn.zoo.locate(name)
    trained = keras_fsnn.zoo.read_metadata(folder).get("status") == "trained"
    images, labels = keras_fsnn.datasets.load_arrays(recipe.dataset, "train", data_dir=data_dir)
    batch = BATCH_SIZES.get(name, recipe.batch_size)
    xs = [images[i * batch:(i + 1) * batch].astype("float32") / 255.0 for i in range(batches)]
    ys = [labels[i * batch:(i + 1) * batch].astype("int64") for i in range(batches)]
    rows, conv = [], None
    for mode in modes:
        keras.utils.set_random_seed(0)
        model = trainer.build_model(name)
        if trained:
            keras_fsnn.zoo.load_weights(model, keras_fsnn.zoo.pretrained_weights_path(folder))
        trainer.compile_model(model, recipe, 1000, jit_compile=(mode == "xla"))
        block = keras_fsnn.inspection.spiking_layers(model)[0]
        counter = [0]

        def step():
            i = counter[0] % batches
            counter[0] += 1
            model.train_on_batch(xs[i], ys[i])

        seconds = median_seconds(step, repeats, warmup=2)
        iterations = block.diagnostics().get("backward_iterations") or 0.0
        inputs = keras_fsnn.inspection.block_inputs(model, block, xs[0])
        p_in, p, calls = network_macs(block, ops.convert_to_numpy(inputs))
        conv = conv or largest_conv(calls, batch)
        params = keras.tree.map_structure(ops.stop_gradient, block._parameters(False))
        simulate = compiled(lambda v: block._simulate(v, params, [])[0][-1], xla=(mode == "xla"))
        simulation = median_seconds(lambda: ops.convert_to_numpy(simulate(inputs)[0, 0]), repeats, warmup=2)
        sim_flops, flops = step_flops(block, batch, p_in, p, iterations)
        rows.append({"model": name, "mode": mode, "batch": batch, "T": block.time_steps, "iterations": iterations,
                     "trained": trained, "step": seconds, "simulation": simulation,
                     "step_flops": flops, "simulation_flops": sim_flops})
        print(f"  [{name} {mode}] {seconds:.4f} s per step, simulation {simulation:.4f} s, "
              f"{iterations:.0f} backward iterations", flush=True)
    return rows, conv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=["graph", "xla"],
                        help="default: graph and xla on TensorFlow, xla on JAX")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=3, help="distinct real batches the steps cycle through")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    backend = keras.backend.backend()
    modes = args.modes or (["graph", "xla"] if backend == "tensorflow" else ["xla"])
    if backend != "tensorflow" and modes != ["xla"]:
        parser.error(f"--modes {' '.join(modes)}: the {backend} backend runs XLA only")
    print(f"backend {backend}, {os.cpu_count()} CPU cores, modes {', '.join(modes)}", flush=True)
    rows, convs = [], {}
    for name in args.models:
        model_rows, conv = measure(name, modes, args.repeats, args.data_dir, args.batches)
        rows += model_rows
        if conv:
            convs[name] = conv
    peak_table = peaks(convs, modes, max(args.repeats, 5))
    peak = max(peak_table.values())
    print("\nDense float32 products in this run, GFLOP/s (the peak is the maximum):")
    for (what, mode), rate in sorted(peak_table.items()):
        print(f"  {what:<24} {mode:<6} {rate / 1e9:8.1f}")
    print(f"  peak {peak / 1e9:.1f} GFLOP/s\n")
    head = ["model", "mode", "batch, T", "backward its", "simulation GFLOP", "simulation s", "sim. GFLOP/s (of peak)",
            "step GFLOP", "step s", "step GFLOP/s (of peak)", "dense floor s", "step / floor"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        sim_rate, step_rate = r["simulation_flops"] / r["simulation"], r["step_flops"] / r["step"]
        floor = r["step_flops"] / peak
        print(f"| {r['model']}{'' if r['trained'] else ' (untrained)'} | {r['mode']} | {r['batch']}, {r['T']} | "
              f"{r['iterations']:.0f} | {r['simulation_flops'] / 1e9:.1f} | {r['simulation']:.3f} | "
              f"{sim_rate / 1e9:.0f} ({sim_rate / peak:.0%}) | {r['step_flops'] / 1e9:.1f} | {r['step']:.3f} | "
              f"{step_rate / 1e9:.0f} ({step_rate / peak:.0%}) | {floor:.3f} | {r['step'] / floor:.1f} |")
    return rows, peak_table


if __name__ == "__main__":
    main()
