"""fo.param_groups against torch param groups: SGD, AdamW and RMSprop with per-group overrides.

The torch side builds its groups from explicit lists of leaf names (written out below, not derived
from our selectors), so a selector that picks the wrong leaves fails the comparison.
"""

import jax
import torch

import functional_optreg as fo
from parity.case import Case, default_params
from parity.schedules_for_cases import exponential_lr

_NAMES = [
    jax.tree_util.keystr(path, simple=True, separator="/")
    for path, _ in jax.tree_util.tree_flatten_with_path(default_params())[0]
]
assert _NAMES == ["conv/bias", "conv/kernel", "dense/bias", "dense/kernel", "scale"], _NAMES

ONE_D = ["conv/bias", "dense/bias", "scale"]
MATRICES = ["conv/kernel", "dense/kernel"]


def _torch_groups(optimizer_class, *groups):
    """``groups``: ``(names, overrides)`` pairs; leaves in no group are not given to torch."""

    def build(tensors, **kwargs):
        named = dict(zip(_NAMES, tensors))
        torch_groups = [{"params": [named[name] for name in names], **overrides} for names, overrides in groups]
        return optimizer_class(torch_groups, **kwargs)

    return build


def _ours_groups(optimizer, groups, default_group=True):
    return lambda **kwargs: fo.param_groups(optimizer, groups, default_group=default_group, **kwargs)


def _sgd_no_decay(lr=1e-3, momentum=0.0, weight_decay=0.0):
    """A named factory (not a lambda) so that the generic inject_hyperparams test can wrap it."""
    return fo.no_decay_on_bias_and_norm(fo.sgd, lr=lr, momentum=momentum, weight_decay=weight_decay)


_ours_lr, _torch_scheduler = exponential_lr(0.01, 0.95)
_ours_bias_lr, _ = exponential_lr(0.03, 0.95)

CASES = [
    Case(
        "groups/sgd_regex+predicate+mask_tree+default",
        _ours_groups(
            fo.sgd,
            [
                {"params": r"bias$", "weight_decay": 0.0, "lr": 0.1},
                {"params": lambda path, leaf: leaf.ndim == 4, "momentum": 0.5, "dampening": 0.3},
                {"params": {"conv": False, "dense": False, "scale": True}, "nesterov": True, "weight_decay": 0.05},
            ],
        ),
        _torch_groups(
            torch.optim.SGD,
            (["conv/bias", "dense/bias"], dict(weight_decay=0.0, lr=0.1)),
            (["conv/kernel"], dict(momentum=0.5, dampening=0.3)),
            (["scale"], dict(nesterov=True, weight_decay=0.05)),
            (["dense/kernel"], {}),
        ),
        dict(lr=0.05, momentum=0.9, weight_decay=0.01),
        property_tests=False,
    ),
    Case(
        "groups/sgd_no_decay_on_bias_and_norm",
        _sgd_no_decay,
        _torch_groups(torch.optim.SGD, (ONE_D, dict(weight_decay=0.0)), (MATRICES, {})),
        dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    ),
    Case(
        "groups/adamw_no_decay_on_bias_and_norm",
        lambda **kwargs: fo.no_decay_on_bias_and_norm(fo.adamw, **kwargs),
        _torch_groups(torch.optim.AdamW, (ONE_D, dict(weight_decay=0.0)), (MATRICES, {})),
        dict(lr=0.01, weight_decay=0.3),
        property_tests=False,
    ),
    Case(
        "groups/adamw_per_group_lr_betas_eps_amsgrad",
        _ours_groups(
            fo.adamw,
            [
                {"params": r"^conv/", "lr": 0.02, "betas": (0.8, 0.95)},
                {"params": r"^dense/kernel$", "amsgrad": True, "eps": 1e-4, "weight_decay": 0.5},
            ],
        ),
        _torch_groups(
            torch.optim.AdamW,
            (["conv/bias", "conv/kernel"], dict(lr=0.02, betas=(0.8, 0.95))),
            (["dense/kernel"], dict(amsgrad=True, eps=1e-4, weight_decay=0.5)),
            (["dense/bias", "scale"], {}),
        ),
        dict(lr=0.01, weight_decay=0.1),
        property_tests=False,
    ),
    Case(
        "groups/adamw_lr_schedule_per_group",
        _ours_groups(fo.adamw, [{"params": r"bias$", "lr": _ours_bias_lr, "weight_decay": 0.0}]),
        _torch_groups(
            torch.optim.AdamW,
            (["conv/bias", "dense/bias"], dict(lr=0.03, weight_decay=0.0)),
            (["conv/kernel", "dense/kernel", "scale"], {}),
        ),
        dict(weight_decay=0.2),
        ours_kwargs=dict(lr=_ours_lr),
        torch_kwargs=dict(lr=0.01),
        torch_scheduler=_torch_scheduler,
        property_tests=False,
    ),
    Case(
        "groups/rmsprop_per_group_alpha_centered_momentum",
        _ours_groups(
            fo.rmsprop,
            [
                {"params": r"^conv/", "alpha": 0.9, "centered": True},
                {"params": r"^dense/", "momentum": 0.5, "weight_decay": 0.01},
                {"params": r"^scale$", "maximize": True, "eps": 1e-3, "lr": 0.002},
            ],
            default_group=False,
        ),
        _torch_groups(
            torch.optim.RMSprop,
            (["conv/bias", "conv/kernel"], dict(alpha=0.9, centered=True)),
            (["dense/bias", "dense/kernel"], dict(momentum=0.5, weight_decay=0.01)),
            (["scale"], dict(maximize=True, eps=1e-3, lr=0.002)),
        ),
        dict(lr=0.01),
        property_tests=False,
    ),
    Case(
        "groups/adam_frozen_default_group",
        _ours_groups(fo.adam, [{"params": r"kernel$", "lr": 0.02}], default_group="frozen"),
        _torch_groups(torch.optim.Adam, (MATRICES, dict(lr=0.02))),
        dict(lr=0.01, weight_decay=0.01),
        property_tests=False,
    ),
]
