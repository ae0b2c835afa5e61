r"""What an optimizer does with non-finite gradients: propagate, raise, or skip the step.

Torch has no single switch for this; each behaviour has a torch counterpart:

* ``"propagate"`` — torch's default: ``optimizer.step()`` uses the ``nan``/``inf`` gradient, and
  the parameters and state become non-finite.
* ``"raise"`` — like ``clip_grad_norm_(..., error_if_nonfinite=True)``: the step fails with a
  ``RuntimeError`` instead of corrupting the parameters.
* ``"skip"`` — like ``torch.amp.GradScaler.step``: when any gradient is ``nan``/``inf`` the
  optimizer step is not taken (parameters *and* optimizer state untouched, the step count
  included) and the skip is counted. This is ``optax.apply_if_finite``; by default the
  learning-rate schedules held by ``optax.inject_hyperparams`` still advance on a skipped step,
  as torch's AMP loop ``scaler.step(optimizer); scheduler.step()`` advances its scheduler.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.schedules import InjectStatefulHyperparamsState, WrappedSchedule

from functional_optreg import _device_errors

POLICIES = ("propagate", "raise", "skip")
SCHEDULE_CLOCKS = ("iterations", "steps")
WrappedScheduleState = type(jax.eval_shape(lambda: WrappedSchedule(lambda count: count).init()))
"""The state optax gives a schedule passed to ``inject_hyperparams`` (its class is not exported).

