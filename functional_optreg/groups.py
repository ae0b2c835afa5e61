r"""Torch-style parameter groups over a pytree, routed with ``optax.multi_transform``.

Torch lists tensors per group; here each group *selects* leaves of the parameter tree with its
``"params"`` entry, which is one of:

* a regular expression (``str`` or compiled pattern), searched in the leaf's path string, the
  keys joined by ``/`` (``"conv/kernel"``, ``"layers/0/bias"``; :func:`path_string`);
* a predicate ``fn(path, leaf) -> bool`` taking that path string and the leaf;
* a tree of bools shaped like the parameters (or a prefix of them: ``{"encoder": True, ...}``),
  or a function of one argument returning one from the parameters (optax's mask convention, as
  the ``mask`` of ``optax.masked`` and of :mod:`functional_optreg.penalties`).

Every other entry of a group overrides the hyperparameter of the same name given to
:func:`param_groups` for all groups, as in ``torch.optim.SGD([{"params": ..., "lr": 0.1}], lr=1)``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from functional_optreg import _tree
from functional_optreg.optimizers import _records

Selector = Any
"""A regex (``str`` / ``re.Pattern``), a predicate ``fn(path, leaf) -> bool``, a bool tree or
``fn(params) -> bool tree``."""

_DEFAULT_GROUP_CHOICES = (False, True, "frozen")


def path_string(path: Sequence[Any]) -> str:
    """The path of a leaf as the selectors see it: its keys joined by ``/`` (``"dense/bias"``)."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def is_bias_or_norm(path: str, leaf: Any) -> bool:
    """True for biases and normalization scales: leaves with at most one dimension, or named ``bias``.

    This is the usual "no weight decay" set (1-D LayerNorm / BatchNorm scales and offsets, all
    biases, scalar temperatures). A selector predicate: :func:`param_groups` calls it on every
    leaf.

    Args:
      path: the leaf's path string, its keys joined by ``/`` (``"dense/bias"``; see
        :func:`path_string`).
      leaf: the parameter (an array; ``np.shape`` gives its dimensions).

    Raises:
      TypeError: if ``path`` is not a string.

    PyTorch equivalence:
      ``p.ndim <= 1 or name.endswith("bias")`` over ``model.named_parameters()`` (torch names
      join keys with ``.``; the HuggingFace and nanoGPT recipes select the same tensors).
    """
    if not isinstance(path, str):
        raise TypeError(
            f"is_bias_or_norm(path, leaf): path must be the leaf's path string (e.g. 'dense/bias'), "
            f"got {type(path).__name__}"
        )
    return len(np.shape(leaf)) <= 1 or path.rsplit("/", 1)[-1] == "bias"


def _factory_name(optimizer: Callable[..., Any]) -> str:
    return getattr(optimizer, "__name__", type(optimizer).__name__)


def _accepted_names(optimizer: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``optimizer`` accepts, or ``None`` if it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(optimizer).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _check_names(names: Any, accepted: set[str] | None, where: str, optimizer_name: str) -> None:
    if accepted is None:
        return
    for name in names:
        if name not in accepted:
            raise ValueError(
                f"{where} sets {name!r}, which is not a hyperparameter of {optimizer_name}; "
                f"it accepts: {', '.join(sorted(accepted))}."
            )


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an optax-style mask function ``fn(params) -> bool tree``."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.default is inspect.Parameter.empty
    ]
    return len(positional) == 1 and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _compile_selector(index: int, selector: Selector) -> Callable[[Any, list], list[bool]]:
    """Turn a group's ``"params"`` entry into ``select(tree, paths_and_leaves) -> [bool, ...]``."""
    if isinstance(selector, (str, re.Pattern)):
        try:
            pattern = re.compile(selector)
        except re.error as error:
            raise ValueError(f"parameter group {index}: 'params' is not a valid regex: {error}") from None
        return lambda tree, flat: [pattern.search(path) is not None for path, _ in flat]
    if callable(selector) and not _takes_one_argument(selector):
        return lambda tree, flat: [bool(selector(path, leaf)) for path, leaf in flat]

    def from_mask(tree, flat):
        del flat
        mask = selector(tree) if callable(selector) else selector
        try:
            full = jax.tree.map(lambda keep, sub: jax.tree.map(lambda _: bool(keep), sub), mask, tree)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"parameter group {index}: the bool tree in 'params' does not match the "
                f"parameters (it must have their structure or a prefix of it): {error}"
            ) from None
        return jax.tree.leaves(full)

    return from_mask


