"""Train and evaluate the zoo models with their recipes, resumably.

A run lives in one folder:

    run.json          the recipe and model settings of the run (authoritative on resume)
    checkpoint.keras  model + optimizer state after the last finished epoch, or after the
                      last `checkpoint_every` steps within one (atomic write)
    state.json        the progress checkpoint.keras holds: finished epochs (and steps of the next)
    log.csv           per-epoch loss/accuracy/firing rates/residuals (appended on resume)
    tensorboard/      TensorBoard logs (when tensorboard is installed)
    model.keras       the final model;  result.json: its test evaluation

The JSON files are strict JSON: a number that is not finite (the loss of a diverged run)
is written as null, and result.json then lists it under "non_finite" ({"loss": "nan"}).

The data order and the augmentation of epoch e are drawn by NumPy from (seed, e) alone
(`numpy_pipeline.epoch_draws`), for both input pipelines: "tf_data" applies the same
draws with tf.data ops, "numpy" with NumPy, and the two give the same batches, value for
value, so a run trains the same weights on either and may resume on the other. The dropout
RNG state is saved with the model, so an interrupted run resumed with `resume=True`
continues exactly as if it had not been interrupted, also from the middle of an epoch (the
resumed epoch's batches skip the ones already trained on). A run.json without
"batch_draws" was started by an earlier version, whose tf.data batches TensorFlow's
stateless RNG drew: such a "tf_data" run resumes on tf.data only.
"""

import importlib.util
import inspect
import json
import math
import numbers
import os
import platform
import sys
import time
import warnings

import keras
import numpy as np

from keras_fsnn import datasets, validation
from keras_fsnn.callbacks import EquilibriumMonitor
from keras_fsnn.inspection import block_inputs, spiking_layers
from keras_fsnn.datasets.numpy_pipeline import ArrayBatches, EpochBatches, epoch_draws
from keras_fsnn.models import ARCHITECTURES, count_parameters
from keras_fsnn.training.budget import FINAL_SECONDS, StepTiming, WallClockGuard, accelerator, measure_step, plan_schedule
from keras_fsnn.training.optimizers import CoupledSGD, WarmupMultiStep
from keras_fsnn.training.recipes import check_milestones, get_recipe

EVAL_BATCH = 256
PIPELINES = {"auto": "auto", "tf_data": "tf_data", "numpy": "numpy"}
# How a run's epochs are shuffled and augmented (run.json "batch_draws"): "numpy" (both
# pipelines; `numpy_pipeline.epoch_draws`), or "tf_stateless": the tf.data pipeline of runs
# started before run.json recorded it (TensorFlow's stateless RNG; kept for their resumes).
BATCH_DRAWS = "numpy"
MAX_SEED = 2**32 - 1  # NumPy's seeds (keras.utils.set_random_seed seeds NumPy too)
VERBOSE = {"auto": "auto", "0": 0, "1": 1, "2": 2}


def check_model_overrides(name, model_overrides):
    """Raise a ValueError naming any option the architecture of zoo entry `name` does not take."""
    recipe = get_recipe(name)
    accepted = inspect.signature(ARCHITECTURES[recipe.architecture]).parameters
    for key, value in model_overrides.items():
        if key not in accepted:
            raise ValueError(
                f"Option {key}={value!r} does not apply to {name!r} (its architecture {recipe.architecture!r} takes "
                f"{', '.join(k for k in accepted if k != 'name')}).")
    return recipe


def build_model(name, **model_overrides):
    """The architecture of zoo entry `name` with its recipe's settings and `model_overrides`."""
    recipe = check_model_overrides(name, model_overrides)
    return ARCHITECTURES[recipe.architecture](name=name, **{**recipe.model_kwargs, **model_overrides})


def auto_jit_compile(model):
    """XLA, except for convolutional models on TensorFlow: on the CPU, TensorFlow's graph
    mode trains them 2-3x faster than XLA (benchmarks/step_time.py, docs/benchmarks.md)."""
    convolutions = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
    has_conv = any(isinstance(layer, convolutions) for layer in model._flatten_layers(include_self=False, recursive=True))
    return keras.backend.backend() != "tensorflow" or not has_conv


