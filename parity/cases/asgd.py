"""torch.optim.ASGD: every argument alone and the combinations that interact.

The averaged parameters ``ax`` are not compared here (the engine compares parameters); see
tests/test_asgd.py, which checks ``ax``, ``eta`` and ``mu`` against torch's state at every step.
"""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.05, 0.97)

CASES = [
    Case("asgd/default", fo.asgd, torch.optim.ASGD),
    Case("asgd/lr", fo.asgd, torch.optim.ASGD, dict(lr=0.1)),
    Case("asgd/lambd", fo.asgd, torch.optim.ASGD, dict(lr=0.1, lambd=0.5)),
    Case("asgd/alpha", fo.asgd, torch.optim.ASGD, dict(lr=0.1, lambd=0.2, alpha=0.3)),
    Case("asgd/t0", fo.asgd, torch.optim.ASGD, dict(lr=0.05, t0=20)),
    Case("asgd/t0_fractional", fo.asgd, torch.optim.ASGD, dict(lr=0.05, t0=20.5)),
    Case("asgd/weight_decay", fo.asgd, torch.optim.ASGD, dict(lr=0.05, weight_decay=0.1)),
    Case("asgd/maximize", fo.asgd, torch.optim.ASGD, dict(lr=0.05, maximize=True)),
    Case(
        "asgd/weight_decay+maximize",
        fo.asgd,
        torch.optim.ASGD,
        dict(lr=0.05, weight_decay=0.1, maximize=True),
    ),
    Case(
        "asgd/t0+lambd+weight_decay",
        fo.asgd,
        torch.optim.ASGD,
        dict(lr=0.1, lambd=0.3, alpha=0.6, t0=10, weight_decay=0.05),
    ),
    Case(
        "asgd/lr_schedule",
        fo.asgd,
        torch.optim.ASGD,
        dict(lambd=0.3, t0=20),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.05),
        torch_scheduler=_torch_scheduler,
    ),
]
