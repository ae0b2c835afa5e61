"""The API reference (docs/): Sphinx builds it with zero warnings, and it documents every public
name of ``functional_optreg``. Build it yourself with ``python -m sphinx -W -b html docs docs/_build``."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import types

import functional_optreg as fo

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def test_reference_builds_without_warnings_and_covers_every_public_name(tmp_path):
    # A subprocess, as the documented command: Sphinx's own deprecation warnings are not ours.
    warnings = tmp_path / "warnings.log"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-w", str(warnings)]
    result = subprocess.run([*command, str(DOCS), str(tmp_path / "html")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + warnings.read_text()
    assert warnings.read_text() == ""
    html = (tmp_path / "html" / "api.html").read_text()
    documented = set(re.findall(r'id="functional_optreg\.([A-Za-z_0-9]+)"', html))
    public = {
        name for name in dir(fo) if not name.startswith("_") and not isinstance(getattr(fo, name), types.ModuleType)
    }
    assert public - documented == set()
    for page in ("porting", "parity"):
        assert (tmp_path / "html" / f"{page}.html").exists()
