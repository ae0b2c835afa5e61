r"""Saving and restoring optimizer state: a dependency-free ``.npz`` format.

Optimizer state is a plain pytree (NamedTuples of arrays, ``None`` for state a configuration does
not keep), so any pytree checkpointer stores it. With orbax::

    import orbax.checkpoint as ocp
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "opt_state", state)
    state = checkpointer.restore(directory / "opt_state", jax.eval_shape(tx.init, params))

:func:`save_state` / :func:`load_state` do the same with NumPy only. The file records each leaf
by its path, shape and dtype (``bfloat16`` and other ``ml_dtypes`` types included, stored as
their raw bits); :func:`load_state` rebuilds the tree from a ``like`` tree, so NamedTuples and
``None`` fields come back as they were, and refuses a file whose leaves do not match it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_FORMAT = "functional_optreg.state/1"


def _leaf_key(index: int) -> str:
    return f"leaf_{index:06d}"


def _to_host(leaf: Any) -> np.ndarray:
    return np.asarray(jax.device_get(leaf))


def _storable(array: np.ndarray) -> np.ndarray:
    """NumPy cannot describe ``ml_dtypes`` types (bfloat16, float8) in ``.npy``: keep the bits."""
    if array.dtype.kind == "V":
        return array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return array


def _describe(treedef: Any) -> dict[str, Any]:
    """The tree's nodes as JSON: each node's type name, its keys (dict keys, NamedTuple fields)
    and its children; a leaf is ``{"type": "*"}``."""
    node = treedef.node_data()
    if node is None:
        return {"type": "*"}
    kind, data = node
    keys = list(getattr(kind, "_fields", None) or (data if isinstance(data, (list, tuple)) else []))
    return {
        "type": kind.__qualname__,
        "keys": [str(key) for key in keys],
        "children": [_describe(child) for child in treedef.children()],
    }


def _child_path(path: str, kind: str, keys: list[str], index: int) -> str:
    if index < len(keys):
        return f"{path}.{keys[index]}" if kind not in ("dict", "OrderedDict") else f"{path}[{keys[index]!r}]"
    return f"{path}[{index}]"


def _first_structure_mismatch(saved: dict[str, Any], like: dict[str, Any], path: str = "") -> str | None:
    """Where the saved tree's nodes first differ from ``like``'s (type, keys or arity), or ``None``."""
    where = path or "<root>"
    if saved["type"] != like["type"]:
        return f"at {where} the file has a {saved['type']} where like has a {like['type']}"
    if saved.get("keys", []) != like.get("keys", []):
        return f"at {where} the file's {saved['type']} has keys {saved['keys']} where like's has {like['keys']}"
    if len(saved.get("children", [])) != len(like.get("children", [])):
        counts = f"{len(saved['children'])} children, like's {len(like['children'])}"
        return f"at {where} the file's {saved['type']} has {counts}"
    for index, (a, b) in enumerate(zip(saved.get("children", []), like.get("children", []))):
        found = _first_structure_mismatch(a, b, _child_path(path, saved["type"], saved.get("keys", []), index))
        if found is not None:
            return found
    return None


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write the pytree ``state`` to ``path`` (an ``.npz`` file), atomically.

    Args:
      path: the file to write; replaced in one step (written to a temporary file first), so an
        interrupted save leaves the previous checkpoint intact.
      state: any pytree of arrays or scalars: optimizer state, parameters, or a dict of both.

    Example:
      >>> import os, tempfile, jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adam(lr=1e-3)
      >>> state = tx.init({"w": jnp.ones(3)})
      >>> path = os.path.join(tempfile.mkdtemp(), "opt.npz")
      >>> fo.save_state(path, state)
      >>> fo.load_state(path, like=state).exp_avg["w"]
      Array([0., 0., 0.], dtype=float32)
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    arrays: dict[str, Any] = {}
    leaves = []
    for index, (leaf_path, leaf) in enumerate(flat):
        host = _to_host(leaf)
        arrays[_leaf_key(index)] = _storable(host)
        leaves.append({"path": jax.tree_util.keystr(leaf_path), "shape": list(host.shape), "dtype": host.dtype.name})
    meta = {"format": _FORMAT, "treedef": str(treedef), "structure": _describe(treedef), "leaves": leaves}
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save the state to {path!r}: the folder {directory!r} does not exist")
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _placed_like(array: np.ndarray, like: Any) -> Any:
    """``array`` as the kind of value ``like`` is: a device array with its sharding, or NumPy."""
    sharding = getattr(like, "sharding", None)
    if sharding is not None:
        return jax.device_put(array, sharding)
    if isinstance(like, np.ndarray):
        return array
    return jnp.asarray(array)


def load_state(path: str | os.PathLike, like: Any) -> Any:
    """Read a file written by :func:`save_state` into the structure of ``like``.

    Args:
      path: the ``.npz`` file.
      like: a tree with the structure, shapes and dtypes to restore: the state of a fresh
        ``tx.init(params)`` or ``jax.eval_shape(tx.init, params)``. Leaves that are sharded
        ``jax.Array`` values (or ``ShapeDtypeStruct`` with a sharding) are restored with that
        sharding.

    Returns:
      The saved state, with ``like``'s tree structure (NamedTuples, ``None`` fields).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a state file, is truncated or corrupted (the message names the
        file), or its tree differs from ``like``'s: node types (an ``RAdamState`` is not an
        ``AdamState``), NamedTuple fields or dict keys, leaf paths, shapes or dtypes (the
        message names the first difference).
    """
    path = os.fspath(path)
    try:
        # Opened here, not by np.load, which leaks its handle when the zip directory is unreadable.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            if "__meta__" not in data.files:
                raise ValueError(f"{path!r} is not a state file written by save_state")
            meta = json.loads(str(data["__meta__"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path!r} has format {meta.get('format')!r}, expected {_FORMAT!r}")
            stored = [data[_leaf_key(index)] for index in range(len(meta["leaves"]))]
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path!r} is not a readable state file (truncated or corrupted?): {error}") from error
    except ValueError as error:
        if str(error).startswith(repr(path)):
            raise
        raise ValueError(f"{path!r} is not a readable state file (truncated or corrupted?): {error}") from error
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    saved = meta["leaves"]
    for index in range(max(len(flat), len(saved))):
        if index >= len(flat) or index >= len(saved):
            extra = saved[index]["path"] if index < len(saved) else jax.tree_util.keystr(flat[index][0])
            owner = "the file" if index < len(saved) else "like"
            raise ValueError(
                f"the saved state and like have different tree structures: only {owner} has a leaf "
                f"at {extra or '<root>'}."
            )
        like_path = jax.tree_util.keystr(flat[index][0]) or "<root>"
        entry = saved[index]
        if (entry["path"] or "<root>") != like_path:
            raise ValueError(
                "the saved state and like have different tree structures: the file has a leaf at "
                f"{entry['path'] or '<root>'} where like has one at {like_path}."
            )
        like_shape = tuple(np.shape(flat[index][1]))
        like_leaf = flat[index][1]
        like_dtype = np.dtype(getattr(like_leaf, "dtype", None) or np.asarray(like_leaf).dtype)
        if tuple(entry["shape"]) != like_shape or entry["dtype"] != like_dtype.name:
            raise ValueError(
                f"the saved state at {like_path} is {entry['dtype']}{list(entry['shape'])}, but like "
                f"there is {like_dtype.name}{list(like_shape)}."
            )
    # Same leaves, yet other nodes: an RAdamState is not an AdamState, a None field not a leaf.
    if "structure" in meta:
        mismatch = _first_structure_mismatch(meta["structure"], _describe(treedef))
        if mismatch is not None:
            raise ValueError(f"the saved state and like have different tree structures: {mismatch}.")
    elif meta.get("treedef") != str(treedef):
        raise ValueError(
            f"the saved state and like have different tree structures: the file has {meta.get('treedef')}, "
            f"like has {treedef}."
        )
    leaves = [
        _placed_like(array.view(jnp.dtype(entry["dtype"])).reshape(entry["shape"]), leaf)
        for array, entry, (_, leaf) in zip(stored, saved, flat)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)
