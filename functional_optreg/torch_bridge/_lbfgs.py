"""torch.optim.LBFGS ↔ :func:`functional_optreg.lbfgs`, a solver rather than a transform.

Torch keeps L-BFGS's state once, under the first parameter: counters, the last direction ``d``
and step ``t``, the history lists ``old_dirs`` / ``old_stps`` / ``ro``, ``H_diag`` and the previous
gradient and loss. Flat vectors follow torch's concatenation of the parameters; ours follow
``ravel_pytree`` of the JAX tree, so they are re-cut per parameter (and permuted with the
parameter's layout) on the way in and out. The histories become our ring buffers, oldest entry in
row 0. Torch's ``al`` is scratch space rewritten before it is read; it is neither read nor written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from functional_optreg.optimizers._records import OptimizerRecord
from functional_optreg.torch_bridge import _torch
from functional_optreg.torch_bridge._adapters import factory_kwargs
from functional_optreg.torch_bridge._layout import Layout
from functional_optreg.torch_bridge._spec import GroupSpec, TorchOptimizerSpec, bridged_solver


def _offsets(layout: Layout) -> list[int]:
    sizes = [int(np.prod(shape)) for shape in layout.torch_shapes]
    return [0] + list(np.cumsum(sizes))


def flat_to_jax(layout: Layout, vector: np.ndarray) -> np.ndarray:
    """Torch's flat vector (parameters concatenated in torch order) as ``ravel_pytree``'s."""
    offsets = _offsets(layout)
    pieces = []
    for index in layout.indices_in_leaf_order(range(len(layout.torch_shapes))):
        piece = vector[offsets[index] : offsets[index + 1]].reshape(layout.torch_shapes[index])
        pieces.append(np.ravel(layout.to_jax(index, piece)))
    return np.concatenate(pieces) if pieces else vector


def flat_to_torch(layout: Layout, vector: np.ndarray) -> np.ndarray:
    """Inverse of :func:`flat_to_jax`."""
    order = layout.indices_in_leaf_order(range(len(layout.torch_shapes)))
    pieces: list[Any] = [None] * len(order)
    start = 0
    for index in order:
        shape = layout.torch_shapes[index]
        permutation = layout.permutations[index]
        jax_shape = shape if permutation is None else tuple(shape[a] for a in permutation)
        size = int(np.prod(shape))
        pieces[index] = np.ravel(layout.to_torch(index, vector[start : start + size].reshape(jax_shape)))
        start += size
    return np.concatenate(pieces) if pieces else vector


def from_torch(
    adapter: OptimizerRecord,
    converted: Any,
    start: int,
    groups: Sequence[GroupSpec],
    layout: Layout,
    tree: Any,
    torch_state: dict,
):
    if len(groups) != 1:
        raise ValueError("torch.optim.LBFGS has exactly one param group.")
    (group,) = groups
    state = dict(torch_state.get(0, {}))
    unknown = sorted(set(state) - set(adapter.state) - set(adapter.scratch_state))
    if unknown:
        raise ValueError(
            f"torch.optim.LBFGS state has the key(s) {unknown}, which functional_optreg.lbfgs does not know."
        )
    overrides = converted.overrides(0, start, group.hyperparams)
    factory = adapter.load_factory()
    solver = factory(**factory_kwargs(adapter, factory, group.hyperparams, overrides))
    spec = TorchOptimizerSpec(adapter.torch_name, tuple(groups), layout, converted, (start,))
    ours = solver.init(tree)
    if state:
        ours = _fill(ours, state, layout)
    return bridged_solver(spec, solver), ours._replace(step=jnp.asarray(start, ours.step.dtype))


def _scalar(value: Any, like: Any) -> Any:
    return jnp.asarray(float(_torch.to_python(value)), jnp.result_type(like))


def _fill(ours: Any, state: dict, layout: Layout) -> Any:
    dtype = ours.d.dtype

    def flat(value):
        return jnp.asarray(flat_to_jax(layout, _torch.to_numpy(value)), dtype)

    values = {
        "func_evals": jnp.asarray(int(state.get("func_evals", 0)), ours.func_evals.dtype),
        "n_iter": jnp.asarray(int(state.get("n_iter", 0)), ours.n_iter.dtype),
    }
    if "d" not in state:
        # The first evaluation already met tolerance_grad: torch stored only the counters.
        return ours._replace(**values)
    history = list(state["old_dirs"])
    size = ours.ro.shape[0]
    if len(history) > size:
        raise ValueError(f"torch.optim.LBFGS holds {len(history)} history pairs, more than history_size={size}.")
    old_dirs, old_stps, ro = np.zeros(ours.old_dirs.shape), np.zeros(ours.old_stps.shape), np.zeros(ours.ro.shape)
    for row, (y, s, r) in enumerate(zip(state["old_dirs"], state["old_stps"], state["ro"])):
        old_dirs[row] = flat_to_jax(layout, _torch.to_numpy(y))
        old_stps[row] = flat_to_jax(layout, _torch.to_numpy(s))
        ro[row] = float(_torch.to_python(r))
    values.update(
        d=flat(state["d"]),
        t=_scalar(state["t"], ours.t),
        old_dirs=jnp.asarray(old_dirs, dtype),
        old_stps=jnp.asarray(old_stps, dtype),
        ro=jnp.asarray(ro, dtype),
        num_old=jnp.asarray(len(history), ours.num_old.dtype),
        old_start=jnp.zeros_like(ours.old_start),
        H_diag=_scalar(state["H_diag"], ours.H_diag),
        prev_flat_grad=flat(state["prev_flat_grad"]),
        prev_loss=_scalar(state["prev_loss"], ours.prev_loss),
    )
    return ours._replace(**values)


def to_torch_state_dict(spec: TorchOptimizerSpec, state: Any) -> dict:
    (group,) = spec.groups
    hyperparams = dict(group.hyperparams)
    elapsed = spec.scheduler.epochs_since(spec.start_steps[0], int(state.step))
    hyperparams.update(spec.scheduler.current(0, elapsed, hyperparams, state))
    packed = group.torch_entries(hyperparams)
    packed["params"] = list(group.param_ids)
    if group.param_names is not None:
        packed["param_names"] = list(group.param_names)
    return {"state": _state_to_torch(spec.layout, state), "param_groups": [packed]}


def _state_to_torch(layout: Layout, state: Any) -> dict:
    if int(state.func_evals) == 0:
        return {}
    entry: dict[str, Any] = {"func_evals": int(state.func_evals), "n_iter": int(state.n_iter)}
    if int(state.n_iter) == 0:
        return {0: entry}

    def flat(value):
        return _torch.to_tensor(flat_to_torch(layout, np.asarray(value)))

    dirs, stps, ro = state.history()
    entry.update(
        d=flat(state.d),
        t=float(state.t),
        old_dirs=[flat(row) for row in dirs],
        old_stps=[flat(row) for row in stps],
        ro=[_torch.to_tensor(np.asarray(value, dtype=np.asarray(state.ro).dtype)) for value in ro],
        H_diag=_torch.to_tensor(np.asarray(state.H_diag)),
        prev_flat_grad=flat(state.prev_flat_grad),
        prev_loss=float(state.prev_loss),
    )
    return {0: entry}


def to_torch_scheduler_state_dict(spec: TorchOptimizerSpec, state: Any) -> dict:
    elapsed = spec.scheduler.epochs_since(spec.start_steps[0], int(state.step))
    hyperparams = dict(spec.groups[0].hyperparams)
    lr = {**hyperparams, **spec.scheduler.current(0, elapsed, hyperparams, state)}["lr"]
    return spec.scheduler.state_dict(elapsed, [lr], [state])
