"""NIR, the Neuromorphic Intermediate Representation: trained networks out of the library
and into other simulators and neuromorphic hardware, and NIR graphs into Keras.

    graph = keras_fsnn.nir.to_nir(keras_fsnn.zoo.load("fsnn_fmnist"))
    nir.write("fsnn_fmnist.nir", graph)
    model = keras_fsnn.nir.from_nir(nir.read("fsnn_fmnist.nir"))   # inputs in NIR's (C, H, W)

The mapping and its discrete-time semantics are in docs/nir.md and in `semantics`. Needs
the `nir` package (`pip install keras-fsnn[nir]`).
"""

from keras_fsnn.nir.export import to_nir
from keras_fsnn.nir.reading import from_nir
from keras_fsnn.nir.semantics import SEMANTICS

__all__ = ["SEMANTICS", "from_nir", "to_nir"]
