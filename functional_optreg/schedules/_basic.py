"""StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR: fixed-form decays."""

from __future__ import annotations

import bisect
import numbers
from collections.abc import Iterable
from typing import Any

import jax.numpy as jnp
import numpy as np

from functional_optreg.schedules._base import (
    TorchSchedule,
    as_float,
    check_base_lr,
    check_steps_per_epoch,
)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def step_lr(lr: float, step_size: int, gamma: float = 0.1, *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.StepLR``: decay by ``gamma`` every ``step_size`` epochs.

    .. math::

        \gamma_e = \gamma_0 \cdot \text{gamma}^{\lfloor e / \text{step\_size} \rfloor}

    Args:
      lr: the optimizer's base lr.
      step_size: period of the decay, in epochs (a positive integer).
      gamma: multiplicative decay factor.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``StepLR(optimizer, step_size, gamma)``. Torch multiplies the current lr at each multiple of
      ``step_size``; the closed form agrees to rounding. Torch accepts ``step_size <= 0`` and then
      fails at the first ``step()``; we reject it at construction.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.step_lr(1.0, step_size=2, gamma=0.5)
      >>> [float(schedule(c)) for c in range(5)]
      [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    lr = check_base_lr(lr)
    step_size = _check_positive_int("step_size", step_size)

    def gain(epoch):
        return jnp.power(gamma, epoch // step_size)

    return TorchSchedule(
        "StepLR",
        lr,
        lambda epoch: lr * gain(epoch),
        "multiplicative",
        initial=lambda lr_in: lr_in,
        step=lambda epoch, lr_in: jnp.where(epoch % step_size == 0, lr_in * gamma, lr_in),
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def multi_step_lr(
    lr: float, milestones: Iterable[int], gamma: float = 0.1, *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.MultiStepLR``: decay by ``gamma`` at each milestone epoch.

    .. math::

        \gamma_e = \gamma_0 \cdot \text{gamma}^{\#\{m \in \text{milestones} : m \le e\}}

    A milestone listed twice decays twice.

    Args:
      lr: the optimizer's base lr.
      milestones: epoch indices (any order; repeats count).
      gamma: multiplicative decay factor.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``MultiStepLR(optimizer, milestones, gamma)``. Torch decays when the epoch *equals* a
      milestone, so negative or fractional milestones never fire, though torch's closed form
      (used at a ``SequentialLR`` milestone) counts those ``<= 0``; both are reproduced.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.multi_step_lr(1.0, milestones=[1, 3], gamma=0.5)
      >>> [float(schedule(c)) for c in range(5)]
      [1.0, 0.5, 0.5, 0.25, 0.25]
    """
    lr = check_base_lr(lr)
    milestones = sorted(milestones)
    firing = np.asarray([int(m) for m in milestones if m >= 0 and m == int(m)], dtype=np.int64)
    at_zero = int(np.sum(firing == 0))
    closed_form_at_zero = bisect.bisect_right(milestones, 0)

    def fired(epoch):
        return jnp.searchsorted(jnp.asarray(firing, jnp.int32), epoch, side="right")

    def firing_now(epoch):
        return jnp.sum(jnp.asarray(firing, jnp.int32) == epoch)

    def restarted(epoch, previous):
        return lr * jnp.power(gamma, closed_form_at_zero + fired(epoch) - at_zero)

    return TorchSchedule(
        "MultiStepLR",
        lr,
        lambda epoch: lr * jnp.power(gamma, fired(epoch)),
        "multiplicative",
        initial=lambda lr_in: lr_in * gamma**at_zero if at_zero else lr_in,
        step=lambda epoch, lr_in: jnp.where(firing_now(epoch) > 0, lr_in * jnp.power(gamma, firing_now(epoch)), lr_in),
        restarted=restarted,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def constant_lr(lr: float, factor: float = 1.0 / 3, total_iters: int = 5, *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.ConstantLR``: the lr times ``factor`` until ``total_iters``.

    .. math::

        \gamma_e = \gamma_0 \cdot \text{factor} \ (e < \text{total\_iters}), \qquad
        \gamma_e = (\gamma_0 \cdot \text{factor}) \cdot (1 / \text{factor}) \ (e \ge \text{total\_iters})

    Args:
      lr: the optimizer's base lr.
      factor: the multiplier, in ``[0, 1]``.
      total_iters: number of epochs at the reduced lr.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``ConstantLR(optimizer, factor, total_iters)``. Torch restores the lr by multiplying by
      ``1/factor`` (so the restored lr can differ from the base lr in the last bit, reproduced),
      and with ``total_iters=0`` it never restores it: the lr stays ``lr·factor`` for good. With
      ``factor=0`` torch divides by zero at epoch ``total_iters``; we raise at construction.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.constant_lr(1.0, factor=0.5, total_iters=2)
      >>> [float(schedule(c)) for c in range(4)]
      [0.5, 0.5, 1.0, 1.0]
    """
    lr = check_base_lr(lr)
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
    restores = total_iters >= 1
    if restores and factor == 0:
        raise ZeroDivisionError(
            "ConstantLR with factor=0 divides by zero at epoch total_iters (torch raises "
            "ZeroDivisionError there); use factor > 0 or total_iters=0."
        )
    reduced = lr * factor
    restored = reduced * (1.0 / factor) if restores else reduced
    at_restart = lr * (factor + (0 >= total_iters) * (1 - factor))

    def at_epoch(epoch):
        return jnp.where(epoch >= total_iters, restored, reduced) if restores else jnp.asarray(reduced)

    def step(epoch, lr_in):
        return jnp.where(epoch == total_iters, lr_in * (1.0 / factor), lr_in) if restores else lr_in

    def restarted(epoch, previous):
        return at_epoch(epoch) if restores else jnp.asarray(at_restart)

    return TorchSchedule(
        "ConstantLR",
        lr,
        at_epoch,
        "multiplicative",
        initial=lambda lr_in: lr_in * factor,
        step=step,
        restarted=restarted,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def linear_lr(
    lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
    *,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.LinearLR``: the multiplier moves linearly, then holds.

    .. math::

        \gamma_e = \gamma_0 \left(s + (t - s)\,\frac{\min(e, T)}{T}\right)

    with :math:`s` = ``start_factor``, :math:`t` = ``end_factor``, :math:`T` = ``total_iters``.

    Args:
      lr: the optimizer's base lr.
      start_factor: multiplier at epoch 0, in ``(0, 1]``.
      end_factor: multiplier from epoch ``total_iters`` on, in ``[0, 1]``.
      total_iters: number of epochs of the ramp.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``LinearLR(optimizer, start_factor, end_factor, total_iters)``; torch's recursive ratios
      telescope to the closed form (agreement to rounding). With ``total_iters <= 0`` torch keeps
      ``lr·start_factor`` for good, reproduced.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.linear_lr(1.0, start_factor=0.25, total_iters=3)
      >>> [float(schedule(c)) for c in range(5)]
      [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    lr = check_base_lr(lr)
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
    ramps = total_iters >= 1
    delta = end_factor - start_factor
    restart_error = None
    if total_iters == 0:
        restart_error = ZeroDivisionError(
            "LinearLR with total_iters=0 divides by zero when a SequentialLR milestone restarts "
            "it (torch raises ZeroDivisionError there)."
        )
        at_restart = None
    else:
        at_restart = lr * (start_factor + delta * min(total_iters, 0) / total_iters)

    def at_epoch(epoch):
        if not ramps:
            return jnp.asarray(lr * start_factor)
        ramp = lr * (start_factor + delta * as_float(jnp.minimum(total_iters, epoch)) / total_iters)
        # XLA turns the division into a multiplication by 1/total_iters; pin the end of the ramp
        # so that end_factor=0 gives exactly 0, as torch's recursion does.
        return jnp.where(epoch >= total_iters, lr * end_factor, ramp)

    def step(epoch, lr_in):
        if not ramps:
            return lr_in
        ratio = 1.0 + delta / (total_iters * start_factor + as_float(epoch - 1) * delta)
        return jnp.where(epoch > total_iters, lr_in, lr_in * ratio)

    def restarted(epoch, previous):
        return at_epoch(epoch) if ramps else jnp.asarray(at_restart)

    return TorchSchedule(
        "LinearLR",
        lr,
        at_epoch,
        "multiplicative",
        initial=lambda lr_in: lr_in * start_factor,
        step=step,
        restarted=restarted,
        restart_error=restart_error,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def exponential_lr(lr: float, gamma: float, *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.ExponentialLR``: decay by ``gamma`` every epoch.

    .. math::

        \gamma_e = \gamma_0 \cdot \text{gamma}^{e}

    Args:
      lr: the optimizer's base lr.
      gamma: multiplicative decay factor.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``ExponentialLR(optimizer, gamma)``; torch multiplies the current lr each epoch, which
      agrees with the power to rounding.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.exponential_lr(1.0, gamma=0.5, steps_per_epoch=2)
      >>> [float(schedule(c)) for c in range(5)]
      [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    lr = check_base_lr(lr)
    return TorchSchedule(
        "ExponentialLR",
        lr,
        lambda epoch: lr * jnp.power(gamma, epoch),
        "multiplicative",
        initial=lambda lr_in: lr_in,
        step=lambda epoch, lr_in: lr_in * gamma,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def polynomial_lr(lr: float, total_iters: int = 5, power: float = 1.0, *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.PolynomialLR``: polynomial decay to zero over ``total_iters``.

    .. math::

        \gamma_e = \gamma_0 \left(1 - \frac{\min(e, T)}{T}\right)^{p}

    Args:
      lr: the optimizer's base lr.
      total_iters: epochs until the lr reaches zero (it then stays zero).
      power: the exponent :math:`p`.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`.

    PyTorch equivalence:
      ``PolynomialLR(optimizer, total_iters, power)``; torch's recursive ratios telescope to the
      closed form. With ``total_iters <= 0`` torch never changes the lr, reproduced.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.polynomial_lr(1.0, total_iters=4, power=2.0)
      >>> [float(schedule(c)) for c in range(6)]
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    lr = check_base_lr(lr)
    decays = total_iters >= 1
    restart_error = None
    at_restart = lr
    if total_iters == 0:
        restart_error = ZeroDivisionError(
            "PolynomialLR with total_iters=0 divides by zero when a SequentialLR milestone "
            "restarts it (torch raises ZeroDivisionError there)."
        )
    elif total_iters < 0:
        at_restart = lr * (1.0 - min(total_iters, 0) / total_iters) ** power

    def at_epoch(epoch):
        if not decays:
            return jnp.asarray(lr)
        # (T − min(T, e)) / T rather than torch's 1 − min(T, e)/T: equal to rounding, and exactly
        # zero at T although XLA divides by multiplying with 1/T.
        return lr * (as_float(total_iters - jnp.minimum(total_iters, epoch)) / total_iters) ** power

    def step(epoch, lr_in):
        if not decays:
            return lr_in
        remaining = 1.0 - as_float(epoch) / total_iters
        ratio = (remaining / (1.0 - as_float(epoch - 1) / total_iters)) ** power
        return jnp.where(epoch > total_iters, lr_in, lr_in * ratio)

    def restarted(epoch, previous):
        return at_epoch(epoch) if decays else jnp.asarray(at_restart)

    return TorchSchedule(
        "PolynomialLR",
        lr,
        at_epoch,
        "multiplicative",
        initial=lambda lr_in: lr_in,
        step=step,
        restarted=restarted,
        restart_error=restart_error,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )
