"""The ``numerics`` slice and the ``slow`` selection of the parity tests.

``numerics``: the tests CI runs again under other machines' numerics.

docs/parity.md ("Simulating other machines"): torch's kernel level (``ATEN_CPU_CAPABILITY``), its
BLAS path (``MKL_CBWR``) and XLA's instruction set (``XLA_FLAGS=--xla_cpu_max_isa``) change
roundings on one machine. ``pytest -m numerics parity`` selects a slice representative of the
catalog: every family's first case in both dtypes, every L-BFGS case (chaotic: the place where
machine-dependent bounds used to hide), the bridge's resume cases for every optimizer and the
L-BFGS ones with a scheduler, and the seed CNN's main-job configuration.

``slow``: the longest trajectories (the seed CNN's float64 runs but the main job's, the L-BFGS
cases on the digits problems), left out of README's test command by ``-m "not slow"`` so that it
stays within its time budget; ``python -m parity`` runs them all, and the ``numerics`` stages of
``tests/run.sh`` run the L-BFGS ones under two other numerics.
"""

from __future__ import annotations

import pytest


def _in_slice(item: pytest.Item, first_of_family: set[str]) -> bool:
    module, name = item.module.__name__.rsplit(".", 1)[-1], item.originalname
    if module == "test_catalog":
        return hasattr(item, "callspec") and item.callspec.params["case"].name in first_of_family
    if module == "test_lbfgs":
        return name == "test_lbfgs_case_meets_contract"
    if module == "test_bridge_resume":
        return name == "test_resume" or (name == "test_resume_with_scheduler" and "LBFGS" in item.name)
    # The main job's trajectories; the must-fail mutation test measures nothing machine-dependent.
    return module == "test_seed_cnn" and name.endswith("_trajectory") and not _is_slow(item)


def _is_slow(item: pytest.Item) -> bool:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module == "test_seed_cnn" and item.originalname == "test_seed_cnn_float64_trajectory":
        return item.callspec.params["name"] != "adam+l2"
    return module == "test_lbfgs" and "lbfgs/digits_" in item.name and "tolerances" not in item.name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    first_of_family: dict[str, str] = {}
    functions = [item for item in items if isinstance(item, pytest.Function)]
    functions = [item for item in functions if item.module.__name__.startswith("parity.")]
    for item in functions:
        if item.module.__name__.endswith("test_catalog") and hasattr(item, "callspec"):
            case = item.callspec.params["case"]
            first_of_family.setdefault(case.family, case.name)
    names = set(first_of_family.values())
    for item in functions:
        if _in_slice(item, names):
            item.add_marker(pytest.mark.numerics)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
