"""Resume parity through the torch bridge, float64, every step.

Each configuration trains ``K`` steps in torch, converts the optimizer (and scheduler) with
``from_torch`` and continues ``M`` steps in JAX next to the uninterrupted torch run; then it writes
the state back with ``to_torch_state_dict``, loads it into a fresh torch optimizer and continues
``N`` more steps next to the same torch run. Every step of both continuations must agree to a
relative error of 1e-12 (the parity contract's float64 bound).

At the hand-back point the reference run saves and reloads its own state dict, as a torch
checkpoint does: ``load_state_dict`` casts scalar state (ASGD's ``eta`` and ``mu``, NAdam's
``mu_product``) to the parameters' dtype, so the reference takes the same path as the handed-back
run. The state dicts written by the bridge must also equal torch's own (right after conversion and
at the hand-back point).

Gradients are the parity suite's quadratic stream: they depend on the current parameters, so a
wrong step changes every later step.

LBFGS is judged like every chaotic procedure (docs/parity.md, :mod:`parity.chaos`): where a
quantity misses 1e-12, torch is run against itself under rounding-level perturbations in the same
run, and the quantity may then reach ``ALLOWANCE`` times torch's own deviation, only where that
deviation itself misses the contract. Its ``prev_loss`` is a loss near its minimum, a sum of
``h·(√(1 + u²) − 1)`` terms whose ``√(1 + u²)`` are O(1): it is compared against the magnitude of
those terms, not against its own value (see :func:`closure_loss_magnitude`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as L

from functional_optreg import torch_bridge, verify
from parity import chaos
from parity.muon_shared_ns import our_newton_schulz_in_torch

K, M, N = 12, 12, 12
RTOL = verify.FLOAT64_RTOL
NAMES = ("w", "b", "k")


SHAPES = {"w": (4, 3), "b": (3,), "k": (2, 3, 2, 2)}
"""A matrix, a (zero) bias and a 4-D kernel: the contract's mix of shapes."""
MATRIX_SHAPES = {"w": (4, 3), "b": (3, 2), "k": (2, 5)}
"""Muon only takes matrices."""


def initial_params(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    params = {name: 0.5 * rng.normal(size=shape) for name, shape in shapes.items()}
    if len(shapes["b"]) == 1:
        params["b"] = np.zeros(shapes["b"])
    return params


def gradients(step: int, current: dict[str, np.ndarray], sparse_axes: dict[str, int] | None) -> dict[str, np.ndarray]:
    """The quadratic stream; with ``sparse_axes`` (SparseAdam), one slice per leaf is left out.

    The slice is taken along the axis that is the *first* axis of the JAX leaf (our SparseAdam
    reads a dense gradient's zero slices along axis 0 as untouched); torch receives the gradient
    as an element-wise sparse tensor, which leaves out the same entries.
    """
    start = initial_params({name: current[name].shape for name in NAMES})
    stream = verify.quadratic_gradients([start[name] for name in NAMES], seed=11)
    grads = dict(zip(NAMES, stream(step, [current[name] for name in NAMES])))
    if sparse_axes is not None:
        for name, grad in grads.items():
            axis = sparse_axes[name]
            index = [slice(None)] * grad.ndim
            index[axis] = step % grad.shape[axis]
            grad[tuple(index)] = 0.0
    return grads


def metric(step: int) -> float:
    """A metric that improves for a few steps and then stalls (ReduceLROnPlateau then cuts)."""
    return 1.0 / (1 + min(step, 5))


# --- parameter layouts: torch name <-> JAX tree ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the JAX side holds the parameters: ``"list"`` (torch order) or ``"tree"`` (a dict tree,
    with the matrix transposed as a flax Dense kernel when ``transpose``)."""

    kind: str
    transpose: bool = True

    @property
    def sparse_axes(self) -> dict[str, int]:
        """Per torch parameter, the torch axis that is the JAX leaf's first axis."""
        return {"w": 1 if self.kind == "tree" and self.transpose else 0, "b": 0, "k": 0}

    def bridge_params(self, order: list[str], tensors: dict[str, Any]):
        if self.kind == "list":
            return None
        tree = self.to_jax({name: tensors[name].detach().numpy() for name in NAMES}, order)
        mapping = {
            "w": torch_bridge.ParamPath(("dense", "kernel"), (1, 0) if self.transpose else None),
            "b": ("dense", "bias"),
            "k": "conv.kernel",
        }
        return (tree, mapping)

    def to_jax(self, arrays: dict[str, np.ndarray], order: list[str]) -> Any:
        if self.kind == "list":
            return [jax.numpy.asarray(arrays[name]) for name in order]
        return {
            "conv": {"kernel": jax.numpy.asarray(arrays["k"])},
            "dense": {"bias": jax.numpy.asarray(arrays["b"]), "kernel": jax.numpy.asarray(self._w(arrays["w"]))},
        }

    def _w(self, matrix: np.ndarray) -> np.ndarray:
        return matrix.T if self.transpose else matrix

    def by_name(self, tree: Any, order: list[str]) -> dict[str, Any]:
        """The JAX leaves in torch's layout, by torch name (traceable)."""
        if self.kind == "list":
            return dict(zip(order, tree))
        kernel = tree["dense"]["kernel"]
        return {"w": kernel.T if self.transpose else kernel, "b": tree["dense"]["bias"], "k": tree["conv"]["kernel"]}

    def from_jax(self, tree: Any, order: list[str]) -> dict[str, np.ndarray]:
        return {name: np.asarray(leaf) for name, leaf in self.by_name(tree, order).items()}


