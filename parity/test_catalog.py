"""pytest entry point: every catalog case, in every dtype, must meet the parity contract."""

from __future__ import annotations

import pytest

from parity.case import run_case
from parity.catalog import all_cases

PARAMS = [pytest.param(case, dtype, id=f"{case.name}-{dtype}") for case in all_cases() for dtype in case.dtypes]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_case_meets_contract(case, dtype):
    assert case.steps >= 50, "the contract asks for at least 50 steps"
    report = run_case(case, dtype)
    assert report.passed, str(report)
