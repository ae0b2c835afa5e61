r"""Gradient clipping with torch.nn.utils.clip_grad_norm_ / clip_grad_value_ semantics.

Torch clips between ``backward()`` and ``optimizer.step()``; here the clipper is a transform
chained in front of the optimizer::

    tx = optax.chain(fo.clip_grad_norm(max_norm=1.0), fo.adam(lr=1e-3))

The total norm that ``clip_grad_norm_`` returns is kept in :class:`ClipGradNormState`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg import _device_errors, _reductions, _validation

_EPS = 1e-6
"""Torch's constant in ``clip_coef = max_norm / (total_norm + 1e-6)``."""


class ClipGradNormState(NamedTuple):
    """State of :func:`clip_grad_norm`.

    ``total_norm`` is the norm of the gradients seen by the latest update (before clipping), the
    value ``torch.nn.utils.clip_grad_norm_`` returns; 0 before the first update.
    """

    total_norm: jax.Array


def _nonfinite_message(norm_type: float) -> str:
    return (
        f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
        "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
        "norm anyway, set `error_if_nonfinite=False`"
    )


def vector_norm(x: jax.Array, norm_type: float) -> jax.Array:
    """``torch.linalg.vector_norm(x, norm_type)`` over all elements, in ``x``'s dtype.

    ``inf``/``-inf`` give the largest/smallest magnitude (NaN if any element is NaN, as in
    torch, also on arrays long enough for XLA's vectorised max, which drops NaN), 0 the number of
    non-zero elements, and any other ``p`` gives :math:`(\\sum |x|^p)^{1/p}`.
    """
    magnitude = jnp.abs(x)
    if norm_type == math.inf:
        return _reductions.amax(magnitude, initial=0)
    if norm_type == -math.inf:
        return _reductions.amin(magnitude, initial=jnp.inf).astype(magnitude.dtype)
    if norm_type == 0:
        return jnp.sum(magnitude != 0).astype(magnitude.dtype)
    if norm_type == 1:
        return jnp.sum(magnitude)
    if norm_type == 2:
        return jnp.sqrt(jnp.sum(magnitude * magnitude))
    return jnp.sum(magnitude**norm_type) ** (1.0 / norm_type)


