"""FeedbackSpikingBlock: a feedback spiking network trained at its equilibrium.

Paper 000 (IDE). The block holds N forward stages F^1..F^N (Keras layers: input -> layer 1
-> ... -> layer N) and a feedback W^1 from layer N back into layer 1. It simulates the
spiking network for T steps (eq. 10 / 33):

    u^1[t+1] = lambda u^1[t] + W^1 s^N[t] + F^1 x[t] + b^1 - (V_th - u_rest) s^1[t+1]
    u^l[t+1] = lambda u^l[t] + F^l s^{l-1}[t+1] + b^l   - (V_th - u_rest) s^l[t+1]

(feedback delayed one step, feed-forward stages see same-step spikes, membranes start at 0,
s^N[0] = 0) and returns the last layer's (weighted) average firing rate a^N[T]. Its
gradient comes from the fixed-point equation the rates converge to (Theorem 3):

    a^N = f(a^N) = f_N o ... o f_2 (f_1(a^N, x_bar)),
    f_1(a, x) = sigma((W^1 a + F^1 x + b^1) / (V_th - u_rest)),
    f_l(a)    = sigma((F^l a + b^l) / (V_th - u_rest)),      sigma = clamp to [0, 1],

where x_bar is the (weighted) average input; the skeleton (`layers/equilibrium.py`) runs
both from the one wiring below, and the backward mode (`keras_fsnn.gradients`) decides the
gradient.
"""

import keras
from keras import ops

from keras_fsnn import backend, validation
from keras_fsnn.layers.equilibrium import EquilibriumLayer
from keras_fsnn.layers.frobenius_norm import FrobeniusNormRestriction
from keras_fsnn.layers.spectral_norm import SpectralNormRestriction
from keras_fsnn.layers.stages import build_stage, stage_current

