import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_fsnn  # noqa: E402,F401  (first, as a user should: its TensorFlow CPU defaults)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# jit_compile for tiny training runs whose subject is not XLA (run bookkeeping, export,
# searches): TensorFlow's graph mode, because compiling with XLA takes longer than such a
# run trains; on JAX jit, whose alternative is op-by-op eager execution.
QUICK_JIT = BACKEND != "tensorflow"

# Python code that makes TensorFlow unimportable and unfindable, as on the GPU machine (which
# has JAX only): run first in a subprocess (`-c NO_TENSORFLOW + code`, or as its sitecustomize).
NO_TENSORFLOW = """
import importlib.abc, importlib.util, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("no " + name + " on this machine")
sys.meta_path.insert(0, Refuse())
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "tensorflow" else find_spec(name, *a)
"""


# How a computation can run: eagerly, traced into a graph (TensorFlow's graph mode, where
# oneDNN runs the convs and `backend.fused` compiles the solvers' bookkeeping), or compiled
# whole with XLA (JAX's jit, which is also JAX's only traced mode).
EXECUTION_MODES = ("eager", "graph", "xla") if BACKEND == "tensorflow" else ("eager", "xla")


@pytest.fixture
def always_fused(monkeypatch):
    """`backend.fused` and `fused_gradient` compile at any size (TensorFlow's graph mode
    fuses only from `FUSE_FROM` values per sample, larger than test models)."""
    if BACKEND == "tensorflow":
        from keras_fsnn.backend import tensorflow_backend

        monkeypatch.setattr(tensorflow_backend, "FUSE_FROM", 0)


def in_mode(fn, mode):
    """`fn` to be run in execution `mode` (EXECUTION_MODES) under the active backend."""
    if mode == "eager":
        return fn
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=mode == "xla", autograph=False)
    import jax

    return jax.jit(fn)


def value_and_grads(loss_fn, variables, mode="eager"):
    """loss_fn() -> scalar; its value and its gradients w.r.t. `variables` (Keras
    variables), by the active backend's own autodiff, in execution `mode`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def compute():
            with tf.GradientTape() as tape:
                loss = loss_fn()
            return loss, tape.gradient(loss, [v.value for v in variables])

        loss, grads = in_mode(compute, mode)()
        return float(loss), [np.asarray(g) for g in grads]

    import jax

    def pure(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return loss_fn()

    loss, grads = in_mode(jax.value_and_grad(pure), mode)([v.value for v in variables])
    return float(loss), [np.asarray(g) for g in grads]


def cosine(a, b):
    """Cosine similarity of two lists of arrays, taken as one long vector each."""
    a = np.concatenate([np.ravel(x) for x in a]).astype("float64")
    b = np.concatenate([np.ravel(x) for x in b]).astype("float64")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="I/N",
                     help="run only the collected tests k with k % N == I (test_other_backend splits its rerun)")


def pytest_collection_modifyitems(config, items):
    shard = config.getoption("--shard")
    if shard:
        index, count = (int(part) for part in shard.split("/"))
        kept = [item for k, item in enumerate(items) if k % count == index]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
