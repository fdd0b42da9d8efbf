"""FeedbackSpikingBlock inside ordinary Keras workflows: fit / evaluate / predict eagerly
and with XLA, .keras round trips, mixed precision, and the monitoring callback."""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_fsnn import FeedbackSpikingBlock
from keras_fsnn.callbacks import EquilibriumMonitor


def conv_model(dropout=0.0, seed=0, **block_kwargs):
    keras.utils.set_random_seed(seed)
    block = FeedbackSpikingBlock(
        forward=[
            keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization()]),
            keras.Sequential([keras.layers.Conv2D(8, 3, strides=2, padding="same"), keras.layers.BatchNormalization()]),
        ],
        feedback=keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False),
        time_steps=8, dropout=dropout, seed=seed, name="fsnn", **block_kwargs,
    )
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(block(inputs)))
    return keras.Model(inputs, outputs)


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32") * 3, rng.integers(0, 3, n)


def compile_model(model, **kwargs):
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
    return model


@pytest.mark.backend
@pytest.mark.parametrize("solver", ["broyden", "gmres"])
def test_xla_and_eager_give_the_same_losses(solver):
    x, y = data()
    histories = []
    for mode in ({"run_eagerly": True}, {"jit_compile": True}):
        model = compile_model(conv_model(solver=solver), **mode)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        histories.append(history.history["loss"] + [model.evaluate(x, y, verbose=0)])
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-4)
    assert histories[0][-1] < histories[0][0]


@pytest.mark.backend
def test_keras_file_round_trip_reproduces_outputs_exactly(tmp_path):
    x, y = data()
    model = compile_model(conv_model(dropout=0.2, neuron="lif", leak=0.9, solver="fixed_point"), jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "fsnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    block, loaded_block = model.get_layer("fsnn"), loaded.get_layer("fsnn")
    assert json.dumps(loaded_block.get_config()) == json.dumps(block.get_config())  # tuples -> lists
    for a, b in zip(block.get_weights(), loaded_block.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The loaded model keeps training (optimizer state restored) with the same step.
    h1 = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history["loss"]
    h2 = loaded.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(h1, h2, rtol=1e-5)


def test_config_round_trip_builds_an_equal_block():
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Dense(16)], feedback=keras.layers.Dense(16, use_bias=False),
        time_steps=300, neuron="if", threshold=2.0, solver="broyden", solver_steps=30, spectral_norm=False)
    clone = FeedbackSpikingBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    x = np.random.default_rng(0).uniform(0, 1, (2, 5)).astype("float32")
    rates = ops.convert_to_numpy(block(x))
    assert rates.shape == (2, 16) and rates.min() >= 0 and rates.max() <= 1


@pytest.mark.backend
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_policy_trains(policy):
    x, y = data()
    keras.config.set_dtype_policy(policy)
    try:
        model = compile_model(conv_model(), jit_compile=True)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        block = model.get_layer("fsnn")
        assert block.compute_dtype == "float32"  # the solve stays in float32
        assert model.layers[-1].compute_dtype == policy.split("_")[1]
        assert ops.convert_to_numpy(block(x[:4])).dtype == np.float32
        assert all(np.isfinite(history.history["loss"]))
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
        assert block.diagnostics()["backward_iterations"] >= 0
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.backend
def test_monitor_logs_rates_and_residuals(tmp_path):
    x, y = data()
    model = compile_model(conv_model(), jit_compile=True)
    monitor = EquilibriumMonitor(probe=x[:8])
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[monitor])
    logs = history.history
    for t in (1, 2, 4, 8):  # T = 8
        assert len(logs[f"fsnn/residual_t{t}"]) == 2
    assert logs["fsnn/residual_t8"][-1] < logs["fsnn/residual_t1"][-1]
    assert len(monitor.curves["fsnn"]) == 2 and monitor.curves["fsnn"][0].shape == (8,)
    png = monitor.plot(str(tmp_path / "convergence.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    for key in ("fsnn/rate_1", "fsnn/rate_2", "fsnn/forward_residual", "fsnn/backward_residual", "fsnn/backward_iterations"):
        assert key in logs, sorted(logs)
    assert 0 < logs["fsnn/rate_1"][0] < 1
    assert 0 < logs["fsnn/backward_iterations"][0] <= 30
    assert logs["fsnn/backward_residual"][0] < 1e-3


@pytest.mark.backend
def test_divergence_warns_and_never_writes_nan_into_weights():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Dense(32)], feedback=keras.layers.Dense(32, use_bias=False),
        time_steps=10, spectral_norm=False, solver="fixed_point", solver_steps=5, name="fsnn")
    inputs = keras.Input((6,))
    model = compile_model(keras.Model(inputs, keras.layers.Dense(3)(block(inputs))), jit_compile=True)
    # ||W||_2 = 30 V_th: far from a contraction, so the adjoint iteration blows up.
    w = rng.normal(size=(32, 32))
    block.feedback.kernel.assign((60.0 * w / np.linalg.norm(w, 2)).astype("float32"))
    x, y = rng.uniform(-1, 1, (16, 6)).astype("float32"), rng.integers(0, 3, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[EquilibriumMonitor()])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("'fsnn' diverged" in m for m in messages), messages
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    with pytest.raises(RuntimeError, match="diverged"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[EquilibriumMonitor(raise_on_divergence=True)])


