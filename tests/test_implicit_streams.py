"""ImplicitStreams (MPIS, paper 003): the implicit gradient of the joint fixed point of two
fused streams against long unrolled autodiff of f, convergence of every stream, the
released-code switches, Keras round trips and early errors."""

import json
import warnings

import keras
import numpy as np
import pytest
from conftest import cosine, value_and_grads
from keras import ops

from keras_fsnn import ImplicitStreams
from keras_fsnn import gradients
from keras_fsnn.layers.stages import stage_parameters


def conv(filters, strides=1, batch_norm=True):
    layers = [keras.layers.Conv2D(filters, 3, strides=strides, padding="same")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential(layers)


def two_streams(input_shape=(None, 8, 8, 2), **kwargs):
    """Stream 1 at 8x8, stream 2 at 4x4; layers 4 -> 6 channels; fused after layer 1."""
    keras.utils.set_random_seed(0)
    options = dict(time_steps=30, neuron="if", threshold=2.0, seed=3)
    options.update(kwargs)
    layer = ImplicitStreams(
        inject=[conv(4), conv(4)],
        stages=[[conv(6)], [conv(6)]],
        transforms=[keras.layers.Conv2D(4, 3, padding="same", use_bias=False) for _ in range(2)],
        downsample=[keras.layers.Conv2D(4, 3, strides=2, padding="same")],
        upsample=[keras.layers.UpSampling2D(2)],
        fusion_layer=1, **options)
    layer.build(input_shape)
    for stage in layer.inject + [s for stream in layer.stages for s in stream]:
        stage.layers[1].gamma.assign(np.full(stage.layers[1].gamma.shape, 1.2, "float32"))
        stage.layers[1].beta.assign(np.full(stage.layers[1].beta.shape, 0.8, "float32"))
    for module in layer.transforms + layer.downsample:  # a contraction, so f^k converges
        module.kernel.assign(module.kernel * 0.5)
    return layer


def data(seed=1, batch=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch, 8, 8, 2)).astype("float32")


@pytest.mark.parametrize("solver", [pytest.param("broyden", marks=pytest.mark.backend),  # (both backends)
                                    "fixed_point"])
def test_joint_implicit_gradient_equals_unrolled_autodiff(solver):
    layer = two_streams(solver=solver, solver_steps=60, solver_tol=1e-9, dropout=0.2)
    x = data()
    c = np.random.default_rng(2).normal(size=(4, 4, 4, 6)).astype("float32")
    masks = layer._dropout_masks(4, True)
    layer._dropout_masks = lambda batch, training: masks if training else []

    params = [stage_parameters(s) for s in layer._stages]
    a = ops.zeros((4, sum(layer._sizes)))
    for _ in range(300):
        a = layer.fixed_point_map(a, x, params, masks, training=True)[0]
    gap = ops.convert_to_numpy(layer.fixed_point_map(a, x, params, masks, training=True)[0] - a)
    assert np.abs(gap).max() < 1e-5  # the exact joint fixed point of the training-mode map
    fixed = ops.convert_to_numpy(a)
    assert 0.05 < np.mean((fixed > 0) & (fixed < 1))
    parts = [ops.reshape(ops.convert_to_tensor(p), (-1,) + tuple(s[-1][1:]))
             for p, s in zip(np.split(fixed, np.cumsum(layer._sizes)[:-1], axis=1), layer._stream_shapes)]
    layer._simulate = lambda *args, **kwargs: ([q for p in parts for q in (p, p)], None,  # evaluated at the exact a*
                                              np.zeros(len(fixed), bool))  # (no sample met a non-finite current)

    variables = list(layer.trainable_variables)
    _, implicit = value_and_grads(lambda: ops.sum(layer(x, training=True) * c), variables)

    def unrolled(iterations):
        def loss():
            params_ = [stage_parameters(s) for s in layer._stages]
            a_ = ops.convert_to_tensor(fixed)
            for _ in range(iterations):
                a_ = layer.fixed_point_map(a_, x, params_, masks, training=True)[0]
            return ops.sum(layer._split(a_)[-1] * c)
        return loss

    _, reference = value_and_grads(unrolled(100), variables)
    _, one_pass = value_and_grads(unrolled(1), variables)
    assert cosine(implicit, reference) >= 0.999
    assert cosine(one_pass, reference) < 0.995  # the cross-stream Jacobian matters

    layer.backward = gradients.get("one_step")
    _, one_step = value_and_grads(lambda: ops.sum(layer(x, training=True) * c), variables)
    assert cosine(one_step, one_pass) >= 0.9999


