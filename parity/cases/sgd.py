"""torch.optim.SGD: every argument alone and the combinations that interact.

The ``set_*`` cases change a hyperparameter mid-run (torch: ``param_groups[0][k] = v``; ours:
``optax.inject_hyperparams`` + ``fo.set_hyperparams``), including momentum switched on, which
creates torch's buffer from the gradient of that step, and off and on again, which resumes from
the frozen buffer.
"""

import optax
import torch

import functional_optreg as fo
from parity import streams
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
    Case(
        "sgd/set_weight_decay_mid_run",
        optax.inject_hyperparams(fo.sgd),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.5),
        before_step=streams.set_group_values(20, {"weight_decay": 0.3}),
        property_tests=False,
    ),
    Case(
        "sgd/set_dampening_mid_run",
        optax.inject_hyperparams(fo.sgd),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9),
        before_step=streams.set_group_values(15, {"dampening": 0.5}),
        property_tests=False,
    ),
    Case(
        "sgd/momentum_switched_on_mid_run",
        optax.inject_hyperparams(fo.sgd),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.0, dampening=0.3),
        before_step=streams.set_group_values(20, {"momentum": 0.9}),
        property_tests=False,
    ),
    Case(
        "sgd/momentum_off_and_on_mid_run",
        optax.inject_hyperparams(fo.sgd),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, weight_decay=0.01),
        before_step=streams.sequence(
            streams.set_group_values(15, {"momentum": 0.0}), streams.set_group_values(35, {"momentum": 0.6})
        ),
        property_tests=False,
    ),
]
