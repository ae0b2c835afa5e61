"""torch ``nn.Module`` weights ↔ flax (linen) variables, layer by layer.

Supported layers and their flax counterparts (torch name → flax name, layout):

============================  =====================  ==========================================
torch                         flax                   weights
============================  =====================  ==========================================
``nn.Linear``                 ``nn.Dense``           ``weight (out, in)`` → ``kernel (in, out)``
``nn.Conv1d/2d/3d``           ``nn.Conv``            ``weight (O, I/g, *k)`` → ``kernel (*k, I/g, O)``
``nn.BatchNorm1d/2d/3d``      ``nn.BatchNorm``       ``weight``/``bias`` → ``scale``/``bias``;
                                                     ``running_mean``/``running_var`` →
                                                     ``batch_stats`` ``mean``/``var``
``nn.LayerNorm``              ``nn.LayerNorm``       ``weight``/``bias`` → ``scale``/``bias``
``nn.Embedding``              ``nn.Embed``           ``weight`` → ``embedding``
============================  =====================  ==========================================

Biases are unchanged. The flax module must be configured to compute what torch computes: conv
padding as explicit pairs (torch ``padding=1`` → ``padding=[(1, 1)] * n``), data channels-last,
``nn.BatchNorm(use_running_average=..., epsilon=torch eps, momentum=1 − torch momentum)`` (flax's
momentum weighs the old statistics), ``nn.LayerNorm(epsilon=torch eps)``, and a flatten in torch's
channel-major order where a conv feeds a dense layer. BatchNorm's ``num_batches_tracked`` has no
flax counterpart: it is not exported, and on the way back the module's current value is kept.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np

from functional_optreg.torch_bridge import _torch
from functional_optreg.torch_bridge._layout import ParamPath

SubmoduleNames = Union[Mapping[str, Any], Callable[[str], Any], None]
"""Torch submodule name → flax path: a tuple of keys or a ``/``-separated string."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One torch state-dict entry and where it lives in the flax variables."""

    key: str
    collection: str
    path: tuple
    permutation: tuple[int, ...] | None
    tied_to: str | None = None
    """For a parameter tied to an earlier one (the same tensor, e.g. an ``lm_head`` sharing the
    token embedding): that parameter's key; the entry then reads the earlier one's place."""


def _conv_permutation(ndim: int) -> tuple[int, ...]:
    return tuple(range(2, ndim)) + (1, 0)


def _layer_entries(kind: str, module: Any) -> list[tuple[str, str, str, tuple[int, ...] | None]]:
    """``(torch attribute, collection, flax name, permutation)`` for one supported layer."""
    if kind == "Linear":
        return [("weight", "params", "kernel", (1, 0)), ("bias", "params", "bias", None)]
    if kind in ("Conv1d", "Conv2d", "Conv3d"):
        return [("weight", "params", "kernel", _conv_permutation(module.weight.ndim)), ("bias", "params", "bias", None)]
    if kind in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        if module.track_running_stats and module.momentum is None:
            raise ValueError(
                f"{kind} with momentum=None keeps a cumulative average, which flax's BatchNorm "
                "(an exponential average) does not compute."
            )
        return [
            ("weight", "params", "scale", None),
            ("bias", "params", "bias", None),
            ("running_mean", "batch_stats", "mean", None),
            ("running_var", "batch_stats", "var", None),
        ]
    if kind == "LayerNorm":
        return [("weight", "params", "scale", None), ("bias", "params", "bias", None)]
    if kind == "Embedding":
        return [("weight", "params", "embedding", None)]
    raise KeyError(kind)


_SUPPORTED = (
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "Embedding",
)
_SKIPPED_BUFFERS = frozenset({"num_batches_tracked"})


def _flax_path(name: str, names: SubmoduleNames) -> tuple:
    if names is None:
        target = name
    elif callable(names):
        target = names(name)
    else:
        if name not in names:
            raise ValueError(f"the submodule name mapping has no entry for torch submodule {name!r}.")
        target = names[name]
    if isinstance(target, str):
        return tuple(part for part in target.replace(".", "/").split("/") if part)
    return tuple(target)


def _plan(module: Any, names: SubmoduleNames) -> list[_Entry]:
    """Every state-dict entry of ``module`` with its flax place; an error for unsupported layers."""
    torch = _torch.torch_module()
    entries = []
    first: dict[int, _Entry] = {}
    for name, submodule in module.named_modules(remove_duplicate=False):
        own = dict(submodule.named_parameters(recurse=False))
        own.update(dict(submodule.named_buffers(recurse=False)))
        own = {key: value for key, value in own.items() if value is not None}
        if not own:
            continue
        kind = type(submodule).__name__
        if kind not in _SUPPORTED or getattr(torch.nn, kind, None) is not type(submodule):
            raise TypeError(
                f"submodule {name or '<root>'!r} ({type(submodule).__module__}.{type(submodule).__qualname__}) "
                f"has weights {sorted(own)}, but only {', '.join(_SUPPORTED)} are mapped to flax; "
                "convert it yourself (its state-dict entries are plain tensors)."
            )
        path = _flax_path(name, names)
        for attribute, collection, flax_name, permutation in _layer_entries(kind, submodule):
            if attribute in own:
                key = f"{name}.{attribute}" if name else attribute
                earlier = first.get(id(own[attribute]))
                if earlier is not None:
                    entries.append(dataclasses.replace(earlier, key=key, tied_to=earlier.key))
                    continue
                entry = _Entry(key, collection, path + (flax_name,), permutation)
                first[id(own[attribute])] = entry
                entries.append(entry)
        unexpected = set(own) - {a for a, *_ in _layer_entries(kind, submodule)} - _SKIPPED_BUFFERS
        if unexpected:
            raise ValueError(f"submodule {name!r} ({kind}) has unexpected weights {sorted(unexpected)}.")
    return entries


