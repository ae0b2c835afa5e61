"""torch.optim.Adam and AdamW: every argument alone and the combinations that interact."""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.02, 0.97)

CASES = [
    Case("adam/default", fo.adam, torch.optim.Adam),
    Case("adam/lr", fo.adam, torch.optim.Adam, dict(lr=0.05)),
    Case("adam/betas", fo.adam, torch.optim.Adam, dict(lr=0.01, betas=(0.5, 0.9))),
    Case("adam/betas_small", fo.adam, torch.optim.Adam, dict(lr=0.01, betas=(0.2, 0.3))),
    Case("adam/eps", fo.adam, torch.optim.Adam, dict(lr=0.01, eps=1e-2)),
    Case("adam/weight_decay", fo.adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    Case("adam/amsgrad", fo.adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    Case("adam/maximize", fo.adam, torch.optim.Adam, dict(lr=0.01, maximize=True)),
    Case(
        "adam/weight_decay+maximize",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01, weight_decay=0.1, maximize=True),
    ),
    Case(
        "adam/amsgrad+weight_decay",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    ),
    Case(
        "adam/decoupled_weight_decay",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    Case(
        "adam/decoupled+amsgrad+maximize",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True, maximize=True),
    ),
    Case(
        "adam/lr_schedule",
        fo.adam,
        torch.optim.Adam,
        dict(weight_decay=0.01),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
    Case("adamw/default", fo.adamw, torch.optim.AdamW),
    Case("adamw/weight_decay", fo.adamw, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.3)),
    Case("adamw/amsgrad", fo.adamw, torch.optim.AdamW, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    Case("adamw/maximize", fo.adamw, torch.optim.AdamW, dict(lr=0.01, maximize=True)),
    Case("adamw/betas+eps", fo.adamw, torch.optim.AdamW, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-4)),
    Case(
        "adamw/lr_schedule",
        fo.adamw,
        torch.optim.AdamW,
        dict(weight_decay=0.1),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.02),
        torch_scheduler=_torch_scheduler,
    ),
]
