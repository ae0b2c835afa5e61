r"""The divergence locator: where does a ported training step first differ from PyTorch?

:func:`compare_training` runs a torch ``nn.Module`` with its loss, optimizer, scheduler and
clipping, and the flax port of all of it, on the same batches, and compares every stage of
every step in the order the step computes them:

    initial parameters / model state → each layer's activation → output → model state (BatchNorm
    buffers) → loss → every parameter's gradient → every parameter's update → the optimizer state
    (our state fields named like torch's state keys) → (free-running only) the parameters.

By default each step *resyncs*: the JAX side starts the step from torch's weights and buffers and
its optimizer is fed torch's gradients, so each stage sees the same inputs on both sides and the
first stage out of tolerance is where the port differs, not where accumulated rounding surfaced.
``resync=False`` runs both freely (own weights, own gradients) and adds a parameter check.

Tolerances (relative to the stage's scale, ``max |ours − torch| / max |torch|`` per tensor, as
the parity contract compares near-zero quantities):

* float64, model stages (activations, output, model state, loss, gradients):
  :data:`MODEL_RTOL_FLOAT64` ``= 1e-9``, the seed CNN's float64 loss agreement: both frameworks
  sum the same terms in other orders, which costs at most about ``n·2⁻⁵³`` of the sum of the
  terms' magnitudes (``n`` ≤ a few thousand here), while every port mistake we know moves a
  stage by 1e-6 or more. A gradient's scale is the largest gradient of its torch layer, so a
  bias whose gradient cancels to rounding noise (a conv bias before a BatchNorm) is judged
  against the layer's kernel gradient.
* float64, optimizer stages (updates, optimizer state, parameters): the parity contract's
  ``1e-12``; torch's update is read as ``p_after − p_before``, which carries the rounding of
  ``p_after``, so its tolerance adds ``2⁻⁵³·max|p_after| / max|Δ|``.
* float32 (the user's check): ``1e-5`` of the scale (``assert_close``'s ``atol`` at unit
  scale) for every stage, plus ``2⁻²⁴·max|p_after| / max|Δ|`` for updates.

Example::

    port = Port(torch_module=net, torch_loss=lambda out, b: F.nll_loss(out, b[1]),
                torch_optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
                flax_module=FlaxNet(), variables=variables, mapping=mapping,
                jax_loss=lambda out, b: -jnp.mean(jnp.take_along_axis(out, b[1][:, None], 1)),
                transform=fo.adam(lr=1e-3), batches=[(images, labels), ...])
    report = compare_training(port, steps=5)
    print(report)                 # the first diverging stage, its likely causes, the per-stage table
    report.write("port_report/")  # report.txt, checks.csv, stages.png

torch is imported when :func:`compare_training` runs, not when this module is imported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg.port_report import Check, PortReport, causes_for, layer_kind, update_evidence
from functional_optreg.torch_bridge._layout import ParamPath, as_param_path, tree_paths

MODEL_RTOL_FLOAT64 = 1e-9
"""float64 tolerance of the model stages (activations, output, model state, loss, gradients)."""
OPTIMIZER_RTOL_FLOAT64 = 1e-12
"""float64 tolerance of the optimizer stages (the parity contract's)."""
RTOL_FLOAT32 = 1e-5
"""float32 tolerance of every stage, relative to the stage's scale."""

_CHANNELS_FIRST = ("Conv", "BatchNorm", "MaxPool", "AvgPool", "InstanceNorm", "GroupNorm")
_BUFFER_NAMES = {"running_mean": "mean", "running_var": "var"}


def _first_input(batch: Any) -> tuple:
    return (batch[0],)


@dataclasses.dataclass
class Port:
    """Both sides of a port. A batch is a tuple (or any pytree) of NumPy arrays, the same for both.

    Attributes:
      torch_module: the torch ``nn.Module`` (its mode, train or eval, is used as set).
      torch_loss: ``torch_loss(outputs, batch)`` → scalar tensor; ``batch`` holds tensors.
      torch_optimizer: ``torch_optimizer(module)`` → a ``torch.optim.Optimizer``.
      flax_module: the flax (linen) module.
      variables: its variables, ``{"params": ..., "batch_stats": ...}`` (NumPy or JAX arrays),
        e.g. from :func:`functional_optreg.module_to_flax` or your own conversion.
      jax_loss: ``jax_loss(outputs, batch)`` → scalar; ``batch`` holds JAX arrays.
      transform: our optimizer (any optax transform, clipping and schedules included).
      mapping: torch parameter name → its place in ``variables["params"]``: a
        :class:`functional_optreg.ParamPath` (path and axis permutation, as
        :func:`functional_optreg.module_to_flax` returns) or a path.
      batches: one batch per step, NumPy arrays (floats are cast to the run's dtype).
      torch_inputs, jax_inputs: ``inputs(batch)`` → the positional arguments of the forward
        (default: ``(batch[0],)``); e.g. an NCHW permute for torch.
      torch_scheduler: ``torch_scheduler(optimizer)`` → an lr scheduler stepped after each step.
      torch_clip: ``torch_clip(module)`` called between ``backward()`` and ``optimizer.step()``,
        e.g. ``lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)``.
      apply_kwargs: keyword arguments of ``flax_module.apply`` (e.g. ``{"train": True}``).
      buffers: torch buffer name → ``(collection, path)`` in ``variables``; default: BatchNorm's
        ``running_mean``/``running_var`` next to the layer's mapped weight (``batch_stats`` mean/var).
      activations: compare each layer's output: ``True`` for every torch submodule with mapped
        weights (flax path = the weight's path without its last key), a mapping torch submodule
        name → flax path, or ``False``. Channels-first outputs (conv, norm, pool layers) are
        compared channels-last.
      name: a label for the report.
    """

    torch_module: Any
    torch_loss: Callable[[Any, Any], Any]
    torch_optimizer: Callable[[Any], Any]
    flax_module: Any
    variables: Mapping[str, Any]
    jax_loss: Callable[[Any, Any], Any]
    transform: optax.GradientTransformation
    mapping: Mapping[str, Any]
    batches: Sequence[Any]
    torch_inputs: Callable[[Any], tuple] = _first_input
    jax_inputs: Callable[[Any], tuple] = _first_input
    torch_scheduler: Callable[[Any], Any] | None = None
    torch_clip: Callable[[Any], Any] | None = None
    apply_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    buffers: Mapping[str, tuple[str, Any]] | None = None
    activations: bool | Mapping[str, Any] = True
    name: str = "port"


def _get(tree: Any, path: Sequence[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _has(tree: Any, path: Sequence[Any]) -> bool:
    try:
        _get(tree, path)
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


def _to_jax_layout(array: np.ndarray, permutation: tuple[int, ...] | None) -> np.ndarray:
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


class _Run:
    """One locator run: both sides set up in ``dtype``; :meth:`step` checks one training step."""

    def __init__(self, port: Port, dtype: str, resync: bool) -> None:
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
        for torch_name, _ in self.layers:
            self.module.get_submodule(torch_name).register_forward_hook(self._hook(torch_name))
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
            shape = np.shape(_to_jax_layout(np.empty(self.params_by_name[name].shape), entry.permutation))
            if not _has(self.params, entry.path):
                raise ValueError(f"the mapping puts {name!r} at {'/'.join(map(str, entry.path))}, which params lack")
            if tuple(np.shape(_get(self.params, entry.path))) != shape:
                raise ValueError(
                    f"torch parameter {name!r} in the mapping's layout has shape {shape}, but params at "
                    f"{'/'.join(map(str, entry.path))} have {tuple(np.shape(_get(self.params, entry.path)))}"
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
            tree = _with(tree, entry.path, np.ascontiguousarray(_to_jax_layout(values[name], entry.permutation)))
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
            theirs = _to_jax_layout(param.detach().numpy(), entry.permutation)
            checks.append(
                self._check(0, "initial parameters", _label(name, entry.path), _get(self.params, entry.path), theirs)
            )
        buffers = dict(self.module.named_buffers())
        for name, (collection, path) in self.buffers.items():
            ours = _get(self.others[collection], path)
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
            "output": out.detach().numpy().copy(),
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
            captured = _get(new.get("intermediates", {}), paths[name] + ("__call__",))[index]
            kind = layer_kind(self.module, name) or ""
            if activation.ndim >= 3 and kind.startswith(_CHANNELS_FIRST):
                activation = np.moveaxis(activation, 1, -1)
            checks.append(self._check(step, "activation", name, captured, activation))
        checks.append(self._check(step, "output", "", out, torch_side["output"]))
        for name, (collection, path) in self.buffers.items():
            checks.append(
                self._check(step, "model state", name, _get(new[collection], path), torch_side["buffers"][name])
            )
        checks.append(self._check(step, "loss", "", loss, torch_side["loss"]))
        layer_scale: dict[str, float] = {}
        for name, grad in torch_side["grads"].items():
            layer = name.rpartition(".")[0]
            layer_scale[layer] = max(layer_scale.get(layer, 0.0), float(np.max(np.abs(grad), initial=0.0)))
        for name, entry in self.mapping.items():
            theirs = _to_jax_layout(torch_side["grads"][name], entry.permutation)
            scale = layer_scale[name.rpartition(".")[0]]
            checks.append(
                self._check(step, "gradient", _label(name, entry.path), _get(grads, entry.path), theirs, scale=scale)
            )
        return checks

    def _optimizer_checks(self, step: int, torch_side: dict, updates: Any) -> list[Check]:
        checks = []
        for name, entry in self.mapping.items():
            after = _to_jax_layout(torch_side["after"][name], entry.permutation)
            delta = after - _to_jax_layout(torch_side["before"][name], entry.permutation)
            scale = float(np.max(np.abs(delta), initial=0.0))
            rounding = self.unit * float(np.max(np.abs(after), initial=0.0)) / scale if scale > 0 else 0.0
            ours = _get(updates, entry.path)
            checks.append(self._check(step, "update", _label(name, entry.path), ours, delta, rounding))
        checks += self._state_checks(step, torch_side["state"])
        if not self.resync:
            for name, entry in self.mapping.items():
                theirs = _to_jax_layout(torch_side["after"][name], entry.permutation)
                checks.append(
                    self._check(step, "parameters", _label(name, entry.path), _get(self.params, entry.path), theirs)
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
                ours = _get(value, entry.path) if per_parameter else value
                if np.shape(theirs) == self.params_by_name[name].shape:
                    theirs = _to_jax_layout(theirs, entry.permutation)
                checks.append(
                    self._check(step, "optimizer state", f"{field} of {_label(name, entry.path)}", ours, theirs)
                )
        return checks


def _label(torch_name: str, path: Sequence[Any]) -> str:
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


def compare_training(
    port: Port, *, steps: int | None = None, dtype: str = "float64", resync: bool = True
) -> PortReport:
    """Run ``port``'s two sides for ``steps`` steps and locate the first stage that diverges.

    Args:
      port: both sides (see :class:`Port`). Its torch module is cast to ``dtype`` in place.
      steps: how many batches to run (default: all of ``port.batches``).
      dtype: ``"float64"`` (the semantic check; ``jax_enable_x64`` is on for the run only) or
        ``"float32"``.
      resync: start each JAX step from torch's weights, buffers and gradients (see the module
        docstring); ``False`` runs both sides freely.

    Returns:
      A :class:`~functional_optreg.port_report.PortReport`: every check, the first one out of
      tolerance with its stage's known causes and the evidence on the numbers, the losses.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    steps = len(port.batches) if steps is None else steps
    if not 1 <= steps <= len(port.batches):
        raise ValueError(f"steps (={steps}) must be between 1 and the number of batches (={len(port.batches)})")
    with jax.enable_x64(dtype == "float64"):
        run = _Run(port, dtype, resync)
        checks = run.initial_checks()
        first = next((check for check in checks if not check.passed), None)
        context: dict[str, Any] = {}
        losses = []
        for step in range(1, steps + 1):
            step_checks, step_losses, step_context = run.step(step, port.batches[step - 1])
            checks += step_checks
            losses.append(step_losses)
            if first is None:
                first = next((check for check in step_checks if not check.passed), None)
                context = {**step_context, "checks": step_checks} if first is not None else {}
    causes, evidence = _diagnose(first, run, context)
    return PortReport(port.name, dtype, steps, resync, checks, first, causes, evidence, np.asarray(losses))


def _diagnose(first: Check | None, run: _Run, context: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The causes known for ``first``'s stage, ordered by what the port and the numbers point to, and the evidence."""
    if first is None:
        return [], []
    evidence: list[str] = []
    priorities: list[str] = []
    if first.stage == "activation":
        kind = layer_kind(run.module, first.name)
        checks = list(context.get("checks", []))
        earlier = [check.name for check in checks[: checks.index(first)] if check.stage == "activation"]
        if earlier:
            evidence.append(f"{first.name} ({kind}) diverges while the layers before it ({', '.join(earlier)}) match")
            priorities = ["pooling", "padding", "layout", "a kernel", "an activation"]
        else:
            evidence.append(f"{first.name} ({kind}) is the first compared layer: its input is the batch itself")
            priorities = ["a kernel", "padding", "layout"]
    if first.stage == "update" and context:
        name = first.name.split(" (")[0]
        entry = run.mapping[name]
        torch_side = context["torch"]
        delta = _to_jax_layout(torch_side["after"][name] - torch_side["before"][name], entry.permutation)
        grad = _to_jax_layout(torch_side["grads"][name], entry.permutation)
        evidence += update_evidence(np.asarray(_get(context["updates"], entry.path)), delta, grad)
        priorities = _update_priorities(run, evidence)
    return causes_for(first.stage, priorities), evidence


def _update_priorities(run: _Run, evidence: list[str]) -> list[str]:
    """Which update causes the torch configuration and the evidence make likely, most likely first."""
    defaults = run.optimizer.defaults
    priorities = []
    if any("epsilon" in item for item in evidence):
        priorities.append("eps placement")
    if any("same factor" in item for item in evidence):
        priorities.append("learning-rate")
    if run.port.torch_clip is not None:
        priorities.append("clipping order")
        evidence.append("torch clips the gradients between backward() and optimizer.step()")
    if float(defaults.get("weight_decay", 0.0) or 0.0) > 0:
        priorities.append("weight decay")
    if run.scheduler is not None:
        priorities.append("learning-rate")
    if "eps" in defaults:
        priorities.append("eps placement")
    return priorities
