"""Surrogate derivatives of the spike function for the BPTT baseline.

The spike s = H(u - V_th) has derivative zero almost everywhere; backpropagation through
time replaces dH/du by a surrogate h(u - V_th). The default is the rectangular function of
STBP (Wu et al. 2018, paper 000 ref. [44]): h(v) = 1/a for |v| < a/2, else 0, with width
a = 1 (in units of membrane potential). IDE never uses these.
"""

from keras import ops

from keras_fsnn import validation


class Surrogate:
    """A spike function H(v) whose backward pass uses h(v); `width` sets its support."""

    name = None

    def __init__(self, width=1.0):
        self.width = validation.number("surrogate_width", width, low=0.0, low_open=True)

    def derivative(self, v):
        raise NotImplementedError

    def __call__(self, v):
        @ops.custom_gradient
        def spike(v):
            def grad(*args, upstream=None):
                g = args[0] if upstream is None else upstream
                return g * self.derivative(v)

            return ops.cast(ops.greater_equal(v, 0.0), v.dtype), grad

        return spike(v)


class Rectangular(Surrogate):
    """h(v) = 1/a on |v| < a/2 (STBP)."""

    name = "rectangular"

    def derivative(self, v):
        return ops.cast(ops.less(ops.abs(v), self.width / 2), v.dtype) / self.width


class Triangle(Surrogate):
    """h(v) = max(0, 1 - |v|/a) / a."""

    name = "triangle"

    def derivative(self, v):
        return ops.maximum(0.0, 1.0 - ops.abs(v) / self.width) / self.width


class Sigmoid(Surrogate):
    """h(v) = sigma'(v k) k with k = 4/a (the derivative of a sigmoid of slope 4/a)."""

    name = "sigmoid"

    def derivative(self, v):
        k = 4.0 / self.width
        s = ops.sigmoid(k * v)
        return k * s * (1.0 - s)


SURROGATES = {"rectangular": Rectangular, "triangle": Triangle, "sigmoid": Sigmoid}


def get_surrogate(name, width=1.0):
    return validation.choose("surrogate", name, SURROGATES)(width)
