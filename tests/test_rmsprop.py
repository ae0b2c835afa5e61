"""fo.rmsprop: validation, state contents and the rules the parity catalog relies on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import gamma32
from state_trajectories import assert_close_to_torch, run_both

import functional_optreg as fo
from functional_optreg import verify


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
    # float32 roundings, none cancelling: g, g·g, √, eps, + eps, ÷ (alpha = 0 and lr = 1 are exact).
    np.testing.assert_allclose(updates["w"], [-g / (g + eps)], rtol=gamma32(6))


def test_centered_subtracts_the_squared_mean():
    # alpha = 0.5, one step from zeros: v = g²/2, mean = g/2, v − mean² = g²/4.
    tx = fo.rmsprop(lr=1.0, alpha=0.5, eps=0.0, centered=True)
    params = {"w": jnp.zeros(1)}
    updates, state = tx.update({"w": jnp.full(1, 4.0)}, tx.init(params), params)
    # Dyadic values and √4 = 2: exact in float32.
    np.testing.assert_array_equal(state.square_avg["w"], [8.0])
    np.testing.assert_array_equal(state.grad_avg["w"], [2.0])
    np.testing.assert_array_equal(updates["w"], [-4.0 / np.sqrt(8.0 - 4.0)])


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
    # inject_hyperparams holds alpha as a float32, so 1 − alpha is 1 − fl32(0.99) (exact, but 9.5e-7 relative off
    # 0.01: the rounding of 0.99 cancels, up to 99·U32): the reference gets that alpha. Then the float32 inputs (g,
    # 1 − alpha, eps, lr) are the same, jit or eager (XLA may fuse into FMAs): each side's 6 op roundings (g·g,
    # ·(1 − alpha), √, + eps, ÷, ·lr; no cancellation) keep it within γ_6 of exact arithmetic.
    reference = fo.rmsprop(lr=0.1, alpha=float(np.float32(0.99)))
    expected, _ = reference.update({"w": jnp.array([0.2, 0.7])}, reference.init(params))
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=2 * gamma32(6))


def test_momentum_schedule_is_read_per_step():
    # alpha = 0 makes g / (sqrt(v) + 0) = sign(g). The update with count c reads momentum(c):
    # buffers 0·0 + 1 = 1, then 0.5·1 − 1 = −0.5 (reading one step late would give −1).
    momentum = lambda count: jnp.where(count == 1, 0.5, 0.0)  # noqa: E731
    tx = fo.rmsprop(lr=1.0, alpha=0.0, eps=0.0, momentum=momentum)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.full(1, 3.0)}, state, params)
    np.testing.assert_array_equal(state.momentum_buffer["w"], [1.0])  # √9 = 3, 3 / 3: exact
    updates, state = tx.update({"w": jnp.full(1, -2.0)}, state, params)
    np.testing.assert_array_equal(state.momentum_buffer["w"], [-0.5])
    np.testing.assert_array_equal(updates["w"], [0.5])


def _momentum_buffers(optimizer, state):
    """Torch's momentum buffers against ours, where torch has one (for verify.compare)."""
    ours = jax.tree.leaves(state.inner_state.momentum_buffer)
    tensors = optimizer.param_groups[0]["params"]
    return [
        (np.asarray(leaf), optimizer.state[p]["momentum_buffer"].detach().numpy())
        for leaf, p in zip(ours, tensors)
        if "momentum_buffer" in optimizer.state[p]
    ]


@pytest.mark.parametrize(
    "start, changes",
    [
        pytest.param(0.9, {15: 0.5}, id="changed"),
        pytest.param(0.9, {15: 0.0, 30: 0.6}, id="off-and-on"),
        pytest.param(0.0, {0: 0.9, 20: 0.0}, id="on-before-the-first-step"),
        pytest.param(0.0, {25: 0.0}, id="never-on"),
    ],
)
@pytest.mark.parametrize("centered", [False, True])
def test_momentum_set_mid_run_follows_torch(start, changes, centered):
    """torch reads ``group["momentum"]`` at every step: a buffer created at the first step (if
    momentum > 0 then) is frozen while momentum is 0 and resumed when it is positive again.
    ``inject_hyperparams(fo.rmsprop)`` did not keep it frozen: momentum 0 overwrote it with
    ``g / avg`` and a later momentum resumed from that (off-and-on: 5.8 relative error before),
    and momentum 0 at ``init`` kept no buffer, so momentum set before the first step was ignored
    (1.55). 50 float64 steps, parameters and buffers within the contract."""

    def before_step(step, optimizer, state):
        if step not in changes:
            return state
        optimizer.param_groups[0]["momentum"] = changes[step]
        return fo.set_hyperparams(state, momentum=changes[step])

    kwargs = dict(lr=0.01, momentum=start, centered=centered, weight_decay=0.1)
    report = verify.compare(
        lambda tensors: torch.optim.RMSprop(tensors, **kwargs),
        optax.inject_hyperparams(fo.rmsprop)(**kwargs),
        {"a": np.linspace(-1.0, 2.0, 6).reshape(2, 3), "b": np.array([0.5, -0.25])},
        steps=50,
        before_step=before_step,
        state_pairs=_momentum_buffers,
    )
    assert report.passed, str(report)


def test_momentum_switched_on_after_the_first_step_is_refused_like_torch():
    """torch creates ``momentum_buffer`` at the first step only and then raises
    ``KeyError: 'momentum_buffer'``; ours refuses with the reason, eagerly and under jit."""
    p = torch.ones(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.RMSprop([p], lr=0.1)
    p.grad = torch.ones(2, dtype=torch.float64)
    optimizer.step()
    optimizer.param_groups[0]["momentum"] = 0.9
    with pytest.raises(KeyError, match="momentum_buffer"):
        optimizer.step()

    tx = optax.inject_hyperparams(fo.rmsprop)(lr=0.1, momentum=0.0)
    params = jnp.ones(2)
    _, state = tx.update(params, tx.init(params), params)
    state = fo.set_hyperparams(state, momentum=0.9)
    with pytest.raises(ValueError, match="momentum was switched on after a first update without it"):
        tx.update(params, state, params)
    step = jax.jit(tx.update)
    with pytest.raises(ValueError, match="KeyError: 'momentum_buffer'"), fo.original_errors():
        jax.block_until_ready(step(params, state, params))
    # With momentum back at 0 the step is the plain one: square_avg α·(1 − α) + (1 − α)·1 (≈ 0.0199), where α is
    # the injected float32 0.99 and 1 − α is exact in float32 (but not 0.01: the rounding of 0.99 cancels).
    alpha = float(np.float32(0.99))
    updates, _ = step(params, fo.set_hyperparams(state, momentum=0.0), params)
    # float32 roundings, none cancelling: α·(1 − α), the sum, √, 1e-8, + 1e-8, 0.1, ÷.
    expected = -0.1 / (np.sqrt(alpha * (1 - alpha) + (1 - alpha)) + 1e-8)
    np.testing.assert_allclose(updates, expected, rtol=gamma32(7))