BN_STATISTICS = {"paper": "paper", "released_code": "released_code"}
FEEDBACK_NORMS = {"spectral": SpectralNormRestriction, "frobenius": FrobeniusNormRestriction, "none": None}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class FeedbackSpikingBlock(EquilibriumLayer):
    """A multi-layer feedback spiking block whose output is its equilibrium firing rate.

    Example (a single-layer block of 16 IF neurons with feedback):

        block = keras_fsnn.FeedbackSpikingBlock(
            forward=[keras.layers.Dense(16)], feedback=keras.layers.Dense(16, use_bias=False),
            time_steps=300, neuron="if", threshold=2.0, solver="broyden", solver_steps=30,
            spectral_norm=False)
        rates = block(x)          # (batch, 16), values in [0, 1]

    Args:
        forward: a Keras layer or a list of N >= 1 Keras layers, F^1..F^N. Each maps the
            previous layer's spikes (for F^1: the input) to the input current of its
            neurons; use a `keras.Sequential` for "conv + batch norm". Do not put Dropout
            in them: use `dropout`, which is variational as the paper requires.
        feedback: a Keras layer W^1 mapping layer-N spikes to a current of layer 1's shape
            (Dense, Conv2D, or Conv2DTranspose for the 2x-upsampling "F96C3u" feedback),
            or None for a feed-forward spiking network (then J_f = 0 and the implicit
            gradient is the one-pass gradient of f; needs spectral_norm=False).
        time_steps: T >= 1, simulation steps per call.
        neuron: "if", "lif" (with the short forms `leak`: lambda in (0, 1], None gives 1 for
            IF and 0.95 for LIF; `threshold`: V_th, default 2; `resting_potential`: u_rest <
            V_th, a spike subtracts V_th - u_rest, default 0), a registered name, a
            `keras_fsnn.neurons.Neuron` or its config.
        dropout: rate in [0, 1) of variational dropout: one Bernoulli mask per sample and
            neuron, drawn once per call, applied to the output of every forward stage and of
            the feedback at all T steps and reused in the backward (paper 000 F.3.2). A
            list gives one rate per stage (forward stages, then the feedback), e.g. SPIDE's
            LeNet drops only its dense layer.
        gradient: the backward mode (`keras_fsnn.gradients`): "ide" (implicit
            differentiation; short forms `solver`: "broyden" (the paper's), "gmres" or
            "fixed_point", `solver_steps` (30), `solver_tol` (1e-5), `solver_memory`),
            "bptt" (backpropagation through the unrolled simulation with a surrogate spike
            derivative, the baseline whose memory grows with T; `surrogate`:
            "rectangular", "triangle" or "sigmoid", `surrogate_width`), "one_step" (the
            Jacobian-free gradient through f once) or "spide" (the adjoint solved by a
            second, spiking stage of ternary neurons, paper 002; `backward_time_steps` T_B
            (100), `backward_threshold` V_th^b (0.5), `backward_resting_potential` u_rest^b
            (-0.5), `backward_scale` s, the gain on dL/da (1; the paper's loss scale)); or a
            `BackwardMode` object such as `gradients.IDE(solver="gmres")`. A short form the
            chosen mode does not use is an error. SPIDE blocks have no batch norm (paper
            002 §4.4); the paper's forward neurons use u_rest = -V_th.
        feedback_norm: the restriction of the feedback kernel: "spectral" (W =
            clip(alpha, -c, c) W / ||W||_2, paper 000 F.1; the default), "frobenius" (W =
            min(c, F) W / F, F the Hutchinson estimate of ||W||_F from 64 Gaussian probes:
            SPIDE, paper 002 D.2), "none", or a `SpectralNormRestriction` /
            `FrobeniusNormRestriction`. The short forms `spectral_norm` / `frobenius_norm`
            (booleans) and `norm_bound` (c; 1 by default, paper 002: 2) say the same.
        input_type: "static" (an image: the same input current at every step) or
            "sequence" (`(batch, T, ...)`: frame t drives step t; its average, weighted by
            lambda^(T-1-t) for LIF, is x_bar).
        bn_statistics: "paper" or "released_code" (below).
        simulation_dtype: "float32" (default) or "bfloat16": the precision of the
            per-step currents of the spike simulations (the T-step forward simulation and
            SPIDE's spiking backward stage). Spikes are exact in bfloat16, and on hardware
            with bfloat16 matrix units (recent x86 CPUs, GPUs) the simulation runs several
            times faster; potentials, rates, the fixed-point map and the adjoint solve stay
            float32. Not for gradient="bptt", which differentiates the simulation itself.
        seed: seed of the dropout masks.

    Batch norm (paper 000 F.2): inside the spiking simulation every stage runs in inference
    mode (stored statistics); the differentiable evaluation of f runs in the call's mode,
    so in training it normalises with the batch statistics of the average input / rates
    and updates the moving statistics. The adjoint's Jacobian is taken of that same f
    (the paper's "train mode in this computational graph"); the released code instead
    takes it with stored statistics in layers 2..N.

    `bn_statistics="released_code"` reproduces the authors' released code's training step
    instead (a documented switch, seed-code.md §2.5): in training, the first stage
    normalises with the batch statistics of F^1 x inside the simulation too (static input
    only); the adjoint's Jacobian takes batch statistics in the first stage and stored ones
    in stages 2..N; and the first stage's moving statistics are updated twice per step, as
    that code's input batch norm runs twice (docs/ide.md, "Batch norm", has the table).

    Mixed precision: the block runs in float32 (its own dtype policy) under a global
    `mixed_float16` / `mixed_bfloat16` policy; the layers around it use the global one.

    Diagnostics: `diagnostics()` returns the last call's per-layer mean firing rates, the
    forward residual ||f(a[T]) - a[T]|| (training calls) and the backward solve's residual,
    iterations and failure flag; `simulate(x, record_residuals=True)` returns the residual at
    every step (paper Fig. 1). `keras_fsnn.callbacks.EquilibriumMonitor` logs them.
    """

    def __init__(self, forward, feedback, time_steps=30, neuron="if", dropout=0.0, gradient="ide",
                 feedback_norm=None, input_type="static", bn_statistics="paper", simulation_dtype="float32",
                 seed=None, spectral_norm=None, frobenius_norm=None, norm_bound=None, **kwargs):
        super().__init__(time_steps=time_steps, neuron=neuron, dropout=dropout, gradient=gradient,
                         input_type=input_type, simulation_dtype=simulation_dtype, seed=seed, **kwargs)
        if isinstance(forward, keras.layers.Layer):
            forward = [forward]
        if not isinstance(forward, (list, tuple)) or not forward:
            raise TypeError(
                "Argument `forward` must be a Keras layer or a non-empty list of Keras layers; "
                f"received forward={forward!r}.")
        self.forward = list(forward)
        self.feedback = feedback
        self.norm_restriction = _feedback_restriction(feedback, feedback_norm, spectral_norm, frobenius_norm,
                                                      norm_bound)
        self.spectral_norm = isinstance(self.norm_restriction, SpectralNormRestriction)
        self.frobenius_norm = isinstance(self.norm_restriction, FrobeniusNormRestriction)
        self.norm_bound = self.norm_restriction.bound if self.norm_restriction is not None else (
            1.0 if norm_bound is None else validation.number("norm_bound", norm_bound, low=0.0, low_open=True))
        labels = [f"forward[{i}]" for i in range(len(self.forward))] + (["feedback"] if feedback is not None else [])
        self._set_stages(self.forward + ([feedback] if feedback is not None else []), labels)
        self.bn_statistics = validation.choose("bn_statistics", bn_statistics, BN_STATISTICS)
        if self.bn_statistics == "released_code" and self.input_type == "sequence":
            raise ValueError(
                "bn_statistics='released_code' is implemented for input_type='static' only (the released "
                "code normalises spike inputs with statistics of their average, which is not reproduced).")
        if self.bn_statistics == "paper" and keras.backend.backend() == "tensorflow" and any(
                getattr(layer, "synchronized", False) for stage in self.forward
                for layer in stage._flatten_layers(include_self=True, recursive=True)):
            raise ValueError(
                "A forward stage has BatchNormalization(synchronized=True): with bn_statistics='paper' the adjoint "
                "solve's loop normalises with batch statistics, and tf.distribute cannot all-reduce inside that "
                "loop. Use bn_statistics='released_code' (the adjoint uses stored statistics; exact under "
                "MirroredStrategy) or unsynchronized batch norm (per-replica statistics).")
        n = len(self.forward)
        self._feedback_index = n if feedback is not None else None
        self._last = [n - 1]

    # ------------------------------------------------------------------ the topology

    def _build_stages(self, frame_shape):
        shapes = []
        shape = frame_shape
        for i, stage in enumerate(self.forward):
            shape = build_stage(stage, shape, f"forward[{i}]")
            shapes.append(shape)
        feedback_shape = shapes[0] if self.feedback is None else build_stage(self.feedback, shapes[-1], "feedback")
        if tuple(feedback_shape[1:]) != tuple(shapes[0][1:]):
            raise ValueError(
                f"Argument `feedback` maps the last layer's output {tuple(shapes[-1][1:])} to "
                f"{tuple(feedback_shape[1:])}, which cannot be added to the first layer's input "
                f"current of shape {tuple(shapes[0][1:])}; the feedback output must have the "
                "first layer's shape (per sample).")
        self._stage_shapes = shapes + ([feedback_shape] if self.feedback is not None else [])
        self._layer_shapes = [tuple(shape[1:]) for shape in shapes]
        if self.norm_restriction is not None:
            kernel = getattr(self.feedback, "kernel", None)
            if kernel is None:
                argument = "spectral_norm" if self.spectral_norm else "frobenius_norm"
                raise ValueError(
                    f"{argument}=True restricts the feedback layer's `kernel`, but "
                    f"{type(self.feedback).__name__} has none; use a Dense, Conv2D or "
                    f"Conv2DTranspose feedback, or {argument}=False.")
            self._kernel_index = [id(v) for v in self.feedback.trainable_variables].index(id(kernel))
            self.norm_restriction.build(kernel.shape)
            self.norm_restriction.initialize_from(ops.convert_to_numpy(kernel))

    def _network(self, first, last, activate, run):
        """Layer 1 gets F^1 x + W^1 (last layer's activity one step ago); layer l the
        current of F^l on layer l-1's activity of the same step."""
        current = first[0]
        if self._feedback_index is not None:
            current = current + run(self._feedback_index, last[0])
        activity = [activate(0, current)]
        for l in range(1, len(self.forward)):
            activity.append(activate(l, run(l, activity[l - 1])))
        return activity

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        return (input_shape[0],) + tuple(self._stage_shapes[len(self.forward) - 1][1:])

    def _restrict(self, params, training):
        if self.norm_restriction is not None:
            trainable = params[-1][0]
            trainable[self._kernel_index] = self.norm_restriction(
                trainable[self._kernel_index], training=training, seed=self.seed_generator)
        return params

    def _adjoint_training(self, training):
        if self.bn_statistics == "paper":
            return training
        # released code: the input layer's batch norm stays in the call's mode, layers 2..N's are stored
        return [training and k in self._input_stages for k in range(len(self._stages))]

    def _simulation_training(self, training):
        return training and self.bn_statistics == "released_code"

    def _input_statistics_updates(self, training):
        return 2 if self.bn_statistics == "released_code" else 1

    # ------------------------------------------------------------------ SPIDE

    def spiking_currents(self, problem):
        """SPIDE (paper 002 §4.2): the stage currents on the saved rates, whose gradients the
        spiking backward stage supplies (see gradients.SPIDE). Taken without the dropout
        mask: Algorithm 2's weight gradients omit it."""
        rates = problem.rates
        inputs = [problem.x_bar] + rates[:-1] + ([rates[-1]] if self.feedback is not None else [])
        return [stage_current(stage, takes, params, value)[0]
                for stage, takes, params, value in zip(self._stages, self._takes_training, problem.params, inputs)]

    def spiking_backward_graph(self, operands):
        """(transposes, masks, rho) for the spiking backward stage (gradients.SPIDE.propagate):
        each transposed connection is the vector-Jacobian product of a (linear) stage, the
        masks and rho the slope of the neuron's rate map at the rates (m^l = [0 < a^l < 1],
        rho = 1 / (V_th - u_rest) for (L)IF neurons); `operands` = (x_bar, params, masks,
        rates)."""
        _, params, masks, rates = operands
        n = len(self.forward)
        dtype = self.simulation_dtype

        def transpose(index, at):
            # v -> F^T (D . v), computed only on the samples with a spike at this step
            # (backend.on_active_rows): at a backward step most samples are silent.
            mask = masks[index] if masks else None
            stage, takes = self._stages[index], self._takes_training[index]

            def pullback(rows, at_rows):
                current = lambda a: stage_current(stage, takes, params[index], a, compute_dtype=dtype)[0]  # noqa: E731
                return backend.vjp(current, at_rows)[1](rows)

            return lambda v: backend.on_active_rows(pullback, v if mask is None else mask * v, at)

        transposes = [transpose(index, rates[index - 1]) for index in range(1, n)]
        transposes.append(transpose(n, rates[-1]) if self.feedback is not None else None)
        slopes = [self.neuron.rate_map_slope(rate) for rate in rates]
        gains = [gain for _, gain in slopes]
        if all(isinstance(gain, float) and gain == gains[0] for gain in gains):
            return transposes, [mask for mask, _ in slopes], gains[0]
        return transposes, [mask * gain for mask, gain in slopes], 1.0  # a slope that varies: in the masks

    def spike_backward(self, inputs, upstream):
        """Run SPIDE's two stages on `inputs` (inference mode: no dropout) with
        dL/da^N = `upstream`, and return a dict: "rates" (a^l of the forward stage),
        "betas" (the backward stage's rates beta^l divided by the gain s, i.e. estimates of
        (I - J_f^T)^{-1} upstream and its images in the earlier layers), "masks" and
        "firing_rate" (fraction of neuron-steps with a +-1 spike). For gradient="spide"."""
        if self.backward.name != "spide":
            raise ValueError(
                f"spike_backward() needs a block with gradient='spide'; this block has gradient={self.backward.name!r}.")
        x = ops.cast(inputs, "float32")
        if not self.built:
            self.build(x.shape)
        frozen = keras.tree.map_structure(ops.stop_gradient, self._parameters(False))
        rates, _, _ = self._simulate(x, frozen, [])
        transposes, masks, rho = self.spiking_backward_graph((x, frozen, [], rates))
        g = self.backward.scale * ops.cast(upstream, "float32")
        betas, firing_rate = self.backward.propagate(g, transposes, masks, rho)
        return {"rates": rates, "betas": [b / self.backward.scale for b in betas], "masks": masks,
                "firing_rate": firing_rate}

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(bn_statistics=self.bn_statistics)
        restriction = self.norm_restriction
        if restriction is None or type(restriction) in (SpectralNormRestriction, FrobeniusNormRestriction) and (
                getattr(restriction, "probes", 64) == 64):
            config.update(spectral_norm=self.spectral_norm, frobenius_norm=self.frobenius_norm,
                          norm_bound=self.norm_bound)
        else:
            config["feedback_norm"] = keras.saving.serialize_keras_object(restriction)
        config["forward"] = [keras.saving.serialize_keras_object(s) for s in self.forward]
        config["feedback"] = keras.saving.serialize_keras_object(self.feedback) if self.feedback is not None else None
        return config

    @classmethod
    def from_config(cls, config):
        config = cls._legacy_config(config)
        config["forward"] = [keras.saving.deserialize_keras_object(s) for s in config["forward"]]
        if config["feedback"] is not None:
            config["feedback"] = keras.saving.deserialize_keras_object(config["feedback"])
        return cls(**config)