# --- configurations ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimizer configuration.

    ``optimizer(params, **kwargs)`` is the torch class; ``second`` the overrides of the second
    param group (which holds the bias); ``scheduler`` builds a torch scheduler from the optimizer.
    """

    name: str
    optimizer: Callable[..., Any]
    kwargs: dict
    second: dict = dataclasses.field(default_factory=dict)
    scheduler: Callable[[Any], Any] | None = None
    sparse: bool = False
    shapes: dict = dataclasses.field(default_factory=lambda: SHAPES)

    @property
    def closure(self) -> bool:
        """LBFGS re-evaluates the loss: it steps with a closure (our solver with the loss)."""
        return self.optimizer is torch.optim.LBFGS

    def build(self, tensors: dict[str, Any], two_groups: bool) -> Any:
        if not two_groups:
            return self.optimizer([(name, tensors[name]) for name in NAMES], **self.kwargs)
        groups = [
            {"params": [("w", tensors["w"]), ("k", tensors["k"])]},
            {"params": [("b", tensors["b"])], **self.second},
        ]
        return self.optimizer(groups, **self.kwargs)


def _step_lr(optimizer):
    return L.StepLR(optimizer, step_size=5, gamma=0.5)


OPTIMIZERS = [
    Config("SGD", torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), dict(lr=0.1)),
    Config("SGD-plain", torch.optim.SGD, dict(lr=0.05), dict(lr=0.1, momentum=0.5, dampening=0.1)),
    Config("Adam", torch.optim.Adam, dict(lr=0.02, amsgrad=True, weight_decay=0.1), dict(lr=0.05, amsgrad=True)),
    Config("AdamW", torch.optim.AdamW, dict(lr=0.02, weight_decay=0.1), dict(lr=0.05, weight_decay=0.0)),
    Config(
        "RMSprop", torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01), dict(lr=0.02)
    ),
    Config("Adagrad", torch.optim.Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.01), dict(lr=0.1)),
    Config("Adadelta", torch.optim.Adadelta, dict(lr=1.0, weight_decay=0.01), dict(lr=0.5)),
    Config("Adamax", torch.optim.Adamax, dict(lr=0.02, weight_decay=0.01), dict(lr=0.05)),
    Config("NAdam", torch.optim.NAdam, dict(lr=0.02, weight_decay=0.01), dict(lr=0.05, momentum_decay=0.01)),
    Config("RAdam", torch.optim.RAdam, dict(lr=0.02, weight_decay=0.01), dict(lr=0.05)),
    Config("ASGD", torch.optim.ASGD, dict(lr=0.02, t0=5, lambd=0.01), dict(lr=0.05)),
    Config("Rprop", torch.optim.Rprop, dict(lr=0.01), dict(lr=0.02, etas=(0.4, 1.3))),
    Config("SparseAdam", torch.optim.SparseAdam, dict(lr=0.02), dict(lr=0.05), sparse=True),
    Config("Adafactor", torch.optim.Adafactor, dict(lr=0.02, weight_decay=0.01), dict(lr=0.05)),
    Config("Muon", torch.optim.Muon, dict(lr=0.02, weight_decay=0.01), dict(lr=0.05), shapes=MATRIX_SHAPES),
    Config("LBFGS", torch.optim.LBFGS, dict(lr=0.1, max_iter=2, history_size=3)),
    Config(
        "LBFGS-strong_wolfe", torch.optim.LBFGS, dict(lr=0.3, max_iter=2, history_size=4, line_search_fn="strong_wolfe")
    ),
]
"""Two param groups use each configuration with ``second`` for the bias group (LBFGS has one)."""
GROUPED = [config for config in OPTIMIZERS if not config.closure]


def _with_scheduler(config: Config, scheduler: Callable[[Any], Any], label: str) -> Config:
    return dataclasses.replace(config, name=f"{config.name}+{label}", scheduler=scheduler)


SCHEDULERS = {
    "LambdaLR": lambda o: L.LambdaLR(o, lambda epoch: 0.95**epoch),
    "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda epoch: 0.97),
    "StepLR": _step_lr,
    "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[5, 15, 15, 25], gamma=0.5),
    "ConstantLR": lambda o: L.ConstantLR(o, factor=0.5, total_iters=15),
    "LinearLR": lambda o: L.LinearLR(o, start_factor=0.2, total_iters=20),
    "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.95),
    "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=30, power=2.0),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001),
    "CyclicLR": lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=0.05, step_size_up=4, step_size_down=3),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=0.05, total_steps=K + M + N + 4, pct_start=0.3),
    "SequentialLR": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.5, total_iters=4), L.ExponentialLR(o, gamma=0.9)], milestones=[8]
    ),
    "SequentialLR-late": lambda o: L.SequentialLR(
        o, [L.ConstantLR(o, factor=0.5, total_iters=3), L.CosineAnnealingLR(o, T_max=7)], milestones=[18]
    ),
    "ChainedScheduler": lambda o: L.ChainedScheduler(
        [L.ConstantLR(o, factor=0.5, total_iters=20), L.ExponentialLR(o, gamma=0.95)]
    ),
    "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=2),
}

_BY_NAME = {config.name: config for config in OPTIMIZERS}
_PER_OPTIMIZER_SCHEDULER = {
    "Adagrad": "ExponentialLR",
    "RMSprop": "CosineAnnealingLR",
    "Adam": "ReduceLROnPlateau",
    "AdamW": "OneCycleLR",
    "NAdam": "LinearLR",
    "RAdam": "MultiStepLR",
    "Adamax": "PolynomialLR",
    "Adadelta": "ConstantLR",
    "SGD": "CyclicLR",
}
"""Each optimizer's scheduled run (default StepLR); together they cover schedulers with state."""

