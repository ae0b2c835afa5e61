"""Eager hyperparameter validation with torch's wording.

Every check is skipped for traced values (hyperparameters passed as JAX scalars inside ``jit`` or
``grad``), since their value is unknown at construction time.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def is_traced(value: Any) -> bool:
    """True when ``value`` is a JAX tracer, whose concrete value is unavailable."""
    return isinstance(value, jax.core.Tracer)


def require(value: Any, predicate: Callable[[float], bool], message: str) -> None:
    """Raise ``ValueError(message)`` unless ``predicate(float(value))`` holds.

    Schedules (callables) and traced values are not checked.
    """
    if callable(value) or is_traced(value):
        return
    if not predicate(float(np.asarray(value))):
        raise ValueError(message)


def check_lr(lr: Any) -> None:
    require(lr, lambda v: v >= 0.0, f"Invalid learning rate: {lr}")


def check_eps(eps: Any) -> None:
    require(eps, lambda v: v >= 0.0, f"Invalid epsilon value: {eps}")


def check_weight_decay(weight_decay: Any) -> None:
    require(weight_decay, lambda v: v >= 0.0, f"Invalid weight_decay value: {weight_decay}")


def check_momentum(momentum: Any) -> None:
    require(momentum, lambda v: v >= 0.0, f"Invalid momentum value: {momentum}")


def check_betas(betas: Any) -> None:
    """Torch's Adam-family check: ``0 <= beta < 1`` for each of the two betas."""
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        require(beta, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index {index}: {beta}")


def check_implementation_flags(
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
) -> None:
    """Accept torch's implementation-selection flags, which have no effect under XLA.

    They exist so that a configuration copied from torch code constructs unchanged; XLA fuses
    the update whatever they say. The only combination torch rejects is rejected too.
    """
    del capturable, differentiable
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
