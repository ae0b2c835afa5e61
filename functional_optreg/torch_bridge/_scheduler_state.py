"""Torch's scheduler state dicts, advanced by the updates taken on the JAX side.

A scheduler's state dict holds its constructor arguments (unchanged by stepping) and counters:
``last_epoch``, ``_step_count``, ``_last_lr``, CosineAnnealingWarmRestarts' ``T_cur`` / ``T_i``,
the members' state dicts of SequentialLR / ChainedScheduler, ReduceLROnPlateau's ``best`` and
counters. These functions replay torch's ``step()`` bookkeeping on a snapshot taken at conversion;
the lrs come from our schedules.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp


def restarts(t_0: int, t_mult: int, epochs: int, t_cur: Any = 0, t_i: Any = None) -> tuple[Any, Any]:
    """CosineAnnealingWarmRestarts' ``(T_cur, T_i)`` after ``epochs`` plain steps from a state."""
    t_i = t_0 if t_i is None else t_i
    for _ in range(epochs):
        t_cur = t_cur + 1
        if t_cur >= t_i:
            t_cur = t_cur % t_i
            t_i = t_i * t_mult
    return t_cur, t_i


def plateau_state_dict(snapshot: dict, plateau: Any, lrs: list[float]) -> dict:
    """ReduceLROnPlateau's state dict from our ``ReduceLROnPlateauState``."""
    state = copy.deepcopy(snapshot)
    state.update(
        last_epoch=int(plateau.last_epoch),
        best=float(plateau.best),
        num_bad_epochs=int(plateau.num_bad_epochs),
        cooldown_counter=int(plateau.cooldown_counter),
        _last_lr=list(lrs),
    )
    return state


def advanced_state_dict(
    name: str,
    snapshot: dict,
    member_names: Sequence[str],
    epoch: int,
    elapsed: int,
    lrs: list[float],
    schedules: Sequence[Any],
) -> dict:
    """The state dict ``elapsed`` plain ``step()`` calls after ``snapshot`` (taken at ``epoch``).

    ``schedules`` are the per-group lr schedules of the epoch; ``lrs`` their values now.
    """
    state = copy.deepcopy(snapshot)
    if elapsed == 0:
        return state
    for _ in range(elapsed):
        _advance_once(name, state, member_names)
    state["_last_lr"] = list(lrs)

    def lrs_at(at: int) -> list[float]:
        return [float(schedule(jnp.asarray(at, jnp.int32))) for schedule in schedules]

    if name == "SequentialLR":
        _sequential_member_lrs(state, epoch, lrs_at)
    elif name == "ChainedScheduler":
        _chained_member_lrs(state, schedules, lrs_at)
    return state


def _sequential_member_lrs(state: dict, epoch: int, lrs_at: Any) -> None:
    """Each member stepped since conversion last reported the lr of the last epoch it ran."""
    milestones = state["_milestones"]
    last = state["last_epoch"]
    active = bisect.bisect_right(milestones, last)
    for index, member in enumerate(state["_schedulers"][: active + 1]):
        start = 0 if index == 0 else milestones[index - 1]
        end = last if index == active else milestones[index] - 1
        if end >= max(start, epoch + 1):
            member["_last_lr"] = lrs_at(end)


def _chained_member_lrs(state: dict, schedules: Sequence[Any], lrs_at: Any) -> None:
    """Each member reported the lr after its own step: the chain's recursion, member by member."""
    epoch = state["_schedulers"][0]["last_epoch"]
    values = lrs_at(epoch - 1)
    for index, member in enumerate(state["_schedulers"]):
        values = [
            float(schedule.members[index].step(jnp.asarray(epoch, jnp.int32), value))
            for schedule, value in zip(schedules, values)
        ]
        member["_last_lr"] = list(values)


def _advance_once(name: str, state: dict, member_names: Sequence[str]) -> None:
    if name == "SequentialLR":
        state["last_epoch"] += 1
        milestones = state["_milestones"]
        index = bisect.bisect_right(milestones, state["last_epoch"])
        member = state["_schedulers"][index]
        if index > 0 and milestones[index - 1] == state["last_epoch"]:
            member["last_epoch"] = 0
        else:
            _advance_once(member_names[index], member, ())
    elif name == "ChainedScheduler":
        for member_name, member in zip(member_names, state["_schedulers"]):
            _advance_once(member_name, member, ())
    elif name == "CosineAnnealingWarmRestarts":
        state["T_cur"], state["T_i"] = restarts(state["T_0"], state["T_mult"], 1, state["T_cur"], state["T_i"])
        state["last_epoch"] += 1
    else:
        state["_step_count"] += 1
        state["last_epoch"] += 1
        state["_is_initial"] = False
