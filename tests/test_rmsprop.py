"""fo.rmsprop: validation, state contents and the rules the parity catalog relies on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from state_trajectories import assert_close_to_torch, run_both

import functional_optreg as fo


def test_positional_arguments_follow_torch_order():
    # lr, alpha, eps, weight_decay, momentum, centered: all positional in torch.
    ours = fo.rmsprop(0.1, 0.5, 1e-3, 0.0, 0.9, True)
    reference = fo.rmsprop(lr=0.1, alpha=0.5, eps=1e-3, momentum=0.9, centered=True)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.3, 0.4])}
    a, _ = ours.update(grads, ours.init(params), params)
    b, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (dict(momentum=-0.5), "Invalid momentum value: -0.5"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(alpha=-0.99), "Invalid alpha value: -0.99"),
        (dict(lr=-1.0, alpha=-1.0), "Invalid learning rate: -1.0"),
        (dict(momentum=-1.0, alpha=-1.0), "Invalid momentum value: -1.0"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.rmsprop(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.RMSprop([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_alpha_above_one_is_accepted_like_torch():
    torch.optim.RMSprop([torch.zeros(1, requires_grad=True)], alpha=1.5)
    fo.rmsprop(alpha=1.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(momentum=0.9),
        dict(centered=True),
        dict(centered=True, momentum=0.5, weight_decay=0.1, maximize=True),
    ],
)
def test_state_matches_torch_key_by_key(kwargs):
    ours, theirs, params, torch_params = run_both(torch.optim.RMSprop, fo.rmsprop, kwargs, steps=4)
    for name, torch_state in theirs.items():
        kept = {key for key, value in ours.items() if value is not None}
        assert kept == set(torch_state)
        for key in kept - {"step"}:
            assert_close_to_torch(ours[key][name], torch_state[key], f"{key} of {name}")
        assert int(ours["step"]) == int(torch_state["step"])
        assert_close_to_torch(params[name], torch_params[name], name)


def test_optional_buffers_are_none_like_torch():
    state = fo.rmsprop().init({"w": jnp.ones(2)})
    assert state.momentum_buffer is None and state.grad_avg is None
    state = fo.rmsprop(momentum=0.5, centered=True).init({"w": jnp.ones(2)})
    assert state.momentum_buffer["w"].shape == (2,) and state.grad_avg["w"].shape == (2,)


def test_eps_is_added_after_the_square_root():
    g, eps, alpha = 1e-4, 1e-4, 0.0
    tx = fo.rmsprop(lr=1.0, alpha=alpha, eps=eps)
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, g)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-g / (g + eps)], rtol=1e-6)


def test_centered_subtracts_the_squared_mean():
    # alpha = 0.5, one step from zeros: v = g²/2, mean = g/2, v − mean² = g²/4.
    tx = fo.rmsprop(lr=1.0, alpha=0.5, eps=0.0, centered=True)
    params = {"w": jnp.zeros(1)}
    updates, state = tx.update({"w": jnp.full(1, 4.0)}, tx.init(params), params)
    np.testing.assert_allclose(state.square_avg["w"], [8.0])
    np.testing.assert_allclose(state.grad_avg["w"], [2.0])
    np.testing.assert_allclose(updates["w"], [-4.0 / np.sqrt(8.0 - 4.0)])


def test_weight_decay_needs_params():
    tx = fo.rmsprop(weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="rmsprop needs the current parameters for weight_decay"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_implementation_flags_have_no_effect():
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.7])}
    plain = fo.rmsprop(lr=0.1, momentum=0.9)
    flagged = fo.rmsprop(lr=0.1, momentum=0.9, capturable=True, foreach=True, differentiable=True)
    a, _ = plain.update(grads, plain.init(params), params)
    b, _ = flagged.update(grads, flagged.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])


def test_inject_hyperparams_with_zero_momentum_under_jit():
    # init sees momentum = 0 (no buffer); the jitted update sees it traced.
    tx = optax.inject_hyperparams(fo.rmsprop)(lr=0.1, momentum=0.0)
    params = {"w": jnp.array([0.5, -1.0])}
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)({"w": jnp.array([0.2, 0.7])}, state, params)
    expected, _ = fo.rmsprop(lr=0.1).update({"w": jnp.array([0.2, 0.7])}, fo.rmsprop().init(params))
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


def test_momentum_schedule_is_read_per_step():
    # alpha = 0 makes g / (sqrt(v) + 0) = sign(g). The update with count c reads momentum(c):
    # buffers 0·0 + 1 = 1, then 0.5·1 − 1 = −0.5 (reading one step late would give −1).
    momentum = lambda count: jnp.where(count == 1, 0.5, 0.0)  # noqa: E731
    tx = fo.rmsprop(lr=1.0, alpha=0.0, eps=0.0, momentum=momentum)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.full(1, 3.0)}, state, params)
    np.testing.assert_allclose(state.momentum_buffer["w"], [1.0])
    updates, state = tx.update({"w": jnp.full(1, -2.0)}, state, params)
    np.testing.assert_allclose(state.momentum_buffer["w"], [-0.5])
    np.testing.assert_allclose(updates["w"], [0.5])
