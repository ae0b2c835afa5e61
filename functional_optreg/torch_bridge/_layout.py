"""Where each torch parameter lives on the JAX side, and in which axis order.

Torch numbers an optimizer's parameters in group order (``state_dict()['param_groups']`` ids). A
:class:`Layout` records, for each torch index, the position of its leaf in the JAX parameter tree
(in ``jax.tree.leaves`` order) and the permutation that turns the torch tensor's axes into the JAX
leaf's (``None`` when they agree). Every per-parameter state tensor (moments, buffers) follows the
parameter's permutation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Union

import jax
import numpy as np


class ParamPath(NamedTuple):
    """A torch parameter's place in a JAX tree: ``path`` (keys from the root) and axis order.

    ``permutation`` is given to ``np.transpose``: the JAX leaf is
    ``np.transpose(torch_tensor, permutation)``; e.g. ``(1, 0)`` for a ``torch.nn.Linear`` weight
    ``(out, in)`` stored as a flax ``Dense`` kernel ``(in, out)``. ``None`` means the same layout.
    """

    path: tuple
    permutation: tuple[int, ...] | None = None


PathLike = Union[ParamPath, Sequence[Any], str]
NameMapping = Union[Mapping[str, PathLike], Callable[[str], PathLike]]


def _key_value(entry: Any) -> Any:
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    raise TypeError(f"unsupported pytree path entry {entry!r}")


def tree_paths(tree: Any) -> list[tuple]:
    """The path of each leaf of ``tree`` as a tuple of plain keys (dict keys, sequence indices)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [tuple(_key_value(entry) for entry in path) for path, _ in flat]


def as_param_path(value: PathLike, name: str) -> ParamPath:
    """Normalise a mapping value: a :class:`ParamPath`, a tuple/list of keys, or a dotted string."""
    if isinstance(value, ParamPath):
        return ParamPath(tuple(value.path), None if value.permutation is None else tuple(value.permutation))
    if isinstance(value, str):
        return ParamPath(tuple(value.split(".")))
    if isinstance(value, (tuple, list)):
        return ParamPath(tuple(value))
    raise TypeError(
        f"the mapping gives {value!r} for torch parameter {name!r}; expected a tuple of keys, a "
        "dotted string or a ParamPath."
    )


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(axis) for axis in np.argsort(permutation))


@dataclasses.dataclass(frozen=True)
class Layout:
    """The correspondence between torch's parameter order and the leaves of a JAX tree.

    Attributes:
      treedef: the structure of the JAX parameter tree.
      leaf_of: for torch index ``i``, the position of its leaf in ``jax.tree.leaves`` order.
      permutations: for torch index ``i``, the axis permutation torch → JAX, or ``None``.
      names: torch's parameter names where known (``None`` otherwise).
      torch_shapes: the torch shape of each parameter.
    """

    treedef: Any
    leaf_of: tuple[int, ...]
    permutations: tuple[tuple[int, ...] | None, ...]
    names: tuple[str | None, ...]
    torch_shapes: tuple[tuple[int, ...], ...]

    def describe(self, index: int) -> str:
        name = self.names[index]
        return f"parameter {index}" + (f" ({name!r})" if name else "")

    def to_jax(self, index: int, array: np.ndarray) -> np.ndarray:
        """A per-parameter torch array in the JAX leaf's axis order."""
        permutation = self.permutations[index]
        if permutation is None:
            return array
        if np.ndim(array) != len(permutation):
            raise ValueError(
                f"cannot permute a state tensor of shape {np.shape(array)} of {self.describe(index)} "
                f"with {permutation}: only state shaped like the parameter follows its layout."
            )
        return np.ascontiguousarray(np.transpose(array, permutation))

    def to_torch(self, index: int, array: np.ndarray) -> np.ndarray:
        """A per-parameter JAX array in torch's axis order (inverse of :meth:`to_jax`)."""
        permutation = self.permutations[index]
        if permutation is None:
            return np.asarray(array)
        return np.ascontiguousarray(np.transpose(np.asarray(array), _inverse(permutation)))

    def unflatten(self, values_by_index: Sequence[Any]) -> Any:
        """The JAX tree whose leaf for torch index ``i`` is ``values_by_index[i]``."""
        leaves: list[Any] = [None] * len(self.leaf_of)
        for index, position in enumerate(self.leaf_of):
            leaves[position] = values_by_index[index]
        return jax.tree.unflatten(self.treedef, leaves)

    def indices_in_leaf_order(self, indices: Sequence[int]) -> list[int]:
        """``indices`` sorted by the position of their leaves (the order ``jax.tree.leaves`` sees)."""
        return sorted(indices, key=lambda index: self.leaf_of[index])


