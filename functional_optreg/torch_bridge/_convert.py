"""``from_torch`` and ``to_torch_state_dict``: a live torch optimizer to (transform, state) and back."""

from __future__ import annotations

import dataclasses
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg.optimizers._records import RECORDS
from functional_optreg.torch_bridge import _clock, _injection, _lbfgs, _schedulers, _state, _torch
from functional_optreg.torch_bridge._adapters import adapter_for, check_permutation, factory_kwargs
from functional_optreg.torch_bridge._layout import Layout, NameMapping, list_layout, tree_layout
from functional_optreg.torch_bridge._spec import GroupSpec, TorchOptimizerSpec, bridged_transform, spec_of


def _param_names(optimizer: Any, module: Any) -> list[str | None]:
    """Torch's name for each optimizer parameter: the groups' ``param_names``, else ``module``'s."""
    by_id = {}
    if module is not None:
        by_id = {id(tensor): name for name, tensor in module.named_parameters()}
    names: list[str | None] = []
    for g, group in enumerate(optimizer.param_groups):
        group_names = group.get("param_names")
        if group_names is not None:
            names.extend(group_names)
            continue
        for tensor in group["params"]:
            if module is not None and id(tensor) not in by_id:
                raise ValueError(
                    f"a tensor of shape {tuple(tensor.shape)} in param group {g} is not a parameter of the "
                    f"module given ({type(module).__name__}): the optimizer was built over other tensors, "
                    "e.g. those of a deep copy of the model or of a model reloaded since; pass the module "
                    "whose parameters the optimizer holds."
                )
            names.append(by_id.get(id(tensor)))
    return names


def _group_spec(group: Mapping[str, Any], first_id: int) -> GroupSpec:
    """The group's entries as Python values, but a float32 tensor (``lr=torch.tensor(0.01)``, torch's
    default dtype) as a ``numpy.float32``: torch then does the arithmetic combining it with Python
    floats in float32, and our optimizers do the same given a float32 scalar."""
    torch = _torch.torch_module()
    hyperparams = {}
    tensor_dtypes = {}
    for key, value in group.items():
        if key in ("params", "param_names"):
            continue
        hyperparams[key] = _torch.to_python(value)
        if isinstance(value, torch.Tensor):
            tensor_dtypes[key] = str(value.dtype).removeprefix("torch.")
            if value.dtype == torch.float32:
                hyperparams[key] = np.float32(hyperparams[key])
    names = group.get("param_names")
    return GroupSpec(
        hyperparams=types.MappingProxyType(hyperparams),
        tensor_dtypes=types.MappingProxyType(tensor_dtypes),
        param_ids=tuple(range(first_id, first_id + len(group["params"]))),
        param_names=None if names is None else tuple(names),
    )


def _layout(optimizer: Any, params: Any, module: Any, torch_params: Sequence[Any]) -> tuple[Layout, Any]:
    """The layout and the JAX parameter tree used to initialise our state."""
    names = _param_names(optimizer, module)
    if params is None:
        layout = list_layout(torch_params, names)
        tree = [jnp.asarray(_torch.to_numpy(tensor)) for tensor in torch_params]
        return layout, tree
    if not (isinstance(params, tuple) and len(params) == 2):
        raise TypeError(
            "params must be None (a list of arrays in torch's order) or a pair (tree, mapping) with "
            "mapping from torch parameter names to tree paths."
        )
    tree, mapping = params
    return tree_layout(tree, mapping, torch_params, names), tree


def _warn_if_narrowed(torch_params: Sequence[Any]) -> None:
    torch = _torch.torch_module()
    # jax.config's flag attributes are created at runtime, so mypy does not know them.
    x64 = jax.config.jax_enable_x64  # type: ignore[attr-defined]
    if not x64 and any(p.dtype == torch.float64 for p in torch_params):
        warnings.warn(
            "the torch parameters are float64 but jax_enable_x64 is off: the optimizer state is "
            "converted to float32 (enable x64, e.g. jax.config.update('jax_enable_x64', True), "
            "to continue in float64).",
            UserWarning,
            stacklevel=3,
        )


def _masked_structure(labels: Any, params: Any, group: int) -> Any:
    masked = jax.tree.map(lambda label, leaf: leaf if label == group else optax.MaskedNode(), labels, params)
    return jax.tree.structure(masked, is_leaf=lambda node: node is None)


def _group_states(spec: TorchOptimizerSpec, state: Any) -> list[Any]:
    if not spec.multi_group:
        return [state]
    if not isinstance(state, optax.transforms.PartitionState):
        raise TypeError(
            f"expected the multi_transform state of a {len(spec.groups)}-group optimizer, got {type(state).__name__}"
        )
    return [state.inner_states[g].inner_state for g in range(len(spec.groups))]


