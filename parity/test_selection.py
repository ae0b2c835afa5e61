"""README's test command proves every catalog configuration once, and both dtypes for every family."""

from __future__ import annotations

from types import SimpleNamespace

from parity.cases.lbfgs import LBFGS_CASES
from parity.catalog import all_cases
from parity.selection import (
    NUMERICS_STAGES,
    catalog_slice_stages,
    default_dtypes,
    first_of_each_family,
    numerics_stages,
)


def test_every_configuration_runs_by_default_and_every_family_in_each_of_its_dtypes():
    cases = all_cases()
    chosen = default_dtypes(cases)
    assert set(chosen) == {case.name for case in cases}
    families: dict[str, tuple[set, set]] = {}
    for case in cases:
        assert chosen[case.name] and set(chosen[case.name]) <= set(case.dtypes), case.name
        proven, available = families.setdefault(case.family, (set(), set()))
        proven.update(chosen[case.name])
        available.update(case.dtypes)
    assert {family: proven for family, (proven, _) in families.items()} == {
        family: available for family, (_, available) in families.items()
    }
    assert len(first_of_each_family(cases)) == len(families)


def test_dtypes_alternate_along_a_family():
    def case(name, dtypes=("float64", "float32")):
        return SimpleNamespace(name=f"f/{name}", family="f", dtypes=dtypes)

    cases = [case("a"), case("b"), case("c"), case("d", ("float64",)), case("e")]
    assert default_dtypes(cases) == {
        "f/a": ("float64",),
        "f/b": ("float32",),
        "f/c": ("float64",),
        "f/d": ("float64",),
        "f/e": ("float64",),
    }
    assert first_of_each_family(cases) == {"f/a"}


def _slice_runs():
    """(kind, name, dtype, stages) of every catalog and L-BFGS run in the numerics slice."""
    cases = all_cases()
    assert {name for name, _ in catalog_slice_stages(cases)} == first_of_each_family(cases)
    families = {case.name: case.family for case in cases}
    runs = [(families[name], name, dtype, stages) for (name, dtype), stages in catalog_slice_stages(cases).items()]
    runs += [
        ("lbfgs", case.name, dtype, numerics_stages(position, dtype, case.dtypes))
        for position, case in enumerate(LBFGS_CASES)
        for dtype in case.dtypes
    ]
    return runs


def test_each_numerics_stage_runs_every_family_and_lbfgs_case_in_both_dtypes():
    runs = _slice_runs()
    assert all(stages and set(stages) <= set(NUMERICS_STAGES) for *_, stages in runs)
    for stage in NUMERICS_STAGES:
        chosen = [run for run in runs if stage in run[3]]
        assert {name for _, name, _, _ in chosen} == {name for _, name, _, _ in runs}, stage
        assert {dtype for _, _, dtype, _ in chosen} == {"float64", "float32"}, stage
        assert 0.4 * len(runs) <= len(chosen) <= 0.6 * len(runs), (stage, len(chosen), len(runs))


def test_numerics_stages_alternate_along_the_slice():
    two = ("float64", "float32")
    assert [numerics_stages(position, "float64", two) for position in range(3)] == [
        ("numerics_a",),
        ("numerics_b",),
        ("numerics_a",),
    ]
    assert [numerics_stages(position, "float32", two) for position in range(3)] == [
        ("numerics_b",),
        ("numerics_a",),
        ("numerics_b",),
    ]
    assert numerics_stages(5, "float64", ("float64",)) == NUMERICS_STAGES
