"""TensorFlow implementations of the backend-specific operations (see `__init__`)."""

import tensorflow as tf

try:  # where TensorFlow keeps it; without it every call is treated as XLA (the dense path)
    from tensorflow.python.framework.ops import get_default_graph
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
except ImportError:  # pragma: no cover
    GraphOrParentsInXlaContext = None


def read(variable):
    return tf.convert_to_tensor(variable)


def vjp(fn, primal):
    # One persistent tape records fn(primal) once; every pullback reuses the recording,
    # also from inside a solver's while-loop body (graph mode and XLA).
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(primal)
        value = fn(primal)

    def pullback(cotangent):
        return tape.gradient(value, primal, output_gradients=cotangent,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return value, pullback


def report(sink, *values):
    """Store `values` in the variables of `sink` (a `BackwardReport`) and add them to its sums."""
    for variable, value in zip(sink.variables, values):
        variable.assign(tf.cast(value, variable.dtype))
    sink.sums.assign_add(tf.stack([tf.cast(v, tf.float32) for v in sink.sum_update(values)]))


def flush_reports():
    """Reports are variable writes: nothing is pending."""


def time_loop(steps, body, state):
    # The batch dimension of the loop's state is left unknown to the graph optimizer. Known,
    # grappler's memory optimizer may rewrite a gradient's AddN of 3+ tensors inside the
    # loop (BPTT; SPIDE's backward) into a TemporaryVariable when memory looks tight, and
    # the second training step then fails with AlreadyExistsError ".../AddN/tmp_var"
    # (TensorFlow graph mode); with a dimension unknown that rewrite is skipped. XLA, which
    # has no grappler and needs static shapes (a gradient's Tile), keeps them.
    def relaxed(value):
        shape = tf.convert_to_tensor(value).shape
        return tf.TensorShape([None] + shape.as_list()[1:]) if shape.rank else shape

    options = {}
    if not _in_xla():
        options["shape_invariants"] = (tf.TensorShape([]), tf.nest.map_structure(relaxed, state))
    return tf.while_loop(lambda t, _: t < steps, lambda t, value: (t + 1, body(t, value)),
                         (tf.constant(0), state), maximum_iterations=steps, **options)[1]


# Fusing costs one XLA compilation per traced shape (about 0.5 s for Broyden's update), paid
# back only where the work per call is large; smaller problems (test models, F400's 400
# neurons, which trains under XLA anyway) keep graph mode's op-by-op path.
FUSE_FROM = 8192  # values per sample in the largest argument


def _worth_fusing(args):
    if tf.executing_eagerly() or _in_xla():
        return False
    sizes = [tf.TensorShape(getattr(a, "shape", ())) for a in tf.nest.flatten(args)]
    per_sample = [s[1:].num_elements() for s in sizes if s.rank and s.rank >= 2]
    return any(n is None or n >= FUSE_FROM for n in per_sample)


def fused(fn):
    # In graph mode every op of fn would run as its own kernel, each a pass over memory;
    # compiled with XLA, fn's elementwise and matrix-vector work fuses into a few loops,
    # while the convolutions outside fn stay with oneDNN.
    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def call(*args):
        return compiled(*args) if _worth_fusing(args) else fn(*args)

    return call


def fused_gradient(fn):
    # fn's value as it is; its vector-Jacobian product recomputes fn and differentiates it
    # inside one XLA computation, so that a backward called once per solver iteration
    # makes a few passes over memory instead of one per gradient op.
    def backward(args, upstream):
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        return tape.gradient(value, args, output_gradients=upstream,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    compiled = tf.function(backward, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def differentiated(*args):
        return fn(*args), lambda upstream: compiled(list(args), upstream)

    def call(*args):
        return differentiated(*args) if _worth_fusing(args) else fn(*args)

    return call


def _in_xla():
    return GraphOrParentsInXlaContext is None or GraphOrParentsInXlaContext(get_default_graph())


def updates_in_place():
    # XLA updates a loop's arrays in place; graph-mode and eager kernels copy the array
    return _in_xla() and not tf.executing_eagerly()


def on_active_rows(fn, rows, *aligned):
    """fn(rows, *aligned) for a row-wise fn that maps all-zero rows to zero, computed on the
    rows (samples) of `rows` that hold a nonzero value; the `aligned` tensors (same batch)
    are taken at the same rows. Outside XLA the active rows are gathered into a smaller batch
    (a dynamic shape) and the silent rows are zero without being computed; when every row is
    active, fn takes them as they are. Under XLA, which needs static shapes, fn runs on
    every row."""
    if _in_xla():
        return fn(rows, *aligned)
    batch = tf.shape(rows)[0]
    active = tf.cast(tf.where(tf.reduce_any(tf.not_equal(tf.reshape(rows, (batch, -1)), 0), axis=1)), tf.int32)
    # Never an empty batch: TensorFlow's CPU kernels give wrong shapes for some ops on zero
    # rows (the input gradient of a Conv2DTranspose came back in the output's shape, TF 2.21
    # with oneDNN on AVX-512). With every row silent, row 0 (zero in, zero out) stands in.
    active = tf.cond(tf.equal(tf.shape(active)[0], 0), lambda: tf.zeros((1, 1), tf.int32), lambda: active)

    def gathered():
        out = fn(tf.gather_nd(rows, active), *[tf.gather_nd(t, active) for t in aligned])
        return tf.scatter_nd(active, out, tf.concat([[batch], tf.shape(out)[1:]], axis=0))

    return tf.cond(tf.equal(tf.shape(active)[0], batch), lambda: fn(rows, *aligned), gathered)


def compiled_call(layer, key, fn, *tensors):
    if not tf.executing_eagerly():
        return fn(*tensors)
    cache = layer.__dict__.setdefault("_compiled_calls", {})  # untracked by Keras
    if key not in cache:
        cache[key] = tf.function(fn, reduce_retracing=True)  # reads the variables themselves
    return cache[key](*tensors)