@pytest.mark.backend
def test_released_code_bn_statistics_switch():
    """bn_statistics='released_code': in training the input layer is normalised with batch
    statistics inside the simulation (the released code); the paper uses stored ones."""
    rng = np.random.default_rng(0)
    x = (rng.uniform(0, 1, (16, 5)) * 4 + 3).astype("float32")  # far from the fresh BN's stored stats
    rates = {}
    for mode in ("paper", "released_code"):
        keras.utils.set_random_seed(0)
        block = FeedbackSpikingBlock(
            [keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization()])],
            keras.layers.Dense(8, use_bias=False), time_steps=20, bn_statistics=mode)
        block.build(x.shape)
        inference = ops.convert_to_numpy(block(x, training=False))  # before a training step updates the statistics
        rates[mode] = (ops.convert_to_numpy(block(x, training=True)), inference)
        assert FeedbackSpikingBlock.from_config(block.get_config()).bn_statistics == mode
    assert not np.allclose(rates["paper"][0], rates["released_code"][0])  # training: different statistics
    np.testing.assert_array_equal(rates["paper"][1], rates["released_code"][1])  # inference: the same
    with pytest.raises(ValueError, match="`bn_statistics` must be one of 'paper', 'released_code'"):
        FeedbackSpikingBlock([keras.layers.Dense(8)], keras.layers.Dense(8), bn_statistics="pytorch")


@pytest.mark.backend
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_implicit_gradient_under_mixed_precision_matches_float32(policy):
    from conftest import cosine, value_and_grads

    x, y = data(16)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    reference = conv_model(neuron="lif")
    weights = reference.get_weights()
    _, expected = value_and_grads(lambda: loss_fn(y, reference(x, training=True)), reference.trainable_variables)
    keras.config.set_dtype_policy(policy)
    try:
        model = conv_model(neuron="lif")
        model.set_weights(weights)
        _, grads = value_and_grads(lambda: loss_fn(y, ops.cast(model(x, training=True), "float32")),
                                   model.trainable_variables)
    finally:
        keras.config.set_dtype_policy("float32")
    similarity = cosine(expected, [np.asarray(g, "float32") for g in grads])
    assert similarity >= 0.99, similarity


def test_monitor_logs_the_epoch_mean_of_the_batch_diagnostics():
    x, y = data(48)
    model = compile_model(conv_model(dropout=0.2))
    block = model.get_layer("fsnn")

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(block.diagnostics())

    record = Record()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[EquilibriumMonitor(), record])
    assert len(record.batches) == 3
    for key in ("rate_1", "rate_2", "forward_residual", "backward_residual", "backward_iterations"):
        per_batch = [d[key] for d in record.batches]
        np.testing.assert_allclose(history.history[f"fsnn/{key}"][0], np.mean(per_batch), rtol=1e-6)
    # the batches differ, so the mean is not just the last batch's value
    assert len({d["rate_1"] for d in record.batches}) > 1


def test_the_monitor_reads_the_device_once_per_epoch_not_per_batch(monkeypatch):
    """Issue 31 bug 10: EquilibriumMonitor copied 5-6 variables to the host after every
    batch (on a GPU, a device sync per step). The layer now sums them on the device; the
    monitor reads the sums once at the epoch's end."""
    x, y = data(48)
    model = compile_model(conv_model(dropout=0.2))
    block = model.get_layer("fsnn")
    calls = {"diagnostics": 0, "epoch_diagnostics": 0}
    for name in calls:
        method = getattr(block, name)

        def counted(method=method, name=name):
            calls[name] += 1
            return method()

        monkeypatch.setattr(block, name, counted)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[EquilibriumMonitor()])
    assert calls == {"diagnostics": 0, "epoch_diagnostics": 2}
    assert len(history.history["fsnn/backward_iterations"]) == 2 and history.history["fsnn/rate_1"][1] > 0