SCHEDULED = [
    _with_scheduler(
        config,
        SCHEDULERS[_PER_OPTIMIZER_SCHEDULER.get(config.name, "StepLR")],
        _PER_OPTIMIZER_SCHEDULER.get(config.name, "StepLR"),
    )
    for config in OPTIMIZERS
]
ALL_SCHEDULERS = [
    _with_scheduler(_BY_NAME[base], factory, label) for base in ("SGD", "Adam") for label, factory in SCHEDULERS.items()
]


# --- the run -------------------------------------------------------------------------------------


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = float(np.max(np.abs(theirs), initial=0.0))
    diff = float(np.max(np.abs(ours - theirs), initial=0.0))
    return 0.0 if diff == 0.0 else (diff / scale if scale > 0 else math.inf)


def _max_error(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
    return max(_relative_error(np.asarray(ours[name]), np.asarray(theirs[name])) for name in NAMES)


def _compare_values(ours: Any, theirs: Any, where: str, errors: dict[str, float], scales: dict[str, float]) -> None:
    """Recursively compare state dicts: structure, shapes and dtypes must be equal (asserted);
    the relative error of every tensor and float goes into ``errors`` under its path.

    Torch's LBFGS keeps some scalars (``t``, ``H_diag``) as a number or a 0-d tensor depending on
    the branch taken; those compare by value. A float whose key is in ``scales`` is compared
    against that scale instead of its own value.
    """
    scalar_types = (int, float)
    if isinstance(theirs, torch.Tensor) and theirs.ndim == 0 and isinstance(ours, scalar_types):
        theirs = theirs.item()
    if isinstance(ours, torch.Tensor) and ours.ndim == 0 and isinstance(theirs, scalar_types):
        ours = ours.item()
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{where}: expected a tensor, got {type(ours).__name__}"
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (
            f"{where}: {ours.dtype}{tuple(ours.shape)} != {theirs.dtype}{tuple(theirs.shape)}"
        )
        errors[where] = _relative_error(ours.double().numpy(), theirs.double().numpy())
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{where}: keys {sorted(ours, key=str)} != {sorted(theirs, key=str)}"
        for key in theirs:
            if key in scales and isinstance(theirs[key], (float, torch.Tensor)):
                difference = abs(float(ours[key]) - float(theirs[key]))
                errors[f"{where}[{key!r}]"] = difference / scales[key] if difference else 0.0
            else:
                _compare_values(ours[key], theirs[key], f"{where}[{key!r}]", errors, scales)
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), f"{where}: length {len(ours)} != {len(theirs)}"
        for index, (a, b) in enumerate(zip(ours, theirs)):
            _compare_values(a, b, f"{where}[{index}]", errors, scales)
    elif isinstance(theirs, float) and not isinstance(ours, bool):
        errors[where] = 0.0 if ours == theirs else abs(ours - theirs) / abs(theirs) if theirs else math.inf
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def _optimizer_state(optimizer: Any) -> dict:
    """Torch's state dict without LBFGS's scratch list ``al`` (rewritten before it is read)."""
    state = optimizer.state_dict()
    for entry in state["state"].values():
        entry.pop("al", None)
    return state