def total_norm(tree: Any, norm_type: float = 2.0) -> jax.Array:
    """The norm of the norms of every leaf, as ``torch.nn.utils.get_total_norm`` forms it.

    Each leaf's norm is taken in the leaf's dtype; the norms are stacked (promoting to a common
    dtype, as ``torch.stack`` does) and the same norm is taken of that vector. An empty tree has
    norm 0.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.result_type(float))
    norms = [vector_norm(jnp.asarray(leaf), norm_type) for leaf in leaves]
    return vector_norm(jnp.stack(norms), norm_type)


def _check_finite_now(norm: Any, *, norm_type: float) -> None:
    if not np.all(np.isfinite(np.asarray(norm))):
        raise RuntimeError(_nonfinite_message(norm_type))


def _norm_dtype(tree: Any) -> Any:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.result_type(float)
    return jnp.result_type(*[jnp.result_type(leaf) for leaf in leaves])


def clip_grad_norm(
    max_norm: Any,
    norm_type: Any = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> optax.GradientTransformation:
    r"""Scale the whole gradient tree down so that its total norm is at most ``max_norm``.

    With :math:`\|\cdot\|_p` the ``norm_type`` norm, taken of every leaf and then of the vector
    of leaf norms:

    .. math::

        n &= \big\| (\|g_1\|_p, \dots, \|g_k\|_p) \big\|_p \\
        c &= \min\!\Big(\frac{\text{max\_norm}}{n + 10^{-6}},\; 1\Big), \qquad g_i \leftarrow c\, g_i

    Args:
      max_norm: the largest allowed total norm (a float or a JAX scalar).
      norm_type: :math:`p`; any float, ``inf`` / ``-inf`` (or ``"inf"``), 0 (count of non-zeros).
        It selects the formula, so it must be a concrete number.
      error_if_nonfinite: raise when the total norm is ``nan`` or ``±inf``. Outside ``jit`` the
        update raises torch's ``RuntimeError`` at once. Under ``jit`` (or ``vmap``/``scan``) the
        check runs on the device through ``jax.debug.callback``: the compiled call raises a
        ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``: jaxlib's prefix, one ``File`` line,
        then torch's message); call the compiled step inside
        :func:`functional_optreg.original_errors` to get torch's ``RuntimeError`` itself, message
        first.
      foreach: torch's implementation flag; accepted, no effect under XLA.

    Returns:
      An optax ``GradientTransformation``; its state :class:`ClipGradNormState` holds the total
      norm of the latest gradients (before clipping).

    PyTorch equivalence:
      ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type,
      error_if_nonfinite)`` called between ``backward()`` and ``step()``. Reproduced exactly:
      the norm of per-tensor norms, the norm kept in the gradients' dtype, the ``1e-6`` added to
      the norm (so gradients whose norm is close to ``max_norm`` are scaled by slightly less
      than 1, and tiny ``max_norm`` values are noticeably affected), the coefficient formed as
      ``max_norm · (n + 1e-6)⁻¹`` (torch's reflected division) and clamped to 1. A non-finite
      norm without ``error_if_nonfinite`` scales the gradients by ``nan`` (or by 0 when the
      norm is ``inf``), as in torch. Like torch, a negative ``max_norm`` is not rejected.
      optax's ``clip_by_global_norm`` differs (no ``1e-6``, 2-norm only).

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.clip_grad_norm(max_norm=1.0)
      >>> grads = {"w": jnp.array([3.0, 4.0])}
      >>> clipped, state = tx.update(grads, tx.init(grads))
      >>> clipped["w"], state.total_norm  # 1e-6 below [0.6, 0.8]: torch's eps, as in torch
      (Array([0.5999999 , 0.79999983], dtype=float32), Array(5., dtype=float32))
    """
    _validation.check_implementation_flags(foreach=foreach)
    if _validation.is_traced(norm_type):
        raise TypeError(
            "clip_grad_norm: `norm_type` selects the norm's formula and must be a concrete number, "
            "got a traced value; with optax.inject_hyperparams pass static_args=('norm_type',)."
        )
    norm_type = float(norm_type)
    if not (_validation.is_traced(max_norm) or isinstance(max_norm, jax.Array)):
        max_norm = float(max_norm)

    def init_fn(params):
        return ClipGradNormState(total_norm=jnp.zeros([], _norm_dtype(params)))

    def update_fn(updates, state, params=None):
        del params
        norm = total_norm(updates, norm_type)
        if error_if_nonfinite:
            _device_errors.check(functools.partial(_check_finite_now, norm_type=norm_type), norm)
        clip_coef = jnp.reciprocal(norm + _EPS) * max_norm
        clip_coef_clamped = jnp.minimum(clip_coef, 1.0)
        updates = jax.tree.map(lambda g: (g * clip_coef_clamped).astype(jnp.result_type(g)), updates)
        return updates, ClipGradNormState(total_norm=norm.astype(state.total_norm.dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def clip_grad_value(clip_value: Any, foreach: bool | None = None) -> optax.GradientTransformation:
    r"""Clamp every gradient element to ``[-clip_value, clip_value]``.

    .. math::

        g \leftarrow \min(\max(g, -c), c)

    Args:
      clip_value: :math:`c`, a float or a JAX scalar.
      foreach: torch's implementation flag; accepted, no effect under XLA.

    Returns:
      An optax ``GradientTransformation`` (stateless); chain it before the optimizer.

    PyTorch equivalence:
      ``torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)`` between ``backward()``
      and ``step()``. The lower bound is applied first, then the upper one, as torch's
      ``clamp_min_`` / ``clamp_max_`` do, so a negative ``clip_value`` (which torch accepts) sets
      every element to ``clip_value``; ``nan`` stays ``nan``. This is exactly
      ``optax.clip(clip_value)``, which is what is returned (the parity catalog proves it).

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.clip_grad_value(0.5)
      >>> grads = {"w": jnp.array([-2.0, 0.25, 1.0])}
      >>> tx.update(grads, tx.init(grads))[0]["w"]
      Array([-0.5 ,  0.25,  0.5 ], dtype=float32)
    """
    _validation.check_implementation_flags(foreach=foreach)
    if not (_validation.is_traced(clip_value) or isinstance(clip_value, jax.Array)):
        clip_value = float(clip_value)
    return optax.clip(clip_value)
