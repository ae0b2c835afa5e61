"""Torch lr schedulers → our schedules, continuing from the scheduler's current epoch.

Each torch scheduler becomes, per param group, the :mod:`functional_optreg.schedules` schedule
built from the scheduler's arguments (read from its attributes) and the group's base lr. Our
optimizers read ``lr`` at their own update count, so the schedule is shifted: with ``k`` updates
per scheduler step (:mod:`._clock`), the update counted ``c`` uses torch's epoch
``last_epoch + ⌊c/k⌋ − ⌊c₀/k⌋``, where ``c₀`` is the group's count at conversion (``k = 1``:
``last_epoch + (c − c₀)``). ``ReduceLROnPlateau`` becomes ``fo.reduce_lr_on_plateau`` chained
after each group's optimizer, its counters taken from torch; it decides only on the updates that
receive a metric (``value=`` / ``epoch_value=``), so it follows a per-update or a per-epoch loop.

One interface, three variants (:func:`convert` picks one): :class:`NoScheduler` (no scheduler:
nothing replaced), :class:`EpochSchedules` (every class but ReduceLROnPlateau: shifted schedules
replace ``lr`` / ``momentum`` / ``betas``) and :class:`Plateau` (a transform chained after each
group's optimizer).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg.optimizers._records import OptimizerRecord
from functional_optreg.torch_bridge import _scheduler_state, _torch

_LR_RTOL = {"float64": 1e-10, "float32": 1e-5}
"""How closely torch's current lr must match the converted schedule at the current epoch, by the
dtype our schedules compute in: torch's lr is a float64 recursion, ours a closed form; in float32
each operation rounds by up to 2⁻²⁴ ≈ 6e-8, and 1e-5 leaves room for ~100 of them (a hand-set lr
differs far more), in float64 1e-10 for the same count of 2⁻⁵³ roundings and recursion drift."""


@dataclasses.dataclass(frozen=True)
class ShiftedSchedule:
    """``schedule(⌊count / steps_per_epoch⌋ + offset)``: a schedule of the epoch driven by an
    optimizer's update count."""

    schedule: Callable[[jax.Array], Any]
    offset: int
    steps_per_epoch: int = 1

    def __call__(self, count: Any) -> jax.Array:
        from functional_optreg.schedules._base import as_count, float_dtype

        epoch = as_count(count)
        if self.steps_per_epoch != 1:
            epoch = epoch // self.steps_per_epoch
        return jnp.asarray(self.schedule(epoch + self.offset), float_dtype())


def _member_name(scheduler: Any) -> str:
    import torch

    cls = type(scheduler)
    if getattr(torch.optim.lr_scheduler, cls.__name__, None) is not cls:
        raise TypeError(
            f"cannot convert the lr scheduler {cls.__module__}.{cls.__qualname__}: only "
            "torch.optim.lr_scheduler classes are known (a custom subclass may step differently)."
        )
    return cls.__name__


def _pct_start(end_step: float, total_steps: int) -> float:
    """OneCycleLR's ``pct_start`` that reproduces torch's first phase end exactly."""
    guess = (end_step + 1) / total_steps
    for candidate in (guess, *np.nextafter(guess, [0.0, 1.0]).tolist()):
        if float(candidate * total_steps) - 1 == end_step:
            return float(candidate)
    return float(guess)


