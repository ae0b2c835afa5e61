"""torch.optim.NAdam: every argument alone and the combinations that interact."""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.02, 0.97)

CASES = [
    Case("nadam/default", fo.nadam, torch.optim.NAdam),
    Case("nadam/lr", fo.nadam, torch.optim.NAdam, dict(lr=0.05)),
    Case("nadam/betas", fo.nadam, torch.optim.NAdam, dict(lr=0.01, betas=(0.5, 0.9))),
    Case("nadam/betas_small", fo.nadam, torch.optim.NAdam, dict(lr=0.01, betas=(0.2, 0.3))),
    Case("nadam/eps", fo.nadam, torch.optim.NAdam, dict(lr=0.01, eps=1e-2)),
    Case("nadam/weight_decay", fo.nadam, torch.optim.NAdam, dict(lr=0.01, weight_decay=0.1)),
    Case("nadam/momentum_decay", fo.nadam, torch.optim.NAdam, dict(lr=0.01, momentum_decay=0.05)),
    Case("nadam/momentum_decay_zero", fo.nadam, torch.optim.NAdam, dict(lr=0.01, momentum_decay=0.0)),
    Case("nadam/maximize", fo.nadam, torch.optim.NAdam, dict(lr=0.01, maximize=True)),
    Case(
        "nadam/weight_decay+maximize",
        fo.nadam,
        torch.optim.NAdam,
        dict(lr=0.01, weight_decay=0.1, maximize=True),
    ),
    Case(
        "nadam/decoupled_weight_decay",
        fo.nadam,
        torch.optim.NAdam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    Case(
        "nadam/momentum_decay+decoupled_weight_decay",
        fo.nadam,
        torch.optim.NAdam,
        dict(lr=0.01, weight_decay=0.2, momentum_decay=0.02, decoupled_weight_decay=True),
    ),
    Case(
        "nadam/momentum_decay+weight_decay+maximize",
        fo.nadam,
        torch.optim.NAdam,
        dict(lr=0.01, weight_decay=0.1, momentum_decay=0.02, maximize=True),
    ),
    Case(
        "nadam/lr_schedule",
        fo.nadam,
        torch.optim.NAdam,
        dict(weight_decay=0.01),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
]