def list_layout(torch_params: Sequence[Any], names: Sequence[str | None]) -> Layout:
    """The default layout: a list of arrays in torch's order, same axes."""
    count = len(torch_params)
    return Layout(
        treedef=jax.tree.structure([0] * count),
        leaf_of=tuple(range(count)),
        permutations=(None,) * count,
        names=tuple(names),
        torch_shapes=tuple(tuple(p.shape) for p in torch_params),
    )


def tree_layout(tree: Any, mapping: NameMapping, torch_params: Sequence[Any], names: Sequence[str | None]) -> Layout:
    """The layout of a user's JAX tree, given ``mapping`` from torch names to :class:`ParamPath`.

    Every optimizer parameter must map to a distinct leaf whose shape is the torch shape under the
    permutation, and every leaf of ``tree`` must be claimed by a parameter.
    """
    paths = tree_paths(tree)
    leaves = jax.tree.leaves(tree)
    position_of = {path: position for position, path in enumerate(paths)}
    leaf_of, permutations = [], []
    claimed: dict[int, str] = {}
    for index, (tensor, name) in enumerate(zip(torch_params, names)):
        if name is None:
            raise ValueError(
                f"torch parameter {index} has no name: the optimizer was not built from named "
                "parameters and no module= was given; pass module=<the nn.Module that holds it> or "
                "build the optimizer from module.named_parameters()."
            )
        if callable(mapping):
            target = as_param_path(mapping(name), name)
        else:
            if name not in mapping:
                raise ValueError(f"the parameter mapping has no entry for torch parameter {name!r}.")
            target = as_param_path(mapping[name], name)
        if target.path not in position_of:
            raise ValueError(
                f"torch parameter {name!r} maps to path {target.path}, which is not a leaf of the "
                f"parameter tree (its leaves: {paths})."
            )
        position = position_of[target.path]
        if position in claimed:
            raise ValueError(f"torch parameters {claimed[position]!r} and {name!r} both map to path {target.path}.")
        claimed[position] = name
        torch_shape = tuple(tensor.shape)
        expected = torch_shape if target.permutation is None else tuple(torch_shape[a] for a in target.permutation)
        if target.permutation is not None and sorted(target.permutation) != list(range(len(torch_shape))):
            raise ValueError(
                f"permutation {target.permutation} of torch parameter {name!r} is not a permutation "
                f"of its {len(torch_shape)} axes."
            )
        if tuple(np.shape(leaves[position])) != expected:
            raise ValueError(
                f"torch parameter {name!r} has shape {torch_shape}, so the leaf at {target.path} should "
                f"have shape {expected}, but it has shape {tuple(np.shape(leaves[position]))}."
            )
        leaf_of.append(position)
        permutations.append(target.permutation)
    unclaimed = [paths[position] for position in range(len(paths)) if position not in claimed]
    if unclaimed:
        raise ValueError(
            f"leaves of the parameter tree at {unclaimed} are not parameters of the torch optimizer; "
            "pass the tree of the optimized parameters only."
        )
    return Layout(
        treedef=jax.tree.structure(tree),
        leaf_of=tuple(leaf_of),
        permutations=tuple(permutations),
        names=tuple(names),
        torch_shapes=tuple(tuple(p.shape) for p in torch_params),
    )
