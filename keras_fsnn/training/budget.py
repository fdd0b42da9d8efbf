"""Training within a wall-clock budget: a schedule sized from a step time measured first.

A lent accelerator comes for minutes, not for the paper's 100 epochs. `train(...,
time_budget=S)` therefore times a few training steps of a fresh copy of the model on the
run's own first batches (`measure_step`), then plans the longest schedule of the recipe's
shape that fits S seconds (`plan_schedule`):

    epochs E = floor((S - spent - compile - final) / (epoch * (1 + margin))),
    epoch    = steps_per_epoch * step + validation_batches * evaluation_batch,

where `step` is the median step after the compiling one, `compile` the first training and
evaluation steps' extra time (the run's own model compiles again; twice where a smaller
last batch has a shape of its own), `final` what the end of a run costs (the test
evaluation and the saves) and `margin` covers steps that grow slower as the adjoint solver
needs more iterations in a trained network. The recipe's milestones keep their place as
fractions of its epochs (CIFAR: 50 and 75 of 100 -> E/2 and 3E/4), the warmup keeps its
length unless that is more than a tenth of all steps, and E is at most the recipe's epochs
(or the `epochs` asked for: the budget then only shortens it). The planned epochs, milestones
and warmup are ordinary recipe overrides: run.json records them, so the run resumes and
reproduces like any other, and `WallClockGuard` stops it at an epoch end if the epochs turn
out slower than planned, so that the final evaluation and the saves still fit.
"""

import math
import statistics
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from keras_fsnn import validation

MARGIN = 0.15
# The end of a run beyond its evaluation batches: model.keras and result.json written, the
# residual traces of `evaluate` simulated (a few compiles of their own), seconds.
FINAL_SECONDS = 30.0


@dataclass(frozen=True)
class StepTiming:
    """Measured training-step costs of one model on one machine (seconds)."""

    batch_size: int
    first_step_seconds: float  # trace, compile and run the first training step
    step_seconds: float  # median of the steps after it
    first_evaluation_seconds: float  # compile and run the first evaluation batch
    evaluation_seconds: float  # one compiled evaluation batch (after its own compile)
    evaluation_batch: int
    steps_measured: int
    backward_iterations: float = None  # mean adjoint-solver iterations of the measured steps
    device: str = ""

    @classmethod
    def from_dict(cls, record):
        """A StepTiming from `as_dict()`'s record (e.g. a JSON file of an earlier probe)."""
        if not isinstance(record, dict):
            raise TypeError(f"Argument `step_timing` must be a StepTiming or its dict; received {record!r}.")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(record) - names)
        if unknown:
            raise ValueError(f"Argument `step_timing` has unknown entries {unknown}; known: {sorted(names)}.")
        timing = cls(**record)
        for name in ("first_step_seconds", "step_seconds", "first_evaluation_seconds", "evaluation_seconds"):
            validation.number(f"step_timing.{name}", getattr(timing, name), low=0.0, low_open=True, high=math.inf,
                              high_open=True)
        return timing

    def as_dict(self):
        return asdict(self)