def _group_schedule(name: str, scheduler: Any, group: int) -> tuple[Any, Any]:
    """``(lr schedule of the epoch, momentum schedule or None)`` for one param group."""
    import functional_optreg.schedules as fs
    from functional_optreg.schedules._base import check_traceable

    base: Any = scheduler.base_lrs[group] if hasattr(scheduler, "base_lrs") else None
    if name in ("LambdaLR", "MultiplicativeLR"):
        fn = scheduler.lr_lambdas[group]
        check_traceable(fn, f"{name} lr_lambda")
        factory = fs.lambda_lr if name == "LambdaLR" else fs.multiplicative_lr
        return factory(base, fn), None
    if name == "StepLR":
        return fs.step_lr(base, scheduler.step_size, scheduler.gamma), None
    if name == "MultiStepLR":
        return fs.multi_step_lr(base, sorted(scheduler.milestones.elements()), scheduler.gamma), None
    if name == "ConstantLR":
        return fs.constant_lr(base, scheduler.factor, scheduler.total_iters), None
    if name == "LinearLR":
        return fs.linear_lr(base, scheduler.start_factor, scheduler.end_factor, scheduler.total_iters), None
    if name == "ExponentialLR":
        return fs.exponential_lr(base, scheduler.gamma), None
    if name == "PolynomialLR":
        return fs.polynomial_lr(base, scheduler.total_iters, scheduler.power), None
    if name == "CosineAnnealingLR":
        return fs.cosine_annealing_lr(base, scheduler.T_max, scheduler.eta_min), None
    if name == "CosineAnnealingWarmRestarts":
        return fs.cosine_annealing_warm_restarts(base, scheduler.T_0, scheduler.T_mult, scheduler.eta_min), None
    if name == "CyclicLR":
        custom = scheduler._scale_fn_custom
        if custom is not None:
            check_traceable(custom, "CyclicLR scale_fn")
        up = int(round(scheduler.step_ratio * scheduler.total_size))
        kwargs = dict(
            base_lr=base,
            max_lr=scheduler.max_lrs[group],
            step_size_up=up,
            step_size_down=scheduler.total_size - up,
            mode=scheduler.mode,
            gamma=scheduler.gamma,
            scale_fn=custom,
            scale_mode=scheduler.scale_mode,
            cycle_momentum=scheduler.cycle_momentum,
        )
        if scheduler.cycle_momentum:
            kwargs.update(base_momentum=scheduler.base_momentums[group], max_momentum=scheduler.max_momentums[group])
            return fs.cyclic_lr(**kwargs), fs.cyclic_momentum(**kwargs)
        return fs.cyclic_lr(**kwargs), None
    if name == "OneCycleLR":
        values = scheduler.optimizer.param_groups[group]
        phases = scheduler._schedule_phases
        kwargs = dict(
            max_lr=values["max_lr"],
            total_steps=scheduler.total_steps,
            pct_start=_pct_start(phases[0]["end_step"], scheduler.total_steps),
            anneal_strategy=scheduler._anneal_func_type,
            cycle_momentum=scheduler.cycle_momentum,
            div_factor=values["max_lr"] / values["initial_lr"],
            final_div_factor=values["initial_lr"] / values["min_lr"],
            three_phase=len(phases) == 3,
        )
        if scheduler.cycle_momentum:
            kwargs.update(base_momentum=values["base_momentum"], max_momentum=values["max_momentum"])
            return fs.one_cycle_lr(**kwargs), fs.one_cycle_momentum(**kwargs)
        return fs.one_cycle_lr(**kwargs), None
    if name == "SequentialLR":
        members = [_group_schedule(_member_name(m), m, group) for m in scheduler._schedulers]
        _reject_member_momentum(name, members)
        return fs.sequential_lr([lr for lr, _ in members], scheduler._milestones), None
    if name == "ChainedScheduler":
        members = [_group_schedule(_member_name(m), m, group) for m in scheduler._schedulers]
        _reject_member_momentum(name, members)
        return fs.chained_scheduler([lr for lr, _ in members]), None
    raise TypeError(f"the bridge cannot convert the lr scheduler {name} (SWALR and others are not supported).")


def _reject_member_momentum(name: str, members: Sequence[tuple[Any, Any]]) -> None:
    if any(momentum is not None for _, momentum in members):
        raise ValueError(
            f"a {name} member cycles the momentum (cycle_momentum=True), which our composite "
            "schedules do not compose; build that member with cycle_momentum=False."
        )


def _epoch(name: str, scheduler: Any) -> int:
    if name == "ChainedScheduler":
        epochs = {m.last_epoch for m in scheduler._schedulers}
        if len(epochs) != 1:
            raise ValueError(
                f"ChainedScheduler members are at different epochs ({sorted(epochs)}); the bridge "
                "needs them stepped together."
            )
        return epochs.pop()
    if name == "CosineAnnealingWarmRestarts":
        t_cur, t_i = _scheduler_state.restarts(scheduler.T_0, scheduler.T_mult, scheduler.last_epoch)
        if (t_cur, t_i) != (scheduler.T_cur, scheduler.T_i):
            raise ValueError(
                f"CosineAnnealingWarmRestarts is at T_cur={scheduler.T_cur}, T_i={scheduler.T_i}, not "
                f"where {scheduler.last_epoch} plain step() calls lead; a scheduler stepped with "
                "explicit (fractional) epochs cannot be converted."
            )
    return int(scheduler.last_epoch)


def _state_snapshot(scheduler: Any) -> dict:
    return copy.deepcopy(scheduler.state_dict())