def _feedback_restriction(feedback, feedback_norm, spectral_norm, frobenius_norm, norm_bound):
    """The feedback's norm restriction layer (or None) from `feedback_norm` or the short
    forms `spectral_norm` / `frobenius_norm` / `norm_bound` (None: not given)."""
    for argument, value in (("spectral_norm", spectral_norm), ("frobenius_norm", frobenius_norm)):
        if value is not None:
            validation.boolean(argument, value)
    if feedback_norm is not None and not isinstance(feedback_norm, str):
        if spectral_norm is not None or frobenius_norm is not None or norm_bound is not None:
            raise ValueError("Arguments `spectral_norm`, `frobenius_norm` and `norm_bound` build a named restriction; "
                             f"feedback_norm={feedback_norm!r} is given as an object: set the bound there.")
        if isinstance(feedback_norm, dict):
            feedback_norm = keras.saving.deserialize_keras_object(feedback_norm)
        if not isinstance(feedback_norm, (SpectralNormRestriction, FrobeniusNormRestriction)):
            raise TypeError("Argument `feedback_norm` must be 'spectral', 'frobenius', 'none', a "
                            f"SpectralNormRestriction or a FrobeniusNormRestriction; received {feedback_norm!r}.")
        restriction = feedback_norm
    else:
        if spectral_norm and frobenius_norm:
            raise ValueError(
                "Arguments `spectral_norm` and `frobenius_norm` are two restrictions of the same feedback "
                "weight; received both True. Pass one of them (IDE: spectral, SPIDE: frobenius).")
        if feedback_norm is not None:
            if spectral_norm is not None or frobenius_norm is not None:
                raise ValueError(f"Pass either feedback_norm={feedback_norm!r} or spectral_norm / frobenius_norm, "
                                 "not both.")
            name = validation.choose("feedback_norm", feedback_norm, {k: k for k in FEEDBACK_NORMS})
        elif frobenius_norm:
            name = "frobenius"
        elif spectral_norm is False and frobenius_norm in (None, False):
            name = "none"
        else:
            name = "spectral"  # the paper's default
        restriction = None if name == "none" else FEEDBACK_NORMS[name](1.0 if norm_bound is None else norm_bound)
    if feedback is None and restriction is not None:
        argument = "spectral_norm" if isinstance(restriction, SpectralNormRestriction) else "frobenius_norm"
        raise ValueError(
            f"Argument `{argument}` restricts the feedback weight, but feedback=None; "
            f"pass {argument}=False for a feed-forward block.")
    return restriction