def _skip_when_empty(transform: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Leave a group that selects no leaf (e.g. all masked out) untouched, as torch does."""
    transform = optax.with_extra_args_support(transform)

    def update_fn(updates, state, params=None, **extra_args):
        if not jax.tree.leaves(updates):
            return updates, state
        return transform.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(transform.init, update_fn)


def param_groups(
    optimizer: Callable[..., optax.GradientTransformation],
    groups: Sequence[Mapping[str, Any]],
    *,
    default_group: bool | str = False,
    **defaults: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Apply ``optimizer`` with per-group hyperparameters, as torch param groups do.

    Group :math:`k`'s leaves are updated by ``optimizer(**{**defaults, **overrides_k})``; each
    group keeps its own state (``state.inner_states[k]``), so per-leaf rules are unchanged:

    .. math::

        \theta_i \leftarrow \theta_i + \text{update}_{k(i)}(g_i), \qquad
        k(i) = \text{the one group whose selector matches leaf } i

    Args:
      optimizer: a factory such as ``fo.sgd``, ``fo.adamw``, ``fo.rmsprop`` (or
        ``optax.inject_hyperparams(fo.sgd)`` to expose every group's hyperparameters in the state).
      groups: a list of dicts, each with ``"params"`` (a regex, a predicate ``fn(path, leaf)``, a
        bool tree or a function ``fn(params)`` returning one; see the module docstring) and any
        hyperparameters of ``optimizer`` to override for that group.
      default_group: what happens to leaves no group selects: ``False`` raises, ``True`` puts them
        in an extra last group with the ``defaults``, ``"frozen"`` leaves them unchanged (zero
        updates), like torch parameters left out of the optimizer.
      **defaults: hyperparameters of ``optimizer`` shared by every group unless it overrides them.

    Returns:
      An optax ``GradientTransformationExtraArgs`` (``optax.multi_transform`` whose labels are
      the group indices; the default group, if any, is index ``len(groups)``).

    Raises:
      ValueError: at construction, when a group or ``defaults`` names an argument
        ``optimizer`` does not take (naming the group and the argument), when a group has no
        ``"params"``, or when a group's hyperparameters are invalid (torch's message, prefixed
        with the group); at ``init``/``update``, when a leaf is in no group and there is no
        default group, or in more than one group (torch's "some parameters appear in more than
        one parameter group", naming the path and the groups).

    PyTorch equivalence:
      ``torch.optim.X([{"params": [...], **overrides}, ...], **defaults)``; the parity catalog
      runs SGD, AdamW and RMSprop with per-group lr, weight_decay, momentum, betas, alpha,
      centered, ... Differences: torch validates only the constructor's defaults, we validate
      every group's values; torch silently stores unknown keys in a group, we reject them; torch
      leaves tensors that are in no group untouched, here that needs ``default_group="frozen"``.
      Torch's schedulers scale every group's lr; here give each group its own schedule. As in
      torch, a group's Adagrad ``initial_accumulator_value`` is validated but ignored: every
      parameter's accumulator starts at the shared (``defaults``) value, since torch's constructor
      fills the state from its own argument (``OptimizerRecord.constructor_only``).

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
      >>> tx = fo.param_groups(
      ...     fo.sgd,
      ...     [{"params": r"bias$", "lr": 0.5}, {"params": lambda path, p: p.ndim == 2}],
      ...     lr=0.1, weight_decay=1.0)
      >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
      >>> updates["dense"]["bias"], updates["dense"]["kernel"][0]
      (Array([-0.5, -0.5], dtype=float32), Array([-0.1, -0.1], dtype=float32))
    """
    optimizer_name = _factory_name(optimizer)
    if default_group not in _DEFAULT_GROUP_CHOICES:
        raise ValueError(f"default_group must be one of False, True or 'frozen', got {default_group!r}")
    if isinstance(groups, Mapping) or not isinstance(groups, Sequence):
        raise TypeError(f"groups must be a list of dicts, got {type(groups).__name__}")
    if not groups and default_group is False:
        raise ValueError("param_groups got an empty list of groups and no default_group")
    accepted = _accepted_names(optimizer)
    _check_names(defaults, accepted, "param_groups", optimizer_name)
    record = _records.record_of_factory(optimizer)
    constructor_only = record.constructor_only if record is not None else ()

    transforms: dict[int, optax.GradientTransformation] = {}
    selectors = []
    for index, group in enumerate(groups):
        if not isinstance(group, Mapping):
            raise TypeError(f"param_group must be a dict, but got {type(group)}")
        if "params" not in group:
            raise ValueError(f"parameter group {index} has no 'params' entry selecting its parameters")
        overrides = {name: value for name, value in group.items() if name != "params"}
        _check_names(overrides, accepted, f"parameter group {index}", optimizer_name)
        try:
            group_optimizer = optimizer(**{**defaults, **overrides})
        except (ValueError, RuntimeError) as error:
            raise type(error)(f"parameter group {index}: {error}") from error
        if any(name in overrides for name in constructor_only):
            kept = {name: value for name, value in overrides.items() if name not in constructor_only}
            group_optimizer = optimizer(**{**defaults, **kept})
        transforms[index] = _skip_when_empty(group_optimizer)
        selectors.append(_compile_selector(index, group["params"]))
    default_index = len(groups)
    if default_group is True:
        transforms[default_index] = _skip_when_empty(optimizer(**defaults))
    elif default_group == "frozen":
        transforms[default_index] = optax.set_to_zero()

    def labels(tree: Any) -> Any:
        flat_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
        flat = [(path_string(path), leaf) for path, leaf in flat_with_paths]
        membership = [select(tree, flat) for select in selectors]
        leaf_labels = []
        for position, (path, _) in enumerate(flat):
            chosen = [index for index, member in enumerate(membership) if member[position]]
            if len(chosen) > 1:
                raise ValueError(
                    "some parameters appear in more than one parameter group: "
                    f"{path!r} is selected by groups {', '.join(map(str, chosen))}"
                )
            if not chosen and default_group is False:
                raise ValueError(
                    f"the parameter at {path!r} is in no parameter group: add a group whose "
                    "'params' selects it, or pass default_group=True (the shared hyperparameters) "
                    "or default_group='frozen' (left unchanged)"
                )
            leaf_labels.append(chosen[0] if chosen else default_index)
        return jax.tree.unflatten(treedef, leaf_labels)

    routed = optax.multi_transform(transforms, labels)

    def update_fn(updates, state, params=None, **extra_args):
        # Labels are computed from the trees before any optimizer sees them: check first, so a
        # mismatch names its path instead of surfacing as a generic pytree error.
        if params is not None:
            _tree.check_same_structure("params", params, "grads", updates)
        return routed.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(routed.init, update_fn)


_ORDERS = (("decay", "no_decay"), ("no_decay", "decay"))


def _negated(index: int, selector: Selector) -> Callable[[Any], Any]:
    """An optax-style mask function selecting the leaves ``selector`` does not select."""
    select = _compile_selector(index, selector)

    def mask(tree: Any) -> Any:
        flat_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
        chosen = select(tree, [(path_string(path), leaf) for path, leaf in flat_with_paths])
        return jax.tree.unflatten(treedef, [not c for c in chosen])

    return mask


def no_decay_on_bias_and_norm(
    optimizer: Callable[..., optax.GradientTransformation],
    *,
    exclude: Selector = is_bias_or_norm,
    order: tuple[str, str] = ("decay", "no_decay"),
    **hyperparameters: Any,
) -> optax.GradientTransformationExtraArgs:
    """The classic two groups: ``weight_decay=0`` for biases and normalization scales.

    Args:
      optimizer: a factory taking ``weight_decay`` (``fo.sgd``, ``fo.adamw``, ``fo.rmsprop``, ...).
      exclude: the selector of the leaves without weight decay (default
        :func:`is_bias_or_norm`: leaves with at most one dimension, or named ``bias``).
      order: the group indices: ``("decay", "no_decay")`` (default: group 0 decays, group 1 holds
        the excluded leaves, as the HuggingFace Trainer and nanoGPT build their groups, so a
        state converted by ``fo.from_torch`` from such an optimizer has this layout) or
        ``("no_decay", "decay")``.
      **hyperparameters: the optimizer's hyperparameters, ``weight_decay`` included.

    Returns:
      ``param_groups(optimizer, groups, **hyperparameters)`` with the two groups in ``order``
      (group indices are the labels of ``fo.set_hyperparams(state, group=...)``).

    Raises:
      ValueError: for an ``order`` other than the two above.

    PyTorch equivalence:
      ``torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
      weight_decay=...)`` with ``no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1
      or n.endswith("bias")]`` (HuggingFace's ``get_parameter_names`` / nanoGPT's
      ``configure_optimizers``).

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.no_decay_on_bias_and_norm(fo.adamw, lr=0.1, weight_decay=0.5)
      >>> params = {"kernel": jnp.ones((1, 2)), "bias": jnp.ones(2)}
      >>> grads = {"kernel": jnp.ones((1, 2)), "bias": jnp.ones(2)}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> new = optax.apply_updates(params, updates)  # Adam's first step is -lr; the kernel also decays
      >>> new["kernel"], new["bias"]  # torch's float32 1 * 0.95 - 0.1 and 1 - 0.1
      (Array([[0.84999996, 0.84999996]], dtype=float32), Array([0.9, 0.9], dtype=float32))
    """
    order = tuple(order)  # type: ignore[assignment]
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {list(_ORDERS)}, got {order!r}")
    no_decay = {"params": exclude, "weight_decay": 0.0}
    decay = {"params": _negated(0, exclude)}
    groups = [decay, no_decay] if order == _ORDERS[0] else [no_decay, decay]
    return param_groups(optimizer, groups, **hyperparameters)