def _scheduler_state(scheduler: Any) -> dict:
    return scheduler.state_dict()


class _TorchRun:
    """A torch optimizer (and scheduler) stepping on its own tensors."""

    def __init__(
        self,
        config: Config,
        arrays: dict[str, np.ndarray],
        two_groups: bool,
        layout: Layout,
        perturbation: str = "",
        rounding: float = 0.0,
    ):
        """``perturbation`` (one of :data:`parity.chaos.PERTURBATIONS` but the tilt): moves the start
        by one ulp, or scales the closure's loss by ``1 ± rounding``."""
        self.config = config
        self.sparse_axes = layout.sparse_axes if config.sparse else None
        moved = chaos.nudge([arrays[name] for name in NAMES], perturbation)
        self.tensors = {name: torch.tensor(array, requires_grad=True) for name, array in zip(NAMES, moved)}
        self.loss_factor = chaos.loss_factor(perturbation, rounding)
        self.optimizer = config.build(self.tensors, two_groups)
        self.scheduler = config.scheduler(self.optimizer) if config.scheduler is not None else None

    def params(self) -> dict[str, np.ndarray]:
        return {name: tensor.detach().numpy().copy() for name, tensor in self.tensors.items()}

    def step(self, step: int) -> None:
        if self.config.closure:
            losses = closure_losses(self.config.shapes)

            def closure():
                self.optimizer.zero_grad()
                loss = losses.torch_loss(step, [self.tensors[name] for name in NAMES]) * self.loss_factor
                loss.backward()
                return loss

            self.optimizer.step(closure)
            if self.scheduler is not None:
                self.scheduler.step()
            return
        grads = gradients(step, self.params(), self.sparse_axes)
        for name, tensor in self.tensors.items():
            grad = torch.from_numpy(grads[name])
            tensor.grad = grad.to_sparse() if self.config.sparse else grad
        # Muon's bfloat16 Newton-Schulz rounds by the machine, in torch too: both sides run ours,
        # so what is compared is the bridge (tests/test_muon.py checks the iteration itself).
        with our_newton_schulz_in_torch() if self.config.optimizer is torch.optim.Muon else contextlib.nullcontext():
            self.optimizer.step()
        if self.scheduler is not None:
            if isinstance(self.scheduler, L.ReduceLROnPlateau):
                self.scheduler.step(metric(step))
            else:
                self.scheduler.step()


