"""Which catalog runs README's test command makes (the others are marked ``slow``), and which
runs of the ``numerics`` slice each of CI's two numerics stages makes.

README's command must stay within 15 minutes on two cores with the ``numerics`` stages included,
and the catalog in both dtypes was its largest item. So it proves every configuration in one
dtype, taking the dtypes in turn along each family's order (float64, float32, float64, ...):
every family is proven in both dtypes in every run (every family has two cases or more; the
tests check it on the catalog), and each configuration's semantics in the run's dtype. Each
family's first case is also the catalog's part of the ``numerics`` slice, which CI's numerics
stages run in both dtypes, each under one of two other machines' numerics. ``python -m parity`` (and
``pytest -m ""``) runs the whole product.

The ``numerics`` slice takes the dtypes in turn as well, across the two stages: a case with two
dtypes runs in one of them per stage, and the other stage runs the other (:func:`numerics_stages`),
the choice alternating along the slice. Each stage then runs every family and every L-BFGS case,
both dtypes among them, and each (case, dtype) of the slice runs under one of the two other
machines' numerics; ``pytest -m numerics`` runs the whole slice under one setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from parity.case import Case

NUMERICS_STAGES = ("numerics_a", "numerics_b")
"""The markers of CI's two numerics stages (tests/run.sh runs ``-m numerics_a``, then ``-m numerics_b``)."""


def default_dtypes(cases: Iterable[Case]) -> dict[str, tuple[str, ...]]:
    """Per case name, the dtypes README's test command runs it in."""
    position: dict[str, int] = {}
    chosen: dict[str, tuple[str, ...]] = {}
    for case in cases:
        index = position.get(case.family, 0)
        position[case.family] = index + 1
        chosen[case.name] = (case.dtypes[index % len(case.dtypes)],)
    return chosen


def _family_firsts(cases: Iterable[Case]) -> list[Case]:
    """Each family's first case, families in catalog order."""
    firsts: dict[str, Case] = {}
    for case in cases:
        firsts.setdefault(case.family, case)
    return list(firsts.values())


def first_of_each_family(cases: Iterable[Case]) -> set[str]:
    """The name of each family's first case (the catalog's part of the ``numerics`` slice)."""
    return {case.name for case in _family_firsts(cases)}


def catalog_slice_stages(cases: Iterable[Case]) -> dict[tuple[str, str], tuple[str, ...]]:
    """The catalog's part of the ``numerics`` slice, each family's first case in each of its dtypes:
    per ``(case name, dtype)``, the numerics stages that run it (families in catalog order)."""
    return {
        (case.name, dtype): numerics_stages(position, dtype, case.dtypes)
        for position, case in enumerate(_family_firsts(cases))
        for dtype in case.dtypes
    }


def numerics_stages(position: int, dtype: str, dtypes: Sequence[str]) -> tuple[str, ...]:
    """The numerics stages that run the slice's case at ``position`` (its place along the slice:
    the family's index in the catalog, or the L-BFGS case's) in ``dtype``, of the case's ``dtypes``.

    Along the slice, the case at an even position runs its first dtype in stage a and its second
    in stage b, the next one the other way round; a case with one dtype runs in both stages.
    """
    if len(dtypes) == 1:
        return NUMERICS_STAGES
    return (NUMERICS_STAGES[(position + list(dtypes).index(dtype)) % 2],)
