"""keras-fsnn: feedback spiking neural networks trained at their equilibrium, for Keras 3.

Import this package before loading a `.keras` file that holds its layers (it registers
them with Keras under the package name "keras_fsnn").
"""

from keras_fsnn import _environment  # noqa: F401  (first: TensorFlow reads it when imported)
from keras_fsnn import (
    backend,
    callbacks,
    datasets,
    gradients,
    initializers,
    metrics,
    models,
    neurons,
    solvers,
    training,
    zoo,
)
from keras_fsnn.layers import (
    FeedbackSpikingBlock,
    FrobeniusNormRestriction,
    ImplicitStreams,
    SpectralNormRestriction,
    TernaryCouple,
)

__version__ = "0.1.0"

__all__ = [
    "FeedbackSpikingBlock",
    "FrobeniusNormRestriction",
    "ImplicitStreams",
    "SpectralNormRestriction",
    "TernaryCouple",
    "backend",
    "callbacks",
    "datasets",
    "gradients",
    "initializers",
    "metrics",
    "models",
    "neurons",
    "solvers",
    "training",
    "zoo",
]
