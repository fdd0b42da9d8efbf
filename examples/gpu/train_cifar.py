"""The CIFAR zoo on a lent GPU machine: one prepared job that fits a 15-minute device lease.

The `device` tool lends an H200 to some issues, for 15 minutes of device time (start,
transfers and idle time included), 10 minutes a command, 64 MiB carried a call, 8 files of
16 MiB back. CIFAR-10 does not fit one call (184 MB of pixels, 103 MB losslessly coded:
transport.py), so the job is four steps, two of them on the machine, back to back (it is
given back after 30 s idle; docs/backends.md has the exact calls and their durations):

  here      python examples/gpu/train_cifar.py prepare              wheels + CIFAR-10 in 2 parts
  device 1  bash examples/gpu/device.sh probe alexnet_f              part 1; time a training step
  device 2  bash examples/gpu/device.sh train alexnet_f --budget 480 part 2; train within 480 s
  here      python examples/gpu/train_cifar.py export FILES_AT --to zoo/alexnet_f

On the machine it runs under JAX with no TensorFlow (the NumPy input pipeline), XLA,
bfloat16 simulation currents, the recipe's batch size, and a schedule of the recipe's shape
sized to the budget from the step time measured in call 1 (`keras_fsnn.training.budget`).
After every epoch the weights (in pieces of at most 15 MiB, with their sha256), run.json
and log.csv are written to $OUT, so a call cut short still brings back its last epoch.
What the machine keeps between the two calls (decoded parts, the JAX compilation cache,
the run) lies in $FSNN_GPU_HOME (default /tmp/keras-fsnn-gpu).
"""

import time

CLOCK = time.monotonic()  # the budget counts from here: imports and data decoding included

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import transport  # noqa: E402

# The fastest honest configuration for the GPU (docs/backends.md: gradient error measured
# against a tight float32 solve): bfloat16 currents in the spike simulation, float32 state
# and adjoint; the paper's Broyden solver, stopped at a relative residual of 1e-3.
GPU_OVERRIDES = {"simulation_dtype": "bfloat16", "solver_tol": 1e-3}
PARTS_FOLDER = os.environ.get("FSNN_GPU_PARTS") or os.path.join(ROOT, ".gpu")  # where carried parts arrive
WHEELS_FOLDER = os.path.join(ROOT, ".whl")
CALL_LIMIT = 64 * 2**20  # what travels to the machine in one call
WEIGHTS = "model.weights.h5"


def machine_home():
    return os.environ.get("FSNN_GPU_HOME") or os.path.join(tempfile.gettempdir(), "keras-fsnn-gpu")


def parse_settings(pairs):
    """["time_steps=2", "solver_tol=1e-3", "neuron=lif"] -> {"time_steps": 2, ...}."""
    settings = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected NAME=VALUE, e.g. --set time_steps=30")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return settings


def model_overrides(args):
    return {**GPU_OVERRIDES, **parse_settings(args.set)}


# ------------------------------------------------------------------ here: prepare


