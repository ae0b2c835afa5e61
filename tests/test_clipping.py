"""fo.clip_grad_norm / fo.clip_grad_value: the total norm, non-finite handling, jit/vmap/dtypes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import U32, U64, gamma32, gamma64

import functional_optreg as fo
from functional_optreg import clipping


def _grads(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.normal(size=(2, 3, 2, 2)).astype(dtype),
        "bias": np.zeros(3, dtype),
        "dense": (rng.normal(size=(4, 5)) * 3).astype(dtype),
    }


def _torch_clip(grads, **kwargs):
    """torch.nn.utils.clip_grad_norm_ on copies of ``grads`` (in tree-leaf order)."""
    tensors = []
    for leaf in jax.tree.leaves(grads):
        tensor = torch.zeros(np.shape(leaf), dtype=torch.from_numpy(np.array(leaf)).dtype, requires_grad=True)
        tensor.grad = torch.from_numpy(np.array(leaf))
        tensors.append(tensor)
    norm = torch.nn.utils.clip_grad_norm_(tensors, **kwargs)
    return norm, [t.grad.numpy() for t in tensors]


def _norm_rtol(size: int, norm_type, unit: float = U64) -> float:
    """How far two float64 p-norms of the same ``size`` values may differ when each sums in its own
    order (torch's kernels and XLA's reductions pick the order by instruction set). One of them is
    within ``(size + 2)·u`` of the exact sum of ``|g|^p`` (``size − 1`` additions of non-negative
    terms, each ``|g|^p`` within an ulp), the root scales that by ``1/|p|`` and adds one rounding;
    two of them, twice that. Max and min norms and the count (p = 0) round nothing. ``unit``: the
    dtype's unit roundoff."""
    p = float(norm_type)
    if math.isinf(p) or p == 0.0:
        return 2 * unit
    return 2 * ((size + 2) * unit / abs(p) + unit)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf, -math.inf, 0.0, -1.0, "inf"])
def test_total_norm_matches_torch_get_total_norm(norm_type):
    with jax.enable_x64(True):
        grads = _grads()
        grads["dense"][0, 0] = 0.0
        ours = clipping.total_norm(jax.tree.map(jnp.asarray, grads), float(norm_type))
        theirs = torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in jax.tree.leaves(grads)], norm_type)
        size = sum(np.size(g) for g in jax.tree.leaves(grads))
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=_norm_rtol(size, norm_type))
        assert ours.dtype == jnp.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm, norm_type", [(1.0, 2.0), (1e-5, 2.0), (0.3, "inf"), (4.0, 1), (2.0, 3.0)])
def test_one_step_matches_torch_and_keeps_total_norm(dtype, max_norm, norm_type):
    with jax.enable_x64(dtype == np.float64):
        grads = _grads(dtype=dtype)
        if max_norm == 1e-5:
            grads = jax.tree.map(lambda g: (g * 1e-6).astype(dtype), grads)
        tx = fo.clip_grad_norm(max_norm, norm_type)
        jax_grads = jax.tree.map(jnp.asarray, grads)
        clipped, state = jax.jit(tx.update)(jax_grads, tx.init(jax_grads))
        norm, torch_clipped = _torch_clip(grads, max_norm=max_norm, norm_type=norm_type)
        assert state.total_norm.dtype == np.dtype(dtype)
        size = sum(np.size(g) for g in jax.tree.leaves(grads))
        # The norm's bound in the dtype's unit (float32: 51u = 3e-6 for p = 2, over assert_close's 1.3e-6, which a
        # 47-term sum in two orders need not meet); the clip coefficient max_norm / (norm + 1e-6) and the product
        # g·coef add three roundings (the coefficient has no cancellation, atol 0 holds).
        unit = U64 if dtype == np.float64 else U32
        norm_rtol = _norm_rtol(size, norm_type, unit)
        clipped_rtol = norm_rtol + 3 * unit
        np.testing.assert_allclose(np.asarray(state.total_norm), norm.numpy(), rtol=norm_rtol)
        for ours, theirs in zip(jax.tree.leaves(clipped), torch_clipped):
            np.testing.assert_allclose(np.asarray(ours), theirs, rtol=clipped_rtol, atol=0)


