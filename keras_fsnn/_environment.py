"""TensorFlow's CPU defaults for spiking workloads, set before TensorFlow is imported.

Two environment variables, each only where the user has not set it (`os.environ.setdefault`;
set either to "0" / "false" to opt out):

* `TF_ENABLE_ONEDNN_OPTS=1`: oneDNN convolutions and oneDNN's pooled CPU allocator.
  TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX; on an
  AVX2 CPU it runs Eigen's convolutions and a plain malloc allocator. Measured on a 2-core
  AVX2 AMD EPYC (docs/benchmarks.md, "TensorFlow's CPU defaults"): F64C5's 64->64 5x5 J^T
  conv 46.8 -> 33.9 ms, a training step with 12 Broyden iterations 3.47 -> 2.54 s. TensorFlow
  reads this once, when it is imported: `import keras_fsnn` before `import keras` /
  `import tensorflow`, or set it in the environment.
* `TF_CPU_ALLOCATOR_USE_BFC=true`: TensorFlow's pooling BFC allocator on the CPU, read when
  the first tensor is allocated, so it also applies when TensorFlow was imported first. With
  the plain allocator every freed tensor of more than a few MiB goes back to the operating
  system and the next one is page-faulted in afresh: on that machine Broyden's bookkeeping
  at F64C5's size took 127 ms per iteration with it and 58 ms with BFC (10.3 M vs 0.6 M
  page faults, `benchmarks/solver_cost.py`). It also makes
  `tf.config.experimental.get_memory_info("CPU:0")` (the memory benchmarks' peak) available.

Neither changes what is computed beyond floating-point summation order (oneDNN's kernels);
the oracle tests run with both.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