def _structures(spec: TorchOptimizerSpec, params: Any) -> list[Any]:
    if not spec.multi_group:
        return [jax.tree.structure(params, is_leaf=lambda node: node is None)]
    labels = _labels(spec)
    return [_masked_structure(labels, params, g) for g in range(len(spec.groups))]


def _labels(spec: TorchOptimizerSpec) -> Any:
    group_of = [g for g, group in enumerate(spec.groups) for _ in group.param_ids]
    return spec.layout.unflatten(group_of)


def from_torch(
    optimizer: Any,
    scheduler: Any = None,
    *,
    steps_per_epoch: int | None = None,
    update_count: int | None = None,
    params: tuple[Any, NameMapping] | None = None,
    module: Any = None,
) -> tuple[Any, Any]:
    """Convert a live torch optimizer (and lr scheduler) into our transform and its current state.

    Args:
      optimizer: an instance of one of torch.optim's fifteen optimizer classes (not a subclass).
      scheduler: an optional ``torch.optim.lr_scheduler`` scheduler of ``optimizer``; the returned
        transform's learning rate continues from the scheduler's current epoch, stepping it as
        the loop does (``steps_per_epoch``). ``ReduceLROnPlateau`` becomes
        :func:`~functional_optreg.reduce_lr_on_plateau` chained after each group's optimizer:
        pass ``value=metric`` to the updates after which torch calls ``scheduler.step(metric)``
        (every update, or the last of each epoch), none to the others.
      steps_per_epoch: optimizer updates per ``scheduler.step()``: ``1`` when ``scheduler.step()``
        follows every ``optimizer.step()``, ``len(loader)`` when it is stepped once per epoch;
        epochs start at multiples of it. ``None`` infers it from the scheduler's ``last_epoch``
        ``E`` and the update count ``c₀`` torch keeps: the only ``k`` with ``c₀ // k == E``
        (``E == c₀``: per update); where torch keeps no count (SGD, Muon, LBFGS), nothing has run
        yet, or several ``k`` fit, ``from_torch`` refuses and asks for it.
      update_count: the number of ``optimizer.step()`` calls so far, for the optimizers whose
        state holds no count (SGD, Muon, LBFGS); it must agree with torch's count where there is
        one. Without it, such a count is derived from the scheduler (``last_epoch ·
        steps_per_epoch``, i.e. conversion at an epoch's end), or, without a scheduler, is 1 once
        torch holds state and 0 before.
      params: ``None`` — the parameters are a list of arrays in torch's order (groups
        concatenated), the state's per-parameter trees are such lists; or ``(tree, mapping)`` —
        a JAX parameter tree and a mapping (dict or function) from torch parameter names
        (``module.named_parameters()``) to paths in the tree: a tuple of keys, a dotted string or
        a :class:`ParamPath` with an axis permutation (:func:`module_to_flax` returns such a
        mapping for flax models). Moments and buffers are permuted with their parameter.
      module: the ``torch.nn.Module`` whose ``named_parameters()`` name the optimizer's tensors,
        when the optimizer was not built from named parameters (only with ``params=(tree, mapping)``).

    Returns:
      ``(transform, state)``: a :class:`TorchTransformation` (``optax.multi_transform`` over
      groups labelled ``0, 1, ...`` when there are several) and its state, equal to torch's, whose
      ``step`` is the update count (see ``update_count``). Each group's optimizer runs inside
      ``optax.inject_hyperparams`` (its state in ``inner_state``), so its numeric hyperparameters
      (``lr``, ``weight_decay``, ``betas``...) can be changed between updates as torch's param
      groups can: ``fo.set_hyperparams(state, group=g, lr=x)``; those a scheduler drives stay
      fixed. For
      ``torch.optim.LBFGS``, ``(solver, state)`` with the :class:`TorchSolver` of
      :func:`functional_optreg.lbfgs`.

    Raises:
      TypeError: for a class the bridge does not know (a custom subclass included).
      ValueError: for state or hyperparameters it cannot represent, naming them; when the
        scheduler's rate cannot be told (see ``steps_per_epoch``).

    Example:
      >>> import jax.numpy as jnp, torch, functional_optreg as fo
      >>> w = torch.nn.Parameter(torch.ones(2))
      >>> optimizer = torch.optim.SGD([w], lr=0.1, momentum=0.9)
      >>> w.grad = torch.ones(2)
      >>> optimizer.step()
      >>> tx, state = fo.from_torch(optimizer, update_count=1)
      >>> state.inner_state.momentum_buffer
      [Array([1., 1.], dtype=float32)]
      >>> updates, state = tx.update([jnp.ones(2)], state, [jnp.full(2, 0.9)])
      >>> updates[0]  # torch's second step: buffer 0.9·1 + 1
      Array([-0.19, -0.19], dtype=float32)
      >>> state = fo.set_hyperparams(state, lr=0.25)  # optimizer.param_groups[0]["lr"] = 0.25
      >>> fo.to_torch_state_dict(tx, state)["param_groups"][0]["lr"]
      0.25
    """
    adapter = adapter_for(optimizer)
    torch_params = [tensor for group in optimizer.param_groups for tensor in group["params"]]
    _warn_if_narrowed(torch_params)
    layout, tree = _layout(optimizer, params, module, torch_params)
    for index, permutation in enumerate(layout.permutations):
        check_permutation(adapter, permutation, layout.describe(index))
    group_list: list[GroupSpec] = []
    first = 0
    for group in optimizer.param_groups:
        group_list.append(_group_spec(group, first))
        first += len(group["params"])
    groups = tuple(group_list)
    torch_state = optimizer.state_dict()["state"]
    converted = _schedulers.convert(scheduler, optimizer, adapter)
    torch_counts, has_state = _torch_counts(adapter, groups, layout, torch_state)
    clock = _clock.resolve(
        adapter.torch_name,
        torch_counts,
        has_state,
        converted.name,
        converted.epoch,
        steps_per_epoch,
        update_count,
        rate_needed=converted.rate_needed,
    )
    converted = dataclasses.replace(converted, steps_per_epoch=clock.steps_per_epoch)
    if adapter.closure:
        return _lbfgs.from_torch(adapter, converted, clock.counts[0], groups, layout, tree, torch_state)

    starts = list(clock.counts)
    factory = adapter.load_factory()
    dtype = _injection.hyperparam_dtype(tree)
    transforms = []
    for g, group in enumerate(groups):
        overrides = converted.overrides(g, starts[g], group.hyperparams)
        kwargs = factory_kwargs(adapter, factory, group.hyperparams, overrides)
        # torch reads these from its constructor's arguments, whatever the group holds (Adagrad
        # fills every accumulator from its own initial_accumulator_value).
        kwargs.update({key: optimizer.defaults[key] for key in adapter.constructor_only if key in kwargs})
        tx = _injection.inject(adapter, factory, kwargs, converted.driven(overrides), dtype)
        transforms.append(converted.group_transform(g, tx, group.hyperparams))
    spec = TorchOptimizerSpec(adapter.torch_name, groups, layout, converted, tuple(starts))
    if spec.multi_group:
        inner = optax.multi_transform(dict(enumerate(transforms)), _labels(spec))
    else:
        inner = transforms[0]
    tx = bridged_transform(spec, inner)

    template = tx.init(tree)
    structures = _structures(spec, tree)
    filled = []
    for g, (group, group_template) in enumerate(zip(groups, _group_states(spec, template))):
        indices = layout.indices_in_leaf_order(group.param_ids)
        injected = converted.optimizer_state(group_template)
        optimizer_template = injected.inner_state
        optimizer_state = _state.state_from_torch(
            adapter,
            optimizer_template,
            structures[g],
            [torch_state.get(i, {}) for i in indices],
            indices,
            layout,
            starts[g],
        )
        injected = injected._replace(inner_state=optimizer_state, count=jnp.asarray(starts[g], injected.count.dtype))
        filled.append(converted.join(group_template, injected))
    return tx, _assemble(spec, filled)


