from keras_fsnn.training.optimizers import CoupledSGD, WarmupMultiStep
from keras_fsnn.training.recipes import RECIPES, Recipe, get_recipe
from keras_fsnn.training.trainer import build_model, evaluate, train

__all__ = ["CoupledSGD", "RECIPES", "Recipe", "WarmupMultiStep", "build_model", "evaluate", "get_recipe", "train"]
