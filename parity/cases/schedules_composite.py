"""SequentialLR and ChainedScheduler, including where torch's recursion departs from a fresh start.

Torch schedulers are constructed in list order on the same optimizer, as users write them.
"""

import torch

import functional_optreg as fo
from parity.cases.schedules_basic import ADAM_LR, SGD_LR, adam_case, per_epoch, sgd_case

S = torch.optim.lr_scheduler

CASES = [
    sgd_case(
        "sequential_lr/sgd_warmup_cosine",
        fo.sequential_lr([fo.linear_lr(SGD_LR, 0.1, 1.0, 8), fo.cosine_annealing_lr(SGD_LR, 20)], milestones=[8]),
        lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, 8), S.CosineAnnealingLR(o, 20)], [8]),
        steps=80,
    ),
    adam_case(
        "sequential_lr/adam_three_phases_multiplicative_continues",
        fo.sequential_lr(
            [
                fo.constant_lr(ADAM_LR, 0.5, 5),
                fo.step_lr(ADAM_LR, 6, 0.5),
                fo.multiplicative_lr(ADAM_LR, lambda e: 0.9),
            ],
            milestones=[10, 30],
        ),
        lambda o: S.SequentialLR(
            o, [S.ConstantLR(o, 0.5, 5), S.StepLR(o, 6, 0.5), S.MultiplicativeLR(o, lambda e: 0.9)], [10, 30]
        ),
        property_tests=True,
    ),
    sgd_case(
        "sequential_lr/sgd_per_epoch_constant_restart",
        fo.sequential_lr(
            [fo.exponential_lr(SGD_LR, 0.8), fo.constant_lr(SGD_LR, 0.3, 0)],
            milestones=[6],
            steps_per_epoch=4,
        ),
        per_epoch(lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.8), S.ConstantLR(o, 0.3, 0)], [6]), 4),
    ),
    sgd_case(
        "chained_scheduler/sgd_constant_exponential",
        fo.chained_scheduler([fo.constant_lr(SGD_LR, 0.2, 10), fo.exponential_lr(SGD_LR, 0.97)]),
        lambda o: S.ChainedScheduler([S.ConstantLR(o, 0.2, 10), S.ExponentialLR(o, 0.97)]),
    ),
    adam_case(
        "chained_scheduler/adam_warmup_cosine_replayed",
        fo.chained_scheduler([fo.linear_lr(ADAM_LR, 0.2, 1.0, 6), fo.cosine_annealing_lr(ADAM_LR, 15, 1e-3)]),
        lambda o: S.ChainedScheduler([S.LinearLR(o, 0.2, 1.0, 6), S.CosineAnnealingLR(o, 15, 1e-3)]),
        steps=70,
        property_tests=True,
    ),
    sgd_case(
        "chained_scheduler/sgd_lambda_overrides_then_step",
        fo.chained_scheduler(
            [
                fo.exponential_lr(SGD_LR, 0.5),
                fo.lambda_lr(SGD_LR, lambda e: 1.0 / (1.0 + 0.1 * e)),
                fo.step_lr(SGD_LR, 4, 0.5),
            ]
        ),
        lambda o: S.ChainedScheduler(
            [S.ExponentialLR(o, 0.5), S.LambdaLR(o, lambda e: 1.0 / (1.0 + 0.1 * e)), S.StepLR(o, 4, 0.5)]
        ),
    ),
]
