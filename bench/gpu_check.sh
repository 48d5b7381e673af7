#!/usr/bin/env bash
# One-shot GPU check for a bare GPU machine (issue 15), under 7 minutes: writes every result into OUTDIR.
#
#   bench/gpu_check.sh OUTDIR            # on the GPU machine, from the repository root
#   bench/gpu_check.sh OUTDIR --dry-run  # here, on CPU: every step up to its first CUDA call
#
# The machine has torch, transformers and triton, but no Ray, no pydantic and no registry: the wheels it
# lacks travel in .whl/ (fetch them here with `bench/gpu_wheels.sh`). Steps, each with its own time limit
# so one hang cannot eat the others':
#   1. the environment: GPU, driver, torch and transformers, varlen_attn and its signature
#   2. pytest -m gpu: bf16 parity with the plain loop, packing asserted on for Llama shapes
#   3. torch varlen attention vs per-segment SDPA at the 8B attention shape (bf16, shared prefix, window)
#   4. bench/engine.py --shape llama-3.1-8b: realistic and best-of-8, MFU against 989 TFLOP/s
#   5. memory: peak allocated at 8k, 32k and 64k-token budgets; OOM recovery under a capped fraction
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUTDIR [--dry-run]}
DRY=${2:-}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee "$OUT/failed.txt"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  RMCLUSTER_CACHE_DIR=${RMCLUSTER_CACHE_DIR:-/tmp/rmcluster-gpu-check}
DRYFLAG=${DRY:+--dry-run}

step() {  # step NAME SECONDS COMMAND...: its output in OUTDIR/NAME.txt, its exit status in the summary
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/summary.txt"
}

: >"$OUT/summary.txt"
step env 60 $PY bench/gpu_env.py $DRYFLAG
if [ -z "$DRY" ]; then
  step pytest_gpu 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/rmcluster/test_gpu.py tests/rmcluster/test_packing.py
else
  step pytest_gpu 150 $PY -m pytest -q -m gpu -p no:cacheprovider --collect-only tests/rmcluster/test_gpu.py tests/rmcluster/test_packing.py
fi
step varlen 90 $PY bench/varlen_check.py $DRYFLAG
if [ -z "$DRY" ]; then
  step engine 210 $PY bench/engine.py --shape llama-3.1-8b --mixes realistic,best-of-8 --rounds 2 --kinds "" \
    --json "$OUT/engine.json"
else
  step engine 210 $PY bench/engine.py --help
fi
step memory 90 $PY bench/gpu_memory.py $DRYFLAG