def compile_model(model, recipe, steps_per_epoch, jit_compile=True):
    schedule = WarmupMultiStep(recipe.learning_rate, steps_per_epoch, recipe.milestones, 0.1, recipe.warmup_steps)
    model.compile(
        optimizer=CoupledSGD(schedule, momentum=recipe.momentum, coupled_weight_decay=recipe.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def epoch_pipeline(info, images, labels, batch_size, first_epoch, last_epoch, seed, augmentation, first_batch=0,
                   draws=BATCH_DRAWS):
    """tf.data batches for epochs first_epoch..last_epoch-1, starting at batch `first_batch`
    of the first: epoch e is shuffled (and augmented by `augmentation`, a
    `datasets.Augmentation`) by the draws of `numpy_pipeline.epoch_draws(seed, e, ...)`,
    those of `EpochBatches`, so the batches are the NumPy pipeline's, value for value.
    `draws="tf_stateless"`: TensorFlow's stateless RNG instead (runs started before
    run.json recorded "batch_draws")."""
    if draws == "tf_stateless":
        return _stateless_epoch_pipeline(info, images, labels, batch_size, first_epoch, last_epoch, seed,
                                         augmentation, first_batch)
    import tensorflow as tf

    count = int(len(labels))
    scale = images.dtype == np.uint8 and info.name != "nmnist"  # as numpy_pipeline's _scale
    shift = augmentation.shift if augmentation else 0
    flip = bool(augmentation) and augmentation.flip
    images = tf.constant(images)
    labels = tf.constant(labels)

    def drawn(epoch):
        order, offsets, flips = epoch_draws(seed, int(epoch), count, augmentation)
        if offsets is None:
            offsets, flips = np.zeros((count, 2), np.int64), np.zeros(count, bool)
        return order.astype(np.int64), offsets.astype(np.int64), flips.astype(bool)

    def example(index, offset, flipped):
        image = tf.cast(tf.gather(images, index), tf.float32)
        if scale:
            image = image / 255.0
        if shift:  # the window at `offset` of the zero-padded image
            image = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
            image = tf.slice(image, tf.concat([offset, [0]], 0), info.shape)
        if flip:
            image = tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)
        return image, tf.gather(labels, index)

    def one_epoch(epoch):
        order, offsets, flips = tf.numpy_function(drawn, [epoch], (tf.int64, tf.int64, tf.bool))
        order.set_shape([count])
        offsets.set_shape([count, 2])
        flips.set_shape([count])
        return tf.data.Dataset.from_tensor_slices((order, offsets, flips)).map(
            example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return epochs.flat_map(one_epoch).skip(first_batch).prefetch(tf.data.AUTOTUNE)


def _stateless_epoch_pipeline(info, images, labels, batch_size, first_epoch, last_epoch, seed, augmentation,
                              first_batch=0):
    """The tf.data batches of runs started before "batch_draws" (drawn by TensorFlow's
    stateless RNG from (seed, e)): their resumes continue with them."""
    import tensorflow as tf

    images = tf.constant(images)
    labels = tf.constant(labels)
    count = int(labels.shape[0])

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))

        def example(position, index):
            image = tf.gather(images, index)
            image = tf.cast(image, tf.float32) / 255.0 if info.name != "nmnist" else tf.cast(image, tf.float32)
            if augmentation:
                image = datasets.augment_image(image, augmentation, info.shape,
                                               seed=tf.stack([epoch, tf.cast(position, tf.int64)]))
            return image, tf.gather(labels, index)

        positions = tf.data.Dataset.range(count)
        return tf.data.Dataset.zip((positions, tf.data.Dataset.from_tensor_slices(order))).map(
            example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return epochs.flat_map(one_epoch).skip(first_batch).prefetch(tf.data.AUTOTUNE)


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch, and every `every_steps` training steps within one when given: the
    full model (with optimizer and RNG state) to checkpoint.keras, written to a temporary file
    and renamed, then the progress it holds to state.json: {"finished_epochs": e} at the end
    of an epoch, {"finished_epochs": e, "finished_steps": k} k steps into the next one."""

    def __init__(self, folder, steps_per_epoch, every_steps=None):
        super().__init__()
        self.folder, self.steps_per_epoch, self.every_steps = folder, steps_per_epoch, every_steps
        self.step_offset = 0  # steps of the current epoch trained before this fit call (a resumed epoch)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self.step_offset + batch + 1
        if self.every_steps and done % self.every_steps == 0 and done < self.steps_per_epoch:
            self._save({"finished_epochs": self._epoch, "finished_steps": done})

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        # from the step count: an epoch that a callback stopped early has not finished
        epochs, steps = divmod(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)), self.steps_per_epoch)
        self._save({"finished_epochs": epochs, **({"finished_steps": steps} if steps else {})})

    def _save(self, progress):
        path = os.path.join(self.folder, "checkpoint.keras")
        self.model.save(path + ".tmp.keras")
        os.replace(path + ".tmp.keras", path)
        _write_json(os.path.join(self.folder, "state.json"), progress)


def train(name, data_dir=None, output_dir=None, resume=False, epochs=None, batch_size=None, learning_rate=None,
          milestones=None, warmup_steps=None, random_shift=None, random_flip=None, limit=None, seed=0, jit_compile="auto",
          verbose="auto", model_overrides=None, command=None, pipeline="auto", checkpoint_every=None, callbacks=(),
          initial_weights=None, validation_examples=None, time_budget=None, step_timing=None, data_source="auto",
          tfds_dir=None):
    """Train zoo entry `name` with its recipe (fields overridable) into `output_dir`.

    Returns the test evaluation (see `evaluate`). With `resume=True` the run in
    `output_dir` continues from its last finished epoch with its saved settings; without
    it an existing run there is an error (nothing is overwritten). `jit_compile="auto"`
    uses XLA except for convolutional models on TensorFlow, which train 2-3x faster in
    graph mode on the CPU (benchmarks/step_time.py; docs/benchmarks.md). `pipeline`:
    "tf_data", "numpy" (`keras.utils.PyDataset`s, no TensorFlow needed: the JAX backend on
    a machine without TensorFlow) or "auto" (tf.data when TensorFlow is installed); both
    give the same batches (module docstring), so the same seed trains the same weights on
    either; a resumed run keeps the pipeline it started with under "auto" (or takes NumPy's
    where TensorFlow is missing) and may be given the other. `checkpoint_every=k` also checkpoints
    every k training steps within an epoch (for long epochs: an interruption then loses at
    most k steps); `callbacks` are further Keras callbacks, called after the run's own.
    `random_shift` (pixels) and `random_flip` replace the dataset's paper augmentation
    (`datasets.Augmentation`; CIFAR: 4 and True, the others: 0 and False).
    `initial_weights` starts a new run from trained weights instead of a fresh
    initialisation (fine-tuning, or a second schedule after a first): a zoo preset name
    (its sha256-verified weights) or a `.weights.h5` / `.keras` file of the same
    architecture; run.json records the file and its sha256. The optimizer starts afresh.
    `validation_examples=N` holds the last N training examples out: the model trains on
    the others, the per-epoch `val_` figures (progress bar, log.csv, TensorBoard) are
    those N examples', and the test set is evaluated only once, after the last epoch
    (result.json), so that a recipe or an epoch can be chosen without looking at it.
    `time_budget=S` (seconds of wall time for this call) sizes a new run's schedule to S
    from a step time measured first on a fresh copy of the model (`keras_fsnn.training.
    budget`; `step_timing`, a `StepTiming` or its dict, gives one measured earlier on the
    same machine instead), records the plan in run.json, and stops the run early at an
    epoch end if the epochs turn out slower than planned (result.json says so).

    `data_source`: where the data comes from, as `datasets.load_arrays`'s `source`: "files"
    (the official files in `data_dir`), "tfds" (tensorflow-datasets in `tfds_dir`, prepared
    from those files the first time) or "auto"; "files" and "tfds" give the same arrays, so
    the same batches. run.json records both; a resume keeps them unless given again.

    Every argument is checked before any data is loaded, model built or file written: a
    TypeError or ValueError names it, its value and what is allowed (epochs, batch_size,
    limit, checkpoint_every, validation_examples: integers >= 1, epochs >= 0 on a resume;
    warmup_steps, random_shift: integers >= 0, the shift smaller than the image;
    learning_rate finite and >= 0; milestones strictly increasing within the epochs;
    seed in [0, 2**32); time_budget finite and > 0; verbose "auto", 0, 1 or 2; the model
    options by the layers themselves, when the model is built before the data loads).
    """
    clock_start = time.monotonic()
    # an unknown name or an option the model does not take fails before anything is written
    if model_overrides is not None and not isinstance(model_overrides, dict):
        raise TypeError(f"Argument `model_overrides` must be a dict of model options; received "
                        f"model_overrides={model_overrides!r}.")
    check_model_overrides(name, model_overrides or {})
    resume = validation.boolean("resume", resume)
    if time_budget is not None:
        time_budget = validation.number("time_budget", time_budget, low=0.0, low_open=True, high=math.inf,
                                        high_open=True)
        planned = [k for k, v in (("milestones", milestones), ("warmup_steps", warmup_steps)) if v is not None]
        if planned and not resume:
            raise ValueError(f"time_budget={time_budget:g} plans the schedule itself; do not pass {', '.join(planned)} "
                             "as well (epochs, if given, is the most it plans).")
    if step_timing is not None:
        if time_budget is None:
            raise ValueError("step_timing is what a time budget is planned from; pass time_budget=... as well.")
        step_timing = step_timing if isinstance(step_timing, StepTiming) else StepTiming.from_dict(step_timing)
    pipeline = validation.choose("pipeline", pipeline, PIPELINES)
    data_source = validation.choose("data_source", data_source, datasets.SOURCES)
    tfds_dir = datasets.check_folder("tfds_dir", tfds_dir)
    if checkpoint_every is not None:
        checkpoint_every = validation.integer("checkpoint_every", checkpoint_every, minimum=1)
    if validation_examples is not None:
        validation_examples = validation.integer("validation_examples", validation_examples, minimum=1)
    if limit is not None:
        limit = validation.integer("limit", limit, minimum=1)
    seed = check_seed(seed)
    verbose = check_verbose(verbose)
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"Argument `jit_compile` must be one of 'auto', True, False; received jit_compile={jit_compile!r}.")
    if epochs is not None:  # on a resume, fewer epochs than trained is _check_epochs' to explain
        epochs = validation.integer("epochs", epochs, minimum=0 if resume else 1)
    overrides = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
                     milestones=list(milestones) if isinstance(milestones, (list, tuple)) else milestones,
                     random_shift=random_shift, random_flip=random_flip)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    asked = get_recipe(name).with_overrides({k: v for k, v in overrides.items() if k != "epochs" or not resume})
    if not resume:
        if milestones is not None:
            check_milestones(overrides["milestones"], asked.epochs)
        if validation_examples is not None:
            available = min(datasets.DATASETS[asked.dataset].sizes[0], limit or math.inf)
            if validation_examples >= available:
                raise ValueError(f"validation_examples={validation_examples}: the training set has {available} "
                                 "examples; hold out fewer, so that some are left to train on.")
    tensorflow = bool(importlib.util.find_spec("tensorflow"))
    if pipeline == "auto" and not resume:
        pipeline = "tf_data" if tensorflow else "numpy"
    if pipeline == "tf_data" and not tensorflow and not resume:
        raise ValueError("pipeline='tf_data' needs TensorFlow, which is not installed here; pass pipeline='numpy' "
                         "or 'auto' (the same batches).")
    output_dir = output_dir or os.path.join("runs", name)
    run_path = os.path.join(output_dir, "run.json")
    settings = {"name": name, "recipe_overrides": overrides, "model_overrides": dict(model_overrides or {}),
                "seed": seed, "limit": limit, "data_dir": data_dir, "pipeline": pipeline, "batch_draws": BATCH_DRAWS,
                "validation_examples": validation_examples, "data_source": data_source,
                "tfds_dir": tfds_dir}
    if initial_weights is not None and not resume:
        settings["initial_weights"] = _initial_weights(initial_weights)
    if os.path.exists(run_path):
        if not resume:
            raise FileExistsError(
                f"{output_dir} already holds a run of {json.load(open(run_path))['name']!r}; pass resume=True "
                "(--resume) to continue it, or choose another output directory.")
        saved = json.load(open(run_path))
        # A resumed run keeps its saved settings; only the number of epochs may grow.
        asked = {**{k: v for k, v in overrides.items() if k != "epochs"}, **settings["model_overrides"]}
        kept = {**{k: v for k, v in saved["recipe_overrides"].items() if k != "epochs"}, **saved["model_overrides"]}
        changed = {k: (kept.get(k), v) for k, v in asked.items() if kept.get(k) != v}
        if validation_examples is not None and validation_examples != saved.get("validation_examples"):
            changed["validation_examples"] = (saved.get("validation_examples"), validation_examples)
        if initial_weights is not None:
            raise ValueError(f"initial_weights={initial_weights!r}: a resumed run continues from its checkpoint; "
                             "initial_weights only starts a new run.")
        if changed:
            raise ValueError(f"resume continues the saved run with its own settings; these differ (saved, asked): {changed}")
        settings = {"pipeline": "tf_data", **saved, "data_dir": data_dir or saved.get("data_dir"),
                    "data_source": data_source if data_source != "auto" else saved.get("data_source", "auto"),
                    "tfds_dir": settings["tfds_dir"] or saved.get("tfds_dir")}
        if epochs is not None:
            settings["recipe_overrides"] = {**saved["recipe_overrides"], "epochs": epochs}
        session_pipeline = _resumed_pipeline(settings, pipeline, tensorflow, output_dir)
    elif resume:
        raise FileNotFoundError(f"Nothing to resume in {output_dir}: no run.json there.")
    else:
        session_pipeline = pipeline

    state_path = os.path.join(output_dir, "state.json")
    progress = json.load(open(state_path)) if resume and os.path.exists(state_path) else {}
    first_epoch, first_step = progress.get("finished_epochs", 0), progress.get("finished_steps", 0)
    _check_epochs(settings["recipe_overrides"].get("epochs", get_recipe(settings["name"]).epochs), first_epoch,
                  first_step, output_dir)
    recipe = get_recipe(settings["name"]).with_overrides(settings["recipe_overrides"])
    if resume and epochs is not None:
        _write_json(run_path, settings)
    model = None if progress else _new_model(settings)  # before the data loads: a bad model option fails at once
    info = datasets.DATASETS[recipe.dataset]
    x_train, y_train, x_test, y_test = (
        array for split in ("train", "test") for array in datasets.load_arrays(
            recipe.dataset, split, settings["data_dir"], source=settings["data_source"], tfds_dir=settings["tfds_dir"]))
    if settings["limit"]:
        x_train, y_train = x_train[: settings["limit"]], y_train[: settings["limit"]]
        x_test, y_test = x_test[: settings["limit"]], y_test[: settings["limit"]]
    held_out = settings.get("validation_examples")
    if held_out:
        if held_out >= len(y_train):
            raise ValueError(f"validation_examples={held_out}: the training set has {len(y_train)} examples; hold "
                             "out fewer, so that some are left to train on.")
        x_train, y_train, x_val, y_val = x_train[:-held_out], y_train[:-held_out], x_train[-held_out:], y_train[-held_out:]
    steps_per_epoch = int(np.ceil(len(y_train) / recipe.batch_size))
    batch_counts = {"test": int(np.ceil(len(y_test) / EVAL_BATCH)),
                    "validation": int(np.ceil(len(y_val) / EVAL_BATCH)) if held_out else 0}
    if time_budget is not None and not os.path.exists(run_path):  # a new run: plan its schedule
        if step_timing is None:
            step_timing = _time_steps(settings, recipe, info, x_train, y_train, x_test, y_test, jit_compile)
            model = _new_model(settings)  # the run's model, built afresh after the probe: as without a budget
        shape = get_recipe(settings["name"]).with_overrides(
            {k: v for k, v in settings["recipe_overrides"].items() if k != "epochs"})  # the recipe's own epochs
        plan = plan_schedule(shape, step_timing, time_budget, steps_per_epoch,
                             batch_counts["validation"] or batch_counts["test"],
                             batch_counts["test"] + batch_counts["validation"],
                             spent_seconds=time.monotonic() - clock_start,
                             partial_batches=any(len(y) % size for y, size in (
                                 (y_train, recipe.batch_size), (y_test, EVAL_BATCH),
                                 (y_val if held_out else y_test, EVAL_BATCH))), max_epochs=recipe.epochs)
        settings["recipe_overrides"] = {**settings["recipe_overrides"], **plan.overrides()}
        settings["time_budget"] = plan.as_dict()
        recipe = get_recipe(settings["name"]).with_overrides(settings["recipe_overrides"])
    if progress:
        import keras_fsnn  # noqa: F401  (registers the layers)

        model = keras.saving.load_model(os.path.join(output_dir, "checkpoint.keras"))
        # The checkpoint's step count is authoritative: state.json is written just after it, so
        # it lags by one checkpoint when the process was killed between the two writes.
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if done != first_epoch * steps_per_epoch + first_step:
            first_epoch, first_step = divmod(done, steps_per_epoch)
            _check_epochs(recipe.epochs, first_epoch, first_step, output_dir)
    if not os.path.exists(run_path):  # a new run: written once its data and initial weights have loaded
        os.makedirs(output_dir, exist_ok=True)
        _write_json(run_path, {**settings, "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    if jit_compile == "auto":
        jit_compile = auto_jit_compile(model)
    if progress:
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=jit_compile)
    else:
        model = compile_model(model, recipe, steps_per_epoch, jit_compile)

    def training_batches(first, last, first_batch=0):
        """Batches of epochs first..last-1 (from batch first_batch of the first), and fit's options
        (shuffle=False: they are shuffled by (seed, epoch) already)."""
        if session_pipeline == "numpy":
            data = EpochBatches(info, x_train, y_train, recipe.batch_size, settings["seed"], first,
                                recipe.augmentation(), first_batch)
        else:
            data = epoch_pipeline(info, x_train, y_train, recipe.batch_size, first, last, settings["seed"],
                                  recipe.augmentation(), first_batch, draws=_batch_draws(settings))
        return data, {"steps_per_epoch": steps_per_epoch - first_batch, "shuffle": False}

    def evaluation_batches(images, labels):
        if session_pipeline == "numpy":
            return ArrayBatches(info, images, labels, EVAL_BATCH)
        return datasets.make_pipeline(recipe.dataset, "test", batch_size=EVAL_BATCH, arrays=(images, labels))

    test_data = evaluation_batches(x_test, y_test)
    # what the epochs report as val_: the held-out training examples, or else the test set
    validation_data = evaluation_batches(x_val, y_val) if held_out else test_data
    checkpoint = RunCheckpoint(output_dir, steps_per_epoch, checkpoint_every)
    callbacks = [checkpoint, EquilibriumMonitor(),
                 keras.callbacks.CSVLogger(os.path.join(output_dir, "log.csv"), append=True), *callbacks]
    guard = None
    if time_budget is not None:
        timing = settings.get("time_budget", {}).get("timing")
        final = sum(batch_counts.values()) * 2 * timing["evaluation_seconds"] if timing else 0.0
        guard = WallClockGuard(clock_start + time_budget, FINAL_SECONDS + final, recipe.epochs)
        callbacks.append(guard)
    # Keras's TensorBoard callback writes through tf.summary: it needs TensorFlow as well.
    if all(importlib.util.find_spec(package) for package in ("tensorboard", "tensorflow")):
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
    else:
        warnings.warn("TensorBoard logs are off: they need the tensorboard and tensorflow packages "
                      "(pip install 'keras-fsnn[train]'); log.csv is written.", stacklevel=2)
    started = time.time()
    if first_step:  # the rest of the interrupted epoch (its logged training metrics cover only this part)
        data, steps = training_batches(first_epoch, first_epoch + 1, first_step)
        checkpoint.step_offset = first_step
        model.fit(data, epochs=first_epoch + 1, initial_epoch=first_epoch, validation_data=validation_data,
                  callbacks=callbacks, verbose=verbose, **steps)
        first_epoch += 1
    if first_epoch < recipe.epochs:
        data, steps = training_batches(first_epoch, recipe.epochs)
        model.fit(data, epochs=recipe.epochs, initial_epoch=first_epoch, validation_data=validation_data,
                  callbacks=callbacks, verbose=verbose, **steps)
    model.save(os.path.join(output_dir, "model.keras"))
    result = evaluate(model, test_data, verbose=verbose)
    if held_out:
        on_validation = evaluate(model, validation_data, residual_batches=1, verbose=verbose)
        result["validation"] = {k: on_validation[k] for k in ("accuracy", "loss", "examples")}
    result.update(epochs=recipe.epochs, train_seconds_this_session=round(time.time() - started, 1),
                  trained_steps=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                  machine=machine_description(), parameters=count_parameters(model), dataset=recipe.dataset)
    if guard is not None:
        result["time_budget"] = {"budget_seconds": time_budget, "stopped": guard.stopped,
                                 "wall_seconds": round(time.monotonic() - clock_start, 1)}
    _write_json(os.path.join(output_dir, "result.json"), result)
    return result


def check_seed(seed):
    """A run's seed: an integer in [0, 2**32) (NumPy's seeds; Keras seeds NumPy with it)."""
    seed = validation.integer("seed", seed, minimum=0)
    if seed > MAX_SEED:
        raise ValueError(f"Argument `seed` must be an integer in [0, {MAX_SEED}]; received seed={seed!r}.")
    return seed


def check_verbose(verbose):
    """Keras's verbosity: "auto", 0 (silent), 1 (progress bar) or 2 (one line per epoch)."""
    key = str(verbose).lower() if isinstance(verbose, (str, numbers.Integral)) and not isinstance(verbose, bool) else None
    if key not in VERBOSE:
        raise ValueError(f"Argument `verbose` must be one of 'auto', 0, 1, 2; received verbose={verbose!r}.")
    return VERBOSE[key]


