"""CyclicLR, with the momentum schedule its ``cycle_momentum`` writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from functional_optreg.schedules._base import (
    TorchSchedule,
    as_count,
    check_single,
    check_traceable,
    float_dtype,
    int_dtype,
    zero_epoch,
)

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _cyclic_profile(
    step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """``epoch -> (scale_factor, scale_fn value)``, torch's ``CyclicLR.get_lr`` up to the lrs."""
    step_size_up = float(step_size_up)
    step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
    total_size = step_size_up + step_size_down
    step_ratio = step_size_up / total_size
    if mode not in _CYCLIC_MODES and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")
    if step_ratio == 0:
        raise ZeroDivisionError(
            "CyclicLR with step_size_up=0 divides by zero at epoch 0 (torch raises "
            "ZeroDivisionError in its constructor)."
        )
    if scale_fn is not None:
        check_traceable(scale_fn, "scale_fn")
    else:
        if mode == "triangular":
            scale_fn, scale_mode = (lambda x: 1.0), "cycle"
        elif mode == "triangular2":
            scale_fn, scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), "cycle"
        else:
            scale_fn, scale_mode = (lambda x: jnp.power(gamma, x)), "iterations"

    def profile(epoch):
        position = epoch / total_size
        cycle = jnp.floor(1 + position)
        x = 1.0 + position - cycle
        # With step_size_down=0 the ratio is 1 and the decreasing branch is never taken.
        falling = (x - 1) / (step_ratio - 1 if step_ratio != 1 else 1.0)
        scale_factor = jnp.where(x <= step_ratio, x / step_ratio, falling)
        argument = cycle.astype(int_dtype()) if scale_mode == "cycle" else epoch
        return scale_factor, jnp.asarray(scale_fn(argument), float_dtype())

    return profile


def _cyclic_arguments(base_lr, max_lr, base_momentum, max_momentum):
    return (
        check_single("base_lr", base_lr),
        check_single("max_lr", max_lr),
        check_single("base_momentum", base_momentum),
        check_single("max_momentum", max_momentum),
    )


def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[jax.Array], Any] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.CyclicLR``: the lr cycles between ``base_lr`` and ``max_lr``.

    With :math:`c = \lfloor 1 + t / (u + d) \rfloor` the cycle, :math:`x = 1 + t/(u+d) - c` the
    position in it and :math:`r = u / (u + d)`:

    .. math::

        s_t = x / r \ (x \le r), \qquad s_t = (x - 1) / (r - 1) \ (x > r), \qquad
        \gamma_t = \text{base\_lr} + (\text{max\_lr} - \text{base\_lr})\, s_t\, f(\cdot)

    where :math:`f` is ``scale_fn`` of the cycle (``scale_mode="cycle"``) or of :math:`t`
    (``"iterations"``): 1 (``triangular``), :math:`2^{1-c}` (``triangular2``),
    :math:`\text{gamma}^t` (``exp_range``).

    Args:
      base_lr: lower lr boundary (torch overwrites the optimizer's lr with it).
      max_lr: upper lr boundary.
      step_size_up: updates in the increasing half of a cycle.
      step_size_down: updates in the decreasing half (default: ``step_size_up``).
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored with ``scale_fn``.
      gamma: the ``exp_range`` base.
      scale_fn: custom jnp-traceable scaling policy of one integer argument (the cycle or the
        update count).
      scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` receives.
      cycle_momentum, base_momentum, max_momentum: accepted so one argument dict builds both
        this schedule and :func:`cyclic_momentum`; they do not change the lr.

    Returns:
      A :class:`TorchSchedule` of the update count (CyclicLR steps once per update).

    PyTorch equivalence:
      ``CyclicLR(optimizer, base_lr, max_lr, ...)`` stepped after every update. Torch's default
      ``cycle_momentum=True`` also rewrites the optimizer's momentum (or Adam's ``beta1``) every
      step, even switching momentum on for an ``SGD`` built with ``momentum=0``; pass
      :func:`cyclic_momentum` with the same arguments as ``fo.sgd(momentum=...)`` or as
      ``betas[0]`` of ``fo.adam`` to match.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.cyclic_lr(0.1, 0.5, step_size_up=2)
      >>> [round(float(schedule(c)), 4) for c in range(6)]
      [0.1, 0.3, 0.5, 0.3, 0.1, 0.3]
    """
    base_lr, max_lr, _, _ = _cyclic_arguments(base_lr, max_lr, base_momentum, max_momentum)
    profile = _cyclic_profile(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)

    def at_epoch(epoch):
        scale_factor, scale = profile(epoch)
        base_height = (max_lr - base_lr) * scale_factor
        return base_lr + base_height * scale

    return TorchSchedule(
        "CyclicLR",
        None,
        at_epoch,
        "absolute",
        initial=lambda lr_in: at_epoch(zero_epoch()),
        step=lambda epoch, lr_in: at_epoch(epoch),
    )


def cyclic_momentum(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[jax.Array], Any] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> Callable[[jax.Array], jax.Array]:
    r"""The momentum (or Adam ``beta1``) that ``CyclicLR(cycle_momentum=True)`` writes each step.

    .. math::

        \mu_t = \text{max\_momentum} - (\text{max\_momentum} - \text{base\_momentum})\, s_t\, f(\cdot)

    with :math:`s_t` and :math:`f` as in :func:`cyclic_lr`: momentum moves opposite to the lr.

    The arguments are exactly :func:`cyclic_lr`'s (the lr boundaries are not used), so
    ``kw = dict(...)`` gives ``fo.cyclic_lr(**kw)`` and ``fo.cyclic_momentum(**kw)``.

    Returns:
      A schedule of the update count for ``fo.sgd(momentum=...)`` or ``fo.adam(betas=(...,
      beta2))``.

    Raises:
      ValueError: with ``cycle_momentum=False``, where torch leaves the momentum alone.

    PyTorch equivalence:
      The ``momentum`` / ``betas[0]`` of each param group under ``CyclicLR(cycle_momentum=True)``:
      ``max_momentum`` from construction, then the value above at every step.

    Example:
      >>> import functional_optreg as fo
      >>> momentum = fo.cyclic_momentum(0.1, 0.5, step_size_up=2)
      >>> [round(float(momentum(c)), 4) for c in range(5)]
      [0.9, 0.85, 0.8, 0.85, 0.9]
    """
    _, _, base_momentum, max_momentum = _cyclic_arguments(base_lr, max_lr, base_momentum, max_momentum)
    profile = _cyclic_profile(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
    if not cycle_momentum:
        raise ValueError(
            "cycle_momentum=False: torch leaves the optimizer's momentum unchanged, so pass the "
            "optimizer its constant momentum instead of a momentum schedule."
        )

    def momentum(count):
        scale_factor, scale = profile(as_count(count))
        base_height = (max_momentum - base_momentum) * scale_factor
        return max_momentum - base_height * scale

    return momentum
