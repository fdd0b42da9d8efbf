"""The weight initialisation of the IDE experiments (paper 000 F.3.2, seed-code.md §2.2)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fsnn")
class UnitNormUniform(keras.initializers.Initializer):
    """Uniform weights, then each output unit's weights scaled to unit L2 norm.

    Paper 000 F.3.2: "first samples the weight parameters from the standard uniform
    distribution and then normalize them for each output dimension" (following STBP, its
    ref. [44]). The released code samples U(-1, 1); that is the default here, since an
    all-positive U(0, 1) kernel is not what the released models were trained from. Pass
    `minval=0.0` for the literal reading of the paper.

    Args:
        axis: the kernel axis that indexes output units: -1 for Dense and Conv2D kernels,
            -2 for Conv2DTranspose kernels (Keras layout (kh, kw, out, in)).
        minval, maxval: the uniform range before normalisation.
        scale: the norm of each output unit's weights after normalisation (1; SPIDE's
            released code multiplies its feedback's by 0.1).
        seed: random seed.
    """

    def __init__(self, axis=-1, minval=-1.0, maxval=1.0, seed=None, scale=1.0):
        self.axis = int(axis)
        self.scale = float(scale)
        self.minval = float(minval)
        self.maxval = float(maxval)
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed) if seed is not None else None

    def __call__(self, shape, dtype=None):
        seed = self._generator if self._generator is not None else None
        weights = keras.random.uniform(shape, self.minval, self.maxval, dtype=dtype, seed=seed)
        axis = self.axis % len(shape)
        reduce_axes = tuple(i for i in range(len(shape)) if i != axis)
        norm = ops.sqrt(ops.sum(ops.square(weights), axis=reduce_axes, keepdims=True))
        return self.scale * weights / ops.maximum(norm, 1e-12)

    def get_config(self):
        config = {"axis": self.axis, "minval": self.minval, "maxval": self.maxval, "seed": self.seed}
        if self.scale != 1.0:
            config["scale"] = self.scale
        return config
