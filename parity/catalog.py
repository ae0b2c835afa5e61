"""The whole catalog: every ``CASES`` list of every module in :mod:`parity.cases`."""

from __future__ import annotations

import importlib
import pkgutil

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
