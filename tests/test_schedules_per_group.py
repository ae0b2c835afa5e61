"""Per-group scheduler arguments (discriminative learning rates): torch's lists as one fo schedule
per group in ``fo.param_groups``, and through ``fo.from_torch``; float64, 50 steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as L

import functional_optreg as fo

RTOL = 1e-12
STEPS = 50
HAND_OVER = 10


def _grad(p):
    return 0.1 * p**3 + 0.5 * p - 0.2


def _decay(epoch):
    return 0.9**epoch


def _inverse(epoch):
    return 1.0 / (epoch + 1)


CASES = {
    "LambdaLR([f_a, f_b])": (
        lambda o: L.LambdaLR(o, [_decay, _inverse]),
        [fo.lambda_lr(0.1, _decay), fo.lambda_lr(0.05, _inverse)],
    ),
    "OneCycleLR(max_lr=[1e-2, 1e-1])": (
        lambda o: L.OneCycleLR(o, max_lr=[1e-2, 1e-1], total_steps=STEPS + 5, cycle_momentum=False),
        [
            fo.one_cycle_lr(1e-2, total_steps=STEPS + 5, cycle_momentum=False),
            fo.one_cycle_lr(1e-1, total_steps=STEPS + 5, cycle_momentum=False),
        ],
    ),
    "CyclicLR(base_lr=[...], max_lr=[...])": (
        lambda o: L.CyclicLR(o, base_lr=[1e-3, 1e-2], max_lr=[1e-2, 1e-1], step_size_up=3, cycle_momentum=False),
        [fo.cyclic_lr(1e-3, 1e-2, step_size_up=3), fo.cyclic_lr(1e-2, 1e-1, step_size_up=3)],
    ),
}


def _torch_run(make_scheduler):
    a = torch.nn.Parameter(torch.linspace(-1, 1, 3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.full((2,), 2.0, dtype=torch.float64))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1)
    scheduler = make_scheduler(optimizer)

    def step():
        for t in (a, b):
            t.grad = _grad(t.detach()).clone()
        optimizer.step()
        scheduler.step()

    return (a, b), optimizer, scheduler, step


def _relative(ours, tensors):
    return max(
        float(np.max(np.abs(np.asarray(o) - t.detach().numpy())) / np.max(np.abs(t.detach().numpy())))
        for o, t in zip(ours, tensors)
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_group_schedules_full_port_and_hand_over(name):
    make_scheduler, schedules = CASES[name]
    with jax.enable_x64(True):
        tensors, _, _, torch_step = _torch_run(make_scheduler)
        tx = fo.param_groups(fo.sgd, [{"params": "0", "lr": schedules[0]}, {"params": "1", "lr": schedules[1]}])
        params = {"0": jnp.linspace(-1, 1, 3), "1": jnp.full((2,), 2.0)}
        state = tx.init(params)
        update = jax.jit(lambda p, s: tx.update(jax.tree.map(_grad, p), s, p))
        errors = []
        for _ in range(STEPS):
            updates, state = update(params, state)
            params = optax.apply_updates(params, updates)
            torch_step()
            errors.append(_relative([params["0"], params["1"]], tensors))
        assert max(errors) <= RTOL, errors

        tensors, optimizer, scheduler, torch_step = _torch_run(make_scheduler)
        for _ in range(HAND_OVER):
            torch_step()
        bridged, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=1)
        params = [jnp.asarray(t.detach().numpy()) for t in tensors]
        update = jax.jit(lambda p, s: bridged.update([_grad(x) for x in p], s, p))
        errors = []
        for _ in range(HAND_OVER, STEPS):
            updates, state = update(params, state)
            params = optax.apply_updates(params, updates)
            torch_step()
            errors.append(_relative(params, tensors))
        assert max(errors) <= RTOL, errors


def test_a_list_given_to_one_schedule_points_to_param_groups():
    with pytest.raises(ValueError, match="one schedule per group"):
        fo.lambda_lr(0.1, [_decay, _inverse])
