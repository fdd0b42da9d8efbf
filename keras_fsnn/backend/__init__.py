"""The few operations that differ between Keras backends.

Everything else in keras_fsnn is written with `keras.ops`. What cannot be:

* `read(variable)`: a variable's current value as a plain tensor that autodiff tracks
  (TensorFlow's `convert_to_tensor(variable)` would return the variable itself, which an
  eager `tf.custom_gradient` rejects; JAX needs the traced `.value`).
* `vjp(fn, primal)`: linearise `fn` at `primal` once and return `(fn(primal), pullback)`,
  where `pullback(cotangent)` is the vector-Jacobian product. Keras has no `ops.vjp`. The
  implicit backward calls the pullback once per solver iteration.
* `time_loop(steps, body, state)`: a fixed-length loop over time steps that reverse-mode
  autodiff can go through (the BPTT baseline): TensorFlow's while loop needs
  `maximum_iterations` for that under XLA, and JAX needs a scan-lowered `fori_loop`.
* `on_active_rows(fn, rows, *aligned)`: a row-wise `fn` that maps zero rows to zero,
  applied only to the rows (samples) of `rows` that hold a nonzero value. SPIDE's
  spike-based backward uses it: at a given step most samples send no spike. TensorFlow
  gathers the active rows (outside XLA: dynamic shapes); under XLA and on JAX every row is
  computed.
* `compiled_call(layer, key, fn, *tensors)`: `fn(*tensors)` as one compiled computation
  when called eagerly, compiled once per `key` and input shape and reused: the layers'
  `simulate()` (called in loops by evaluation, metrics and callbacks). Eager JAX would
  otherwise compile the time loop's scan anew at every call (it captures the weights), and
  eager TensorFlow would run the loop op by op. Inside a traced function, `fn` is called.
* `fused(fn)`: `fn` (tensor arithmetic, no convolutions) run as one XLA computation in
  TensorFlow's graph mode, which otherwise runs every op as its own kernel, a pass over
  memory each. Broyden's bookkeeping (its history products and vector updates) runs this
  way; the J^T product stays outside it, with oneDNN's convolutions. Worth it only for
  work much larger than an XLA call's overhead (about 0.1-0.5 ms): a neuron's step, 150
  calls per simulation, was not (docs/benchmarks.md); and only where the largest argument
  holds at least `tensorflow_backend.FUSE_FROM` (8192) values per sample, since each traced
  shape costs an XLA compilation. Eagerly, under XLA and on JAX, `fn` runs as it is
  (traced into the surrounding computation).
* `fused_gradient(fn)`: `fn` with its value as it is and its vector-Jacobian product
  computed as one XLA computation (fn recomputed inside it) in TensorFlow's graph mode:
  the rate map's pullback, applied once per solver iteration and layer, is 1.5-4x faster
  (benchmarks/solver_cost.py). Not for reductions over the batch (a batch norm's
  gradient), which XLA's CPU code runs slower than TensorFlow's kernels.
* `updates_in_place()`: whether an array update (`ops.slice_update`) in the code being
  traced is done in place: under XLA (TensorFlow's `jit_compile`, JAX), not in
  TensorFlow's graph mode or eagerly, where it copies the array. Broyden's history writes
  choose between a one-row update of every block and a conditional on the one block.
* `report(callback, *values)`: hand values computed inside a custom backward pass to Python
  (for the backward-solve diagnostics). JAX only allows this through `jax.debug.callback`;
  TensorFlow (also under XLA) stores them in variables instead, so the callback there is
  given the variables to assign (and to add to the epoch's sums); `flush_reports()`
  waits for JAX's pending host callbacks before the sums are read.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_fsnn.backend.tensorflow_backend import compiled_call, flush_reports, fused, fused_gradient, on_active_rows, read, report, time_loop, updates_in_place, vjp
elif _BACKEND == "jax":
    from keras_fsnn.backend.jax_backend import compiled_call, flush_reports, fused, fused_gradient, on_active_rows, read, report, time_loop, updates_in_place, vjp
else:
    # The package imports on any backend (keras_fsnn.fp, the datasets and the zoo's files
    # need none of this); the spiking layers fail at their first use, saying why.
    def _unsupported(*args, **kwargs):
        raise ValueError(
            f"keras_fsnn's spiking layers support the 'tensorflow' and 'jax' Keras backends; the active "
            f"backend is {_BACKEND!r}. Set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax (keras_fsnn.fp runs on "
            "any backend).")

    compiled_call = flush_reports = fused = fused_gradient = on_active_rows = read = report = time_loop = updates_in_place = vjp = _unsupported

name = _BACKEND


def check_supported():
    """Raise ValueError where the spiking layers cannot run (another Keras backend)."""
    if _BACKEND not in ("tensorflow", "jax"):
        _unsupported()

__all__ = ["check_supported", "compiled_call", "flush_reports", "fused", "fused_gradient", "name", "on_active_rows", "read", "report", "time_loop", "updates_in_place", "vjp"]
