"""LambdaLR and MultiplicativeLR: schedules given by a user function of the epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from functional_optreg.schedules._base import (
    TorchSchedule,
    check_base_lr,
    check_lr_lambda,
    check_steps_per_epoch,
    check_traceable,
    float_dtype,
    int_dtype,
    zero_epoch,
)


def lambda_lr(lr: float, lr_lambda: Callable[[jax.Array], Any], *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.LambdaLR``: the base lr times a function of the epoch.

    .. math::

        \gamma_e = \gamma_0 \cdot f(e)

    Args:
      lr: the optimizer's base lr :math:`\gamma_0`.
      lr_lambda: :math:`f`, a jnp-traceable function of the integer epoch (``lambda e: 0.95**e``
        works; ``math`` functions and Python ``if`` on the epoch do not trace: use ``jnp.*`` and
        ``jnp.where``). It is traced once here, so one that cannot be fails now, naming itself.
      steps_per_epoch: updates per scheduler step; the update ``c`` uses epoch
        ``c // steps_per_epoch``.

    Returns:
      A :class:`TorchSchedule`, a function of the 0-based update count.

    PyTorch equivalence:
      ``LambdaLR(optimizer, lr_lambda)`` stepped once per epoch. Torch's list of lambdas (one per
      param group) becomes one schedule per group.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.lambda_lr(0.1, lambda epoch: 1.0 / (epoch + 1))
      >>> [round(float(schedule(c)), 4) for c in range(4)]
      [0.1, 0.05, 0.0333, 0.025]
    """
    lr = check_base_lr(lr)
    fn = check_traceable(check_lr_lambda(lr_lambda), "lr_lambda")

    def at_epoch(epoch):
        return lr * fn(epoch)

    return TorchSchedule(
        "LambdaLR",
        lr,
        at_epoch,
        "absolute",
        initial=lambda lr_in: at_epoch(zero_epoch()),
        step=lambda epoch, lr_in: at_epoch(epoch),
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )


def _running_product(fn: Callable[[jax.Array], Any], start: Any, first: int, last: jax.Array) -> jax.Array:
    """``start·fn(first)·…·fn(last)``, multiplied left to right as torch's recursion does."""
    start = jnp.asarray(start, dtype=float_dtype())

    def body(epoch, value):
        return (value * fn(epoch)).astype(value.dtype)

    lower, upper = jnp.asarray(first, int_dtype()), jnp.asarray(last, int_dtype())
    return jax.lax.fori_loop(lower, upper + 1, body, start)


def multiplicative_lr(lr: float, lr_lambda: Callable[[jax.Array], Any], *, steps_per_epoch: int = 1) -> TorchSchedule:
    r"""``torch.optim.lr_scheduler.MultiplicativeLR``: each epoch multiplies the lr by ``f(epoch)``.

    .. math::

        \gamma_0 = \gamma_{\text{base}}, \qquad \gamma_e = \gamma_{e-1} \cdot f(e)

    Args:
      lr: the optimizer's base lr.
      lr_lambda: :math:`f`, a jnp-traceable function of the integer epoch.
      steps_per_epoch: updates per scheduler step.

    Returns:
      A :class:`TorchSchedule`. The product has no closed form for an arbitrary :math:`f`, so the
      schedule multiplies the factors in a loop: evaluating epoch :math:`e` costs :math:`e`
      scalar multiplications (use :func:`lambda_lr` when the product has a closed form).

    PyTorch equivalence:
      ``MultiplicativeLR(optimizer, lr_lambda)``. Torch never applies ``f(0)`` (the constructor's
      step keeps the lr), and the product is formed left to right as torch's recursion does.
      After a ``SequentialLR`` milestone torch continues from the lr the previous scheduler
      left, times ``f(0)``; :func:`sequential_lr` reproduces that.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.multiplicative_lr(1.0, lambda epoch: 0.5)
      >>> [float(schedule(c)) for c in range(4)]
      [1.0, 0.5, 0.25, 0.125]
    """
    lr = check_base_lr(lr)
    fn = check_traceable(check_lr_lambda(lr_lambda), "lr_lambda")

    def restarted(epoch, previous):
        return _running_product(fn, previous() * fn(zero_epoch()), 1, epoch)

    return TorchSchedule(
        "MultiplicativeLR",
        lr,
        lambda epoch: _running_product(fn, lr, 1, epoch),
        "multiplicative",
        initial=lambda lr_in: lr_in,
        step=lambda epoch, lr_in: lr_in * fn(epoch),
        restarted=restarted,
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )
