"""Options are objects resolved like `keras.initializers.get` (a name with short forms, a
config, an instance), registries list every choice, and a neuron model and a backward mode
written outside the package plug into the layers: they train on both backends and
round-trip through `.keras` files, touching no library file."""

import keras
import numpy as np
import pytest
from conftest import cosine, value_and_grads
from keras import ops

from keras_fsnn import FeedbackSpikingBlock, gradients, neurons, solvers


# ---------------------------------------------------------------- defined outside the package


@neurons.register_neuron("clipped_if", package="keras_fsnn_tests")
class ClippedIF(neurons.Neuron):
    """An IF neuron whose membrane cannot fall below -V_th (a common hardware floor). Its
    equilibrium rate map is the IF one: with a non-negative average input the floor is
    never reached."""

    def step(self, potential, current, spike=None):
        potential, spikes = super().step(potential, current, spike)
        return ops.maximum(potential, -self.threshold), spikes


@gradients.register_gradient("phantom", package="keras_fsnn_tests")
class PhantomGradient(gradients.BackwardMode):
    """The k-step "phantom" gradient (Geng et al., NeurIPS 2021): the value is the
    simulated equilibrium a*, the gradient that of k damped steps of f from it,
    a_{i+1} = (1 - d) a_i + d f(a_i), differentiated by autodiff."""

    def __init__(self, steps=3, damping=0.5):
        self.steps, self.damping = int(steps), float(damping)

    def get_config(self):
        return {"steps": self.steps, "damping": self.damping}

    def attach(self, problem):
        a = problem.equilibrium
        for _ in range(self.steps):
            mapped = problem.layer.fixed_point_map(a, problem.x_bar, problem.params, problem.masks, problem.training)[0]
            a = (1.0 - self.damping) * a + self.damping * mapped
        return problem.equilibrium + (a - ops.stop_gradient(a))


def block(**options):
    keras.utils.set_random_seed(0)
    defaults = dict(time_steps=20, spectral_norm=True, seed=1)
    return FeedbackSpikingBlock([keras.layers.Dense(10)], keras.layers.Dense(10, use_bias=False), **{**defaults, **options})


def classifier(spiking):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(spiking(inputs)))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 2, (n, 6)).astype("float32"), rng.integers(0, 3, n)


# ---------------------------------------------------------------- resolution


def test_a_neuron_is_a_name_a_config_or_an_instance():
    lif = neurons.get("lif", leak=0.9, threshold=1.5)
    assert isinstance(lif, neurons.LIF) and (lif.leak, lif.threshold, lif.resting_potential) == (0.9, 1.5, 0.0)
    assert neurons.get(keras.saving.serialize_keras_object(lif)).get_config() == lif.get_config()
    assert neurons.get(lif) is lif
    with pytest.raises(ValueError, match=r"`leak`=0.8 builds a named neuron; the neuron LIF\(.*\) is given as an object"):
        neurons.get(lif, leak=0.8)
    with pytest.raises(TypeError, match="must be a neuron name"):
        neurons.get(3)
    assert {"if", "lif", "clipped_if"} <= set(neurons.NEURONS)
    assert block(neuron=neurons.LIF(leak=0.9)).neuron.leak == 0.9


def test_a_backward_mode_is_a_name_with_short_forms_a_config_or_an_instance():
    mode = gradients.get("ide", solver="gmres", solver_steps=12, solver_tol=1e-4, solver_memory=6)
    assert isinstance(mode, gradients.IDE) and mode.get_config() == {"solver": "gmres", "steps": 12, "tol": 1e-4,
                                                                      "memory": 6}
    assert gradients.get(keras.saving.serialize_keras_object(mode)).get_config() == mode.get_config()
    assert gradients.get(mode) is mode
    assert gradients.get("bptt", surrogate="triangle").get_config() == {"surrogate": "triangle", "width": 1.0}
    with pytest.raises(ValueError, match="`solver_memory`=4: solver='fixed_point' keeps no memory"):
        gradients.get("ide", solver="fixed_point", solver_memory=4)
    with pytest.raises(ValueError, match="`solver_steps`=5 builds a named backward mode"):
        gradients.get(gradients.OneStep(), solver_steps=5)
    with pytest.raises(ValueError, match="`backward_scale` applies to gradient='spide' only"):
        gradients.get("one_step", backward_scale=3.0)
    # the memory reaches the solver: GMRES(2) restarts, and needs more iterations than GMRES(30)
    spiking = block(gradient=gradients.IDE(solver="gmres", steps=40, tol=1e-6, memory=2))
    x, y = data()
    classifier(spiking).train_on_batch(x, y)
    restarted = spiking.diagnostics()["backward_iterations"]
    spiking = block(gradient=gradients.IDE(solver="gmres", steps=40, tol=1e-6))
    classifier(spiking).train_on_batch(x, y)
    assert restarted > spiking.diagnostics()["backward_iterations"]


