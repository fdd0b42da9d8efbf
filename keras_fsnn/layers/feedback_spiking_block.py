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

where x_bar is the (weighted) average input; see `keras_fsnn.gradients` for the backward.
"""

import keras
from keras import ops

from keras_fsnn import backend, gradients, neurons, validation
from keras_fsnn.diagnostics import FIELDS, BackwardReport
from keras_fsnn.layers.frobenius_norm import FrobeniusNormRestriction
from keras_fsnn.layers.spectral_norm import SpectralNormRestriction
from keras_fsnn.layers.stages import (
    SIMULATION_DTYPES,
    average_input,
    build_stage,
    call_takes_training,
    check_stage,
    diagnostic_variable,
    sample_norm,
    stage_current,
    stage_parameters,
)

INPUT_TYPES = {"static": "static", "sequence": "sequence"}
BN_STATISTICS = {"paper": "paper", "released_code": "released_code"}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class FeedbackSpikingBlock(keras.layers.Layer):
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
        neuron: "if" or "lif".
        leak: lambda in (0, 1]; None gives 1 for IF and 0.95 for LIF.
        threshold: V_th, the firing threshold (paper: 2).
        resting_potential: u_rest < V_th; a spike subtracts V_th - u_rest (IDE: 0).
        dropout: rate in [0, 1) of variational dropout: one Bernoulli mask per sample and
            neuron, drawn once per call, applied to the output of every forward stage and of
            the feedback at all T steps and reused in the backward (paper 000 F.3.2). A
            list gives one rate per stage (forward stages, then the feedback), e.g. SPIDE's
            LeNet drops only its dense layer.
        solver: "broyden" (the paper's), "gmres" or "fixed_point", for the adjoint equation
            (`keras_fsnn.solvers`).
        solver_steps: the most solver iterations (paper: 30).
        solver_tol: relative residual at which the solver stops early.
        spectral_norm: restrict the feedback kernel to W = clip(alpha, -c, c) W / ||W||_2
            (paper 000 F.1). Needs a feedback layer with a `kernel`.
        frobenius_norm: restrict the feedback kernel to W = min(c, F) W / F instead, with F
            the Hutchinson estimate of ||W||_F from 64 Gaussian probes (SPIDE, paper 002
            D.2; `keras_fsnn.layers.FrobeniusNormRestriction`). Excludes spectral_norm.
        norm_bound: c, the bound of the restriction (paper 000: 1; paper 002: 2).
        gradient: the backward mode: "ide" (implicit differentiation), "bptt"
            (backpropagation through the unrolled simulation with a surrogate spike
            derivative: the baseline, memory grows with T), "one_step" (the
            Jacobian-free gradient through f once) or "spide" (the adjoint solved by a
            second, spiking stage of ternary neurons, paper 002); see keras_fsnn.gradients.
        backward_time_steps, backward_threshold, backward_resting_potential, backward_scale:
            for gradient="spide": T_B (default 100), V_th^b (0.5), u_rest^b (-0.5) and the
            gain s on dL/da (1; the paper's loss scale, 100 for MNIST). SPIDE blocks have no
            batch norm (paper 002 §4.4); the paper's forward neurons use u_rest = -V_th.
        surrogate: for gradient="bptt": "rectangular" (STBP, default), "triangle" or
            "sigmoid" (see keras_fsnn.surrogates); surrogate_width: its width a.
        input_type: "static" (an image: the same input current at every step) or
            "sequence" (`(batch, T, ...)`: frame t drives step t; its average, weighted by
            lambda^(T-1-t) for LIF, is x_bar).
        seed: seed of the dropout masks.
        simulation_dtype: "float32" (default) or "bfloat16": the precision of the
            per-step currents of the spike simulations (the T-step forward simulation and
            SPIDE's spiking backward stage). Spikes are exact in bfloat16, and on hardware
            with bfloat16 matrix units (recent x86 CPUs, GPUs) the simulation runs several
            times faster; potentials, rates, the fixed-point map and the adjoint solve stay
            float32. Not for gradient="bptt", which differentiates the simulation itself.

    Batch norm (paper 000 F.2): inside the spiking simulation every stage runs in inference
    mode (stored statistics); the differentiable evaluation of f runs in the call's mode,
    so in training it normalises with the batch statistics of the average input / rates
    and updates the moving statistics. The adjoint's Jacobian is taken of that same f
    (the paper's "train mode in this computational graph"); the released code instead
    takes it with stored statistics in layers 2..N.

    `bn_statistics="released_code"` reproduces the authors' released code instead (a
    documented switch, seed-code.md §2.5): in training, the first stage normalises with the
    batch statistics of F^1 x inside the simulation too (static input only), and the
    adjoint's Jacobian uses stored statistics.

    Mixed precision: the block runs in float32 (its own dtype policy) under a global
    `mixed_float16` / `mixed_bfloat16` policy; the layers around it use the global one.

    Diagnostics: `diagnostics()` returns the last call's per-layer mean firing rates, the
    forward residual ||f(a[T]) - a[T]|| (training calls) and the backward solve's residual,
    iterations and failure flag; `simulate(x, record_residuals=True)` returns the residual at
    every step (paper Fig. 1). `keras_fsnn.callbacks.EquilibriumMonitor` logs them.
    """

    def __init__(
        self,
        forward,
        feedback,
        time_steps=30,
        neuron="if",
        leak=None,
        threshold=2.0,
        resting_potential=0.0,
        dropout=0.0,
        solver="broyden",
        solver_steps=30,
        solver_tol=1e-5,
        spectral_norm=True,
        norm_bound=1.0,
        gradient="ide",
        surrogate=None,
        surrogate_width=1.0,
        input_type="static",
        bn_statistics="paper",
        seed=None,
        frobenius_norm=False,
        backward_time_steps=None,
        backward_threshold=None,
        backward_resting_potential=None,
        backward_scale=None,
        simulation_dtype="float32",
        **kwargs,
    ):
        # Spike counts and membrane potentials need float32 (bfloat16 counts exactly only
        # up to 256), and the fixed-point map and the adjoint solve run in float32: the
        # block keeps a float32 policy under a global mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(forward, keras.layers.Layer):
            forward = [forward]
        if not isinstance(forward, (list, tuple)) or not forward:
            raise TypeError(
                "Argument `forward` must be a Keras layer or a non-empty list of Keras layers; "
                f"received forward={forward!r}."
            )
        for i, stage in enumerate(forward):
            check_stage(f"forward[{i}]", stage)
        if feedback is not None:
            check_stage("feedback", feedback)
        for argument, value in (("spectral_norm", spectral_norm), ("frobenius_norm", frobenius_norm)):
            if feedback is None and value is True:
                raise ValueError(
                    f"Argument `{argument}` restricts the feedback weight, but feedback=None; "
                    f"pass {argument}=False for a feed-forward block.")
        if validation.boolean("spectral_norm", spectral_norm) and validation.boolean("frobenius_norm", frobenius_norm):
            raise ValueError(
                "Arguments `spectral_norm` and `frobenius_norm` are two restrictions of the same feedback "
                "weight; received both True. Pass one of them (IDE: spectral, SPIDE: frobenius).")

        self.forward = list(forward)
        self.feedback = feedback
        self.time_steps = validation.integer("time_steps", time_steps, minimum=1)
        self.neuron = neurons.get_neuron(neuron, leak, threshold, resting_potential)
        self._stages = self.forward + ([self.feedback] if feedback is not None else [])
        self.dropout = _dropout_rates(dropout, len(self._stages))
        self.spectral_norm = spectral_norm
        self.frobenius_norm = frobenius_norm
        self.norm_bound = validation.number("norm_bound", norm_bound, low=0.0, low_open=True)
        spide_options = {"backward_time_steps": backward_time_steps, "backward_threshold": backward_threshold,
                         "backward_resting_potential": backward_resting_potential, "backward_scale": backward_scale}
        self.backward = gradients.get_gradient(
            gradient, solver=solver, solver_steps=solver_steps, solver_tol=solver_tol,
            surrogate=surrogate, surrogate_width=surrogate_width, spide_options=spide_options,
            leak=self.neuron.leak)
        if self.backward.name == "spide":
            for i, stage in enumerate(self._stages):
                if any(isinstance(layer, keras.layers.BatchNormalization)
                       for layer in stage._flatten_layers(include_self=True, recursive=True)):
                    raise ValueError(
                        f"Stage {i} ({stage.name}) contains BatchNormalization, but gradient='spide' has no batch "
                        "norm (paper 002 §4.4: batch statistics are not available to neuromorphic hardware, and the "
                        "spiking backward stage cannot train them). Remove it or use gradient='ide'.")
        self.input_type = validation.choose("input_type", input_type, INPUT_TYPES)
        self.simulation_dtype = validation.choose("simulation_dtype", simulation_dtype, SIMULATION_DTYPES)
        if self.simulation_dtype != "float32" and self.backward.through_time:
            raise ValueError(
                f"simulation_dtype={simulation_dtype!r} runs the spike simulation in low precision, but "
                "gradient='bptt' differentiates through that simulation; use simulation_dtype='float32' with "
                "gradient='bptt'.")
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
        self.seed = seed
        self._config = {
            "time_steps": self.time_steps,
            "neuron": self.neuron.name,
            "leak": self.neuron.leak,
            "threshold": self.neuron.threshold,
            "resting_potential": self.neuron.resting_potential,
            "dropout": list(self.dropout) if isinstance(self.dropout, tuple) else self.dropout,
            "solver": solver,
            "solver_steps": solver_steps,
            "solver_tol": solver_tol,
            "spectral_norm": self.spectral_norm,
            "frobenius_norm": self.frobenius_norm,
            "norm_bound": self.norm_bound,
            "gradient": gradient,
            **spide_options,
            "surrogate": surrogate,
            "surrogate_width": surrogate_width,
            "input_type": self.input_type,
            "bn_statistics": self.bn_statistics,
            "seed": seed,
            "simulation_dtype": self.simulation_dtype,
        }
        self._takes_training = [call_takes_training(layer) for layer in self._stages]
        self.norm_restriction = None
        if self.spectral_norm:
            self.norm_restriction = SpectralNormRestriction(self.norm_bound)
        elif self.frobenius_norm:
            self.norm_restriction = FrobeniusNormRestriction(self.norm_bound)
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ------------------------------------------------------------------ build

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_type == "sequence":
            if len(input_shape) < 3:
                raise ValueError(
                    "With input_type='sequence' the input must be (batch, time, features...); "
                    f"received input shape {input_shape}."
                )
            if input_shape[1] is not None and input_shape[1] != self.time_steps:
                raise ValueError(
                    f"The input sequence has {input_shape[1]} frames but time_steps="
                    f"{self.time_steps}; they must be equal (crop or pad the frames)."
                )
            frame_shape = (input_shape[0],) + input_shape[2:]
        else:
            frame_shape = input_shape

        shapes = []
        shape = frame_shape
        for i, stage in enumerate(self.forward):
            shape = build_stage(stage, shape, f"forward[{i}]")
            shapes.append(shape)
        if self.feedback is None:
            self._stage_shapes = shapes
            feedback_shape = shapes[0]
        else:
            feedback_shape = build_stage(self.feedback, shapes[-1], "feedback")
        if tuple(feedback_shape[1:]) != tuple(shapes[0][1:]):
            raise ValueError(
                f"Argument `feedback` maps the last layer's output {tuple(shapes[-1][1:])} to "
                f"{tuple(feedback_shape[1:])}, which cannot be added to the first layer's input "
                f"current of shape {tuple(shapes[0][1:])}; the feedback output must have the "
                "first layer's shape (per sample)."
            )
        self._stage_shapes = shapes + ([feedback_shape] if self.feedback is not None else [])

        if self.norm_restriction is not None:
            kernel = getattr(self.feedback, "kernel", None)
            if kernel is None:
                argument = "spectral_norm" if self.spectral_norm else "frobenius_norm"
                raise ValueError(
                    f"{argument}=True restricts the feedback layer's `kernel`, but "
                    f"{type(self.feedback).__name__} has none; use a Dense, Conv2D or "
                    f"Conv2DTranspose feedback, or {argument}=False."
                )
            self._kernel_index = [id(v) for v in self.feedback.trainable_variables].index(id(kernel))
            self.norm_restriction.build(kernel.shape)
            self.norm_restriction.initialize_from(ops.convert_to_numpy(kernel))

        n = len(self.forward)
        self._rates = diagnostic_variable(self, "firing_rates", (n,))
        self._forward_residual = diagnostic_variable(self, "forward_residual")
        # The spike-based backward also reports its firing rate; other modes keep the three
        # variables their saved weights files hold.
        fields = FIELDS if self.backward.name == "spide" else FIELDS[:3]
        self._backward_report = BackwardReport(*[diagnostic_variable(self, name) for name in fields])

    def compute_output_shape(self, input_shape):
        if not self.built:
            self.build(input_shape)
        return (input_shape[0],) + tuple(self._stage_shapes[len(self.forward) - 1][1:])

    # ------------------------------------------------------------------ pieces

    def _parameters(self, training):
        """(trainable, non-trainable) values of every stage, feedback last, as float32
        tensors that autodiff tracks; the feedback kernel is replaced by its restricted value."""
        params = [stage_parameters(stage) for stage in self._stages]
        if self.norm_restriction is not None:
            trainable = params[-1][0]
            trainable[self._kernel_index] = self.norm_restriction(
                trainable[self._kernel_index], training=training, seed=self.seed_generator)
        return params

    def _dropout_masks(self, batch, training):
        """One variational mask per stage output and for the feedback ([] without dropout)."""
        rates = self.dropout if isinstance(self.dropout, tuple) else (self.dropout,) * len(self._stages)
        if not training or not any(rates):
            return []
        masks = []
        for rate, shape in zip(rates, self._stage_shapes):
            if rate == 0.0:
                masks.append(ops.ones((batch,) + tuple(shape[1:]), "float32"))
                continue
            keep = 1.0 - rate
            noise = keras.random.uniform((batch,) + tuple(shape[1:]), seed=self.seed_generator)
            masks.append(ops.cast(ops.less(noise, keep), "float32") / keep)
        return masks

    def _current(self, index, params, inputs, masks, training=False, compute_dtype="float32"):
        """Output current of stage `index` (the feedback is index N), in float32."""
        return stage_current(self._stages[index], self._takes_training[index], params[index], inputs,
                             masks[index] if masks else None, training, compute_dtype)

    def _average_input(self, x):
        return average_input(x, self.input_type, self.neuron, self.time_steps)

    def _feedback_current(self, params, spikes, masks, compute_dtype="float32"):
        """W^1 applied to the last layer's spikes (0 without a feedback)."""
        if self.feedback is None:
            return 0.0
        return self._current(len(self.forward), params, spikes, masks, compute_dtype=compute_dtype)[0]

    def fixed_point_map(self, a_last, x_bar, params, masks, training=False):
        """f(a^N) = f_N o ... o f_2(f_1(a^N, x_bar)) and the stages' state updates."""
        feedback = self._feedback_current(params, a_last, masks)
        current, updates0 = self._current(0, params, x_bar, masks, training)
        rates = self.neuron.rate_map(current + feedback)
        updates = [updates0]
        for index in range(1, len(self.forward)):
            current, stage_updates = self._current(index, params, rates, masks, training)
            rates = self.neuron.rate_map(current)
            updates.append(stage_updates)
        return rates, updates

    def _simulate(self, x, params, masks, record_residuals=False, spike=None, count_spikes=False,
                  first_stage_training=False):
        """T steps of eq. 10 / 33 with stored batch-norm statistics.

        Returns the per-layer (weighted) average rates a^l[T] and, if asked, the residual
        ||f(a^N[t]) - a^N[t]|| (mean over the batch) at every step t = 1..T, or (with
        `count_spikes`) the plain spike counts of every layer instead.
        """
        n = len(self.forward)
        neuron = self.neuron
        batch = ops.shape(x)[0]
        dtype = "float32" if spike is not None else self.simulation_dtype
        zeros = [ops.zeros((batch,) + tuple(shape[1:]), "float32") for shape in self._stage_shapes[:n]]
        static_current = None
        if self.input_type == "static":
            static_current, _ = self._current(0, params, x, masks, first_stage_training)
            x_bar = x
        else:
            x_bar = self._average_input(x)

        def body(t, state):
            potentials, counts, last_spikes, residuals, plain_counts = state
            if static_current is not None:
                current = static_current
            else:
                current, _ = self._current(0, params, ops.take(x, t, axis=1), masks, compute_dtype=dtype)
            feedback = self._feedback_current(params, last_spikes, masks, dtype)
            new_potentials, new_counts = [], []
            spikes = None
            for index in range(n):
                if index > 0:
                    current, _ = self._current(index, params, spikes, masks, compute_dtype=dtype)
                potential, spikes = neuron.step(potentials[index], current + feedback if index == 0 else current, spike)
                new_potentials.append(potential)
                new_counts.append(neuron.accumulate(counts[index], spikes))
                if count_spikes:
                    plain_counts[index] = plain_counts[index] + spikes
            if record_residuals:
                rate = new_counts[-1] / neuron.normaliser(t + 1)
                mapped, _ = self.fixed_point_map(rate, x_bar, params, masks)
                residual = ops.mean(sample_norm(mapped - rate))
                residuals = residuals + residual * ops.one_hot(t, self.time_steps)
            return new_potentials, new_counts, spikes, residuals, list(plain_counts)

        plain = list(zeros) if count_spikes else []
        state = (list(zeros), list(zeros), zeros[-1], ops.zeros((self.time_steps,), "float32"), plain)
        potentials, counts, _, residuals, plain = backend.time_loop(self.time_steps, body, state)
        scale = neuron.normaliser(self.time_steps)
        extra = plain if count_spikes else (residuals if record_residuals else None)
        return [count / scale for count in counts], extra

    # ------------------------------------------------------------------ SPIDE

    def _attach_spiking_backward(self, x_bar, rates, params, frozen, masks):
        """SPIDE (paper 002 §4.2): the stage currents on the saved rates, whose gradients the
        spiking backward stage supplies (see gradients.SpikeBasedImplicitDifferentiation).
        Currents are taken without the dropout mask: Algorithm 2's weight gradients omit it."""
        inputs = [x_bar] + rates[:-1] + ([rates[-1]] if self.feedback is not None else [])
        currents = [self._current(i, params, inputs[i], [])[0] for i in range(len(self._stages))]
        operands = (rates, frozen, masks)
        return self.backward.attach(currents, rates[-1], operands, self._spiking_backward_graph,
                                    report=self._backward_report)

    def _spiking_backward_graph(self, operands):
        """(transposes, masks m^l = [0 < a^l < 1], rho) for the spiking backward stage; each
        transposed connection is the vector-Jacobian product of a (linear) stage."""
        rates, params, masks = operands
        n = len(self.forward)
        dtype = self.simulation_dtype

        def transpose(index, at):
            # v -> F^T (D . v), computed only on the samples with a spike at this step
            # (backend.on_active_rows): at a backward step most samples are silent.
            mask = masks[index] if masks else None

            def pullback(rows, at_rows):
                return backend.vjp(lambda a: self._current(index, params, a, [], compute_dtype=dtype)[0], at_rows)[1](rows)

            return lambda v: backend.on_active_rows(pullback, v if mask is None else mask * v, at)

        transposes = [transpose(index, rates[index - 1]) for index in range(1, n)]
        transposes.append(transpose(n, rates[-1]) if self.feedback is not None else None)
        spike_masks = [ops.cast(ops.logical_and(rate > 0.0, rate < 1.0), "float32") for rate in rates]
        return transposes, spike_masks, 1.0 / self.neuron.reset_amount

    def spike_backward(self, inputs, upstream):
        """Run SPIDE's two stages on `inputs` (inference mode: no dropout) with
        dL/da^N = `upstream`, and return a dict: "rates" (a^l of the forward stage),
        "betas" (the backward stage's rates beta^l divided by the gain s, i.e. estimates of
        (I - J_f^T)^{-1} upstream and its images in the earlier layers), "masks" and
        "firing_rate" (fraction of neuron-steps with a +-1 spike). For gradient="spide"."""
        if self.backward.name != "spide":
            raise ValueError(
                f"spike_backward() needs a block with gradient='spide'; this block has gradient={self._config['gradient']!r}.")
        x = ops.cast(inputs, "float32")
        if not self.built:
            self.build(x.shape)
        frozen = keras.tree.map_structure(ops.stop_gradient, self._parameters(False))
        rates, _ = self._simulate(x, frozen, [])
        transposes, masks, rho = self._spiking_backward_graph((rates, frozen, []))
        g = self.backward.scale * ops.cast(upstream, "float32")
        betas, firing_rate = self.backward.propagate(g, transposes, masks, rho)
        return {"rates": rates, "betas": [b / self.backward.scale for b in betas], "masks": masks,
                "firing_rate": firing_rate}

    # ------------------------------------------------------------------ call

    def call(self, inputs, training=False):
        training = bool(training)
        x = ops.cast(inputs, "float32")
        params = self._parameters(training)
        masks = self._dropout_masks(ops.shape(x)[0], training)
        x_bar = self._average_input(x)
        frozen = keras.tree.map_structure(ops.stop_gradient, params)

        if self.backward.name == "spide":
            rates, _ = self._simulate(ops.stop_gradient(x), frozen, masks)
            rates = [ops.stop_gradient(rate) for rate in rates]
            equilibrium = rates[-1]
            output = self._attach_spiking_backward(x_bar, rates, params, frozen, masks)
            updates = [[] for _ in self.forward]
            z = self.fixed_point_map(equilibrium, ops.stop_gradient(x_bar), frozen, masks)[0] if training else None
        elif self.backward.through_time:
            rates, _ = self._simulate(x, params, masks, spike=self.backward.spike)
            output = rates[-1]
            equilibrium = ops.stop_gradient(output)
            z, updates = self.fixed_point_map(equilibrium, ops.stop_gradient(x_bar), frozen, masks, training)
        else:
            released = self.bn_statistics == "released_code"
            rates, _ = self._simulate(ops.stop_gradient(x), frozen, masks, first_stage_training=training and released)
            equilibrium = ops.stop_gradient(rates[-1])
            adjoint_training = training and not released
            z, updates = self.fixed_point_map(equilibrium, x_bar, params, masks, training)

            def adjoint_map(a, operands):
                x_bar_, params_, masks_ = operands
                return self.fixed_point_map(a, x_bar_, params_, masks_, adjoint_training)[0]

            operands = (ops.stop_gradient(x_bar), frozen, masks)
            output = self.backward.attach(adjoint_map, z, equilibrium, operands, report=self._backward_report)

        if training:
            for stage, stage_updates in zip(self.forward, updates):
                for variable, value in zip(stage.non_trainable_variables, stage_updates):
                    variable.assign(ops.stop_gradient(value))
            self._forward_residual.assign(ops.mean(sample_norm(ops.stop_gradient(z) - equilibrium)))
        self._rates.assign(ops.stack([ops.mean(ops.stop_gradient(rate)) for rate in rates]))
        return ops.cast(output, self.compute_dtype)

    # ------------------------------------------------------------------ user API

    def simulate(self, inputs, record_residuals=True, count_spikes=False):
        """Run the spiking simulation alone (inference mode, no gradient).

        Returns a dict with "rates" (the list of per-layer (weighted) average rates at T)
        and, if `record_residuals`, "residuals": ||f(a^N[t]) - a^N[t]|| averaged over the
        batch for t = 1..T (paper 000 §5.4, Fig. 1); with `count_spikes`, "counts": the
        number of spikes of every neuron over the T steps, per layer.
        """
        x = ops.cast(inputs, "float32")
        if not self.built:
            self.build(x.shape)
        return backend.compiled_call(self, ("simulate", record_residuals, count_spikes),
                                     lambda x: self._simulate_outputs(x, record_residuals, count_spikes), x)

    def _simulate_outputs(self, x, record_residuals, count_spikes):
        params = keras.tree.map_structure(ops.stop_gradient, self._parameters(False))
        out = {}
        if count_spikes:
            out["rates"], out["counts"] = self._simulate(x, params, [], count_spikes=True)
        if record_residuals or not count_spikes:
            out["rates"], residuals = self._simulate(x, params, [], record_residuals)
            if record_residuals:
                out["residuals"] = residuals
        return out

    def diagnostics(self):
        """The last call's mean firing rate per layer, forward residual (training calls)
        and backward solve (residual, iterations, failure) as Python numbers."""
        rates = ops.convert_to_numpy(self._rates)
        out = {f"rate_{i + 1}": float(r) for i, r in enumerate(rates)}
        out["forward_residual"] = float(ops.convert_to_numpy(self._forward_residual))
        out.update(self._backward_report.values())
        return out

    def save_own_variables(self, store):
        # The dropout RNG state is saved too, so a resumed run draws the masks an
        # uninterrupted run would have drawn (Keras does not save SeedGenerator states).
        super().save_own_variables(store)
        store[str(len(self._own_variables()))] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        seed_key = str(len(self._own_variables()))
        if seed_key in store.keys():
            self.seed_generator.state.assign(store[seed_key])
            store = {key: store[key] for key in store.keys() if key != seed_key}
        super().load_own_variables(store)

    def _own_variables(self):
        return self._trainable_variables + self._non_trainable_variables

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        config["forward"] = [keras.saving.serialize_keras_object(s) for s in self.forward]
        config["feedback"] = keras.saving.serialize_keras_object(self.feedback) if self.feedback is not None else None
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["forward"] = [keras.saving.deserialize_keras_object(s) for s in config["forward"]]
        if config["feedback"] is not None:
            config["feedback"] = keras.saving.deserialize_keras_object(config["feedback"])
        return cls(**config)


def _dropout_rates(dropout, stages):
    """One rate for all stages (a float) or a tuple with one rate per stage."""
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != stages:
            raise ValueError(
                f"Argument `dropout` as a list needs one rate per stage ({stages}: the forward stages, then the "
                f"feedback); received dropout={list(dropout)!r}.")
        return tuple(validation.number(f"dropout[{i}]", r, low=0.0, high=1.0, high_open=True) for i, r in enumerate(dropout))
    return validation.number("dropout", dropout, low=0.0, high=1.0, high_open=True)
