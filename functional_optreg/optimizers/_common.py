"""Checks and helpers shared by the optimizer modules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from functional_optreg import _tree


def check_update_inputs(name: str, grads: Any, state_like_params: Any, params: Any) -> None:
    """Validate the trees given to ``update`` against the state's per-parameter tree.

    Runs at trace time under ``jit``, so it costs nothing per compiled step.
    """
    _tree.check_same_structure("the optimizer state", state_like_params, "grads", grads)
    if params is not None:
        _tree.check_same_structure("grads", grads, "params", params)


def zeros_like_tree(params: Any) -> Any:
    return jax.tree.map(jnp.zeros_like, params)


def cast_tree_like(tree: Any, like: Any) -> Any:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.result_type(ref)), tree, like)


def map_leaves(fn: Any, grads: Any, *trees: Any) -> tuple[Any, ...]:
    """Apply a per-leaf update rule over ``grads`` and trees of the same structure.

    ``fn(g, *leaves)`` returns a tuple (update, new state leaves...). A tree given as ``None``
    (state the configuration does not keep) feeds ``None`` leaves. Each output is cast to the
    gradient's dtype and rebuilt into a tree; an output that is ``None`` everywhere stays ``None``.
    """
    treedef = jax.tree.structure(grads)
    grad_leaves = treedef.flatten_up_to(grads)
    other_leaves = [
        [None] * len(grad_leaves) if tree is None else treedef.flatten_up_to(tree) for tree in trees
    ]
    results = [fn(g, *rest) for g, *rest in zip(grad_leaves, *other_leaves)]
    if not results:
        # An empty tree: probe the rule on an empty leaf to learn how many outputs it has and
        # which of them are kept (None stays None, as it would for a non-empty tree).
        empty = jnp.zeros((0,))
        probe = jax.eval_shape(lambda: fn(empty, *[None if tree is None else empty for tree in trees]))
        return tuple(None if out is None else treedef.unflatten([]) for out in probe)
    outputs = []
    for index in range(len(results[0])):
        column = [result[index] for result in results]
        if all(leaf is None for leaf in column):
            outputs.append(None)
        else:
            cast = [jnp.asarray(x).astype(jnp.result_type(g)) for x, g in zip(column, grad_leaves)]
            outputs.append(treedef.unflatten(cast))
    return tuple(outputs)