def closure_losses(shapes: dict[str, tuple]) -> verify.LossPair:
    """LBFGS's loss: ``Σ h(√(1 + u²) − 1) + 0.05 u⁴`` with ``u = θ − θ*``, the same at every step.

    L-BFGS builds its curvature pairs from gradient differences across steps, which a loss that
    changes every step (the quadratic stream's noise) would make meaningless.
    """
    rng = np.random.default_rng(13)
    scales = {name: rng.uniform(0.5, 2.0, shape) for name, shape in shapes.items()}
    targets = {name: rng.normal(size=shape) for name, shape in shapes.items()}

    def total(leaves, constant, sqrt):
        value = 0.0
        for name, theta in zip(NAMES, leaves):
            u = theta - constant(targets[name], theta)
            u2 = u * u
            value = value + (constant(scales[name], theta) * (sqrt(1 + u2) - 1) + 0.05 * (u2 * u2)).sum()
        return value

    def torch_loss(step, tensors):
        del step
        return total(tensors, lambda a, like: torch.as_tensor(a, dtype=like.dtype), torch.sqrt)

    def jax_loss(step, leaves):
        del step
        return total(leaves, lambda a, like: jax.numpy.asarray(a, like.dtype), jax.numpy.sqrt)

    return verify.LossPair(torch_loss, jax_loss)


def closure_loss_magnitude(shapes: dict[str, tuple], params: dict[str, np.ndarray]) -> float:
    """The size of the terms the closure's loss is summed from, ``Σ h·√(1 + u²) + 0.05 u⁴``: its
    rounding is relative to this, not to the loss, which cancels to ~0 near the minimum."""
    rng = np.random.default_rng(13)
    scales = {name: rng.uniform(0.5, 2.0, shape) for name, shape in shapes.items()}
    targets = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    total = 0.0
    for name in NAMES:
        u = params[name] - targets[name]
        total += float(np.sum(scales[name] * np.sqrt(1 + u * u) + 0.05 * u**4))
    return total


def _evaluation_rounding(config: Config, params: dict[str, np.ndarray]) -> float:
    """How far the two sides' evaluations of the closure's loss and gradient differ at ``params``."""
    losses = closure_losses(config.shapes)
    tensors = [torch.tensor(params[name], requires_grad=True) for name in NAMES]
    loss = losses.torch_loss(0, tensors)
    loss.backward()
    value, grads = jax.value_and_grad(lambda leaves: losses.jax_loss(0, leaves))([params[name] for name in NAMES])
    ours = float(value), [np.asarray(g) for g in grads]
    return chaos.evaluation_rounding(ours, (float(loss.detach()), [t.grad.numpy() for t in tensors]), "float64")


def _jax_stepper(tx, config: Config, layout: Layout, order: list[str], reference: _TorchRun):
    """``(params, state, step) -> (params, state)``, jitted, fed as the torch run is."""
    if config.closure:
        losses = closure_losses(config.shapes)

        def loss_fn(params, step):
            leaves = layout.by_name(params, order)
            return losses.jax_loss(step, [leaves[name] for name in NAMES])

        return jax.jit(lambda params, state, step: tx.step(loss_fn, params, state, step)[:2])

    @jax.jit
    def update(params, state, grads, value):
        extra = {} if value is None else {"value": value}
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    def step_fn(params, state, step):
        grads = layout.to_jax(gradients(step, layout.from_jax(params, order), reference.sparse_axes), order)
        value = metric(step) if isinstance(reference.scheduler, L.ReduceLROnPlateau) else None
        return update(params, state, grads, value)

    return step_fn


