"""pytest entry point: every catalog case, in every dtype, must meet the parity contract."""

from __future__ import annotations

import dataclasses

import pytest

from functional_optreg import verify
from parity import chaos
from parity.case import run_case
from parity.catalog import all_cases

PARAMS = [pytest.param(case, dtype, id=f"{case.name}-{dtype}") for case in all_cases() for dtype in case.dtypes]


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_case_meets_contract(case, dtype):
    assert case.steps >= 50, "the contract asks for at least 50 steps"
    report = run_case(case, dtype)
    assert report.passed, str(report)


SENSITIVE = next(case for case in all_cases() if case.name == "adafactor/lr")
"""Float32 Adafactor with lr 0.3: torch against itself, perturbed by one rounding per step, leaves the
contract around steps 17–27 (where XLA's elemental emitters put ours at an assert_close ratio of 1.66)."""


def test_torch_leaves_the_float32_contract_by_itself_on_a_sensitive_case():
    """The reason a case that misses the contract is judged against torch's own floor: here torch
    drifts from itself beyond the contract (a ratio above 1), then returns within it."""
    params = SENSITIVE.params()

    def run_torch(observer):
        verify.run(SENSITIVE.make_torch, None, params, steps=SENSITIVE.steps, dtype="float32", after_step=observer)

    floors = chaos.step_rounding_floors(run_torch, "float32")
    assert floors.max() > 1.0 and floors[:10].max() < 1.0 and floors[-10:].max() < 1.0, floors


def test_a_semantic_difference_fails_even_on_a_sensitive_case():
    """lr off by 0.1 %: the steps where torch is stable hold the contract, so the case fails."""
    wrong = dataclasses.replace(SENSITIVE, kwargs={}, torch_kwargs={"lr": 0.3}, ours_kwargs={"lr": 0.3 * 1.001})
    report = run_case(wrong, "float32")
    assert not report.passed and report.verdict is not None and not report.verdict.passed, str(report)
