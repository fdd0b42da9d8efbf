from keras_fsnn.layers.feedback_spiking_block import FeedbackSpikingBlock
from keras_fsnn.layers.implicit_streams import ImplicitStreams
from keras_fsnn.layers.spectral_norm import SpectralNormRestriction

__all__ = ["FeedbackSpikingBlock", "ImplicitStreams", "SpectralNormRestriction"]