def check_evaluation_options(limit=None, batch_size=EVAL_BATCH, time_steps=None, residual_batches=4,
                             verbose="auto"):
    """The options of an evaluation (`evaluate`, `evaluate_preset`, `keras-fsnn eval`),
    checked before a model loads: limit (None: all), batch_size, time_steps (None: the
    model's own) and residual_batches are integers >= 1; verbose as `check_verbose`."""
    if limit is not None:
        validation.integer("limit", limit, minimum=1)
    validation.integer("batch_size", batch_size, minimum=1)
    if time_steps is not None:
        validation.integer("time_steps", time_steps, minimum=1)
    validation.integer("residual_batches", residual_batches, minimum=1)
    return check_verbose(verbose)


def _batch_draws(settings):
    """How the run's epochs are drawn (BATCH_DRAWS): run.json's "batch_draws", else (a run
    started before it was recorded) "tf_stateless" for tf.data runs, NumPy's for the others."""
    return settings.get("batch_draws") or ("tf_stateless" if settings["pipeline"] == "tf_data" else "numpy")


def _resumed_pipeline(settings, asked, tensorflow, output_dir):
    """The pipeline a resumed run continues on: "auto" keeps the one it started with (NumPy's
    where TensorFlow is missing: the same batches); the other may be asked for, except by a
    run whose tf.data batches TensorFlow's RNG drew (before run.json recorded "batch_draws")."""
    started = settings["pipeline"]
    if _batch_draws(settings) == "tf_stateless":
        if asked not in ("auto", "tf_data") or not tensorflow:
            raise ValueError(
                f"pipeline={asked!r}: the run in {output_dir} was started with pipeline='tf_data' by an earlier "
                "keras-fsnn, whose tf.data batches TensorFlow's stateless RNG drew (its run.json has no "
                "\"batch_draws\"); it continues exactly only on tf.data: resume it with pipeline='tf_data' "
                "(--pipeline tf_data) or 'auto'" + ("" if tensorflow else ", on a machine with TensorFlow") + ".")
        return "tf_data"
    if asked == "auto":
        return "numpy" if started == "tf_data" and not tensorflow else started
    if asked == "tf_data" and not tensorflow:
        raise ValueError("pipeline='tf_data' needs TensorFlow, which is not installed here; resume with "
                         "pipeline='numpy' or 'auto' (the same batches).")
    return asked


