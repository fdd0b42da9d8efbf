"""Argument checks shared by every layer: each error names the argument, the value and what
is allowed, and is raised at construction or build time, never inside a traced loop."""

import math
import numbers


def choose(argument, value, registry):
    """Look `value` up in `registry` (a dict keyed by lower-case names)."""
    if not isinstance(value, str) or value.lower() not in registry:
        known = ", ".join(repr(k) for k in registry)
        raise ValueError(f"Argument `{argument}` must be one of {known}; received {argument}={value!r}.")
    return registry[value.lower()]


def integer(argument, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Argument `{argument}` must be an integer; received {argument}={value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(
            f"Argument `{argument}` must be an integer >= {minimum}; received {argument}={value!r}."
        )
    return int(value)


def number(argument, value, low=None, high=None, low_open=False, high_open=False, finite=True):
    """A real number in the given range; +-inf only with `finite=False` (NaN never)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise TypeError(f"Argument `{argument}` must be a real number; received {argument}={value!r}.")
    if finite and value in (math.inf, -math.inf):
        raise ValueError(f"Argument `{argument}` must be a finite number; received {argument}={value!r}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open or (finite and high in (None, math.inf)) else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"Argument `{argument}` must lie in {span}; received {argument}={value!r}.")
    return float(value)


def boolean(argument, value):
    if not isinstance(value, bool):
        raise TypeError(f"Argument `{argument}` must be True or False; received {argument}={value!r}.")
    return value
