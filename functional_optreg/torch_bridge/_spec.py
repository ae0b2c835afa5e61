"""What a converted optimizer remembers about its torch origin, and the transforms that carry it.

:func:`~functional_optreg.torch_bridge.from_torch` returns a :class:`TorchTransformation`: an
``optax.GradientTransformationExtraArgs`` (so ``optax.chain``, ``optax.multi_transform`` and every
other combinator treat it as any transform) whose ``init`` and ``update`` are methods of a frozen
:class:`_Bridged` object holding the :class:`TorchOptimizerSpec`. The ``spec`` property reads it
back from there: the spec travels with the transform, with no attribute set on a function and no
table kept on the side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax

from functional_optreg.optimizers.lbfgs import LBFGSSolver
from functional_optreg.torch_bridge import _torch
from functional_optreg.torch_bridge._layout import Layout


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """One torch param group.

    Attributes:
      hyperparams: the group's entries other than ``params`` / ``param_names``, as Python values
        (torch's defaults included), at the time of conversion.
      tensor_dtypes: the entries that torch held as tensors (e.g. ``lr=torch.tensor(0.01)``), with
        the tensor's dtype name (``"float32"``); they are written back as tensors of that dtype. A
        float32 one is in ``hyperparams`` as a ``numpy.float32``, so that our optimizer does the
        float32 arithmetic torch does with it.
      param_ids: the torch ids (state-dict indices) of the group's parameters.
      param_names: the group's ``param_names`` when the optimizer was built from named parameters.
    """

    hyperparams: Mapping[str, Any]
    tensor_dtypes: Mapping[str, str]
    param_ids: tuple[int, ...]
    param_names: tuple[str, ...] | None

    def torch_entries(self, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
        """``hyperparams`` as torch's param group holds them: tensors where torch had tensors, in
        their dtype."""
        torch = _torch.torch_module()
        return {
            key: torch.tensor(value, dtype=getattr(torch, self.tensor_dtypes[key]))
            if key in self.tensor_dtypes
            else value
            for key, value in hyperparams.items()
        }


@dataclasses.dataclass(frozen=True)
class TorchOptimizerSpec:
    """Everything needed to write the optimizer back as a torch state dict.

    Attributes:
      optimizer: the torch class name, e.g. ``"Adam"``.
      groups: the param groups, in torch's order; with several, the transform is an
        ``optax.multi_transform`` whose labels are the group indices ``0, 1, ...``.
      layout: where each torch parameter lives in the JAX tree.
      scheduler: the converted scheduler (see :mod:`._schedulers`: ``NoScheduler``,
        ``EpochSchedules`` or ``Plateau``).
      start_steps: per group, the update count of our state at conversion (the scheduler's
        epoch advances with it).
    """

    optimizer: str
    groups: tuple[GroupSpec, ...]
    layout: Layout
    scheduler: Any
    start_steps: tuple[int, ...] = ()

    @property
    def multi_group(self) -> bool:
        return len(self.groups) > 1


@dataclasses.dataclass(frozen=True)
class _Bridged:
    """A transform (or solver) together with its spec; its bound methods become the tuple's fields."""

    spec: TorchOptimizerSpec
    inner: Any

    def init(self, params: Any) -> Any:
        return self.inner.init(params)

    def update(self, updates: Any, state: Any, params: Any = None, **extra_args: Any) -> Any:
        return self.inner.update(updates, state, params, **extra_args)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.step(*args, **kwargs)


def _spec_of(method: Callable) -> TorchOptimizerSpec:
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, _Bridged):
        raise TypeError("this transform was not built by from_torch, so it has no torch spec.")
    return owner.spec


class TorchTransformation(optax.GradientTransformationExtraArgs):
    """An optax transform converted from a torch optimizer; ``spec`` says how to go back."""

    __slots__ = ()

    @property
    def spec(self) -> TorchOptimizerSpec:
        return _spec_of(self.init)

    @property
    def transform(self) -> optax.GradientTransformationExtraArgs:
        """The underlying transform, without the spec."""
        return self.init.__self__.inner


class TorchSolver(LBFGSSolver):
    """The L-BFGS solver converted from ``torch.optim.LBFGS``; ``spec`` says how to go back."""

    __slots__ = ()

    @property
    def spec(self) -> TorchOptimizerSpec:
        return _spec_of(self.init)


def bridged_transform(spec: TorchOptimizerSpec, inner: Any) -> TorchTransformation:
    bridge = _Bridged(spec, optax.with_extra_args_support(inner))
    return TorchTransformation(bridge.init, bridge.update)


def bridged_solver(spec: TorchOptimizerSpec, inner: LBFGSSolver) -> TorchSolver:
    bridge = _Bridged(spec, inner)
    return TorchSolver(bridge.init, bridge.step)


def spec_of(transform: Any) -> TorchOptimizerSpec:
    """The spec of a transform or solver returned by ``from_torch`` (or a spec itself)."""
    if isinstance(transform, TorchOptimizerSpec):
        return transform
    if isinstance(transform, (TorchTransformation, TorchSolver)):
        return transform.spec
    raise TypeError(
        f"expected the transform returned by from_torch (or its .spec), got {type(transform).__name__}; "
        "wrapping it (optax.chain, ...) hides the spec, so keep a reference to the returned transform."
    )