def _new_model(settings):
    """A new run's model: seeded, built with the run's options, from its initial weights if any."""
    keras.utils.set_random_seed(settings["seed"])
    model = build_model(settings["name"], **settings["model_overrides"])
    if settings.get("initial_weights"):
        _load_initial_weights(model, settings["initial_weights"])
    return model


def time_training_step(name, x_train, y_train, x_eval=None, y_eval=None, seed=0, model_overrides=None,
                       recipe_overrides=None, jit_compile="auto", initial_weights=None, steps=8):
    """The `StepTiming` of zoo entry `name` trained as `train` would train it: a fresh copy,
    built and compiled like the run's model, trained `steps + 1` steps on the first batches
    of epoch 0 of (x_train, y_train) (arrays as `datasets.load_arrays` returns them) and
    evaluated on one batch of (x_eval, y_eval) (default: the training arrays). A
    `train(..., time_budget=...)` on the same machine can take it as `step_timing`."""
    recipe = check_model_overrides(name, model_overrides or {}).with_overrides(recipe_overrides or {})
    settings = {"name": name, "seed": seed, "model_overrides": dict(model_overrides or {})}
    if initial_weights is not None:
        settings["initial_weights"] = _initial_weights(initial_weights)
    info = datasets.DATASETS[recipe.dataset]
    return _time_steps(settings, recipe, info, x_train, y_train, x_train if x_eval is None else x_eval,
                       y_train if y_eval is None else y_eval, jit_compile, steps)


