"""Training runs whose gradients come from each side's own autodiff, judged against torch's own floor.

:func:`functional_optreg.verify.compare` with a :class:`~functional_optreg.verify.LossPair` feeds
each side the gradient its own framework computes, and the two differ by rounding (torch's and
XLA's convolutions and matmuls sum in other orders; :mod:`parity.forward_bounds` bounds by how
much). The optimizer contract's 1e-12 assumes identical gradients, so it cannot decide these runs
by itself: optimizers that normalise by the gradient's magnitude (Adam, Adagrad, RMSprop on
near-zero convolution gradients) turn a difference of one rounding into a larger one, and every
later step carries it. Such a run is judged by the rule for chaotic procedures (docs/parity.md,
:mod:`parity.chaos`): within the contract it passes; otherwise torch is run against itself under
rounding-level perturbations (:data:`PERTURBATIONS`) in the same process, and our error may reach
:data:`parity.chaos.ALLOWANCE` times the largest deviation seen so far. In float32 torch's own
float32 run against its float64 run on the same batches is one more perturbation (how far torch
itself is from the exact trajectory).

The measure per step is the dtype's (:func:`parity.chaos.measure`) over the parameters, and the
loss's, whichever is larger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from functional_optreg import verify
from parity import chaos

PERTURBATIONS = ("nudge-0", "nudge-1", "tilt-0", "jitter-0")
"""The perturbations of :mod:`parity.chaos` that act on a gradient-driven run: the start moved by
one ulp (two directions), a constant tilt of every gradient and a fresh scale and tilt at every
step, both of the size by which the two sides' first gradients differ. (A uniform loss scale alone
is left out: it moves only the eps terms of scale-invariant optimizers.) Exact zeros are left
alone: both sides compute them exactly (zero biases at the start, the gradient of a unit that no
input reaches), and one ulp of zero would flip a ReLU at an input of exactly zero, a change of
the unit's full size, not a rounding."""


def _loss_measure(ours: float, theirs: float, dtype: str) -> float:
    return chaos.measure(dtype)(np.asarray([ours]), np.asarray([theirs]))


def errors(report: verify.ParityReport) -> np.ndarray:
    """Per step, our error against torch in the dtype's measure: parameters or loss, the larger."""
    params = report.relative_errors if report.dtype == "float64" else report.closeness
    losses = [_loss_measure(ours, theirs, report.dtype) for theirs, ours in report.losses]
    return np.maximum(params, np.asarray(losses))


def _torch_run(
    torch_optimizer: Callable[[list], Any],
    start: list[np.ndarray],
    loss_pair: verify.LossPair,
    steps: int,
    perturbation: str,
    rounding: float,
    first_gradients: list[np.ndarray],
) -> tuple[list[list[np.ndarray]], list[float]]:
    """Torch's run (parameters after each step, loss before it) under one perturbation."""
    import torch

    moved = [np.where(leaf == 0, leaf, nudged) for leaf, nudged in zip(start, chaos.nudge(start, perturbation))]
    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in moved]
    optimizer = torch_optimizer(tensors)
    tilt = chaos.tilt(perturbation, first_gradients, rounding)
    draw = chaos.jitter(perturbation, first_gradients, rounding)
    trajectory, losses = [], []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_pair.torch_loss(step, tensors)
        factor, extra = (1.0, tilt) if draw is None else draw()
        (loss * factor).backward()
        for tensor, added in zip(tensors, extra or []):
            tensor.grad += torch.from_numpy(np.where(tensor.grad.numpy() == 0, 0, added))
        optimizer.step()
        losses.append(float(loss.detach()))
        trajectory.append([t.detach().numpy().copy() for t in tensors])
    return trajectory, losses


def _deviation(run: tuple, reference: tuple, dtype: str) -> np.ndarray:
    measure = chaos.measure(dtype)
    return np.asarray(
        [
            max(max(measure(a, b) for a, b in zip(leaves, reference_leaves)), _loss_measure(loss, ref_loss, dtype))
            for leaves, reference_leaves, loss, ref_loss in zip(run[0], reference[0], run[1], reference[1])
        ]
    )


def torch_sensitivity(
    torch_optimizer: Callable[[list], Any],
    params: Any,
    loss_pair: verify.LossPair,
    steps: int,
    dtype: str,
) -> chaos.Sensitivity:
    """Torch against itself per step (the dtype's measure, parameters and loss), under
    :data:`PERTURBATIONS` and, in float32, against its own float64 run."""
    import torch

    with jax.enable_x64(dtype == "float64"):
        start = [np.asarray(leaf, dtype) for leaf in jax.tree.leaves(params)]
        jax_params = jax.tree.unflatten(jax.tree.structure(params), start)
        our_loss, our_grads = jax.jit(jax.value_and_grad(loss_pair.jax_loss, argnums=1))(0, jax_params)
        tensors = [torch.tensor(leaf, requires_grad=True) for leaf in start]
        their_loss = loss_pair.torch_loss(0, tensors)
        their_loss.backward()
        first_gradients = [t.grad.numpy().copy() for t in tensors]
        rounding = chaos.evaluation_rounding(
            (float(our_loss), [np.asarray(g) for g in jax.tree.leaves(our_grads)]),
            (float(their_loss.detach()), first_gradients),
            dtype,
        )
        runs = {
            name: _torch_run(torch_optimizer, start, loss_pair, steps, name, rounding, first_gradients)
            for name in ("reference",) + PERTURBATIONS
        }
        if dtype == "float32":
            wide = [np.asarray(leaf, np.float64) for leaf in start]
            runs["float64"] = _torch_run(torch_optimizer, wide, loss_pair, steps, "reference", rounding, [])
    reference = runs.pop("reference")
    floors = np.max([_deviation(run, reference, dtype) for run in runs.values()], axis=0)
    return chaos.Sensitivity(floors=floors, counters_move=np.zeros(steps, bool))


def judge_errors(
    ours: np.ndarray,
    dtype: str,
    torch_optimizer: Callable[[list], Any],
    params: Any,
    loss_pair: verify.LossPair,
) -> chaos.Verdict:
    """The verdict on per-step errors ``ours`` (the dtype's measure) of a run driven by
    ``loss_pair`` from ``params``: the contract, or else :data:`parity.chaos.ALLOWANCE` × torch's
    own floor up to each step (measured only then, :func:`torch_sensitivity`)."""
    counters = np.ones(len(ours), bool)
    verdict = chaos.judge(ours, counters, dtype, None, cumulative=True)
    if verdict.passed:
        return verdict
    sensitivity = torch_sensitivity(torch_optimizer, params, loss_pair, len(ours), dtype)
    return chaos.judge(ours, counters, dtype, sensitivity, cumulative=True)


def judge(
    report: verify.ParityReport,
    torch_optimizer: Callable[[list], Any],
    params: Any,
    loss_pair: verify.LossPair,
) -> chaos.Verdict:
    """:func:`judge_errors` on a :func:`verify.compare` run driven by ``loss_pair`` (:func:`errors`)."""
    return judge_errors(errors(report), report.dtype, torch_optimizer, params, loss_pair)
