"""SequentialLR and ChainedScheduler over :class:`TorchSchedule` members."""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from functional_optreg.schedules._base import (
    TorchSchedule,
    check_steps_per_epoch,
    float_dtype,
    int_dtype,
)

# A member that is not "absolute" always carries ``initial`` and ``step``; the casts tell mypy so.


def _initial(member: TorchSchedule) -> Callable[[Any], Any]:
    return cast(Callable[[Any], Any], member.initial)


def _step(member: TorchSchedule) -> Callable[[jax.Array, Any], Any]:
    return cast(Callable[[jax.Array, Any], Any], member.step)


def _check_members(name: str, schedulers: Sequence[Any]) -> tuple[list[TorchSchedule], float | None]:
    """Torch's checks on the member list, plus ours: members step once per composite step."""
    schedulers = list(schedulers)
    if len(schedulers) < 1:
        what = "scheduler to be chained" if name == "ChainedScheduler" else "scheduler"
        raise ValueError(f"{name} expects at least one {what}, but got no scheduler.")
    for index, scheduler in enumerate(schedulers):
        if isinstance(scheduler, optax.GradientTransformation):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it requires additional "
                "kwargs to be specified when calling `step`, but got one at index "
                f"{index} in the given schedulers sequence."
            )
        if not isinstance(scheduler, TorchSchedule):
            raise TypeError(
                f"{name} at index {index} should be a schedule built by functional_optreg "
                f"(fo.step_lr, fo.linear_lr, ...), got {type(scheduler).__name__}."
            )
        if scheduler.steps_per_epoch != 1:
            raise ValueError(
                f"{name} steps its schedulers together: build the scheduler at index {index} "
                f"with steps_per_epoch=1 and give steps_per_epoch={scheduler.steps_per_epoch} to "
                f"{name} instead."
            )
    base_lrs = sorted({s.lr for s in schedulers if s.lr is not None})
    if len(base_lrs) > 1:
        raise ValueError(
            f"{name} expects all schedulers to belong to the same optimizer, but got base lrs "
            f"{base_lrs}: build every scheduler with the optimizer's lr."
        )
    return schedulers, (base_lrs[0] if base_lrs else None)


