"""CyclicLR and OneCycleLR, with cycle_momentum driving SGD's momentum and Adam's beta1.

Torch's schedulers rewrite ``momentum`` / ``betas[0]`` of the param group at every step; ours give
fo.sgd / fo.adam the momentum schedule built from the same arguments.
"""

import torch

import functional_optreg as fo
from parity.case import Case

S = torch.optim.lr_scheduler
STEPS = 60


def cyclic_sgd(name, steps=STEPS, sgd_kwargs=None, torch_momentum=0.5, **kw):
    """fo.sgd(lr=cyclic_lr, momentum=cyclic_momentum) against SGD + CyclicLR(**kw).

    With ``torch_momentum=0`` torch's SGD is built without momentum and CyclicLR switches it on.
    """
    ours = dict(lr=fo.cyclic_lr(**kw))
    shared = dict(sgd_kwargs or {})
    if kw.get("cycle_momentum", True):
        ours["momentum"] = fo.cyclic_momentum(**kw)
        torch_kwargs = dict(lr=0.5, momentum=torch_momentum)
    else:
        shared["momentum"] = torch_momentum
        torch_kwargs = dict(lr=0.5)
    return Case(
        name,
        fo.sgd,
        torch.optim.SGD,
        shared,
        ours_kwargs=ours,
        torch_kwargs=torch_kwargs,
        torch_scheduler=lambda o: S.CyclicLR(o, **kw),
        steps=steps,
        property_tests=False,
    )


def cyclic_adam(name, steps=STEPS, adam_kwargs=None, **kw):
    """fo.adam(lr=cyclic_lr, betas=(cyclic_momentum, 0.999)) against Adam + CyclicLR(**kw)."""
    return Case(
        name,
        fo.adam,
        torch.optim.Adam,
        dict(adam_kwargs or {}),
        ours_kwargs=dict(lr=fo.cyclic_lr(**kw), betas=(fo.cyclic_momentum(**kw), 0.999)),
        torch_kwargs=dict(lr=0.5),
        torch_scheduler=lambda o: S.CyclicLR(o, **kw),
        steps=steps,
        property_tests=name.endswith("beta1"),
    )


def one_cycle_sgd(name, sgd_kwargs=None, torch_momentum=0.9, **kw):
    """fo.sgd with the OneCycleLR lr and momentum; total_steps is the run's length.

    With ``torch_momentum=0`` torch's SGD is built without momentum and OneCycleLR switches it on.
    """
    ours = dict(lr=fo.one_cycle_lr(total_steps=STEPS, **kw))
    shared = dict(sgd_kwargs or {})
    if kw.get("cycle_momentum", True):
        ours["momentum"] = fo.one_cycle_momentum(total_steps=STEPS, **kw)
        torch_kwargs = dict(lr=0.5, momentum=torch_momentum)
    else:
        shared["momentum"] = torch_momentum
        torch_kwargs = dict(lr=0.5)
    return Case(
        name,
        fo.sgd,
        torch.optim.SGD,
        shared,
        ours_kwargs=ours,
        torch_kwargs=torch_kwargs,
        torch_scheduler=lambda o: S.OneCycleLR(o, total_steps=STEPS, **kw),
        steps=STEPS,
        property_tests=False,
    )


def one_cycle_adam(name, adam_kwargs=None, **kw):
    """fo.adam with the OneCycleLR lr and beta1."""
    return Case(
        name,
        fo.adam,
        torch.optim.Adam,
        dict(adam_kwargs or {}),
        ours_kwargs=dict(
            lr=fo.one_cycle_lr(total_steps=STEPS, **kw),
            betas=(fo.one_cycle_momentum(total_steps=STEPS, **kw), 0.999),
        ),
        torch_kwargs=dict(lr=0.5),
        torch_scheduler=lambda o: S.OneCycleLR(o, total_steps=STEPS, **kw),
        steps=STEPS,
        property_tests=name == "one_cycle_lr/adam_cos_beta1",
    )


CASES = [
    cyclic_sgd(
        "cyclic_lr/sgd_triangular_momentum_switched_on",
        base_lr=0.01,
        max_lr=0.1,
        step_size_up=8,
        torch_momentum=0,
    ),
    cyclic_sgd(
        "cyclic_lr/sgd_triangular2_asymmetric",
        base_lr=0.005,
        max_lr=0.08,
        step_size_up=5,
        step_size_down=9,
        mode="triangular2",
        base_momentum=0.7,
        max_momentum=0.95,
        sgd_kwargs=dict(nesterov=True),
    ),
    cyclic_adam(
        "cyclic_lr/adam_exp_range_beta1",
        base_lr=0.002,
        max_lr=0.03,
        step_size_up=6,
        step_size_down=4,
        mode="exp_range",
        gamma=0.98,
    ),
    cyclic_adam(
        "cyclic_lr/adam_scale_fn_iterations",
        base_lr=0.002,
        max_lr=0.02,
        step_size_up=7,
        scale_fn=lambda x: 1.0 / (1.0 + 0.02 * x),
        scale_mode="iterations",
        base_momentum=0.8,
        max_momentum=0.9,
        adam_kwargs=dict(weight_decay=0.01),
    ),
    cyclic_sgd(
        "cyclic_lr/sgd_scale_fn_cycle_no_momentum_cycling",
        base_lr=0.01,
        max_lr=0.1,
        step_size_up=4,
        step_size_down=6,
        scale_fn=lambda c: 0.8**c,
        cycle_momentum=False,
    ),
    one_cycle_sgd("one_cycle_lr/sgd_cos_momentum_switched_on", max_lr=0.1, torch_momentum=0),
    one_cycle_adam("one_cycle_lr/adam_cos_beta1", max_lr=0.03, pct_start=0.25),
    one_cycle_sgd(
        "one_cycle_lr/sgd_linear_three_phase",
        max_lr=0.2,
        anneal_strategy="linear",
        three_phase=True,
        div_factor=10.0,
        final_div_factor=100.0,
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    one_cycle_adam(
        "one_cycle_lr/adam_three_phase_cos_beta1",
        max_lr=0.05,
        three_phase=True,
        pct_start=0.35,
        adam_kwargs=dict(amsgrad=True),
    ),
    one_cycle_sgd(
        "one_cycle_lr/sgd_linear_no_momentum_cycling",
        max_lr=0.1,
        anneal_strategy="linear",
        cycle_momentum=False,
        div_factor=5.0,
        final_div_factor=20.0,
    ),
]
