"""Training within a wall-clock budget: the plan is the recipe's schedule shortened to fit the
measured step time, the guard stops a run that turns out slower, and a budgeted run is
exactly the run of the schedule it planned."""

import json
import types

import keras
import numpy as np
import pytest
from conftest import QUICK_JIT
from data_paths import shared_data

from _keras_fsnn.cli import _model_overrides, build_parser, train_command
from keras_fsnn.cli import main as cli
from keras_fsnn.training import budget, get_recipe, train
from keras_fsnn.training.budget import StepTiming, WallClockGuard, plan_schedule

GPU_LIKE = StepTiming(batch_size=128, first_step_seconds=30.05, step_seconds=0.05, first_evaluation_seconds=10.02,
                      evaluation_seconds=0.02, evaluation_batch=256, steps_measured=8)


def test_the_plan_is_the_recipe_schedule_shortened_to_fit_the_budget():
    recipe = get_recipe("alexnet_f")  # 100 epochs, milestones 50 and 75, 400 warmup steps
    plan = plan_schedule(recipe, GPU_LIKE, 480, steps_per_epoch=391, validation_batches=40, final_batches=40,
                         spent_seconds=20)
    # an epoch: (391 * 0.05 + 40 * 0.02) * 1.15 = 23.40 s; reserved: two compiles of the step and of
    # the evaluation (the last batches are smaller) 2 * (30 + 10), the final evaluation 40 * 0.02 * 2, 30 s
    assert plan.epoch_seconds == pytest.approx(23.40, abs=0.01) and plan.reserved_seconds == pytest.approx(111.6)
    assert plan.epochs == 14 and plan.milestones == (7, 10) and plan.warmup_steps == 400
    assert plan.spent_seconds + plan.reserved_seconds + plan.epochs * plan.epoch_seconds <= 480
    assert plan.overrides() == {"epochs": 14, "milestones": [7, 10], "warmup_steps": 400}
    assert json.loads(json.dumps(plan.as_dict()))["timing"] == GPU_LIKE.as_dict()

    capped = plan_schedule(recipe, GPU_LIKE, 480, 391, 40, 40, spent_seconds=20, max_epochs=10)
    assert capped.epochs == 10 and capped.milestones == (5, 8) and capped.warmup_steps == 391  # 10% of the steps
    whole = plan_schedule(get_recipe("fsnn_fmnist"), GPU_LIKE, 10**6, 391, 40, 40, partial_batches=False)
    assert whole.epochs == 100 and whole.milestones == (30, 60, 90)  # the budget only ever shortens the recipe
    with pytest.raises(ValueError, match=r"time_budget=150 s is too short for one epoch: 20 s are spent, an epoch "
                                         r"takes about 23 s"):
        plan_schedule(recipe, GPU_LIKE, 150, 391, 40, 40, spent_seconds=20)
    with pytest.raises(ValueError, match=r"`time_budget` must lie in \(0.0, inf\)"):
        plan_schedule(recipe, GPU_LIKE, 0, 391, 40, 40)


def test_step_timing_records_are_checked():
    assert StepTiming.from_dict(GPU_LIKE.as_dict()) == GPU_LIKE
    with pytest.raises(ValueError, match=r"unknown entries \['steps'\]"):
        StepTiming.from_dict({**GPU_LIKE.as_dict(), "steps": 3})
    with pytest.raises(ValueError, match=r"`step_timing.step_seconds` must lie in \(0.0, inf\)"):
        StepTiming.from_dict({**GPU_LIKE.as_dict(), "step_seconds": 0.0})
    with pytest.raises(TypeError, match="StepTiming or its dict"):
        StepTiming.from_dict([1, 2])


class Clock:
    """A clock the test advances by one second at every training batch."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.mark.parametrize("deadline, reserve, stopped", [
    (20.0, 6.0, {"after_epochs": 3, "reason": "epoch 4 (about 4 s) would not have fit the budget"}),
    (2.5, 0.0, {"after_epochs": 0.75, "reason": "the budget ran out in epoch 1, after its batch 3"}),
    (100.0, 0.0, None),
])
def test_the_guard_stops_a_run_before_its_budget_runs_out(monkeypatch, deadline, reserve, stopped):
    clock = Clock()
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    tick = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: setattr(clock, "now", clock.now + 1))
    guard = WallClockGuard(clock.now + deadline, reserve, epochs=5)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(np.zeros((8, 2)), np.zeros((8, 1)), batch_size=2, epochs=5, verbose=0, callbacks=[tick, guard])
    assert guard.stopped == stopped
    assert len(history.history["loss"]) == (5 if stopped is None else int(np.ceil(stopped["after_epochs"])))


def test_a_budgeted_run_is_the_run_of_its_planned_schedule(tmp_path):
    root = shared_data("fashion_mnist")
    flags = ["--data-dir", root, "--limit", "128", "--batch-size", "64", "--time-steps", "2", "--verbose", "0",
             "--jit", "on" if QUICK_JIT else "off"]
    # at most 2 epochs, well inside 300 s: the step is timed on a copy of the model, then the run trains
    cli(["train", "fsnn_fmnist", "--output-dir", str(tmp_path / "budgeted"), "--epochs", "2", "--time-budget", "300",
         *flags])
    run = json.load(open(tmp_path / "budgeted" / "run.json"))
    plan, result = run["time_budget"], json.load(open(tmp_path / "budgeted" / "result.json"))
    assert plan["epochs"] == 2 and plan["timing"]["step_seconds"] > 0 and plan["timing"]["batch_size"] == 64
    # the milestones 30, 60 and 90 of 100 epochs scaled to 2: 0.6, 1.2 and 1.8 round to epoch 1 (and 2, the end)
    assert run["recipe_overrides"] == {"batch_size": 64, "epochs": 2, "milestones": [1], "warmup_steps": 0}
    assert result["time_budget"]["stopped"] is None and result["trained_steps"] == 4

    plain = train("fsnn_fmnist", output_dir=str(tmp_path / "plain"), data_dir=root, limit=128, verbose=0,
                  model_overrides={"time_steps": 2}, jit_compile=QUICK_JIT, **run["recipe_overrides"])
    assert plain["accuracy"] == result["accuracy"]
    budgeted = keras.saving.load_model(tmp_path / "budgeted" / "model.keras")
    for a, b in zip(budgeted.get_weights(), keras.saving.load_model(tmp_path / "plain" / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ValueError, match=r"plans the schedule itself; do not pass milestones"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "refused"), time_budget=60, milestones=[1])
    with pytest.raises(ValueError, match=r"step_timing is what a time budget is planned from"):
        train("fsnn_fmnist", output_dir=str(tmp_path / "refused"), step_timing=GPU_LIKE)
    assert not (tmp_path / "refused").exists()


def test_the_planned_schedule_is_repeated_by_its_train_command_line():
    recipe = {"batch_size": 64, "epochs": 3, "milestones": [], "warmup_steps": 0, "random_flip": False}
    model = {"simulation_dtype": "bfloat16", "solver_tol": 1e-3, "time_steps": 2}
    line = train_command("alexnet_f", recipe, model, seed=4)
    args = build_parser().parse_args(line.split()[1:])
    assert (args.name, args.seed, _model_overrides(args)) == ("alexnet_f", 4, model)
    assert (args.batch_size, args.epochs, args.milestones, args.warmup_steps, args.random_flip) == (64, 3, [], 0, "off")
    assert train_command("alexnet_f", recipe, {"num_classes": 100}) is None  # no flag for it: no line