def _time_steps(settings, recipe, info, x_train, y_train, x_eval, y_eval, jit_compile, steps=8):
    model = _new_model(settings)
    steps_per_epoch = int(np.ceil(len(y_train) / recipe.batch_size))
    model = compile_model(model, recipe, steps_per_epoch, auto_jit_compile(model) if jit_compile == "auto" else jit_compile)
    batches = EpochBatches(info, x_train, y_train, recipe.batch_size, settings["seed"], 0, recipe.augmentation())
    return measure_step(model, batches, ArrayBatches(info, x_eval, y_eval, EVAL_BATCH)[0], steps)


def _initial_weights(source):
    """run.json's record of the weights a run starts from: the file and its sha256."""
    from keras_fsnn import zoo

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"initial_weights={source!r}: expected a zoo preset name or a path, got {type(source).__name__}.")
    source = os.fspath(source)
    if os.path.isfile(source):
        path = source
    elif source in zoo.names():
        path = zoo.pretrained_weights_path(zoo.locate(source))
    else:
        raise ValueError(f"initial_weights={source!r}: neither a weights file (.weights.h5 / .keras) nor a zoo "
                         f"preset; known presets: {', '.join(zoo.names())}.")
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(f"initial_weights={source!r}: expected a .weights.h5 or .keras file.")
    return {"source": source, "path": os.path.abspath(path), "sha256": zoo.sha256(path)}