def _torch_counts(
    adapter: Any, groups: Sequence[GroupSpec], layout: Layout, torch_state: Mapping[int, Any]
) -> tuple[list[int | None], list[bool]]:
    """Per group: the update count torch keeps (``None`` if none) and whether it holds state."""
    if adapter.closure:
        return [None], [bool(torch_state.get(0))]
    counts: list[int | None] = []
    has_state = []
    for group in groups:
        indices = layout.indices_in_leaf_order(group.param_ids)
        states = [torch_state.get(i, {}) for i in indices]
        counts.append(_state.torch_step(adapter, states, layout, indices))
        has_state.append(any(bool(state) for state in states))
    return counts, has_state


def _assemble(spec: TorchOptimizerSpec, group_states: Sequence[Any]) -> Any:
    if not spec.multi_group:
        return group_states[0]
    return optax.transforms.PartitionState({g: optax.MaskedState(inner_state=s) for g, s in enumerate(group_states)})


def _optimizer_states(spec: TorchOptimizerSpec, state: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Per group: the full group state, its ``inject_hyperparams`` state and the optimizer's state."""
    group_states = _group_states(spec, state)
    injected = [spec.scheduler.optimizer_state(s) for s in group_states]
    return group_states, injected, [s.inner_state for s in injected]


def to_torch_state_dict(transform: Any, state: Any) -> dict[str, Any]:
    """Torch's ``optimizer.state_dict()`` for our state, to ``load_state_dict`` into torch.

    Args:
      transform: the transform (or L-BFGS solver) returned by :func:`from_torch`, or its ``spec``.
      state: a state of that transform (after any number of updates).

    Returns:
      ``{"state": {id: {key: tensor}}, "param_groups": [...]}`` as torch's own ``state_dict()``
      writes it: accepted by ``load_state_dict`` of an optimizer of the same class built over
      parameters in the same order (with the same groups). Hyperparameters that a scheduler moves
      (``lr``, ``momentum``, ``betas``) hold their current values.

    Example:
      >>> import jax.numpy as jnp, torch, functional_optreg as fo
      >>> optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
      >>> tx, state = fo.from_torch(optimizer)
      >>> params = [jnp.zeros(2)]
      >>> updates, state = tx.update([jnp.ones(2)], state, params)
      >>> written = fo.to_torch_state_dict(tx, state)
      >>> written["state"][0]["step"], written["state"][0]["exp_avg"]
      (tensor(1.), tensor([0.1000, 0.1000]))
      >>> optimizer.load_state_dict(written)
    """
    spec = spec_of(transform)
    adapter = RECORDS[spec.optimizer]
    if adapter.closure:
        return _lbfgs.to_torch_state_dict(spec, state)
    group_states, injected, optimizer_states = _optimizer_states(spec, state)
    structures = _structures(spec, spec.layout.unflatten(list(range(len(spec.layout.leaf_of)))))
    per_param: dict[int, dict[str, Any]] = {}
    param_groups = []
    for g, group in enumerate(spec.groups):
        indices = spec.layout.indices_in_leaf_order(group.param_ids)
        per_param.update(_state.state_to_torch(adapter, optimizer_states[g], structures[g], indices, spec.layout))
        hyperparams = dict(group.hyperparams)
        hyperparams.update(_injection.written_back(group.hyperparams, injected[g].hyperparams))
        elapsed = spec.scheduler.epochs_since(spec.start_steps[g], int(optimizer_states[g].step))
        hyperparams.update(spec.scheduler.current(g, elapsed, hyperparams, group_states[g]))
        packed = group.torch_entries(hyperparams)
        packed["params"] = list(group.param_ids)
        if group.param_names is not None:
            packed["param_names"] = list(group.param_names)
        param_groups.append(packed)
    return {
        "state": {index: per_param[index] for index in sorted(per_param) if per_param[index]},
        "param_groups": param_groups,
    }


def to_torch_scheduler_state_dict(transform: Any, state: Any) -> dict[str, Any]:
    """Torch's ``scheduler.state_dict()`` for our state, to ``load_state_dict`` into torch.

    Args:
      transform: the transform returned by :func:`from_torch` with a scheduler, or its ``spec``.
      state: a state of that transform.

    Returns:
      The scheduler's state dict advanced by the updates taken since conversion (``last_epoch``,
      step counters, ``_last_lr``, CosineAnnealingWarmRestarts' ``T_cur`` / ``T_i``, the members
      of SequentialLR / ChainedScheduler, ReduceLROnPlateau's ``best`` and counters). Load it into
      a scheduler constructed over the new optimizer *before* loading the optimizer's state dict
      (constructing a scheduler steps it once, which rewrites the lrs), as torch documents.
    """
    spec = spec_of(transform)
    if RECORDS[spec.optimizer].closure:
        return _lbfgs.to_torch_scheduler_state_dict(spec, state)
    group_states, _, optimizer_states = _optimizer_states(spec, state)
    elapsed = spec.scheduler.epochs_since(spec.start_steps[0], int(optimizer_states[0].step))
    lrs = [
        {
            **group.hyperparams,
            **spec.scheduler.current(
                g, spec.scheduler.epochs_since(spec.start_steps[g], int(s.step)), dict(group.hyperparams), gs
            ),
        }["lr"]
        for g, (group, s, gs) in enumerate(zip(spec.groups, optimizer_states, group_states))
    ]
    return spec.scheduler.state_dict(elapsed, lrs, group_states)
