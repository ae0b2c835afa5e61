"""Which catalog runs README's test command makes; the others are marked ``slow``.

README's command must stay within 15 minutes on two cores with the ``numerics`` stages included,
and the catalog in both dtypes was its largest item. So it proves every configuration in one
dtype, taking the dtypes in turn along each family's order (float64, float32, float64, ...):
every family is proven in both dtypes in every run (every family has two cases or more; the
tests check it on the catalog), and each configuration's semantics in the run's dtype. Each
family's first case is also the catalog's part of the ``numerics`` slice, which CI's numerics
stages run in both dtypes under two other machines' numerics. ``python -m parity`` (and
``pytest -m ""``) runs the whole product.
"""

from __future__ import annotations

from collections.abc import Iterable

from parity.case import Case


def default_dtypes(cases: Iterable[Case]) -> dict[str, tuple[str, ...]]:
    """Per case name, the dtypes README's test command runs it in."""
    position: dict[str, int] = {}
    chosen: dict[str, tuple[str, ...]] = {}
    for case in cases:
        index = position.get(case.family, 0)
        position[case.family] = index + 1
        chosen[case.name] = (case.dtypes[index % len(case.dtypes)],)
    return chosen


def first_of_each_family(cases: Iterable[Case]) -> set[str]:
    """The name of each family's first case (the catalog's part of the ``numerics`` slice)."""
    first: dict[str, str] = {}
    for case in cases:
        first.setdefault(case.family, case.name)
    return set(first.values())
