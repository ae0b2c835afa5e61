"""Scalar helpers: learning rates that may be schedules, bias corrections, step counters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from functional_optreg._types import ScalarOrSchedule


def value_at(hyperparameter: ScalarOrSchedule, count: jax.Array) -> Any:
    """The hyperparameter's value for the update whose 0-based index is ``count``.

    A float or JAX scalar is returned as is; a schedule is called with ``count`` (optax's
    convention: the first update sees ``schedule(0)``, like torch's scheduler at epoch 0).
    """
    if callable(hyperparameter):
        return hyperparameter(count)
    return hyperparameter


def bias_correction(beta: Any, step: jax.Array) -> jax.Array:
    """``1 − beta**step`` as torch evaluates it in Python double precision.

    With ``jax_enable_x64`` on it is that very expression (XLA's double ``pow`` rounds like C's).
    Its subtraction cancels (``1 − 0.999**2`` keeps the power's rounding error, up to ~1e-13
    relative), and torch's step carries that error, so a more accurate form would differ from
    torch by as much: invisible while steps are small against the parameters, but over 1e-12 once
    they are not (parameters at 1e-8 with lr 0.01, found by the fuzzer). In float32, where the
    same expression would lose three digits more than torch's double, ``−expm1(step·log1p(beta −
    1))`` gives the double value to within a few float32 ulps (XLA:CPU's ``expm1``/``log1p`` are
    not correctly rounded: measured up to 1.2 ulps for beta 0.9, 2.2 for 0.99 and 3.5 for 0.999
    over steps up to 20,000).
    """
    step = jnp.asarray(step, dtype=jnp.result_type(float))
    if step.dtype == jnp.float64:
        return 1.0 - jnp.power(beta, step)
    return -jnp.expm1(step * jnp.log1p(beta - 1.0))


def is_float32_tensor_lr(lr: Any) -> bool:
    """True for a learning rate given as a float32 array (torch's ``lr=torch.tensor(0.01)``).

    Torch then evaluates the scalar expressions that combine the lr with Python floats
    (``lr / bias_correction1``, ``1 - lr * weight_decay``, ASGD's ``eta``) as float32 tensor
    arithmetic, each Python float rounded to float32 first; the optimizers mirror that when this
    is true, whatever the parameters' dtype. Python numbers, schedules and arrays of other
    dtypes (including ``optax.inject_hyperparams``'s, which take the parameters' dtype) are not.
    """
    if callable(lr) or isinstance(lr, (bool, int, float)):
        return False
    return jnp.result_type(lr) == jnp.float32 and not getattr(lr, "weak_type", False)


def as_float32_if(value: Any, condition: bool) -> Any:
    """``value`` rounded to float32 when ``condition`` (a float32 tensor lr's arithmetic)."""
    return jnp.asarray(value, jnp.float32) if condition else value


def decay_factor(lr_t: Any, weight_decay: Any, float32_lr: bool) -> Any:
    r"""torch's ``1 - lr * weight_decay``, the factor of a decoupled weight decay
    (``param.mul_(1 - lr * weight_decay)``).

    For a float32 tensor lr torch evaluates it as float32 tensor arithmetic and rounds twice:
    :math:`\mathrm{fl}_{32}(1 - \mathrm{fl}_{32}(\gamma\,\mathrm{fl}_{32}(\lambda)))`. XLA:CPU
    lets LLVM contract ``1 - a * b`` into one fused multiply-add, rounded once, one float32 ulp
    of the factor off torch's (6e-8 relative: outside float64's contract for float64 parameters;
    found by the fuzzer). Neither an optimization barrier nor a detour through float64 (LLVM
    narrows it back) nor a bitcast stops that; a select on the product does: LLVM cannot
    contract through it, and it changes no value (a NaN product stays NaN).
    """
    if not float32_lr:
        return 1 - lr_t * weight_decay
    product = lr_t * jnp.asarray(weight_decay, jnp.float32)
    return 1 - jnp.where(jnp.isnan(product), jnp.nan, product)


def increment(step: jax.Array) -> jax.Array:
    """Add one to an int32 step counter, saturating instead of wrapping around."""
    return jnp.where(step < jnp.iinfo(jnp.int32).max, step + 1, step)


def zero_step() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def is_zero(value: Any) -> bool:
    """True only for a concrete hyperparameter equal to zero (a traced one may not be zero)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return False
    return float(value) == 0.0


def is_known_nonzero(value: Any) -> bool:
    """True only for a concrete hyperparameter different from zero (a traced one may be zero)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return False
    return float(value) != 0.0


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight·(end − start)`` evaluated the way torch's ``lerp`` kernel does.

    Torch switches to ``end − (end − start)·(1 − weight)`` for ``weight >= 0.5`` to keep the
    result exact at ``weight == 1``, and casts a Python ``weight`` to the tensor's dtype (its
    float32 compute type for half types) before either branch; mirroring both keeps float32
    results bit-compatible.
    """
    small = abs(weight) < 0.5 if isinstance(weight, (int, float)) else None
    dtype = jnp.promote_types(jnp.result_type(start), jnp.float32)
    weight = jnp.asarray(weight, dtype)
    low = start + weight * (end - start)
    high = end - (end - start) * (1 - weight)
    if small is not None:
        return low if small else high
    return jnp.where(jnp.abs(weight) < 0.5, low, high)
