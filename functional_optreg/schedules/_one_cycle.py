"""OneCycleLR, with the momentum schedule its ``cycle_momentum`` writes."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from functional_optreg.schedules._base import (
    TorchSchedule,
    as_count,
    check_single,
    float_dtype,
    zero_epoch,
)


def _one_cycle_phases(
    max_lr,
    total_steps,
    epochs,
    steps_per_epoch,
    pct_start,
    anneal_strategy,
    base_momentum,
    max_momentum,
    div_factor,
    final_div_factor,
    three_phase,
):
    """Torch's validation and ``_schedule_phases``, with the group values filled in."""
    if total_steps is not None:
        if total_steps <= 0 or not isinstance(total_steps, int):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
    elif epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
        total_steps = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
    max_lr = check_single("max_lr", max_lr)
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    base_momentum = check_single("base_momentum", base_momentum)
    max_momentum = check_single("max_momentum", max_momentum)
    warm_end = float(pct_start * total_steps) - 1
    if three_phase:
        phases = [
            (warm_end, initial_lr, max_lr, max_momentum, base_momentum),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial_lr, base_momentum, max_momentum),
            (total_steps - 1, initial_lr, min_lr, max_momentum, max_momentum),
        ]
    else:
        phases = [
            (warm_end, initial_lr, max_lr, max_momentum, base_momentum),
            (total_steps - 1, max_lr, min_lr, base_momentum, max_momentum),
        ]
    # A phase of zero length that some update in [0, total_steps) falls into makes torch divide by
    # zero at that step; fail at construction instead of returning NaN.
    start, reached = 0.0, -math.inf
    for index, (end, *_) in enumerate(phases):
        last = index == len(phases) - 1
        lo = 0 if reached == -math.inf else math.floor(reached) + 1
        hi = total_steps - 1 if last else math.floor(end)
        if end == start and max(lo, 0) <= min(hi, total_steps - 1):
            raise ZeroDivisionError(
                f"OneCycleLR phase {index} has zero length (pct_start={pct_start}, "
                f"total_steps={total_steps}); torch raises ZeroDivisionError when it is reached."
            )
        reached, start = max(reached, end), end
    return total_steps, phases


