from keras_fsnn.layers.feedback_spiking_block import FeedbackSpikingBlock
from keras_fsnn.layers.implicit_streams import ImplicitStreams
from keras_fsnn.layers.frobenius_norm import FrobeniusNormRestriction
from keras_fsnn.layers.spectral_norm import SpectralNormRestriction
from keras_fsnn.layers.ternary_couple import TernaryCouple

__all__ = ["FeedbackSpikingBlock", "FrobeniusNormRestriction", "ImplicitStreams", "SpectralNormRestriction", "TernaryCouple"]