def prepare(args):
    """Wheels the machine lacks into .whl/, the dataset in `--parts` parts into .gpu/."""
    from keras_fsnn import datasets

    if not args.no_wheels:
        download_wheels()
    arrays = {split: datasets.load_arrays(args.dataset, split, args.data_dir) for split in transport.SPLITS}
    raw = sum(x.nbytes + y.nbytes for x, y in arrays.values())
    tree = tracked_bytes() + folder_bytes(WHEELS_FOLDER)
    room = CALL_LIMIT - tree - 2**20  # what a part may take in its call (1 MiB spare)
    parts = args.parts or max(2, math.ceil(raw * 0.6 / room))  # CIFAR-10 codes to 0.56 of its raw size
    while True:
        for old in glob.glob(os.path.join(PARTS_FOLDER, f"{args.dataset}-*")):
            shutil.rmtree(old)
        start = time.perf_counter()
        folders = transport.pack_dataset(args.dataset, arrays, PARTS_FOLDER, parts)
        sizes = [folder_bytes(folder) for folder in folders]
        if max(sizes) <= room or args.parts:
            break
        parts += 1
    print(f"packed {args.dataset} ({raw / 1e6:.1f} MB of uint8 arrays) into {parts} parts, "
          f"{sum(sizes) / raw:.3f} of the raw size, in {time.perf_counter() - start:.0f} s:")
    for folder, size in zip(folders, sizes):
        print(f"  {os.path.relpath(folder, ROOT)}: {size / 2**20:.1f} MiB; with the tree and the wheels "
              f"{(tree + size) / 2**20:.1f} MiB of the {CALL_LIMIT / 2**20:.0f} MiB a call carries")
        if tree + size > CALL_LIMIT:
            raise SystemExit(f"{folder} does not fit one call: use --parts {parts + 1}.")
    args.parts = parts
    carry = '[".whl", ".gpu/{}-{}"]'
    print("\nthe device calls, back to back (the machine goes back after 30 s idle):")
    print(f'  run(command="bash examples/gpu/device.sh probe NAME", carry={carry.format(args.dataset, 1)}, timeout_s=300)')
    for k in range(2, args.parts):
        print(f'  run(command="bash examples/gpu/device.sh unpack", carry={carry.format(args.dataset, k)}, timeout_s=120)')
    print(f'  run(command="bash examples/gpu/device.sh train NAME --budget 480", '
          f'carry={carry.format(args.dataset, args.parts)}, timeout_s=560)')
    print("  give_back()\nthen: python examples/gpu/train_cifar.py export FILES_AT --to zoo/NAME")


def download_wheels():
    """keras (this machine's version) and the two small packages it needs that the GPU
    image lacks, for its Python 3.12."""
    from importlib.metadata import version

    wanted = [f"keras=={version('keras')}", f"namex=={version('namex')}", f"optree=={version('optree')}"]
    os.makedirs(WHEELS_FOLDER, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "-d", WHEELS_FOLDER]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        command += ["--platform", platform]
    subprocess.run(command + wanted, check=True)
    names = {w.split("==")[0] for w in wanted}
    for wheel in os.listdir(WHEELS_FOLDER):  # keep one version of each
        if wheel.split("-")[0] in names and not any(wheel.startswith(f"{w.replace('==', '-')}-") for w in wanted):
            os.remove(os.path.join(WHEELS_FOLDER, wheel))


