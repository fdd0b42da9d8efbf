"""keras-tuner HyperModels of the zoo's feedback spiking network families.

`build(hp)` declares every hyperparameter of the family's `SearchSpace` in `hp` (time
steps, neuron and leak, threshold, spectral-norm bound, adjoint solver and its steps,
dropout, widths, learning rate), builds the network with `keras_fsnn.models` and compiles
it with the papers' optimiser (SGD momentum 0.9 with coupled weight decay 5e-4).

`fit(hp, model, ...)` adds a `FiringRateLogger` on the validation data, so
`val_firing_rate` (and `val_synops`, `val_accuracy_within_rate` when asked) are in the
epoch logs and can be objectives:

    tuner = keras_tuner.RandomSearch(
        HyperFSNN((28, 28, 1), 10, layer="dense", rate_bound=0.1),
        objective=keras_tuner.Objective("val_accuracy_within_rate", "max"), max_trials=20)

Reproducibility: the tuner's `seed` fixes the sampled hyperparameters; the HyperModel's
`seed` and the trial's values fix the initial weights, the dropout masks and the data
order (`keras.utils.set_random_seed` before each build).
"""

import json
import zlib

import keras
import keras_tuner

from keras_fsnn import validation
from keras_fsnn.callbacks import FiringRateLogger
from keras_fsnn.models import feedback_networks as networks
from keras_fsnn.models.implicit_stream_networks import mpis_network
from keras_fsnn.training import auto_jit_compile
from keras_fsnn.training.optimizers import CoupledSGD
from keras_fsnn.tuner.search_space import COMMON, WIDTHS, SearchSpace

LAYERS = {"dense": "dense", "conv": "conv"}


