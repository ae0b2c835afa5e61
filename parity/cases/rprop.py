"""torch.optim.Rprop: every argument alone, and step sizes at the bounds of their clamp.

Rprop has no weight decay. ``lr`` only initialises the step sizes, so ``lr_schedule`` checks that
a schedule changes nothing after the first update (torch's scheduler changes a value Rprop no
longer reads). ``nan_gradient_elements``: ``torch.sign(nan)`` is 0, so a NaN gradient element
neither moves its parameter nor its step size, and the NaN stored in ``prev`` is harmless.
"""

import torch

import functional_optreg as fo
from parity import streams
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_schedule, _torch_scheduler = exponential_lr(0.05, 0.9)

CASES = [
    Case("rprop/default", fo.rprop, torch.optim.Rprop),
    Case("rprop/lr", fo.rprop, torch.optim.Rprop, dict(lr=0.05)),
    Case("rprop/etas", fo.rprop, torch.optim.Rprop, dict(etas=(0.3, 1.5))),
    Case("rprop/etas_extreme", fo.rprop, torch.optim.Rprop, dict(etas=(0.01, 3.0))),
    Case("rprop/etas_near_one", fo.rprop, torch.optim.Rprop, dict(etas=(0.999, 1.001))),
    Case(
        "rprop/step_sizes_both_clamps",
        fo.rprop,
        torch.optim.Rprop,
        dict(lr=0.01, step_sizes=(2e-3, 0.03)),
    ),
    Case(
        "rprop/step_size_max_below_lr",
        fo.rprop,
        torch.optim.Rprop,
        dict(lr=0.05, step_sizes=(1e-4, 0.02)),
    ),
    Case(
        "rprop/step_size_min_above_lr",
        fo.rprop,
        torch.optim.Rprop,
        dict(lr=1e-3, etas=(0.2, 1.3), step_sizes=(4e-3, 1.0)),
    ),
    Case("rprop/maximize", fo.rprop, torch.optim.Rprop, dict(lr=0.02, maximize=True)),
    Case(
        "rprop/maximize+etas+step_sizes",
        fo.rprop,
        torch.optim.Rprop,
        dict(lr=0.02, etas=(0.4, 1.4), step_sizes=(1e-3, 0.1), maximize=True),
    ),
    Case(
        "rprop/lr_schedule",
        fo.rprop,
        torch.optim.Rprop,
        dict(step_sizes=(1e-4, 0.2)),
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.05),
        torch_scheduler=_torch_scheduler,
    ),
    Case(
        "rprop/nan_gradient_elements",
        fo.rprop,
        torch.optim.Rprop,
        dict(lr=0.01),
        gradient=lambda params: streams.nan_elements(params, steps=(1, 2, 7, 30), leaf=2, index=3),
    ),
]
