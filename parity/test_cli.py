"""``python -m parity``: filters, the report (summary, plots, the seed CNN end to end, L-BFGS) and
exit status 1 on a failure. The cases themselves run in test_catalog.py, test_lbfgs.py and
test_seed_cnn.py, so the report is exercised on three families rather than the whole quick run."""

from __future__ import annotations

import optax
import torch

from parity import __main__ as cli
from parity import report as report_module
from parity.case import Case


def test_quick_run_passes_and_writes_report(tmp_path, capsys):
    families = ["sgd", "adam", "lbfgs"]
    status = cli.main(["--quick", "--dtype", "float64", "--optimizer", *families, "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 failed" in out
    summary = (tmp_path / "summary.md").read_text()
    assert "| sgd/default | float64 |" in summary
    assert (tmp_path / "adam.png").stat().st_size > 1000
    assert "seed_cnn/adam+l2 | float64 | 20 |" in summary
    assert "| lbfgs/" in summary
    assert "| rmsprop/" not in summary, "the families filter was not applied"
    assert (tmp_path / "seed_cnn.png").stat().st_size > 1000


def test_filters_select_families_and_dtypes(capsys):
    assert cli.main(["--optimizer", "adam", "--dtype", "float32", "--list"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert listed and all(line.startswith("adam/") and line.endswith("[float32]") for line in listed)


def test_a_wrong_case_fails_the_run(monkeypatch, capsys):
    wrong = Case("broken/sgd_lr_off", lambda **kw: optax.sgd(0.11), torch.optim.SGD, torch_kwargs=dict(lr=0.1))
    monkeypatch.setattr(report_module, "all_cases", lambda: [wrong])
    assert cli.main(["--optimizer", "broken"]) == 1
    assert "FAIL" in capsys.readouterr().out
