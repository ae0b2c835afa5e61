#!/usr/bin/env bash
# The whole test suite, as README's second command and CI run it:
#   1. every test (unit, property, doctests, the parity catalog, bridge resume, lint and types) but
#      those marked `slow` (parity/conftest.py; `python -m parity` runs them): the longest
#      trajectories, each catalog configuration's second dtype, and a few second proofs;
#   2. the parity slice marked `numerics` again under two other machines' numerics
#      (docs/parity.md, "Simulating other machines"): torch's kernel level and BLAS path, XLA's
#      code generator (its older elemental emitters) and its ISA; the slice's catalog and L-BFGS
#      cases and the seed CNN take their two dtypes in turn across the two stages (`numerics_a`,
#      `numerics_b`: each stage runs every family and L-BFGS case, both dtypes, the resume cases
#      and the seed CNN); `-m numerics_a` replaces the default `-m 'not slow'`, so the slow L-BFGS
#      cases run here.
# The slowest tests of each stage are printed (--durations=15).
# One torch (OpenMP/MKL) thread per pytest worker: two workers on two cores with two OpenMP threads
# each oversubscribe the cores, and OpenMP's spinning barriers then cost milliseconds per small op
# (torch's sparse add_ went from 0.02 ms to 8 ms: the SparseAdam cases took 7 s each, not 1 s).
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m pytest -q -n 2 --durations=15
echo "== numerics: MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS=--xla_cpu_use_fusion_emitters=false"
MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS=--xla_cpu_use_fusion_emitters=false \
  "$python" -m pytest -q -n 2 --durations=15 -m numerics_a parity
echo "== numerics: MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default XLA_FLAGS=--xla_cpu_max_isa=AVX2"
MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default XLA_FLAGS=--xla_cpu_max_isa=AVX2 \
  "$python" -m pytest -q -n 2 --durations=15 -m numerics_b parity
