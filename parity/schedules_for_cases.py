"""Schedule pairs for "lr as a schedule" cases: our schedule and the torch scheduler it mirrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp


def exponential_lr(base_lr: float, gamma: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``lr_t = base_lr·gammaᵗ``: ours as a function of the count, torch's ``ExponentialLR``."""

    def ours(count):
        return base_lr * jnp.power(gamma, count)

    def torch_scheduler(optimizer):
        import torch

        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

    return ours, torch_scheduler
