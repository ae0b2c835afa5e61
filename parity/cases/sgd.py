"""torch.optim.SGD: every argument alone and the combinations that interact."""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.05, 0.97)

CASES = [
    Case("sgd/default", fo.sgd, torch.optim.SGD),
    Case("sgd/lr", fo.sgd, torch.optim.SGD, dict(lr=0.1)),
    Case("sgd/momentum", fo.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    Case("sgd/momentum+dampening", fo.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.5)),
    Case("sgd/nesterov", fo.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    Case("sgd/weight_decay", fo.sgd, torch.optim.SGD, dict(lr=0.05, weight_decay=0.1)),
    Case("sgd/maximize", fo.sgd, torch.optim.SGD, dict(lr=0.01, maximize=True)),
    Case(
        "sgd/weight_decay+maximize",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.01, momentum=0.5, weight_decay=0.1, maximize=True),
    ),
    Case(
        "sgd/nesterov+weight_decay",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
    ),
    Case(
        "sgd/all+dampening",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, dampening=0.9, weight_decay=0.01),
    ),
    Case(
        "sgd/lr_schedule",
        fo.sgd,
        torch.optim.SGD,
        dict(momentum=0.9),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.05),
        torch_scheduler=_torch_scheduler,
    ),
]
