"""Per torch optimizer class: its record, and how torch's hyperparameters map onto our factory.

The facts about each class (our factory, how torch stores ``step``, group keys fixed by the
class, state torch creates at construction, which layouts keep the update) are its
:class:`~functional_optreg.optimizers._records.OptimizerRecord`; this module looks a live torch
optimizer's record up and applies it. Our state fields carry torch's state-key names, so most of
the mapping is by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from functional_optreg.optimizers._records import RECORDS, OptimizerRecord

SCHEDULER_GROUP_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "swa_lr"})
"""Entries torch's lr schedulers add to param groups; they configure the scheduler, not the step."""

GROUP_ONLY_KEYS = frozenset({"params", "param_names"})


def check_permutation(record: OptimizerRecord, permutation: tuple[int, ...] | None, what: str) -> None:
    """Raise if a parameter stored with ``permutation`` would change ``record``'s update."""
    if permutation is None or record.permutations == "any":
        return
    identity = tuple(range(len(permutation)))
    if permutation == identity:
        return
    if record.permutations == "leading" and permutation[-2:] == identity[-2:]:
        return
    reason = (
        "it factors the second moment over the last two axes"
        if record.permutations == "leading"
        else "its update depends on the matrix orientation"
    )
    raise ValueError(
        f"torch.optim.{record.torch_name} cannot follow {what} into a layout permuted by "
        f"{permutation}: {reason}. Keep this parameter in torch's layout on the JAX side "
        "(transpose it inside the model instead)."
    )


def adapter_for(optimizer: Any) -> OptimizerRecord:
    """The record of a torch optimizer; an error naming the class for anything else."""
    import torch

    cls = type(optimizer)
    adapter = RECORDS.get(cls.__name__)
    if adapter is None or getattr(torch.optim, adapter.torch_name, None) is not cls:
        bases = [
            base for base in cls.__mro__[1:] if base.__name__ in RECORDS and base.__module__.startswith("torch.optim")
        ]
        if bases:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} is a custom subclass of torch.optim."
                f"{bases[0].__name__}; its step may differ from torch's, so it cannot be converted. "
                f"Convert a torch.optim.{bases[0].__name__} with the same state instead."
            )
        raise TypeError(
            f"cannot convert {cls.__module__}.{cls.__qualname__}: from_torch knows the torch.optim "
            f"classes {sorted(RECORDS)}."
        )
    return adapter


def factory_kwargs(
    adapter: OptimizerRecord, factory: Callable[..., Any], hyperparams: Mapping[str, Any], overrides: Mapping[str, Any]
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
                f"which functional_optreg.{adapter.factory_name} does not take."
            )
        kwargs[key] = value
    kwargs.update(overrides)
    return kwargs
