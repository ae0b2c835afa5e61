"""``compare_loop``: a user-written torch training step next to a JAX step, compared every step.

:func:`functional_optreg.verify.compare` drives one optimizer with its own gradient stream. A
real loop does more between two ``optimizer.step()`` calls — ``zero_grad``, several ``backward``
calls (accumulation), ``clip_grad_norm_``, ``scheduler.step()`` once per epoch, an lr set by hand —
and only the user's code knows the order. Here both sides are the user's: ``torch_step(step)``
runs one iteration of the torch loop on its own model, optimizer and scheduler; ``jax_step(params,
state, step)`` the port's. After each step the parameters are compared with the measures and the
contract of :mod:`functional_optreg.verify` (float64: relative error ≤ 1e-12; float32:
``torch.testing.assert_close`` defaults).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from functional_optreg import verify


def _leaves(values: Sequence[Any]) -> list[np.ndarray]:
    arrays = []
    for value in values:
        detach = getattr(value, "detach", None)
        arrays.append(np.asarray(detach().cpu().numpy() if detach is not None else value))
    return arrays


def compare_loop(
    torch_step: Callable[[int], Any],
    torch_params: Callable[[], Sequence[Any]] | Sequence[Any],
    jax_step: Callable[[Any, Any, int], tuple],
    params: Any,
    state: Any,
    *,
    steps: int = 50,
    dtype: str = "float64",
    name: str = "loop",
) -> verify.ParityReport:
    """Run a torch loop and its JAX port side by side and compare the parameters every step.

    Args:
      torch_step: ``torch_step(step)`` runs iteration ``step`` (0-based) of the torch loop, in any
        order of ``zero_grad`` / ``backward`` / clipping / ``optimizer.step()`` /
        ``scheduler.step()``; it may return the loss (a number or a 0-d tensor) or ``None``.
      torch_params: the torch parameters, in the order of ``jax.tree.leaves(params)``: a sequence
        of tensors updated in place, or a function returning them.
      jax_step: ``jax_step(params, state, step)`` returns ``(params, state)`` or ``(params,
        state, loss)``; jit it (or its core) yourself.
      params: the JAX parameters, equal to torch's at the start.
      state: the initial state of the JAX loop (whatever ``jax_step`` carries).
      steps: number of iterations (≥ 50 for the parity contract).
      dtype: ``"float64"`` (runs under ``jax.enable_x64``; build the torch side in float64) or
        ``"float32"``.
      name: a label for the report.

    Returns:
      A :class:`~functional_optreg.verify.ParityReport` (losses when both sides return them).

    Raises:
      ValueError: for a bad ``dtype`` or ``steps``, or when the two sides hold different numbers
        or shapes of parameters (named by position).
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    current = torch_params if callable(torch_params) else (lambda: torch_params)
    relative, closeness, losses = [], [], []
    with jax.enable_x64(dtype == "float64"):
        for step in range(int(steps)):
            torch_loss = torch_step(step)
            result = jax_step(params, state, step)
            params, state = result[0], result[1]
            ours = _leaves(jax.tree.leaves(params))
            theirs = _leaves(current())
            _check_same_layout(ours, theirs)
            relative.append(max((verify._relative_error(a, b) for a, b in zip(ours, theirs)), default=0.0))
            closeness.append(max((verify._closeness(a, b) for a, b in zip(ours, theirs)), default=0.0))
            if torch_loss is not None and len(result) > 2:
                losses.append((float(torch_loss), float(result[2])))
    return verify.ParityReport(
        name=name,
        dtype=dtype,
        relative_errors=np.asarray(relative),
        closeness=np.asarray(closeness),
        losses=np.asarray(losses) if len(losses) == steps else None,
        torch_params=theirs,
        jax_params=ours,
    )


def _check_same_layout(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    if len(ours) != len(theirs):
        raise ValueError(f"the JAX parameters have {len(ours)} leaves but torch_params gives {len(theirs)} tensors")
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            raise ValueError(
                f"parameter {index}: the JAX leaf has shape {a.shape}, the torch tensor {b.shape} "
                "(give torch_params in the order of jax.tree.leaves(params), in the same layout)"
            )
