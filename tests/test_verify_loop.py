"""compare_loop: a user-written torch loop (clip, per-epoch scheduler) next to its JAX port."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo
from functional_optreg import verify
from functional_optreg.verify_loop import compare_loop

EPOCH = 5


def _grad(p):
    return 0.1 * p**3 + 0.5 * p - 0.2


def _torch_loop(lr_steps_per_epoch=EPOCH):
    w = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 6, dtype=torch.float64).reshape(2, 3))
    optimizer = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

    def step(it):
        optimizer.zero_grad()
        w.grad = _grad(w.detach()).clone()
        norm = torch.nn.utils.clip_grad_norm_([w], 1.0)
        optimizer.step()
        if (it + 1) % EPOCH == 0:
            scheduler.step()
        return norm

    return step, [w]


def _jax_loop(steps_per_epoch):
    tx = optax.chain(
        fo.clip_grad_norm(1.0), fo.sgd(lr=fo.step_lr(0.1, 2, 0.5, steps_per_epoch=steps_per_epoch), momentum=0.9)
    )

    @jax.jit
    def step(params, state, it):
        updates, state = tx.update(_grad(params), state, params)
        return optax.apply_updates(params, updates), state, state[0].total_norm

    with jax.enable_x64(True):
        params = jnp.linspace(-1.0, 2.0, 6).reshape(2, 3)
        return step, params, tx.init(params)


def test_a_faithful_port_passes_and_reports_losses():
    torch_step, tensors = _torch_loop()
    seen = []

    def recording_step(it):
        seen.append(tensors[0].detach().numpy().copy())
        return torch_step(it)

    step, params, state = _jax_loop(EPOCH)
    report = compare_loop(recording_step, tensors, step, params, state, steps=60, name="sgd+clip+StepLR/epoch")
    assert report.passed, str(report)
    assert report.steps == 60 and report.max_relative_error <= verify.FLOAT64_RTOL
    assert report.losses.shape == (60, 2)  # here the "loss" is clip_grad_norm_'s total norm
    # The norm of g(p) = 0.1p³ + 0.5p − 0.2, whose elements can cancel: the params agree to
    # FLOAT64_RTOL·max|p| (checked above), which moves g by ≤ |g'(p)| = 0.3p² + 0.5 times that,
    # and g's own rounding is ≤ 3u of its terms' magnitudes; ‖Δg‖ bounds the norms' difference.
    for (theirs, ours), p in zip(report.losses, seen):
        terms = (0.3 * p**2 + 0.5) * np.max(np.abs(p)) + 0.1 * np.abs(p) ** 3 + 0.5 * np.abs(p) + 0.2
        assert abs(ours - theirs) <= verify.FLOAT64_RTOL * np.linalg.norm(terms), (ours, theirs)


def test_a_scheduler_stepped_per_update_is_caught_where_it_diverges():
    torch_step, tensors = _torch_loop()
    step, params, state = _jax_loop(1)
    report = compare_loop(torch_step, tensors, step, params, state, steps=60)
    assert not report.passed
    assert report.first_failure == 3  # the per-update StepLR halves the lr after 2 updates


def test_mismatched_parameters_are_named():
    torch_step, tensors = _torch_loop()
    step, params, state = _jax_loop(EPOCH)
    with pytest.raises(ValueError, match=r"parameter 0: the JAX leaf has shape \(6,\), the torch tensor \(2, 3\)"):
        compare_loop(torch_step, tensors, lambda p, s, i: (p.reshape(6), s), params, state, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        compare_loop(torch_step, tensors, step, params, state, steps=0)
