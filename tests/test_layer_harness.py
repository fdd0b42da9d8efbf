"""Every spiking layer type with every backward mode it takes, through one harness (in the
spirit of Keras's `run_layer_test`): the config round trip, the `.keras` round trip with
the dropout RNG state (a training step after loading equals the original's next step),
eager against XLA, the diagnostics, and options of another mode refused."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import FeedbackSpikingBlock, ImplicitStreams


def conv(filters, strides=1, batch_norm=True):
    layers = [keras.layers.Conv2D(filters, 3, strides=strides, padding="same")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential(layers)


def dense_block(gradient, **options):
    return FeedbackSpikingBlock([keras.layers.Dense(12)], keras.layers.Dense(12, use_bias=False), gradient=gradient,
                                **options)


def conv_block(gradient, **options):
    spide = gradient == "spide"  # SPIDE has no batch norm (paper 002 §4.4)
    extra = dict(spectral_norm=False, frobenius_norm=True, norm_bound=2.0, resting_potential=-1.0) if spide else {}
    return FeedbackSpikingBlock([conv(4, batch_norm=not spide), conv(6, 2, batch_norm=not spide)],
                                keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False),
                                gradient=gradient, **extra, **options)


def streams(gradient, **options):
    # feedback (Trans) weights small enough that the adjoint solve converges (19 Broyden
    # iterations to 2e-6): with Keras's default initialisation it stalls at ~2e-3, and the
    # eager / XLA comparison below would compare two unconverged Broyden runs, whose
    # iterates depend on float32 rounding (the forms of the conv gradients changed theirs)
    small = lambda: keras.initializers.RandomNormal(stddev=0.1)  # noqa: E731
    return ImplicitStreams(inject=[conv(4), conv(4)], stages=[[conv(6)], [conv(6)]],
                           transforms=[keras.layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=small())
                                       for _ in range(2)],
                           downsample=[keras.layers.Conv2D(4, 3, strides=2, padding="same")],
                           upsample=[keras.layers.UpSampling2D(2)], neuron="if", gradient=gradient, **options)


LAYERS = {"dense_block": (dense_block, (6,)), "conv_block": (conv_block, (8, 8, 2)), "streams": (streams, (8, 8, 2))}
CASES = [(layer, mode) for layer in LAYERS for mode in ("ide", "one_step", "bptt", "spide")
         if not (mode == "spide" and layer != "conv_block") and not (mode == "bptt" and layer == "streams")]
WRONG = {"ide": {"surrogate": "triangle"}, "one_step": {"solver_steps": 5}, "bptt": {"solver": "gmres"},
         "spide": {"solver_tol": 1e-3}}


def model_for(layer, mode, seed=0, dropout=0.2):
    keras.utils.set_random_seed(seed)
    build, shape = LAYERS[layer]
    spiking = build(mode, time_steps=4, dropout=dropout, seed=7)
    inputs = keras.Input(shape)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(spiking(inputs)))
    return keras.Model(inputs, logits), spiking


def data(shape, n=16):
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1.5, (n,) + shape).astype("float32"), rng.integers(0, 3, n)


def compiled(model, jit_compile):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    return model


@pytest.mark.parametrize("layer, mode", CASES)
def test_config_round_trip_and_options_of_another_mode_refused(layer, mode):
    _, spiking = model_for(layer, mode)
    clone = type(spiking).from_config(spiking.get_config())
    assert clone.get_config() == spiking.get_config()
    assert clone.backward.get_config() == spiking.backward.get_config() and clone.backward.name == mode
    (argument, value), = WRONG[mode].items()
    with pytest.raises(ValueError, match=rf"`{argument}`.* with gradient='{mode}'"):
        LAYERS[layer][0](mode, **WRONG[mode])


# Every mode on the conv block (which takes them all), every layer with the paper's mode:
# the modes' code (custom gradients, loops) differs by mode and by backend, the layers'
# wiring by layer only; so the conv block's cases run under the second backend too.
ROUND_TRIPS = [pytest.param(layer, mode, marks=[pytest.mark.backend] if layer == "conv_block" else [])
               for layer, mode in CASES if layer == "conv_block" or mode == "ide"]


@pytest.mark.parametrize("layer, mode", ROUND_TRIPS)
def test_keras_file_round_trip_resumes_training_exactly_and_xla_agrees(layer, mode, tmp_path):
    shape = LAYERS[layer][1]
    x, y = data(shape)
    model, spiking = model_for(layer, mode)
    compiled(model, jit_compile=False).fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    state = ops.convert_to_numpy(spiking.seed_generator.state)
    reloaded = loaded.get_layer(spiking.name)
    np.testing.assert_array_equal(ops.convert_to_numpy(reloaded.seed_generator.state), state)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)))
    # the next training step (new dropout masks) is the same step in both
    after = [model.train_on_batch(x[:8], y[:8]), loaded.train_on_batch(x[:8], y[:8])]
    assert after[0] == pytest.approx(after[1], rel=1e-6)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    d = spiking.diagnostics()
    rates = [v for k, v in d.items() if k.startswith("rate_")]
    assert len(rates) == len(spiking._layer_shapes) and all(0.0 <= r <= 1.0 for r in rates)
    assert np.isfinite(d["forward_residual"])
    if mode in ("ide", "spide"):  # the modes that solve an adjoint report it
        assert d["backward_iterations"] >= 1 and np.isfinite(d["backward_residual"])

    # no dropout here: XLA draws other random bits from the same seed (TF's stateless RNG)
    eager, _ = model_for(layer, mode, seed=3, dropout=0.0)
    xla, _ = model_for(layer, mode, seed=3, dropout=0.0)
    losses = [compiled(m, jit_compile=j).train_on_batch(x[:8], y[:8]) for m, j in ((eager, False), (xla, True))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for a, b in zip(eager.trainable_weights, xla.trainable_weights):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-3, atol=1e-5)


# Non-finite data (docs/ide.md): every layer and mode, since each mode attaches its gradient
# differently; the conv block's cases under the second backend too.
NONFINITE = [pytest.param(layer, mode, bad, marks=[pytest.mark.backend] if layer == "conv_block" else [])
             for layer, mode in CASES for bad in ([np.nan, np.inf] if layer == "conv_block" and mode == "ide"
                                                  else [np.nan])]


@pytest.mark.parametrize("layer, mode, bad", NONFINITE)
def test_a_non_finite_sample_makes_the_loss_nan_leaves_every_weight_finite_and_the_monitor_names_its_batch(
        layer, mode, bad):
    from keras_fsnn.callbacks import EquilibriumMonitor

    shape = LAYERS[layer][1]
    x, y = data(shape)
    x[5].flat[3] = bad  # batch 2 of 4 (batch size 4, in order)
    model, spiking = model_for(layer, mode)
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
    with pytest.raises(RuntimeError, match=rf"'{spiking.name}' received non-finite values at epoch 1: 1 training "
                                           r"sample\(s\).* the first in batch 2 of the epoch"):
        compiled(model, jit_compile=False).fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[
            record, keras.callbacks.TerminateOnNaN(), EquilibriumMonitor()])
    assert np.isfinite(losses[0]) and np.isnan(losses[1]) and len(losses) == 2  # TerminateOnNaN stopped there
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert spiking.epoch_diagnostics()["nonfinite_samples"] == 1
    # in inference the sample's output is NaN, the others' are finite and unchanged by it
    outputs = ops.convert_to_numpy(spiking(x[4:8]))
    assert spiking.diagnostics()["nonfinite_samples"] == 1
    others = ops.convert_to_numpy(spiking(np.delete(x[4:8], 1, axis=0)))
    assert np.isnan(outputs[1]).all() and np.isfinite(others).all()
    np.testing.assert_array_equal(np.delete(outputs, 1, axis=0), others)
    rates = spiking.simulate(x[4:8], record_residuals=False)["rates"]
    rates = [r for stream in rates for r in stream] if isinstance(rates[0], list) else rates
    assert all(np.isnan(ops.convert_to_numpy(r)[1]).all() for r in rates)