def _state_scales(config: Config, params: dict[str, np.ndarray]) -> dict[str, float]:
    return {"prev_loss": closure_loss_magnitude(config.shapes, params)} if config.closure else {}


def run_resume(config: Config, two_groups: bool, layout: Layout) -> dict[str, float]:
    """Every compared quantity's relative error, by label: the converted state dicts (a pure
    mapping), the JAX continuation per step, the state handed back, torch after the hand-back."""
    errors: dict[str, float] = {}
    with jax.enable_x64(True):
        reference = _TorchRun(config, initial_params(config.shapes), two_groups, layout)
        order = [name for group in reference.optimizer.param_groups for name in group["param_names"]]
        for step in range(K):
            reference.step(step)

        # SGD, Muon and LBFGS keep no update count, so the bridge is told how the scheduler is stepped.
        stepping = {"steps_per_epoch": 1} if reference.scheduler is not None else {}
        tx, state = torch_bridge.from_torch(
            reference.optimizer, reference.scheduler, params=layout.bridge_params(order, reference.tensors), **stepping
        )
        scales = _state_scales(config, reference.params())
        converted = torch_bridge.to_torch_state_dict(tx, state)
        _compare_values(converted, _optimizer_state(reference.optimizer), "converted", errors, scales)
        if reference.scheduler is not None:
            scheduler_state = torch_bridge.to_torch_scheduler_state_dict(tx, state)
            _compare_values(scheduler_state, _scheduler_state(reference.scheduler), "converted scheduler", errors, {})

        jax_step = _jax_stepper(tx, config, layout, order, reference)
        params = layout.to_jax(reference.params(), order)
        for step in range(K, K + M):
            params, state = jax_step(params, state, step)
            reference.step(step)
            errors[f"JAX continuation, step {step + 1}"] = _max_error(
                layout.from_jax(params, order), reference.params()
            )

        written = torch_bridge.to_torch_state_dict(tx, state)
        scales = _state_scales(config, reference.params())
        _compare_values(written, _optimizer_state(reference.optimizer), "handed back", errors, scales)
        # The reference saves and reloads its own checkpoint at the hand-back point.
        reference.optimizer.load_state_dict(reference.optimizer.state_dict())
        resumed = _TorchRun(config, layout.from_jax(params, order), two_groups, layout)
        if resumed.scheduler is not None:
            scheduler_state = torch_bridge.to_torch_scheduler_state_dict(tx, state)
            _compare_values(scheduler_state, _scheduler_state(reference.scheduler), "handed back scheduler", errors, {})
            resumed.scheduler.load_state_dict(scheduler_state)
        resumed.optimizer.load_state_dict(written)
        for step in range(K + M, K + M + N):
            resumed.step(step)
            reference.step(step)
            errors[f"torch after hand-back, step {step + 1}"] = _max_error(resumed.params(), reference.params())
    return errors


def torch_floors(config: Config, two_groups: bool, layout: Layout) -> dict[str, float]:
    """Torch against itself, by the labels of :func:`run_resume`: the largest deviation of a
    perturbed torch run from an unperturbed one over the nudges and scales of
    :data:`parity.chaos.PERTURBATIONS`. Both continuations are compared with the perturbed run's parameters, the state
    handed back with its state."""
    start = initial_params(config.shapes)
    rounding = _evaluation_rounding(config, start)
    floors: dict[str, float] = {}
    with jax.enable_x64(True):
        runs = [
            _TorchRun(config, start, two_groups, layout, perturbation, rounding)
            for perturbation in ("",) + tuple(p for p in chaos.PERTURBATIONS if p.startswith(("nudge", "scale")))
        ]
        reference, perturbed = runs[0], runs[1:]
        for step in range(K + M + N):
            for run in runs:
                run.step(step)
            deviation = max(_max_error(run.params(), reference.params()) for run in perturbed)
            if K <= step < K + M:
                floors[f"JAX continuation, step {step + 1}"] = deviation
            elif step >= K + M:
                floors[f"torch after hand-back, step {step + 1}"] = deviation
            if step == K + M - 1:
                scales = _state_scales(config, reference.params())
                for run in perturbed:
                    errors: dict[str, float] = {}
                    ours, theirs = _optimizer_state(run.optimizer), _optimizer_state(reference.optimizer)
                    _compare_values(ours, theirs, "handed back", errors, scales)
                    for label, error in errors.items():
                        floors[label] = max(floors.get(label, 0.0), error)
    return floors


