#!/usr/bin/env bash
# The machine's side of examples/gpu/train_cifar.py (probe | train | unpack): install the
# carried wheels (.whl/, made by `prepare`), then run the job under JAX. The GPU image's
# python3 has JAX with CUDA and no TensorFlow; $PYTHON overrides it (the CPU test).
set -euo pipefail
cd "$(dirname "$0")/../.."
home=${FSNN_GPU_HOME:-/tmp/keras-fsnn-gpu}
wheels=${FSNN_GPU_WHEELS:-.whl}
mkdir -p "$home"
if compgen -G "$wheels/*.whl" >/dev/null; then
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$home/site" "$wheels"/*.whl
  export PYTHONPATH="$home/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec "${PYTHON:-python3}" examples/gpu/train_cifar.py "$@"
