"""Per torch optimizer class: our factory and how torch's state and hyperparameters map onto it.

The table below is a constant description of torch.optim's fifteen classes, not a registry: it is
never modified. Our state fields carry torch's state-key names, so most of the mapping is by name;
an adapter only says what differs (how torch stores ``step``, group keys fixed by the class, state
torch creates at construction).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

SCHEDULER_GROUP_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "swa_lr"})
"""Entries torch's lr schedulers add to param groups; they configure the scheduler, not the step."""

GROUP_ONLY_KEYS = frozenset({"params", "param_names"})


@dataclasses.dataclass(frozen=True)
class Adapter:
    """How one torch.optim class maps onto our factory.

    Attributes:
      torch_name: the class name in ``torch.optim``.
      module: our module under ``functional_optreg.optimizers``.
      factory: the factory's name in that module.
      step: how torch stores the update count: ``"tensor"`` (a float tensor ``step``), ``"int"``
        (a Python int ``step``) or ``"none"`` (torch keeps no count; ours is derived).
      fixed: group entries implied by the class that our factory does not take, with their value
        (AdamW's ``decoupled_weight_decay=True``).
      eager_state: torch creates the per-parameter state in the constructor (Adagrad), so a
        state dict holds it before the first step.
      permutations: which axis permutations between torch and JAX layouts keep the update
        equivalent: ``"any"`` (elementwise rules), ``"leading"`` (Adafactor factors the last two
        axes, so only the axes before them may move) or ``"none"`` (Muon's update depends on the
        matrix orientation).
    """

    torch_name: str
    module: str
    factory: str
    step: str = "tensor"
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    eager_state: bool = False
    permutations: str = "any"

    def check_permutation(self, permutation: tuple[int, ...] | None, what: str) -> None:
        """Raise if a parameter stored with ``permutation`` would change this optimizer's update."""
        if permutation is None or self.permutations == "any":
            return
        identity = tuple(range(len(permutation)))
        if permutation == identity:
            return
        if self.permutations == "leading" and permutation[-2:] == identity[-2:]:
            return
        reason = (
            "it factors the second moment over the last two axes"
            if self.permutations == "leading"
            else "its update depends on the matrix orientation"
        )
        raise ValueError(
            f"torch.optim.{self.torch_name} cannot follow {what} into a layout permuted by "
            f"{permutation}: {reason}. Keep this parameter in torch's layout on the JAX side "
            "(transpose it inside the model instead)."
        )

    def load_factory(self) -> Callable[..., Any]:
        """Our factory, imported now; a clear error if its module is not part of this install."""
        name = f"functional_optreg.optimizers.{self.module}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            raise NotImplementedError(
                f"torch.optim.{self.torch_name} cannot be converted yet: {name} "
                f"(functional_optreg.{self.factory}) does not exist in this version."
            ) from error
        return getattr(module, self.factory)


ADAPTERS: Mapping[str, Adapter] = {
    adapter.torch_name: adapter
    for adapter in (
        Adapter("SGD", "sgd", "sgd", step="none"),
        Adapter("Adam", "adam", "adam"),
        Adapter("AdamW", "adam", "adamw", fixed={"decoupled_weight_decay": True}),
        Adapter("RMSprop", "rmsprop", "rmsprop"),
        Adapter("Adagrad", "adagrad", "adagrad", eager_state=True),
        Adapter("Adadelta", "adadelta", "adadelta"),
        Adapter("Adamax", "adamax", "adamax"),
        Adapter("NAdam", "nadam", "nadam"),
        Adapter("RAdam", "radam", "radam"),
        Adapter("ASGD", "asgd", "asgd"),
        Adapter("Rprop", "rprop", "rprop"),
        Adapter("SparseAdam", "sparse_adam", "sparse_adam", step="int"),
        Adapter("Adafactor", "adafactor", "adafactor", permutations="leading"),
        Adapter("Muon", "muon", "muon", step="none", permutations="none"),
        Adapter("LBFGS", "lbfgs", "lbfgs", step="none"),
    )
}


def adapter_for(optimizer: Any) -> Adapter:
    """The adapter of a torch optimizer; an error naming the class for anything else."""
    import torch

    cls = type(optimizer)
    adapter = ADAPTERS.get(cls.__name__)
    if adapter is None or getattr(torch.optim, adapter.torch_name, None) is not cls:
        bases = [
            base for base in cls.__mro__[1:] if base.__name__ in ADAPTERS and base.__module__.startswith("torch.optim")
        ]
        if bases:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} is a custom subclass of torch.optim."
                f"{bases[0].__name__}; its step may differ from torch's, so it cannot be converted. "
                f"Convert a torch.optim.{bases[0].__name__} with the same state instead."
            )
        raise TypeError(
            f"cannot convert {cls.__module__}.{cls.__qualname__}: from_torch knows the torch.optim "
            f"classes {sorted(ADAPTERS)}."
        )
    return adapter


def factory_kwargs(
    adapter: Adapter, factory: Callable[..., Any], hyperparams: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Our factory's arguments from a torch param group (Python values), with ``overrides``
    (schedules replacing ``lr``, ``momentum``, ``betas``) applied."""
    accepted = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if key in GROUP_ONLY_KEYS or key in SCHEDULER_GROUP_KEYS:
            continue
        if key in adapter.fixed:
            if value != adapter.fixed[key]:
                raise ValueError(
                    f"torch.optim.{adapter.torch_name} param group has {key}={value!r}; the class "
                    f"implies {key}={adapter.fixed[key]!r}."
                )
            continue
        if key not in accepted:
            raise ValueError(
                f"torch.optim.{adapter.torch_name} param group has the hyperparameter {key!r}, "
                f"which functional_optreg.{adapter.factory} does not take."
            )
        kwargs[key] = value
    kwargs.update(overrides)
    return kwargs
