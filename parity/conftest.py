"""The ``numerics`` slice and the ``slow`` selection of the parity tests.

``numerics``: the tests CI runs again under other machines' numerics.

docs/parity.md ("Simulating other machines"): torch's kernel level (``ATEN_CPU_CAPABILITY``), its
BLAS path (``MKL_CBWR``) and XLA's instruction set (``XLA_FLAGS=--xla_cpu_max_isa``) change
roundings on one machine. ``pytest -m numerics parity`` selects a slice representative of the
catalog: every family's first case in both dtypes, every L-BFGS case (chaotic: the place where
machine-dependent bounds used to hide), the bridge's resume cases for every optimizer and the
L-BFGS ones with a scheduler, and the seed CNN's main-job configuration. CI's two numerics stages
split the slice's dtypes between them (``numerics_a``, ``numerics_b``:
:func:`parity.selection.numerics_stages`); each runs every family, every L-BFGS case, both dtypes,
the resume cases and the seed CNN (in one dtype each).

``slow``: what README's test command leaves out by ``-m "not slow"`` to stay within its time budget
(15 minutes on two cores): the longest trajectories (the seed CNN's float64 runs but the main
job's, the L-BFGS cases on the digits problems) and the catalog runs outside
:func:`parity.selection.default_dtypes` (every configuration still runs, in one dtype at least;
a family's first case, in the ``numerics`` slice, in both in the numerics stages).
``python -m parity`` runs everything; the ``numerics`` stages of ``tests/run.sh`` run the slow
L-BFGS cases under two other numerics.
"""

from __future__ import annotations

import pytest

from parity.cases.lbfgs import LBFGS_CASES
from parity.catalog import all_cases
from parity.selection import NUMERICS_STAGES, catalog_slice_stages, default_dtypes, numerics_stages


def _catalog_case(item: pytest.Item):
    """The catalog case an item runs, or ``None``."""
    if item.module.__name__.endswith("test_catalog") and hasattr(item, "callspec"):
        return item.callspec.params["case"]
    return None


def _in_slice(item: pytest.Item, catalog_slice: dict[tuple[str, str], tuple[str, ...]]) -> bool:
    case = _catalog_case(item)
    if case is not None:
        return (case.name, item.callspec.params["dtype"]) in catalog_slice
    module, name = item.module.__name__.rsplit(".", 1)[-1], item.originalname
    if module == "test_lbfgs":
        return name == "test_lbfgs_case_meets_contract"
    if module == "test_bridge_resume":
        return name == "test_resume" or (name == "test_resume_with_scheduler" and "LBFGS" in item.name)
    # The main job's trajectories; the must-fail mutation test measures nothing machine-dependent.
    return module == "test_seed_cnn" and name.endswith("_trajectory") and not _is_long_trajectory(item)


def _stages(item: pytest.Item, catalog_slice: dict[tuple[str, str], tuple[str, ...]]) -> tuple[str, ...]:
    """The numerics stages that run a slice item: a catalog or L-BFGS case in one dtype, and the
    seed CNN's trajectory in one dtype, run in one of them (the dtypes alternate along the slice);
    the resume cases in both."""
    case = _catalog_case(item)
    if case is not None:
        return catalog_slice[(case.name, item.callspec.params["dtype"])]
    if item.originalname == "test_lbfgs_case_meets_contract":
        case = item.callspec.params["case"]
        return numerics_stages(LBFGS_CASES.index(case), item.callspec.params["dtype"], case.dtypes)
    if item.originalname.startswith("test_seed_cnn_float"):
        dtype = "float64" if item.originalname == "test_seed_cnn_float64_trajectory" else "float32"
        return numerics_stages(0, dtype, ("float64", "float32"))
    return NUMERICS_STAGES


def _is_long_trajectory(item: pytest.Item) -> bool:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module == "test_seed_cnn" and item.originalname == "test_seed_cnn_float64_trajectory":
        return item.callspec.params["name"] != "adam+l2"
    return module == "test_lbfgs" and "lbfgs/digits_" in item.name and "tolerances" not in item.name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    functions = [item for item in items if isinstance(item, pytest.Function)]
    functions = [item for item in functions if item.module.__name__.startswith("parity.")]
    cases = all_cases()
    catalog_slice, in_default_run = catalog_slice_stages(cases), default_dtypes(cases)
    for item in functions:
        if _in_slice(item, catalog_slice):
            item.add_marker(pytest.mark.numerics)
            for stage in _stages(item, catalog_slice):
                item.add_marker(stage)
        case = _catalog_case(item)
        if case is None:
            slow = _is_long_trajectory(item)
        else:
            slow = item.callspec.params["dtype"] not in in_default_run[case.name]
        if slow:
            item.add_marker(pytest.mark.slow)
