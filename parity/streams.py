"""Gradient streams and mid-run events shared by the catalog's hostile cases and the fuzzer.

A stream is a :data:`functional_optreg.verify.GradientFn`; an event a
:data:`functional_optreg.verify.BeforeStep`. Both are plain NumPy / Python so that torch and ours
receive exactly the same values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from functional_optreg import verify


def with_special_values(
    base: verify.GradientFn, specials: Mapping[int, Sequence[tuple[int, int, float]]]
) -> verify.GradientFn:
    """``base`` with chosen elements overwritten: ``specials[step]`` lists ``(leaf, flat index,
    value)``, e.g. NaN, ±inf or an exact 0 (the index wraps around the leaf's size)."""

    def gradient(step: int, leaves: Sequence[np.ndarray]) -> list[np.ndarray]:
        grads = [np.array(g, copy=True) for g in base(step, leaves)]
        for leaf, index, value in specials.get(step, ()):
            if grads[leaf].size:
                grads[leaf].reshape(-1)[index % grads[leaf].size] = value
        return grads

    return gradient


def nan_elements(params: Any, steps: Sequence[int], leaf: int = 0, index: int = 1) -> verify.GradientFn:
    """The quadratic stream of ``params`` with one NaN element at each of ``steps``."""
    base = verify.quadratic_gradients(params)
    return with_special_values(base, {step: [(leaf, index, float("nan"))] for step in steps})


def set_group_values(at: int, values: Mapping[str, Any], group: int = 0) -> verify.BeforeStep:
    """Before step ``at``: torch's ``param_groups[group][k] = v`` and ours ``fo.set_hyperparams``.

    Our transform must be wrapped in ``optax.inject_hyperparams`` (a single group).
    """
    import functional_optreg as fo

    def before_step(step: int, optimizer: Any, state: Any) -> Any:
        if step != at:
            return state
        optimizer.param_groups[group].update(values)
        return fo.set_hyperparams(state, **values)

    return before_step


def sequence(*events: verify.BeforeStep) -> verify.BeforeStep:
    """Several events, applied in order before each step."""

    def before_step(step: int, optimizer: Any, state: Any) -> Any:
        for event in events:
            state = event(step, optimizer, state)
        return state

    return before_step
