"""README's test command proves every catalog configuration once, and both dtypes for every family."""

from __future__ import annotations

from types import SimpleNamespace

from parity.catalog import all_cases
from parity.selection import default_dtypes, first_of_each_family


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
