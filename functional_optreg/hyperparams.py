r"""Reading and setting hyperparameters between steps, per param group, as torch users do.

Torch keeps an optimizer's hyperparameters in its param groups and a training loop rewrites them
(``optimizer.param_groups[1]["lr"] = x``, nanoGPT's ``param_group["lr"] = get_lr(it)``). Here they
live in the state of ``optax.inject_hyperparams`` — anywhere in the state: a chain, each group of
``fo.param_groups(optax.inject_hyperparams(fo.adamw), ...)``, the transforms ``fo.from_torch``
returns (each group's optimizer is injected there). A group is a key of an
``optax.multi_transform`` state (``fo.param_groups`` and the bridge label groups ``0, 1, ...``).

A jitted update reads these values as data, so changing them does not recompile: each new value
is cast to the dtype and shape of the value it replaces (a bare Python float would be weakly
typed and trigger one retrace).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax.numpy as jnp
import optax

_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
_NO_GROUP = None


def _children(node: Any) -> list[tuple[Any, Any]]:
    """``(group label or _NO_GROUP marker, child)``; partition states open one group per key."""
    if isinstance(node, optax.transforms.PartitionState):
        return [(label, child) for label, child in node.inner_states.items()]
    if isinstance(node, dict):
        return [(_NO_GROUP, child) for child in node.values()]
    if isinstance(node, (tuple, list)):
        return [(_NO_GROUP, child) for child in node]
    return []


def _holders(node: Any, group: Any = _NO_GROUP) -> Iterator[tuple[Any, Any]]:
    """Every ``inject_hyperparams`` state under ``node`` with the group it belongs to."""
    if isinstance(node, _INJECTED):
        yield group, node
    for label, child in _children(node):
        yield from _holders(child, group if label is _NO_GROUP else label)


def _rebuild(node: Any, fn: Callable[[Any, Any], Any], group: Any = _NO_GROUP) -> Any:
    """``node`` with every ``inject_hyperparams`` state ``s`` of group ``g`` replaced by ``fn(g, s)``."""
    if isinstance(node, _INJECTED):
        node = fn(group, node)
        return node._replace(inner_state=_rebuild(node.inner_state, fn, group))
    if isinstance(node, optax.transforms.PartitionState):
        return node._replace(inner_states={k: _rebuild(v, fn, k) for k, v in node.inner_states.items()})
    if isinstance(node, dict):
        return type(node)({k: _rebuild(v, fn, group) for k, v in node.items()})
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_rebuild(v, fn, group) for v in node))
    if isinstance(node, (tuple, list)):
        return type(node)(_rebuild(v, fn, group) for v in node)
    return node


def _settable(holder: Any) -> list[str]:
    scheduled = getattr(holder, "hyperparams_states", {})
    return sorted(name for name in holder.hyperparams if name not in scheduled)


def _describe(holders: list[tuple[Any, Any]]) -> str:
    lines = []
    for group, holder in holders:
        where = "no group" if group is _NO_GROUP else f"group {group!r}"
        scheduled = sorted(getattr(holder, "hyperparams_states", {}))
        line = f"{where}: {', '.join(_settable(holder)) or '(none)'}"
        if scheduled:
            line += f" (scheduled, recomputed every update: {', '.join(scheduled)})"
        lines.append(line)
    return "; ".join(lines)


def get_hyperparams(state: Any) -> dict[Any, dict[str, Any]]:
    """The injected hyperparameters of ``state``, per group: torch's ``optimizer.param_groups``.

    Returns:
      ``{group: {name: value}}``; ``group`` is the ``multi_transform`` label (``None`` for an
      ``inject_hyperparams`` outside any group). Values are the arrays the next update reads (for a
      scheduled hyperparameter, the value of the most recent update).

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.param_groups(optax.inject_hyperparams(fo.sgd), [{"params": "b", "lr": 0.5}],
      ...                      default_group=True, lr=0.1)
      >>> state = tx.init({"w": jnp.ones(2), "b": jnp.ones(1)})
      >>> fo.get_hyperparams(state)[1]["lr"]
      Array(0.1, dtype=float32)
      >>> state = fo.set_hyperparams(state, group=0, lr=0.25)  # optimizer.param_groups[0]["lr"] = 0.25
      >>> [float(h["lr"]) for h in fo.get_hyperparams(state).values()]
      [0.25, 0.10000000149011612]
    """
    found: dict[Any, dict[str, Any]] = {}
    for group, holder in _holders(state):
        found.setdefault(group, {}).update(holder.hyperparams)
    return found


def set_hyperparams(state: Any, *, group: Any = None, **values: Any) -> Any:
    r"""A copy of an optimizer state with hyperparameters replaced, ready for the same jitted step.

    Args:
      state: a state holding ``optax.inject_hyperparams`` state(s): an injected optimizer
        (anywhere in a chain), ``fo.param_groups`` over an injected optimizer, or a transform from
        ``fo.from_torch``.
      group: ``None`` sets every group (torch's ``for g in optimizer.param_groups: g["lr"] = x``);
        a group label (``fo.param_groups`` / ``fo.from_torch``: its index) sets that group only
        (``optimizer.param_groups[i]["lr"] = x``).
      **values: hyperparameter name to new value, e.g. ``lr=1e-4``, ``betas=(0.9, 0.95)``.

    Returns:
      The new state; the next update uses the new values.

    Raises:
      KeyError: for a group the state does not have, or a name none of the targeted groups can
        set (scheduled hyperparameters are recomputed at every update and cannot be set), naming
        the groups and their hyperparameters.

    PyTorch equivalence:
      ``optimizer.param_groups[group]["lr"] = value`` between steps (every group when ``group``
      is ``None``). Read the values with :func:`get_hyperparams`.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = optax.inject_hyperparams(fo.adam)(lr=1e-3)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> state = fo.set_hyperparams(state, lr=1e-4)
      >>> optax.tree.get(state, "lr")
      Array(0.0001, dtype=float32)
    """
    holders = list(_holders(state))
    if not holders:
        raise KeyError(
            "this state holds no injected hyperparameters: build the optimizer with "
            "optax.inject_hyperparams(fo.adam)(lr=...) (or fo.param_groups over such a factory, or "
            "convert it with fo.from_torch)"
        )
    groups = list(dict.fromkeys(g for g, _ in holders))
    if group is not None and group not in groups:
        raise KeyError(f"no param group {group!r} in this state; it has {_describe(holders)}")
    targeted = [(g, h) for g, h in holders if group is None or g == group]
    for name in values:
        if not any(name in _settable(h) for _, h in targeted):
            where = "" if group is None else f" in group {group!r}"
            raise KeyError(f"{name!r} is not a settable hyperparameter{where}; this state has {_describe(holders)}")

    def replace(holder_group: Any, holder: Any) -> Any:
        if group is not None and holder_group != group:
            return holder
        settable = _settable(holder)
        new = dict(holder.hyperparams)
        for name, value in values.items():
            if name in settable:
                current = jnp.asarray(new[name])
                new[name] = jnp.broadcast_to(jnp.asarray(value, current.dtype), current.shape)
        return holder._replace(hyperparams=new)

    return _rebuild(state, replace)
