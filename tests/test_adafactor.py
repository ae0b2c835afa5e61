"""fo.adafactor: validation, state layout, and the eps1 default against torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import gamma32

import functional_optreg as fo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Learning rate should be >= 0 but is: -0.1"),
        (dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
        (dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
        (dict(eps=(None, -1e-3)), "epsilon2 should be >= 0 but is: -0.001"),
        (dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
        (dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.adafactor(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adafactor([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_state_layout_follows_torch():
    shapes = {"cube": (2, 3, 4), "matrix": (5, 1), "vector": (3,), "scalar": ()}
    tensors = {name: torch.ones(shape, requires_grad=True) for name, shape in shapes.items()}
    optimizer = torch.optim.Adafactor(list(tensors.values()))
    for tensor in tensors.values():
        tensor.grad = torch.ones_like(tensor)
    optimizer.step()
    state = fo.adafactor().init({name: jnp.ones(shape) for name, shape in shapes.items()})
    for name, tensor in tensors.items():
        theirs = optimizer.state[tensor]
        for key in ("row_var", "col_var", "variance"):
            ours = getattr(state, key)[name]
            if key in theirs:
                assert ours.shape == tuple(theirs[key].shape), (name, key)
            else:
                assert ours is None, (name, key)
    assert set(state._fields) == {"step", "row_var", "col_var", "variance"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_default_eps1_is_the_dtype_epsilon(dtype):
    # Every gradient entry is ±eps1/2: the variance estimate (eps1²/4) sits below the eps1² floor,
    # so each update entry is alpha·g/eps1 = ±alpha/2, with alpha = lr·RMS(p) (nothing clipped).
    eps1 = np.finfo(dtype).eps
    rng = np.random.default_rng(0)
    p0 = {"m": rng.normal(size=(3, 4)), "v": rng.normal(size=4)}
    g0 = jax.tree.map(lambda p: 0.5 * eps1 * rng.choice([-1.0, 1.0], size=p.shape), p0)
    tensors = [torch.tensor(p0[k], dtype=getattr(torch, dtype), requires_grad=True) for k in ("m", "v")]
    optimizer = torch.optim.Adafactor(tensors, lr=0.01, d=1e30)
    for tensor, key in zip(tensors, ("m", "v")):
        tensor.grad = torch.tensor(g0[key], dtype=tensor.dtype)
    optimizer.step()
    with jax.enable_x64(dtype == "float64"):
        tx = fo.adafactor(lr=0.01, d=1e30)
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype), p0)
        grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), g0)
        updates, _ = tx.update(grads, tx.init(params), params)
        for tensor, key in zip(tensors, ("m", "v")):
            rms = np.sqrt(np.mean(p0[key] ** 2))
            expected = -0.01 * rms * np.sign(g0[key]) / 2
            # Roundings (unit u = eps1/2), none cancelling: RMS(p) ≤ 7.5 (squares 1, the 12-term positive sum 11,
            # ÷ 1, all halved by the √, and the √ 1), lr·RMS 2, the normalised ±1/2 ≤ 4.5 (row/col means of the
            # exact g² = eps1²/4 through √, square, ÷, halved by rsqrt, rsqrt ~1, ·g), α· 1: ≤ 15 < 20u = 10·eps1.
            np.testing.assert_allclose(np.asarray(updates[key]), expected, rtol=10 * eps1)
            after = tensor.detach().numpy().astype(np.float64)
            moved = after - p0[key]
            # A cancelling difference: torch's parameter is p0 rounded to the dtype, plus the update
            # rounded (≤ eps/2 of |p0| and of |p1| each), and its update is within ~10 roundings
            # (≤ 10·eps) of the closed form, as ours above.
            allowed = eps1 / 2 * (np.abs(p0[key]) + np.abs(after)) + 10 * eps1 * np.abs(expected)
            assert np.all(np.abs(moved - expected) <= allowed), np.max(np.abs(moved - expected) / allowed)


def test_needs_params():
    tx = fo.adafactor()
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(params, tx.init(params))


def test_first_step_normalises_the_update():
    # Step 1 keeps only the new statistics, so a rank-one |g|² is reproduced exactly and the
    # update is sign(g)·alpha: the factored estimate is exact for rank-one squared gradients.
    tx = fo.adafactor(lr=0.1)
    row, col = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0, 3.0])
    grad = jnp.outer(row, col)
    params = {"w": jnp.full((2, 3), 2.0)}
    updates, state = tx.update({"w": grad}, tx.init(params), params)
    # float32, none cancelling: 0.1 (RMS(p) = 2 is exact); the ±1 of g/√(R·C/mean R) from ≤ 4 roundings in each of
    # R, C (‖·‖₂ of exact squares: √, square, ÷), the product, ÷ mean R, halved by rsqrt, rsqrt and ·g; the clip
    # factor max(1, RMS(u)/d) stays within the same few ulps: ≲ 12 roundings, 1e-6 ≈ 17.
    np.testing.assert_allclose(updates["w"], -0.1 * 2.0 * jnp.sign(grad), rtol=1e-6)
    # The means are ‖row‖₂²/n of exact squares (a sum exact here, √, square, ÷ n) kept by a weight-1 lerp: ≤ 4.
    np.testing.assert_allclose(state.row_var["w"][:, 0], np.mean(np.asarray(grad) ** 2, axis=1), rtol=gamma32(4))
    np.testing.assert_allclose(state.col_var["w"][0], np.mean(np.asarray(grad) ** 2, axis=0), rtol=gamma32(4))
