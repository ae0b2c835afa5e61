"""fo.adadelta: validation, state contents and where eps goes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import gamma32
from state_trajectories import assert_close_to_torch, run_both

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(rho=-0.1), "Invalid rho value: -0.1"),
        (dict(rho=1.1), "Invalid rho value: 1.1"),
        (dict(eps=-1e-6), "Invalid epsilon value: -1e-06"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(rho=2.0, eps=-1.0), "Invalid rho value: 2.0"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.adadelta(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adadelta([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_rho_bounds_are_accepted_like_torch(rho):
    torch.optim.Adadelta([torch.zeros(1, requires_grad=True)], rho=rho)
    fo.adadelta(rho=rho)


@pytest.mark.parametrize("kwargs", [dict(), dict(lr=0.5, rho=0.5, eps=1e-2), dict(weight_decay=0.2, maximize=True)])
def test_state_matches_torch_key_by_key(kwargs):
    ours, theirs, params, torch_params = run_both(torch.optim.Adadelta, fo.adadelta, kwargs)
    for name, torch_state in theirs.items():
        assert set(ours) == set(torch_state)
        for key in ("square_avg", "acc_delta"):
            assert_close_to_torch(ours[key][name], torch_state[key], f"{key} of {name}")
        assert int(ours["step"]) == int(torch_state["step"])
        assert_close_to_torch(params[name], torch_params[name], name)


def test_eps_is_inside_both_square_roots():
    # One step from zeros with rho = 0: delta = sqrt(eps) / sqrt(g² + eps) · g.
    g, eps = 0.03, 1e-3
    tx = fo.adadelta(lr=1.0, rho=0.0, eps=eps)
    params = {"w": jnp.zeros(1)}
    updates, state = tx.update({"w": jnp.full(1, g)}, tx.init(params), params)
    delta = np.sqrt(eps) / np.sqrt(g * g + eps) * g
    # float32 roundings, each of condition ≤ 1 (no cancellation): g, eps, g·g, + eps, two √, ÷, ·g; acc_delta squares it
    # (2·7) and rounds once more.
    np.testing.assert_allclose(updates["w"], [-delta], rtol=gamma32(7))
    np.testing.assert_allclose(state.acc_delta["w"], [delta * delta], rtol=gamma32(15))


def test_lr_scales_the_step_but_not_acc_delta():
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.array([0.4, -1.5])}
    one = fo.adadelta(lr=1.0)
    tenth = fo.adadelta(lr=0.1)
    u1, s1 = one.update(grads, one.init(params), params)
    u2, s2 = tenth.update(grads, tenth.init(params), params)
    # Both sides are the one float32 product fl(0.1f · delta) of the same delta (lr = 1 is exact).
    np.testing.assert_array_equal(u2["w"], 0.1 * u1["w"])
    np.testing.assert_array_equal(s1.acc_delta["w"], s2.acc_delta["w"])


def test_rho_one_is_plain_sgd():
    tx = fo.adadelta(lr=0.05, rho=1.0)
    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    for g in ([0.3, -0.2], [1.5, 0.1]):
        updates, state = tx.update({"w": jnp.array(g)}, state, params)
        # rho = 1 keeps both accumulators at 0, so √(0 + eps)/√(0 + eps) = 1 exactly; left: float32 g, 0.05 and their
        # product, 3 roundings.
        np.testing.assert_allclose(updates["w"], -0.05 * np.array(g), rtol=gamma32(3))


def test_weight_decay_needs_params():
    tx = fo.adadelta(weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="adadelta needs the current parameters for weight_decay"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_implementation_flags_have_no_effect():
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.7])}
    plain = fo.adadelta()
    flagged = fo.adadelta(foreach=True, capturable=True, differentiable=True)
    a, _ = plain.update(grads, plain.init(params), params)
    b, _ = flagged.update(grads, flagged.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])
