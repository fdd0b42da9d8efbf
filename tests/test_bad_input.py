"""Invalid arguments raise a ValueError/TypeError naming the argument, the value and what is
allowed, at construction or build time (paper-independent; issue requirement)."""

import keras
import numpy as np
import pytest

from keras_fsnn import FeedbackSpikingBlock


def make(**overrides):
    kwargs = dict(forward=[keras.layers.Dense(16)], feedback=keras.layers.Dense(16, use_bias=False))
    kwargs.update(overrides)
    return FeedbackSpikingBlock(**kwargs)


@pytest.mark.parametrize(
    "overrides,error,pattern",
    [
        ({"time_steps": 0}, ValueError, r"`time_steps` must be an integer >= 1; received time_steps=0"),
        ({"time_steps": -5}, ValueError, r"`time_steps`.*time_steps=-5"),
        ({"time_steps": 2.5}, TypeError, r"`time_steps` must be an integer; received time_steps=2.5"),
        ({"threshold": 0.0}, ValueError, r"`threshold` must be greater than `resting_potential`.*threshold=0.0, resting_potential=0.0"),
        ({"threshold": 1.0, "resting_potential": 1.5}, ValueError, r"threshold=1.0, resting_potential=1.5"),
        ({"neuron": "lif", "leak": 0.0}, ValueError, r"`leak` must lie in \(0.0, 1.0\]; received leak=0.0"),
        ({"neuron": "lif", "leak": 1.2}, ValueError, r"`leak` must lie in \(0.0, 1.0\]; received leak=1.2"),
        ({"neuron": "lif", "leak": -0.5}, ValueError, r"received leak=-0.5"),
        ({"neuron": "if", "leak": 0.9}, ValueError, r"`leak` must be 1.0 \(or None\) for neuron='if'; received leak=0.9"),
        ({"neuron": "izhikevich"}, ValueError, r"`neuron` must be one of 'if', 'lif'.*; received neuron='izhikevich'"),
        ({"solver": "newton"}, ValueError, r"`solver` must be one of 'broyden', 'fixed_point', 'gmres'.*; received solver='newton'"),
        ({"solver_steps": 0}, ValueError, r"`solver_steps` must be an integer >= 1; received solver_steps=0"),
        ({"gradient": "magic"}, ValueError, r"`gradient` must be one of 'ide', 'bptt', 'one_step', 'spide'.*; received gradient='magic'"),
        ({"gradient": "bptt", "surrogate": "erf"}, ValueError, r"`surrogate` must be one of 'rectangular', 'triangle', 'sigmoid'; received surrogate='erf'"),
        ({"gradient": "bptt", "surrogate_width": 0.0}, ValueError, r"`surrogate_width` must lie in \(0.0, inf\); received surrogate_width=0.0"),
        ({"gradient": "ide", "surrogate": "rectangular"}, ValueError, r"`surrogate` applies to gradient='bptt' only"),
        # issue 31 bug 2: options of another mode were accepted and stored in get_config
        ({"gradient": "bptt", "solver": "newton"}, ValueError, r"`solver` applies to gradient='ide' only; received solver='newton' with gradient='bptt'"),
        ({"gradient": "one_step", "solver_steps": -3}, ValueError, r"`solver_steps` applies to gradient='ide' only"),
        ({"gradient": "spide", "solver_tol": "x", "spectral_norm": False, "frobenius_norm": True}, ValueError,
         r"`solver_tol` applies to gradient='ide' only; received solver_tol='x' with gradient='spide'"),
        ({"gradient": "ide", "backward_scale": 100.0}, ValueError, r"`backward_scale` applies to gradient='spide' only"),
        # issue 31 bug 3: frobenius_norm was not checked when spectral_norm=False, and switched the restriction on
        ({"spectral_norm": False, "frobenius_norm": "no"}, TypeError, r"`frobenius_norm` must be True or False; received frobenius_norm='no'"),
        ({"dropout": 1.0}, ValueError, r"`dropout` must lie in \[0.0, 1.0\); received dropout=1.0"),
        ({"norm_bound": 0.0}, ValueError, r"`norm_bound` must lie in \(0.0, inf\); received norm_bound=0.0"),
        ({"spectral_norm": "yes"}, TypeError, r"`spectral_norm` must be True or False; received spectral_norm='yes'"),
        ({"input_type": "video"}, ValueError, r"`input_type` must be one of 'static', 'sequence'; received input_type='video'"),
        ({"forward": []}, TypeError, r"`forward` must be a Keras layer or a non-empty list"),
        ({"forward": [np.ones(3)]}, TypeError, r"`forward\[0\]` must be a Keras layer"),
        ({"feedback": "dense"}, TypeError, r"`feedback` must be a Keras layer; received feedback='dense'"),
        ({"forward": [keras.Sequential([keras.layers.Dense(16), keras.layers.Dropout(0.2)])]}, ValueError,
         r"`forward\[0\]` contains a Dropout layer.*use the block's `dropout`"),
        # issue 32 item 5: an infinite threshold, and a reset below float32's normal range
        # (1 / (V_th - u_rest) overflows: NaN gradients), were accepted
        ({"threshold": float("inf")}, ValueError, r"`threshold` must be a finite number; received threshold=inf"),
        ({"resting_potential": float("-inf")}, ValueError, r"`resting_potential` must be a finite number"),
        ({"threshold": 1e-45}, ValueError, r"`threshold` must be greater than `resting_potential`, by at least "
                                           r"float32's smallest normal number 1.175494e-38.*threshold=1e-45"),
        ({"threshold": 3e38, "resting_potential": -3e38}, ValueError, r"at most its largest 3.402823e\+38"),
        ({"neuron": "lif", "leak": 0.9999999999999999}, ValueError, r"`leak` must be 1 or a number that float32.*"
                                                                   r"does not round to 1.*received leak=0.9999999999999999"),
        ({"norm_bound": float("inf")}, ValueError, r"`norm_bound` must be a finite number; received norm_bound=inf"),
    ],
)
def test_invalid_argument_is_rejected_at_construction(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        make(**overrides)


def test_feedback_shape_mismatch_is_rejected_at_build():
    block = make(feedback=keras.layers.Dense(8, use_bias=False))
    with pytest.raises(ValueError, match=r"`feedback` maps the last layer's output \(16,\) to \(8,\).*first layer's input current of shape \(16,\)"):
        block.build((None, 5))


def test_conv_feedback_without_upsampling_is_rejected_at_build():
    block = FeedbackSpikingBlock(
        forward=[keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Conv2D(8, 3, strides=2, padding="same")],
        feedback=keras.layers.Conv2D(4, 3, padding="same", use_bias=False))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\), which cannot be added to .* \(8, 8, 4\)"):
        block(np.zeros((1, 8, 8, 1), "float32"))


