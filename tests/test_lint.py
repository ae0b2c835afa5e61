"""The repository passes ``ruff check``, ``ruff format --check`` and ``mypy`` (config in pyproject.toml)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    return result.returncode, f"$ {' '.join(args)}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "tool",
    [
        pytest.param(("ruff", "check", "."), id="ruff-check"),
        pytest.param(("ruff", "format", "--check", "."), id="ruff-format"),
        pytest.param(("mypy",), id="mypy"),
    ],
)
def test_tool_is_clean(tool):
    pytest.importorskip(tool[0])
    code, output = _run(*tool)
    assert code == 0, output
