"""torch.optim.Adagrad: every argument alone and the combinations that interact."""

import torch

import functional_optreg as fo
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.1, 0.97)

CASES = [
    Case("adagrad/default", fo.adagrad, torch.optim.Adagrad),
    Case("adagrad/lr", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    Case("adagrad/lr_decay", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.05)),
    Case("adagrad/weight_decay", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1, weight_decay=0.1)),
    Case(
        "adagrad/initial_accumulator_value",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, initial_accumulator_value=0.5),
    ),
    Case("adagrad/eps", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1, eps=0.5)),
    Case("adagrad/maximize", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1, maximize=True)),
    Case(
        "adagrad/weight_decay+maximize",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, weight_decay=0.1, maximize=True),
    ),
    Case(
        "adagrad/lr_decay+weight_decay",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.1),
    ),
    Case(
        "adagrad/initial_accumulator_value+eps+lr_decay",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.02, initial_accumulator_value=0.3, eps=0.1),
    ),
    Case(
        "adagrad/lr_schedule+lr_decay",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr_decay=0.05, weight_decay=0.01),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.1),
        torch_scheduler=_torch_scheduler,
    ),
    Case(
        "adagrad/foreach",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2, foreach=True),
    ),
    Case(
        "adagrad/fused",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2, fused=True),
    ),
]