def test_eps_makes_clipped_norm_slightly_below_max_norm():
    with jax.enable_x64(True):
        grads = {"w": jnp.array([3e-6, 4e-6])}
        tx = fo.clip_grad_norm(1e-6)
        clipped, _ = tx.update(grads, tx.init(grads))
        expected = 1e-6 / (5e-6 + 1e-6)
        # Ours: two squares, their sum, √ (≤ 2u on the norm), + eps, ÷, ·: ≤ 5u; expected: 5e-6 stands for the norm
        # of the stored 3e-6, 4e-6 (≤ 2u off it), + eps, ÷, ·: ≤ 5u. No cancellation: ≤ γ_10.
        np.testing.assert_allclose(np.asarray(clipped["w"]), np.array([3e-6, 4e-6]) * expected, rtol=gamma64(10))


def test_norm_below_max_norm_leaves_grads_bitwise_unchanged():
    grads = _grads(dtype=np.float32)
    tx = fo.clip_grad_norm(1e6)
    clipped, state = tx.update(grads, tx.init(grads))
    for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert float(state.total_norm) > 0


def test_init_state_is_zero_norm_in_params_dtype():
    state = fo.clip_grad_norm(1.0).init({"w": jnp.ones(2, jnp.bfloat16)})
    assert state.total_norm.dtype == jnp.bfloat16 and float(state.total_norm) == 0.0


def test_mixed_dtypes_norm_promotes_like_torch_stack():
    with jax.enable_x64(True):
        grads = {"a": np.ones(3, np.float32), "b": np.full(2, 2.0, np.float64)}
        norm = clipping.total_norm(jax.tree.map(jnp.asarray, grads))
        theirs = torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in jax.tree.leaves(grads)])
        assert norm.dtype == jnp.float64 and theirs.dtype == torch.float64
        # The squares and their sum (11) are exact in float64; only the correctly rounded sqrt rounds: equal.
        assert float(norm) == float(theirs)


def test_empty_tree_has_zero_norm_and_passes_through():
    tx = fo.clip_grad_norm(1.0)
    updates, state = tx.update({}, tx.init({}))
    assert updates == {} and float(state.total_norm) == 0.0


def _nonfinite_grads(value):
    return {"a": jnp.array([1.0, value, 2.0]), "b": jnp.array([3.0, 4.0])}


def _torch_message(grads, norm_type):
    with pytest.raises(RuntimeError) as theirs:
        _torch_clip(jax.tree.map(np.asarray, grads), max_norm=1.0, norm_type=norm_type, error_if_nonfinite=True)
    return str(theirs.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("norm_type", [2.0, "inf"])
def test_error_if_nonfinite_raises_eagerly_with_torchs_message(value, norm_type):
    grads = _nonfinite_grads(value)
    tx = fo.clip_grad_norm(1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as ours:
        tx.update(grads, tx.init(grads))
    assert str(ours.value) == _torch_message(grads, norm_type)


def test_error_if_nonfinite_under_jit_raises_at_run_time():
    grads = _nonfinite_grads(np.inf)
    tx = fo.clip_grad_norm(1.0, error_if_nonfinite=True)
    update = jax.jit(tx.update)
    finite = _nonfinite_grads(5.0)
    update(finite, tx.init(finite))[0]["a"].block_until_ready()
    with pytest.raises(RuntimeError) as ours:
        jax.block_until_ready(update(grads, tx.init(grads)))
    assert _torch_message(grads, 2.0) in str(ours.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [math.inf, -math.inf])
@pytest.mark.parametrize("nan", [False, True])
def test_inf_norms_of_large_gradients_match_torch_nan_included(norm_type, dtype, nan):
    """A (64, 28, 28, 32) gradient takes XLA's vectorised reduction, whose max/min drop a NaN;
    torch's norm (and so the clipped gradients) is NaN."""
    big = np.random.default_rng(3).normal(size=(64, 28, 28, 32)).astype(dtype)
    if nan:
        big.reshape(-1)[123457] = np.nan
    grads = {"big": big, "small": np.ones(3, dtype)}
    with jax.enable_x64(dtype == np.float64):
        tx = fo.clip_grad_norm(1.0, norm_type)
        clipped, state = jax.jit(tx.update)(grads, tx.init(grads))
        norm = np.asarray(clipping.vector_norm(jnp.asarray(big), norm_type))
    torch_norm, torch_grads = _torch_clip(grads, max_norm=1.0, norm_type=norm_type)
    np.testing.assert_array_equal(norm, torch.linalg.vector_norm(torch.from_numpy(big), norm_type).numpy())
    np.testing.assert_array_equal(np.asarray(state.total_norm), torch_norm.numpy())
    for ours, theirs in zip(jax.tree.leaves(clipped), torch_grads):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))


