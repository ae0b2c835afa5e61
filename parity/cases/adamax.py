"""torch.optim.Adamax: every argument alone and the combinations that interact."""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.02, 0.97)

CASES = [
    Case("adamax/default", fo.adamax, torch.optim.Adamax),
    Case("adamax/lr", fo.adamax, torch.optim.Adamax, dict(lr=0.05)),
    Case("adamax/betas", fo.adamax, torch.optim.Adamax, dict(lr=0.02, betas=(0.5, 0.9))),
    # Small beta2: the infinity norm forgets fast, so |g| + eps often wins the maximum.
    Case("adamax/betas_small", fo.adamax, torch.optim.Adamax, dict(lr=0.02, betas=(0.2, 0.3))),
    Case("adamax/eps", fo.adamax, torch.optim.Adamax, dict(lr=0.02, eps=0.5)),
    Case("adamax/weight_decay", fo.adamax, torch.optim.Adamax, dict(lr=0.02, weight_decay=0.1)),
    Case("adamax/maximize", fo.adamax, torch.optim.Adamax, dict(lr=0.02, maximize=True)),
    Case(
        "adamax/weight_decay+maximize",
        fo.adamax,
        torch.optim.Adamax,
        dict(lr=0.02, weight_decay=0.1, maximize=True),
    ),
    Case(
        "adamax/eps+betas_small+weight_decay",
        fo.adamax,
        torch.optim.Adamax,
        dict(lr=0.02, betas=(0.3, 0.5), eps=0.2, weight_decay=0.1),
    ),
    Case(
        "adamax/lr_schedule",
        fo.adamax,
        torch.optim.Adamax,
        dict(weight_decay=0.01),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
    Case(
        "adamax/foreach",
        fo.adamax,
        torch.optim.Adamax,
        dict(lr=0.02, betas=(0.8, 0.9), weight_decay=0.05, foreach=True),
    ),
]
