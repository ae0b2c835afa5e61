"""fo.accumulate_gradients against torch's ``(loss / k).backward()`` accumulation, float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo

RTOL = 1e-12
"""docs/parity.md's float64 bound, per optimizer step."""


def _data(steps, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(steps, k, 4, 3)), rng.normal(size=(steps, k, 4, 2))


def _loss(w, b, x, y):
    return ((x @ w + b - y) ** 2).mean()


def _run(torch_optimizer, ours, k, steps=40, clip=None):
    """Per-step relative errors of ours against torch over ``steps`` optimizer steps."""
    xs, ys = _data(steps, k)
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(3, 2)), rng.normal(size=2)
    with jax.enable_x64(True):
        w = torch.nn.Parameter(torch.tensor(w0))
        b = torch.nn.Parameter(torch.tensor(b0))
        optimizer = torch_optimizer([w, b])
        params = (jnp.asarray(w0), jnp.asarray(b0))
        state = ours.init(params)
        grad = jax.jit(jax.grad(lambda p, x, y: _loss(p[0], p[1], x, y) / k))

        @jax.jit
        def micro(params, state, x, y):
            updates, state = ours.update(grad(params, x, y), state, params)
            return optax.apply_updates(params, updates), state

        errors = []
        for step in range(steps):
            for m in range(k):
                x, y = torch.tensor(xs[step, m]), torch.tensor(ys[step, m])
                (_loss(w, b, x, y) / k).backward()
                params, state = micro(params, state, jnp.asarray(xs[step, m]), jnp.asarray(ys[step, m]))
            if clip is not None:
                torch.nn.utils.clip_grad_norm_([w, b], clip)
            optimizer.step()
            optimizer.zero_grad()
            errors.append(
                max(
                    float(np.max(np.abs(np.asarray(o) - t.detach().numpy())) / np.max(np.abs(t.detach().numpy())))
                    for o, t in zip(params, (w, b))
                )
            )
        return errors


def test_adam_accumulation_matches_torch_step_by_step():
    """The issue's case: Adam(lr 1e-2, wd 1e-2), k = 2, 40 steps."""
    errors = _run(
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
        fo.accumulate_gradients(fo.adam(lr=1e-2, weight_decay=1e-2), every_k=2),
        k=2,
    )
    assert max(errors) <= RTOL, errors


def test_clipping_after_accumulation_as_nanogpt():
    """AdamW(betas 0.9, 0.95, wd 0.1) with clip_grad_norm_(1.0) after 4 micro-batches."""
    errors = _run(
        lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1),
        fo.accumulate_gradients(
            optax.chain(fo.clip_grad_norm(1.0), fo.adamw(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)), every_k=4
        ),
        k=4,
        clip=1.0,
    )
    assert max(errors) <= RTOL, errors


def test_other_micro_steps_leave_params_and_inner_state_alone():
    tx = fo.accumulate_gradients(fo.sgd(lr=1.0, momentum=0.9), every_k=3)
    params = jnp.ones(2)
    state = tx.init(params)
    for g in (1.0, 2.0):
        updates, state = tx.update(jnp.full(2, g), state, params)
        np.testing.assert_array_equal(updates, 0.0)
        assert int(state.inner_state.step) == 0
    updates, state = tx.update(jnp.full(2, 3.0), state, params)
    np.testing.assert_array_equal(updates, -6.0)
    assert int(state.inner_state.step) == 1 and int(state.micro_step) == 0
    np.testing.assert_array_equal(state.grads, 0.0)


@pytest.mark.parametrize("every_k", [0, -1, 1.5, True])
def test_every_k_is_checked(every_k):
    with pytest.raises(ValueError, match="every_k must be a positive integer"):
        fo.accumulate_gradients(fo.sgd(), every_k)