def test_error_if_nonfinite_under_jit_inside_original_errors_is_torchs_error():
    grads = _nonfinite_grads(np.nan)
    tx = fo.clip_grad_norm(1.0, norm_type=3.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as ours:
        with fo.original_errors():
            jax.block_until_ready(jax.jit(tx.update)(grads, tx.init(grads)))
    assert type(ours.value) is RuntimeError
    assert str(ours.value) == _torch_message(grads, 3.0)


def test_error_if_nonfinite_under_vmap_names_the_problem():
    tx = fo.clip_grad_norm(1.0, error_if_nonfinite=True)
    batch = {"w": jnp.array([[1.0, 2.0], [np.nan, 1.0]])}
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(RuntimeError, match="non-finite"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda g: tx.update(g, state)[0]))(batch))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_without_error_scales_like_torch(value):
    grads = _nonfinite_grads(value)
    tx = fo.clip_grad_norm(1.0)
    ours, state = tx.update(grads, tx.init(grads))
    norm, theirs = _torch_clip(jax.tree.map(np.asarray, grads), max_norm=1.0)
    np.testing.assert_array_equal(np.asarray(state.total_norm), norm.numpy())
    for a, b in zip(jax.tree.leaves(ours), theirs):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_invalid_norm_type_raises_like_torch():
    with pytest.raises(ValueError) as ours:
        fo.clip_grad_norm(1.0, norm_type="two")
    with pytest.raises(ValueError) as theirs:
        torch.nn.utils.get_total_norm([torch.ones(2)], norm_type="two")
    assert str(ours.value) == str(theirs.value)


def test_foreach_flag_is_accepted():
    fo.clip_grad_norm(1.0, foreach=True)
    fo.clip_grad_value(1.0, foreach=False)