def test_every_stream_converges_and_first_step_rates_are_the_released_codes():
    layer = two_streams(time_steps=60)
    x = data(batch=8) * 2
    sim = layer.simulate(x)
    residuals = ops.convert_to_numpy(sim["residuals"])
    assert residuals.shape == (2, 60)
    for stream in residuals:
        assert stream[-1] < 0.25 * stream[0]  # the residual of each stream falls with t
        assert stream[-1] < stream[9]
    rates = [ops.convert_to_numpy(r) for stream in sim["rates"] for r in stream]
    assert all(0 <= r.min() and r.max() <= 1 for r in rates) and np.mean(rates[-1]) > 0.01
    counts = layer.simulate(x, record_residuals=False, count_spikes=True)["counts"]
    for rate, count in zip(rates, counts):  # IF: the rate is the spike count over T
        np.testing.assert_allclose(rate, ops.convert_to_numpy(count) / 60, atol=1e-6)

    # rates="first_step": the first step's spikes over the LIF normaliser of T.
    released = two_streams(time_steps=10, neuron="lif", leak=0.9, rates="first_step")
    one_step = two_streams(time_steps=1, neuron="lif", leak=0.9)
    got = released.simulate(x, record_residuals=False)["rates"]
    first = one_step.simulate(x, record_residuals=False)["rates"]
    normaliser = (1 - 0.9**10) / (1 - 0.9)
    for a, b in zip([r for s in got for r in s], [r for s in first for r in s]):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b) / normaliser, rtol=1e-6)


