"""lr as a float32 tensor (``lr=torch.tensor(0.01)``, torch's default dtype), every optimizer.

With float64 parameters torch then evaluates the scalars that combine the lr with Python floats
as float32 tensors (``lr / bias_correction1``, ``1 - lr * weight_decay``, NAdam's step factors,
Adagrad's decayed lr, ASGD's ``eta``, Adafactor's ``alpha``); ours mirror that when given a
float32 array as ``lr`` (here ``np.float32``). Optimizers that only multiply by the lr (SGD,
RMSprop, Adadelta, RAdam's step, Muon's adjusted lr) widen it exactly on both sides.
"""

import numpy as np
import torch

import functional_optreg as fo
from parity.case import Case


def _matrices():
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(6, 5)), "b": rng.normal(size=(4, 7))}


def _case(name, ours, torch_class, lr=0.01, **kwargs):
    return Case(
        f"tensor_lr/{name}",
        ours,
        torch_class,
        kwargs,
        ours_kwargs=dict(lr=np.float32(lr)),
        torch_kwargs=dict(lr=torch.tensor(lr)),
        property_tests=False,
        **({"params": _matrices} if name.startswith("muon") else {}),
    )


CASES = [
    _case("adam+weight_decay", fo.adam, torch.optim.Adam, weight_decay=0.1),
    _case("adam+decoupled_weight_decay", fo.adam, torch.optim.Adam, weight_decay=0.1, decoupled_weight_decay=True),
    _case("adamw+amsgrad", fo.adamw, torch.optim.AdamW, weight_decay=0.1, amsgrad=True),
    _case("adamax+weight_decay", fo.adamax, torch.optim.Adamax, weight_decay=0.1),
    _case("nadam+weight_decay", fo.nadam, torch.optim.NAdam, weight_decay=0.1),
    _case("nadam+decoupled_weight_decay", fo.nadam, torch.optim.NAdam, weight_decay=0.1, decoupled_weight_decay=True),
    _case("radam+decoupled_weight_decay", fo.radam, torch.optim.RAdam, weight_decay=0.1, decoupled_weight_decay=True),
    _case("adagrad+lr_decay", fo.adagrad, torch.optim.Adagrad, lr=0.1, lr_decay=0.01),
    _case("asgd", fo.asgd, torch.optim.ASGD, lambd=1e-2, t0=10),
    _case("adafactor+weight_decay", fo.adafactor, torch.optim.Adafactor, weight_decay=0.1),
    _case("adafactor_lr_above_rho", fo.adafactor, torch.optim.Adafactor, lr=0.3, weight_decay=0.1),
    _case("sgd+momentum+weight_decay", fo.sgd, torch.optim.SGD, momentum=0.9, weight_decay=0.1),
    _case("rmsprop+centered+momentum", fo.rmsprop, torch.optim.RMSprop, momentum=0.9, centered=True),
    _case("adadelta+weight_decay", fo.adadelta, torch.optim.Adadelta, lr=1.0, weight_decay=0.1),
    _case("rprop", fo.rprop, torch.optim.Rprop),
    _case("muon+weight_decay", fo.muon, torch.optim.Muon, lr=0.02, weight_decay=0.1),
]