def _load_initial_weights(model, record):
    from keras_fsnn import zoo

    if zoo.sha256(record["path"]) != record["sha256"]:
        raise ValueError(f"initial_weights: {record['path']} changed since the run started "
                         f"(sha256 {record['sha256']} recorded).")
    zoo.load_weights(model, record["path"])


def evaluate(model, data, residual_batches=4, verbose="auto"):
    """Test accuracy and loss, mean firing rate per spiking layer over the whole data, and
    the equilibrium residual ||f(a[T]) - a[T]|| at T (mean over a few batches), of the
    model's last spiking layer (a FeedbackSpikingBlock or ImplicitStreams).

    `verbose`: "auto" or 1 shows a Keras progress bar over the batches (with the running
    accuracy), 2 one line at the end, 0 nothing. Data without a single example is a
    ValueError.

    `firing_rates` lists the layers' rates and `firing_rate_layers` their names ("1", "2",
    ... for a block; "s1_1", ... stream by stream for ImplicitStreams). For ImplicitStreams,
    `residual_at_T` is the largest stream's residual (the joint fixed point is reached only
    when every stream's is), `residual_at_T_per_stream` each one, `residual_trace` one
    curve per stream."""
    from keras import ops

    verbose = check_evaluation_options(residual_batches=residual_batches, verbose=verbose)
    verbose = 1 if verbose == "auto" else verbose
    try:
        batches = len(data)
    except TypeError:  # a tf.data pipeline of unknown length, a generator
        batches = None
    progress = keras.utils.Progbar(batches, verbose=verbose, stateful_metrics=["accuracy"], unit_name="batch") \
        if verbose else None
    layers = spiking_layers(model)
    layer = layers[-1] if layers else None
    correct = total = 0
    loss_sum = 0.0
    rate_sum = None
    residuals = []
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    for i, (x, y) in enumerate(data):
        x, y = np.asarray(x), np.asarray(y)  # tf.data gives tensors, which JAX's functions refuse
        logits = model.predict_on_batch(x)  # compiled once (an eager call would be op by op)
        correct += int(np.sum(np.argmax(ops.convert_to_numpy(logits), -1) == y))
        total += len(y)
        loss_sum += float(loss_fn(y, logits))
        if progress is not None:
            progress.update(i + 1, [("accuracy", correct / total)], finalize=False)
        if layer is None:
            continue
        rates = {k[len("rate_"):]: v for k, v in layer.diagnostics().items() if k.startswith("rate_")}
        weighted = np.asarray(list(rates.values())) * len(y)
        rate_sum = weighted if rate_sum is None else rate_sum + weighted
        if i < residual_batches:
            trace = layer.simulate(block_inputs(model, layer, x), record_residuals=True)["residuals"]
            residuals.append(ops.convert_to_numpy(trace))
    if not total:
        raise ValueError("evaluate: the data held no examples (an empty test set, or a limit of 0).")
    if progress is not None:
        progress.update(i + 1, [("accuracy", correct / total)], finalize=True)
    result = {"accuracy": correct / total, "loss": loss_sum / total, "examples": total}
    if layer is not None:
        result["firing_rates"] = [float(r) for r in rate_sum / total]
        result["firing_rate_layers"] = list(rates)
        trace = np.mean(residuals, axis=0)  # (T,) for a block, (streams, T) for ImplicitStreams
        result["residual_at_T"] = float(np.max(trace[..., -1]))
        if trace.ndim == 2:
            result["residual_at_T_per_stream"] = [float(v) for v in trace[:, -1]]
        result["residual_trace"] = trace.tolist()
        result["time_steps"] = layer.time_steps
    return result


