"""L1 / L2 / elastic-net penalties: transform route, loss route and torch autograd agree.

The torch side always differentiates the penalized loss with autograd (or uses torch's coupled
``weight_decay``, which is the L2 gradient); our side either chains a penalty transform before
the optimizer or adds ``fo.l1_regularizer`` / ``fo.l2_regularizer`` to the loss.
"""

import jax
import optax
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import Case, default_params

L1, L2 = 1e-2, 5e-3


def _is_matrix(params):
    """Decay weights only: the mask that skips biases and scales (1-D leaves)."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def _penalized_losses(l1, l2, masked, loss_route):
    """Quadratic losses plus the penalty on the torch side (and on ours for the loss route)."""

    def build(params):
        base = verify.quadratic_losses(params)
        keep = jax.tree.leaves(_is_matrix(params)) if masked else [True] * len(jax.tree.leaves(params))
        mask = _is_matrix if masked else None

        def torch_loss(step, tensors):
            loss = base.torch_loss(step, tensors)
            for tensor, kept in zip(tensors, keep):
                if kept:
                    loss = loss + l1 * tensor.abs().sum() + l2 / 2 * (tensor * tensor).sum()
            return loss

        def jax_loss(step, params):
            loss = base.jax_loss(step, params)
            if loss_route:
                loss = loss + fo.l1_regularizer(params, l1, mask) + fo.l2_regularizer(params, l2, mask)
            return loss

        return verify.LossPair(torch_loss, jax_loss)

    return build


def _with_penalty(penalty, optimizer):
    return lambda **kwargs: optax.chain(penalty, optimizer(**kwargs))


def _decay_groups(optimizer_class, weight_decay):
    """Torch param groups: ``weight_decay`` on matrices, 0 on 1-D leaves (bias, scale)."""

    def build(tensors, **kwargs):
        decayed = [t for t in tensors if t.ndim > 1]
        plain = [t for t in tensors if t.ndim <= 1]
        groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
        return optimizer_class(groups, **kwargs)

    return build


CASES = [
    Case(
        "penalties/l2_transform_vs_adam_weight_decay",
        _with_penalty(fo.l2_penalty(L2), fo.adam),
        torch.optim.Adam,
        dict(lr=0.01),
        torch_kwargs=dict(weight_decay=L2),
        property_tests=False,
    ),
    Case(
        "penalties/l2_masked_vs_sgd_param_groups",
        _with_penalty(fo.l2_penalty(0.1, mask=_is_matrix), fo.sgd),
        _decay_groups(torch.optim.SGD, 0.1),
        dict(lr=0.05, momentum=0.9),
        property_tests=False,
    ),
    Case(
        "penalties/l1_transform_vs_autograd",
        _with_penalty(fo.l1_penalty(L1), fo.adam),
        torch.optim.Adam,
        dict(lr=0.01),
        gradient=_penalized_losses(L1, 0.0, masked=False, loss_route=False),
        property_tests=False,
    ),
    Case(
        "penalties/l1_loss_route_vs_autograd",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01),
        gradient=_penalized_losses(L1, 0.0, masked=False, loss_route=True),
        property_tests=False,
    ),
    Case(
        "penalties/elastic_net_transform_vs_autograd",
        _with_penalty(fo.elastic_net_penalty(L1, L2), fo.sgd),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9),
        gradient=_penalized_losses(L1, L2, masked=False, loss_route=False),
        property_tests=False,
    ),
    Case(
        "penalties/elastic_net_loss_route_vs_autograd",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9),
        gradient=_penalized_losses(L1, L2, masked=False, loss_route=True),
        property_tests=False,
    ),
    Case(
        "penalties/elastic_net_masked_transform",
        _with_penalty(fo.elastic_net_penalty(L1, L2, mask=_is_matrix), fo.adam),
        torch.optim.Adam,
        dict(lr=0.01),
        gradient=_penalized_losses(L1, L2, masked=True, loss_route=False),
        property_tests=False,
    ),
    Case(
        "penalties/elastic_net_masked_loss_route",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01),
        gradient=_penalized_losses(L1, L2, masked=True, loss_route=True),
        property_tests=False,
    ),
    Case(
        "penalties/l2_loss_route_seed_cnn_setting",
        fo.adam,
        torch.optim.Adam,
        dict(lr=1e-3),
        gradient=_penalized_losses(0.0, 5e-4, masked=False, loss_route=True),
        params=lambda: default_params(seed=1),
        property_tests=False,
    ),
]