@pytest.mark.backend
def test_trains_with_xla_and_round_trips_through_a_keras_file(tmp_path):
    layer = two_streams(time_steps=8, neuron="lif", leak=0.95, dropout=0.1, gradient="ide")
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs))))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    x, y = data(batch=16), np.arange(16) % 3
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    d = layer.diagnostics()
    assert set(d) >= {"rate_s1_1", "rate_s2_2", "backward_residual", "forward_residual"}
    assert not d["backward_failed"] and d["backward_iterations"] > 0
    model.save(tmp_path / "mpis.keras")
    loaded = keras.saving.load_model(tmp_path / "mpis.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert json.dumps(loaded.layers[1].get_config()) == json.dumps(layer.get_config())  # tuples -> lists


def test_bad_arguments_fail_at_construction_or_build():
    base = dict(inject=[conv(4), conv(4)], stages=[[conv(6)], [conv(6)]],
                transforms=[keras.layers.Conv2D(4, 3, padding="same") for _ in range(2)],
                downsample=[keras.layers.Conv2D(4, 3, strides=2, padding="same")], upsample=[keras.layers.UpSampling2D(2)])
    with pytest.raises(ValueError, match="one entry per stream"):
        ImplicitStreams(**{**base, "transforms": base["transforms"][:1]})
    with pytest.raises(ValueError, match="N - 1 = 1 modules"):
        ImplicitStreams(**{**base, "upsample": []})
    with pytest.raises(ValueError, match="fusion_layer"):
        ImplicitStreams(**base, fusion_layer=2)
    with pytest.raises(ValueError, match="gradient='spide' needs a chain of stages with a feedback"):
        ImplicitStreams(**base, gradient="spide")
    with pytest.raises(ValueError, match="gradient='bptt' differentiates through the simulation"):
        ImplicitStreams(**base, gradient="bptt")
    with pytest.raises(ValueError, match="rates"):
        ImplicitStreams(**base, rates="last")
    layer = ImplicitStreams(**{**base, "transforms": [keras.layers.Conv2D(5, 3, padding="same") for _ in range(2)]})
    with pytest.raises(ValueError, match=r"transforms\[0\]"):
        layer.build((None, 8, 8, 2))


def test_sequence_input_of_identical_frames_equals_the_static_image():
    static = two_streams(time_steps=12)
    sequence = two_streams((None, 12, 8, 8, 2), time_steps=12, input_type="sequence")
    x = data()
    frames = np.repeat(x[:, None], 12, axis=1)
    np.testing.assert_allclose(np.asarray(sequence(frames)), np.asarray(static(x)), atol=1e-6)
    with pytest.raises(ValueError, match="frames"):
        two_streams(time_steps=12, input_type="sequence")
    with pytest.raises(ValueError, match="time_steps=12"):
        two_streams((None, 10, 8, 8, 2), time_steps=12, input_type="sequence")


def test_fusion_speeds_up_convergence_on_real_images():
    """Paper 003 Fig. 3: the two-stream model is nearer its equilibrium after t = 10 steps
    than one stream of the same plan. Same initial weights for stream 1 (same seed), 64
    real Fashion-MNIST test images, the Fashion-MNIST plan 16C3-32C3s-48C3, LIF 0.95.
    Measured at initialisation: stream 1's residual ||f(a[10]) - a[10]|| is 2.09 with two
    streams against 3.36 alone (128 images; docs/mpis.md)."""
    from data_paths import shared_data

    from keras_fsnn.datasets import load_arrays
    from keras_fsnn.models import mpis_network

    x, _ = load_arrays("fashion_mnist", "test", shared_data("fashion_mnist"))
    x = np.asarray(x[:64], "float32").reshape(64, 28, 28, 1) / 255.0
    residual = {}
    for n in (1, 2):
        keras.utils.set_random_seed(0)
        model = mpis_network((28, 28, 1), 10, (16, 32, 48), (1, 2, 1), num_streams=n, normalization=(0.1307, 0.3081),
                             time_steps=10, neuron="lif", leak=0.95)
        layer = model.get_layer("streams")
        residual[n] = float(np.asarray(layer.simulate(model.get_layer("normalise")(x))["residuals"])[0, -1])
    assert residual[2] < 0.8 * residual[1], residual


def test_mpis_presets_have_the_papers_sizes():
    from keras_fsnn.models import count_parameters, mpis_cifar10, mpis_cifar100

    # layouts not published: ours must round to the paper's 11.8M / 14.8M
    assert round(count_parameters(mpis_cifar10()) / 1e6, 1) == 11.8
    assert round(count_parameters(mpis_cifar100()) / 1e6, 1) == 14.8


@pytest.mark.parametrize("gradient", ["ide", "one_step"])
def test_equilibrium_monitor_logs_every_stream(gradient, tmp_path):
    from keras_fsnn.callbacks import EquilibriumMonitor

    layer = two_streams(time_steps=6, gradient=gradient)
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs))))
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(batch=8), np.arange(8) % 3
    monitor = EquilibriumMonitor(probe=x[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no false divergence warning
        logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[monitor]).history
    name = layer.name
    for key in ("rate_s1_1", "rate_s2_1", "forward_residual", "backward_residual"):
        assert f"{name}/{key}" in logs, sorted(logs)
    assert 0 < logs[f"{name}/rate_s1_1"][0] < 1
    for stream in (1, 2):
        assert f"{name}/s{stream}_residual_t6" in logs and f"{name}/s{stream}_residual_t1" in logs
    assert monitor.curves[name][0].shape == (2, 6)
    assert open(monitor.plot(str(tmp_path / "streams.png")), "rb").read(4) == b"\x89PNG"


def test_dropout_rng_state_survives_a_keras_file(tmp_path):
    """Issue 31 bug 1: the dropout RNG state was not saved, so a resumed MPIS run with
    dropout drew other masks than an uninterrupted one."""
    layer = two_streams(time_steps=3, dropout=0.2)
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs))))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(batch=8), np.arange(8) % 3
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    state = ops.convert_to_numpy(layer.seed_generator.state)
    assert state.any()
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.get_layer(layer.name).seed_generator.state), state)
    assert loaded.train_on_batch(x[:4], y[:4]) == pytest.approx(model.train_on_batch(x[:4], y[:4]), rel=1e-6)


def test_a_stage_used_twice_trains_with_dropout_and_round_trips(tmp_path):
    """Issue 31 bug 4: the class docstring's `transforms=[Conv2D(...)] * 2` built and ran
    inference, but training with dropout failed (a stage's index kept its last position,
    its dropout mask the first)."""
    keras.utils.set_random_seed(0)
    shared = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    layer = ImplicitStreams(inject=[conv(4), conv(4)], stages=[[conv(6)], [conv(6)]], transforms=[shared] * 2,
                            downsample=[keras.layers.Conv2D(4, 3, strides=2, padding="same")],
                            upsample=[keras.layers.UpSampling2D(2)], time_steps=3, dropout=0.2, neuron="if")
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs))))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(batch=8), np.arange(8) % 3
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").get_layer(layer.name)
    assert loaded.transforms[0] is loaded.transforms[1]  # still one stage, in two places
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.transforms[1].kernel), ops.convert_to_numpy(shared.kernel))