def machine_description():
    device = accelerator()
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores" + (f", {device}" if device else "")
            + f", Keras {keras.__version__} ({keras.backend.backend()}), Python {sys.version.split()[0]}")


def _check_epochs(epochs, finished_epochs, finished_steps, output_dir):
    needed = finished_epochs + (finished_steps > 0)
    if epochs < needed:
        raise ValueError(
            f"epochs={epochs}, but the run in {output_dir} has trained {finished_epochs} epochs"
            + (f" and {finished_steps} steps of the next" if finished_steps else "")
            + f": pass --epochs {needed} or more.")


def json_safe(value, where=""):
    """`value` with every non-finite float (NaN, +-inf: a diverged run's loss) replaced by
    None, so that it is strict JSON, and {path: "nan" | "inf" | "-inf"} of what was replaced
    (paths like "loss", "validation.loss", "firing_rates[2]")."""
    if isinstance(value, dict):
        clean, replaced = {}, {}
        for key, item in value.items():
            clean[key], inner = json_safe(item, f"{where}.{key}" if where else str(key))
            replaced.update(inner)
        return clean, replaced
    if isinstance(value, (list, tuple)):
        clean, replaced = [], {}
        for k, item in enumerate(value):
            item, inner = json_safe(item, f"{where}[{k}]")
            clean.append(item)
            replaced.update(inner)
        return clean, replaced
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None, {where: str(float(value))}
    if isinstance(value, np.generic):
        return value.item(), {}
    return value, {}


def _write_json(path, value):
    """Strict JSON (`json_safe`); a dict that had non-finite numbers lists them under "non_finite"."""
    value, replaced = json_safe(value)
    if replaced and isinstance(value, dict):
        value["non_finite"] = replaced
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)
