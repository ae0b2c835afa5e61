"""Which catalog runs README's test command makes; the others are marked ``slow``.

README's command must stay within 15 minutes on two cores with the ``numerics`` stages included,
and the catalog in both dtypes was its largest item. So it proves every configuration in one
dtype: each family's first case (the ``numerics`` slice, run again under other numerics) in all
of its dtypes, the others in turn along the family's order (float64, float32, float64, ...). Both
dtypes are then proven for every family in every run, and each configuration's semantics in
the run's dtype; ``python -m parity`` (and ``pytest -m ""``) runs the whole product.
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
        chosen[case.name] = case.dtypes if index == 0 else (case.dtypes[(index - 1) % len(case.dtypes)],)
    return chosen


def first_of_each_family(cases: Iterable[Case]) -> set[str]:
    """The name of each family's first case (the catalog's part of the ``numerics`` slice)."""
    first: dict[str, str] = {}
    for case in cases:
        first.setdefault(case.family, case.name)
    return set(first.values())
