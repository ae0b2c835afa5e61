"""torch.optim.RAdam: every argument alone and the combinations that interact.

With the default betas the rectification switches on at step 6; ``betas_late_switch`` moves the
switch to step 8 with a rectifier close to its edge, and ``betas_never_rectified`` keeps
``rho_inf <= 5`` so that every step is plain bias-corrected momentum.
"""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.02, 0.97)

CASES = [
    Case("radam/default", fo.radam, torch.optim.RAdam),
    Case("radam/lr", fo.radam, torch.optim.RAdam, dict(lr=0.02)),
    Case("radam/betas", fo.radam, torch.optim.RAdam, dict(lr=0.01, betas=(0.8, 0.99))),
    Case("radam/betas_late_switch", fo.radam, torch.optim.RAdam, dict(lr=0.01, betas=(0.5, 0.75))),
    Case(
        "radam/betas_never_rectified",
        fo.radam,
        torch.optim.RAdam,
        dict(lr=0.01, betas=(0.9, 0.6)),
    ),
    Case("radam/eps", fo.radam, torch.optim.RAdam, dict(lr=0.01, eps=1e-2)),
    Case("radam/weight_decay", fo.radam, torch.optim.RAdam, dict(lr=0.01, weight_decay=0.1)),
    Case("radam/maximize", fo.radam, torch.optim.RAdam, dict(lr=0.01, maximize=True)),
    Case(
        "radam/weight_decay+maximize",
        fo.radam,
        torch.optim.RAdam,
        dict(lr=0.01, weight_decay=0.1, maximize=True),
    ),
    Case(
        "radam/decoupled_weight_decay",
        fo.radam,
        torch.optim.RAdam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    Case(
        "radam/decoupled+maximize+betas",
        fo.radam,
        torch.optim.RAdam,
        dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.2, decoupled_weight_decay=True, maximize=True),
    ),
    Case(
        "radam/lr_schedule",
        fo.radam,
        torch.optim.RAdam,
        dict(weight_decay=0.01),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
]
