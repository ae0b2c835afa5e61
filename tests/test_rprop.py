"""fo.rprop beyond the parity catalog: validation, state against torch, sign logic."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from state_trajectories import side_by_side

import functional_optreg as fo
from parity.case import default_params
from parity.cases.rprop import CASES

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1e-3),
        dict(etas=(0.0, 1.2)),
        dict(etas=(1.0, 1.2)),
        dict(etas=(0.5, 1.0)),
        dict(etas=(0.5, 0.9)),
        dict(etas=(-0.5, 2.0)),
    ],
)
def test_validation_messages_match_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        torch.optim.Rprop([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(theirs.value))}$"):
        fo.rprop(**kwargs)


def test_etas_must_be_a_pair():
    with pytest.raises(ValueError, match="pair"):
        fo.rprop(etas=(0.5,))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_state_matches_torch_bitwise(case, dtype):
    """Rprop's arithmetic is products of exact factors and a clamp: the state agrees to the bit."""
    for index, (theirs, ours, _) in enumerate(side_by_side(case, dtype)):
        assert int(ours.step) == index + 1
        for key in ("prev", "step_size"):
            for leaf, torch_state in zip(jax.tree.leaves(getattr(ours, key)), theirs):
                np.testing.assert_array_equal(leaf, torch_state[key], err_msg=f"{key} at step {index + 1}")


def test_both_clamps_are_reached():
    """The clamp case hits the minimum and the maximum step size (else it would test nothing)."""
    case = next(case for case in CASES if case.name == "rprop/step_sizes_both_clamps")
    low, high = case.kwargs["step_sizes"]
    sizes = np.concatenate(
        [np.ravel(leaf) for _, ours, _ in side_by_side(case, "float64") for leaf in jax.tree.leaves(ours.step_size)]
    )
    assert np.any(sizes == low) and np.any(sizes == high)


def test_sign_flip_zeroes_the_gradient_and_skips_the_move():
    tx = fo.rprop(lr=0.1, etas=(0.5, 2.0))
    params = {"w": jnp.zeros(4)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([1.0, 1.0, -2.0, 3.0])}, state, params)
    # Step sizes are fl32(0.1) scaled by powers of two (etas 0.5, 2): every value below is exactly a float32 rounding.
    lr = np.float32(0.1)
    np.testing.assert_array_equal(updates["w"], -lr * np.sign([1.0, 1.0, -2.0, 3.0]))
    # Same sign, flip, flip, zero gradient.
    updates, state = tx.update({"w": jnp.array([2.0, -1.0, 5.0, 0.0])}, state, params)
    np.testing.assert_array_equal(state.step_size["w"], lr * np.array([2.0, 0.5, 0.5, 1.0]))
    np.testing.assert_array_equal(updates["w"], lr * np.array([-2.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(state.prev["w"], [2.0, 0.0, 0.0, 0.0])
    # After a flip, prev is 0: the factor is 1 and the step is taken with the shrunk size.
    updates, state = tx.update({"w": jnp.array([1.0, -1.0, -1.0, 1.0])}, state, params)
    np.testing.assert_array_equal(state.step_size["w"], lr * np.array([4.0, 0.5, 0.5, 1.0]))
    np.testing.assert_array_equal(updates["w"], lr * np.array([-4.0, 0.5, 0.5, -1.0]))


def test_maximize_flips_the_step():
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, -3.0])}
    down, _ = fo.rprop(lr=0.1).update(grads, fo.rprop(lr=0.1).init(params), params)
    up, _ = fo.rprop(lr=0.1, maximize=True).update(grads, fo.rprop(lr=0.1).init(params), params)
    np.testing.assert_array_equal(up["w"], -down["w"])


def test_inverted_step_sizes_give_the_maximum_like_torch():
    tensor = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Rprop([tensor], lr=0.5, step_sizes=(0.3, 0.1))
    tensor.grad = torch.tensor([1.0, -1.0, 2.0])
    optimizer.step()
    tx = fo.rprop(lr=0.5, step_sizes=(0.3, 0.1))
    params = {"w": jnp.zeros(3)}
    _, state = tx.update({"w": jnp.array([1.0, -1.0, 2.0])}, tx.init(params), params)
    np.testing.assert_array_equal(state.step_size["w"], optimizer.state[tensor]["step_size"].numpy())


def test_lr_schedule_only_sets_the_initial_step_size():
    schedule = lambda count: 0.05 * 0.5**count  # noqa: E731
    params = {k: jnp.asarray(v, jnp.float32) for k, v in default_params()["dense"].items()}
    scheduled, constant = fo.rprop(lr=schedule), fo.rprop(lr=0.05)
    s1, s2 = scheduled.init(params), constant.init(params)
    rng = np.random.default_rng(0)
    for _ in range(10):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        u1, s1 = scheduled.update(grads, s1, params)
        u2, s2 = constant.update(grads, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)


def test_state_after_init_holds_lr_and_zeros():
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(4, jnp.bfloat16)}
    state = fo.rprop(lr=0.25).init(params)
    assert state.step_size["b"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(state.step_size["a"], np.full((2, 3), 0.25))
    np.testing.assert_array_equal(state.prev["a"], np.zeros((2, 3)))
    assert int(state.step) == 0


def test_vmap_over_a_batch_of_problems():
    tx = fo.rprop(lr=0.1)
    params = jnp.zeros((5, 3))
    grads = [jnp.asarray(np.random.default_rng(i).normal(size=(5, 3)), jnp.float32) for i in range(3)]
    batched_state = jax.vmap(tx.init)(params)
    single_states = [tx.init(p) for p in params]
    for g in grads:
        batched_updates, batched_state = jax.vmap(tx.update)(g, batched_state, params)
        for row in range(5):
            updates, single_states[row] = tx.update(g[row], single_states[row], params[row])
            np.testing.assert_array_equal(batched_updates[row], updates)
