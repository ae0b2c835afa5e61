"""Setting a hyperparameter between steps, as torch users do with ``param_groups[i]["lr"]``."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax


def set_hyperparams(state: Any, **values: Any) -> Any:
    r"""A copy of an optimizer state with hyperparameters replaced, ready for the same jitted step.

    The optimizer must be wrapped in ``optax.inject_hyperparams``, which keeps its numeric
    hyperparameters in ``state.hyperparams`` (anywhere in a chain). Each new value is cast to the
    dtype and shape of the value it replaces, so a jitted update sees the same abstract state and
    does not recompile (a bare Python float would be weakly typed and trigger one retrace).

    Args:
      state: the state of a transform containing ``optax.inject_hyperparams(...)``.
      **values: hyperparameter name to new value, e.g. ``lr=1e-4``.

    Returns:
      The new state; the next update uses the new values.

    Raises:
      KeyError: if a name is not in ``state``, or names several values (optax's
        ``tree.get``).

    PyTorch equivalence:
      ``for group in optimizer.param_groups: group["lr"] = 1e-4`` between steps. Read the value
      with ``optax.tree.get(state, "lr")``. A hyperparameter given to ``inject_hyperparams`` as a
      schedule is recomputed at every update (as torch's scheduler overwrites the lr at its next
      step) and cannot be set: optax finds it in both ``hyperparams`` and ``hyperparams_states``
      and raises ``KeyError``; ``state.hyperparams["lr"]`` holds the lr of the most recent
      update.

    Example:
      >>> import jax, jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = optax.inject_hyperparams(fo.adam)(lr=1e-3)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> state = fo.set_hyperparams(state, lr=1e-4)
      >>> optax.tree.get(state, "lr")
      Array(0.0001, dtype=float32)
    """
    replacements = {}
    for name, value in values.items():
        current = optax.tree.get(state, name, default=_MISSING)
        if current is _MISSING:
            raise KeyError(f"{name!r} is not in this state; wrap the optimizer in optax.inject_hyperparams")
        current = jnp.asarray(current)
        replacements[name] = jnp.broadcast_to(jnp.asarray(value, current.dtype), current.shape)
    return optax.tree.set(state, **replacements)


_MISSING = object()