def test_spectral_norm_needs_a_kernel():
    block = make(feedback=keras.Sequential([keras.layers.Dense(16, use_bias=False)]), spectral_norm=True)
    with pytest.raises(ValueError, match=r"spectral_norm=True restricts the feedback layer's `kernel`, but Sequential has none"):
        block.build((None, 5))


def test_sequence_length_must_equal_time_steps():
    block = make(input_type="sequence", time_steps=30)
    with pytest.raises(ValueError, match=r"input sequence has 20 frames but time_steps=30"):
        block.build((None, 20, 5))


def test_stage_that_cannot_take_the_input_names_itself():
    block = make(forward=[keras.layers.Conv2D(4, 3)], feedback=keras.layers.Conv2D(4, 3))
    with pytest.raises(ValueError, match=r"`forward\[0\]` \(Conv2D\) cannot take an input of shape \(None, 5\)"):
        block.build((None, 5))


# issue 32 item 5: layer inputs that failed deep inside a backend op or with an AttributeError


def test_an_input_of_another_shape_than_the_built_one_is_refused_by_name():
    block = make()
    block(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match=r"layer 'feedback_spiking_block.*' is incompatible with the layer: "
                                         r"expected shape=\(None, 8\), found shape=\(2, 9\)"):
        block(np.zeros((2, 9), "float32"))


@pytest.mark.parametrize("layer", ["block", "couple"])
def test_string_inputs_are_refused_with_their_dtype(layer):
    from keras_fsnn import TernaryCouple

    spiking = make() if layer == "block" else TernaryCouple()
    with pytest.raises(TypeError, match=r"takes numeric inputs .*received inputs of dtype 'str"):
        spiking(np.array([[["a"] * 8] * 3] * 2) if layer == "couple" else np.array([["a"] * 8] * 2))


def test_integer_inputs_are_taken():
    out = make()(np.ones((2, 8), "uint8"))
    assert out.shape == (2, 16)


def test_diagnostics_before_the_first_call_say_so():
    with pytest.raises(ValueError, match=r"Layer 'feedback_spiking_block.*' has not been called yet"):
        make().diagnostics()


@pytest.mark.parametrize("argument", ["inject", "stages", "transforms", "downsample"])
def test_implicit_streams_stage_lists_must_be_lists(argument):
    from keras_fsnn import ImplicitStreams

    kwargs = dict(inject=[keras.layers.Conv2D(4, 3, padding="same")], stages=[[]],
                  transforms=[keras.layers.Conv2D(4, 3, padding="same")])
    kwargs[argument] = None
    with pytest.raises(TypeError, match=rf"`{argument}` must be a list.*; received {argument}=None"):
        ImplicitStreams(**kwargs)