def accelerator():
    """The accelerator the active backend computes on, in words ("" for the CPU)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return "" if device.platform == "cpu" else f"{len(jax.devices())} x {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"{len(gpus)} x GPU" if gpus else ""


def measure_step(model, batches, evaluation_batch, steps=8):
    """Time `steps + 1` training steps of the compiled `model` on the first full batches of
    `batches` (a sequence of (x, y) batches, as long as needed; the first step compiles:
    a batch of another size would compile again) and one evaluation batch
    `evaluation_batch` = (x, y), run twice (the first compiles)."""
    from keras_fsnn.inspection import spiking_layers

    steps = validation.integer("steps", steps, minimum=1)
    durations, iterations, index = [], [], 0
    size = len(batches[0][1])
    while len(durations) < steps + 1:
        x, y = batches[index]
        index += 1
        if len(y) != size:
            continue
        start = time.perf_counter()
        model.train_on_batch(x, y)  # returns host values: the step has finished
        durations.append(time.perf_counter() - start)
        report = [layer.diagnostics() for layer in spiking_layers(model)]
        if report and "backward_iterations" in report[-1]:
            iterations.append(report[-1]["backward_iterations"])
    x, y = evaluation_batch
    evaluations = []
    for _ in range(2):
        start = time.perf_counter()
        model.test_on_batch(x, y)
        evaluations.append(time.perf_counter() - start)
    return StepTiming(batch_size=int(size), first_step_seconds=durations[0],
                      step_seconds=statistics.median(durations[1:]), first_evaluation_seconds=evaluations[0],
                      evaluation_seconds=evaluations[1], evaluation_batch=int(len(y)), steps_measured=steps,
                      backward_iterations=float(np.mean(iterations[1:])) if len(iterations) > 1 else None,
                      device=accelerator())


@dataclass(frozen=True)
class BudgetPlan:
    """A schedule sized to a budget, and the figures it was sized from."""

    budget_seconds: float
    spent_seconds: float  # before planning (loading the data, measuring)
    epochs: int
    milestones: tuple
    warmup_steps: int
    epoch_seconds: float  # estimated, margin included
    reserved_seconds: float  # the run's own compile and its end
    timing: StepTiming

    def overrides(self):
        """The recipe overrides that give this schedule."""
        return {"epochs": self.epochs, "milestones": list(self.milestones), "warmup_steps": self.warmup_steps}

    def as_dict(self):
        record = asdict(self)
        record["milestones"] = list(self.milestones)
        record["timing"] = self.timing.as_dict()
        return record


def plan_schedule(recipe, timing, budget_seconds, steps_per_epoch, validation_batches, final_batches,
                  spent_seconds=0.0, partial_batches=True, max_epochs=None, margin=MARGIN):
    """The BudgetPlan of `recipe`'s schedule in `budget_seconds` (module docstring), of
    at most `max_epochs` (default: the recipe's own) epochs.

    `validation_batches`: evaluation batches run after every epoch; `final_batches`: those
    of the final test evaluation; `spent_seconds`: already used of the budget;
    `partial_batches`: whether an epoch or an evaluation ends with a smaller batch, which
    compiles its own step (reserved too)."""
    budget_seconds = validation.number("time_budget", budget_seconds, low=0.0, low_open=True, high=math.inf,
                                       high_open=True)
    epoch = (steps_per_epoch * timing.step_seconds + validation_batches * timing.evaluation_seconds) * (1 + margin)
    compiles = 2 if partial_batches else 1
    compile_seconds = compiles * (max(timing.first_step_seconds - timing.step_seconds, 0.0)
                                  + max(timing.first_evaluation_seconds - timing.evaluation_seconds, 0.0))
    reserved = compile_seconds + final_batches * timing.evaluation_seconds * 2 + FINAL_SECONDS
    fit = math.floor((budget_seconds - spent_seconds - reserved) / epoch)
    epochs = min(fit, recipe.epochs if max_epochs is None else max_epochs)
    if epochs < 1:
        raise ValueError(
            f"time_budget={budget_seconds:g} s is too short for one epoch: {spent_seconds:.0f} s are spent, an epoch "
            f"takes about {epoch:.0f} s ({steps_per_epoch} steps of {timing.step_seconds:.3f} s, margin included) "
            f"and compiling and finishing the run about {reserved:.0f} s.")
    milestones = sorted({round(m * epochs / recipe.epochs) for m in recipe.milestones} & set(range(1, epochs)))
    warmup = min(recipe.warmup_steps, (epochs * steps_per_epoch) // 10)
    return BudgetPlan(budget_seconds=budget_seconds, spent_seconds=round(spent_seconds, 1), epochs=epochs,
                      milestones=tuple(milestones), warmup_steps=warmup, epoch_seconds=round(epoch, 2),
                      reserved_seconds=round(reserved, 1), timing=timing)


class WallClockGuard(keras.callbacks.Callback):
    """Stop a run of `epochs` epochs before its budget runs out: at an epoch end when one
    more epoch (as long as the slowest so far) would not leave `reserve_seconds` before
    `deadline` (a `time.monotonic()` value), and after any batch once only the reserve is
    left. When it stops the run it records `stopped`: {"after_epochs", "reason"}."""

    def __init__(self, deadline, reserve_seconds, epochs):
        super().__init__()
        self.deadline, self.reserve, self.epochs = deadline, reserve_seconds, epochs
        self.stopped = None
        self._epoch, self._epoch_start, self._slowest = 0, None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._epoch_start = epoch, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        # the clock first: on JAX, touching `self.model` syncs the whole training state
        if time.monotonic() > self.deadline - self.reserve and not self.stopped:
            self._stop(self._epoch + (batch + 1) / self.params.get("steps", batch + 1),
                       f"the budget ran out in epoch {self._epoch + 1}, after its batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._slowest = max(self._slowest, time.monotonic() - self._epoch_start)
        if not self.stopped and epoch + 1 < self.epochs and (
                time.monotonic() + self._slowest > self.deadline - self.reserve):
            self._stop(epoch + 1, f"epoch {epoch + 2} (about {self._slowest:.0f} s) would not have fit the budget")

    def _stop(self, after_epochs, reason):
        self.model.stop_training = True
        self.stopped = {"after_epochs": round(after_epochs, 3), "reason": reason}
