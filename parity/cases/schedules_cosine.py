"""CosineAnnealingLR (past T_max, where it climbs back) and CosineAnnealingWarmRestarts."""

import torch

import functional_optreg as fo
from parity.cases.schedules_basic import ADAM_LR, SGD_LR, adam_case, per_epoch, sgd_case

S = torch.optim.lr_scheduler

CASES = [
    sgd_case(
        "cosine_annealing_lr/sgd_past_t_max",
        fo.cosine_annealing_lr(SGD_LR, 12),
        lambda o: S.CosineAnnealingLR(o, 12),
        steps=80,
    ),
    adam_case(
        "cosine_annealing_lr/adam_eta_min",
        fo.cosine_annealing_lr(ADAM_LR, 9, eta_min=1e-3),
        lambda o: S.CosineAnnealingLR(o, 9, eta_min=1e-3),
        weight_decay=0.01,
        property_tests=True,
    ),
    sgd_case(
        "cosine_annealing_lr/sgd_per_epoch",
        fo.cosine_annealing_lr(SGD_LR, 5, eta_min=0.005, steps_per_epoch=3),
        per_epoch(lambda o: S.CosineAnnealingLR(o, 5, eta_min=0.005), 3),
        steps=75,
    ),
    sgd_case(
        "cosine_annealing_warm_restarts/sgd_t_mult_1",
        fo.cosine_annealing_warm_restarts(SGD_LR, 7),
        lambda o: S.CosineAnnealingWarmRestarts(o, 7),
    ),
    adam_case(
        "cosine_annealing_warm_restarts/adam_t_mult_2",
        fo.cosine_annealing_warm_restarts(ADAM_LR, 3, T_mult=2, eta_min=1e-3),
        lambda o: S.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=1e-3),
        steps=70,
    ),
]
