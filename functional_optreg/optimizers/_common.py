"""Checks and helpers shared by the optimizer modules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from functional_optreg import _device_errors, _scalars, _tree


def check_update_inputs(name: str, grads: Any, state_like_params: Any, params: Any) -> None:
    """Validate the trees given to ``update`` against the state's per-parameter tree.

    Runs at trace time under ``jit``, so it costs nothing per compiled step.
    """
    _tree.check_same_structure("the optimizer state", state_like_params, "grads", grads)
    if params is not None:
        _tree.check_same_structure("grads", grads, "params", params)
        check_grad_dtypes(grads, params, "params")
    elif state_like_params is not grads:
        check_grad_dtypes(grads, state_like_params, "the optimizer state")


def weight_decay_in_use(weight_decay: Any, params: Any, optimizer_name: str) -> bool:
    """Whether an update applies ``weight_decay`` (and so needs ``params``).

    A concrete zero needs nothing. With ``params`` any other value is applied. Without them a
    concrete non-zero value is an error naming the optimizer, while a traced one (the
    hyperparameters of ``optax.inject_hyperparams`` under ``jit``, whose default weight decay is
    0) is skipped and checked when the step runs: the step raises if it is not zero (the
    ``ValueError`` itself inside :func:`functional_optreg.original_errors`).
    """
    if _scalars.is_zero(weight_decay):
        return False
    if params is not None:
        return True
    if not isinstance(weight_decay, jax.core.Tracer):
        _tree.require_params(params, optimizer_name, "weight_decay")
    message = f"{optimizer_name} needs the current parameters for weight_decay: call update(grads, state, params)."

    def check(value: Any) -> None:
        if float(value) != 0.0:
            raise ValueError(message)

    _device_errors.check(check, weight_decay)
    return False


def add_weight_decay(g: jax.Array, p: jax.Array, weight_decay: Any) -> jax.Array:
    """torch's ``grad.add(param, alpha=weight_decay)``, which torch skips when ``weight_decay == 0``.

    Call it where :func:`weight_decay_in_use` is true. A traced ``weight_decay`` (the
    hyperparameters of ``optax.inject_hyperparams`` under ``jit``) decides at run time: with a
    zero value the gradient is returned unchanged, as torch's ``if weight_decay != 0`` does, so a
    parameter at ±inf does not turn the gradient into ``0·inf = nan``.
    """
    decayed = g + weight_decay * p
    if isinstance(weight_decay, jax.core.Tracer):
        return jnp.where(weight_decay != 0, decayed, g)
    return decayed


def check_grad_dtypes(grads: Any, reference: Any, reference_name: str) -> None:
    """Raise ``TypeError`` naming the first path where a gradient's dtype differs from the
    parameter's (or, without params, the per-parameter state's, which has the parameter's dtype).

    Torch refuses such a gradient (``"assigned grad has data of a different type"``); computing
    with it would silently change the state's dtype. Python scalars and weakly typed arrays take
    the parameter's dtype and are accepted.
    """
    flat_grads, _ = jax.tree_util.tree_flatten_with_path(grads)
    for (path, g), ref in zip(flat_grads, jax.tree.leaves(reference)):
        if not hasattr(g, "dtype") or getattr(g, "weak_type", False) or not hasattr(ref, "dtype"):
            continue
        if jnp.dtype(g.dtype) != jnp.dtype(ref.dtype):
            where = jax.tree_util.keystr(path) or "<root>"
            raise TypeError(
                f"grads at {where} have dtype {jnp.dtype(g.dtype)}, but {reference_name} at that path has dtype "
                f"{jnp.dtype(ref.dtype)}: torch refuses such a gradient (assigned grad has data of a "
                "different type). Cast the gradient to the parameter's dtype."
            )


def _filled_like(p: Any, value: Any) -> jax.Array:
    """An array shaped, typed and placed like ``p`` whose every element is ``value``.

    A complex ``p`` gets ``value + value·i``: torch fills complex state with ``complex(v, v)``
    (Adagrad's accumulator, Rprop's step size) so that both halves of the real view start alike.

    The fill is written as ``where(False, p, value)`` rather than ``full_like`` so that the result
    depends on ``p``: inside ``jax.jit(tx.init)`` XLA then gives the state ``p``'s sharding. A
    constant has no input to take a sharding from and would land on a single device (or be
    replicated). XLA folds the select away after partitioning, so nothing is computed.
    """
    p = jnp.asarray(p)
    if jnp.issubdtype(p.dtype, jnp.complexfloating):
        fill = jax.lax.complex(*(jnp.asarray(value, _real_dtype(p.dtype)),) * 2)
    else:
        fill = jnp.asarray(value, p.dtype)
    return jnp.where(jnp.zeros(p.shape, bool), p, fill)


def zeros_like_tree(params: Any) -> Any:
    """Zeros shaped, typed and sharded like each leaf of ``params`` (also under ``jit``)."""
    return jax.tree.map(lambda p: _filled_like(p, 0), params)


def full_like_tree(params: Any, value: Any) -> Any:
    """``value`` everywhere, shaped, typed and sharded like each leaf of ``params``.

    Complex leaves are filled with ``complex(value, value)``, torch's convention for state that
    starts at a non-zero value.
    """
    return jax.tree.map(lambda p: _filled_like(p, value), params)


def delta(new_p: jax.Array, p: jax.Array) -> jax.Array:
    """The optax update taking ``p`` to torch's in-place result ``new_p``: ``new_p − p``, but
    exactly 0 where the two are equal, so that a parameter torch leaves at ±inf stays there
    (``inf − inf`` would make ``p + update`` NaN)."""
    return jnp.where(new_p == p, jnp.zeros_like(new_p), new_p - p)


def cast_tree_like(tree: Any, like: Any) -> Any:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.result_type(ref)), tree, like)


def _real_dtype(dtype: Any) -> Any:
    """The component dtype of a complex dtype (float32 for complex64); other dtypes unchanged."""
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _is_complex(x: Any) -> bool:
    return x is not None and jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def as_real_pairs(x: Any) -> Any:
    """``torch.view_as_real``: a complex array as real pairs in a new last axis of size 2.

    Anything else (real arrays, ``None``) is returned unchanged.
    """
    if not _is_complex(x):
        return x
    x = jnp.asarray(x)
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def from_real_pairs(x: Any, dtype: Any) -> jax.Array:
    """``torch.view_as_complex``: real pairs in the last axis as a complex array of ``dtype``."""
    x = jnp.asarray(x).astype(_real_dtype(dtype))
    return jax.lax.complex(x[..., 0], x[..., 1]).astype(dtype)


def _restore_leaf(x: Any, g: Any) -> jax.Array:
    """Cast a rule's output to the gradient's dtype; for a complex gradient, rebuild complex.

    An output shaped like the real view of a complex gradient becomes complex again; any other
    output of a complex leaf (a per-leaf scalar) keeps the real component dtype.
    """
    dtype = jnp.result_type(g)
    x = jnp.asarray(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        if x.shape == jnp.shape(g) + (2,):
            return from_real_pairs(x, dtype)
        return x.astype(_real_dtype(dtype))
    return x.astype(dtype)


def _empty_outputs(fn: Any, treedef: Any, trees: tuple[Any, ...]) -> tuple[Any, ...]:
    """The outputs of :func:`map_leaves` for a tree without leaves.

    The rule decides how many outputs there are and which are ``None``, so it is traced (not
    run) once on an abstract stand-in leaf.
    """
    stand_in = jax.ShapeDtypeStruct((1, 1), jnp.float32)
    stand_ins = [None if tree is None else stand_in for tree in trees]
    shapes = jax.eval_shape(lambda *leaves: fn(*leaves), stand_in, *stand_ins)
    return tuple(None if shape is None else treedef.unflatten([]) for shape in shapes)


def map_leaves(fn: Any, grads: Any, *trees: Any) -> tuple[Any, ...]:
    """Apply a per-leaf update rule over ``grads`` and trees of the same structure.

    ``fn(g, *leaves)`` returns a tuple (update, new state leaves...). A tree given as ``None``
    (state the configuration does not keep) feeds ``None`` leaves. Each output is cast to the
    gradient's dtype and rebuilt into a tree; an output that is ``None`` everywhere stays ``None``.

    Complex leaves are handled as torch's elementwise optimizers handle them: every complex
    input of a leaf (gradient, parameter, state) is viewed as real pairs
    (``torch.view_as_real``), the rule runs on the real view, and the outputs shaped like that
    view are turned back into complex arrays. Real leaves (per-leaf scalars) pass unchanged.
    Complex gradients follow torch's convention (``.grad`` is ``dL/dx + i·dL/dy``); ``jax.grad``
    of a real loss returns its conjugate, so pass ``jnp.conj(jax.grad(loss)(params))``.
    """
    # Any: jaxlib ships no stubs for PyTreeDef's methods (flatten_up_to has no public twin).
    treedef: Any = jax.tree.structure(grads)
    grad_leaves = treedef.flatten_up_to(grads)
    other_leaves = [[None] * len(grad_leaves) if tree is None else treedef.flatten_up_to(tree) for tree in trees]
    results = [
        fn(as_real_pairs(g), *(as_real_pairs(leaf) for leaf in rest)) for g, *rest in zip(grad_leaves, *other_leaves)
    ]
    if not results:
        return _empty_outputs(fn, treedef, trees)
    outputs: list[Any] = []
    for index in range(len(results[0])):
        column = [result[index] for result in results]
        if all(leaf is None for leaf in column):
            outputs.append(None)
        else:
            outputs.append(treedef.unflatten([_restore_leaf(x, g) for x, g in zip(column, grad_leaves)]))
    return tuple(outputs)
