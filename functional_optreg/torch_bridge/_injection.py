"""Bridged param groups keep their numeric hyperparameters in the state, as torch's param groups do.

Each group's optimizer is built inside ``optax.inject_hyperparams``: ``lr``, ``weight_decay``,
``betas``, ``eps``... live in ``state.hyperparams`` (a tuple such as ``betas`` as one array), where
``fo.set_hyperparams(state, group=g, lr=x)`` changes them between jitted updates as
``optimizer.param_groups[g]["lr"] = x`` does, and ``to_torch_state_dict`` writes them back.
Static (baked into the transform): booleans and ``None`` (flags such as ``maximize``, ``amsgrad``
or RMSprop's ``centered``, which torch reads at every step too; switching ``amsgrad`` or
``centered`` on mid-run makes torch look for state it never created), values a converted scheduler
drives (schedules), and the numbers a record names ``structural`` (Muon's ``ns_steps``, a loop
count). ``momentum`` of SGD and RMSprop is
settable: their state then keeps a buffer and a flag for whether torch's exists, so momentum
switched off freezes the buffer and switched on again resumes it, as in torch; SGD creates its
buffer at the first update with momentum, RMSprop only at the first update (it refuses momentum
switched on later, where torch raises ``KeyError``).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg.optimizers._records import OptimizerRecord


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def injectable(value: Any) -> bool:
    """A number, or a tuple of numbers (``betas``, Rprop's ``etas``)."""
    if isinstance(value, tuple):
        return bool(value) and all(_is_number(v) for v in value)
    return _is_number(value)


def _unpacking(factory: Callable[..., Any], packed: frozenset[str]) -> Callable[..., Any]:
    """``factory`` taking each name in ``packed`` as one array, passed on as a tuple."""

    def build(**kwargs: Any) -> Any:
        for name in packed:
            value = kwargs[name]
            kwargs[name] = tuple(value[i] for i in range(len(value)))
        return factory(**kwargs)

    build.__signature__ = inspect.signature(factory)  # type: ignore[attr-defined]
    build.__name__ = getattr(factory, "__name__", "factory")
    return build


def inject(
    record: OptimizerRecord,
    factory: Callable[..., Any],
    kwargs: Mapping[str, Any],
    fixed: frozenset[str],
    dtype: np.dtype,
) -> optax.GradientTransformationExtraArgs:
    """``factory(**kwargs)`` inside ``optax.inject_hyperparams``, its numbers held in ``dtype`` (see
    :func:`hyperparam_dtype`); names in ``fixed`` (driven by a scheduler), non-numeric values and
    the record's ``structural`` ones stay static."""
    static = []
    packed = []
    values = {}
    for name, value in kwargs.items():
        if name in fixed or name in record.structural or not injectable(value):
            static.append(name)
            values[name] = value
        elif isinstance(value, tuple):
            packed.append(name)
            values[name] = np.asarray(value, dtype=np.float64)
        else:
            # A float32 tensor (torch's lr=torch.tensor(0.01)) as a float32 array: settable, and
            # optax keeps its dtype (a numpy.float32 would be static, a float would widen).
            values[name] = jnp.asarray(value) if isinstance(value, np.float32) else float(value)
    build = _unpacking(factory, frozenset(packed))
    return optax.inject_hyperparams(build, static_args=tuple(static), hyperparam_dtype=dtype)(**values)


def hyperparam_dtype(params: Any) -> np.dtype:
    """The dtype of the injected hyperparameters: the parameters' widest, made real.

    optax's default is the parameters' widest dtype as is, so complex parameters (which torch's
    optimizers step through ``view_as_real``) would get complex hyperparameters, which the
    factories refuse (``lr must be a real number``); torch's are real Python numbers.

    Example:
      >>> import jax.numpy as jnp
      >>> hyperparam_dtype([jnp.zeros(2, jnp.complex64), jnp.zeros(1, jnp.float32)])
      dtype('float32')
    """
    return np.dtype(jnp.finfo(optax.tree.dtype(params, "highest")).dtype)


def is_injected(state: Any) -> bool:
    return isinstance(state, optax.InjectStatefulHyperparamsState)


def written_back(original: Mapping[str, Any], injected: Mapping[str, Any]) -> dict[str, Any]:
    """Torch's group entries for the current injected values, in the original Python types."""
    values: dict[str, Any] = {}
    for name, current in injected.items():
        if name not in original:
            continue
        before = original[name]
        current = np.asarray(current)
        if isinstance(before, tuple):
            values[name] = tuple(_like(b, v) for b, v in zip(before, current))
        else:
            values[name] = _like(before, current)
    return values


def _like(before: Any, current: np.ndarray) -> Any:
    """The original value where the state still holds it (in the state's dtype), else the new one."""
    if np.asarray(before, current.dtype) == current:
        return before
    value = float(current)
    if isinstance(before, numbers.Integral) and value.is_integer():
        return int(value)
    return value
