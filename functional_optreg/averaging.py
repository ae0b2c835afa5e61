r"""Weight averaging with torch.optim.swa_utils semantics: SWA, EMA and update_bn (SWALR, a
schedule, is :func:`functional_optreg.schedules.swalr`).

An averager is a pair of pure functions over an :class:`AveragedModelState`::

    averager = fo.swa()                      # or fo.ema(decay=0.999)
    avg_state = averager.init(params)
    ...                                      # after an optimizer step (torch: update_parameters)
    avg_state = averager.update(params, avg_state)
    avg_state.params                         # the averaged parameters (AveragedModel.module)

For flax models, pass the ``batch_stats`` collection as ``buffers`` (averaged with
``use_buffers=True``, otherwise copied), or refresh it afterwards with :func:`update_bn`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optreg import _scalars, _tree, _validation

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``avg_fn(averaged, current, n_averaged) -> new averaged``, one leaf at a time (torch's avg_fn)."""


class AveragedModelState(NamedTuple):
    """The running average; fields follow ``torch.optim.swa_utils.AveragedModel``.

    ``n_averaged`` counts the models averaged so far (int32; torch keeps a long buffer).
    ``params`` is the averaged parameter tree. ``buffers`` is the buffer tree (e.g. flax's
    ``batch_stats``): averaged like the parameters with ``use_buffers=True``, otherwise a copy of
    the latest model's buffers; ``None`` when the averager was initialised without buffers.
    """

    n_averaged: jax.Array
    params: Any
    buffers: Any


class Averager(NamedTuple):
    """``init(params, buffers=None)`` and ``update(params, state, buffers=None)``, both pure."""

    init: Callable[..., AveragedModelState]
    update: Callable[..., AveragedModelState]