@dataclasses.dataclass(frozen=True)
class NoScheduler:
    """The scheduler interface when none was converted: the optimizer's hyperparameters stay."""

    name: str | None = None
    epoch: int | None = None
    steps_per_epoch: int = 1
    rate_needed: bool = False

    def epochs_since(self, start_step: int, step: int) -> int:
        return 0

    def overrides(self, group: int, start_step: int, hyperparams: Mapping[str, Any]) -> dict:
        """Our factory arguments this scheduler replaces (by schedules) for param group ``group``."""
        return {}

    def driven(self, overrides: Mapping[str, Any]) -> frozenset[str]:
        """The hyperparameters this scheduler sets, which therefore stay out of the state."""
        return frozenset(overrides)

    def group_transform(self, group: int, tx: Any, hyperparams: Mapping[str, Any]) -> Any:
        """The group's transform around its optimizer ``tx``."""
        return tx

    def optimizer_state(self, group_state: Any) -> Any:
        """The optimizer's part of a group state."""
        return group_state

    def join(self, group_template: Any, optimizer_state: Any) -> Any:
        """The group state around ``optimizer_state`` (inverse of :meth:`optimizer_state`)."""
        return optimizer_state

    def current(self, group: int, elapsed: int, hyperparams: dict, group_state: Any) -> dict:
        """The hyperparameters this scheduler has set in torch's param group ``group``,
        ``elapsed`` scheduler steps after conversion."""
        return {}

    def state_dict(self, elapsed: int, lrs: list[float], group_states: Sequence[Any]) -> dict:
        """Torch's ``scheduler.state_dict()`` ``elapsed`` scheduler steps after conversion."""
        raise ValueError("this transform was converted without a scheduler.")


@dataclasses.dataclass(frozen=True)
class EpochSchedules(NoScheduler):
    """A scheduler of the epoch (every class but ReduceLROnPlateau) as one schedule per group.

    Attributes:
      name: the torch class name.
      epoch: torch's ``last_epoch`` at conversion.
      steps_per_epoch: optimizer updates per ``scheduler.step()``.
      snapshot: ``scheduler.state_dict()`` at conversion.
      member_names: for SequentialLR / ChainedScheduler, the members' class names.
      lr: per group, the lr schedule of the epoch.
      momentum: per group, the momentum schedule of the epoch (``cycle_momentum``) or ``None``.
      use_beta1: the momentum schedule drives ``betas[0]`` (Adam family) instead of ``momentum``.
    """

    snapshot: dict = dataclasses.field(default_factory=dict)
    member_names: tuple[str, ...] = ()
    lr: tuple[Any, ...] = ()
    momentum: tuple[Any, ...] = ()
    use_beta1: bool = False
    rate_needed: bool = True

    def epochs_since(self, start_step: int, step: int) -> int:
        k = self.steps_per_epoch
        return step // k - start_step // k

    def overrides(self, group: int, start_step: int, hyperparams: Mapping[str, Any]) -> dict:
        """``lr`` (and ``momentum`` / ``betas``) as the group's schedules, shifted to the epoch."""
        assert self.epoch is not None
        offset = self.epoch - start_step // self.steps_per_epoch
        replaced: dict[str, Any] = {"lr": ShiftedSchedule(self.lr[group], offset, self.steps_per_epoch)}
        momentum = self.momentum[group]
        if momentum is not None:
            shifted = ShiftedSchedule(momentum, offset, self.steps_per_epoch)
            if self.use_beta1:
                replaced["betas"] = (shifted, hyperparams["betas"][1])
            else:
                replaced["momentum"] = shifted
        return replaced

    def current(self, group: int, elapsed: int, hyperparams: dict, group_state: Any) -> dict:
        assert self.epoch is not None
        epoch = jnp.asarray(self.epoch + elapsed, jnp.int32)
        values: dict[str, Any] = {"lr": float(self.lr[group](epoch))}
        momentum = self.momentum[group]
        if momentum is not None:
            value = float(momentum(epoch))
            if self.use_beta1:
                values["betas"] = (value, hyperparams["betas"][1])
            else:
                values["momentum"] = value
        return values

    def state_dict(self, elapsed: int, lrs: list[float], group_states: Sequence[Any]) -> dict:
        assert self.name is not None and self.epoch is not None
        return _scheduler_state.advanced_state_dict(
            self.name, self.snapshot, self.member_names, self.epoch, elapsed, lrs, self.lr
        )


