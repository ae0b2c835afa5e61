"""SparseAdam (lazy Adam) with torch.optim.SparseAdam's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.experimental import sparse as jsparse

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class SparseAdamState(NamedTuple):
    """State of :func:`sparse_adam`; fields follow torch's state keys.

    ``step`` counts update calls. Torch keeps one per parameter but increments every parameter's
    count on every ``step()`` that gives it a gradient, touched rows or not; a pytree update
    always gives every leaf a gradient, so one shared count is the same number.
    """

    step: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def _is_bcoo(leaf: Any) -> bool:
    return isinstance(leaf, jsparse.BCOO)


def _densify(grad: Any) -> tuple[jax.Array, jax.Array]:
    """The gradient as a dense array and the mask of the entries it touches (broadcastable).

    A BCOO gradient touches exactly its stored indices (explicit zeros included, duplicates
    summed by ``todense``, as torch's ``coalesce()`` sums them). A dense gradient touches the
    rows (slices along the first axis) that hold at least one nonzero; a 0-D gradient touches
    its only entry when it is nonzero.
    """
    if _is_bcoo(grad):
        if grad.n_batch:
            raise ValueError(f"sparse_adam takes BCOO gradients without batch dimensions, got n_batch={grad.n_batch}")
        sparse_shape = grad.shape[: grad.n_sparse]
        touched = jnp.zeros(sparse_shape, bool)
        touched = touched.at[tuple(grad.indices.T)].set(True, mode="drop")
        return grad.todense(), touched.reshape(sparse_shape + (1,) * grad.n_dense)
    grad = jnp.asarray(grad)
    if grad.ndim == 0:
        return grad, grad != 0
    touched = jnp.any(grad != 0, axis=tuple(range(1, grad.ndim)), keepdims=True)
    return grad, touched


def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    maximize: bool = False,
) -> optax.GradientTransformation:
    r"""Lazy Adam for sparse gradients, exactly as ``torch.optim.SparseAdam``.

    Only the entries a gradient touches (set :math:`S_t`) move: their moments and their
    parameters. With :math:`g_t` the gradient (negated if ``maximize``, duplicates summed) and
    :math:`t` the number of update calls so far:

    .. math::

        m_t[S_t] &= m_{t-1}[S_t] + (1 - \beta_1)(g_t[S_t] - m_{t-1}[S_t]) \\
        v_t[S_t] &= v_{t-1}[S_t] + (1 - \beta_2)(g_t[S_t]^2 - v_{t-1}[S_t]) \\
        \theta_t[S_t] &= \theta_{t-1}[S_t] - \gamma_t \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
            \cdot \frac{m_t[S_t]}{\sqrt{v_t[S_t]} + \epsilon}

    and every entry outside :math:`S_t` (parameter and moments) is left exactly as it was.

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count
        (must be positive, as torch requires).
      betas: :math:`(\beta_1, \beta_2)`; either may be a schedule.
      eps: :math:`\epsilon`, added to :math:`\sqrt{v}` (must be positive).
      maximize: ascend the objective instead of descending.

    Returns:
      An optax ``GradientTransformation``. Each gradient leaf may be a
      ``jax.experimental.sparse.BCOO`` (no batch dimensions) or a dense array.

    PyTorch equivalence:
      ``torch.optim.SparseAdam(params, lr, betas, eps, maximize=maximize)`` following
      ``torch.optim._functional.sparse_adam``. Two torch behaviours are kept on purpose: the bias
      corrections use the count of *all* update calls, not the number of times an entry was
      touched (a row first seen at call 10 is corrected with :math:`t = 10`), and eps is added to
      :math:`\sqrt{v}` without bias-correcting :math:`v` (the correction sits in the step size).

      *Which entries are touched.* A BCOO gradient gives torch's semantics exactly: its stored
      indices are touched, including explicitly stored zeros, and duplicate indices are summed
      first as ``grad.coalesce()`` does (``nn.Embedding(sparse=True)`` emits one entry per
      lookup). A dense gradient, such as ``jax.grad`` of an embedding lookup, cannot say which
      rows were looked up, so a row (a slice along the first axis; an element of a 1-D leaf) is
      touched when it holds any nonzero. This matches torch except for a looked-up row whose
      gradient is exactly zero: torch decays its moments and moves it by
      :math:`-\text{step size}\cdot m / (\sqrt v + \epsilon)`, the dense form leaves it alone.
      Pass a BCOO gradient when that matters. Unlike torch, dense gradients are not an error.
      The state is dense (as in torch) and so are the updates, for ``optax.apply_updates``.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> from jax.experimental import sparse
      >>> tx = fo.sparse_adam(lr=0.1)
      >>> params = {"embedding": jnp.zeros((3, 2))}
      >>> rows = jnp.array([[0], [2], [0]])  # row 0 looked up twice, row 1 not at all
      >>> grad = sparse.BCOO((jnp.ones((3, 2)), rows), shape=(3, 2))
      >>> updates, state = tx.update({"embedding": grad}, tx.init(params), params)
      >>> state.exp_avg["embedding"]  # duplicates summed; row 1 untouched
      Array([[0.2, 0.2],
             [0. , 0. ],
             [0.1, 0.1]], dtype=float32)
      >>> updates["embedding"].round(3)
      Array([[-0.1, -0.1],
             [ 0. ,  0. ],
             [-0.1, -0.1]], dtype=float32)
    """
    _validation.require(lr, lambda v: 0.0 < v, f"Invalid learning rate: {lr}", "lr")
    _validation.require(eps, lambda v: 0.0 < v, f"Invalid epsilon value: {eps}", "eps")
    _validation.check_betas(betas)
    beta1, beta2 = betas

    def init_fn(params):
        _tree.check_float_params(params)
        _tree.check_real_params(params, "SparseAdam", ValueError)
        return SparseAdamState(
            step=_scalars.zero_step(),
            exp_avg=_common.zeros_like_tree(params),
            exp_avg_sq=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        grad_leaves, treedef = jax.tree.flatten(grads, is_leaf=_is_bcoo)
        dense_leaves, touched_leaves = zip(*map(_densify, grad_leaves)) if grad_leaves else ((), ())
        dense = jax.tree.unflatten(treedef, dense_leaves)
        touched = jax.tree.unflatten(treedef, touched_leaves)
        _common.check_update_inputs("sparse_adam", dense, state.exp_avg, params)
        lr_t = _scalars.value_at(lr, state.step)
        beta1_t = _scalars.value_at(beta1, state.step)
        beta2_t = _scalars.value_at(beta2, state.step)
        step = _scalars.increment(state.step)
        step_size = lr_t * jnp.sqrt(_scalars.bias_correction(beta2_t, step))
        step_size = step_size / _scalars.bias_correction(beta1_t, step)

        def leaf(g, mask, exp_avg, exp_avg_sq):
            g = -g if maximize else g
            exp_avg_change = (g - exp_avg) * (1 - beta1_t)
            exp_avg_sq_change = (g * g - exp_avg_sq) * (1 - beta2_t)
            new_exp_avg = exp_avg + exp_avg_change
            new_exp_avg_sq = exp_avg_sq + exp_avg_sq_change
            denom = jnp.sqrt(new_exp_avg_sq) + eps
            update = -step_size * (new_exp_avg / denom)
            return (
                jnp.where(mask, update, 0),
                jnp.where(mask, new_exp_avg, exp_avg),
                jnp.where(mask, new_exp_avg_sq, exp_avg_sq),
            )

        updates, exp_avg, exp_avg_sq = _common.map_leaves(leaf, dense, touched, state.exp_avg, state.exp_avg_sq)
        return updates, SparseAdamState(step, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
