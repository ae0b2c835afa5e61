"""fo.ema_momentum against the two torch SGD configurations that reproduce it exactly."""

import torch

import functional_optreg as fo
from parity.case import Case

ALPHA, BETA = 0.1, 0.8


def _sgd_with_zero_buffers(tensors, **kwargs):
    """SGD(dampening=β) with ``momentum_buffer`` pre-set to zeros, bypassing the raw first buffer."""
    optimizer = torch.optim.SGD(tensors, **kwargs)
    for tensor in tensors:
        optimizer.state[tensor]["momentum_buffer"] = torch.zeros_like(tensor)
    return optimizer


CASES = [
    Case(
        "ema_momentum/vs_sgd_scaled_lr",
        fo.ema_momentum,
        torch.optim.SGD,
        ours_kwargs=dict(lr=ALPHA, beta=BETA),
        torch_kwargs=dict(lr=ALPHA * (1 - BETA), momentum=BETA),
    ),
    Case(
        "ema_momentum/vs_sgd_dampening_zero_buffer",
        fo.ema_momentum,
        _sgd_with_zero_buffers,
        ours_kwargs=dict(lr=ALPHA, beta=BETA),
        torch_kwargs=dict(lr=ALPHA, momentum=BETA, dampening=BETA),
    ),
    Case(
        "ema_momentum/beta_0.5",
        fo.ema_momentum,
        torch.optim.SGD,
        ours_kwargs=dict(lr=0.2, beta=0.5),
        torch_kwargs=dict(lr=0.2 * 0.5, momentum=0.5),
    ),
]