def test_registries_list_the_choices_and_refuse_a_second_class_under_one_name():
    assert set(solvers.SOLVERS) >= {"broyden", "gmres", "fixed_point"}
    assert set(gradients.GRADIENTS) >= {"ide", "bptt", "one_step", "spide", "phantom"}
    with pytest.raises(ValueError, match="A neuron named 'lif' is registered already"):
        neurons.register_neuron("lif")(type("Other", (neurons.Neuron,), {}))
    with pytest.raises(TypeError, match="needs a subclass of keras_fsnn.gradients.BackwardMode"):
        gradients.register_gradient("nothing")(object)


# ---------------------------------------------------------------- extensions


@pytest.mark.backend
def test_a_neuron_and_a_backward_mode_from_outside_train_and_round_trip(tmp_path):
    x, y = data()
    for options in ({"neuron": "clipped_if"}, {"gradient": PhantomGradient(steps=4, damping=0.7)}):
        spiking = block(**options)
        model = classifier(spiking)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        path = tmp_path / "model.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        again = loaded.get_layer(spiking.name)
        assert type(again.neuron) is type(spiking.neuron) and type(again.backward) is type(spiking.backward)
        assert again.backward.get_config() == spiking.backward.get_config()
        np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)))
    config = spiking.get_config()
    assert config["gradient"]["config"] == {"steps": 4, "damping": 0.7}  # a mode without short forms: its config


@pytest.mark.backend
def test_the_phantom_gradient_is_autodiff_of_its_unrolled_steps():
    """The registered mode gives exactly the gradient of the unrolled map it defines (the
    layer hands it the fixed-point map and the parameters), and approaches the implicit
    gradient as its steps grow, as Geng et al. show."""
    x, _ = data(8)
    c = np.random.default_rng(3).normal(size=(8, 10)).astype("float32")
    phantom = block(gradient=PhantomGradient(steps=4, damping=0.5), time_steps=200)
    phantom.build(x.shape)
    variables = list(phantom.trainable_variables)
    _, through_mode = value_and_grads(lambda: ops.sum(phantom(x, training=True) * c), variables)
    a_star = phantom.simulate(x, record_residuals=False)["rates"][-1]

    def unrolled():
        params = phantom._parameters(True)
        a = ops.convert_to_tensor(a_star)
        for _ in range(4):
            a = 0.5 * a + 0.5 * phantom.fixed_point_map(a, x, params, [], True)[0]
        return ops.sum(a * c)

    _, by_hand = value_and_grads(unrolled, variables)
    for a, b in zip(through_mode, by_hand):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    implicit = block(gradient="ide", solver_steps=100, solver_tol=1e-9, time_steps=200)
    implicit.build(x.shape)
    implicit.set_weights(phantom.get_weights())
    _, exact = value_and_grads(lambda: ops.sum(implicit(x, training=True) * c), list(implicit.trainable_variables))
    long_phantom = block(gradient=PhantomGradient(steps=60, damping=0.5), time_steps=200)
    long_phantom.build(x.shape)
    long_phantom.set_weights(phantom.get_weights())
    _, long = value_and_grads(lambda: ops.sum(long_phantom(x, training=True) * c),
                              list(long_phantom.trainable_variables))
    assert cosine(long, exact) > max(cosine(through_mode, exact), 0.999)