def test_jit_does_not_recompile_and_matches_eager():
    traces = []
    tx = optax.chain(fo.clip_grad_norm(0.5), fo.sgd(0.1, momentum=0.9))

    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, _grads(1, np.float32))
    jitted = jax.jit(step)
    state_j = state_e = tx.init(params)
    params_j = params_e = params
    for seed in range(3):
        grads = jax.tree.map(jnp.asarray, _grads(seed, np.float32))
        params_j, state_j = jitted(params_j, state_j, grads)
        params_e, state_e = step(params_e, state_e, grads)
    assert len(traces) == 4
    # Same float32 ops, fused and reduced differently. Per element, from the run's magnitudes: the two clip
    # coefficients differ by ≤ _norm_rtol + 4u (the 47-term norms, + eps, ÷), so the clipped h by ≤ that + 2u of
    # |h|; the buffer 0.9·b + h carries the earlier gap and rounds twice per side; the update ·lr once; p + update
    # rounds once per side (≤ 2u·|p|, the sum may cancel): an envelope against the operands, not against p alone.
    coefficient_gap = _norm_rtol(47, 2.0, U32) + 4 * U32
    buffer = buffer_gap = None
    allowed = jax.tree.map(lambda p: np.zeros(np.shape(p)), params)
    magnitude = jax.tree.map(lambda p: np.abs(np.asarray(p, np.float64)), params)
    for seed in range(3):
        g = _grads(seed)
        coef = min(1.0, 0.5 / (np.sqrt(sum(np.sum(x * x) for x in g.values())) + 1e-6))
        h = {k: np.abs(x) * coef for k, x in g.items()}
        h_gap = {k: (coefficient_gap + 2 * U32) * x for k, x in h.items()}
        if buffer is None:
            buffer, buffer_gap = h, h_gap
        else:
            buffer_gap = {k: 0.9 * buffer_gap[k] + h_gap[k] + 4 * U32 * (0.9 * buffer[k] + h[k]) for k in h}
            buffer = {k: 0.9 * buffer[k] + h[k] for k in h}
        magnitude = {k: magnitude[k] + 0.1 * buffer[k] for k in h}
        allowed = {k: allowed[k] + 0.1 * buffer_gap[k] + 2 * U32 * 0.1 * buffer[k] + 2 * U32 * magnitude[k] for k in h}
    for key in params:
        difference = np.abs(np.asarray(params_j[key], np.float64) - np.asarray(params_e[key], np.float64))
        assert np.all(difference <= allowed[key]), (key, np.max(difference / np.maximum(allowed[key], 1e-300)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtypes_are_preserved(dtype):
    with jax.enable_x64(dtype == "float64"):
        grads = jax.tree.map(lambda g: jnp.asarray(g, dtype), _grads(dtype=np.float32))
        for tx in (fo.clip_grad_norm(0.5), fo.clip_grad_norm(0.5, "inf"), fo.clip_grad_value(0.1)):
            clipped, state = jax.jit(tx.update)(grads, tx.init(grads))
            for before, after in zip(jax.tree.leaves(grads), jax.tree.leaves(clipped)):
                assert after.dtype == before.dtype
            for leaf in jax.tree.leaves(state):
                assert leaf.dtype == jnp.dtype(dtype)


def test_vmap_gives_per_example_clipping():
    tx = fo.clip_grad_norm(1.0)
    per_example = {"w": jax.random.normal(jax.random.key(0), (4, 3)) * 2}
    state = tx.init({"w": jnp.zeros(3)})
    batched, states = jax.vmap(lambda g: tx.update(g, state))(per_example)
    for index in range(4):
        single, single_state = tx.update({"w": per_example["w"][index]}, state)
        # The norm: 3 squares and a positive 3-term sum, halved by the √, and the √: ≤ 3 roundings per side; the
        # clipped values add + eps, ÷ and the product (no cancellation): ≤ 6 per side.
        np.testing.assert_allclose(batched["w"][index], single["w"], rtol=2 * gamma32(6))
        np.testing.assert_allclose(states.total_norm[index], single_state.total_norm, rtol=2 * gamma32(3))


def test_inject_hyperparams_with_static_norm_type():
    grads = jax.tree.map(jnp.asarray, _grads(dtype=np.float32))
    injected = optax.inject_hyperparams(fo.clip_grad_norm, static_args=("norm_type",))(max_norm=0.5, norm_type=3.0)
    constant = fo.clip_grad_norm(0.5, 3.0)
    a, _ = jax.jit(injected.update)(grads, injected.init(grads))
    b, _ = constant.update(grads, constant.init(grads))
    # Same float32 ops on a 47-term positive sum of |g|³, then a cube root, jit or eager (orders may differ): the
    # norms within _norm_rtol, then + eps, ÷ and the product on each side (no cancellation).
    size = sum(np.size(g) for g in jax.tree.leaves(grads))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=_norm_rtol(size, 3.0, U32) + 6 * U32)


def test_traced_norm_type_is_rejected_with_a_hint():
    grads = {"w": jnp.ones(2)}
    injected = optax.inject_hyperparams(fo.clip_grad_norm)(max_norm=0.5, norm_type=3.0)
    with pytest.raises(TypeError, match="static_args=\\('norm_type',\\)"):
        jax.jit(injected.update)(grads, injected.init(grads))


@pytest.mark.parametrize("clip_value", [0.5, 2, -0.3])
def test_clip_grad_value_matches_torch_including_negative_and_nan(clip_value):
    values = np.array([-3.0, -0.4, 0.0, 0.2, 1.7, np.nan, np.inf])
    tx = fo.clip_grad_value(clip_value)
    ours, _ = tx.update({"w": jnp.asarray(values)}, tx.init({"w": jnp.asarray(values)}))
    tensor = torch.zeros(len(values), requires_grad=True)
    tensor.grad = torch.tensor(values, dtype=torch.float32)
    torch.nn.utils.clip_grad_value_([tensor], clip_value)
    np.testing.assert_array_equal(np.asarray(ours["w"]), tensor.grad.numpy())
