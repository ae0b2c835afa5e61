"""torch.optim.SparseAdam: an embedding model with sparse lookups, and explicit COO gradients.

Two streams drive the comparison:

* *Embedding*: matrix factorisation with a user table, an item table and a zero-initialised
  per-item bias table. Each step looks up a few rows (with repeats); torch differentiates through
  ``F.embedding(..., sparse=True)``, which hands SparseAdam one uncoalesced sparse row per lookup,
  exactly as ``nn.Embedding(sparse=True)`` does. Our side gets ``jax.grad``'s dense gradient (the
  dense path), or that gradient re-expressed as a BCOO over the step's lookups (the BCOO path).
* *COO gradients*: the quadratic stream, sparsified identically on both sides from per-step
  index tables: a 3-D table with sparse rows, a matrix with element-wise indices and a vector.
  Some indices appear twice with half the value each (the sums must be coalesced, not
  overwritten) and one index per leaf is stored with value zero (touched, so torch still moves
  it: the case only a BCOO gradient can express).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from jax.experimental import sparse as jsparse

import functional_optreg as fo
from functional_optreg import verify
from parity.case import Case
from parity.schedules_for_cases import exponential_lr

_TABLE_STEPS = 200
_USERS, _ITEMS, _DIM, _LOOKUPS = 12, 10, 4, 6


def _embedding_params():
    rng = np.random.default_rng(3)
    return {
        "item": 0.5 * rng.normal(size=(_ITEMS, _DIM)),
        "item_bias": np.zeros((_ITEMS, 1)),
        "user": 0.5 * rng.normal(size=(_USERS, _DIM)),
    }


def _lookups():
    """Per step: user ids, item ids (each with a repeat) and target ratings."""
    rng = np.random.default_rng(4)
    users = rng.integers(0, _USERS, size=(_TABLE_STEPS, _LOOKUPS))
    items = rng.integers(0, _ITEMS, size=(_TABLE_STEPS, _LOOKUPS))
    users[:, -1] = users[:, 0]
    items[:, -1] = items[:, 1]
    ratings = rng.normal(size=(_TABLE_STEPS, _LOOKUPS))
    return users, items, ratings


_USER_IDS, _ITEM_IDS, _RATINGS = _lookups()


def _factorisation_losses(sign):
    """``sign ·`` mean squared error of ``user·item + bias`` against the step's ratings."""

    def torch_loss(step, tensors):
        item, item_bias, user = tensors
        users = torch.as_tensor(_USER_IDS[step])
        items = torch.as_tensor(_ITEM_IDS[step])
        ratings = torch.as_tensor(_RATINGS[step], dtype=item.dtype)
        pred = (F.embedding(users, user, sparse=True) * F.embedding(items, item, sparse=True)).sum(-1)
        pred = pred + F.embedding(items, item_bias, sparse=True)[:, 0]
        return sign * ((pred - ratings) ** 2).mean()

    def jax_loss(step, params):
        users = jnp.asarray(_USER_IDS)[step]
        items = jnp.asarray(_ITEM_IDS)[step]
        ratings = jnp.asarray(_RATINGS, params["item"].dtype)[step]
        pred = (params["user"][users] * params["item"][items]).sum(-1) + params["item_bias"][items, 0]
        return sign * ((pred - ratings) ** 2).mean()

    return lambda params: verify.LossPair(torch_loss, jax_loss)


def _first_occurrences(ids):
    """Per step, 1.0 at the first lookup of each id and 0.0 at its repeats."""
    weights = np.zeros(ids.shape)
    for step, row in enumerate(ids):
        _, first = np.unique(row, return_index=True)
        weights[step, first] = 1.0
    return weights


def _lookup_tables():
    """Per leaf (in ``jax.tree.leaves`` order): the looked-up row ids and their weights."""
    return [(_ITEM_IDS[:, :, None], _first_occurrences(_ITEM_IDS))] * 2 + [
        (_USER_IDS[:, :, None], _first_occurrences(_USER_IDS))
    ]


def _with_bcoo_gradients(tables):
    """Wrap ``fo.sparse_adam`` so the dense gradients it receives reach it as BCOO gradients.

    ``tables`` gives, per leaf, the step's indices ``(steps, nse, n_sparse)`` and the weight of
    each stored value ``(steps, nse)``; the stored values are the dense gradient at those
    indices times the weights. The step's tables are picked with the wrapper's own counter.
    """

    def factory(**kwargs):
        inner = fo.sparse_adam(**kwargs)

        def init_fn(params):
            return (jnp.zeros([], jnp.int32), inner.init(params))

        def update_fn(grads, state, params=None):
            count, inner_state = state
            leaves, treedef = jax.tree.flatten(grads)
            sparse_leaves = []
            for grad, (indices, weights) in zip(leaves, tables):
                index = jnp.asarray(indices, jnp.int32)[count]
                weight = jnp.asarray(weights, grad.dtype)[count]
                values = grad[tuple(index.T)]
                values = values * weight.reshape(weight.shape + (1,) * (values.ndim - 1))
                sparse_leaves.append(jsparse.BCOO((values, index), shape=grad.shape))
            updates, inner_state = inner.update(treedef.unflatten(sparse_leaves), inner_state, params)
            return updates, (count + 1, inner_state)

        return optax.GradientTransformation(init_fn, update_fn)

    return factory


