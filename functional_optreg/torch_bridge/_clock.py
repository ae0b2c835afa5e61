"""How many updates torch has taken, and how often its scheduler steps: the bridge's clock.

Our optimizers count their updates in ``state.step`` and our schedules are functions of that
count, so a converted optimizer needs two numbers torch does not always keep:

* the update count ``c₀`` at conversion: torch stores it for most optimizers (``state[p]["step"]``)
  but not for SGD, Muon and LBFGS;
* the scheduler's rate: ``scheduler.step()`` after every ``optimizer.step()`` (per update) or once
  per epoch of ``k`` updates (``steps_per_epoch=k``).

With ``k`` updates per epoch, epochs start at multiples of ``k`` (the first update opens epoch
``0``), so update ``c`` runs at torch's epoch ``E + ⌊c/k⌋ − ⌊c₀/k⌋``, where ``E`` is the scheduler's
``last_epoch`` at conversion. Where torch keeps the count, ``k`` is inferred as the only ``k`` with
``⌊c₀/k⌋ = E`` (a scheduler stepped once per epoch since the first update); where it does not, or
where several ``k`` fit, :func:`resolve` refuses and asks for ``steps_per_epoch`` (or
``update_count``).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Clock:
    """The resolved clock of a conversion.

    Attributes:
      counts: per param group, the update count at conversion (our state's ``step``).
      steps_per_epoch: updates per ``scheduler.step()`` (1 without a scheduler).
    """

    counts: tuple[int, ...]
    steps_per_epoch: int = 1


def _check_count(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be None or a {kind} integer, got {value!r}")
    return int(value)


_ADVICE = (
    "pass steps_per_epoch=1 to from_torch if scheduler.step() follows every optimizer.step(), "
    "steps_per_epoch=<updates per epoch> if it is stepped once per epoch, or "
    "update_count=<optimizer.step() calls so far>"
)


def _infer(optimizer: str, scheduler: str, counts: Sequence[int], epoch: int) -> int:
    """The only ``k`` with ``⌊c₀/k⌋ = E`` for every group's count ``c₀``, else a refusal."""
    if epoch == 0:
        taken = max(counts)
        detail = "nothing has run yet" if taken == 0 else f"{taken} update(s) fit the first epoch of any length"
        raise ValueError(
            f"the {scheduler} is at last_epoch=0 ({detail}), so from_torch cannot tell whether it "
            f"steps once per update or once per epoch; {_ADVICE}."
        )
    fits = set.intersection(*(set(range(count // (epoch + 1) + 1, count // epoch + 1)) for count in counts))
    if not fits:
        raise ValueError(
            f"the {scheduler} is at last_epoch={epoch} but torch.optim.{optimizer} has taken "
            f"{sorted(set(counts))} update(s): no number of updates per epoch fits (the scheduler "
            f"was created or stepped apart from the optimizer); {_ADVICE}."
        )
    if len(fits) > 1:
        raise ValueError(
            f"the {scheduler} is at last_epoch={epoch} after {sorted(set(counts))} update(s) of "
            f"torch.optim.{optimizer}: it steps once per epoch, but an epoch of any of "
            f"{min(fits)}..{max(fits)} updates fits, so from_torch cannot tell where the next epoch "
            "starts; pass steps_per_epoch=<updates per epoch>."
        )
    return fits.pop()


def resolve(
    optimizer: str,
    torch_counts: Sequence[int | None],
    has_state: Sequence[bool],
    scheduler: str | None,
    epoch: int | None,
    steps_per_epoch: Any,
    update_count: Any,
    rate_needed: bool = True,
) -> Clock:
    """The update count of each group and the scheduler's ``steps_per_epoch``.

    Args:
      optimizer: torch's class name.
      torch_counts: per group, the count torch keeps (``None`` where it keeps none).
      has_state: per group, whether torch holds per-parameter state (the optimizer has stepped).
      scheduler: the scheduler's class name, or ``None`` without a scheduler.
      epoch: the scheduler's ``last_epoch`` (``None`` without a scheduler).
      steps_per_epoch: the user's ``steps_per_epoch`` (``None``: infer).
      update_count: the user's ``update_count`` (``None``: from torch, or derived).
      rate_needed: whether the converted scheduler depends on the rate (ReduceLROnPlateau does
        not: it decides when given a metric), so that it is inferred at all.
    """
    steps_per_epoch = _check_count("steps_per_epoch", steps_per_epoch, 1)
    update_count = _check_count("update_count", update_count, 0)
    if scheduler is None and steps_per_epoch is not None:
        raise ValueError("steps_per_epoch says how often the scheduler steps, but no scheduler was given.")
    counts = list(torch_counts)
    if update_count is not None:
        for g, count in enumerate(counts):
            if count is not None and count != update_count:
                raise ValueError(
                    f"update_count={update_count}, but torch.optim.{optimizer}'s param group {g} has "
                    f"taken {count} update(s) (its state's 'step')."
                )
        # State without a count of its own means torch has stepped; a count (Adagrad's state exists
        # from its constructor at step 0) was checked against update_count above.
        if update_count == 0 and any(state and count is None for count, state in zip(counts, has_state)):
            raise ValueError(f"update_count=0, but torch.optim.{optimizer} holds state, so it has stepped.")
        counts = [update_count] * len(counts)
    if scheduler is None or epoch is None:
        return Clock(tuple(_fallback(count, state) for count, state in zip(counts, has_state)))
    if steps_per_epoch is None and not rate_needed and all(count is not None for count in counts):
        return Clock(tuple(c for c in counts if c is not None))
    if steps_per_epoch is None:
        if any(count is None for count in counts):
            raise ValueError(
                f"torch.optim.{optimizer} keeps no update count, so from_torch cannot tell whether the "
                f"{scheduler} (last_epoch={epoch}) steps once per update or once per epoch; "
                f"{_ADVICE}."
            )
        steps_per_epoch = _infer(optimizer, scheduler, [c for c in counts if c is not None], epoch)
    resolved = []
    for g, (count, state) in enumerate(zip(counts, has_state)):
        if count is None:
            count = epoch * steps_per_epoch
            if state and count == 0:
                raise ValueError(
                    f"torch.optim.{optimizer}'s param group {g} has state, so it has stepped, but the "
                    f"{scheduler} is at last_epoch=0: pass update_count=<optimizer.step() calls so far>."
                )
        resolved.append(count)
    return Clock(tuple(resolved), steps_per_epoch)


def _fallback(count: int | None, has_state: bool) -> int:
    """Without a scheduler or ``update_count``, a count torch does not keep is 1 once state exists
    (the first-step rules are over) and 0 before."""
    if count is not None:
        return count
    return 1 if has_state else 0


def epochs_between(start: int, count: int, steps_per_epoch: int) -> int:
    """Scheduler steps taken between update counts ``start`` and ``count``."""
    return count // steps_per_epoch - start // steps_per_epoch