def _is_integer(x: jax.Array) -> bool:
    return not jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _integer_average(formula: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """Torch's path for integer tensors: the formula in float32 (its default dtype), then the
    in-place ``copy_`` back into the integer tensor, which truncates toward zero."""

    def average(averaged, current):
        as_float = formula(averaged.astype(jnp.float32), current.astype(jnp.float32))
        return as_float.astype(averaged.dtype)

    return average


def _swa_avg_fn(averaged: jax.Array, current: jax.Array, n_averaged: jax.Array) -> jax.Array:
    """``get_swa_avg_fn``: ``averaged + (current − averaged) / (n_averaged + 1)``."""
    if _is_integer(averaged):
        count = (n_averaged + 1).astype(jnp.float32)
        difference = (current - averaged).astype(jnp.float32)
        return (averaged.astype(jnp.float32) + difference / count).astype(averaged.dtype)
    return averaged + (current - averaged) / (n_averaged + 1).astype(averaged.dtype)


def averaged_model(avg_fn: AvgFn | None = None, *, use_buffers: bool = False) -> Averager:
    r"""A running average of parameters, exactly as ``torch.optim.swa_utils.AveragedModel``.

    .. math::

        \bar\theta_1 = \theta_1, \qquad
        \bar\theta_{n+1} = \text{avg\_fn}(\bar\theta_n, \theta_{n+1}, n)

    Args:
      avg_fn: ``avg_fn(averaged, current, n_averaged)``, applied leaf by leaf with JAX
        operations; ``None`` gives the equal-weight SWA average of :func:`swa`.
      use_buffers: average the ``buffers`` too (with the same ``avg_fn`` and count); otherwise
        ``update`` copies the model's buffers into the state.

    Returns:
      An :class:`Averager`. ``init(params, buffers=None)`` copies the model (as AveragedModel's
      ``deepcopy``); ``update(params, state, buffers=None)`` is ``update_parameters(model)``.
      Both are pure and jittable.

    PyTorch equivalence:
      ``AveragedModel(model, avg_fn=avg_fn, use_buffers=use_buffers)`` and its
      ``update_parameters``: the first update (``n_averaged == 0``) copies the model instead of
      averaging, values are cast to the average's dtype (``copy_``), and ``n_averaged`` is shared
      by parameters and buffers.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> averager = fo.averaged_model(lambda avg, p, n: jnp.maximum(avg, p))
      >>> state = averager.init({"w": jnp.zeros(2)})
      >>> for value in (3.0, 1.0, 2.0):
      ...     state = averager.update({"w": jnp.full(2, value)}, state)
      >>> state.params["w"], state.n_averaged
      (Array([3., 3.], dtype=float32), Array(3, dtype=int32))
    """
    avg_fn = _swa_avg_fn if avg_fn is None else avg_fn

    def init(params: Any, buffers: Any = None) -> AveragedModelState:
        copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731
        return AveragedModelState(
            n_averaged=_scalars.zero_step(),
            params=copy(params),
            buffers=None if buffers is None else copy(buffers),
        )

    def update(params: Any, state: AveragedModelState, buffers: Any = None) -> AveragedModelState:
        _tree.check_same_structure("the averaged parameters", state.params, "params", params)
        if (buffers is None) != (state.buffers is None):
            raise ValueError(
                "buffers must be given to update exactly when they were given to init "
                f"(init: {'with' if state.buffers is not None else 'without'} buffers, "
                f"update: {'with' if buffers is not None else 'without'})."
            )
        is_first = state.n_averaged == 0

        def average(averaged, current):
            current = jnp.asarray(current)
            new = jnp.asarray(avg_fn(averaged, current, state.n_averaged))
            return jnp.where(is_first, current, new).astype(averaged.dtype)

        new_params = jax.tree.map(average, state.params, params)
        new_buffers = None
        if buffers is not None:
            _tree.check_same_structure("the averaged buffers", state.buffers, "buffers", buffers)
            if use_buffers:
                new_buffers = jax.tree.map(average, state.buffers, buffers)
            else:
                new_buffers = jax.tree.map(lambda kept, b: jnp.asarray(b).astype(kept.dtype), state.buffers, buffers)
        return AveragedModelState(_scalars.increment(state.n_averaged), new_params, new_buffers)

    return Averager(init, update)


def swa(*, use_buffers: bool = False) -> Averager:
    r"""Stochastic weight averaging: the equal-weight mean of every model given to ``update``.

    .. math::

        \bar\theta_{n+1} = \bar\theta_n + \frac{\theta_{n+1} - \bar\theta_n}{n + 1}

    Args:
      use_buffers: average the buffers too (see :func:`averaged_model`).

    Returns:
      An :class:`Averager`.

    PyTorch equivalence:
      ``AveragedModel(model)`` (default average, ``use_buffers``), following the CPU path
      ``get_swa_avg_fn``: the difference divided by ``n_averaged + 1``. On CUDA torch takes
      ``get_swa_multi_avg_fn``'s ``lerp`` with weight ``1 / (n + 1)`` instead, which rounds
      differently in float32 (float64 agrees to rounding either way). Integer buffers (e.g.
      ``num_batches_tracked``) are averaged in float32 and truncated, as torch's ``copy_`` does.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> averager = fo.swa()
      >>> state = averager.init({"w": jnp.zeros(2)})
      >>> for value in (1.0, 2.0, 6.0):
      ...     state = averager.update({"w": jnp.full(2, value)}, state)
      >>> state.params["w"]
      Array([3., 3.], dtype=float32)
    """
    return averaged_model(None, use_buffers=use_buffers)


def ema(decay: Any = 0.999, *, use_buffers: bool = False, lerp: bool = True) -> Averager:
    r"""Exponential moving average of the parameters.

    .. math::

        \bar\theta_1 = \theta_1, \qquad
        \bar\theta_{n+1} = \text{decay}\cdot\bar\theta_n + (1 - \text{decay})\,\theta_{n+1}

    Args:
      decay: the decay rate, in ``[0, 1]`` (a float or a JAX scalar).
      use_buffers: average the buffers too (see :func:`averaged_model`).
      lerp: ``True`` evaluates the average as ``lerp(avg, θ, 1 − decay)``
        (``get_ema_multi_avg_fn``, torch's ``_foreach_lerp_``); ``False`` as
        ``decay·avg + (1 − decay)·θ`` (``get_ema_avg_fn``). They differ only in float32 rounding.

    Returns:
      An :class:`Averager`.

    PyTorch equivalence:
      ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=...)``
      (``lerp=True``) or ``AveragedModel(model, avg_fn=get_ema_avg_fn(decay), ...)``
      (``lerp=False``). As in torch the first update copies the model (no bias toward the
      initial average) and integer buffers are averaged in float32 then truncated.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> averager = fo.ema(decay=0.5)
      >>> state = averager.init({"w": jnp.zeros(2)})
      >>> for value in (4.0, 2.0, 0.0):
      ...     state = averager.update({"w": jnp.full(2, value)}, state)
      >>> state.params["w"]
      Array([1.5, 1.5], dtype=float32)
    """
    _validation.require(
        decay,
        lambda v: 0.0 <= v <= 1.0,
        f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.",
    )

    if lerp:

        def float_average(averaged, current):
            return _scalars.lerp(averaged, current, 1 - decay)

        int_average = _integer_average(lambda a, c: a * decay + c * (1 - decay))
    else:

        def float_average(averaged, current):
            return decay * averaged + (1 - decay) * current

        int_average = _integer_average(lambda a, c: decay * a + (1 - decay) * c)

    def avg_fn(averaged, current, n_averaged):
        del n_averaged
        if _is_integer(averaged):
            return int_average(averaged, current)
        return float_average(averaged, current)

    return averaged_model(avg_fn, use_buffers=use_buffers)


def _batch_norm_interceptor(next_fun, args, kwargs, context):
    """Run every ``nn.BatchNorm`` in training mode with momentum 0: its new statistics are then
    exactly the batch's (torch's update_bn sets ``momentum=None`` the same temporary way)."""
    from flax import linen as nn

    module = context.module
    if not isinstance(module, nn.BatchNorm) or context.method_name != "__call__":
        return next_fun(*args, **kwargs)
    call_value = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
    running = module.use_running_average if module.use_running_average is not None else call_value
    if running:
        raise ValueError(
            f"update_bn: the BatchNorm at {'/'.join(module.path) or '<root>'} ran with "
            "use_running_average=True; pass the apply arguments that put the model in training "
            "mode (e.g. update_bn(..., train=True)), as torch's update_bn calls model.train()."
        )
    momentum = module.momentum
    object.__setattr__(module, "momentum", 0.0)
    try:
        return next_fun(*args, **kwargs)
    finally:
        object.__setattr__(module, "momentum", momentum)


def update_bn(loader: Iterable[Any], model: Any, variables: Any, **apply_kwargs: Any) -> Any:
    r"""Recompute the ``batch_stats`` of a flax model as the average over one pass of ``loader``.

    Each batch's statistics :math:`b_k` (what ``nn.BatchNorm`` measures on it) are averaged
    with equal weights, as torch's ``momentum=None`` cumulative average:

    .. math::

        \mu_k = \tfrac1k\, b_k + \big(1 - \tfrac1k\big)\, \mu_{k-1}

    Args:
      loader: an iterable of batches; a batch that is a list or tuple contributes its first
        element, as in torch.
      model: a ``flax.linen`` module using ``nn.BatchNorm``.
      variables: its variables, e.g. ``{"params": averaged_params, "batch_stats": ...}``.
      **apply_kwargs: keyword arguments for ``model.apply`` that select training mode (for
        example ``train=True``); every BatchNorm must compute batch statistics. Every entry of
        the ``batch_stats`` collection is averaged as a per-batch statistic.

    Returns:
      ``variables`` with ``batch_stats`` replaced (unchanged if there is no ``batch_stats``).

    PyTorch equivalence:
      ``torch.optim.swa_utils.update_bn(loader, model)``: reset, one training-mode pass with
      cumulative averaging, momenta restored. The statistics are flax's: its BatchNorm keeps
      the *biased* batch variance, where torch keeps the unbiased one (the two differ by
      ``n/(n−1)`` for batches of ``n`` rows). Unlike torch, an empty ``loader`` raises (torch
      would leave the reset statistics).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, functional_optreg as fo
      >>> model = nn.BatchNorm(use_running_average=False)
      >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 1)))
      >>> batches = [jnp.array([[0.0], [2.0]]), jnp.array([[4.0], [6.0]])]
      >>> fo.update_bn(batches, model, variables)["batch_stats"]["mean"]
      Array([3.], dtype=float32)
    """
    from flax import linen as nn

    if "batch_stats" not in variables:
        return variables
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

    @jax.jit
    def accumulate(variables, batch, average, weight):
        with nn.intercept_methods(_batch_norm_interceptor):
            _, mutated = model.apply(
                {**variables, "batch_stats": zeros}, batch, mutable=["batch_stats"], **apply_kwargs
            )
        return jax.tree.map(
            lambda b, a: (weight * b + (1 - weight) * a).astype(a.dtype), mutated["batch_stats"], average
        )

    average = zeros
    count = 0
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        count += 1
        average = accumulate(variables, batch, average, 1.0 / count)
    if count == 0:
        raise ValueError("update_bn: loader yielded no batches, so there are no statistics to average")
    updated = dict(variables)
    updated["batch_stats"] = average
    return type(variables)(updated) if not isinstance(variables, dict) else updated
