#!/usr/bin/env bash
# Issue 17's GPU check in one command: the parity catalog's quick slice with our side on the GPU,
# then the update-step, training-step and many-small-arrays benchmarks against torch on the same
# GPU; sized for one NVIDIA H200 (or H100) to finish within 8 minutes of device time.
#
#   bash benchmarks/gpu.sh                      # appends the results to benchmarks/RESULTS.md
#   bash benchmarks/gpu.sh path/to/out.md       # or to another file
#   bash benchmarks/gpu.sh --rehearse [out.md]  # the same stages on the CPU, tiny sizes, under a
#                                               # minute: checks the script and the benchmarks'
#                                               # options without a GPU (tests/test_gpu_check.py
#                                               # runs it); default output: a temporary file
#
# Exit status 0 when every stage finished and every parity case passed; otherwise 1, with each
# failure (a stage stopped at its time limit, a parity case out of tolerance, a benchmark that
# failed) written into the results too. When JAX finds no GPU the script stops at the first stage.
# Each stage's whole output is kept in a temporary folder that the last line names.
#
# Needs a Python whose jax sees the GPU (JAX's CUDA build: `pip install -e ".[cuda]"`) and whose
# torch is a CUDA build (PyTorch's own index, e.g. `--index-url
# https://download.pytorch.org/whl/cu128`; the `[torch]` extra pins the CPU build), plus optax and
# flax (scikit-learn optional): $PYTHON if set, else the first of .venv/bin/python and python3 that
# qualifies; the script prints the one it uses, or why each was refused. The repository root goes
# on PYTHONPATH, so functional_optreg needs no install. (The GPU machine lent to this project's
# sessions has such a python3: Python 3.12, jax 0.11.2 with its CUDA 13 plugin, torch
# 2.11.0+cu130; the whole test suite and the parity quick slice were run with those versions on
# the CPU. There, run it as `GPU_SH_COPY_TO=$OUT bash benchmarks/gpu.sh`: the stages' logs and the
# results file are copied into $GPU_SH_COPY_TO when it names a folder.)
#
# Stages, each under `timeout` (a benchmark stopped by it still writes the cases it finished):
#   parity       `python -m parity --quick --platform gpu`: one configuration per optimizer family
#                (and L-BFGS), float64 and float32, each step against torch on the CPU (the oracle);
#                JAX at matmul precision "highest". At most 180 s (21 s on 2 CPU cores; a GPU
#                compiles each case's steps more slowly).
#   update_step  Adam, AdamW, SGD(momentum) at 10M and 50M parameters in 8 and 400 arrays, against
#                torch's fused CUDA optimizers and the copy bandwidth measured in the same rounds
#                (ours/floor ≤ 1.25 is ≥ 80% of it). At most 140 s.
#   train_step   the seed CNN at batch 256, 1024 and 4096 against torch eager (its default and its
#                fused optimizer). At most 90 s.
#   many_leaves  2M parameters in 400 arrays. At most 30 s.
# Together at most 440 s, plus about 20 s of start-up checks.
# Device and precision, for a fair float32 comparison: CUDA_VISIBLE_DEVICES defaults to 0 (both
# frameworks on the same device); JAX with jax_platforms=cuda,cpu (parity/platform.py: it fails
# rather than fall back to the CPU) and matmul precision "highest"; torch with TF32 off for matmuls
# and cuDNN; XLA_PYTHON_CLIENT_PREALLOCATE=false (JAX would otherwise take 75% of the GPU's memory
# up front and leave torch too little).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="$(mktemp -d)"
MODE=gpu
if [[ "${1:-}" == "--rehearse" ]]; then
  MODE=rehearse
  shift
fi
if [[ $MODE == gpu ]]; then
  RESULTS="${1:-$REPO/benchmarks/RESULTS.md}"
else
  RESULTS="${1:-$LOGS/rehearsal.md}"
fi
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
  LIMITS=(180 140 90 30)
  QUALIFIES='import jax, torch, optax, flax
assert jax.default_backend() == "gpu", f"JAX runs on {jax.default_backend()} (jax {jax.__version__})"
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"'
else
  PLATFORM=cpu
  PARITY=(--quick --optimizer sgd)
  UPDATE=(--optimizers sgd_momentum --sizes 1e6 --leaves 8 --repeats 2 --sample-ms 2)
  TRAIN=(--optimizers sgd_momentum --batches 8 --repeats 2 --sample-ms 5)
  LEAVES=(--params 1e5 --leaves 20 --repeats 2)
  LIMITS=(120 120 120 120)
  QUALIFIES='import jax, torch, optax, flax'
fi

refusal() {  # refusal PYTHON: succeeds when it qualifies, else prints the last line of why not
  local output
  output="$("$1" -c "$QUALIFIES" 2>&1)" && return 0
  echo "${output##*$'\n'}"
  return 1
}
if [[ -z "${PYTHON:-}" ]]; then
  for candidate in "$REPO/.venv/bin/python" python3; do
    if ! command -v "$candidate" >/dev/null 2>&1; then
      echo "gpu.sh: $candidate: not found"
    elif why="$(refusal "$candidate")"; then
      PYTHON="$candidate"
      break
    else
      echo "gpu.sh: $candidate refused: $why"
    fi
  done
elif ! why="$(refusal "$PYTHON")"; then
  echo "gpu.sh: PYTHON=$PYTHON refused: $why" >&2
  exit 1
fi
if [[ -z "${PYTHON:-}" ]]; then
  echo "gpu.sh: no Python with jax, torch, optax and flax$([[ $MODE == gpu ]] && echo ' that see the GPU') (set PYTHON=...)" >&2
  exit 1
fi
echo "gpu.sh: $PYTHON: $("$PYTHON" -c 'import sys, jax, torch; print(f"Python {sys.version.split()[0]}, jax {jax.__version__}, torch {torch.__version__}")')"
if [[ $MODE == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

SECTIONS="$LOGS/sections.md"
started=$SECONDS
failures=0
limited() {  # limited LIMIT_S NAME COMMAND...: under timeout, output to the screen and $LOGS/NAME.log; sets $status
  local limit="$1" name="$2"
  shift 2
  echo "== $name (at most ${limit}s)"
  status=0
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" || status=${PIPESTATUS[0]}
}
failed() {  # failed NAME WHAT: count a failure, say it on stderr and in the results
  failures=$((failures + 1))
  echo "gpu.sh: $1 $2" >&2
  printf '\n**%s %s.**\n\n' "$1" "$2" >>"$SECTIONS"
}

limited "${LIMITS[0]}" parity "$PYTHON" -m parity --platform "$PLATFORM" "${PARITY[@]}"
{
  echo
  echo "## Parity catalog's quick slice: our side on $PLATFORM"
  echo
  echo "\`python -m parity --platform $PLATFORM ${PARITY[*]}\`; torch, the oracle, on the CPU."
  echo "Worst step over the slice, and every case that did not pass (the whole table: parity.log):"
  echo
  echo '```'
  awk '
    /^device:/ || /^parity:/ { print; next }
    $2 == "float64" || $2 == "float32" { ran++ }
    $2 == "float64" && $3 != "-" && $3 + 0 >= worst64 { worst64 = $3 + 0; case64 = $1 }
    $2 == "float32" && $4 != "-" && $4 + 0 >= worst32 { worst32 = $4 + 0; case32 = $1 }
    ($2 == "float64" || $2 == "float32") && $6 != "pass" { print }
    END {
      if (!ran) { print "no case ran"; exit }
      printf "worst float64 max_rel %.2e (%s); worst float32 max_ratio %.3f (%s)\n", worst64, case64, worst32, case32
    }' "$LOGS/parity.log"
  echo '```'
} >>"$SECTIONS"
case $status in
  0) ;;
  1) failed parity "ran every case; some were out of tolerance (the rows above)" ;;
  2) failed parity "refused to start (exit 2): $(tail -n 1 "$LOGS/parity.log")" ;;
  124) failed parity "stopped at its ${LIMITS[0]} s limit: the rows above are the cases that finished" ;;
  *) failed parity "failed (exit $status): see its log" ;;
esac

benchmark() {  # benchmark LIMIT_S NAME ARGS...: one benchmark, its Markdown section collected in $SECTIONS
  local limit="$1" name="$2"
  shift 2
  limited "$limit" "$name" "$PYTHON" "benchmarks/$name.py" --platform "$PLATFORM" --markdown "$SECTIONS" "$@"
  case $status in
    0) ;;
    124) failed "$name" "stopped at its $limit s limit (the cases it finished are in its section, if it wrote one)" ;;
    *) failed "$name" "failed (exit $status): $(tail -n 1 "$LOGS/$name.log")" ;;
  esac
}
if [[ $status != 2 ]]; then
  benchmark "${LIMITS[1]}" update_step "${UPDATE[@]}"
  benchmark "${LIMITS[2]}" train_step "${TRAIN[@]}"
  benchmark "${LIMITS[3]}" many_leaves "${LEAVES[@]}"
fi

{
  echo
  if [[ $MODE == gpu ]]; then
    echo "# GPU run: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  else
    echo "# Rehearsal of benchmarks/gpu.sh on the CPU (tiny sizes: no figure here is a measurement), $(date -u '+%Y-%m-%d %H:%M UTC')"
  fi
  echo
  echo "Produced by benchmarks/gpu.sh in $((SECONDS - started)) s; $failures stage(s) failed."
  cat "$SECTIONS"
} >>"$RESULTS"
if [[ -n "${GPU_SH_COPY_TO:-}" && -d "${GPU_SH_COPY_TO:-}" ]]; then
  cp "$LOGS"/*.log "$RESULTS" "$GPU_SH_COPY_TO"/
fi
echo "gpu.sh: results appended to $RESULTS, each stage's whole output in $LOGS ($((SECONDS - started)) s, $failures stage(s) failed)"
[[ $failures == 0 ]]
