"""Torch's per-parameter optimizer state ↔ our NamedTuple states, by state-key name.

A field of our state is one of:

* ``step``: the group's update count (torch keeps one per parameter; they must agree);
* per-parameter: a tree shaped like the group's parameters, filled from ``state[p][field]``, in
  the parameter's JAX axis order (see :class:`~._layout.Layout`);
* scalar: one array for the group, where torch keeps equal copies per parameter (ASGD's ``eta``
  and ``mu``, NAdam's ``mu_product``);
* ``None``: state the configuration does not keep (``max_exp_avg_sq`` without amsgrad); torch
  must not have it either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_optreg.optimizers._records import OptimizerRecord
from functional_optreg.torch_bridge import _torch
from functional_optreg.torch_bridge._layout import Layout


def _is_none(node: Any) -> bool:
    return node is None


def _structure(tree: Any) -> Any:
    return jax.tree.structure(tree, is_leaf=_is_none)


def torch_step(
    adapter: OptimizerRecord, torch_states: Sequence[Mapping[str, Any]], layout: Layout, indices: Sequence[int]
) -> int | None:
    """The group's update count from torch's per-parameter state (all parameters must agree).

    ``None`` where torch keeps no count (SGD, Muon): the bridge's clock (:mod:`._clock`) derives
    it from the scheduler or ``update_count``.
    """
    present = [bool(state) for state in torch_states]
    if any(present) and not all(present):
        missing = [layout.describe(index) for index, has in zip(indices, present) if not has]
        raise ValueError(
            f"torch.optim.{adapter.torch_name} has state for some parameters of a group but not for "
            f"{', '.join(missing)} (they never received a gradient); one group's parameters must have "
            "taken the same number of steps to share our state's step count."
        )
    if adapter.step == "none":
        return None
    if not any(present):
        return 0
    steps = []
    for index, state in zip(indices, torch_states):
        if "step" not in state:
            raise ValueError(f"torch.optim.{adapter.torch_name} state of {layout.describe(index)} has no 'step'.")
        steps.append(int(round(float(_torch.to_python(state["step"])))))
    if len(set(steps)) != 1:
        detail = ", ".join(f"{layout.describe(i)}: {s}" for i, s in zip(indices, steps))
        raise ValueError(
            f"torch.optim.{adapter.torch_name} parameters of one group have taken different numbers "
            f"of steps ({detail}); our state keeps one step count per group."
        )
    return steps[0]


def state_from_torch(
    adapter: OptimizerRecord,
    template: Any,
    params_structure: Any,
    torch_states: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    layout: Layout,
    step: int,
) -> Any:
    """Fill ``template`` (our freshly initialised group state) from torch's per-parameter states.

    ``indices`` are the group's torch indices in leaf order, ``torch_states`` their states in the
    same order, ``params_structure`` the structure of the group's (masked) parameter tree.
    """
    fields = template._fields
    name = f"functional_optreg.{adapter.factory_name}"
    known = set(fields)
    for index, state in zip(indices, torch_states):
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(
                f"torch.optim.{adapter.torch_name} state of {layout.describe(index)} has the key(s) "
                f"{unknown}, which {name}'s state ({type(template).__name__}) does not have."
            )
    if step == 0 and not any(torch_states):
        return template
    values: dict[str, Any] = {}
    absent = set()
    for flag, key in adapter.presence:
        if getattr(template, flag) is None:
            continue
        held = [state.get(key) is not None for state in torch_states]
        if len(set(held)) > 1:
            raise ValueError(
                f"torch.optim.{adapter.torch_name} holds {key!r} for some parameters of a group and not "
                f"for others; {name} keeps one {flag!r} per group."
            )
        values[flag] = jnp.asarray(all(held))
        if not all(held):
            absent.add(key)
    for field in fields:
        current = getattr(template, field)
        if field == "step":
            values[field] = jnp.asarray(step, dtype=jnp.result_type(current))
            continue
        if field in values:
            continue
        if field in absent:
            values[field] = current
            continue
        present = [field in state for state in torch_states]
        if current is None:
            if any(present):
                raise ValueError(
                    f"torch.optim.{adapter.torch_name} keeps {field!r}, but {name} with these "
                    f"hyperparameters does not (its {type(template).__name__}.{field} is None)."
                )
            values[field] = None
            continue
        if _structure(current) == params_structure:
            values[field] = _fill_per_parameter(
                adapter, name, field, current, params_structure, torch_states, indices, layout
            )
            continue
        if not all(present):
            missing = [layout.describe(i) for i, has in zip(indices, present) if not has]
            raise ValueError(
                f"torch.optim.{adapter.torch_name} state has no {field!r} for {', '.join(missing)}, which {name} needs."
            )
        if isinstance(current, (jax.Array, np.ndarray)) and jnp.ndim(current) == 0:
            copies = [float(_torch.to_python(state[field])) for state in torch_states]
            if len(set(copies)) != 1:
                raise ValueError(
                    f"torch.optim.{adapter.torch_name} per-parameter {field!r} differ within a group "
                    f"({copies}); {name} keeps one value per group."
                )
            values[field] = jnp.asarray(copies[0], dtype=jnp.result_type(current))
        else:
            raise NotImplementedError(
                f"the bridge does not know how to fill {type(template).__name__}.{field} of {name}."
            )
    return type(template)(**values)


def _fill_per_parameter(adapter, name, field, current, params_structure, torch_states, indices, layout):
    """One per-parameter field; a ``None`` leaf (state this parameter does not keep, e.g.
    Adafactor's ``variance`` of a matrix) must be absent from torch's state too."""
    filled: list[Any] = []
    for leaf, index, state in zip(jax.tree.leaves(current, is_leaf=_is_none), indices, torch_states):
        if leaf is None:
            if field in state:
                raise ValueError(
                    f"torch.optim.{adapter.torch_name} keeps {field!r} for {layout.describe(index)}, "
                    f"but {name} does not for a parameter of this shape."
                )
            filled.append(None)
            continue
        if field not in state:
            raise ValueError(
                f"torch.optim.{adapter.torch_name} state has no {field!r} for {layout.describe(index)}, "
                f"which {name} needs."
            )
        array = layout.to_jax(index, _torch.to_numpy(state[field]))
        if array.shape != jnp.shape(leaf):
            raise ValueError(
                f"torch state {field!r} of {layout.describe(index)} has shape {array.shape} "
                f"(in JAX layout), but {name} expects {jnp.shape(leaf)}."
            )
        filled.append(jnp.asarray(array, dtype=jnp.result_type(leaf)))
    return jax.tree.unflatten(params_structure, filled)


def state_to_torch(
    adapter: OptimizerRecord, state: Any, params_structure: Any, indices: Sequence[int], layout: Layout
) -> dict[int, dict[str, Any]]:
    """Torch's per-parameter state dicts (keyed by torch index) from our group state."""
    torch = _torch.torch_module()
    step = int(state.step)
    if step == 0 and not adapter.eager_state:
        return {}
    per_param: dict[int, dict[str, Any]] = {index: {} for index in indices}
    skipped = set()
    for flag, key in adapter.presence:
        if getattr(state, flag) is not None:
            skipped.add(flag)
            if not bool(np.asarray(getattr(state, flag))):
                skipped.add(key)
    for field in state._fields:
        value = getattr(state, field)
        if field in skipped:
            continue
        if field == "step":
            if adapter.step == "tensor":
                for index in indices:
                    per_param[index]["step"] = torch.tensor(float(step), dtype=_torch.scalar_dtype())
            elif adapter.step == "int":
                for index in indices:
                    per_param[index]["step"] = step
            continue
        if value is None:
            continue
        if _structure(value) == params_structure:
            for leaf, index in zip(jax.tree.leaves(value, is_leaf=_is_none), indices):
                if leaf is not None:
                    per_param[index][field] = _torch.to_tensor(layout.to_torch(index, np.asarray(leaf)))
        else:
            for index in indices:
                per_param[index][field] = torch.tensor(float(np.asarray(value)), dtype=_torch.scalar_dtype())
    return per_param
