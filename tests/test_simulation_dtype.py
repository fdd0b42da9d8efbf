"""simulation_dtype="bfloat16": the spike simulations' currents in bfloat16 (spikes are exact
in it), everything else float32. The rates, the implicit gradient and SPIDE's backward rates
stay close to the float32 ones, the stages are left as they were, and the option saves,
loads and trains under XLA."""

import keras
import numpy as np
import pytest
from conftest import cosine, value_and_grads
from keras import ops

from keras_fsnn import FeedbackSpikingBlock


def conv_block(simulation_dtype, gradient="ide", **kwargs):
    batch_norm = gradient != "spide"
    stage = lambda filters, strides: keras.Sequential(  # noqa: E731
        [keras.layers.Conv2D(filters, 3, strides=strides, padding="same")]
        + ([keras.layers.BatchNormalization()] if batch_norm else []))
    block = FeedbackSpikingBlock(
        forward=[stage(8, 1), stage(12, 2)],
        feedback=keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", use_bias=False),
        time_steps=30, threshold=1.0, gradient=gradient, spectral_norm=True, norm_bound=0.9,
        simulation_dtype=simulation_dtype, seed=3, name="fsnn", **kwargs)
    block.build((None, 8, 8, 2))
    return block


def twins(gradient="ide", **kwargs):
    """A float32 block and a bfloat16 block with the same weights."""
    a, b = conv_block("float32", gradient, **kwargs), conv_block("bfloat16", gradient, **kwargs)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    return a, b


def inputs(seed=0, batch=6):
    return np.random.default_rng(seed).uniform(0, 1, (batch, 8, 8, 2)).astype("float32")


def test_bfloat16_simulation_gives_nearly_the_float32_rates_and_restores_the_stages():
    a, b = twins()
    x = inputs()
    rates_a = [np.asarray(r) for r in a.simulate(x, record_residuals=False)["rates"]]
    rates_b = [np.asarray(r) for r in b.simulate(x, record_residuals=False)["rates"]]
    for ra, rb in zip(rates_a, rates_b):
        assert 0.05 < ra.mean() < 0.95
        assert np.mean(np.abs(ra - rb)) < 0.01  # a few spikes of 30 move; most rates are identical
    assert not all(np.array_equal(ra, rb) for ra, rb in zip(rates_a, rates_b))  # it did run in bfloat16
    policies = {layer.dtype_policy.name for stage in b._stages
                for layer in stage._flatten_layers(include_self=True, recursive=True)}
    assert policies == {"float32"}
    assert len(b.weights) == len(a.weights)


@pytest.mark.backend
def test_implicit_gradient_with_a_bfloat16_simulation_matches_float32():
    a, b = twins(dropout=0.2)
    x = inputs(1)
    c = np.random.default_rng(2).normal(size=(6, 4, 4, 12)).astype("float32")
    grads = [value_and_grads(lambda blk=blk: ops.sum(blk(x, training=True) * c), blk.trainable_weights)[1]
             for blk in (a, b)]
    # a few spikes of 30 differ, which moves the equilibrium and its masks a little (measured 0.9936)
    assert cosine(grads[0], grads[1]) >= 0.99


def test_spide_backward_rates_with_a_bfloat16_simulation_match_float32():
    a, b = twins("spide", backward_time_steps=200, backward_scale=20.0)
    x = inputs(3)
    g = np.random.default_rng(4).normal(0, 0.05, (6, 4, 4, 12)).astype("float32")
    out_a, out_b = a.spike_backward(x, g), b.spike_backward(x, g)
    assert out_a["firing_rate"] > 0.01
    assert cosine(out_a["betas"], out_b["betas"]) >= 0.99


@pytest.mark.backend
def test_bfloat16_simulation_trains_under_xla_and_round_trips(tmp_path):
    x = inputs(5, batch=32)
    y = (x[:, :4, :, 0].mean(axis=(1, 2)) > x[:, 4:, :, 0].mean(axis=(1, 2))).astype("int32")
    image = keras.Input((8, 8, 2))
    logits = keras.layers.Dense(2)(keras.layers.Flatten()(conv_block("bfloat16")(image)))
    model = keras.Model(image, logits)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "bf16.keras")
    loaded = keras.models.load_model(tmp_path / "bf16.keras")
    assert loaded.get_layer("fsnn").get_config()["simulation_dtype"] == "bfloat16"
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_simulation_dtype_is_checked_at_construction():
    with pytest.raises(ValueError, match=r"`simulation_dtype` must be one of 'float32', 'bfloat16'; received "
                                         r"simulation_dtype='float16'"):
        conv_block("float16")
    with pytest.raises(ValueError, match=r"simulation_dtype='bfloat16'.*gradient='bptt'"):
        conv_block("bfloat16", gradient="bptt")


def test_implicit_streams_with_a_bfloat16_simulation_match_float32():
    from test_implicit_streams import data, two_streams

    a, b = two_streams(return_all=True), two_streams(return_all=True, simulation_dtype="bfloat16")
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    x = data(batch=6)
    rates_a = [np.asarray(r) for stream in a.simulate(x, record_residuals=False)["rates"] for r in stream]
    rates_b = [np.asarray(r) for stream in b.simulate(x, record_residuals=False)["rates"] for r in stream]
    for ra, rb in zip(rates_a, rates_b):
        assert np.mean(np.abs(ra - rb)) < 0.01
    assert not all(np.array_equal(ra, rb) for ra, rb in zip(rates_a, rates_b))
    c = [np.random.default_rng(7).normal(size=(6,) + tuple(o.shape[1:])).astype("float32") for o in a(x)]
    grads = [value_and_grads(lambda s=s: sum(ops.sum(o * w) for o, w in zip(s(x, training=True), c)),
                             s.trainable_weights)[1] for s in (a, b)]
    assert cosine(grads[0], grads[1]) >= 0.99
    assert b.get_config()["simulation_dtype"] == "bfloat16"