def tracked_bytes():
    """The bytes of what travels without being carried: tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum(os.path.getsize(os.path.join(ROOT, f.decode())) for f in files if f and os.path.isfile(os.path.join(ROOT, f.decode())))


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(folder) for f in names)


# ------------------------------------------------------------------ the machine


def unpack(dataset):
    """Decode the parts carried so far (kept decoded in the machine home); once all are
    there, write `home/data/<dataset>/<dataset>.npz` (checked against the packed sha256)
    and return its folder, else None."""
    cache = os.path.join(machine_home(), "parts")
    os.makedirs(cache, exist_ok=True)
    for folder in sorted(glob.glob(os.path.join(PARTS_FOLDER, f"{dataset}-*"))):
        target = os.path.join(cache, os.path.basename(folder) + ".npz")
        if os.path.exists(target):
            continue
        start = time.perf_counter()
        manifest, images, labels = transport.decode_part(folder)
        np.savez(target + ".tmp.npz", images=images, labels=labels, manifest=json.dumps(manifest))
        os.replace(target + ".tmp.npz", target)
        print(f"decoded {os.path.basename(folder)}: {len(labels)} images in {time.perf_counter() - start:.1f} s", flush=True)
    decoded = []
    for path in sorted(glob.glob(os.path.join(cache, f"{dataset}-*.npz"))):
        with np.load(path) as part:
            decoded.append((json.loads(str(part["manifest"])), part["images"], part["labels"]))
    if not decoded:
        raise SystemExit(f"No part of {dataset} on this machine: carry .gpu/{dataset}-1 (made by `prepare`).")
    parts = decoded[0][0]["parts"]
    if len(decoded) < parts:
        print(f"{dataset}: {len(decoded)} of {parts} parts on this machine")
        return None, decoded
    arrays = transport.assemble(decoded)
    folder = os.path.join(machine_home(), "data", dataset)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"{dataset}.npz"), x_train=arrays["train"][0], y_train=arrays["train"][1],
             x_test=arrays["test"][0], y_test=arrays["test"][1])
    print(f"{dataset}: all {parts} parts decoded and checked (sha256 of every array)", flush=True)
    return os.path.dirname(folder), decoded


def training_images(decoded):
    """The training images and labels of the decoded parts on the machine (in part order)."""
    images, labels = [], []
    for manifest, x, y in decoded:
        position = 0
        for split, start, stop in manifest["segments"]:
            if split == "train":
                images.append(x[position:position + stop - start])
                labels.append(y[position:position + stop - start])
            position += stop - start
    if not images:
        raise SystemExit("The parts on this machine hold no training images: carry part 1 first.")
    return np.concatenate(images), np.concatenate(labels)


def use_compilation_cache():
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(machine_home(), "jax-cache"))


def environment():
    import jax
    import keras

    return {"python": sys.version.split()[0], "keras": keras.__version__, "backend": keras.backend.backend(),
            "jax": jax.__version__, "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()]}


def probe(args):
    """Call 1: decode the carried part(s) and time a training step of NAME on its images."""
    from keras_fsnn.training import get_recipe
    from keras_fsnn.training.trainer import time_training_step

    use_compilation_cache()
    _, decoded = unpack(get_recipe(args.name).dataset)
    images, labels = training_images(decoded)
    overrides = model_overrides(args)
    recipe_overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    timing = time_training_step(args.name, images, labels, seed=args.seed, model_overrides=overrides,
                                recipe_overrides=recipe_overrides, jit_compile=True, steps=args.steps)
    record = {"name": args.name, "model_overrides": overrides, "recipe_overrides": recipe_overrides,
              "seed": args.seed, "timing": timing.as_dict(), "environment": environment(),
              "seconds": round(time.monotonic() - CLOCK, 1)}
    write_json(os.path.join(machine_home(), f"probe-{args.name}.json"), record)
    if os.environ.get("OUT"):
        write_json(os.path.join(os.environ["OUT"], "probe.json"), record)
    print(json.dumps(record, indent=1))


def train_on_machine(args):
    """Call 2: decode the last part, train NAME within --budget seconds, results to $OUT."""
    import keras

    from keras_fsnn.training import get_recipe, train

    out = os.environ.get("OUT") or os.path.join(machine_home(), "out")
    os.makedirs(out, exist_ok=True)
    use_compilation_cache()
    data_dir, _ = unpack(get_recipe(args.name).dataset)
    if data_dir is None:
        raise SystemExit("Not all parts are on this machine: carry the missing ones first (see `prepare`).")
    overrides = model_overrides(args)
    recipe_overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    timing = None
    probe_path = os.path.join(machine_home(), f"probe-{args.name}.json")
    if os.path.exists(probe_path):
        record = json.load(open(probe_path))
        if (record["model_overrides"], record["recipe_overrides"], record["seed"]) == (overrides, recipe_overrides,
                                                                                     args.seed):
            timing = record["timing"]
    print("step timing: " + ("from call 1" if timing else "measured now (no matching probe on this machine)"), flush=True)

    class Outbox(keras.callbacks.Callback):
        """After every epoch: the weights in pieces, run.json and log.csv to $OUT."""

        def on_epoch_end(self, epoch, logs=None):
            send(self.model, run_dir, out)

    run_dir = os.path.join(machine_home(), "runs", args.name)
    if os.path.exists(run_dir) and not args.resume:
        shutil.rmtree(run_dir)  # a machine of this session only: an earlier try of this call
    budget = args.budget - (time.monotonic() - CLOCK)
    result = train(args.name, data_dir=data_dir, output_dir=run_dir, resume=args.resume, epochs=args.epochs,
                   seed=args.seed, jit_compile=True, pipeline="numpy", verbose=2, model_overrides=overrides,
                   batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, callbacks=[Outbox()],
                   time_budget=budget, step_timing=timing,
                   command="python examples/gpu/train_cifar.py " + " ".join(sys.argv[1:]))
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    send(model, run_dir, out)
    result["job_seconds"] = round(time.monotonic() - CLOCK, 1)
    write_json(os.path.join(out, "result.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "residual_trace"}, indent=1))


def send(model, run_dir, out):
    """The model's weights (pieces + weights.json), run.json and log.csv into `out`."""
    path = os.path.join(machine_home(), WEIGHTS)
    model.save_weights(path)
    manifest = transport.split_file(path, out, "weights")
    for stale in glob.glob(os.path.join(out, "weights.part*")):  # a smaller file than last time
        if os.path.basename(stale) not in {p["name"] for p in manifest["pieces"]}:
            os.remove(stale)
    for name in ("run.json", "log.csv"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(out, name))
    write_json(os.path.join(out, "weights.json"), manifest)


