"""Issue 17's GPU check without a GPU: ``benchmarks/gpu.sh --rehearse`` runs every stage of it on the
CPU at tiny sizes, ``python -m parity --platform gpu`` refuses to fall back to the CPU, and
``parity.platform.full_precision`` sets and restores both frameworks' float32 matmul precision.

The GPU check runs only where a GPU is lent (rarely, with minutes of device time), so a stage broken
by a change to a benchmark's options or output would otherwise be found there, at that cost. The
rehearsal runs the same stages through the same script with the platform set to the CPU.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _rehearse(results: pathlib.Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--rehearse", str(results)],
        cwd=REPO,
        env=dict(os.environ, PYTHON=python),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_rehearsal_runs_every_stage_and_collects_its_section(tmp_path):
    results = tmp_path / "results.md"
    results.write_text("# earlier results\n")
    run = _rehearse(results)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    text = results.read_text()
    assert text.startswith("# earlier results\n"), "the results are appended, not written over"
    assert "# Rehearsal of benchmarks/gpu.sh on the CPU" in text
    assert "parity: 2 passed, 0 failed" in text
    assert "0 stage(s) failed" in text
    assert text.count("- matmul precision: JAX highest; torch TF32 off") == 3, "each benchmark at full precision"
    for section, row in (
        ("## Update step, ", "| sgd_momentum | 1M | 8 |"),
        ("## Seed CNN training step, ", "| sgd_momentum | 8 |"),
        ("## Many small arrays: ", "| per-leaf |"),
    ):
        assert section in text, f"no {section!r} section"
        assert row in text, f"no {row!r} row"
    rows = [line for line in text.splitlines() if line.startswith("| sgd_momentum |")]
    assert rows and all(line.endswith("| yes |") for line in rows), rows


def test_a_refused_stage_fails_the_script_and_is_written_down(tmp_path):
    """A parity run that refuses to start (no GPU) stops the script with exit 1 and says why."""
    python = tmp_path / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1 $2" == "-m parity" ]]; then echo "python -m parity: no GPU here" >&2; exit 2; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    results = tmp_path / "results.md"
    run = _rehearse(results, str(python))
    assert run.returncode == 1, run.stdout + run.stderr
    text = results.read_text()
    assert "**parity refused to start (exit 2): python -m parity: no GPU here.**" in text
    assert "1 stage(s) failed" in text
    assert "## Update step" not in text, "the benchmarks must not run after the platform was refused"


def test_parity_cli_refuses_a_gpu_jax_does_not_have():
    import jax

    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU")
    run = subprocess.run(
        [sys.executable, "-m", "parity", "--platform", "gpu", "--quick", "--optimizer", "sgd"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "asked for the GPU, but JAX runs on the CPU" in run.stderr
    assert "parity:" not in run.stdout, "no case may run on the wrong device"


def test_full_precision_sets_both_frameworks_and_restores_them():
    import jax
    import torch

    from parity.platform import full_precision

    before = jax.config.jax_default_matmul_precision
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with full_precision():
            assert jax.config.jax_default_matmul_precision == "highest"
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert jax.config.jax_default_matmul_precision == before
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
