"""The object every lr-scheduler factory returns, and the checks the factories share."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_optreg import _validation

KINDS = ("multiplicative", "affine", "absolute", "composite")


def _default_restarted(schedule: TorchSchedule) -> Callable[[jax.Array, Callable[[], Any]], Any]:
    return lambda epoch, previous: schedule.at_epoch(epoch)


@dataclasses.dataclass(frozen=True, eq=False)
class TorchSchedule:
    r"""A ``torch.optim.lr_scheduler`` scheduler as a pure function of the update count.

    ``schedule(count)`` is the learning rate of the update whose 0-based index is ``count``: the
    value torch's scheduler has written into ``param_groups[i]["lr"]`` after
    ``count // steps_per_epoch`` calls of ``scheduler.step()``. Pass it as an optimizer's ``lr``
    (the first update uses ``schedule(0)``, as in optax); it works under ``jit`` and ``vmap`` and
    returns JAX's default float (float64 under ``jax_enable_x64``).

    Torch computes most lrs recursively, from the lr the previous step left in the param group.
    Besides the closed form (:attr:`at_epoch`), the object keeps that recursion as pure functions
    of the incoming lr (:attr:`initial`, :attr:`step`), which :func:`chained_scheduler` and
    :func:`sequential_lr` replay where torch's recursion departs from the closed forms.

    Attributes:
      name: the torch class it mirrors, e.g. ``"StepLR"``.
      lr: the optimizer's base lr (torch's ``base_lrs``); ``None`` for the schedulers that set
        their own (``CyclicLR``, ``OneCycleLR``).
      steps_per_epoch: updates per scheduler step.
      at_epoch: ``epoch -> lr`` for an integer epoch (torch's ``last_epoch``).
      kind: how torch's ``get_lr`` uses the lr already in the param group: ``"multiplicative"``
        (scales it), ``"affine"`` (``CosineAnnealingLR``), ``"absolute"`` (ignores it) or
        ``"composite"`` (``SequentialLR`` / ``ChainedScheduler``).
      initial: the constructor's step: ``lr_in -> lr`` at epoch 0.
      step: ``(epoch, lr_in) -> lr``, torch's ``get_lr`` at an epoch ``>= 1``.
      restarted: ``(k, previous) -> lr`` at local epoch ``k`` after a ``SequentialLR`` milestone,
        where ``previous()`` gives the lr just before the milestone (torch's ``_update_lr(0)``
        followed by ``k`` steps).
      restart_error: the exception torch raises when a ``SequentialLR`` milestone restarts this
        configuration, or ``None``.
      members: the schedules a ``ChainedScheduler`` / ``SequentialLR`` combines (else empty).
    """

    name: str
    lr: float | None
    at_epoch: Callable[[jax.Array], Any]
    kind: str
    initial: Callable[[Any], Any] | None = None
    step: Callable[[jax.Array, Any], Any] | None = None
    restarted: Callable[[jax.Array, Callable[[], Any]], Any] | None = None
    restart_error: Exception | None = None
    steps_per_epoch: int = 1
    members: tuple[TorchSchedule, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.restarted is None:
            object.__setattr__(self, "restarted", _default_restarted(self))

    def __call__(self, count: Any) -> jax.Array:
        epoch = as_count(count)
        if self.steps_per_epoch != 1:
            epoch = epoch // self.steps_per_epoch
        return jnp.asarray(self.at_epoch(epoch), dtype=float_dtype())


def float_dtype() -> Any:
    """JAX's default float: float64 under ``jax_enable_x64``, else float32."""
    return jnp.result_type(float)


def as_count(count: Any) -> jax.Array:
    """An integer count in JAX's default int (int64 under x64, so that ``epoch / 10`` in a user's
    lambda is a float64 division as in torch); a float count is floored."""
    count = jnp.asarray(count)
    if not jnp.issubdtype(count.dtype, jnp.integer):
        count = jnp.floor(count)
    return count.astype(int_dtype())


def int_dtype() -> Any:
    """JAX's default int, the dtype of epochs: int64 under ``jax_enable_x64``, else int32."""
    return jnp.result_type(int)


def zero_epoch() -> jax.Array:
    return jnp.zeros([], int_dtype())


def as_float(value: Any) -> jax.Array:
    """``value`` in the default float dtype (an int32 epoch divided by an int is only float32)."""
    return jnp.asarray(value, float_dtype())


def check_base_lr(lr: Any) -> float:
    """The optimizer's base lr, as torch's optimizer validates it; returned as a Python float."""
    if callable(lr):
        raise TypeError(
            "lr must be the optimizer's base learning rate (a number), not a schedule: torch "
            "schedulers read it from param_groups[i]['initial_lr']."
        )
    if _validation.is_traced(lr):
        raise TypeError("lr must be a concrete number, not a traced value.")
    _validation.check_lr(lr)
    return float(np.asarray(lr))


def check_steps_per_epoch(steps_per_epoch: Any) -> int:
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, numbers.Integral) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    return int(steps_per_epoch)


def check_lr_lambda(lr_lambda: Any) -> Callable[[jax.Array], Any]:
    """One jnp-traceable function of the epoch; torch's per-group lists map to param groups."""
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != 1:
            raise ValueError(
                f"Expected 1 lr_lambdas, but got {len(lr_lambda)} (one schedule serves one param "
                "group; build one schedule per group)"
            )
        (lr_lambda,) = lr_lambda
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    return lr_lambda


def check_traceable(fn: Callable[[jax.Array], Any], what: str) -> Callable[[jax.Array], Any]:
    """``fn``, once traced on an abstract integer epoch: schedules run inside jitted updates, so a
    function that only works on Python numbers fails here, at construction, naming itself."""
    try:
        jax.eval_shape(fn, jax.ShapeDtypeStruct((), int_dtype()))
    except Exception as error:  # noqa: BLE001 - any failure means it cannot run under jit
        name = getattr(fn, "__qualname__", type(fn).__name__)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{what} {name!r} is not jnp-traceable, so it cannot run inside a jitted update "
            f"({type(error).__name__}: {detail}). It is called with a traced integer epoch: "
            "write Python branches on it with jnp.where (`1.0 if e < w else 0.5` → "
            "`jnp.where(e < w, 1.0, 0.5)`), min/max with jnp.minimum/jnp.maximum and math.* "
            "with jnp.*."
        ) from error
    return fn


def check_single(name: str, value: Any) -> Any:
    """Torch accepts one value per param group; a schedule serves one group."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. {name} has "
                f"{len(value)} values, param_groups has 1."
            )
        (value,) = value
    return value
