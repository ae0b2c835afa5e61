"""fo.nadam beyond the parity catalog: validation, mu_product and state against torch."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from bounds import gamma32
from state_trajectories import side_by_side

import functional_optreg as fo
from functional_optreg import verify
from parity.cases.nadam import CASES

torch = pytest.importorskip("torch")


def _relative_error(ours, theirs):
    scale = np.max(np.abs(theirs))
    return np.max(np.abs(ours - theirs)) / scale if scale > 0 else np.max(np.abs(ours))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1e-3),
        dict(eps=-1e-8),
        dict(betas=(1.0, 0.999)),
        dict(betas=(-0.1, 0.999)),
        dict(betas=(0.9, 1.0)),
        dict(weight_decay=-0.1),
        dict(momentum_decay=-4e-3),
    ],
)
def test_validation_messages_match_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        torch.optim.NAdam([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(theirs.value))}$"):
        fo.nadam(**kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_state_matches_torch_float64(case):
    for index, (theirs, ours, _) in enumerate(side_by_side(case, "float64")):
        assert int(ours.step) == index + 1
        for torch_state in theirs:
            # Both sides keep the product in float32, rounded the same way: equal to the bit,
            # except that XLA on CPU flushes a subnormal product to zero.
            expected = torch_state["mu_product"]
            if expected < np.finfo(np.float32).tiny and ours.mu_product == 0:
                continue
            assert ours.mu_product == expected, f"mu_product at step {index + 1}"
        for key in ("exp_avg", "exp_avg_sq"):
            for leaf, torch_state in zip(jax.tree.leaves(getattr(ours, key)), theirs):
                error = _relative_error(leaf, torch_state[key])
                assert error <= verify.FLOAT64_RTOL, f"{key} at step {index + 1}: {error:.2e}"


def test_mu_product_is_the_float32_recurrence():
    """Derived independently: torch multiplies a float32 product by mu rounded to float32."""
    momentum_decay, beta1 = 0.05, 0.8
    tx = fo.nadam(betas=(beta1, 0.99), momentum_decay=momentum_decay)
    with jax.enable_x64(True):
        params = {"w": jnp.zeros(3, jnp.float64)}
        state = tx.init(params)
        update = jax.jit(tx.update)
        expected = np.float32(1.0)
        for step in range(1, 41):
            _, state = update({"w": jnp.ones(3, jnp.float64)}, state, params)
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
            expected = np.float32(expected * np.float32(mu))
            assert state.mu_product.dtype == jnp.float32
            assert state.mu_product == expected, step


def test_first_step_by_hand():
    """One step from zero moments, from the formula in the docstring (float64)."""
    lr, beta1, beta2, eps, psi = 0.1, 0.9, 0.999, 1e-8, 4e-3
    g = np.array([0.5, -2.0, 3.0])
    mu = beta1 * (1 - 0.5 * 0.96 ** (1 * psi))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** (2 * psi))
    m = (1 - beta1) * g
    denom = np.sqrt((1 - beta2) * g * g / (1 - beta2)) + eps
    product = float(np.float32(mu))
    expected = -lr * (1 - mu) / (1 - product) * g / denom - lr * mu_next / (1 - product * mu_next) * m / denom
    with jax.enable_x64(True):
        tx = fo.nadam(lr=lr)
        params = {"w": jnp.zeros(3, jnp.float64)}
        updates, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
        # ~20 float64 roundings (pow included) of condition ≤ ~1: both terms share g's sign, 1 − mu ≈ 0.55 and
        # 1 − mu·mu_next ≈ 0.8 barely cancel, (1 − β2) cancels exactly: γ_20 ≈ 2.2e-15 ≤ 1e-14.
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-14)


def test_weight_decay_needs_params():
    tx = fo.nadam(weight_decay=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="nadam needs the current parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_params_are_optional_without_weight_decay():
    tx = fo.nadam()
    params = {"w": jnp.ones(2)}
    with_params, _ = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    without, _ = tx.update({"w": jnp.ones(2)}, tx.init(params))
    # With params the delta is taken from torch's rounded new value: compare where it lands. Both land on
    # p + u (p = 1, |u| ≈ lr = 2e-3) rounded to float32 once (p + u) or twice (new value, then p + (new − p)):
    # ≤ 2·U32 relative, plus the updates' own roundings scaled by |u|/|p| (≲ 20 · U32 · 2e-3): within γ_3.
    np.testing.assert_allclose(
        optax.apply_updates(params, with_params)["w"], optax.apply_updates(params, without)["w"], rtol=gamma32(3)
    )


def test_differentiable_with_respect_to_lr():
    """A traced lr is allowed (no eager check fires) and the final loss depends on it smoothly."""

    def final_loss(lr):
        tx = fo.nadam(lr=lr, weight_decay=0.01)
        params = {"w": jnp.array([1.0, -2.0, 0.5])}
        state = tx.init(params)
        for _ in range(5):
            grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return jnp.sum(params["w"] ** 2)

    derivative = jax.grad(final_loss)(0.05)
    h = 1e-3
    finite_difference = (final_loss(0.05 + h) - final_loss(0.05 - h)) / (2 * h)
    assert derivative < 0
    # float32 central difference, h = 1e-3, L ≈ 4, dL/dlr ≈ −22: the losses' roundings (≲ 50·U32·L over 5 steps)
    # give ≲ 1.2e-5/(2h) ≈ 6e-3 absolute (3e-4 relative); the truncation h²·L‴/6 is O(1e-6·L‴), L smooth in lr:
    # 1e-2 checks the derivative, not its last digits.
    np.testing.assert_allclose(derivative, finite_difference, rtol=1e-2)
