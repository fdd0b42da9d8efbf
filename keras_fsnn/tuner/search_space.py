"""The hyperparameters of a feedback spiking network and their search ranges.

Each hyperparameter is a `Dimension`: a kind ("int", "float" or "choice"), its default
search range and the values it may take at all (checked when a user narrows it). A
`SearchSpace` is a set of dimensions, optionally narrowed by the user:

    value            -> fixed (hp.Fixed)
    (low, high)      -> a range of the dimension's kind (hp.Int / hp.Float)
    (low, high, step) or a dict {"min_value", "max_value", "step", "sampling"}
    [a, b, ...]      -> a choice (hp.Choice)

Narrowing the keras-tuner way works too: declare the hyperparameter under the same name
in a `keras_tuner.HyperParameters` passed to the tuner; the first declaration wins.
"""

import numbers
from dataclasses import dataclass

from keras_fsnn import gradients, neurons, solvers, validation


@dataclass(frozen=True)
class Dimension:
    kind: str  # "int", "float" or "choice"
    default: object  # (low, high, step, sampling) for int/float, a list for choice
    low: float = None  # allowed domain
    high: float = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = None
    help: str = ""

    def check(self, argument, value):
        """`value` must lie in the dimension's domain; raises ValueError/TypeError naming it."""
        if self.choices is not None:
            if isinstance(value, str):
                value = value.lower()
            if isinstance(value, bool) or value not in self.choices:
                raise ValueError(f"Argument `{argument}` must be one of {list(self.choices)}; "
                                 f"received {argument}={value!r}.")
            return value
        if self.kind == "int":
            value = validation.integer(argument, value, minimum=self.low)
            if self.high is not None and value > self.high:
                raise ValueError(f"Argument `{argument}` must be an integer <= {self.high}; received {argument}={value!r}.")
            return value
        return validation.number(argument, value, self.low, self.high, self.low_open, self.high_open)


COMMON = {
    "time_steps": Dimension("int", (5, 30, 5, "linear"), low=1, help="T, simulation steps"),
    # the allowed choices are the registries' (read when this module is imported)
    "neuron": Dimension("choice", ["if", "lif"], choices=tuple(neurons.NEURONS), help="neuron model"),
    "leak": Dimension("float", (0.8, 1.0, 0.05, "linear"), low=0.0, high=1.0, low_open=True,
                      help="LIF leak lambda (only when neuron='lif')"),
    "threshold": Dimension("float", (1.0, 3.0, 0.5, "linear"), low=0.0, low_open=True, help="V_th"),
    "norm_bound": Dimension("float", (0.5, 1.0, 0.25, "linear"), low=0.0, low_open=True,
                            help="spectral-norm bound c of the feedback"),
    # broyden and gmres solve the same equation (only their cost differs); fixed_point
    # stops short of it within few steps, which can act as a different model.
    "solver": Dimension("choice", ["broyden", "fixed_point"], choices=tuple(solvers.SOLVERS),
                        help="adjoint solver"),
    "solver_steps": Dimension("int", (10, 40, 10, "linear"), low=1, help="adjoint solver iterations"),
    "dropout": Dimension("float", (0.0, 0.3, 0.1, "linear"), low=0.0, high=1.0, high_open=True,
                         help="variational dropout rate"),
    "learning_rate": Dimension("float", (1e-3, 0.1, None, "log"), low=0.0, low_open=True,
                               help="SGD learning rate (momentum 0.9)"),
}

WIDTHS = {
    "dense": {"units": Dimension("int", (100, 800, 100, "linear"), low=1, help="spiking neurons")},
    "conv": {
        "filters": Dimension("int", (16, 128, 16, "linear"), low=1, help="channels of the spiking conv layer"),
        "kernel_size": Dimension("choice", [3, 5], choices=(1, 3, 5, 7), help="conv kernel size"),
    },
    "multilayer": {"width": Dimension("choice", [0.25, 0.5, 1.0], low=0.0, low_open=True,
                                      help="multiplier of the five layers' channels")},
    "mpis": {
        "width": Dimension("choice", [0.5, 1.0, 2.0], low=0.0, low_open=True,
                           help="multiplier of every stream's channels"),
        "num_streams": Dimension("choice", [1, 2], choices=(1, 2, 3), help="parallel implicit streams"),
        "fusion_layer": Dimension("choice", [1, 2], choices=(1, 2), help="layer after which streams fuse"),
        "gradient": Dimension("choice", ["ide", "one_step"],
                              choices=tuple(name for name, mode in gradients.GRADIENTS.items()
                                            if not mode.through_time and name != "spide"),  # what MPIS takes
                              help="implicit or one-step (Jacobian-free) gradient"),
    },
}