Taken from an abstract evaluation: building a concrete state would start JAX's backend at import,
and ``jax.distributed.initialize`` must run before that in a multi-process program."""


def _is_schedule_state(node: Any) -> bool:
    return isinstance(node, (InjectStatefulHyperparamsState, WrappedScheduleState))


def _advance_schedules(state: Any, skipped: jax.Array) -> Any:
    """``state`` with the count of every ``optax.inject_hyperparams`` state (and of its wrapped
    schedules) advanced by one where ``skipped``: the schedules move on, the optimizer does not."""

    def advance(node: Any) -> Any:
        if not _is_schedule_state(node):
            return node
        count = jnp.where(skipped, optax.safe_increment(node.count), node.count)
        if isinstance(node, WrappedScheduleState):
            return node._replace(count=count)
        return node._replace(count=count, hyperparams_states=_advance_schedules(node.hyperparams_states, skipped))

    return jax.tree.map(advance, state, is_leaf=_is_schedule_state)


def _first_nonfinite_message(paths: list[str], flags: np.ndarray) -> str | None:
    bad = [path for path, finite in zip(paths, np.asarray(flags).reshape(-1)) if not finite]
    if not bad:
        return None
    return (
        f"Non-finite gradients (nan or inf) at {bad[0] or '<root>'}"
        + (f" and {len(bad) - 1} more leaves" if len(bad) > 1 else "")
        + ": the optimizer step was not taken. Use nonfinite_policy(..., policy='skip') to skip "
        "such steps, or policy='propagate' to apply them as torch does by default."
    )


def _raise_if_nonfinite(flags: Any, *, paths: list[str]) -> None:
    message = _first_nonfinite_message(paths, np.asarray(flags))
    if message is not None:
        raise RuntimeError(message)


def _check_finite(grads: Any) -> None:
    flat, _ = jax.tree_util.tree_flatten_with_path(grads)
    if not flat:
        return
    paths = [jax.tree_util.keystr(path) for path, _ in flat]
    flags = jnp.stack([jnp.all(jnp.isfinite(leaf)) for _, leaf in flat])
    _device_errors.check(functools.partial(_raise_if_nonfinite, paths=paths), flags)


def nonfinite_policy(
    tx: optax.GradientTransformation,
    policy: str = "propagate",
    *,
    max_consecutive_errors: int | None = None,
    schedules: str = "iterations",
) -> optax.GradientTransformation:
    r"""Wrap ``tx`` with a policy for ``nan``/``inf`` gradients.

    .. math::

        \text{skip:}\quad (u_t, s_t) = \begin{cases}
            \mathrm{tx.update}(g_t, s_{t-1}) & \text{if every } g_t \text{ is finite} \\
            (0, s_{t-1}) & \text{otherwise (and the skip counter grows)}
        \end{cases}

    Args:
      tx: the optimizer (any transform, chains included).
      policy: ``"propagate"`` returns ``tx`` itself; ``"raise"`` checks every gradient leaf
        and raises; ``"skip"`` skips the whole step when any element is non-finite.
      max_consecutive_errors: only for ``"skip"``: after this many consecutive skipped steps
        the next non-finite step is applied anyway (optax's ``apply_if_finite`` behaviour).
        ``None`` (the default) skips every non-finite step, as ``GradScaler`` does.
      schedules: only for ``"skip"``: which count the schedules of ``optax.inject_hyperparams``
        inside ``tx`` follow. ``"iterations"`` (the default) advances them on skipped steps too,
        as torch's ``scaler.step(optimizer); scheduler.step()`` loop does; ``"steps"`` freezes
        them with the rest of the state (``optax.apply_if_finite``), as a scheduler stepped only
        after steps actually taken. A schedule given to the optimizer factory itself
        (``fo.sgd(lr=schedule)``) is read at the optimizer's own step count, which a skipped
        step does not advance (torch's Adam ``step`` does not advance either); to follow
        iterations, pass it through ``optax.inject_hyperparams(fo.sgd)(lr=schedule)``.

    Returns:
      For ``"propagate"``, ``tx``. For ``"raise"``, a transform with ``tx``'s state. For
      ``"skip"``, ``optax.apply_if_finite``'s transform, whose state is an
      ``optax.ApplyIfFiniteState``: ``total_notfinite`` counts skipped steps,
      ``notfinite_count`` the current run of them, ``last_finite`` whether the latest step was
      taken, and ``inner_state`` is ``tx``'s state.

      ``"raise"`` outside ``jit`` raises ``RuntimeError`` at once, naming the first non-finite
      gradient's path. Under ``jit`` (and ``vmap``/``scan``) the check runs on the device through
      ``jax.debug.callback``: the compiled call raises ``jax.errors.JaxRuntimeError`` (a
      ``RuntimeError``: jaxlib's prefix, one ``File`` line, then the same message) when its results
      are produced, so a jitted ``params, state = step(...)`` never returns non-finite values. Call
      the compiled step inside :func:`functional_optreg.original_errors` to get the
      ``RuntimeError`` itself, message first.

    PyTorch equivalence:
      ``"propagate"`` is plain ``optimizer.step()``. ``"raise"`` corresponds to
      ``clip_grad_norm_(..., error_if_nonfinite=True)`` before the step (torch checks the total
      norm; here each leaf is checked, so the message can name it). ``"skip"`` is the skipping
      half of ``GradScaler.step(optimizer)`` (no loss scaling): the step, the state and torch's
      per-parameter ``step`` counters stay as they were, so the continuation equals a torch
      run that did not call ``optimizer.step()`` on those iterations.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "skip")
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
      >>> updates["w"], state.total_notfinite, state.inner_state.step
      (Array([0., 0.], dtype=float32), Array(1, dtype=int32), Array(0, dtype=int32))
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if schedules not in SCHEDULE_CLOCKS:
        raise ValueError(f"schedules must be one of {SCHEDULE_CLOCKS}, got {schedules!r}")
    if schedules != "iterations" and policy != "skip":
        raise ValueError("schedules only applies to policy='skip'")
    if max_consecutive_errors is not None:
        if policy != "skip":
            raise ValueError("max_consecutive_errors only applies to policy='skip'")
        if int(max_consecutive_errors) < 0:
            raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive_errors}")
    if policy == "propagate":
        return tx
    if policy == "skip":
        limit = np.iinfo(np.int32).max if max_consecutive_errors is None else int(max_consecutive_errors)
        skipping = optax.apply_if_finite(tx, limit)
        if schedules == "steps":
            return skipping

        def skip_update(updates, state, params=None, **extra_args):
            updates, new_state = skipping.update(updates, state, params, **extra_args)
            skipped = jnp.logical_not(new_state.last_finite) & (new_state.notfinite_count <= limit)
            return updates, new_state._replace(inner_state=_advance_schedules(new_state.inner_state, skipped))

        return optax.GradientTransformationExtraArgs(skipping.init, skip_update)

    inner = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        _check_finite(updates)
        return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