class FSNNHyperModel(keras_tuner.HyperModel):
    """What every family shares: the search space, compilation, seeding and the
    firing-rate logging. Subclasses implement `build_network(values, seed)`.

    Args:
        search_space: dict narrowing or fixing hyperparameters (see
            `keras_fsnn.tuner.search_space`), e.g. {"time_steps": 5, "neuron": ["lif"],
            "threshold": (1.0, 2.0)}.
        rate_bound: log `val_accuracy_within_rate` for a constrained search.
        synops: log `val_synops` too.
        rate_examples: validation inputs simulated for the firing rate.
        weight_decay: coupled L2 weight decay of the optimiser (papers: 5e-4).
        jit_compile: passed to `model.compile`; "auto" uses XLA except for conv models
            on the TensorFlow backend, which run faster in graph mode on CPU.
        seed: base seed of the initial weights, dropout masks and data order.
    """

    def __init__(self, dimensions, search_space=None, rate_bound=None, synops=False, rate_examples=512,
                 weight_decay=5e-4, jit_compile="auto", seed=0, name=None, tunable=True):
        super().__init__(name=name, tunable=tunable)
        self.space = SearchSpace(dimensions, search_space)
        self.rate_bound = None if rate_bound is None else validation.number("rate_bound", rate_bound, 0.0, 1.0)
        self.synops = validation.boolean("synops", synops)
        self.rate_examples = validation.integer("rate_examples", rate_examples, minimum=1)
        self.weight_decay = validation.number("weight_decay", weight_decay, low=0.0)
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"Argument `jit_compile` must be 'auto', True or False; received jit_compile={jit_compile!r}.")
        self.jit_compile = jit_compile
        self.seed = validation.integer("seed", seed, minimum=0)

    def values(self, hp):
        """Declare the search space in `hp`; the leak only exists for LIF neurons."""
        values = {}
        for name in self.space.specs:
            if name == "leak":
                continue
            values[name] = self.space.sample(hp, name)
        values["leak"] = None
        if values["neuron"] == "lif":
            with hp.conditional_scope("neuron", ["lif"]):
                values["leak"] = self.space.sample(hp, "leak")
        return values

    def build(self, hp):
        values = self.values(hp)
        seed = self.trial_seed(values)
        keras.utils.set_random_seed(seed)
        model = self.build_network(values, seed)
        jit = auto_jit_compile(model) if self.jit_compile == "auto" else self.jit_compile
        model.compile(
            optimizer=CoupledSGD(values["learning_rate"], momentum=0.9, coupled_weight_decay=self.weight_decay),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
        return model

    def trial_seed(self, values):
        """A seed determined by `seed` and the trial's hyperparameter values."""
        text = json.dumps(values, sort_keys=True, default=str)
        return (self.seed + zlib.crc32(text.encode())) % (2**31 - 1)

    def block_options(self, values, seed):
        return dict(time_steps=values["time_steps"], neuron=values["neuron"], leak=values["leak"],
                    threshold=values["threshold"], norm_bound=values["norm_bound"], solver=values["solver"],
                    solver_steps=values["solver_steps"], dropout=values["dropout"], spectral_norm=True, seed=seed)

    def build_network(self, values, seed):
        raise NotImplementedError

    def fit(self, hp, model, *args, **kwargs):
        """`model.fit` with a FiringRateLogger first in the callbacks (validation data, or
        the training inputs with prefix "" when there is none)."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        data, prefix = kwargs.get("validation_data"), "val_"
        if data is None:
            data, prefix = (args[0] if args else kwargs.get("x")), ""
        logger = FiringRateLogger(data, max_examples=self.rate_examples, synops=self.synops,
                                  rate_bound=self.rate_bound, prefix=prefix)
        return model.fit(*args, callbacks=[logger] + callbacks, **kwargs)


class HyperFSNN(FSNNHyperModel):
    """Single-layer feedback spiking networks: `layer="dense"` (the F400 family: flatten ->
    `units` neurons with a dense feedback) or `layer="conv"` (the F64C5 family: one conv
    layer of `filters` channels, `kernel_size`, stride 2, with a conv feedback).

    Args:
        input_shape: per-sample input shape, e.g. (28, 28, 1).
        num_classes: readout size.
        layer: "dense" or "conv".
        normalization: (mean, std) of the inputs, applied by a layer inside the model,
            or None.
        **kwargs: see FSNNHyperModel (search_space, rate_bound, seed, ...).
    """

    def __init__(self, input_shape, num_classes, layer="dense", normalization=None, **kwargs):
        self.layer = validation.choose("layer", layer, LAYERS)
        self.input_shape = _shape("input_shape", input_shape, 3 if self.layer == "conv" else 1)
        self.num_classes = validation.integer("num_classes", num_classes, minimum=2)
        self.normalization = normalization
        super().__init__({**COMMON, **WIDTHS[self.layer]}, **kwargs)

    def build_network(self, values, seed):
        options = self.block_options(values, seed)
        if self.layer == "dense":
            return networks.feedback_dense_network(self.input_shape, self.num_classes, values["units"],
                                                   normalization=self.normalization, name="hyper_fsnn", **options)
        return networks.feedback_conv_network(self.input_shape, self.num_classes, values["filters"],
                                              values["kernel_size"], 2, normalization=self.normalization,
                                              name="hyper_fsnn", **options)


class HyperMultilayerFSNN(FSNNHyperModel):
    """The five-layer F{c1}C3u family (AlexNet-F, CIFARNet-F) with every channel count
    scaled by the `width` hyperparameter (at least 1 channel)."""

    channels = None
    family = None

    def __init__(self, input_shape=(32, 32, 3), num_classes=10,
                 normalization=(networks.CIFAR_MEAN, networks.CIFAR_STD), **kwargs):
        self.input_shape = _shape("input_shape", input_shape, 3)
        self.num_classes = validation.integer("num_classes", num_classes, minimum=2)
        self.normalization = normalization
        super().__init__({**COMMON, **WIDTHS["multilayer"]}, **kwargs)

    def build_network(self, values, seed):
        channels = [max(1, round(c * values["width"])) for c in self.channels]
        return networks.feedback_multilayer_network(self.input_shape, self.num_classes, channels,
                                                    normalization=self.normalization, name=self.family,
                                                    **self.block_options(values, seed))


class HyperAlexNetF(HyperMultilayerFSNN):
    """AlexNet-F, 96C3s-256C3-384C3s-384C3-256C3 (F96C3u) times `width`."""

    channels = networks.ALEXNET_F_CHANNELS
    family = "hyper_alexnet_f"


class HyperCIFARNetF(HyperMultilayerFSNN):
    """CIFARNet-F, 128C3s-256C3-512C3s-1024C3-512C3 (F128C3u) times `width`."""

    channels = networks.CIFARNET_F_CHANNELS
    family = "hyper_cifarnet_f"


class HyperMPIS(FSNNHyperModel):
    """Multi-parallel implicit stream networks (paper 003) built by
    `keras_fsnn.models.mpis_network`: the base plan `channels` / `strides` (default: the
    Fashion-MNIST 16C3-32C3-48C3 of paper 003 Table 1) with the `width` multiplier, 1-2
    streams, the fusion layer and the gradient (implicit or one-step) as hyperparameters,
    besides the shared ones (MPIS has no spectral-norm bound)."""

    def __init__(self, input_shape, num_classes, channels=(16, 32, 48), strides=(1, 2, 1), normalization=None,
                 **kwargs):
        self.input_shape = _shape("input_shape", input_shape, 3)
        self.num_classes = validation.integer("num_classes", num_classes, minimum=2)
        self.channels, self.strides, self.normalization = tuple(channels), tuple(strides), normalization
        if kwargs.get("synops"):
            raise ValueError("Argument `synops` is not available for HyperMPIS: SynOps are counted for "
                             "FeedbackSpikingBlock only; received synops=True.")
        dimensions = {k: v for k, v in COMMON.items() if k != "norm_bound"}
        super().__init__({**dimensions, **WIDTHS["mpis"]}, **kwargs)

    def build_network(self, values, seed):
        channels = [max(1, round(c * values["width"])) for c in self.channels]
        fusion = min(values["fusion_layer"], len(channels) - 1)
        return mpis_network(
            self.input_shape, self.num_classes, channels, self.strides, num_streams=values["num_streams"],
            fusion_layer=fusion, normalization=self.normalization, name="hyper_mpis",
            time_steps=values["time_steps"], neuron=values["neuron"], leak=values["leak"],
            threshold=values["threshold"], dropout=values["dropout"], gradient=values["gradient"], seed=seed,
            # the solver's options are the implicit gradient's: the one-step gradient takes none
            **({"solver": values["solver"], "solver_steps": values["solver_steps"]} if values["gradient"] == "ide" else {}))


def _shape(argument, shape, min_rank):
    if not isinstance(shape, (tuple, list)) or len(shape) < min_rank or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"Argument `{argument}` must be a tuple of at least {min_rank} positive integers (the "
                         f"per-sample shape, no batch axis); received {argument}={shape!r}.")
    return tuple(shape)
