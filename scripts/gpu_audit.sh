#!/usr/bin/env bash
# The GPU half of the audit: every implementation whose framework sees a GPU, on the GPU only,
# each in its own process with a time limit, all at once (16 cores, one GPU). Used on a
# machine with PyTorch, JAX and ONNX Runtime and no TensorFlow; results go to $OUT (default
# reports/gpu/), which `bnconf report` merges with the CPU records.
#   OUT=reports/gpu scripts/gpu_audit.sh [max-examples]
set -u
OUT=${OUT:-reports/gpu}
N=${1:-100}
LIMIT=${BNCONF_GPU_LIMIT:-480}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, jax; print('torch', torch.__version__, 'cuda', torch.version.cuda); print('jax', jax.__version__, jax.devices())"
} > "$OUT/environment.txt" 2>&1
run() {  # implementation, device name as the framework's adapter spells it
  local safe; safe=$(echo "$1" | tr -c 'A-Za-z0-9._-' '_')
  timeout -k 10 "$LIMIT" python3 -m bnconf.running.worker --impl "$1" --devices "$2" --max-examples "$N" \
      --out "$OUT/gpu-$safe.jsonl" --repro-dir "$OUT/repro" > "$OUT/log-$safe.txt" 2>&1
  echo "$1 on $2: exit $?" >> "$OUT/exit-codes.txt"
}
for i in torch.nn.BatchNorm1d torch.nn.BatchNorm2d torch.nn.BatchNorm3d torch.nn.functional.batch_norm \
         "torch.nn.SyncBatchNorm[gloo]" "torch.nn.SyncBatchNorm[nccl]"; do run "$i" cuda & done
for i in flax.linen.BatchNorm flax.nnx.BatchNorm jax.example_libraries.stax.BatchNorm haiku.BatchNorm \
         "equinox.nn.BatchNorm[mode=ema]" "equinox.nn.BatchNorm[mode=batch]"; do run "$i" gpu & done
run onnxruntime.BatchNormalization cuda &
wait
