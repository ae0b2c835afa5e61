"""fo.sgd and fo.ema_momentum: validation, state and the rules the parity catalog relies on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import gamma32

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(momentum=-0.5), "Invalid momentum value: -0.5"),
        (dict(weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
        (dict(momentum=0.0, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (dict(momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.sgd(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_torch_implementation_flags_are_accepted():
    fo.sgd(0.1, foreach=True, differentiable=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        fo.sgd(0.1, foreach=True, fused=True)


def test_first_momentum_buffer_is_the_raw_gradient():
    tx = fo.sgd(lr=1.0, momentum=0.9, dampening=0.5)
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, -2.0])}
    updates, state = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(state.momentum_buffer["w"], grads["w"])
    updates, state = tx.update(grads, state, params)
    # float32: 0.9 and the sum 0.9·g + 0.5·g (the products by g = 1, −2 are exact): 2 roundings of 1.4·g.
    np.testing.assert_allclose(state.momentum_buffer["w"], 1.4 * np.array([1.0, -2.0]), rtol=gamma32(2))


def test_no_momentum_keeps_no_buffer():
    state = fo.sgd(0.1).init({"w": jnp.ones(2)})
    assert state.momentum_buffer is None


def test_weight_decay_needs_params():
    tx = fo.sgd(0.1, weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(params, tx.init(params))


def test_inject_hyperparams_without_momentum_runs_under_jit():
    tx = optax.inject_hyperparams(fo.sgd)(lr=0.1)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], -np.float32(0.1) * np.ones(2))  # the injected float32 lr · 1


def test_traced_hyperparameters_skip_validation():
    def loss_after_step(lr):
        tx = fo.sgd(lr=lr, momentum=0.5)
        params = jnp.ones(3)
        updates, _ = tx.update(2 * params, tx.init(params), params)
        return jnp.sum(optax.apply_updates(params, updates) ** 2)

    # d/dlr sum((1 - 2 lr)^2) = sum(-4 (1 - 2 lr)) = -4 * 3 * (1 - 2 * 0.1)
    # float32: 0.1 (condition 0.25 in 1 − 0.2), 1 − 2·lr, and the sum of 3 equal terms; the rest scales by powers of 2.
    np.testing.assert_allclose(jax.grad(loss_after_step)(0.1), -4 * 3 * 0.8, rtol=gamma32(3))


def test_ema_momentum_starts_from_zero():
    tx = fo.ema_momentum(lr=1.0, beta=0.9)
    grads = {"w": jnp.array([1.0])}
    updates, state = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(updates["w"], [-0.1], rtol=gamma32(1))  # 1 − 0.9 stored in float32
    updates, state = tx.update(grads, state)
    # float32: 0.9, 0.1, their product, the same-sign sum.
    np.testing.assert_allclose(updates["w"], [-(0.9 * 0.1 + 0.1)], rtol=gamma32(4))


def test_ema_momentum_validates_beta():
    with pytest.raises(ValueError, match="Invalid beta value: 1.0"):
        fo.ema_momentum(lr=0.1, beta=1.0)


def test_inject_hyperparams_with_nesterov_runs_under_jit():
    tx = optax.inject_hyperparams(fo.sgd)(lr=0.1, momentum=0.9, nesterov=True)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)
    # float32: 0.9, 1 + 0.9 (nesterov's g + momentum·buf, buf = g = 1), 0.1, the product: 4 roundings.
    np.testing.assert_allclose(updates["w"], [-0.1 * 1.9, -0.1 * 1.9], rtol=gamma32(4))
