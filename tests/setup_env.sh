#!/usr/bin/env bash
# The test environment in .venv (created if missing): the package, editable, with its `test` extra (torch==2.13.0,
# flax, orbax, pytest, ruff, mypy, sphinx ...), as README's second command and CI (.ci/run) make it.
#
# The installer is uv, installed into the new venv by pip: pip took 80 s here (71 s of it one core
# unpacking wheels and byte-compiling torch and jax), uv 36 s (parallel unpacking and byte
# compilation). Byte-compiling at install matters: the environment may set PYTHONDONTWRITEBYTECODE,
# and then every test process would compile torch's and jax's sources again on import.
# uv does not read pip's configuration, so a wheel folder that pip is pointed at (PIP_FIND_LINKS, or
# find-links in pip.conf: where a CPU build of torch may lie) is handed to uv explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q uv
links=${PIP_FIND_LINKS:-$(.venv/bin/pip config get global.find-links 2>/dev/null || true)}
find_links=()
for folder in $links; do
  find_links+=(--find-links "$folder")
done
.venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode "${find_links[@]}" -e ".[test]"
