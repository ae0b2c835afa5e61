"""fo.adam / fo.adamw: validation, state contents and torch's documented oddities."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import EPS32, U32, XLA32_ELEMENTARY_ULPS, check_bias_correction_premise

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.5, 0.999)), "Invalid beta parameter at index 0: 1.5"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    ],
)
@pytest.mark.parametrize("ours, theirs", [(fo.adam, torch.optim.Adam), (fo.adamw, torch.optim.AdamW)])
def test_validation_messages_match_torch(ours, theirs, kwargs, message):
    with pytest.raises(ValueError) as our_error:
        ours(**kwargs)
    with pytest.raises(ValueError) as their_error:
        theirs([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(our_error.value) == str(their_error.value) == message


def test_state_fields_follow_torch_keys():
    params = {"w": jnp.ones((2, 2))}
    state = fo.adam(amsgrad=True).init(params)
    torch_opt = torch.optim.Adam([torch.ones(2, 2, requires_grad=True)], amsgrad=True)
    p = torch_opt.param_groups[0]["params"][0]
    p.grad = torch.ones(2, 2)
    torch_opt.step()
    assert set(torch_opt.state[p]) == set(state._fields)
    assert fo.adam().init(params).max_exp_avg_sq is None


def test_eps_is_added_after_the_square_root():
    # One step from zero moments: update = -lr * g / (|g| + eps) exactly (bias corrections cancel).
    g, eps = 1e-4, 1e-4
    tx = fo.adam(lr=1.0, eps=eps)
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, g)}, tx.init(params), params)
    # Exact arithmetic on the float32 inputs (g and eps both fl32(1e-4)) gives −½, the float64 reference: each bias
    # correction −expm1(log1p(β − 1)) is exactly its lerp weight 1 − β (one double, rounded once), so they cancel.
    # Roundings, times their condition factor on the update (first order): (1 − β1)·g, 1 ÷ bc1, · m, ÷ denom: 1
    # each; + eps: 1; √v, √bc2, √v ÷ √bc2: ½ each (|g| is half of |g| + eps); g·g and (1 − β2)·g²: ¼ each (the √
    # halves them again): 7·U32. Premise (checked here): log1p and expm1 within k = XLA32_ELEMENTARY_ULPS ulps, an
    # ulp being ≤ EPS32 relative; log1p's error reaches bc = −expm1(y) times |y·e^y/expm1(y)| ≤ 1 (y < 0), so each
    # bc is within 2k·EPS32; bc1 enters with factor 1, bc2 with ¼ (√, then ½). eps inside the √: 0.98 off.
    for beta in (0.9, 0.999):
        check_bias_correction_premise(beta, 1)
    rtol = 7 * U32 + (2 + 2 / 4) * XLA32_ELEMENTARY_ULPS * EPS32
    np.testing.assert_allclose(updates["w"], [-g / (g + eps)], rtol=rtol)


def test_adamw_decay_multiplies_lr():
    tx = fo.adamw(lr=0.1, weight_decay=0.5)
    params = {"w": jnp.full(1, 2.0)}
    updates, _ = tx.update({"w": jnp.zeros(1)}, tx.init(params), params)
    # update = 2·fl32(1 − 0.05) − 2, product and difference exact (Sterbenz): off by 2·½ulp(0.95) = 2⁻²⁴, i.e.
    # 10·U32 relative to 0.1 (the difference cancels: 20× the factor's relative rounding).
    np.testing.assert_allclose(updates["w"], [-0.1 * 0.5 * 2.0], rtol=10 * U32)