class _TorchSparseGradients:
    """Turns the dense ``.grad`` that the harness sets into the same COO gradient ours gets."""

    def __init__(self, optimizer, tensors, tables):
        self.optimizer, self.tensors, self.tables = optimizer, tensors, tables
        self.count = 0

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        for tensor, (indices, weights) in zip(self.tensors, self.tables):
            index = torch.as_tensor(indices[self.count])
            values = tensor.grad[tuple(index.T)]
            weight = torch.as_tensor(weights[self.count], dtype=values.dtype)
            values = values * weight.reshape(weight.shape + (1,) * (values.ndim - 1))
            tensor.grad = torch.sparse_coo_tensor(index.T, values, tensor.shape, check_invariants=True)
        self.optimizer.step()
        self.count += 1


def _torch_with_sparse_gradients(tables):
    def factory(tensors, **kwargs):
        return _TorchSparseGradients(torch.optim.SparseAdam(tensors, **kwargs), tensors, tables)

    return factory


def _coo_params():
    rng = np.random.default_rng(5)
    return {
        "matrix": rng.normal(size=(5, 4)),
        "table": rng.normal(size=(8, 3, 2)),
        "vector": np.zeros(10),
    }


def _coo_tables():
    """Per leaf: ``distinct`` indices per step, two of them stored twice with half the value
    each, and one more stored once with weight zero."""
    rng = np.random.default_rng(6)
    tables = []
    for sparse_shape, distinct in (((5, 4), 5), ((8,), 3), ((10,), 4)):
        positions = np.stack(
            [rng.choice(np.prod(sparse_shape), distinct + 1, replace=False) for _ in range(_TABLE_STEPS)]
        )
        weights = np.ones((_TABLE_STEPS, distinct + 3))
        order = np.concatenate([positions, positions[:, :2]], axis=1)
        weights[:, [0, 1, distinct + 1, distinct + 2]] = 0.5
        weights[:, distinct] = 0.0
        indices = np.stack(np.unravel_index(order, sparse_shape), axis=-1)
        tables.append((indices, weights))
    return tables


_LOOKUP_TABLES = _lookup_tables()
_COO_TABLES = _coo_tables()
_schedule, _torch_scheduler = exponential_lr(0.05, 0.97)


def _embedding_case(name, kwargs, sign=1.0, **extra):
    return Case(
        f"sparse_adam/embedding_{name}",
        fo.sparse_adam,
        torch.optim.SparseAdam,
        kwargs,
        params=_embedding_params,
        gradient=_factorisation_losses(sign),
        **extra,
    )


CASES = [
    _embedding_case("default", {}),
    _embedding_case("lr", dict(lr=0.05)),
    _embedding_case("betas", dict(lr=0.02, betas=(0.5, 0.9))),
    _embedding_case("eps", dict(lr=0.02, eps=1e-2)),
    _embedding_case("maximize", dict(lr=0.02, maximize=True), sign=-1.0),
    _embedding_case(
        "lr_schedule",
        {},
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.05),
        torch_scheduler=_torch_scheduler,
    ),
    Case(
        "sparse_adam/embedding_bcoo",
        _with_bcoo_gradients(_LOOKUP_TABLES),
        torch.optim.SparseAdam,
        dict(lr=0.05, betas=(0.8, 0.99)),
        params=_embedding_params,
        gradient=_factorisation_losses(1.0),
        property_tests=False,
    ),
    Case(
        "sparse_adam/coo_duplicates",
        _with_bcoo_gradients(_COO_TABLES),
        _torch_with_sparse_gradients(_COO_TABLES),
        dict(lr=0.05),
        params=_coo_params,
        property_tests=False,
    ),
    Case(
        "sparse_adam/coo_duplicates+maximize",
        _with_bcoo_gradients(_COO_TABLES),
        _torch_with_sparse_gradients(_COO_TABLES),
        dict(lr=0.02, betas=(0.7, 0.95), eps=1e-6, maximize=True),
        params=_coo_params,
        property_tests=False,
    ),
]