def _one_cycle_curve(phases, total_steps, anneal_strategy, which):
    """``count -> value`` of the lr (``which=1``) or the momentum (``which=3``)."""
    if anneal_strategy == "cos":

        def anneal(start, end, pct):
            cos_out = jnp.cos(math.pi * pct) + 1
            return end + (start - end) / 2.0 * cos_out
    else:

        def anneal(start, end, pct):
            return (end - start) * pct + start

    def curve(count):
        step_num = jnp.minimum(as_count(count), total_steps - 1).astype(float_dtype())
        start_step, candidates = 0.0, []
        for phase in phases:
            end_step = phase[0]
            width = end_step - start_step
            # Exactly 1 at the phase end, where XLA's multiplication by 1/width may miss it.
            pct = jnp.where(step_num == end_step, 1.0, (step_num - start_step) / (width if width != 0 else 1.0))
            candidates.append((end_step, anneal(phase[which], phase[which + 1], pct)))
            start_step = end_step
        value = candidates[-1][1]
        for end_step, candidate in reversed(candidates[:-1]):
            value = jnp.where(step_num <= end_step, candidate, value)
        return value

    return curve


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.OneCycleLR``: up to ``max_lr``, then far below the start.

    The lr goes from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the
    ``total_steps`` updates, then to ``max_lr / div_factor / final_div_factor``; with
    ``three_phase`` it first comes back down to the initial lr symmetrically and anneals to the
    minimum in a third phase. Each phase interpolates with :math:`p` from 0 to 1:

    .. math::

        \text{cos:}\ \ e + \tfrac{s - e}{2}(1 + \cos \pi p), \qquad
        \text{linear:}\ \ (e - s)\,p + s

    Args:
      max_lr: the peak lr (torch ignores the optimizer's lr).
      total_steps: number of updates in the cycle; or give ``epochs`` and ``steps_per_epoch``.
      epochs, steps_per_epoch: ``total_steps = epochs * steps_per_epoch`` (torch's meaning:
        batches per epoch; the schedule still steps once per update).
      pct_start: fraction of the cycle spent increasing the lr.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      cycle_momentum, base_momentum, max_momentum: accepted so one argument dict builds both
        this schedule and :func:`one_cycle_momentum`; they do not change the lr.
      div_factor: initial lr is ``max_lr / div_factor``.
      final_div_factor: minimum lr is the initial lr ``/ final_div_factor``.
      three_phase: use torch's three-phase variant.

    Returns:
      A :class:`TorchSchedule` of the update count.

    PyTorch equivalence:
      ``OneCycleLR(optimizer, max_lr, total_steps, ...)`` stepped after every update; torch
      raises ``ValueError`` when stepped more than ``total_steps`` times. Ours is torch's value
      for the updates ``0 … total_steps − 1`` and holds the final value (the end of the last
      phase, the minimum lr) from then on; torch's value for count ``total_steps`` (the lr left
      after the last scheduled update, one step past the end of the last phase: below the
      minimum, even negative, with ``linear``) is not reproduced. Torch's default
      ``cycle_momentum=True`` also drives the optimizer's momentum / ``beta1``: pass
      :func:`one_cycle_momentum` with the same arguments to match.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.one_cycle_lr(1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear")
      >>> [round(float(schedule(c)), 4) for c in range(7)]
      [0.04, 1.0, 0.6667, 0.3333, 0.0, 0.0, 0.0]
    """
    total_steps, phases = _one_cycle_phases(
        max_lr,
        total_steps,
        epochs,
        steps_per_epoch,
        pct_start,
        anneal_strategy,
        base_momentum,
        max_momentum,
        div_factor,
        final_div_factor,
        three_phase,
    )
    at_epoch = _one_cycle_curve(phases, total_steps, anneal_strategy, which=1)
    return TorchSchedule(
        "OneCycleLR",
        None,
        at_epoch,
        "absolute",
        initial=lambda lr_in: at_epoch(zero_epoch()),
        step=lambda epoch, lr_in: at_epoch(epoch),
    )


def one_cycle_momentum(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Callable[[jax.Array], jax.Array]:
    r"""The momentum (or Adam ``beta1``) that ``OneCycleLR(cycle_momentum=True)`` writes each step.

    It anneals opposite to the lr, with the same phases and ``anneal_strategy``: from
    ``max_momentum`` to ``base_momentum`` while the lr warms up, then back to ``max_momentum``
    (three-phase: back in the second phase, then constant).

    The arguments are exactly :func:`one_cycle_lr`'s, so one dict builds both.

    Returns:
      A schedule of the update count for ``fo.sgd(momentum=...)`` or ``fo.adam(betas=(...,
      beta2))``; it holds its final value from ``total_steps − 1`` on, like :func:`one_cycle_lr`.

    Raises:
      ValueError: with ``cycle_momentum=False``, where torch leaves the momentum alone.

    PyTorch equivalence:
      The ``momentum`` / ``betas[0]`` of each param group under
      ``OneCycleLR(cycle_momentum=True)``: torch writes ``max_momentum`` at construction and the
      annealed value at every step, on ``SGD`` even when it was built with ``momentum=0``.

    Example:
      >>> import functional_optreg as fo
      >>> momentum = fo.one_cycle_momentum(1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear")
      >>> [round(float(momentum(c)), 4) for c in range(5)]
      [0.95, 0.85, 0.8833, 0.9167, 0.95]
    """
    total_steps, phases = _one_cycle_phases(
        max_lr,
        total_steps,
        epochs,
        steps_per_epoch,
        pct_start,
        anneal_strategy,
        base_momentum,
        max_momentum,
        div_factor,
        final_div_factor,
        three_phase,
    )
    if not cycle_momentum:
        raise ValueError(
            "cycle_momentum=False: torch leaves the optimizer's momentum unchanged, so pass the "
            "optimizer its constant momentum instead of a momentum schedule."
        )
    return _one_cycle_curve(phases, total_steps, anneal_strategy, which=3)
