"""fo.adamax: validation, state contents and the infinity-norm rule."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import EPS32, U32, XLA32_ELEMENTARY_ULPS, check_bias_correction_premise
from state_trajectories import assert_close_to_torch, run_both

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(eps=-1.0, betas=(2.0, 0.9)), "Invalid epsilon value: -1.0"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.adamax(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adamax([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(lr=0.05, betas=(0.3, 0.5), eps=0.5), dict(weight_decay=0.2, maximize=True)],
)
def test_state_matches_torch_key_by_key(kwargs):
    ours, theirs, params, torch_params = run_both(torch.optim.Adamax, fo.adamax, kwargs)
    for name, torch_state in theirs.items():
        assert set(ours) == set(torch_state)
        for key in ("exp_avg", "exp_inf"):
            assert_close_to_torch(ours[key][name], torch_state[key], f"{key} of {name}")
        assert int(ours["step"]) == int(torch_state["step"])
        assert_close_to_torch(params[name], torch_params[name], name)


def test_eps_enters_the_maximum_and_decays_with_beta2():
    tx = fo.adamax(lr=1.0, betas=(0.0, 0.5), eps=1.0)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.full(1, 3.0)}, state, params)
    # Dyadic operands throughout and β1 = 0 makes the bias correction −expm1(log1p(−1)) = 1 exactly: every value is
    # exact in float32.
    np.testing.assert_array_equal(state.exp_inf["w"], [3.0 + 1.0])
    # 0.5 · 4 = 2 beats |0.5| + 1 = 1.5: the remembered eps keeps decaying with beta2.
    updates, state = tx.update({"w": jnp.full(1, 0.5)}, state, params)
    np.testing.assert_array_equal(state.exp_inf["w"], [2.0])
    np.testing.assert_array_equal(updates["w"], [-0.5 / 2.0])


def test_only_the_first_moment_is_bias_corrected():
    # First step: exp_avg = (1 − β1)·g, corrected back to g; exp_inf = |g| + eps, uncorrected.
    g, eps = 2.0, 0.5
    tx = fo.adamax(lr=0.1, betas=(0.9, 0.999), eps=eps)
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, g)}, tx.init(params), params)
    # Exact arithmetic on the float32 inputs gives −0.1·g/(g + eps): bc1 = −expm1(log1p(0.9 − 1)) is exactly the
    # lerp weight 1 − 0.9 (one double, rounded once), so it cancels; exp_avg = (1 − β1)·2 and 2 + 0.5 are exact.
    # Roundings, each with condition factor 1 on the update (first order): fl32(0.1), 0.1 ÷ bc1, · exp_avg, ÷ 2.5:
    # 4·U32. Premise (checked here): log1p and expm1 within k = XLA32_ELEMENTARY_ULPS ulps (an ulp ≤ EPS32 relative);
    # log1p's error reaches bc1 = −expm1(y) times |y·e^y/expm1(y)| = 0.95 ≤ 1: bc1 within 2k·EPS32, factor 1.
    check_bias_correction_premise(0.9, 1)
    rtol = 4 * U32 + 2 * XLA32_ELEMENTARY_ULPS * EPS32
    np.testing.assert_allclose(updates["w"], [-0.1 * g / (g + eps)], rtol=rtol)


def test_beta_schedules_are_read_per_step():
    tx = fo.adamax(lr=1.0, betas=(lambda count: jnp.where(count == 0, 0.0, 0.5), 0.0), eps=0.0)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.full(1, 4.0)}, state, params)
    np.testing.assert_array_equal(state.exp_avg["w"], [4.0])  # β1 = 0: a copy of g
    updates, state = tx.update({"w": jnp.full(1, 2.0)}, state, params)
    # exp_avg = lerp(4, 2, 0.5) = 3, bias correction 1 − 0.5² = 0.75, exp_inf = 2.
    np.testing.assert_array_equal(state.exp_avg["w"], [3.0])  # weight 0.5 on dyadic values: exact
    # The one inexact input is bc1 = −expm1(2·log1p(−0.5)), exactly 0.75; then 1 ÷ bc1 and · 3 round (÷ 2 is exact):
    # 2·U32, factor 1 each (first order). Premise (checked here): log1p and expm1 within k = XLA32_ELEMENTARY_ULPS ulps
    # (an ulp ≤ EPS32 relative); log1p's error reaches bc1 times |y·e^y/expm1(y)| = 2·ln 2·¼/¾ = 0.46 ≤ ½ (y = −2·ln 2,
    # the doubling exact): bc1 within (1 + ½)·k·EPS32, factor 1.
    check_bias_correction_premise(0.5, 2)
    rtol = 2 * U32 + (1 + 1 / 2) * XLA32_ELEMENTARY_ULPS * EPS32
    np.testing.assert_allclose(updates["w"], [-(1.0 / 0.75) * 3.0 / 2.0], rtol=rtol)


def test_weight_decay_needs_params():
    tx = fo.adamax(weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="adamax needs the current parameters for weight_decay"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_implementation_flags_have_no_effect():
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.7])}
    plain = fo.adamax()
    flagged = fo.adamax(foreach=True, capturable=True, differentiable=True)
    a, _ = plain.update(grads, plain.init(params), params)
    b, _ = flagged.update(grads, flagged.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])
