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
  ``p_after`` (at most two roundings: a decoupled decay, then the step), so its tolerance adds
  ``2·2⁻⁵³·max|p_after| / max|Δ|``.
* float32 (the user's check): ``1e-5`` of the scale (``assert_close``'s ``atol`` at unit
  scale) for every stage, plus ``2·2⁻²⁴·max|p_after| / max|Δ|`` for updates.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from functional_optreg import _port_engine
from functional_optreg._port_engine import MODEL_RTOL_FLOAT64 as MODEL_RTOL_FLOAT64
from functional_optreg._port_engine import OPTIMIZER_RTOL_FLOAT64 as OPTIMIZER_RTOL_FLOAT64
from functional_optreg._port_engine import RTOL_FLOAT32 as RTOL_FLOAT32
from functional_optreg.port_report import Check, PortReport, causes_for, layer_kind, update_evidence


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
        run = _port_engine.Run(port, dtype, resync)
        context: dict[str, Any] = {}
        losses = []
        try:
            checks = run.initial_checks()
            first = next((check for check in checks if not check.passed), None)
            for step in range(1, steps + 1):
                step_checks, step_losses, step_context = run.step(step, port.batches[step - 1])
                checks += step_checks
                losses.append(step_losses)
                if first is None:
                    first = next((check for check in step_checks if not check.passed), None)
                    context = {**step_context, "checks": step_checks} if first is not None else {}
        finally:
            run.close()
    causes, evidence = _diagnose(first, run, context)
    report = PortReport(port.name, dtype, steps, resync, checks, first, causes, evidence, np.asarray(losses))
    report.notes = _notes(run, {check.stage for check in checks})
    return report


def _notes(run: _port_engine.Run, stages: set[str]) -> list[str]:
    """What the run could not compare, so that a missing column is not read as a match."""
    notes = []
    torch_keys = sorted({key for entries in run.optimizer.state.values() for key in entries})
    if torch_keys and "optimizer state" not in stages:
        notes.append(
            f"optimizer state not compared: no field of the transform's state is named like torch's state keys "
            f"({', '.join(torch_keys)}); the update stage still checks the optimizer"
        )
    if run.port.activations is not False and "activation" not in stages:
        notes.append("activations not compared: no hooked torch submodule produced a tensor")
    return notes


def _diagnose(first: Check | None, run: _port_engine.Run, context: Mapping[str, Any]) -> tuple[list[str], list[str]]:
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
            after_conv = any((layer_kind(run.module, name) or "").startswith("Conv") for name in earlier)
            if kind == "Linear" and after_conv:
                evidence.append("a Linear layer after convolutions: the flatten between them is the usual suspect")
                priorities = ["layout", "pooling", "a kernel"]
        else:
            evidence.append(f"{first.name} ({kind}) is the first compared layer: its input is the batch itself")
            priorities = ["a kernel", "padding", "layout"]
    if first.stage == "update" and context:
        name = first.name.split(" (")[0]
        entry = run.mapping[name]
        torch_side = context["torch"]
        delta = _port_engine.to_jax_layout(torch_side["after"][name] - torch_side["before"][name], entry.permutation)
        grad = _port_engine.to_jax_layout(torch_side["grads"][name], entry.permutation)
        evidence += update_evidence(np.asarray(_port_engine.get(context["updates"], entry.path)), delta, grad)
        if run.port.torch_clip is not None:
            evidence.append("torch clips the gradients between backward() and optimizer.step()")
        priorities = _update_priorities(run, evidence)
    return causes_for(first.stage, priorities), evidence


def _update_priorities(run: _port_engine.Run, evidence: list[str]) -> list[str]:
    """Which update causes the torch configuration and the evidence make likely, most likely first."""
    defaults = run.optimizer.defaults
    priorities = []
    if any("epsilon" in item for item in evidence):
        priorities.append("eps placement")
    if any("same factor" in item for item in evidence):
        priorities.append("learning-rate")
    if run.port.torch_clip is not None:
        priorities.append("clipping order")
    if float(defaults.get("weight_decay", 0.0) or 0.0) > 0:
        priorities.append("weight decay")
    if run.scheduler is not None:
        priorities.append("learning-rate")
    if "eps" in defaults:
        priorities.append("eps placement")
    return priorities
