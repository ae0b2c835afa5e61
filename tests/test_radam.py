"""fo.radam beyond the parity catalog: signature, validation, rho_t, the switch, state vs torch."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from state_trajectories import side_by_side

import functional_optreg as fo
from functional_optreg import verify
from functional_optreg.optimizers.radam import sma_length
from parity.cases.radam import CASES

torch = pytest.importorskip("torch")
mpmath = pytest.importorskip("mpmath")


def _torch_rho(beta2, step):
    """rho_t exactly as _single_tensor_radam writes it, in Python floats."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)


def test_signature_matches_torch():
    ours = inspect.signature(fo.radam).parameters
    theirs = dict(inspect.signature(torch.optim.RAdam.__init__).parameters)
    del theirs["self"], theirs["params"]
    assert list(ours) == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        assert ours[name].default == parameter.default, name


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1e-3),
        dict(eps=-1e-8),
        dict(betas=(1.0, 0.999)),
        dict(betas=(0.9, -0.5)),
        dict(weight_decay=-0.1),
    ],
)
def test_validation_messages_match_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        torch.optim.RAdam([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(theirs.value))}$"):
        fo.radam(**kwargs)


_STEPS = np.concatenate([np.arange(1, 200), np.arange(200, 20000, 397)])
_BETA2S = [0.6, 0.75, 0.9, 0.99, 0.999, 0.9999]


@pytest.mark.parametrize("beta2", _BETA2S)
def test_sma_length_in_float64_is_torchs_expression(beta2):
    with jax.enable_x64(True):
        ours = np.asarray(jax.vmap(lambda s: sma_length(beta2, s))(jnp.asarray(_STEPS, jnp.int32)))
    theirs = np.array([_torch_rho(beta2, float(t)) for t in _STEPS])
    # Torch's own cancellation is reproduced, so the agreement is far below its rounding error.
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-13)


@pytest.mark.parametrize("beta2", _BETA2S)
def test_sma_length_in_float32_is_accurate(beta2):
    """Within 4 float32 epsilons of the exact value (the direct expression loses up to ~8000)."""
    mpmath.mp.dps = 40
    b = mpmath.mpf(beta2)
    exact = np.array([float(2 / (1 - b) - 1 - 2 * int(t) * b ** int(t) / (1 - b ** int(t))) for t in _STEPS])
    ours = np.asarray(jax.vmap(lambda s: sma_length(beta2, s))(jnp.asarray(_STEPS, jnp.int32)))
    assert ours.dtype == np.float32
    error = np.abs(ours.astype(np.float64) - exact) / np.maximum(1.0, np.abs(exact))
    assert error.max() <= 4 * np.finfo(np.float32).eps


def _reference_updates(g_stream, lr, beta1, beta2, eps):
    """_single_tensor_radam for one fixed gradient stream, in float64 NumPy."""
    m = v = np.zeros_like(g_stream[0])
    updates = []
    for step, g in enumerate(g_stream, start=1):
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**step)
        rho_inf = 2 / (1 - beta2) - 1
        rho = _torch_rho(beta2, step)
        if rho > 5:
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            updates.append(-m_hat * lr * np.sqrt(1 - beta2**step) / (np.sqrt(v) + eps) * rect)
        else:
            updates.append(-m_hat * lr)
    return updates


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.75), (0.9, 0.6)])
def test_updates_follow_the_rectification_switch(betas):
    rng = np.random.default_rng(3)
    g_stream = [rng.normal(size=4) for _ in range(12)]
    expected = _reference_updates(g_stream, 0.01, *betas, 1e-8)
    with jax.enable_x64(True):
        tx = fo.radam(lr=0.01, betas=betas)
        params = jnp.zeros(4)
        state = tx.init(params)
        for step, (g, want) in enumerate(zip(g_stream, expected), start=1):
            updates, state = tx.update(jnp.asarray(g), state, params)
            np.testing.assert_allclose(updates, want, rtol=1e-13, err_msg=f"step {step}")


def test_default_betas_switch_at_step_six():
    assert [_torch_rho(0.999, t) > 5 for t in range(1, 8)] == [False] * 5 + [True] * 2
    with jax.enable_x64(True):
        assert [bool(sma_length(0.999, t) > 5) for t in range(1, 8)] == [False] * 5 + [True] * 2
    assert [bool(sma_length(0.999, t) > 5) for t in range(1, 8)] == [False] * 5 + [True] * 2


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_state_matches_torch_float64(case):
    for index, (theirs, ours, _) in enumerate(side_by_side(case, "float64")):
        assert int(ours.step) == index + 1
        for key in ("exp_avg", "exp_avg_sq"):
            for leaf, torch_state in zip(jax.tree.leaves(getattr(ours, key)), theirs):
                scale = np.max(np.abs(torch_state[key]))
                error = np.max(np.abs(leaf - torch_state[key]))
                assert error <= verify.FLOAT64_RTOL * scale, f"{key} at step {index + 1}"


def test_weight_decay_needs_params():
    tx = fo.radam(weight_decay=0.1, decoupled_weight_decay=True)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="radam needs the current parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_first_steps_stay_finite_for_zero_gradients():
    """Unrectified steps and the unselected sqrt branch must not leak NaN (0/0, sqrt of < 0)."""
    tx = fo.radam()
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    for _ in range(8):
        updates, state = jax.jit(tx.update)({"w": jnp.zeros(3)}, state, params)
        np.testing.assert_array_equal(updates["w"], np.zeros(3))