# ------------------------------------------------------------------ here: export


def export(args):
    """Rebuild the run from what came back, and export it as a preset (training.export_run)."""
    from keras_fsnn import datasets
    from keras_fsnn.training import build_model, evaluate, export_run

    came = args.files
    run = json.load(open(os.path.join(came, "run.json")))
    with tempfile.TemporaryDirectory() as run_dir:
        weights = transport.join_file(json.load(open(os.path.join(came, "weights.json"))), came,
                                      os.path.join(run_dir, WEIGHTS))
        model = build_model(run["name"], **run["model_overrides"])
        model.load_weights(weights)
        model.save(os.path.join(run_dir, "model.keras"))
        for name in ("run.json", "log.csv", "result.json"):
            if os.path.exists(os.path.join(came, name)):
                shutil.copyfile(os.path.join(came, name), os.path.join(run_dir, name))
        note = [args.note] if args.note else []
        if not os.path.exists(os.path.join(run_dir, "result.json")):
            # the call ended before the run did: the last finished epoch's weights, measured here
            from keras_fsnn.training import get_recipe

            dataset = get_recipe(run["name"]).dataset
            result = evaluate(model, datasets.make_pipeline(dataset, "test", args.data_dir, batch_size=256))
            from keras_fsnn.training.trainer import machine_description

            result["machine"] = f"trained on the device machine; evaluated on {machine_description()}"
            write_json(os.path.join(run_dir, "result.json"), result)
            note.append("The device call ended before the run finished: these are the weights after its last "
                        "finished epoch (log.csv), and the accuracy was measured afterwards, here.")
        metadata = export_run(run_dir, args.to, data_dir=args.data_dir, note=" ".join(note) or None)
    print(f"wrote {args.to}: test accuracy {100 * metadata['test_accuracy']:.2f}%, sha256 {metadata['weights_sha256']}")
    return metadata


def write_json(path, value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="here: wheels into .whl/, the dataset in parts into .gpu/")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "datasets"))
    p.add_argument("--parts", type=int, help="how many parts (default: the fewest that fit a call each, at least 2)")
    p.add_argument("--no-wheels", action="store_true", help="leave .whl/ as it is")
    for name, help_text in (("probe", "the machine, call 1: decode part 1, time a training step"),
                            ("train", "the machine, call 2: decode the rest, train within --budget, results to $OUT")):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("name", help="a zoo preset, e.g. alexnet_f")
        p.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help=f"a model option over the GPU defaults {GPU_OVERRIDES} (repeatable)")
        p.add_argument("--batch-size", type=int)
        p.add_argument("--seed", type=int, default=0)
        if name == "probe":
            p.add_argument("--steps", type=int, default=8, help="timed steps after the compiling one")
        else:
            p.add_argument("--budget", type=float, default=480.0, help="seconds of wall time for this whole call")
            p.add_argument("--epochs", type=int, help="at most this many epochs (default: the recipe's), fewer "
                           "where the budget does not fit them")
            p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps (default: epoch ends)")
            p.add_argument("--resume", action="store_true", help="continue the run on this machine, no new plan")
    p = commands.add_parser("unpack", help="the machine: decode a carried part (for datasets of more than 2 parts)")
    p.add_argument("--dataset", default="cifar10")
    p = commands.add_parser("export", help="here: join what came back and export it as a preset")
    p.add_argument("files", help="the folder the device call's files came back to (files_at)")
    p.add_argument("--to", required=True, help="the preset folder, e.g. zoo/alexnet_f")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "datasets"))
    p.add_argument("--note", help="a remark for the model card")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args)
    if args.command == "unpack":
        return unpack(args.dataset)
    if args.command == "probe":
        return probe(args)
    if args.command == "train":
        return train_on_machine(args)
    return export(args)


if __name__ == "__main__":
    main()
