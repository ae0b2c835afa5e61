"""The divergence locator's engine: both sides of a port, one training step at a time.

:class:`Run` holds the torch module, optimizer and scheduler and the JAX variables and optimizer
state; :meth:`Run.step` runs one step on both sides and returns every :class:`Check` of it. The
public entry point and the tolerances' rationale are in :mod:`functional_optreg.port_check`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg.port_report import Check, layer_kind
from functional_optreg.torch_bridge._layout import ParamPath, as_param_path, tree_paths

MODEL_RTOL_FLOAT64 = 1e-9
"""float64 tolerance of the model stages (activations, output, model state, loss, gradients)."""
OPTIMIZER_RTOL_FLOAT64 = 1e-12
"""float64 tolerance of the optimizer stages (the parity contract's)."""
RTOL_FLOAT32 = 1e-5
"""float32 tolerance of every stage, relative to the stage's scale."""

_CHANNELS_FIRST = ("Conv", "BatchNorm", "MaxPool", "AvgPool", "InstanceNorm", "GroupNorm")
_BUFFER_NAMES = {"running_mean": "mean", "running_var": "var"}


def get(tree: Any, path: Sequence[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _has(tree: Any, path: Sequence[Any]) -> bool:
    try:
        get(tree, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _with(tree: Any, path: Sequence[Any], value: Any) -> dict:
    """A copy of the nested dict ``tree`` with ``value`` at ``path``."""
    if not path:
        return value
    copy = dict(tree)
    copy[path[0]] = _with(tree[path[0]], path[1:], value)
    return copy


def _as_path(value: Any) -> tuple:
    return tuple(part for part in value.split("/") if part) if isinstance(value, str) else tuple(value)


def to_jax_layout(array: np.ndarray, permutation: tuple[int, ...] | None) -> np.ndarray:
    return array if permutation is None else np.transpose(array, permutation)


def _relative(ours: Any, theirs: Any, scale: float = 0.0) -> tuple[float, str]:
    """``max|ours − theirs| / max(max|theirs|, scale)`` (``inf`` for a shape or non-finite-pattern mismatch)."""
    ours64, theirs64 = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours64.shape != theirs64.shape:
        return float("inf"), f"shape {ours64.shape} (ours) vs {theirs64.shape} (torch)"
    if not np.array_equal(np.isfinite(ours64), np.isfinite(theirs64)):
        return float("inf"), "non-finite values in different places"
    finite = np.isfinite(theirs64)
    diff = float(np.max(np.abs(ours64[finite] - theirs64[finite]), initial=0.0))
    scale = max(float(np.max(np.abs(theirs64[finite]), initial=0.0)), scale)
    if diff == 0.0:
        return 0.0, ""
    return (diff / scale if scale > 0 else float("inf")), ""


class _Forward(NamedTuple):
    """The JAX side's forward pass and loss; hashable, so ports sharing a model share its compilation."""

    module: Any
    loss: Callable[[Any, Any], Any]
    inputs: Callable[[Any], tuple]
    apply_kwargs: tuple
    mutable: tuple[str, ...]

    def __call__(self, params: Any, others: Any, batch: Any) -> tuple[jax.Array, tuple[Any, Any]]:
        variables = {"params": params, **others}
        kwargs = dict(self.apply_kwargs)
        if self.mutable:
            capture = "intermediates" in self.mutable
            out, new = self.module.apply(
                variables, *self.inputs(batch), mutable=list(self.mutable), capture_intermediates=capture, **kwargs
            )
        else:
            out, new = self.module.apply(variables, *self.inputs(batch), **kwargs), {}
        return self.loss(out, batch), (out, new)


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grad(forward: _Forward, params: Any, others: Any, batch: Any) -> Any:
    return jax.value_and_grad(forward.__call__, has_aux=True)(params, others, batch)


class Run:
    """One locator run: both sides set up in ``dtype``; :meth:`step` checks one training step."""

    def __init__(self, port: Any, dtype: str, resync: bool) -> None:
        """Set up both sides of ``port`` (a :class:`functional_optreg.port_check.Port`) in ``dtype``."""
        import torch

        self.torch = torch
        self.port, self.dtype, self.resync = port, dtype, resync
        self.np_dtype = np.dtype(dtype)
        self.unit = 2.0**-53 if dtype == "float64" else 2.0**-24
        self.module = port.torch_module.to(getattr(torch, dtype))
        self.optimizer = port.torch_optimizer(self.module)
        self.scheduler = port.torch_scheduler(self.optimizer) if port.torch_scheduler is not None else None
        self.params_by_name = dict(self.module.named_parameters())
        self.name_of = {id(p): name for name, p in self.params_by_name.items()}
        variables = jax.tree.map(self._cast, dict(port.variables))
        self.params = variables.pop("params")
        self.others = variables
        self.mapping = self._check_mapping()
        self.buffers = self._buffer_mapping()
        self.layers = self._layer_pairs()
        self._hooks: list[tuple[str, Any]] = []
        self._handles = [
            self.module.get_submodule(torch_name).register_forward_hook(self._hook(torch_name))
            for torch_name, _ in self.layers
        ]
        self.tx = optax.with_extra_args_support(port.transform)
        self.opt_state = self.tx.init(self.params)
        self.forward = _Forward(
            port.flax_module,
            port.jax_loss,
            port.jax_inputs,
            tuple(sorted(port.apply_kwargs.items())),
            tuple(self.others) + (("intermediates",) if self.layers else ()),
        )
        self.update_fn = jax.jit(self._update)

    def close(self) -> None:
        """Remove the forward hooks from the user's torch module."""
        for handle in self._handles:
            handle.remove()

    def _update(self, grads: Any, state: Any, params: Any) -> tuple[Any, Any, Any]:
        updates, state = self.tx.update(grads, state, params)
        return updates, state, optax.apply_updates(params, updates)

    def _cast(self, leaf: Any) -> Any:
        array = np.asarray(leaf)
        return jnp.asarray(array.astype(self.np_dtype) if np.issubdtype(array.dtype, np.floating) else array)

    def _check_mapping(self) -> dict[str, ParamPath]:
        mapping = {name: as_param_path(value, name) for name, value in self.port.mapping.items()}
        missing = [name for name in self.params_by_name if name not in mapping]
        if missing:
            raise ValueError(f"the mapping has no entry for torch parameter {missing[0]!r}")
        paths = {tuple(entry.path) for entry in mapping.values()}
        for keys in tree_paths(self.params):
            if keys not in paths:
                raise ValueError(f"params at {'/'.join(map(str, keys))} have no torch parameter in the mapping")
        for name, entry in mapping.items():
            if name not in self.params_by_name:
                raise ValueError(f"the mapping names {name!r}, which is not a parameter of the torch module")
            shape = np.shape(to_jax_layout(np.empty(self.params_by_name[name].shape), entry.permutation))
            if not _has(self.params, entry.path):
                raise ValueError(f"the mapping puts {name!r} at {'/'.join(map(str, entry.path))}, which params lack")
            if tuple(np.shape(get(self.params, entry.path))) != shape:
                raise ValueError(
                    f"torch parameter {name!r} in the mapping's layout has shape {shape}, but params at "
                    f"{'/'.join(map(str, entry.path))} have {tuple(np.shape(get(self.params, entry.path)))}"
                )
        return mapping

    def _buffer_mapping(self) -> dict[str, tuple[str, tuple]]:
        if self.port.buffers is not None:
            return {name: (collection, _as_path(path)) for name, (collection, path) in self.port.buffers.items()}
        result = {}
        for name, _ in self.module.named_buffers():
            prefix, _, leaf = name.rpartition(".")
            weight = self.mapping.get(f"{prefix}.weight" if prefix else "weight")
            if leaf in _BUFFER_NAMES and weight is not None:
                path = tuple(weight.path[:-1]) + (_BUFFER_NAMES[leaf],)
                if _has(self.others.get("batch_stats", {}), path):
                    result[name] = ("batch_stats", path)
        return result

    def _layer_pairs(self) -> list[tuple[str, tuple]]:
        wanted = self.port.activations
        if wanted is False:
            return []
        if wanted is True:
            pairs: dict[str, tuple] = {}
            for name, entry in self.mapping.items():
                pairs.setdefault(name.rpartition(".")[0], tuple(entry.path[:-1]))
            return [(name, path) for name, path in pairs.items() if name]
        return [(name, _as_path(path)) for name, path in wanted.items()]

    def _hook(self, name: str) -> Callable:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            del module, inputs
            if isinstance(output, self.torch.Tensor):
                self._hooks.append((name, output.detach().numpy().copy()))

        return hook

    def _torch_tree(self, values: Mapping[str, np.ndarray]) -> Any:
        tree = self.params
        for name, entry in self.mapping.items():
            tree = _with(tree, entry.path, np.ascontiguousarray(to_jax_layout(values[name], entry.permutation)))
        return tree

    def _torch_others(self, buffers: Mapping[str, np.ndarray]) -> Any:
        others = self.others
        for name, (collection, path) in self.buffers.items():
            others = _with(others, (collection,) + path, buffers[name])
        return others

    def _tolerance(self, optimizer_stage: bool) -> float:
        if self.dtype == "float32":
            return RTOL_FLOAT32
        return OPTIMIZER_RTOL_FLOAT64 if optimizer_stage else MODEL_RTOL_FLOAT64

    def _check(
        self, step: int, stage: str, name: str, ours: Any, theirs: Any, extra_tolerance: float = 0.0, scale: float = 0.0
    ) -> Check:
        error, detail = _relative(ours, theirs, scale)
        optimizer_stage = stage in ("update", "optimizer state", "parameters")
        return Check(step, stage, name, error, self._tolerance(optimizer_stage) + extra_tolerance, detail)

    def initial_checks(self) -> list[Check]:
        checks = []
        for name, param in self.params_by_name.items():
            entry = self.mapping[name]
            theirs = to_jax_layout(param.detach().numpy(), entry.permutation)
            checks.append(
                self._check(0, "initial parameters", label(name, entry.path), get(self.params, entry.path), theirs)
            )
        buffers = dict(self.module.named_buffers())
        for name, (collection, path) in self.buffers.items():
            ours = get(self.others[collection], path)
            checks.append(self._check(0, "initial model state", name, ours, buffers[name].detach().numpy()))
        return checks

    def _torch_step(self, batch: Any) -> dict[str, Any]:
        torch = self.torch
        tensors = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), batch)
        self.optimizer.zero_grad(set_to_none=True)
        before = {n: p.detach().numpy().copy() for n, p in self.params_by_name.items()}
        buffers_before = {n: b.detach().numpy().copy() for n, b in self.module.named_buffers()}
        self._hooks = []
        out = self.module(*self.port.torch_inputs(tensors))
        loss = self.port.torch_loss(out, tensors)
        loss.backward()
        grads = {
            n: (p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(p.shape, self.np_dtype))
            for n, p in self.params_by_name.items()
        }
        if self.port.torch_clip is not None:
            self.port.torch_clip(self.module)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        state = {}
        for param, entries in self.optimizer.state.items():
            state[self.name_of[id(param)]] = {
                key: value.detach().numpy().copy() for key, value in entries.items() if isinstance(value, torch.Tensor)
            }
        return {
            "before": before,
            "buffers_before": buffers_before,
            "activations": list(self._hooks),
            "output": jax.tree.map(lambda tensor: tensor.detach().numpy().copy(), out),
            "loss": float(loss.detach()),
            "grads": grads,
            "after": {n: p.detach().numpy().copy() for n, p in self.params_by_name.items()},
            "buffers": {n: b.detach().numpy().copy() for n, b in self.module.named_buffers()},
            "state": state,
        }

    def step(self, step: int, batch: Any) -> tuple[list[Check], tuple[float, float], dict[str, Any]]:
        """Check training step ``step`` (1-based) on ``batch``; returns the checks, the losses and the context."""
        batch = jax.tree.map(lambda leaf: np.asarray(self._cast(leaf)), batch)
        torch_side = self._torch_step(batch)
        params = self._torch_tree(torch_side["before"]) if self.resync else self.params
        others = self._torch_others(torch_side["buffers_before"]) if self.resync else self.others
        (loss, (out, new)), grads = _value_and_grad(self.forward, params, others, jax.tree.map(jnp.asarray, batch))
        fed = self._torch_tree(torch_side["grads"]) if self.resync else grads
        updates, self.opt_state, self.params = self.update_fn(fed, self.opt_state, params)
        self.others = {collection: new[collection] for collection in self.others}

        checks = self._model_checks(step, torch_side, out, new, float(loss), grads)
        checks += self._optimizer_checks(step, torch_side, updates)
        return checks, (torch_side["loss"], float(loss)), {"torch": torch_side, "updates": updates}

    def _model_checks(self, step: int, torch_side: dict, out: Any, new: Any, loss: float, grads: Any) -> list[Check]:
        checks = []
        seen: dict[str, int] = {}
        paths = dict(self.layers)
        for name, activation in torch_side["activations"]:
            index = seen.get(name, 0)
            seen[name] = index + 1
            captured = get(new.get("intermediates", {}), paths[name] + ("__call__",))[index]
            kind = layer_kind(self.module, name) or ""
            if activation.ndim >= 3 and kind.startswith(_CHANNELS_FIRST):
                activation = np.moveaxis(activation, 1, -1)
            checks.append(self._check(step, "activation", name, captured, activation))
        outputs = list(zip(jax.tree.leaves(out), jax.tree.leaves(torch_side["output"])))
        for index, (ours, theirs) in enumerate(outputs):
            checks.append(self._check(step, "output", f"[{index}]" if len(outputs) > 1 else "", ours, theirs))
        for name, (collection, path) in self.buffers.items():
            checks.append(
                self._check(step, "model state", name, get(new[collection], path), torch_side["buffers"][name])
            )
        checks.append(self._check(step, "loss", "", loss, torch_side["loss"]))
        layer_scale: dict[str, float] = {}
        for name, grad in torch_side["grads"].items():
            layer = name.rpartition(".")[0]
            layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.max(np.abs(grad), initial=0.0)))
        for name, entry in self.mapping.items():
            theirs = to_jax_layout(torch_side["grads"][name], entry.permutation)
            scale = layer_scale[name.rpartition(".")[0]]
            checks.append(
                self._check(step, "gradient", label(name, entry.path), get(grads, entry.path), theirs, scale=scale)
            )
        return checks

    def _optimizer_checks(self, step: int, torch_side: dict, updates: Any) -> list[Check]:
        checks = []
        for name, entry in self.mapping.items():
            after = to_jax_layout(torch_side["after"][name], entry.permutation)
            delta = after - to_jax_layout(torch_side["before"][name], entry.permutation)
            scale = float(np.max(np.abs(delta), initial=0.0))
            # torch rounds p_after at most twice (a decoupled decay p·(1 − lr·wd), then the step)
            rounding = 2 * self.unit * float(np.max(np.abs(after), initial=0.0)) / scale if scale > 0 else 0.0
            ours = get(updates, entry.path)
            checks.append(self._check(step, "update", label(name, entry.path), ours, delta, rounding))
        checks += self._state_checks(step, torch_side["state"])
        if not self.resync:
            for name, entry in self.mapping.items():
                theirs = to_jax_layout(torch_side["after"][name], entry.permutation)
                checks.append(
                    self._check(step, "parameters", label(name, entry.path), get(self.params, entry.path), theirs)
                )
        return checks

    def _state_checks(self, step: int, torch_state: Mapping[str, Mapping[str, np.ndarray]]) -> list[Check]:
        keys = {key for entries in torch_state.values() for key in entries}
        structure = tree_paths(self.params)
        checks = []
        for field, value in _named_fields(self.opt_state, keys):
            per_parameter = tree_paths(value) == structure
            if not per_parameter and np.ndim(value) != 0:
                continue
            for name, entry in self.mapping.items():
                theirs = torch_state.get(name, {}).get(field)
                if theirs is None:
                    continue
                ours = get(value, entry.path) if per_parameter else value
                if np.shape(theirs) == self.params_by_name[name].shape:
                    theirs = to_jax_layout(theirs, entry.permutation)
                checks.append(
                    self._check(step, "optimizer state", f"{field} of {label(name, entry.path)}", ours, theirs)
                )
        return checks


def label(torch_name: str, path: Sequence[Any]) -> str:
    return f"{torch_name} ({'/'.join(map(str, path))})"


def _named_fields(state: Any, keys: set[str]) -> list[tuple[str, Any]]:
    """``(field, value)`` for every NamedTuple field in ``state`` named like a torch state key."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            for field in node._fields:
                value = getattr(node, field)
                if field in keys:
                    found.append((field, value))
                else:
                    walk(value)
        elif isinstance(node, (tuple, list)):
            for item in node:
                walk(item)
        elif isinstance(node, Mapping):
            for item in node.values():
                walk(item)

    walk(state)
    return found