@dataclasses.dataclass(frozen=True)
class Plateau(NoScheduler):
    """ReduceLROnPlateau as ``fo.reduce_lr_on_plateau`` chained after each group's optimizer,
    its counters taken from torch; it decides when given a metric, so it needs no rate.

    Attributes:
      name: ``"ReduceLROnPlateau"``.
      epoch: torch's ``last_epoch`` (metrics seen) at conversion.
      snapshot: ``scheduler.state_dict()`` at conversion.
    """

    snapshot: dict = dataclasses.field(default_factory=dict)

    def driven(self, overrides: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"lr"})

    def group_transform(self, group: int, tx: Any, hyperparams: Mapping[str, Any]) -> Any:
        import functional_optreg.schedules as fs

        s = self.snapshot
        plateau = fs.reduce_lr_on_plateau(
            hyperparams["lr"],
            mode=s["mode"],
            factor=s["factor"],
            patience=s["patience"],
            threshold=s["threshold"],
            threshold_mode=s["threshold_mode"],
            cooldown=s["cooldown"],
            min_lr=s["min_lrs"][group],
            eps=s["eps"],
        )
        return optax.chain(tx, plateau)

    def optimizer_state(self, group_state: Any) -> Any:
        return group_state[0]

    def join(self, group_template: Any, optimizer_state: Any) -> Any:
        s = self.snapshot
        plateau = group_template[1]
        return (
            optimizer_state,
            plateau._replace(
                best=jnp.asarray(float(s["best"]), plateau.best.dtype),
                num_bad_epochs=jnp.asarray(s["num_bad_epochs"], plateau.num_bad_epochs.dtype),
                cooldown_counter=jnp.asarray(s["cooldown_counter"], plateau.cooldown_counter.dtype),
                last_epoch=jnp.asarray(s["last_epoch"], plateau.last_epoch.dtype),
            ),
        )

    def current(self, group: int, elapsed: int, hyperparams: dict, group_state: Any) -> dict:
        return {"lr": float(group_state[1].last_lr)}

    def state_dict(self, elapsed: int, lrs: list[float], group_states: Sequence[Any]) -> dict:
        return _scheduler_state.plateau_state_dict(self.snapshot, group_states[0][1], lrs)


def _refuse_tensor_lrs(name: str, optimizer: Any) -> None:
    """A tensor lr under a scheduler is refused: torch's schedulers then compute every lr in the
    tensor's dtype (float32 for ``torch.tensor(0.01)``), which the converted schedules (Python
    floats, float64 under x64) do not mirror, so the conversion would drift silently."""
    import torch

    for index, group in enumerate(optimizer.param_groups):
        if isinstance(group["lr"], torch.Tensor):
            raise ValueError(
                f"param group {index}'s lr is a {group['lr'].dtype} tensor: {name} then computes the lr in "
                "that dtype, which the converted schedule does not mirror. Build the torch optimizer with a "
                "Python float lr to convert it with its scheduler (a tensor lr converts without one)."
            )


def convert(scheduler: Any, optimizer: Any, adapter: OptimizerRecord) -> NoScheduler:
    """Convert ``scheduler`` (of ``optimizer``, ``None`` for none) for the optimizer described by
    ``adapter``."""
    if scheduler is None:
        return NoScheduler()
    name = _member_name(scheduler)
    if scheduler.optimizer is not optimizer and name != "ChainedScheduler":
        raise ValueError(f"the {name} given steps another optimizer than the one given.")
    _refuse_tensor_lrs(name, optimizer)
    groups = len(optimizer.param_groups)
    snapshot = _state_snapshot(scheduler)
    if name == "ReduceLROnPlateau":
        if not adapter.lr_scales_step:
            raise ValueError(
                f"ReduceLROnPlateau scales the updates by the lr ratio, which is not the effect of a "
                f"new lr on torch.optim.{adapter.torch_name}; this pair cannot be converted."
            )
        return Plateau(name=name, epoch=int(scheduler.last_epoch), snapshot=snapshot)
    members: tuple[str, ...] = ()
    if name in ("SequentialLR", "ChainedScheduler"):
        members = tuple(_member_name(m) for m in scheduler._schedulers)
        for member in scheduler._schedulers:
            if member.optimizer is not optimizer:
                raise ValueError(f"a {name} member steps another optimizer than the one given.")
    epoch = _epoch(name, scheduler)
    lrs, momenta = zip(*(_group_schedule(name, scheduler, g) for g in range(groups)))
    use_beta1 = bool(getattr(scheduler, "use_beta1", False))
    rtol = _LR_RTOL[jnp.dtype(jnp.result_type(float)).name]
    for g, (schedule, group) in enumerate(zip(lrs, optimizer.param_groups)):
        expected = float(schedule(jnp.asarray(epoch, jnp.int32)))
        actual = float(_torch.to_python(group["lr"]))
        if not math.isclose(expected, actual, rel_tol=rtol, abs_tol=1e-300):
            raise ValueError(
                f"param group {g} has lr {actual!r}, but {name} at epoch {epoch} gives {expected!r}: "
                "the lr was changed outside this scheduler (another scheduler, or by hand), so the "
                "schedule would not continue torch's."
            )
    return EpochSchedules(
        name=name,
        epoch=epoch,
        snapshot=snapshot,
        member_names=members,
        lr=tuple(lrs),
        momentum=tuple(momenta),
        use_beta1=use_beta1,
    )