def _insert(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    if path[-1] in tree:
        raise ValueError(f"two torch weights map to the flax path {path}.")
    tree[path[-1]] = value


def _lookup(tree: Any, path: tuple, collection: str) -> Any:
    node = tree
    for key in path:
        try:
            node = node[key]
        except (KeyError, TypeError, IndexError):
            raise KeyError(f"the flax variables have no {collection!r} entry at {path}.") from None
    return node


def module_to_flax(module: Any, *, names: SubmoduleNames = None) -> tuple[dict, dict[str, ParamPath]]:
    """Flax (linen) variables from a torch module's weights, and the parameter mapping for
    :func:`from_torch`.

    Args:
      module: a ``torch.nn.Module`` built from the supported layers (any nesting; layers without
        weights, such as activations, are ignored).
      names: where each torch submodule lives in the flax tree: a dict or function from the torch
        submodule name (``"features.0"``) to a flax path (``("Conv_0",)`` or ``"block/Conv_0"``).
        Default: the torch name split at dots (``"features.0"`` → ``("features", "0")``).

    Returns:
      ``(variables, mapping)``: ``variables`` is ``{"params": ..., "batch_stats": ...}`` (the
      latter only with BatchNorm layers) of NumPy arrays in the parameters' dtype, ready for
      ``model.apply``; ``mapping`` maps each torch parameter name to its :class:`ParamPath` in
      ``variables["params"]`` with the layout permutation, so
      ``from_torch(optimizer, params=(variables["params"], mapping))`` converts the optimizer's
      moments along with the weights. A tied parameter (one tensor under two names, as nanoGPT
      ties ``lm_head.weight`` to ``transformer.wte.weight``) is exported once, at the first
      name's place; the mapping records the tie by giving the second name that same
      :class:`ParamPath` (build the flax model to reuse it, e.g. ``nn.Embed.attend``).

    BatchNorm's running statistics are copied as they are. Torch updates ``running_var`` with the
    *unbiased* batch variance (``n/(n−1)`` times the biased one it normalizes with), flax's
    ``nn.BatchNorm`` with the biased one: evaluation with the mapped statistics agrees, but
    training further updates the two differently (by the factor ``n/(n−1)`` on each new batch's
    contribution).

    Example:
      >>> import torch, functional_optreg as fo
      >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
      >>> variables, mapping = fo.module_to_flax(model)
      >>> variables["params"]["0"]["kernel"].shape, mapping["0.weight"]
      ((3, 2), ParamPath(path=('0', 'kernel'), permutation=(1, 0)))
    """
    state = module.state_dict(keep_vars=True)
    variables: dict[str, dict] = {}
    mapping: dict[str, ParamPath] = {}
    parameter_names = {name for name, _ in module.named_parameters()}
    for entry in _plan(module, names):
        if entry.tied_to is not None:
            if entry.tied_to in mapping:
                mapping[entry.key] = mapping[entry.tied_to]
            continue
        array = _torch.to_numpy(state[entry.key])
        if entry.permutation is not None:
            array = np.ascontiguousarray(np.transpose(array, entry.permutation))
        _insert(variables.setdefault(entry.collection, {}), entry.path, array)
        if entry.key in parameter_names:
            mapping[entry.key] = ParamPath(entry.path, entry.permutation)
    return variables, mapping


def flax_to_module_state_dict(variables: Mapping[str, Any], module: Any, *, names: SubmoduleNames = None) -> dict:
    """A torch ``state_dict`` for ``module`` from flax variables (inverse of :func:`module_to_flax`).

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` as :func:`module_to_flax` lays them out
        (JAX or NumPy arrays).
      module: the torch module to receive the weights (it gives the keys, and the values of
        entries flax does not keep: BatchNorm's ``num_batches_tracked``).
      names: the same submodule mapping as given to :func:`module_to_flax`.

    Returns:
      An ordered dict of CPU tensors for ``module.load_state_dict(..., strict=True)``.
    """
    current = module.state_dict()
    by_key = {entry.key: entry for entry in _plan(module, names)}
    result = collections.OrderedDict()
    for key, tensor in current.items():
        entry = by_key.get(key)
        if entry is None:
            result[key] = tensor.detach().clone()
            continue
        array = np.asarray(_lookup(variables.get(entry.collection, {}), entry.path, entry.collection))
        if entry.permutation is not None:
            array = np.transpose(array, tuple(int(a) for a in np.argsort(entry.permutation)))
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(
                f"flax {entry.collection} {entry.path} has shape {array.shape} in torch layout, but "
                f"{key!r} has shape {tuple(tensor.shape)}."
            )
        result[key] = _torch.to_tensor(np.ascontiguousarray(array)).to(dtype=tensor.dtype)
    return result