def sequential_lr(
    schedulers: Sequence[TorchSchedule], milestones: Sequence[int], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.SequentialLR``: one scheduler after another, at milestones.

    Scheduler :math:`i` runs from ``milestones[i-1]`` to ``milestones[i]``, on its own epoch
    count that restarts at zero:

    .. math::

        \gamma_e = s_i(e - m_{i-1}) \quad \text{for } m_{i-1} \le e < m_i

    Args:
      schedulers: schedules built with the optimizer's lr and ``steps_per_epoch=1`` (e.g.
        ``[fo.linear_lr(lr, 0.1, total_iters=5), fo.cosine_annealing_lr(lr, T_max=95)]``).
      milestones: ``len(schedulers) - 1`` non-decreasing integer epochs.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``SequentialLR(optimizer, schedulers, milestones)``. At a milestone torch resets the
      incoming scheduler with its closed form at epoch 0, then continues with its recursion;
      that equals a fresh start except where torch's closed form and recursion differ, which is
      reproduced: ``MultiplicativeLR`` continues from the lr the previous scheduler left, times
      ``f(0)``; ``ConstantLR(total_iters=0)`` jumps to the base lr; ``LinearLR`` /
      ``PolynomialLR`` with ``total_iters=0`` divide by zero (we raise at construction). A
      scheduler whose milestone equals the next one never runs. Nested ``SequentialLR`` /
      ``ChainedScheduler`` members (which torch cannot restart) are rejected, as are unsorted
      milestones. ``cycle_momentum`` of a ``CyclicLR`` / ``OneCycleLR`` member is not composed:
      build the momentum schedule yourself.

    Example:
      >>> import functional_optreg as fo
      >>> warmup = fo.linear_lr(1.0, start_factor=0.25, total_iters=3)
      >>> decay = fo.exponential_lr(1.0, gamma=0.5)
      >>> schedule = fo.sequential_lr([warmup, decay], milestones=[3])
      >>> [float(schedule(c)) for c in range(6)]
      [0.25, 0.5, 0.75, 1.0, 0.5, 0.25]
    """
    schedulers, _ = _check_members("SequentialLR", schedulers)
    milestones = list(milestones)
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more than the "
            f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
            f"number of milestones to be equal to {len(milestones)}"
        )
    if any(isinstance(m, bool) or not isinstance(m, numbers.Integral) for m in milestones):
        raise ValueError(f"milestones must be integers, got {milestones}")
    milestones = [int(m) for m in milestones]
    if milestones != sorted(milestones):
        raise ValueError(f"milestones must be non-decreasing, got {milestones}")
    for index, scheduler in enumerate(schedulers):
        if scheduler.kind == "composite":
            raise ValueError(
                f"SequentialLR cannot restart the {scheduler.name} at index {index} (torch has no "
                "closed form for it); list its members instead."
            )
    # The scheduler running at epoch 0 starts with its own first step; each later one that some
    # epoch reaches (a milestone equal to the next skips it) is restarted at its milestone.
    first = bisect.bisect_right(milestones, 0)
    restarted = [
        i for i in range(first + 1, len(schedulers)) if bisect.bisect_right(milestones, milestones[i - 1]) == i
    ]
    for i in restarted:
        restart_error = schedulers[i].restart_error
        if restart_error is not None:
            raise restart_error

    def segment(i, epoch):
        if i == first:
            return schedulers[i].at_epoch(epoch)
        start = milestones[i - 1]
        return schedulers[i].restarted(epoch - start, lambda: value_at_static(start - 1))

    def value_at_static(epoch: int):
        return segment(bisect.bisect_right(milestones, epoch), jnp.asarray(epoch, int_dtype()))

    def at_epoch(epoch):
        index = jnp.searchsorted(jnp.asarray(milestones, jnp.int32), epoch, side="right")
        value = jnp.asarray(segment(first, epoch), float_dtype())
        for i in restarted:
            value = jnp.where(index == i, segment(i, epoch), value)
        return value

    return TorchSchedule(
        "SequentialLR",
        schedulers[first].lr,
        at_epoch,
        "composite",
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
        members=tuple(schedulers),
    )


def chained_scheduler(schedulers: Sequence[TorchSchedule], *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.ChainedScheduler``: every scheduler acts on the lr at every step.

    Torch steps the members in order, each transforming the lr the previous one left. For
    members that only multiply the lr (``StepLR``, ``MultiStepLR``, ``ConstantLR``,
    ``LinearLR``, ``ExponentialLR``, ``PolynomialLR``, ``MultiplicativeLR``) that is the product
    of their factors:

    .. math::

        \gamma_e = \gamma_0 \prod_i \frac{s_i(e)}{\gamma_0}

    A member that sets the lr outright (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``,
    ``CosineAnnealingWarmRestarts``) discards what the members before it did, at every step;
    members after it then apply only their one-step factor of that epoch.

    Args:
      schedulers: schedules built with the optimizer's lr and ``steps_per_epoch=1``, in the order
        torch constructs and steps them; a nested ``chained_scheduler`` is flattened.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``ChainedScheduler(schedulers)``, with the members constructed in list order (each
      constructor's first step already acts on the lr). A ``CosineAnnealingLR`` member is affine
      in torch's recursion (``eta_min`` and the additive restart one epoch past each trough do not
      scale with the other members), so unless a later member sets the lr outright the schedule
      replays torch's recursion epoch by epoch: exact, at a cost linear in the epoch (prefer
      ``steps_per_epoch`` or :func:`sequential_lr` for long per-update schedules).
      ``SequentialLR`` members are rejected.

    Example:
      >>> import functional_optreg as fo
      >>> warmup = fo.constant_lr(1.0, factor=0.5, total_iters=2)
      >>> decay = fo.exponential_lr(1.0, gamma=0.5)
      >>> schedule = fo.chained_scheduler([warmup, decay])
      >>> [float(schedule(c)) for c in range(4)]
      [0.5, 0.25, 0.25, 0.125]
    """
    schedulers, base = _check_members("ChainedScheduler", schedulers)
    members: list[TorchSchedule] = []
    for index, scheduler in enumerate(schedulers):
        if scheduler.name == "ChainedScheduler":
            members.extend(scheduler.members)
        elif scheduler.kind == "composite":
            raise ValueError(
                f"ChainedScheduler cannot chain the {scheduler.name} at index {index}; chain its "
                "members or sequence the chains instead."
            )
        else:
            members.append(scheduler)
    absolute = [i for i, s in enumerate(members) if s.kind == "absolute"]

    if absolute:
        last = absolute[-1]

        def at_epoch(epoch):
            value = members[last].at_epoch(epoch)
            for member in members[last + 1 :]:
                value = jnp.where(epoch == 0, _initial(member)(value), _step(member)(jnp.maximum(epoch, 1), value))
            return value

    elif all(s.kind == "multiplicative" for s in members):

        def at_epoch(epoch):
            if base == 0:
                return jnp.zeros([], float_dtype())
            value = jnp.asarray(base, float_dtype())
            for member in members:
                value = value * (member.at_epoch(epoch) / base)
            return value

    else:

        def at_epoch(epoch):
            value = jnp.asarray(base, float_dtype())
            for member in members:
                value = jnp.asarray(_initial(member)(value), float_dtype())

            def replay(j, lr_in):
                for member in members:
                    lr_in = jnp.asarray(_step(member)(j, lr_in), lr_in.dtype)
                return lr_in

            first, last = jnp.asarray(1, int_dtype()), jnp.asarray(epoch, int_dtype())
            return jax.lax.fori_loop(first, last + 1, replay, value)

    return TorchSchedule(
        "ChainedScheduler",
        base,
        at_epoch,
        "composite",
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
        members=tuple(members),
    )
