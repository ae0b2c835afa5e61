"""pytest entry point for the LBFGS parity cases (closure-driven, so outside the generic catalog),
and checks that the chaos-aware judgement (:mod:`parity.chaos`) can fail."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from parity import chaos
from parity.cases.lbfgs import LBFGS_CASES
from parity.lbfgs_harness import run_lbfgs_case

PARAMS = [pytest.param(case, dtype, id=f"{case.name}-{dtype}") for case in LBFGS_CASES for dtype in case.dtypes]
_BY_NAME = {case.name: case for case in LBFGS_CASES}


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_lbfgs_case_meets_contract(case, dtype):
    report = run_lbfgs_case(case, dtype)
    assert report.passed, str(report)


def test_catalog_covers_the_brief():
    configs = [case.kwargs for case in LBFGS_CASES]
    assert sum(c.get("line_search_fn") == "strong_wolfe" for c in configs) >= 3
    assert sum(c.get("line_search_fn") is None for c in configs) >= 3
    assert any(c.get("history_size", 100) < c.get("max_iter", 20) for c in configs)
    assert all(case.steps >= 4 for case in LBFGS_CASES)


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("lbfgs/separable", dict(lr=0.5 * (1 + 1e-6))),
        ("lbfgs/rosenbrock+strong_wolfe+max_eval", dict(lr=1 - 1e-5)),
    ],
)
def test_a_semantic_difference_fails_even_where_torch_is_chaotic(name, wrong):
    """A changed hyperparameter on our side is caught: on a stable case by the contract, on a chaotic
    one (Rosenbrock with a line search, where torch misses 1e-12 against itself) by the floor."""
    case = _BY_NAME[name]
    report = run_lbfgs_case(dataclasses.replace(case, ours_kwargs={**case.ours_kwargs, **wrong}), "float64")
    assert not report.passed, str(report)


def _sensitivity(floors, moved=None):
    floors = np.asarray(floors, dtype=np.float64)
    return chaos.Sensitivity(floors, np.zeros(floors.shape, bool) if moved is None else np.asarray(moved))


def test_judgement_rules():
    equal = np.ones(3, bool)
    assert chaos.judge([1e-13, 5e-13, 1e-12], equal, "float64", None, cumulative=False).passed
    assert not chaos.judge([1e-13, 2e-12, 1e-13], equal, "float64", None, cumulative=False).passed
    # torch stable against itself: the contract applies however small the floor
    assert not chaos.judge([1e-13, 2e-12, 1e-13], equal, "float64", _sensitivity([0, 1e-14, 0]), False).passed
    # torch misses the contract at step 2: up to ALLOWANCE x its floor there, the contract elsewhere
    floors = [1e-16, 1e-10, 1e-16]
    assert chaos.judge([1e-13, 9e-9, 1e-13], equal, "float64", _sensitivity(floors), False).passed
    assert not chaos.judge([1e-13, 2e-8, 1e-13], equal, "float64", _sensitivity(floors), False).passed
    assert not chaos.judge([1e-13, 9e-9, 5e-12], equal, "float64", _sensitivity(floors), False).passed
    # free-running: the floor carries forward
    assert chaos.judge([1e-13, 9e-9, 5e-12], equal, "float64", _sensitivity(floors), True).passed
    # counters may differ only where torch's are undetermined: its own perturbed runs' counters moved,
    # or its floor is outside the contract
    first_differs, last_differs = np.array([False, True, True]), np.array([True, True, False])
    assert not chaos.judge([0.5, 0.5, 0.5], first_differs, "float32", _sensitivity([0.5, 0.5, 2.0]), False).passed
    assert chaos.judge([0.5, 0.5, 0.5], first_differs, "float32", _sensitivity([2.0, 0.5, 0.5]), False).passed
    moved = _sensitivity([0.5, 0.5, 0.5], [True, False, False])
    assert chaos.judge([0.5, 0.5, 0.5], first_differs, "float32", moved, False).passed
    assert not chaos.judge([0.5, 0.5, 0.5], last_differs, "float32", moved, False).passed
    assert chaos.judge([0.5, 0.5, 0.5], last_differs, "float32", moved, True).passed


def test_perturbations_have_the_size_asked():
    array = np.array([1.0, -2.0, 3e-300, 0.0])
    gradient = np.array([0.5, -4.0, 0.0, 1.0])
    rounding = 2.0**-30  # exact, so 1 ± rounding is too
    for perturbation in chaos.PERTURBATIONS:
        (moved,) = chaos.nudge([array], perturbation)
        ulps = np.abs(moved - array) / np.spacing(np.abs(array))
        assert np.all(ulps <= 1.0) and (np.any(ulps == 1.0) == perturbation.startswith("nudge"))
        factor = chaos.loss_factor(perturbation, rounding)
        assert factor == 1.0 or abs(factor - 1) == rounding
        tilts = chaos.tilt(perturbation, [gradient], rounding)
        assert (tilts is None) != perturbation.startswith("tilt")
        if tilts is not None:
            np.testing.assert_array_equal(np.abs(tilts[0]), np.full(4, rounding * 4.0))
        draw = chaos.jitter(perturbation, [gradient], rounding)
        assert (draw is None) != perturbation.startswith("jitter")
        if draw is not None:
            (first, first_tilt), (second, _) = draw(), draw()
            assert first != second and max(abs(first - 1), abs(second - 1)) <= rounding
            np.testing.assert_array_equal(np.abs(first_tilt[0]), np.full(4, rounding * 4.0))


def test_evaluation_rounding_is_at_least_one_ulp():
    grads = [np.array([1.0, 2.0])]
    assert chaos.evaluation_rounding((3.0, grads), (3.0, grads), "float32") == np.finfo(np.float32).eps
    other = [np.array([1.0, 2.0 + 2.0**-19])]
    assert chaos.evaluation_rounding((3.0, grads), (3.0, other), "float64") == 2.0**-19 / (2.0 + 2.0**-19)
    assert chaos.evaluation_rounding((3.0 + 3 * 2.0**-10, grads), (3.0, other), "float64") == 2.0**-10
