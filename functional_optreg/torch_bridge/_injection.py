"""Bridged param groups keep their numeric hyperparameters in the state, as torch's param groups do.

Each group's optimizer is built inside ``optax.inject_hyperparams``: ``lr``, ``weight_decay``,
``betas``, ``eps``... live in ``state.hyperparams`` (a tuple such as ``betas`` as one array), where
``fo.set_hyperparams(state, group=g, lr=x)`` changes them between jitted updates as
``optimizer.param_groups[g]["lr"] = x`` does, and ``to_torch_state_dict`` writes them back.
Static (baked into the transform): booleans and ``None``, values a converted scheduler drives
(schedules), and the few numbers that change the state's structure (``momentum`` of RMSprop:
zero means no buffer, as in torch; Muon's ``ns_steps``, a loop count). SGD's ``momentum`` is
settable: its state then keeps a buffer and a flag for whether torch's exists yet, so setting it
on mid-run creates the buffer at the next update as torch does.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax

STRUCTURAL: Mapping[str, frozenset[str]] = {
    "RMSprop": frozenset({"momentum"}),
    "Muon": frozenset({"ns_steps"}),
}
"""Per torch class, numeric hyperparameters that decide the state's structure: kept static."""


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def injectable(value: Any) -> bool:
    """A number, or a tuple of numbers (``betas``, Rprop's ``etas``)."""
    if isinstance(value, tuple):
        return bool(value) and all(_is_number(v) for v in value)
    return _is_number(value)


def _unpacking(factory: Callable[..., Any], packed: frozenset[str]) -> Callable[..., Any]:
    """``factory`` taking each name in ``packed`` as one array, passed on as a tuple."""

    def build(**kwargs: Any) -> Any:
        for name in packed:
            value = kwargs[name]
            kwargs[name] = tuple(value[i] for i in range(len(value)))
        return factory(**kwargs)

    build.__signature__ = inspect.signature(factory)  # type: ignore[attr-defined]
    build.__name__ = getattr(factory, "__name__", "factory")
    return build


def inject(
    torch_name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any], fixed: frozenset[str]
) -> optax.GradientTransformationExtraArgs:
    """``factory(**kwargs)`` inside ``optax.inject_hyperparams``; names in ``fixed`` (driven by a
    scheduler) and non-numeric or structural values stay static."""
    structural = STRUCTURAL.get(torch_name, frozenset())
    static = []
    packed = []
    values = {}
    for name, value in kwargs.items():
        if name in fixed or name in structural or not injectable(value):
            static.append(name)
            values[name] = value
        elif isinstance(value, tuple):
            packed.append(name)
            values[name] = np.asarray(value, dtype=np.float64)
        else:
            values[name] = value if isinstance(value, np.float32) else float(value)
    build = _unpacking(factory, frozenset(packed))
    return optax.inject_hyperparams(build, static_args=tuple(static))(**values)


def is_injected(state: Any) -> bool:
    return isinstance(state, optax.InjectStatefulHyperparamsState)


def written_back(original: Mapping[str, Any], injected: Mapping[str, Any]) -> dict[str, Any]:
    """Torch's group entries for the current injected values, in the original Python types."""
    values: dict[str, Any] = {}
    for name, current in injected.items():
        if name not in original:
            continue
        before = original[name]
        current = np.asarray(current)
        if isinstance(before, tuple):
            values[name] = tuple(_like(b, v) for b, v in zip(before, current))
        else:
            values[name] = _like(before, current)
    return values


def _like(before: Any, current: np.ndarray) -> Any:
    """The original value where the state still holds it (in the state's dtype), else the new one."""
    if np.asarray(before, current.dtype) == current:
        return before
    value = float(current)
    if isinstance(before, numbers.Integral) and value.is_integer():
        return int(value)
    return value
