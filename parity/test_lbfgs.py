"""pytest entry point for the LBFGS parity cases (closure-driven, so outside the generic catalog)."""

from __future__ import annotations

import pytest

from functional_optreg import verify
from parity.cases.lbfgs import LBFGS_CASES, run_lbfgs_case, torch_sensitivity

PARAMS = [pytest.param(case, dtype, id=f"{case.name}-{dtype}") for case in LBFGS_CASES for dtype in case.dtypes]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_lbfgs_case_meets_contract(case, dtype):
    report = run_lbfgs_case(case, dtype)
    assert report.passed, str(report)
    if case.relaxed[dtype]:
        # A measured bound replaces the contract only where torch cannot meet it against itself,
        # and only while our error stays of the order of torch's own rounding sensitivity.
        assert case.note, "a relaxed bound must say why"
        floor = float(torch_sensitivity(case, dtype).max())
        strict = verify.FLOAT64_RTOL if dtype == "float64" else 1.0
        assert floor > strict, f"torch meets the contract against itself ({floor:.2e}); tighten the case"
        assert report.worst <= 100 * floor, f"error {report.worst:.2e} is not explained by torch's floor {floor:.2e}"


def test_catalog_covers_the_brief():
    configs = [case.kwargs for case in LBFGS_CASES]
    assert sum(c.get("line_search_fn") == "strong_wolfe" for c in configs) >= 3
    assert sum(c.get("line_search_fn") is None for c in configs) >= 3
    assert any(c.get("history_size", 100) < c.get("max_iter", 20) for c in configs)
    assert all(case.steps >= 4 for case in LBFGS_CASES)
