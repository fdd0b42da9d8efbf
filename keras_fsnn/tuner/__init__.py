"""Hyperparameter search for feedback spiking networks with keras-tuner.

    import keras_tuner
    from keras_fsnn.tuner import HyperFSNN

    tuner = keras_tuner.BayesianOptimization(
        HyperFSNN((28, 28, 1), 10, layer="dense", search_space={"time_steps": (5, 10)}),
        objective="val_accuracy", max_trials=20, seed=0, directory="tuning", project_name="f400")
    tuner.search(x, y, epochs=3, validation_data=(x_val, y_val))

Needs keras-tuner (`pip install "keras-fsnn[tune]"`).
"""

try:
    import keras_tuner
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "keras_fsnn.tuner needs keras-tuner: pip install 'keras-fsnn[tune]' (or pip install keras-tuner)."
    ) from error

from keras_fsnn.tuner.hypermodels import (
    FSNNHyperModel,
    HyperAlexNetF,
    HyperCIFARNetF,
    HyperFSNN,
    HyperMPIS,
    HyperMultilayerFSNN,
)
from keras_fsnn.tuner.search_space import COMMON, WIDTHS, Dimension, SearchSpace

__all__ = ["COMMON", "WIDTHS", "Dimension", "FSNNHyperModel", "HyperAlexNetF", "HyperCIFARNetF", "HyperFSNN",
           "HyperMPIS", "HyperMultilayerFSNN", "SearchSpace"]
