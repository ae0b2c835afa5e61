"""Pytree checks whose errors name the offending path."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def check_same_structure(
    reference_name: str, reference: Any, other_name: str, other: Any, *, compare_shapes: bool = True
) -> None:
    """Raise ``ValueError`` naming the first path where two trees differ in structure or shape."""
    ref = _leaves_with_paths(reference)
    oth = _leaves_with_paths(other)
    for (ref_path, ref_leaf), (oth_path, oth_leaf) in zip(ref, oth):
        if ref_path != oth_path:
            raise ValueError(
                f"{other_name} and {reference_name} have different tree structures: "
                f"{other_name} has a leaf at {oth_path or '<root>'} where {reference_name} "
                f"has one at {ref_path or '<root>'}."
            )
        if compare_shapes and jnp.shape(ref_leaf) != jnp.shape(oth_leaf):
            raise ValueError(
                f"{other_name} at {oth_path or '<root>'} has shape {jnp.shape(oth_leaf)}, "
                f"but {reference_name} there has shape {jnp.shape(ref_leaf)}."
            )
    if len(ref) != len(oth):
        longer_name, longer = (reference_name, ref) if len(ref) > len(oth) else (other_name, oth)
        extra_path = longer[min(len(ref), len(oth))][0]
        raise ValueError(
            f"{other_name} and {reference_name} have different tree structures: only "
            f"{longer_name} has a leaf at {extra_path or '<root>'}."
        )


def check_float_params(params: Any) -> None:
    """Raise ``TypeError`` naming the first leaf that is neither real nor complex floating point.

    Complex leaves are accepted: the elementwise optimizers treat them as real pairs, as torch
    does (see :func:`functional_optreg.optimizers._common.map_leaves`). Optimizers that torch
    does not run on complex parameters also call :func:`check_real_params`.
    """
    for path, leaf in _leaves_with_paths(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"params at {path or '<root>'} have dtype {dtype}; optimizers only update "
                "floating-point parameters (torch raises for integer tensors too)."
            )


def require_params(params: Any, optimizer_name: str, reason: str) -> None:
    """Raise a clear error when an update that needs the parameters did not receive them."""
    if params is None:
        raise ValueError(
            f"{optimizer_name} needs the current parameters for {reason}: call update(grads, state, params)."
        )


def check_real_params(params: Any, optimizer_name: str, error: type[Exception] = RuntimeError) -> None:
    """Raise torch's error when an optimizer without complex support is given complex params.

    The message starts with torch's (``"Adafactor does not support complex parameters"``) and
    names the first complex leaf. ``error`` is torch's exception type for that optimizer
    (``RuntimeError`` for Adafactor and Muon, ``ValueError`` for SparseAdam).
    """
    for path, leaf in _leaves_with_paths(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise error(
                f"{optimizer_name} does not support complex parameters (params at "
                f"{path or '<root>'} have dtype {jnp.result_type(leaf)})"
            )
