from keras_fsnn.training.optimizers import CoupledSGD, WarmupMultiStep
from keras_fsnn.training.recipes import RECIPES, Recipe, get_recipe
from keras_fsnn.training.trainer import auto_jit_compile, build_model, evaluate, train

__all__ = ["CoupledSGD", "RECIPES", "Recipe", "WarmupMultiStep", "auto_jit_compile", "build_model", "evaluate",
           "get_recipe", "train"]
