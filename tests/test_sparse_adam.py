"""fo.sparse_adam: validation, which entries move, BCOO gradients, and a real embedding run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from bounds import gamma32, relative_error
from jax.experimental import sparse

import functional_optreg as fo
from functional_optreg import verify


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=0.0), "Invalid learning rate: 0.0"),
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=0.0), "Invalid epsilon value: 0.0"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.sparse_adam(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.SparseAdam([torch.zeros(1, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_state_fields_follow_torch_keys():
    weight = torch.zeros(3, 2, requires_grad=True)
    optimizer = torch.optim.SparseAdam([weight])
    F.embedding(torch.tensor([1]), weight, sparse=True).sum().backward()
    optimizer.step()
    assert set(optimizer.state[weight]) == set(fo.sparse_adam().init({"w": jnp.zeros((3, 2))})._fields)


def _row_grad(rows, values, shape):
    return sparse.BCOO((jnp.asarray(values), jnp.asarray(rows)[:, None]), shape=shape)


@pytest.mark.parametrize("route", ["bcoo", "dense"])
def test_untouched_rows_keep_params_and_moments(route):
    tx = fo.sparse_adam(lr=0.1)
    params = {"w": jnp.arange(8.0).reshape(4, 2)}
    state = tx.init(params)
    grad = _row_grad([0, 3], [[1.0, 2.0], [3.0, 4.0]], (4, 2))
    for _ in range(3):
        g = grad if route == "bcoo" else grad.todense()
        updates, state = jax.jit(tx.update)({"w": g}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["w"][1:3], [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_array_equal(state.exp_avg["w"][1:3], 0.0)
    np.testing.assert_array_equal(state.exp_avg_sq["w"][1:3], 0.0)
    assert np.all(np.asarray(params["w"])[[0, 3]] < np.arange(8.0).reshape(4, 2)[[0, 3]])


def test_duplicate_indices_are_summed():
    tx = fo.sparse_adam(lr=0.1)
    params = {"w": jnp.zeros((3, 2))}
    state = tx.init(params)
    duplicated = _row_grad([2, 0, 2], [[1.0, 2.0], [5.0, 5.0], [3.0, 4.0]], (3, 2))
    summed = _row_grad([0, 2], [[5.0, 5.0], [4.0, 6.0]], (3, 2))
    ours = tx.update({"w": duplicated}, state, params)
    reference = tx.update({"w": summed}, state, params)
    jax.tree.map(np.testing.assert_array_equal, ours, reference)
    # float32: 1 − 0.9 stored, times the exact sums 4, 6: 2 roundings.
    np.testing.assert_allclose(ours[1].exp_avg["w"][2], [0.4, 0.6], rtol=gamma32(2))


def test_bias_correction_counts_every_call():
    # A row first touched at call 3 is corrected with t = 3, not t = 1 (torch's shared count).
    lr, (b1, b2), eps, g = 0.1, (0.9, 0.999), 1e-8, 2.0
    tx = fo.sparse_adam(lr=lr, betas=(b1, b2), eps=eps)
    params = {"w": jnp.zeros((2, 1))}
    state = tx.init(params)
    for rows in ([0], [0], [1]):
        updates, state = tx.update({"w": _row_grad(rows, [[g]], (2, 1))}, state, params)
    m, v = (1 - b1) * g, (1 - b2) * g * g
    bc1, bc2 = (_float32_bias_correction(beta, 3) for beta in (b1, b2))
    expected = -lr * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
    # With the float32 bias corrections as inputs (t = 1 would give 0.1 and 0.001: 56% off), the float32 roundings
    # (1 − β1 and 1 − β2 stored, √v, eps, + eps, ÷, lr, √bc2, ·, ÷ bc1, ·; ·g, g·g exact) are 11, none cancelling.
    np.testing.assert_allclose(updates["w"][1, 0], expected, rtol=gamma32(11))
    assert updates["w"][0, 0] == 0.0


def test_touched_zero_row_moves_only_as_bcoo():
    """The documented difference: a looked-up row with an exactly zero gradient."""
    tx = fo.sparse_adam(lr=0.1)
    params = {"w": jnp.zeros((2, 2))}
    state = tx.init(params)
    _, state = tx.update({"w": _row_grad([0], [[1.0, 1.0]], (2, 2))}, state, params)
    zero_row = _row_grad([0], [[0.0, 0.0]], (2, 2))
    as_bcoo, bcoo_state = tx.update({"w": zero_row}, state, params)
    as_dense, dense_state = tx.update({"w": zero_row.todense()}, state, params)
    assert np.all(np.asarray(as_bcoo["w"][0]) < 0)
    np.testing.assert_array_equal(as_dense["w"], 0.0)
    np.testing.assert_array_equal(dense_state.exp_avg["w"], state.exp_avg["w"])
    # Ours m + (0 − m)·fl32(0.1): 2 roundings of weight ≤ 0.11 and the sum's; the float32 0.9·m: 2. ≤ 4 in all.
    np.testing.assert_allclose(bcoo_state.exp_avg["w"][0], 0.9 * state.exp_avg["w"][0], rtol=gamma32(4))

    weight = torch.zeros(2, 2, requires_grad=True)
    optimizer = torch.optim.SparseAdam([weight], lr=0.1)
    for value in (1.0, 0.0):
        weight.grad = torch.sparse_coo_tensor([[0]], torch.full((1, 2), value), (2, 2), check_invariants=True)
        optimizer.step()
    # Each side's update u_t is exact arithmetic on its own bias corrections up to its float32 roundings, none
    # cancelling: m (3), v (3, halved by √), √, eps, + eps, ÷, step size (ours: lr, √, ·, ÷; torch: one rounding of
    # its double), · u, + the other step: ≤ 15 ours, ≤ 12 torch's. Our bias corrections are float32 (−expm1(t·log1p(β
    # − 1)), not correctly rounded), torch's double: their relative difference here (bc2 under a √) adds to the bound.
    bc_error = max(
        abs(_float32_bias_correction(0.9, t) / (1 - 0.9**t) - 1)
        + abs(_float32_bias_correction(0.999, t) / (1 - 0.999**t) - 1) / 2
        for t in (1, 2)
    )
    bound = gamma32(15) + gamma32(12) + bc_error
    np.testing.assert_allclose(weight.detach().numpy(), as_bcoo["w"] + _first_step(tx), rtol=bound)


def _float32_bias_correction(beta, step):
    """Ours in float32: ``1 − beta**step`` as ``−expm1(step·log1p(beta − 1))`` (functional_optreg._scalars)."""
    return float(-jnp.expm1(step * jnp.log1p(jnp.float32(beta - 1.0))))


def _first_step(tx):
    params = {"w": jnp.zeros((2, 2))}
    updates, _ = tx.update({"w": _row_grad([0], [[1.0, 1.0]], (2, 2))}, tx.init(params), params)
    return updates["w"]


def test_elementwise_indices_and_dense_trailing_dims():
    tx = fo.sparse_adam(lr=0.1)
    params = {"m": jnp.zeros((2, 3)), "t": jnp.zeros((3, 2, 2))}
    grads = {
        "m": sparse.BCOO((jnp.ones(2), jnp.array([[0, 1], [1, 2]])), shape=(2, 3)),
        "t": sparse.BCOO((jnp.ones((1, 2, 2)), jnp.array([[1]])), shape=(3, 2, 2)),
    }
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["m"]) != 0, [[False, True, False], [False, False, True]])
    np.testing.assert_array_equal(np.asarray(updates["t"]).any(axis=(1, 2)), [False, True, False])


def test_batched_bcoo_is_rejected():
    tx = fo.sparse_adam()
    params = {"w": jnp.zeros((2, 3))}
    grad = sparse.BCOO.fromdense(jnp.ones((2, 3)), n_batch=1)
    with pytest.raises(ValueError, match="n_batch=1"):
        tx.update({"w": grad}, tx.init(params), params)


def test_mismatched_bcoo_shape_names_the_path():
    tx = fo.sparse_adam()
    params = {"w": jnp.zeros((2, 3))}
    with pytest.raises(ValueError, match=r"\['w'\]"):
        tx.update({"w": _row_grad([0], [[1.0, 1.0]], (4, 2))}, tx.init(params), params)


def test_embedding_lookup_gradients_match_torch_sparse_embedding():
    """The intended use: per-lookup gradients as a BCOO, against nn.Embedding(sparse=True)."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(9, 3))
    lookups = rng.integers(0, 9, size=(25, 4))
    targets = rng.normal(size=(25, 4, 3))

    weight = torch.tensor(table, requires_grad=True)
    optimizer = torch.optim.SparseAdam([weight], lr=0.05, betas=(0.8, 0.95))
    tx = fo.sparse_adam(lr=0.05, betas=(0.8, 0.95))

    def rows_loss(rows, target):
        return jnp.sum(jnp.tanh(rows - target) ** 2)

    @jax.jit
    def step(params, state, ids, target):
        row_grads = jax.grad(rows_loss)(params["emb"][ids], target)
        grad = sparse.BCOO((row_grads, ids[:, None]), shape=params["emb"].shape)
        updates, state = tx.update({"emb": grad}, state, params)
        return optax.apply_updates(params, updates), state

    # Each side differentiates tanh itself, so the gradients differ by rounding, not only by the
    # params: every step is taken from torch's exact table and moments (the contract's per-step
    # rule), where our gradient is within a few ulps of torch's row terms, which moves Adam's step
    # by lr·δg/(√v̂ + eps) ≪ 1e-12 of the table, while a wrong rule moves it by far more.
    with jax.enable_x64(True):
        state = tx.init({"emb": jnp.asarray(table)})
        for count, (ids, target) in enumerate(zip(lookups, targets)):
            before = {"emb": jnp.asarray(weight.detach().numpy().copy())}
            moments = optimizer.state.get(weight, {})
            synced = state._replace(
                step=jax.tree.map(lambda s: jnp.full_like(s, count), state.step),
                **{key: {"emb": jnp.asarray(moments[key].numpy())} for key in ("exp_avg", "exp_avg_sq") if moments},
            )
            optimizer.zero_grad()
            rows = F.embedding(torch.as_tensor(ids), weight, sparse=True)
            torch.sum(torch.tanh(rows - torch.as_tensor(target)) ** 2).backward()
            optimizer.step()
            ours, _ = step(before, synced, jnp.asarray(ids), jnp.asarray(target))
            theirs = weight.detach().numpy()
            error = relative_error(ours["emb"], theirs)
            assert error <= verify.FLOAT64_RTOL, f"step {count + 1}: {error:.2e}"
        assert not np.allclose(theirs, table)


def test_dense_gradient_touches_whole_rows():
    # A touched row's zero entries still decay their moments and move, as in torch's row-sparse
    # gradients: the dense path must agree with the BCOO that lists the row.
    tx = fo.sparse_adam(lr=0.1)
    params = {"w": jnp.zeros((3, 2))}
    state = tx.init(params)
    _, state = tx.update({"w": _row_grad([1], [[1.0, 1.0]], (3, 2))}, state, params)
    partly_zero = _row_grad([1], [[2.0, 0.0]], (3, 2))
    as_bcoo = tx.update({"w": partly_zero}, state, params)
    as_dense = tx.update({"w": partly_zero.todense()}, state, params)
    jax.tree.map(np.testing.assert_array_equal, as_dense, as_bcoo)
    assert as_dense[0]["w"][1, 1] < 0
