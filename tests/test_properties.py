"""Property tests (hypothesis) over the public constructors: every configuration drawn,
valid or not, is either refused at construction with a ValueError / TypeError that names
the argument, or trains one step with finite loss and weights (issue 32). The search is
derandomised, so every run tries the same configurations."""

import re

import keras
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import keras_fsnn  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# a value of every kind an argument may be given wrongly, or at the edge of float32
ODD = st.sampled_from([None, True, "x", [1.0], float("nan"), float("inf"), -float("inf"), 0, -1, 1e-45, 1e38])


@st.composite
def configurations(draw, space, spoiled=2):
    """Every argument of `space` from its own (valid-range) strategy, then up to `spoiled`
    of them replaced by an odd value."""
    arguments = {key: draw(strategy) for key, strategy in sorted(space.items())}
    for key in sorted(draw(st.sets(st.sampled_from(sorted(space)), max_size=spoiled))):
        arguments[key] = draw(ODD)
    return arguments


def named_refusal(error, arguments):
    """The error names one of the given arguments (`name`, `name[...]` or name=value)."""
    message = str(error)
    return any(re.search(rf"`{re.escape(name)}(\[|`)|\b{re.escape(name)}=", message) for name in arguments)


def trains_one_step(layer, shape):
    inputs = keras.Input(shape)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    x = np.random.default_rng(0).uniform(0, 1, (8,) + shape).astype("float32")
    loss = float(np.ravel(model.train_on_batch(x, np.arange(8) % 3))[0])
    assert np.isfinite(loss), f"{layer.get_config()}: loss {loss}"
    for weight in model.weights:
        assert np.isfinite(keras.ops.convert_to_numpy(weight)).all(), f"{layer.get_config()}: {weight.path} not finite"


BLOCK = {
    "time_steps": st.integers(1, 6), "neuron": st.sampled_from(["if", "lif", "lif"]),
    "leak": st.one_of(st.none(), st.floats(0.01, 1.0)), "threshold": st.floats(1e-3, 5.0),
    "resting_potential": st.floats(-3.0, 0.0), "dropout": st.floats(0.0, 0.99), "spectral_norm": st.booleans(),
    "norm_bound": st.one_of(st.none(), st.floats(0.1, 10.0)), "simulation_dtype": st.sampled_from(["float32", "bfloat16"]),
}
IDE = {"solver": st.sampled_from(["broyden", "gmres", "fixed_point"]), "solver_steps": st.integers(1, 20),
       "solver_tol": st.floats(0.0, 1.0)}
BPTT = {"surrogate": st.sampled_from(["rectangular", "triangle", "sigmoid"]), "surrogate_width": st.floats(0.1, 4.0)}
SPIDE = {"backward_time_steps": st.integers(1, 20), "backward_threshold": st.floats(0.05, 2.0),
         "backward_resting_potential": st.floats(-2.0, 0.0), "backward_scale": st.floats(0.1, 100.0)}
MODES = {"ide": IDE, "one_step": {}, "bptt": BPTT, "spide": SPIDE}


@st.composite
def block_arguments(draw):
    gradient = draw(st.sampled_from(sorted(MODES)))
    arguments = draw(configurations({**BLOCK, **MODES[gradient]}))
    if gradient == "spide" and arguments["spectral_norm"] is True:  # SPIDE: the Frobenius restriction
        arguments["spectral_norm"] = False
    return {"gradient": gradient, **arguments}


@SETTINGS
@given(block_arguments())
def test_every_block_configuration_is_refused_by_name_or_trains_to_finite_weights(arguments):
    try:
        block = keras_fsnn.FeedbackSpikingBlock([keras.layers.Dense(8)], keras.layers.Dense(8, use_bias=False),
                                                **arguments)
    except (ValueError, TypeError) as error:
        assert named_refusal(error, arguments), f"{arguments}: {error}"
        event("refused")
        return
    event("built")
    trains_one_step(block, (5,))


STREAMS = {"time_steps": st.integers(1, 5), "fusion_layer": st.integers(1, 2), "dropout": st.floats(0.0, 0.9),
           "leak": st.floats(0.5, 1.0), "threshold": st.floats(0.1, 3.0),
           "rates": st.sampled_from(["average", "first_step"]), "output": st.sampled_from(["map", "rates"]),
           "gradient": st.sampled_from(["ide", "one_step"])}


@SETTINGS
@given(configurations(STREAMS))
def test_every_streams_configuration_is_refused_by_name_or_trains_to_finite_weights(arguments):
    conv = lambda: keras.layers.Conv2D(3, 3, padding="same")  # noqa: E731
    try:
        streams = keras_fsnn.ImplicitStreams(
            inject=[conv(), conv()], stages=[[conv(), conv()], [conv(), conv()]], transforms=[conv(), conv()],
            downsample=[keras.layers.Conv2D(3, 3, strides=2, padding="same")], upsample=[keras.layers.UpSampling2D(2)],
            **arguments)
    except (ValueError, TypeError) as error:
        assert named_refusal(error, arguments), f"{arguments}: {error}"
        event("refused")
        return
    event("built")
    trains_one_step(streams, (4, 4, 2))


COUPLE = {"threshold": st.floats(0.01, 2.0), "resting_potential": st.floats(-2.0, 0.0), "leak": st.floats(0.01, 1.0),
          "realisation": st.sampled_from(["coupled", "direct"]), "output": st.sampled_from(["spikes", "rates"])}


@SETTINGS
@given(configurations(COUPLE), st.integers(1, 6))
def test_every_ternary_couple_is_refused_by_name_or_gives_finite_ternary_outputs(arguments, steps):
    try:
        couple = keras_fsnn.TernaryCouple(**arguments)
    except (ValueError, TypeError) as error:
        assert named_refusal(error, arguments), f"{arguments}: {error}"
        event("refused")
        return
    event("built")
    currents = np.random.default_rng(0).normal(0, 1, (2, steps, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(couple(currents))
    assert np.isfinite(out).all() and (np.abs(out) <= 1).all()


EXACT = {"alpha": st.floats(0.05, 5.0), "beta": st.floats(0.05, 5.0), "theta": st.floats(0.05, 3.0),
         "t_max": st.floats(0.1, 20.0), "hidden": st.integers(1, 12)}


@SETTINGS
@given(configurations(EXACT))
def test_every_exact_spiking_network_is_refused_by_name_or_trains_to_finite_weights(arguments):
    from keras_fsnn.fp import ExactSpikingNetwork

    arguments = dict(arguments)
    hidden = arguments.pop("hidden")
    try:
        net = ExactSpikingNetwork([3, hidden, 2], seed=0, **arguments)
    except (ValueError, TypeError) as error:
        assert named_refusal(error, {**arguments, "layer_sizes": None}), f"{arguments}: {error}"
        event("refused")
        return
    event("built")
    x = np.random.default_rng(0).uniform(0, 1, (6, 3))
    history = net.fit(x, np.arange(6) % 2, epochs=1, batch_size=6, optimizer=keras.optimizers.Adam(1e-2), verbose=0)
    assert np.isfinite(history.history["loss"][0]), arguments
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in net.weights), arguments
