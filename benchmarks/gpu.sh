#!/usr/bin/env bash
# The benchmarks of this folder, sized for one NVIDIA H100 (80 GB), in under 5 minutes.
#
#   bash benchmarks/gpu.sh                 # appends the results to benchmarks/RESULTS.md
#   bash benchmarks/gpu.sh path/to/out.md  # or to another file
#
# Needs a Python whose jax sees the GPU (jax[cuda]) and whose torch is a CUDA build, plus optax and
# flax (scikit-learn optional): $PYTHON if set, else the first of .venv/bin/python and python3 that
# qualifies. The repository root goes on PYTHONPATH, so functional_optreg needs no install.
#
# Device and precision, for a fair float32 comparison:
# - one GPU: CUDA_VISIBLE_DEVICES defaults to 0, so both frameworks use the same device;
# - JAX runs with --platform gpu (jax_platforms=cuda,cpu: it fails rather than fall back to the
#   CPU) and jax_default_matmul_precision=highest; torch with allow_tf32 = False for matmuls and
#   cuDNN (benchmarks/_harness.py: configure);
# - XLA_PYTHON_CLIENT_PREALLOCATE=false: JAX would otherwise take 75% of the GPU's memory up
#   front and leave torch too little for the large cases.
# Sizes: update steps at 10M and 100M parameters (Adam at 100M moves 2.8 GB per step, about 1 ms at
# H100 bandwidth; every implementation of a case is resident at once: about 12 GB), 8 and 400
# arrays for Adam and SGD(momentum), 8 for the others; the seed CNN at batch 256, 1024 and 4096;
# the many-small-arrays study at 2M/400. Each command runs under `timeout` (260 s together, plus
# start-up checks), and a benchmark stopped by it still writes the cases it finished, so the script
# ends within 5 minutes even on a slow machine.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${1:-$REPO/benchmarks/RESULTS.md}"
cd "$REPO"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

gpu_python() {
  "$1" -c 'import jax, torch, optax, flax; assert jax.default_backend() == "gpu" and torch.cuda.is_available()' \
    >/dev/null 2>&1
}
if [[ -z "${PYTHON:-}" ]]; then
  for candidate in "$REPO/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && gpu_python "$candidate"; then
      PYTHON="$candidate"
      break
    fi
  done
fi
if [[ -z "${PYTHON:-}" ]] || ! gpu_python "$PYTHON"; then
  echo "gpu.sh: no Python with a GPU jax, a CUDA torch, optax and flax (set PYTHON=...)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

LOGS="$(mktemp -d)"
SECTIONS="$LOGS/sections.md"
started=$SECONDS
run() {  # run LIMIT_S NAME ARGS...: one benchmark, its Markdown section collected in $SECTIONS
  local limit="$1" name="$2"
  shift 2
  echo "== $name (at most ${limit}s)"
  timeout --signal=INT --kill-after=15 "$limit" "$PYTHON" "benchmarks/$name.py" --platform gpu --markdown "$SECTIONS" "$@" \
    2>&1 | tee "$LOGS/$name.log" || echo "gpu.sh: $name did not finish (exit ${PIPESTATUS[0]})" >&2
}

# About 10 s per update-step case with 400 arrays (three compilations), 3 s with 8.
run 110 update_step --optimizers adam sgd_momentum --sizes 1e7 1e8 --leaves 8 400 --repeats 11
run 50 update_step --optimizers adamw rmsprop adagrad --sizes 1e7 1e8 --leaves 8 --repeats 11
run 60 train_step --batches 256 1024 4096 --repeats 9
run 40 many_leaves --repeats 11

{
  echo
  echo "# GPU run: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Produced by benchmarks/gpu.sh in $((SECONDS - started)) s."
  echo
  cat "$SECTIONS" 2>/dev/null || echo "(no benchmark finished)"
} >>"$RESULTS"
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  cp "$LOGS"/*.log "$RESULTS" "$OUT"/ 2>/dev/null || true
fi
echo "gpu.sh: results appended to $RESULTS ($((SECONDS - started)) s)"
