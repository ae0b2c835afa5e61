"""ReduceLROnPlateau: the metric of update t decides the lr of update t+1.

The metric is the squared norm of the (noisy) quadratic gradient at the current parameters, so it
falls, then stalls at the noise floor and triggers reductions; each side computes it from its own
parameters. Our transform is chained after the optimizer built with the base lr.
"""

import numpy as np
import optax
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import Case, default_params

S = torch.optim.lr_scheduler
_GRADIENT = verify.quadratic_gradients(default_params())


def gradient_norm(step, leaves):
    return float(sum(np.sum(np.square(g.astype(np.float64))) for g in _GRADIENT(step, leaves)))


def negated_gradient_norm(step, leaves):
    return -gradient_norm(step, leaves)


def with_plateau(optimizer):
    """``optax.chain(optimizer(**kwargs), reduce_lr_on_plateau(lr, **plateau))``."""

    def build(lr, plateau, **kwargs):
        return optax.chain(optimizer(lr=lr, **kwargs), fo.reduce_lr_on_plateau(lr, **plateau))

    return build


def plateau_case(name, optimizer, torch_optimizer, lr, plateau, metric=gradient_norm, **kwargs):
    return Case(
        name,
        with_plateau(optimizer),
        torch_optimizer,
        dict(lr=lr, **kwargs),
        ours_kwargs=dict(plateau=plateau),
        torch_scheduler=lambda o: S.ReduceLROnPlateau(o, **plateau),
        metric=metric,
        steps=80,
        property_tests=False,
    )


CASES = [
    plateau_case(
        "reduce_lr_on_plateau/sgd_min_rel",
        fo.sgd,
        torch.optim.SGD,
        0.05,
        dict(factor=0.5, patience=5),
        momentum=0.9,
    ),
    plateau_case(
        "reduce_lr_on_plateau/adam_max_abs_cooldown",
        fo.adam,
        torch.optim.Adam,
        0.05,
        dict(mode="max", factor=0.3, patience=1, threshold=0.05, threshold_mode="abs", cooldown=3),
        metric=negated_gradient_norm,
    ),
    plateau_case(
        "reduce_lr_on_plateau/adamw_min_lr_eps",
        fo.adamw,
        torch.optim.AdamW,
        0.05,
        dict(factor=0.2, patience=0, threshold=0.01, min_lr=1e-3, eps=1e-4),
    ),
]
