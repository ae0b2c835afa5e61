"""fo.mixed_precision: float32 master weights for bfloat16/float16 params, against torch AMP-style."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import default_params

STEPS = 60
F32_RTOL, F32_ATOL = 1.3e-6, 1e-5

CONFIGS = [
    ("adam", fo.adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    ("adamw", fo.adamw, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("sgd", fo.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("rmsprop", fo.rmsprop, torch.optim.RMSprop, dict(lr=0.005, centered=True)),
]
LOW = {"bfloat16": (jnp.bfloat16, torch.bfloat16), "float16": (jnp.float16, torch.float16)}


def _low_precision_gradient(low_dtype):
    """The quadratic stream, evaluated at the low-precision params and rounded to their dtype
    (what a bf16/f16 backward pass hands the optimizer)."""
    leaves = [np.asarray(leaf, np.float32) for leaf in jax.tree.leaves(default_params())]
    base = verify.quadratic_gradients(leaves)
    return lambda step, current: [g.astype(low_dtype) for g in base(step, current)]


def _run_against_torch(ours, torch_class, kwargs, low, master):
    """Both sides step ``STEPS`` times on the same gradients, evaluated at torch's low-precision
    params (a parameter-dependent stream). Returns, per step, our and torch's master weights and
    our and torch's low-precision params (torch's: its masters cast to the low dtype)."""
    jax_low, torch_low = LOW[low]
    np_low = np.dtype(getattr(ml_dtypes, low)) if low == "bfloat16" else np.dtype(np.float16)
    torch_master = {"float32": torch.float32, "float64": torch.float64}[master]
    gradient = _low_precision_gradient(np_low)
    initial = [np.asarray(leaf).astype(np_low) for leaf in jax.tree.leaves(default_params())]

    masters = [torch.tensor(leaf.astype(np.float32)).to(torch_master).requires_grad_() for leaf in initial]
    optimizer = torch_class(masters, **kwargs)
    tx = fo.mixed_precision(ours(**kwargs), master_dtype=jnp.dtype(master))
    params = [jnp.asarray(leaf) for leaf in initial]
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
    history = []
    for k in range(STEPS):
        torch_low_params = [m.detach().to(torch_low).float().numpy() for m in masters]
        grads = gradient(k, torch_low_params)
        for tensor, grad in zip(masters, grads):
            tensor.grad = torch.from_numpy(grad.astype(np.float32)).to(torch_master)
        optimizer.step()
        params, state = step(params, state, [jnp.asarray(g) for g in grads])
        assert all(p.dtype == jax_low for p in params)
        for p, ours_master in zip(params, state.master_params):
            assert ours_master.dtype == jnp.dtype(master)
            np.testing.assert_array_equal(np.asarray(p), np.asarray(ours_master.astype(jax_low)))
        history.append(
            (
                [np.asarray(m) for m in state.master_params],
                [m.detach().numpy().copy() for m in masters],
                [np.asarray(p, np.float32) for p in params],
                [m.detach().to(torch_low).float().numpy() for m in masters],
                [_spacing(m.detach().to(torch_low)) for m in masters],
            )
        )
    return history


@pytest.mark.parametrize("low", sorted(LOW))
@pytest.mark.parametrize("name, ours, torch_class, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_masters_match_torch(name, ours, torch_class, kwargs, low):
    flips = expected = 0.0
    for k, (ours_m, theirs_m, ours_low, theirs_low, ulp) in enumerate(
        _run_against_torch(ours, torch_class, kwargs, low, "float32")
    ):
        for a, b in zip(ours_m, theirs_m):
            np.testing.assert_allclose(a, b, rtol=F32_RTOL, atol=F32_ATOL, err_msg=f"masters, step {k + 1}")
        for a, b, u, ma, mb in zip(ours_low, theirs_low, ulp, ours_m, theirs_m):
            difference = np.abs(a - b)
            # Derived: a cast moves each value by < one target ulp, so the casts of two masters differ by at most
            # one ulp past the masters' own difference.
            allowed = u + np.abs(ma - mb)
            assert np.all(difference <= allowed), f"low-precision params differ beyond rounding at step {k + 1}"
            flips += int(np.count_nonzero(difference))
            # The casts differ only where a rounding boundary of the low dtype lies between the
            # two masters; the boundaries around a value are ≥ ulp/2 apart, so with the masters'
            # position between boundaries as good as random, that happens with probability
            # ≤ min(1, 2|ma − mb|/ulp) per element.
            expected += float(np.sum(np.minimum(1.0, 2 * np.abs(ma.astype(np.float64) - mb) / u)))
    # Bernstein's inequality for a sum of independent Bernoulli variables with mean ≤ expected:
    # P(flips ≥ expected + t) ≤ exp(−t²/(2(expected + t/3))) = 1e-9 at the t below.
    log_odds = np.log(1e9)
    slack = log_odds / 3 + np.sqrt(log_odds**2 / 9 + 2 * log_odds * expected)
    assert flips <= expected + slack, f"{flips} low-precision values differ by one ulp, expected ≤ {expected:.1f}"


@pytest.mark.parametrize("name, ours, torch_class, kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float64_masters_match_torch_to_rounding(name, ours, torch_class, kwargs):
    """The semantic check: with float64 masters the update rule itself must agree to 1e-12."""
    with jax.enable_x64(True):
        history = _run_against_torch(ours, torch_class, kwargs, "bfloat16", "float64")
    for k, (ours_m, theirs_m, ours_low, theirs_low, _) in enumerate(history):
        for a, b in zip(ours_m, theirs_m):
            scale = max(float(np.max(np.abs(b))), 1e-300)
            assert float(np.max(np.abs(a - b))) / scale <= 1e-12, f"masters, step {k + 1}"
        for a, b in zip(ours_low, theirs_low):
            np.testing.assert_array_equal(a, b, err_msg=f"low-precision params, step {k + 1}")


def _spacing(tensor):
    """The low-precision ulp at each element of ``tensor`` (the larger of the gaps to its two
    neighbours, which differ at powers of two), as float32."""
    up = torch.nextafter(tensor, torch.full_like(tensor, float("inf"))).float()
    down = torch.nextafter(tensor, torch.full_like(tensor, float("-inf"))).float()
    return torch.maximum(up - tensor.float(), tensor.float() - down).numpy()


def test_state_is_float32_for_bfloat16_params():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.bfloat16), "x": jnp.ones(2, jnp.float32)}
    state = fo.mixed_precision(fo.adam(1e-3, amsgrad=True)).init(params)
    for leaf in jax.tree.leaves(state.master_params) + jax.tree.leaves(state.inner_state.exp_avg_sq):
        assert leaf.dtype == jnp.float32
    plain = fo.adam(1e-3).init(params)
    assert plain.exp_avg["w"].dtype == jnp.bfloat16


def test_float64_leaves_keep_their_precision():
    with jax.enable_x64(True):
        params = {"w": jnp.ones(2, jnp.float64), "c": jnp.ones(2, jnp.complex64)}
        state = fo.mixed_precision(fo.sgd(0.1)).init(params)
        assert state.master_params["w"].dtype == jnp.float64
        assert state.master_params["c"].dtype == jnp.complex64


def test_updates_bring_params_exactly_to_the_cast_master_weights():
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.normal(size=20000), jnp.bfloat16)
    # New master weights anywhere from 1/1000 to 1000 times the old params, either sign.
    factor = np.exp(rng.uniform(-7, 7, size=20000)) * rng.choice([-1, 1], size=20000)
    master = jnp.asarray(np.asarray(params, np.float32) * factor, jnp.float32)
    updates = master.astype(jnp.bfloat16).astype(jnp.float32) - params.astype(jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(optax.apply_updates(params, updates)), np.asarray(master.astype(jnp.bfloat16))
    )


def test_update_needs_params_and_matching_trees():
    tx = fo.mixed_precision(fo.sgd(0.1))
    params = {"w": jnp.ones(2, jnp.bfloat16)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="mixed_precision needs the current parameters"):
        tx.update(params, state)
    with pytest.raises(ValueError, match=r"\['v'\]"):
        tx.update({"v": jnp.ones(2, jnp.bfloat16)}, state, params)


def test_integer_params_are_rejected():
    with pytest.raises(TypeError, match=r"\['n'\].*int32"):
        fo.mixed_precision(fo.sgd(0.1)).init({"n": jnp.arange(2)})


def test_jit_does_not_recompile_and_chains():
    tx = fo.mixed_precision(optax.chain(fo.clip_grad_norm(1.0), fo.adam(1e-2)))
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = tx.init(params)
    for k in range(3):
        params, state = step(params, state, {"w": jnp.full(4, k + 1.0, jnp.bfloat16)})
    assert len(traces) == 1 and params["w"].dtype == jnp.bfloat16
