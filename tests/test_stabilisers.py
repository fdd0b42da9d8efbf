"""The spectral-norm restriction (paper 000 eq. 35) bounds the feedback's norm by c, and the
paper's initialisation gives unit-norm output units."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_fsnn
from keras_fsnn import FeedbackSpikingBlock, SpectralNormRestriction
from keras_fsnn.initializers import UnitNormUniform


@pytest.mark.parametrize("bound", [0.5, 1.0])
def test_restricted_kernel_has_spectral_norm_min_alpha_c(bound):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 5)).astype("float32")
    restriction = SpectralNormRestriction(bound)
    restriction.build(kernel.shape)
    restriction.initialize_from(kernel)
    sigma = np.linalg.norm(kernel.reshape(-1, 5), 2)
    assert float(ops.convert_to_numpy(restriction.alpha)) == pytest.approx(sigma, rel=1e-5)
    restricted = ops.convert_to_numpy(restriction(kernel, training=False))
    assert np.linalg.norm(restricted.reshape(-1, 5), 2) == pytest.approx(min(sigma, bound), rel=1e-4)
    restriction.alpha.assign(-0.3 * bound)
    restricted = ops.convert_to_numpy(restriction(kernel, training=True))
    assert np.linalg.norm(restricted.reshape(-1, 5), 2) == pytest.approx(0.3 * bound, rel=1e-4)


def test_power_iteration_tracks_a_changing_kernel():
    rng = np.random.default_rng(1)
    restriction = SpectralNormRestriction(1.0)
    restriction.build((20, 12))
    restriction.initialize_from(rng.normal(size=(20, 12)))
    new = rng.normal(size=(20, 12)).astype("float32") * 3
    for _ in range(30):
        out = restriction(new, training=True)
    norm = np.linalg.norm(ops.convert_to_numpy(out), 2)
    assert norm == pytest.approx(1.0, rel=1e-3)


def test_block_feedback_is_restricted_in_a_model():
    block = FeedbackSpikingBlock([keras.layers.Dense(16)], keras.layers.Dense(16, use_bias=False), norm_bound=0.7)
    block.build((None, 4))
    block.norm_restriction.alpha.assign(5.0)  # clipped to c at use
    restricted = ops.convert_to_numpy(block._parameters(False)[-1][0][0])
    assert np.linalg.norm(restricted, 2) == pytest.approx(0.7, rel=1e-4)


@pytest.mark.parametrize("shape,axis", [((30, 7), -1), ((3, 3, 4, 6), -1), ((3, 3, 6, 4), -2)])
def test_unit_norm_uniform_normalises_each_output_unit(shape, axis):
    values = ops.convert_to_numpy(UnitNormUniform(axis=axis, seed=3)(shape))
    moved = np.moveaxis(values, axis, 0).reshape(shape[axis], -1)
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, rtol=1e-5)
    assert values.min() < 0 < values.max()
    assert np.abs(values).max() <= 1.0
    clone = keras.initializers.deserialize(keras.initializers.serialize(UnitNormUniform(axis=axis, seed=3)))
    assert isinstance(clone, keras_fsnn.initializers.UnitNormUniform) and clone.axis == axis
