"""ReduceLROnPlateau as an optax transform that reads the metric through ``value=``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars
from functional_optreg.schedules._base import check_base_lr, float_dtype


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_lr_on_plateau`; fields follow torch's attributes.

    ``last_lr`` is the lr the *next* update uses (torch's ``get_last_lr()[0]`` after
    ``scheduler.step(metric)``); ``best`` the best metric so far (``±inf`` before the first);
    ``num_bad_epochs`` / ``cooldown_counter`` torch's counters; ``last_epoch`` the number of
    metrics seen.
    """

    last_lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array


def reduce_lr_on_plateau(
    lr: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.lr_scheduler.ReduceLROnPlateau``: cut the lr when a metric stops improving.

    Chain it *after* an optimizer built with the same base lr; it multiplies the optimizer's
    updates by :math:`\gamma_t / \gamma_0`, where :math:`\gamma_t` is the current lr. A metric
    is given with an update, as an extra argument, and decides as torch's
    ``scheduler.step(metric)`` does:

    * ``value=metric``: ``scheduler.step(metric)`` right *after* this update (a per-update loop
      stepping on the batch loss): the metric sets the lr of the *next* update;
    * ``epoch_value=metric``: ``scheduler.step(metric)`` ran *before* this update (a per-epoch
      loop: the validation metric of the epoch that just ended, given with the first update of
      the next epoch): the metric sets the lr of *this* update;
    * neither (``None``): no decision, so the same chain serves per-update and per-epoch loops.

    The decision:

    .. math::

        \text{better} &= v < b(1 - \tau)\ |\ v < b - \tau\ |\ v > b(1 + \tau)\ |\ v > b + \tau
            \quad (\text{min/rel, min/abs, max/rel, max/abs}) \\
        \gamma_{t+1} &= \max(\gamma_t \cdot \text{factor}, \text{min\_lr})
            \text{ if more than } \text{patience} \text{ bad metrics in a row and }
            \gamma_t - \max(\cdot) > \epsilon

    (no bad metric counts during ``cooldown`` metrics after a reduction).

    Valid for optimizers whose update is proportional to the lr, given the state: ``fo.sgd``,
    ``fo.adam`` / ``fo.adamw``, and likewise RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
    SparseAdam. Not for ASGD (its ``eta`` and averaging depend on the lr), Rprop (the lr only
    seeds its step sizes), LBFGS (line search) or Adafactor (``min(lr, 1/√t)``); give those the
    lr another way (e.g. ``optax.inject_hyperparams``).

    Args:
      lr: the optimizer's base lr :math:`\gamma_0` (the lr the optimizer was built with).
      mode: ``"min"`` (reduce when the metric stops decreasing) or ``"max"``.
      factor: multiplier of the lr at a reduction (``< 1``).
      patience: bad metrics tolerated before a reduction.
      threshold: :math:`\tau`, the margin an improvement must exceed.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: metrics ignored after a reduction.
      min_lr: lower bound on the lr.
      eps: reductions smaller than this are skipped.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call ``update(updates, state, params,
      value=metric)`` (or ``epoch_value=metric``) where torch steps the scheduler and
      ``update(updates, state, params)`` elsewhere. ``state.last_lr`` (or
      ``optax.tree.get(state, "last_lr")`` in a chain) is the lr of the next update.

    PyTorch equivalence:
      ``ReduceLROnPlateau(optimizer, mode, factor, patience, threshold, threshold_mode, cooldown,
      min_lr, eps)``: ``optimizer.step(); scheduler.step(loss)`` per update is ``value=loss``;
      ``scheduler.step(val_loss)`` once per epoch (pytorch/examples' word_language_model) is
      ``epoch_value=val_loss`` on the next epoch's first update. A NaN metric counts as bad, as in
      torch. Torch's per-group ``min_lr`` list becomes one transform per param group.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = optax.chain(fo.sgd(lr=1.0), fo.reduce_lr_on_plateau(1.0, factor=0.5, patience=0))
      >>> params = {"w": jnp.ones(1)}
      >>> state = tx.init(params)
      >>> for metric in [3.0, 3.0, 3.0]:
      ...     updates, state = tx.update({"w": jnp.ones(1)}, state, params, value=metric)
      ...     print(float(updates["w"][0]), float(optax.tree.get(state, "last_lr")))
      -1.0 1.0
      -1.0 0.5
      -0.5 0.25
    """
    lr = check_base_lr(lr)
    if factor >= 1.0:
        raise ValueError("Factor should be < 1.0.")
    if isinstance(min_lr, (list, tuple)):
        if len(min_lr) != 1:
            raise ValueError(f"expected 1 min_lrs, got {len(min_lr)}")
        (min_lr,) = min_lr
    if mode not in {"min", "max"}:
        raise ValueError("mode " + mode + " is unknown!")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError("threshold mode " + threshold_mode + " is unknown!")
    worst = jnp.inf if mode == "min" else -jnp.inf

    def is_better(current, best):
        if mode == "min" and threshold_mode == "rel":
            return current < best * (1.0 - threshold)
        if mode == "min":
            return current < best - threshold
        if threshold_mode == "rel":
            return current > best * (threshold + 1.0)
        return current > best + threshold

    def init_fn(params):
        del params
        dtype = float_dtype()
        return ReduceLROnPlateauState(
            last_lr=jnp.asarray(lr, dtype),
            best=jnp.asarray(worst, dtype),
            num_bad_epochs=_scalars.zero_step(),
            cooldown_counter=_scalars.zero_step(),
            last_epoch=_scalars.zero_step(),
        )

    def decide(state, value):
        """Torch's ``scheduler.step(value)``: the lr of the updates that follow."""
        current = jnp.asarray(value).astype(state.best.dtype)
        better = is_better(current, state.best)
        best = jnp.where(better, current, state.best)
        num_bad_epochs = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        num_bad_epochs = jnp.where(in_cooldown, 0, num_bad_epochs)
        reduce = num_bad_epochs > patience
        new_lr = jnp.maximum(state.last_lr * factor, min_lr)
        last_lr = jnp.where(reduce & (state.last_lr - new_lr > eps), new_lr, state.last_lr)
        return ReduceLROnPlateauState(
            last_lr=last_lr.astype(state.last_lr.dtype),
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, num_bad_epochs).astype(jnp.int32),
            cooldown_counter=jnp.where(reduce, cooldown, cooldown_counter).astype(jnp.int32),
            last_epoch=_scalars.increment(state.last_epoch),
        )

    def update_fn(updates, state, params=None, *, value=None, epoch_value=None, **extra_args):
        del params, extra_args
        if epoch_value is not None:
            state = decide(state, epoch_value)
        if lr == 0:
            scale = jnp.ones([], state.last_lr.dtype)
        else:
            scale = state.last_lr / lr
        updates = jax.tree.map(lambda u: (u * scale).astype(jnp.result_type(u)), updates)
        if value is not None:
            state = decide(state, value)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
