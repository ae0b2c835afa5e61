"""fo.asgd beyond the parity catalog: the averaged parameters, eta and mu against torch's state.

The parity engine compares parameters only, and ASGD's parameters do not depend on ``t0``: the
average ``ax`` (what ASGD users evaluate) is checked here, step by step, for every parity case.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from bounds import EPS32, U32, U64, XLA32_POW_ULPS, ulp_error
from state_trajectories import side_by_side

import functional_optreg as fo
from functional_optreg import verify
from parity.cases.asgd import CASES

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("kwargs", [dict(lr=-0.5), dict(weight_decay=-1e-4)])
def test_validation_messages_match_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        torch.optim.ASGD([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(theirs.value))}$"):
        fo.asgd(**kwargs)


def test_torch_accepts_what_we_accept():
    """Torch does not validate lambd, alpha or t0; neither do we."""
    torch.optim.ASGD([torch.zeros(1, requires_grad=True)], lambd=-1.0, alpha=-2.0, t0=-3.0)
    fo.asgd(lambd=-1.0, alpha=-2.0, t0=-3.0)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_average_eta_and_mu_match_torch_float64(case):
    for index, (theirs, ours, _) in enumerate(side_by_side(case, "float64")):
        assert int(ours.step) == index + 1
        assert ours.eta.dtype == np.float32 and ours.mu.dtype == np.float32
        for torch_state in theirs:
            # Both sides keep float32 scalars computed from the same double: equal to the bit.
            assert ours.eta == torch_state["eta"], f"eta at step {index + 1}"
            assert ours.mu == torch_state["mu"], f"mu at step {index + 1}"
        for leaf, torch_state in zip(jax.tree.leaves(fo.asgd_averaged_params(ours)), theirs):
            scale = np.max(np.abs(torch_state["ax"]))
            error = np.max(np.abs(leaf - torch_state["ax"]))
            assert error <= verify.FLOAT64_RTOL * scale, f"ax at step {index + 1}: {error / scale:.2e}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_average_eta_and_mu_match_torch_float32(case):
    for index, (theirs, ours, _) in enumerate(side_by_side(case, "float32")):
        for torch_state in theirs:
            torch.testing.assert_close(torch.tensor(ours.eta), torch.tensor(torch_state["eta"]))
            torch.testing.assert_close(torch.tensor(ours.mu), torch.tensor(torch_state["mu"]))
        for leaf, torch_state in zip(jax.tree.leaves(fo.asgd_averaged_params(ours)), theirs):
            torch.testing.assert_close(
                torch.tensor(leaf), torch.tensor(torch_state["ax"]), msg=f"ax at step {index + 1}"
            )


@pytest.mark.parametrize("t0", [20, 20.5])
def test_average_is_the_iterate_then_a_running_mean(t0):
    """Derived from our own trajectory: ax = iterate up to update t0 + 2, then the mean since."""
    case = next(case for case in CASES if case.name == "asgd/t0")
    case = type(case)(case.name, case.ours, case.torch, dict(case.kwargs, t0=t0))
    history = side_by_side(case, "float64", steps=40)
    iterates = [jax.tree.leaves(case.params())] + [jax.tree.leaves(params) for _, _, params in history]
    for index, (_, ours, _) in enumerate(history):
        update = index + 1
        averaged = jax.tree.leaves(fo.asgd_averaged_params(ours))
        if update <= t0 + 2:
            # ax copies the iterate x = p·(1 − λη) − ηg as computed; the parameters are
            # fl(p + fl(x − p)) = x + (x − p)·δ₁ + x·δ₂ (|δ| ≤ u), so within 3u·max(|p|, |x|)
            # (+ O(u²)): elementwise, against the operands, not against an x near 0.
            for a, p, before in zip(averaged, iterates[update], iterates[index]):
                operands = np.maximum(np.abs(before), np.abs(a))
                assert np.all(np.abs(a - p) <= 4 * U64 * operands), f"update {update}"
        elif float(t0).is_integer():
            first = int(t0) + 2
            for leaf_index, a in enumerate(averaged):
                window = np.stack([iterates[k][leaf_index] for k in range(first, update + 1)])
                mean = np.mean(window, axis=0)
                # mu = 1/k is a float32 (as in torch): its weight is off by ≤ 2^-24 relative, so an
                # update a + (x − a)·mu errs by ≤ 2^-24·|x − a|/k ≤ 2^-24·R/k (R: the window's range
                # of this element, as a is a mean of the window), and with the earlier errors
                # shrinking by 1 − 1/k the sum stays ≤ 2^-24·R; the float64 roundings of the n
                # updates and of np.mean are ≤ 8u·M each (M: the window's max |x|).
                spread = np.ptp(window, axis=0)
                magnitude = np.max(np.abs(window), axis=0)
                allowed = 2.0**-24 * spread + 8 * len(window) * U64 * magnitude
                assert np.all(np.abs(a - mean) <= allowed), f"update {update}: {np.max(np.abs(a - mean) / allowed)}"
        else:
            # Not a rounding bound: ax now averages distinct iterates, a fraction of a step (lr·|g|, lr = 0.05) away
            # from the last one, orders of magnitude over 1e-6 of it; float64 rounding is ~1e-16.
            assert not all(np.allclose(a, p, rtol=1e-6, atol=0) for a, p in zip(averaged, iterates[index]))


def test_eta_uses_the_previous_updates_learning_rate():
    """Torch's order: update t steps with eta computed at the end of update t - 1."""
    schedule = lambda count: 0.1 * 0.5**count  # noqa: E731
    lambd, alpha = 0.5, 0.75
    tx = fo.asgd(lr=schedule, lambd=lambd, alpha=alpha)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    expected_etas = [0.1]  # the first update uses the learning rate at initialisation
    # eta = lr / (1 + c)^α in float32, lr = fl32(0.1)·0.5^count, c = λ·lr·t ≤ 0.05 (λ·lr exact). Roundings times
    # their condition factor on eta (first order): fl32(0.1) and 0.1 · 0.5^count: 1 − α·c/(1 + c) ≤ 1 each; · t:
    # α·c/(1 + c) ≤ 0.04; 1 + c: α = 0.75; ÷: 1 — 3.79·U32. 0.5^count (a float pow in XLA too) and (1 + c)^α enter
    # with factor ≤ 1 each; premise (checked here): XLA's pow within XLA32_POW_ULPS ulps, an ulp ≤ EPS32 relative.
    rtol = 3.8 * U32 + 2 * XLA32_POW_ULPS * EPS32
    for count in range(4):
        step = jnp.asarray(count, jnp.int32)
        assert ulp_error(0.5**step, 0.5**count) <= XLA32_POW_ULPS
        base = 1.0 + lambd * schedule(step) * jnp.float32(count + 1)  # as fo.asgd forms it
        assert ulp_error(jnp.power(base, alpha), np.float64(base) ** alpha) <= XLA32_POW_ULPS
        np.testing.assert_allclose(state.eta, expected_etas[-1], rtol=rtol)
        updates, state = tx.update({"w": jnp.ones(1)}, state, params)
        # With g = 1, p = 0 the update is −eta exactly; float32(expected) is one rounding more.
        np.testing.assert_allclose(updates["w"], -np.float32(expected_etas[-1]), rtol=rtol + U32)
        lr = schedule(count)
        expected_etas.append(lr / (1 + lambd * lr * (count + 1)) ** alpha)


def test_averaged_params_inside_a_chain():
    tx = optax.chain(optax.clip(1.0), fo.asgd(lr=0.1, t0=0))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(4):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(fo.asgd_averaged_params(state)["w"], state[1].ax["w"])


def test_averaged_params_rejects_ambiguous_or_missing_state():
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="found 0"):
        fo.asgd_averaged_params(optax.sgd(0.1).init(params))
    two = optax.chain(fo.asgd(), fo.asgd()).init(params)
    with pytest.raises(ValueError, match="found 2"):
        fo.asgd_averaged_params(two)


def test_update_needs_params():
    tx = fo.asgd()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="asgd needs the current parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_scalars_stay_float32_for_float64_params():
    with jax.enable_x64(True):
        tx = fo.asgd(lr=0.1, t0=0)
        params = {"w": jnp.ones(2, jnp.float64)}
        state = tx.init(params)
        for _ in range(3):
            updates, state = jax.jit(tx.update)({"w": jnp.ones(2, jnp.float64)}, state, params)
        assert state.eta.dtype == jnp.float32 and state.mu.dtype == jnp.float32
        assert state.ax["w"].dtype == jnp.float64 and updates["w"].dtype == jnp.float64
