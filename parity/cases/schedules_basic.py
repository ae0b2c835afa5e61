"""LambdaLR, MultiplicativeLR, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR.

Each case drives fo.sgd or fo.adam with our schedule as ``lr`` against the torch optimizer with the
torch scheduler stepped after every update (or once per epoch of ``steps_per_epoch`` updates), for
long enough to pass every milestone several times over.
"""

import torch

import functional_optreg as fo
from parity.case import Case

S = torch.optim.lr_scheduler
SGD_LR, ADAM_LR = 0.05, 0.02


class EveryKSteps:
    """Steps a torch scheduler once every ``k`` optimizer steps: once per epoch of ``k`` updates."""

    def __init__(self, scheduler, k):
        self.scheduler, self.k, self.calls = scheduler, k, 0

    def step(self, *args):
        self.calls += 1
        if self.calls % self.k == 0:
            self.scheduler.step(*args)


def per_epoch(make_scheduler, k):
    return lambda optimizer: EveryKSteps(make_scheduler(optimizer), k)


def sgd_case(name, schedule, torch_scheduler, steps=60, property_tests=False, **kwargs):
    """fo.sgd(lr=schedule) against torch SGD(lr=SGD_LR) with ``torch_scheduler``.

    The generic transform properties (tests/test_transform_properties.py) would mostly re-test
    the optimizer; only a few schedule cases, marked ``property_tests=True``, take part.
    """
    kwargs.setdefault("momentum", 0.9)
    return Case(
        name,
        fo.sgd,
        torch.optim.SGD,
        kwargs,
        ours_kwargs=dict(lr=schedule),
        torch_kwargs=dict(lr=SGD_LR),
        torch_scheduler=torch_scheduler,
        steps=steps,
        property_tests=property_tests,
    )


def adam_case(name, schedule, torch_scheduler, steps=60, property_tests=False, **kwargs):
    """fo.adam(lr=schedule) against torch Adam(lr=ADAM_LR) with ``torch_scheduler``."""
    return Case(
        name,
        fo.adam,
        torch.optim.Adam,
        kwargs,
        ours_kwargs=dict(lr=schedule),
        torch_kwargs=dict(lr=ADAM_LR),
        torch_scheduler=torch_scheduler,
        steps=steps,
        property_tests=property_tests,
    )


CASES = [
    sgd_case(
        "lambda_lr/sgd_power",
        fo.lambda_lr(SGD_LR, lambda e: 0.97**e),
        lambda o: S.LambdaLR(o, lambda e: 0.97**e),
    ),
    adam_case(
        "lambda_lr/adam_piecewise_per_epoch",
        fo.lambda_lr(ADAM_LR, lambda e: (e // 3 + 1) / (e + 1), steps_per_epoch=4),
        per_epoch(lambda o: S.LambdaLR(o, lambda e: (e // 3 + 1) / (e + 1)), 4),
    ),
    sgd_case(
        "multiplicative_lr/sgd_constant",
        fo.multiplicative_lr(SGD_LR, lambda e: 0.95),
        lambda o: S.MultiplicativeLR(o, lambda e: 0.95),
    ),
    adam_case(
        "multiplicative_lr/adam_varying",
        fo.multiplicative_lr(ADAM_LR, lambda e: 1.0 - 0.01 * (e % 5)),
        lambda o: S.MultiplicativeLR(o, lambda e: 1.0 - 0.01 * (e % 5)),
        weight_decay=0.01,
        property_tests=True,
    ),
    sgd_case("step_lr/sgd", fo.step_lr(SGD_LR, 7, 0.5), lambda o: S.StepLR(o, 7, 0.5), nesterov=True),
    adam_case(
        "step_lr/adam_per_epoch",
        fo.step_lr(ADAM_LR, 3, steps_per_epoch=5),
        per_epoch(lambda o: S.StepLR(o, 3), 5),
        property_tests=True,
    ),
    sgd_case(
        "multi_step_lr/sgd_repeated_milestone",
        fo.multi_step_lr(SGD_LR, [5, 20, 20, 41], 0.5),
        lambda o: S.MultiStepLR(o, [5, 20, 20, 41], 0.5),
    ),
    adam_case(
        "multi_step_lr/adam_zero_and_unsorted",
        fo.multi_step_lr(ADAM_LR, [30, 0, 12], 0.3),
        lambda o: S.MultiStepLR(o, [30, 0, 12], 0.3),
        amsgrad=True,
    ),
    sgd_case("constant_lr/sgd_default", fo.constant_lr(SGD_LR), lambda o: S.ConstantLR(o)),
    adam_case(
        "constant_lr/adam_total_iters_0",
        fo.constant_lr(ADAM_LR, 0.25, 0),
        lambda o: S.ConstantLR(o, 0.25, 0),
    ),
    sgd_case(
        "constant_lr/sgd_per_epoch",
        fo.constant_lr(SGD_LR, 0.1, 4, steps_per_epoch=3),
        per_epoch(lambda o: S.ConstantLR(o, 0.1, 4), 3),
        dampening=0.1,
    ),
    sgd_case("linear_lr/sgd_warmup", fo.linear_lr(SGD_LR, 0.1, 1.0, 15), lambda o: S.LinearLR(o, 0.1, 1.0, 15)),
    adam_case(
        "linear_lr/adam_decay_to_zero",
        fo.linear_lr(ADAM_LR, 1.0, 0.0, 20),
        lambda o: S.LinearLR(o, 1.0, 0.0, 20),
        decoupled_weight_decay=True,
        weight_decay=0.1,
    ),
    sgd_case("exponential_lr/sgd", fo.exponential_lr(SGD_LR, 0.95), lambda o: S.ExponentialLR(o, 0.95)),
    adam_case(
        "exponential_lr/adam_per_epoch",
        fo.exponential_lr(ADAM_LR, 0.7, steps_per_epoch=6),
        per_epoch(lambda o: S.ExponentialLR(o, 0.7), 6),
    ),
    sgd_case("polynomial_lr/sgd_linear", fo.polynomial_lr(SGD_LR, 20), lambda o: S.PolynomialLR(o, 20)),
    adam_case(
        "polynomial_lr/adam_power",
        fo.polynomial_lr(ADAM_LR, 15, 2.5),
        lambda o: S.PolynomialLR(o, 15, 2.5),
    ),
]