_RESUME_ERRORS: dict[tuple[str, bool, Layout], dict[str, float]] = {}


def _resume_errors(config: Config, two_groups: bool, layout: Layout) -> dict[str, float]:
    """:func:`run_resume`, once per configuration and process: the L-BFGS floors test reads
    test_resume's run when both run in one process (an L-BFGS program compiles for seconds)."""
    key = (config.name, two_groups, layout)
    if key not in _RESUME_ERRORS:
        _RESUME_ERRORS[key] = run_resume(config, two_groups, layout)
    return _RESUME_ERRORS[key]


def _check(config: Config, two_groups: bool = False, layout: Layout = Layout("list")) -> None:
    errors = _resume_errors(config, two_groups, layout)
    missed = {label: error for label, error in errors.items() if not error <= RTOL}
    if not missed:
        return
    assert config.closure, f"{len(missed)} quantities miss {RTOL:.0e}: {missed}"
    floors = torch_floors(config, two_groups, layout)
    sensitivity = chaos.Sensitivity(np.array([floors.get(label, 0.0) for label in missed]), np.zeros(len(missed), bool))
    verdict = chaos.judge(np.array(list(missed.values())), np.ones(len(missed), bool), "float64", sensitivity, False)
    assert verdict.passed, f"{verdict.reason}; quantities missing {RTOL:.0e}: " + ", ".join(
        f"{label} {error:.2e} (torch's floor {floors.get(label, 0.0):.2e})" for label, error in missed.items()
    )


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
def test_resume(config):
    _check(config)


@pytest.mark.parametrize("config", GROUPED, ids=lambda c: c.name)
def test_resume_two_groups(config):
    _check(config, two_groups=True)


@pytest.mark.parametrize("config", SCHEDULED, ids=lambda c: c.name)
def test_resume_with_scheduler(config):
    _check(config)


@pytest.mark.parametrize("config", [c for c in SCHEDULED if not c.closure], ids=lambda c: c.name)
def test_resume_two_groups_with_scheduler(config):
    _check(config, two_groups=True)


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
def test_resume_tree_layout(config):
    """A dict tree with the matrix transposed: moments follow the parameter's permutation.

    Adafactor (factored over the last two axes) and Muon (orientation-dependent lr ratio) cannot
    follow a transposition (from_torch refuses it, see tests/test_torch_bridge.py): they map to
    a tree in torch's layout.
    """
    _check(config, layout=Layout("tree", transpose=config.name not in ("Adafactor", "Muon")))


@pytest.mark.parametrize("config", GROUPED, ids=lambda c: c.name)
def test_resume_tree_layout_two_groups(config):
    """Two groups over a tree: ``multi_transform`` labels follow the tree's leaf order."""
    _check(config, two_groups=True, layout=Layout("tree", transpose=config.name not in ("Adafactor", "Muon")))


@pytest.mark.parametrize("config", ALL_SCHEDULERS, ids=lambda c: c.name)
def test_resume_every_scheduler(config):
    _check(config, two_groups=True)


def test_torch_floors_cover_what_lbfgs_compares():
    """The floors that judge LBFGS on a machine where it misses 1e-12: measured for every quantity
    a resume run compares after the conversion; torch's parameters move under a rounding."""
    config = _BY_NAME["LBFGS-strong_wolfe"]
    errors = _resume_errors(config, False, Layout("list"))
    floors = torch_floors(config, False, Layout("list"))
    assert set(floors) == {label for label in errors if not label.startswith("converted")}
    assert max(floors[f"JAX continuation, step {step + 1}"] for step in range(K, K + M)) > 0
