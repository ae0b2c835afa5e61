"""Eager hyperparameter validation with torch's wording.

Every check is skipped for traced values (hyperparameters passed as JAX scalars inside ``jit`` or
``grad``), since their value is unknown at construction time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def is_traced(value: Any) -> bool:
    """True when ``value`` is a JAX tracer, whose concrete value is unavailable."""
    return isinstance(value, jax.core.Tracer)


def check_number(value: Any, name: str) -> None:
    """Raise unless ``value`` can be a hyperparameter: a real number, a 0-d real array or a schedule.

    ``TypeError`` for anything else (a string, ``None``, a list: torch fails on these too, with
    a bare comparison error); ``ValueError`` for an array with more than zero dimensions.
    Traced values are checked by dtype and shape only.
    """
    if callable(value) and not hasattr(value, "dtype"):
        return
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(
            f"{name} must be a real number, a 0-d real array or a schedule, got {type(value).__name__} {value!r}"
        )
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar (0-d), got an array of shape {np.shape(value)}")


def require(value: Any, predicate: Callable[[float], bool], message: str, name: str = "hyperparameter") -> None:
    """Check ``value``'s type (:func:`check_number`), then raise ``ValueError(message)`` unless
    ``predicate(float(value))`` holds.

    Schedules (callables) and traced values are not range-checked.
    """
    check_number(value, name)
    if callable(value) or is_traced(value):
        return
    if not predicate(float(np.asarray(value))):
        raise ValueError(message)


def check_lr(lr: Any) -> None:
    require(lr, lambda v: v >= 0.0, f"Invalid learning rate: {lr}", "lr")


def check_eps(eps: Any) -> None:
    require(eps, lambda v: v >= 0.0, f"Invalid epsilon value: {eps}", "eps")


def check_weight_decay(weight_decay: Any) -> None:
    require(weight_decay, lambda v: v >= 0.0, f"Invalid weight_decay value: {weight_decay}", "weight_decay")


def check_momentum(momentum: Any) -> None:
    require(momentum, lambda v: v >= 0.0, f"Invalid momentum value: {momentum}", "momentum")


def check_betas(betas: Any) -> None:
    """Torch's Adam-family check: ``0 <= beta < 1`` for each of the two betas."""
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        require(beta, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index {index}: {beta}", f"betas[{index}]")


def check_implementation_flags(
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
) -> None:
    """Accept torch's implementation-selection flags, which have no effect under XLA.

    They exist so that a configuration copied from torch code constructs unchanged; XLA fuses
    the update whatever they say. The combinations torch rejects are rejected too, in torch's
    order.
    """
    del capturable
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def check_alpha(alpha: Any) -> None:
    """RMSprop's smoothing constant: torch only requires ``alpha >= 0``."""
    require(alpha, lambda v: v >= 0.0, f"Invalid alpha value: {alpha}", "alpha")


def check_rho(rho: Any) -> None:
    """Adadelta's decay rate: ``0 <= rho <= 1``."""
    require(rho, lambda v: 0.0 <= v <= 1.0, f"Invalid rho value: {rho}", "rho")


def check_lr_decay(lr_decay: Any) -> None:
    require(lr_decay, lambda v: v >= 0.0, f"Invalid lr_decay value: {lr_decay}", "lr_decay")


def check_initial_accumulator_value(initial_accumulator_value: Any) -> None:
    require(
        initial_accumulator_value,
        lambda v: v >= 0.0,
        f"Invalid initial_accumulator_value value: {initial_accumulator_value}",
        "initial_accumulator_value",
    )


def check_momentum_decay(momentum_decay: Any) -> None:
    """NAdam's momentum decay: torch only requires ``momentum_decay >= 0``."""
    require(momentum_decay, lambda v: v >= 0.0, f"Invalid momentum_decay value: {momentum_decay}", "momentum_decay")


def check_rprop_etas(etas: Any) -> None:
    """Rprop's step-size factors: ``0 < etaminus < 1 < etaplus``, reported together as torch does."""
    if not isinstance(etas, (tuple, list)):
        raise TypeError(f"etas must be a pair (etaminus, etaplus), got {etas!r}")
    if len(etas) != 2:
        raise ValueError(f"etas must be a pair (etaminus, etaplus), got {etas!r}")
    etaminus, etaplus = etas
    check_number(etaminus, "etas[0]")
    check_number(etaplus, "etas[1]")
    if any(is_traced(eta) for eta in etas):
        return
    if not 0.0 < float(np.asarray(etaminus)) < 1.0 < float(np.asarray(etaplus)):
        raise ValueError(f"Invalid eta values: {etaminus}, {etaplus}")
