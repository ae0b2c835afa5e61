#!/usr/bin/env bash
# Issue 17's GPU check in one command: the parity catalog's quick slice with our side on the GPU,
# then the update-step, training-step and many-small-arrays benchmarks against torch on the same
# GPU; sized for one NVIDIA H200 (or H100) to finish within 8 minutes of device time.
#
#   bash benchmarks/gpu.sh                      # appends the results to benchmarks/RESULTS.md
#   bash benchmarks/gpu.sh path/to/out.md       # or to another file
#   bash benchmarks/gpu.sh --rehearse [out.md]  # the same stages on the CPU, tiny sizes, ~1 minute:
#                                               # checks the script and the benchmarks' options
#                                               # without a GPU (tests/test_gpu_script.py runs it)
#
# Needs a Python whose jax sees the GPU (jax[cuda]) and whose torch is a CUDA build, plus optax and
# flax (scikit-learn optional): $PYTHON if set, else the first of .venv/bin/python and python3 that
# qualifies. The repository root goes on PYTHONPATH, so functional_optreg needs no install. The
# device machine lent here has such a python3 (Python 3.12, jax 0.11.2 with its CUDA 13 plugin,
# torch 2.11.0+cu130): the parity quick slice passes with those versions on the CPU.
#
# Stages, each under `timeout` (a benchmark stopped by it still writes the cases it finished):
#   parity       `python -m parity --quick --platform gpu`: one configuration per optimizer family
#                (and L-BFGS), float64 and float32, each step against torch on the CPU (the oracle);
#                JAX at matmul precision "highest". At most 150 s.
#   update_step  Adam, AdamW, SGD(momentum) at 10M and 50M parameters in 8 and 400 arrays, against
#                torch's fused CUDA optimizers and the copy bandwidth measured in the same rounds
#                (ours/floor ≤ 1.25 is ≥ 80% of it). At most 120 s.
#   train_step   the seed CNN at batch 256, 1024 and 4096 against torch eager (its default and its
#                fused optimizer). At most 90 s.
#   many_leaves  2M parameters in 400 arrays. At most 40 s.
# Device and precision, for a fair float32 comparison: CUDA_VISIBLE_DEVICES defaults to 0 (both
# frameworks on the same device); JAX with jax_platforms=cuda,cpu (parity/platform.py: it fails
# rather than fall back to the CPU) and matmul precision "highest"; torch with TF32 off for matmuls
# and cuDNN; XLA_PYTHON_CLIENT_PREALLOCATE=false (JAX would otherwise take 75% of the GPU's memory
# up front and leave torch too little).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
if [[ "${1:-}" == "--rehearse" ]]; then
  MODE=rehearse
  shift
fi
RESULTS="${1:-$REPO/benchmarks/RESULTS.md}"
RESULTS="$(cd "$(dirname "$RESULTS")" && pwd)/$(basename "$RESULTS")"
cd "$REPO"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [[ $MODE == gpu ]]; then
  PLATFORM=gpu
  PARITY=(--quick)
  UPDATE=(--optimizers adam adamw sgd_momentum --sizes 1e7 5e7 --leaves 8 400 --repeats 11)
  TRAIN=(--batches 256 1024 4096 --repeats 9)
  LEAVES=(--repeats 11)
  LIMITS=(150 120 90 40)
  QUALIFIES='import jax, torch, optax, flax; assert jax.default_backend() == "gpu" and torch.cuda.is_available()'
else
  PLATFORM=cpu
  PARITY=(--quick --optimizer sgd)
  UPDATE=(--optimizers sgd_momentum --sizes 1e5 --leaves 8 --repeats 2 --sample-ms 2)
  TRAIN=(--optimizers sgd_momentum --batches 8 --repeats 2 --sample-ms 5)
  LEAVES=(--params 1e4 --leaves 20 --repeats 2)
  LIMITS=(120 120 120 120)
  QUALIFIES='import jax, torch, optax, flax'
fi

qualifies() {
  "$1" -c "$QUALIFIES" >/dev/null 2>&1
}
if [[ -z "${PYTHON:-}" ]]; then
  for candidate in "$REPO/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && qualifies "$candidate"; then
      PYTHON="$candidate"
      break
    fi
  done
fi
if [[ -z "${PYTHON:-}" ]] || ! qualifies "$PYTHON"; then
  echo "gpu.sh: no Python with jax, torch, optax and flax$([[ $MODE == gpu ]] && echo ' that see the GPU') (set PYTHON=...)" >&2
  exit 1
fi
if [[ $MODE == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

LOGS="$(mktemp -d)"
SECTIONS="$LOGS/sections.md"
started=$SECONDS
limited() {  # limited LIMIT_S NAME COMMAND...: run under timeout, output to the screen and $LOGS/NAME.log
  local limit="$1" name="$2"
  shift 2
  echo "== $name (at most ${limit}s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" \
    || echo "gpu.sh: $name did not finish (exit ${PIPESTATUS[0]})" | tee -a "$LOGS/$name.log" >&2
}

limited "${LIMITS[0]}" parity "$PYTHON" -m parity --platform "$PLATFORM" "${PARITY[@]}"
{
  echo
  echo "## Parity catalog's quick slice: our side on $PLATFORM"
  echo
  echo "\`python -m parity --platform $PLATFORM ${PARITY[*]}\`; torch, the oracle, on the CPU."
  echo "Worst step over the slice, and every case that did not pass (the whole table is in the log):"
  echo
  echo '```'
  awk '
    /^device:/ || /^parity:/ || /did not finish/ { print; next }
    $2 == "float64" && $3 != "-" && $3 + 0 > worst64 { worst64 = $3 + 0; case64 = $1 }
    $2 == "float32" && $4 != "-" && $4 + 0 > worst32 { worst32 = $4 + 0; case32 = $1 }
    ($2 == "float64" || $2 == "float32") && $6 != "pass" { print }
    END {
      printf "worst float64 max_rel %.2e (%s); worst float32 max_ratio %.3f (%s)\n", worst64, case64, worst32, case32
    }' "$LOGS/parity.log"
  echo '```'
} >>"$SECTIONS"

benchmark() {  # benchmark LIMIT_S NAME ARGS...: one benchmark, its Markdown section collected in $SECTIONS
  local limit="$1" name="$2"
  shift 2
  limited "$limit" "$name" "$PYTHON" "benchmarks/$name.py" --platform "$PLATFORM" --markdown "$SECTIONS" "$@"
}
benchmark "${LIMITS[1]}" update_step "${UPDATE[@]}"
benchmark "${LIMITS[2]}" train_step "${TRAIN[@]}"
benchmark "${LIMITS[3]}" many_leaves "${LEAVES[@]}"

{
  echo
  if [[ $MODE == gpu ]]; then
    echo "# GPU run: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  else
    echo "# Rehearsal of benchmarks/gpu.sh on the CPU (tiny sizes: no figure here is a measurement), $(date -u '+%Y-%m-%d %H:%M UTC')"
  fi
  echo
  echo "Produced by benchmarks/gpu.sh in $((SECONDS - started)) s."
  cat "$SECTIONS"
} >>"$RESULTS"
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  cp "$LOGS"/*.log "$RESULTS" "$OUT"/ 2>/dev/null || true
fi
echo "gpu.sh: results appended to $RESULTS ($((SECONDS - started)) s)"
