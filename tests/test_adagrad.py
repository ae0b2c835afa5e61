"""fo.adagrad: validation, state contents and torch's lr_decay / accumulator rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import gamma32, gamma64
from state_trajectories import assert_close_to_torch, run_both

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(lr_decay=-0.5), "Invalid lr_decay value: -0.5"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(initial_accumulator_value=-1.0), "Invalid initial_accumulator_value value: -1.0"),
        (dict(eps=-1e-10), "Invalid epsilon value: -1e-10"),
        (dict(lr_decay=-1.0, eps=-1.0), "Invalid lr_decay value: -1.0"),
        (
            dict(initial_accumulator_value=-1.0, eps=-1.0),
            "Invalid initial_accumulator_value value: -1.0",
        ),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.adagrad(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adagrad([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_sum_starts_at_initial_accumulator_value():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)}
    state = fo.adagrad(initial_accumulator_value=0.25).init(params)
    np.testing.assert_array_equal(state.sum["w"], np.full((2, 3), 0.25, np.float32))
    assert state.sum["b"].dtype == jnp.bfloat16
    assert set(state._fields) == {"step", "sum"}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(lr=0.1, lr_decay=0.3, initial_accumulator_value=0.5),
        dict(lr=0.1, weight_decay=0.2, eps=0.1, maximize=True),
    ],
)
def test_state_matches_torch_key_by_key(kwargs):
    ours, theirs, params, torch_params = run_both(torch.optim.Adagrad, fo.adagrad, kwargs)
    for name, torch_state in theirs.items():
        assert set(ours) == set(torch_state)
        assert_close_to_torch(ours["sum"][name], torch_state["sum"], f"sum of {name}")
        assert int(ours["step"]) == int(torch_state["step"])
        assert_close_to_torch(params[name], torch_params[name], name)


def test_lr_decay_divides_by_one_plus_previous_steps():
    # sum_t = 1e12 + t·g², so update_t · sqrt(sum_t) = −lr · g / (1 + (t − 1)·d).
    lr, decay = 1.0, 0.5
    tx = fo.adagrad(lr=lr, lr_decay=decay, initial_accumulator_value=1e12, eps=0.0)
    with jax.enable_x64(True):
        params = {"w": jnp.zeros(1)}
        state = tx.init(params)
        for t in range(1, 5):
            updates, state = tx.update({"w": jnp.full(1, 1e6)}, state, params)
            expected = -lr * 1e6 / (1 + (t - 1) * decay)
            scaled = updates["w"] * np.sqrt(1e12 + t * 1e12)
            # Sums of integers ≤ 5e12 are exact; float64 roundings: lr/(1 + ·), √, ·g, ÷ (ours), √, · (scaled),
            # expected: 7, no cancellation.
            np.testing.assert_allclose(scaled, [expected], rtol=gamma64(7))


def test_lr_decay_composes_with_a_schedule():
    schedule = lambda count: 0.1 * (count + 1.0)  # noqa: E731
    tx = fo.adagrad(lr=schedule, lr_decay=1.0, initial_accumulator_value=1.0, eps=0.0)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.zeros(1)}, state, params)
    updates, _ = tx.update({"w": jnp.ones(1)}, state, params)
    # Step 2: lr = 0.2 (schedule at count 1), decayed by 1 + 1·1, sum = 1 + 0 + 1.
    # Halvings and sums of 1s are exact: float32 roundings of 0.1, √2 and the division, 3 in all.
    np.testing.assert_allclose(updates["w"], [-0.2 / 2.0 / np.sqrt(2.0)], rtol=gamma32(3))


def test_eps_is_added_after_the_square_root():
    g, eps = 1e-5, 1e-5
    tx = fo.adagrad(lr=1.0, eps=eps)
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, g)}, tx.init(params), params)
    # float32 roundings, none cancelling (g + eps adds two positives): g, eps, g·g, √, + eps, ÷.
    np.testing.assert_allclose(updates["w"], [-g / (g + eps)], rtol=gamma32(6))


def test_weight_decay_needs_params():
    tx = fo.adagrad(weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="adagrad needs the current parameters for weight_decay"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_implementation_flags_have_no_effect():
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.7])}
    plain = fo.adagrad(lr=0.1, lr_decay=0.1)
    for flags in (dict(foreach=True), dict(fused=True), dict(differentiable=True)):
        flagged = fo.adagrad(lr=0.1, lr_decay=0.1, **flags)
        a, _ = plain.update(grads, plain.init(params), params)
        b, _ = flagged.update(grads, flagged.init(params), params)
        np.testing.assert_array_equal(a["w"], b["w"])


def test_inject_hyperparams_under_jit():
    tx = optax.inject_hyperparams(fo.adagrad)(lr=0.1, lr_decay=0.0, initial_accumulator_value=0.5)
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.7])}
    state = tx.init(params)
    step = jax.jit(tx.update)
    reference = fo.adagrad(lr=0.1, initial_accumulator_value=0.5)
    ref_state = reference.init(params)
    for _ in range(3):
        updates, state = step(grads, state, params)
        expected, ref_state = reference.update(grads, ref_state, params)
        # The same float32 ops, jit or eager (XLA may fuse sum + g·g into one FMA). Each side is within γ_8 of exact
        # arithmetic at step 3 (6 positive-sum roundings in the sum, halved by √, + eps, lr·g, ÷): they differ ≤ 2·γ_8.
        np.testing.assert_allclose(updates["w"], expected["w"], rtol=2 * gamma32(8))
