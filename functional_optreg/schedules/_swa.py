"""SWALR: anneal the lr to the SWA lr, as ``torch.optim.swa_utils.SWALR``."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax.numpy as jnp

from functional_optreg.schedules._base import TorchSchedule, check_base_lr, check_steps_per_epoch, float_dtype


def swalr(
    lr: float, swa_lr: Any, anneal_epochs: int = 10, anneal_strategy: str = "cos", *, steps_per_epoch: int = 1
) -> TorchSchedule:
    r"""``torch.optim.swa_utils.SWALR``: anneal from ``lr`` to ``swa_lr``, then hold ``swa_lr``.

    With :math:`e` the epoch (scheduler steps so far) and :math:`E` = ``anneal_epochs``:

    .. math::

        t = \operatorname{clip}\!\Big(\frac{e}{\max(1, E)}, 0, 1\Big), \quad
        \alpha = \tfrac{1 - \cos(\pi t)}{2} \text{ (cos) or } t \text{ (linear)}, \quad
        \gamma_e = \alpha\,\text{swa\_lr} + (1 - \alpha)\,\text{lr}

    (with :math:`E = 0`, :math:`\gamma_e = \text{swa\_lr}` from the start.)

    Args:
      lr: the optimizer's lr when SWALR starts (torch reads it from the param group; after
        another schedule, that schedule's value at the switch).
      swa_lr: the lr reached after ``anneal_epochs`` epochs.
      anneal_epochs: the length of the annealing, a non-negative int.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      steps_per_epoch: updates per ``SWALR.step()``.

    Returns:
      A :class:`TorchSchedule` of the 0-based update count.

    PyTorch equivalence:
      ``SWALR(optimizer, swa_lr, anneal_epochs, anneal_strategy)`` on an optimizer whose lr is
      ``lr``. Torch recovers the starting lr at every step from the previous one
      (``(lr − α·swa_lr)/(1 − α)``); the closed form here is the same value up to rounding.
      Torch's validation and messages are reproduced.

    Example:
      >>> import functional_optreg as fo
      >>> schedule = fo.swalr(lr=0.1, swa_lr=0.02, anneal_epochs=4, anneal_strategy="linear")
      >>> [round(float(schedule(count)), 4) for count in range(6)]
      [0.1, 0.08, 0.06, 0.04, 0.02, 0.02]
    """
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
    if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, numbers.Integral) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
    lr = check_base_lr(lr)

    def at_epoch(epoch):
        step = jnp.asarray(epoch, float_dtype())
        if anneal_epochs == 0:
            step = jnp.maximum(step, 1.0)
        t = jnp.clip(step / max(1, anneal_epochs), 0.0, 1.0)
        alpha = (1 - jnp.cos(math.pi * t)) / 2 if anneal_strategy == "cos" else t
        return swa_lr * alpha + lr * (1 - alpha)

    return TorchSchedule(
        "SWALR",
        lr,
        at_epoch,
        "absolute",
        initial=lambda lr_in: at_epoch(0),
        step=lambda epoch, lr_in: at_epoch(epoch),
        steps_per_epoch=check_steps_per_epoch(steps_per_epoch),
    )
