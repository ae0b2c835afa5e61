#!/usr/bin/env bash
# The whole test suite, as README's second command and CI run it:
#   1. every test (unit, property, doctests, the parity catalog, bridge resume, lint and types) but
#      the longest trajectories, marked `slow` (parity/conftest.py; `python -m parity` runs them);
#   2. the parity slice marked `numerics` again under two other machines' numerics
#      (docs/parity.md, "Simulating other machines"): torch's kernel level and BLAS path, XLA's ISA;
#      `-m numerics` replaces the default `-m 'not slow'`, so the slow L-BFGS cases run here.
# The slowest tests of each stage are printed (--durations=15).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
# One JAX compilation cache for the three stages and both xdist workers, so a program that several
# tests (or stages) build identically is compiled once. The cache key holds the program, the jax
# version and XLA_FLAGS, so the stage with another XLA ISA compiles its own; a size limit turns on
# jax's file lock, which the two workers need to share the folder. A fresh folder per run: a
# cache kept across runs could hold code compiled for another machine's CPU.
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
  JAX_COMPILATION_CACHE_DIR=$(mktemp -d)
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
export JAX_COMPILATION_CACHE_DIR JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 JAX_COMPILATION_CACHE_MAX_SIZE=$((4 * 1024 ** 3))
"$python" -m pytest -q -n 2 --durations=15
echo "== numerics: MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2"
MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 "$python" -m pytest -q -n 2 --durations=15 -m numerics parity
echo "== numerics: MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default XLA_FLAGS=--xla_cpu_max_isa=AVX2"
MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default XLA_FLAGS=--xla_cpu_max_isa=AVX2 \
  "$python" -m pytest -q -n 2 --durations=15 -m numerics parity
