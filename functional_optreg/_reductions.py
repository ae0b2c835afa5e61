"""Reductions that propagate NaN as torch's do.

``jnp.max`` / ``jnp.min`` lower to XLA's ``reduce`` with ``max`` / ``min``; on CPU (jaxlib 0.10.2)
the vectorised reduction drops NaN once an array (or a reduced axis) is long enough: ``jnp.max``
of a (64, 28, 28, 32) array with one NaN returns the largest finite element, as does an axis of
32. Torch's ``amax`` / ``amin`` / ``vector_norm(x, ±inf)`` return NaN. These helpers restore
torch's result with an explicit NaN test (``isnan`` and ``any`` are exact on every path).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _nan_if_any_nan(x: jax.Array, reduced: jax.Array) -> jax.Array:
    return jnp.where(jnp.any(jnp.isnan(x)), jnp.asarray(jnp.nan, reduced.dtype), reduced)


def amax(x: Any, initial: Any) -> jax.Array:
    """``torch.amax(x)`` over all elements (``initial`` for an empty ``x``): NaN if any element is."""
    x = jnp.asarray(x)
    return _nan_if_any_nan(x, jnp.max(x, initial=initial))


def amin(x: Any, initial: Any) -> jax.Array:
    """``torch.amin(x)`` over all elements (``initial`` for an empty ``x``): NaN if any element is."""
    x = jnp.asarray(x)
    return _nan_if_any_nan(x, jnp.min(x, initial=initial))