class SearchSpace:
    """Dimensions plus the user's narrowing (`overrides`, see the module docstring).

    Unknown names and values outside a dimension's domain raise at construction.
    """

    def __init__(self, dimensions, overrides=None, argument="search_space"):
        self.dimensions = dict(dimensions)
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise TypeError(f"Argument `{argument}` must be a dict of hyperparameter name -> value, range or "
                            f"list; received {argument}={overrides!r}.")
        unknown = sorted(set(overrides) - set(self.dimensions))
        if unknown:
            raise ValueError(f"Argument `{argument}` has unknown hyperparameters {unknown}; known: "
                             f"{sorted(self.dimensions)}.")
        self.specs = {name: self._spec(name, dim, overrides.get(name, dim.default), argument)
                      for name, dim in self.dimensions.items()}

    @staticmethod
    def _spec(name, dim, value, argument):
        where = f"{argument}['{name}']"
        if isinstance(value, list):
            if not value:
                raise ValueError(f"Argument `{where}` is an empty list of choices.")
            return ("choice", [dim.check(where, v) for v in value])
        if isinstance(value, dict):
            value = (value.get("min_value"), value.get("max_value"), value.get("step"), value.get("sampling", "linear"))
        if isinstance(value, tuple):
            if dim.kind == "choice":
                raise ValueError(f"Argument `{where}` takes a value or a list of choices, not a range; "
                                 f"received {where}={value!r}.")
            if not 2 <= len(value) <= 4:
                raise ValueError(f"Argument `{where}` must be (low, high[, step[, sampling]]); received {where}={value!r}.")
            low, high = dim.check(where, value[0]), dim.check(where, value[1])
            step = value[2] if len(value) > 2 else None
            sampling = value[3] if len(value) > 3 else "linear"
            if low > high:
                raise ValueError(f"Argument `{where}` has low > high; received {where}={value!r}.")
            if step is not None and (not isinstance(step, numbers.Real) or step <= 0):
                raise ValueError(f"Argument `{where}` has a step that is not a positive number; received {where}={value!r}.")
            validation.choose(f"{where} sampling", sampling, {"linear": 1, "log": 1, "reverse_log": 1})
            if sampling != "linear" and low <= 0:
                raise ValueError(f"Argument `{where}` uses {sampling} sampling, which needs low > 0; received {where}={value!r}.")
            return (dim.kind, (low, high, step, sampling))
        return ("fixed", dim.check(where, value))

    def sample(self, hp, name):
        """Declare `name` in the keras-tuner `hp` and return its current value."""
        kind, spec = self.specs[name]
        if kind == "fixed":
            return hp.Fixed(name, spec)
        if kind == "choice":
            return hp.Choice(name, spec) if len(spec) > 1 else hp.Fixed(name, spec[0])
        low, high, step, sampling = spec
        if low == high:
            return hp.Fixed(name, low)
        if kind == "int":
            return hp.Int(name, low, high, step=step or 1, sampling=sampling)
        return hp.Float(name, low, high, step=step, sampling=sampling)

    def describe(self):
        """One line per hyperparameter: its name, search range and meaning."""
        lines = []
        for name, (kind, spec) in self.specs.items():
            if kind in ("int", "float"):
                low, high, step, sampling = spec
                text = f"{kind} [{low}, {high}]" + (f" step {step}" if step else "") + (f" {sampling}" if sampling != "linear" else "")
            else:
                text = f"{kind} {spec}"
            lines.append(f"{name:<14} {text:<34} {self.dimensions[name].help}")
        return "\n".join(lines)
