#!/usr/bin/env bash
# GPU acceptance in one call on a CUDA machine without internet: install the wheels that
# scripts/gpu_wheels.sh put in .gpu-wheels/, run benchmarks/gpu_acceptance.py (gpu tests, 512 px training
# and generation benchmarks) and leave its report, plus this whole log, in $OUT (default: a temp folder).
# Arguments go to gpu_acceptance.py (e.g. --budget 300, --no-wheels); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t gpu-acceptance-XXXXXX)}
export OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
mkdir -p "$OUT"
{
  echo "gpu_acceptance.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  "$PY" benchmarks/gpu_acceptance.py "$@"
} 2>&1 | tee "$OUT/gpu_acceptance.log"
