from keras_fsnn.training.budget import StepTiming, plan_schedule
from keras_fsnn.training.export import SLICE, evaluate_preset, export_run, load_for_evaluation
from keras_fsnn.training.optimizers import CoupledSGD, WarmupMultiStep
from keras_fsnn.training.recipes import RECIPES, Recipe, get_recipe
from keras_fsnn.training.trainer import auto_jit_compile, build_model, evaluate, time_training_step, train

__all__ = ["CoupledSGD", "RECIPES", "Recipe", "SLICE", "StepTiming", "WarmupMultiStep", "auto_jit_compile",
           "build_model", "evaluate", "evaluate_preset", "export_run", "get_recipe", "load_for_evaluation",
           "plan_schedule", "time_training_step", "train"]
