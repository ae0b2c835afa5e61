"""The whole catalog: every ``CASES`` list of every module in :mod:`parity.cases`.

Every optimizer record (:data:`functional_optreg.optimizers._records.RECORDS`) must have cases:
a family named after its factory, or, for a closure-based optimizer (L-BFGS, whose ``step``
evaluates the loss many times and so runs on :mod:`parity.lbfgs_harness`), ``LBFGS_CASES`` in
its case module. :func:`uncovered_optimizers` names the records that have none.
"""

from __future__ import annotations

import importlib
import pkgutil

from functional_optreg.optimizers._records import RECORDS
from parity import cases as cases_package
from parity.case import Case


def all_cases() -> list[Case]:
    """Every case, in module then definition order; names are unique."""
    found: list[Case] = []
    for module_info in sorted(pkgutil.iter_modules(cases_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{cases_package.__name__}.{module_info.name}")
        found.extend(module.CASES)
    names = [case.name for case in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate parity case names: {duplicates}")
    return found


def uncovered_optimizers(cases: list[Case]) -> list[str]:
    """The factories of the optimizer records with no parity case in ``cases`` (closure-based
    ones: none in their case module's ``LBFGS_CASES``)."""
    families = {case.family for case in cases}
    missing = []
    for record in RECORDS.values():
        if record.closure:
            module = importlib.import_module(f"{cases_package.__name__}.{record.module}")
            covered = bool(getattr(module, "LBFGS_CASES", ()))
        else:
            covered = record.factory_name in families
        if not covered:
            missing.append(record.factory_name)
    return missing
