r"""Dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``.

The loss is multiplied by a scale :math:`S` before differentiation so that small float16
gradients do not underflow; the wrapped optimizer sees the gradients divided by :math:`S` again,
and a step whose gradients overflowed is skipped while :math:`S` backs off. With :math:`G` the
gradients of the scaled loss, :math:`k` the growth tracker, :math:`\gamma` the growth factor,
:math:`\beta` the backoff factor and :math:`N` the growth interval:

.. math::

    \text{found\_inf} &= \exists\, G_i \notin \mathbb{R} \\
    g &= G \cdot \operatorname{fp32}(1 / S) \\
    (u_t, s_t) &= \begin{cases} (0, s_{t-1}) & \text{found\_inf} \\
        \mathrm{tx.update}(g, s_{t-1}) & \text{otherwise} \end{cases} \\
    (S, k) &\leftarrow \begin{cases} (\beta S, 0) & \text{found\_inf} \\
        (\gamma S \text{ if finite, else } S,\ 0) & k + 1 = N \\
        (S, k + 1) & \text{otherwise} \end{cases}

Torch's ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()`` becomes::

    loss, grads = jax.value_and_grad(lambda p: fo.scale_loss(loss_fn(p), state))(params)
    updates, state = tx.update(grads, state, params)   # unscale, skip or step, update the scale

:func:`grad_scaler_state_dict` and :func:`grad_scaler_from_torch` move the scaler's state to and
from torch's ``GradScaler.state_dict()``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class GradScalerState(NamedTuple):
    """State of :func:`grad_scaler`; the first five fields are ``GradScaler.state_dict()``'s entries.

    Attributes:
      scale: the current loss scale, a float32 scalar (torch's ``_scale``).
      growth_tracker: consecutive unskipped steps since the last growth or backoff, int32
        (torch's ``_growth_tracker``).
      growth_factor, backoff_factor: the scale's factors, float64 under ``jax_enable_x64`` (as
        torch's Python floats) and float32 otherwise; changeable between jitted steps like
        torch's ``set_growth_factor`` / ``set_backoff_factor``.
      growth_interval: int32, changeable like torch's ``set_growth_interval``.
      found_inf: whether the latest step's gradients were non-finite (its update was skipped).
      inner_state: the wrapped optimizer's state.
    """

    scale: jax.Array
    growth_tracker: jax.Array
    growth_factor: jax.Array
    backoff_factor: jax.Array
    growth_interval: jax.Array
    found_inf: jax.Array
    inner_state: Any


def _validate(init_scale: Any, growth_factor: Any, backoff_factor: Any, growth_interval: Any) -> None:
    # torch's own checks (as AssertionError there); the other two go beyond torch, where a
    # non-positive scale or interval silently never trains or never grows.
    if growth_factor <= 1.0:
        raise ValueError("The growth factor must be > 1.0.")
    if backoff_factor >= 1.0:
        raise ValueError("The backoff factor must be < 1.0.")
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale must be a positive finite number, got {init_scale}")
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
        raise ValueError(f"growth_interval must be a positive int, got {growth_interval!r}")


def _unscale_dtype_check(grads: Any) -> None:
    flat, _ = jax.tree_util.tree_flatten_with_path(grads)
    for path, leaf in flat:
        if jnp.result_type(leaf) == jnp.float16:
            raise ValueError(
                f"Attempting to unscale FP16 gradients. (grads at {jax.tree_util.keystr(path) or '<root>'}; keep "
                "float32 master weights with fo.mixed_precision(fo.grad_scaler(tx)), as torch needs float32 params)"
            )


def grad_scaler(
    tx: optax.GradientTransformation,
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
    enabled: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Wrap ``tx`` with torch's dynamic loss scaling (see the module docstring for the rule).

    The returned transform's ``update`` takes the gradients of :func:`scale_loss`'s scaled loss,
    unscales them, skips ``tx`` entirely (updates zero, ``tx``'s state and step counters
    untouched) when any element is ``nan``/``inf``, and updates the scale.

    Args:
      tx: the optimizer (any transform, chains, clipping and schedules included); it sees the
        unscaled gradients, as a torch optimizer after ``scaler.unscale_``.
      init_scale, growth_factor, backoff_factor, growth_interval, enabled: as
        ``torch.amp.GradScaler``. ``enabled=False`` keeps the state's scale at 1 and passes the
        gradients to ``tx`` unchanged, never skipping.

    Returns:
      A transform whose state is :class:`GradScalerState`.

    Raises:
      ValueError: torch's ``"The growth factor must be > 1.0."`` / ``"The backoff factor must be
        < 1.0."``, a non-positive ``init_scale`` or ``growth_interval``; at ``update``, float16
        gradients (torch's ``"Attempting to unscale FP16 gradients."``).

    PyTorch equivalence:
      ``torch.amp.GradScaler(device, init_scale, growth_factor, backoff_factor,
      growth_interval, enabled)`` with ``scaler.scale(loss)``, ``scaler.step(optimizer)`` and
      ``scaler.update()`` once per iteration. The scale is float32; ``1/S`` is taken in float64
      and rounded to float32 and the factors multiply in float64, as torch's kernels do, when
      ``jax_enable_x64`` is on. Without it both are float32 operations: ``1/S`` still equals
      torch's (rounding a quotient through float64, which has more than 2·24 + 2 bits, gives the
      correctly rounded float32 quotient), and so do the scale's products whenever the factors
      are float32-representable, as the defaults are (the float64 product of two float32
      numbers is exact); other factors are rounded to float32 first. Unlike torch,
      ``growth_interval`` and ``init_scale`` must be positive.

    Example:
      >>> import jax, jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.grad_scaler(fo.sgd(lr=0.1), init_scale=4.0, growth_interval=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> grads = jax.grad(lambda p: fo.scale_loss(jnp.sum(p["w"] ** 2), state))(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> updates["w"], state.scale, state.growth_tracker
      (Array([-0.2, -0.2], dtype=float32), Array(4., dtype=float32), Array(1, dtype=int32))
      >>> _, state = tx.update({"w": jnp.array([1.0, jnp.inf])}, state, params)
      >>> state.scale, state.found_inf, state.inner_state.step
      (Array(2., dtype=float32), Array(True, dtype=bool), Array(1, dtype=int32))
    """
    if enabled:
        _validate(init_scale, growth_factor, backoff_factor, growth_interval)
    inner = optax.with_extra_args_support(tx)

    def init_fn(params: Any) -> GradScalerState:
        # torch's factors are Python floats: float64 when x64 is on, else float32 (not weakly typed, so a
        # state._replace(growth_factor=jnp.asarray(x, state.growth_factor.dtype)) reuses the compiled step)
        factor_dtype = jnp.result_type(float)
        return GradScalerState(
            scale=jnp.asarray(init_scale if enabled else 1.0, jnp.float32),
            growth_tracker=jnp.zeros((), jnp.int32),
            growth_factor=jnp.asarray(growth_factor, factor_dtype),
            backoff_factor=jnp.asarray(backoff_factor, factor_dtype),
            growth_interval=jnp.asarray(growth_interval, jnp.int32),
            found_inf=jnp.zeros((), bool),
            inner_state=inner.init(params),
        )

    def update_fn(updates: Any, state: GradScalerState, params: Any = None, **extra_args: Any):
        if not enabled:
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            return updates, state._replace(inner_state=inner_state)
        _unscale_dtype_check(updates)
        leaves = jax.tree.leaves(updates)
        found_inf = jnp.logical_not(jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])))
        wide = state.growth_factor.dtype
        inv_scale = (1.0 / state.scale.astype(wide)).astype(jnp.float32)
        unscaled = jax.tree.map(lambda g: g * inv_scale.astype(g.dtype), updates)
        new_updates, new_inner = inner.update(unscaled, state.inner_state, params, **extra_args)
        updates = jax.tree.map(lambda u: jnp.where(found_inf, jnp.zeros_like(u), u), new_updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(found_inf, old, new), new_inner, state.inner_state)
        scale, tracker = _update_scale(state, found_inf)
        return updates, state._replace(
            scale=scale, growth_tracker=tracker, found_inf=found_inf, inner_state=inner_state
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _update_scale(state: GradScalerState, found_inf: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch's ``_amp_update_scale_`` kernel: back off on overflow, grow after ``growth_interval`` clean steps."""
    wide = state.scale.astype(state.growth_factor.dtype)
    backed_off = (wide * state.backoff_factor).astype(jnp.float32)
    grown = (wide * state.growth_factor).astype(jnp.float32)
    successful = state.growth_tracker + 1
    grow = successful == state.growth_interval
    clean_scale = jnp.where(grow & jnp.isfinite(grown), grown, state.scale)
    clean_tracker = jnp.where(grow, jnp.zeros_like(successful), successful)
    scale = jnp.where(found_inf, backed_off, clean_scale)
    tracker = jnp.where(found_inf, jnp.zeros_like(successful), clean_tracker)
    return scale, tracker


def _find_scaler_state(state: Any) -> GradScalerState | None:
    if isinstance(state, GradScalerState):
        return state
    children = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for child in children:
        found = _find_scaler_state(child)
        if found is not None:
            return found
    return None


def scale_loss(loss: Any, state: Any) -> jax.Array:
    """``loss`` times the current scale, as ``scaler.scale(loss)`` (float16 losses give float32, as in torch).

    ``state`` is a :class:`GradScalerState` or any optimizer state holding one (e.g. the state of
    ``fo.mixed_precision(fo.grad_scaler(tx))``); the first one found is used.
    """
    found = _find_scaler_state(state)
    if found is None:
        raise ValueError(f"scale_loss needs the state of a fo.grad_scaler transform; got a {type(state).__name__}")
    return loss * found.scale


def grad_scaler_state_dict(state: GradScalerState) -> dict[str, Any]:
    """torch's ``GradScaler.state_dict()`` for ``state`` (load it with ``scaler.load_state_dict``)."""
    return {
        "scale": float(state.scale),
        "growth_factor": float(state.growth_factor),
        "backoff_factor": float(state.backoff_factor),
        "growth_interval": int(state.growth_interval),
        "_growth_tracker": int(state.growth_tracker),
    }


def grad_scaler_from_torch(scaler: Any, tx: optax.GradientTransformation, params: Any) -> tuple[Any, GradScalerState]:
    """``(transform, state)`` continuing ``torch.amp.GradScaler`` ``scaler`` around ``tx``.

    The state's inner state is ``tx.init(params)``; replace it (``state._replace(inner_state=...)``)
    with a converted optimizer state to resume both. A disabled scaler gives
    ``grad_scaler(tx, enabled=False)``.
    """
    if not scaler.is_enabled():
        transform = grad_scaler(tx, enabled=False)
        return transform, transform.init(params)
    saved = scaler.state_dict()
    transform = grad_scaler(
        tx,
        init_scale=saved["scale"],
        growth_factor=saved["growth_factor"],
        backoff_factor=saved["backoff_factor"],
        growth_interval=saved["growth_interval"],
    )
    state = transform.init(params)
    return transform, state._replace(growth_tracker=jnp.asarray(saved["_growth_tracker"], jnp.int32))
