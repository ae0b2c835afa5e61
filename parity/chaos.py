"""Judging chaotic trajectories against torch's own sensitivity, measured in the same run.

Some procedures branch on their data: L-BFGS's line search accepts or rejects a trial step,
its stopping rules compare a change against a tolerance. One rounding difference can flip such
a branch, after which two correct implementations follow different paths. No figure measured on
one machine bounds that: the BLAS path, torch's kernel level and XLA's instruction set all move
the roundings (``MKL_CBWR``, ``ATEN_CPU_CAPABILITY``, ``XLA_FLAGS=--xla_cpu_max_isa``).

The rule (docs/parity.md, "Chaotic procedures"):

1. The contract first. A step within the contract (float64 ≤ 1e-12 relative, float32 within
   ``assert_close`` defaults) and with the same counters as torch passes.
2. Otherwise torch is run against *itself* under rounding-level perturbations
   (:data:`PERTURBATIONS`: every starting value moved by one ulp, or every loss and gradient the
   closure returns changed by as much as the two sides' evaluations of the problem differ), in
   the same process, on the same machine. The largest deviation of a perturbed torch run from
   the reference is torch's *floor* at that step: no reimplementation can be held closer to
   torch than torch is to itself.
3. Where the floor is within the contract, torch is stable there and so must we be: the
   contract applies. Where it is not, our error may reach :data:`ALLOWANCE` times the floor.
   Our counters may differ from torch's only where torch's own are undetermined: a perturbed run's
   counters moved, or the floor is outside the contract (so the comparisons inside the line
   search and the stopping rules are decided by rounding).

Why a factor and why 100: each perturbation is one difference at one place (the start, or a
fixed change of every evaluation), while two implementations differ at almost every operation
(XLA and ATen reduce sums in other orders, contract ``a·b + c`` into fused multiply-adds in other
places, round the optimizer's own arithmetic differently), in patterns no perturbation copies.
A difference in semantics is not a few roundings: a wrong formula shows up as an error many
orders of magnitude above the floor (eps inside instead of outside a square root is ~1e-6 in
float64 against floors of ~1e-12), so the allowance keeps every semantic check while absorbing
the rounding pattern of a different compiler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from functional_optreg import verify

ALLOWANCE = 100.0
"""How far above torch's own floor our error may go where torch misses the contract itself."""

PERTURBATIONS = ("nudge-0", "nudge-1", "scale-up", "scale-down", "tilt-0", "jitter-0")
"""Perturbations of a torch run, each the size of one difference between two implementations:
two moves of every starting value by one ulp (two random directions); the closure's loss, and so
every gradient, scaled by ``1 ± rounding``; a constant tilt added to every gradient, of
``rounding`` times each leaf's largest starting gradient, in random directions; and ``jitter``,
a new random scale and tilt of that size at every evaluation, as two implementations' rounding
noise is (a uniform scale alone leaves the line search's comparisons unchanged). ``rounding`` is
how far the two sides' evaluations of the *problem* (loss and gradient at the start, not the
optimizer) differ, measured in the same run, and at least the dtype's machine epsilon: XLA and
ATen sum a reduction over many terms in other orders, so their gradients differ by more than one
rounding, by an amount that depends on the problem and the machine."""


STEP_ROUNDING_SEEDS = (0, 1, 2, 3)
"""Random sign patterns of :class:`StepRounding`: each is one torch run perturbed at every step."""


class StepRounding:
    """An ``after_step`` observer of :func:`functional_optreg.verify.run` (torch alone) that records
    torch's parameters after every step and, with a ``seed``, then moves every element by one
    rounding of its leaf's largest magnitude so far (``±eps·max|leaf|``, random signs): the size of
    the difference two implementations make at each step, where XLA and ATen round and fuse
    multiply-adds in other places. Without a seed it only records (the reference run). ``record``
    says what is recorded (default: torch's parameters)."""

    def __init__(self, seed: int | None, record: Callable[[verify.StepView], list[np.ndarray]] | None = None):
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.record = record if record is not None else verify.StepView.torch_leaves
        self.largest: list[float] = []
        self.trajectory: list[list[np.ndarray]] = []

    def __call__(self, view: verify.StepView) -> None:
        if self.rng is not None:
            import torch

            with torch.no_grad():
                for index, tensor in enumerate(view.tensors):
                    values = tensor.detach().numpy()
                    finite = np.abs(values[np.isfinite(values)])
                    if index == len(self.largest):
                        self.largest.append(0.0)
                    self.largest[index] = max(self.largest[index], float(np.max(finite, initial=0.0)))
                    signs = np.where(self.rng.random(values.shape) < 0.5, -1.0, 1.0)
                    moved = values + signs * float(np.finfo(values.dtype).eps) * self.largest[index]
                    tensor.copy_(torch.from_numpy(np.where(np.isfinite(values), moved, values).astype(values.dtype)))
        self.trajectory.append(self.record(view))


def step_rounding_floors(run_torch: Callable[[StepRounding], object], dtype: str) -> np.ndarray:
    """Per step, how far torch runs from itself when every step is perturbed by one rounding
    (:class:`StepRounding`, over :data:`STEP_ROUNDING_SEEDS`), in the dtype's measure
    (:func:`measure`, the largest over the leaves). ``run_torch(observer)`` runs torch alone through
    :func:`functional_optreg.verify.run` with ``after_step=observer``."""
    reference = StepRounding(None)
    run_torch(reference)
    error = measure(dtype)
    floors = np.zeros(len(reference.trajectory))
    for seed in STEP_ROUNDING_SEEDS:
        perturbed = StepRounding(seed)
        run_torch(perturbed)
        for step, (theirs, moved) in enumerate(zip(reference.trajectory, perturbed.trajectory)):
            floors[step] = max(floors[step], max(error(a, b) for a, b in zip(moved, theirs)))
    return floors


def contract(dtype: str) -> float:
    """The per-step bound in the dtype's measure: relative error (float64) or assert_close ratio."""
    return verify.FLOAT64_RTOL if dtype == "float64" else 1.0


def measure(dtype: str):
    """The dtype's error measure of one array against torch's: see :func:`contract`."""
    return verify._relative_error if dtype == "float64" else verify._closeness


def nudge(arrays: list[np.ndarray], perturbation: str) -> list[np.ndarray]:
    """``arrays`` with every element moved one ulp up or down (``nudge-<seed>``), else unchanged."""
    if not perturbation.startswith("nudge-"):
        return arrays
    rng = np.random.default_rng(int(perturbation.split("-")[1]))
    moved = []
    for array in arrays:
        direction = np.where(rng.random(array.shape) < 0.5, -np.inf, np.inf).astype(array.dtype)
        moved.append(np.nextafter(array, direction))
    return moved


def loss_factor(perturbation: str, rounding: float) -> float:
    """The factor a ``scale-*`` perturbation applies to every loss (and so every gradient), else 1."""
    return {"scale-up": 1 + rounding, "scale-down": 1 - rounding}.get(perturbation, 1.0)


def _random_tilt(rng: np.random.Generator, gradients: list[np.ndarray], rounding: float) -> list[np.ndarray]:
    signs = [np.where(rng.random(g.shape) < 0.5, -1.0, 1.0).astype(g.dtype) for g in gradients]
    return [rounding * float(np.max(np.abs(g), initial=0.0)) * sign for g, sign in zip(gradients, signs)]


def tilt(perturbation: str, gradients: list[np.ndarray], rounding: float) -> list[np.ndarray] | None:
    """For ``tilt-<seed>``: per leaf, ``±rounding · max|gradient|`` per element, to be added to
    every gradient (as ``loss + Σ tilt·θ``); else ``None``."""
    if not perturbation.startswith("tilt-"):
        return None
    return _random_tilt(np.random.default_rng(int(perturbation.split("-")[1])), gradients, rounding)


def jitter(perturbation: str, gradients: list[np.ndarray], rounding: float):
    """For ``jitter-<seed>``: a function returning, at each call (one per evaluation), a loss
    factor in ``1 ± rounding`` and a tilt as :func:`tilt`'s, both drawn anew; else ``None``."""
    if not perturbation.startswith("jitter-"):
        return None
    rng = np.random.default_rng(int(perturbation.split("-")[1]))

    def draw() -> tuple[float, list[np.ndarray]]:
        return 1 + rounding * rng.uniform(-1.0, 1.0), _random_tilt(rng, gradients, rounding)

    return draw


def evaluation_rounding(
    ours: tuple[float, list[np.ndarray]], theirs: tuple[float, list[np.ndarray]], dtype: str
) -> float:
    """How far two evaluations (loss, gradient leaves) of the same problem at the same point
    differ: the larger of the loss's relative difference and the gradients' normwise relative
    difference, and at least the dtype's machine epsilon."""
    loss, grads = ours
    their_loss, their_grads = theirs
    loss_difference = abs(loss - their_loss) / abs(their_loss) if their_loss else 0.0
    grad_difference = max(verify._relative_error(np.asarray(a), np.asarray(b)) for a, b in zip(grads, their_grads))
    return max(float(np.finfo(dtype).eps), loss_difference, grad_difference)


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """Torch against itself, per step: the largest deviation over :data:`PERTURBATIONS` and
    whether any perturbed run's counters (function evaluations, iterations) left torch's."""

    floors: np.ndarray
    counters_move: np.ndarray

    def bounds(self, dtype: str, cumulative: bool) -> np.ndarray:
        """Per step, the largest error allowed: the contract where torch's floor is within it,
        else :data:`ALLOWANCE` × the floor.

        ``cumulative``: a free-running trajectory carries every earlier deviation, so its floor at
        step k is the largest floor up to k (a perturbed run may flip a branch one step before or
        after ours).
        """
        floors = np.maximum.accumulate(self.floors) if cumulative else self.floors
        bound = contract(dtype)
        return np.where(floors <= bound, bound, ALLOWANCE * floors)

    def counters_may_differ(self, dtype: str, cumulative: bool) -> np.ndarray:
        """Per step, whether torch's own counters are undetermined by then: a perturbed run's
        counters moved, or torch's floor is outside the contract (the line search and the stopping
        rules compare values that torch itself only knows to within its floor)."""
        undetermined = self.counters_move | (self.floors > contract(dtype))
        return np.logical_or.accumulate(undetermined) if cumulative else undetermined


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judgement of one trajectory: ``passed`` and a one-line reason."""

    passed: bool
    reason: str


def judge(
    errors: np.ndarray,
    counters_equal: np.ndarray,
    dtype: str,
    sensitivity: Sensitivity | None,
    cumulative: bool,
) -> Verdict:
    """Apply the rule of this module to per-step ``errors`` (the dtype's measure) and
    ``counters_equal`` (per step, whether our counters equal torch's).

    ``sensitivity`` is ``None`` when it was not measured; then only the contract can pass.
    """
    errors = np.asarray(errors, dtype=np.float64)
    counters_equal = np.asarray(counters_equal, dtype=bool)
    bound = contract(dtype)
    if np.all(errors <= bound) and np.all(counters_equal):
        return Verdict(True, f"within the contract ({np.max(errors):.2e} <= {bound:.0e}), counters equal")
    if sensitivity is None:
        return Verdict(False, f"outside the contract ({np.max(errors):.2e} > {bound:.0e} or counters differ)")
    if np.all(sensitivity.floors <= bound) and not np.any(sensitivity.counters_move):
        return Verdict(
            False,
            f"torch is stable against itself here (floor {np.max(sensitivity.floors):.2e} within the contract, "
            f"counters unmoved) but ours is off by {np.max(errors):.2e}: a real difference",
        )
    bounds = sensitivity.bounds(dtype, cumulative)
    over = np.flatnonzero(errors > bounds)
    if over.size:
        k = int(over[0])
        return Verdict(
            False,
            f"step {k + 1}: error {errors[k]:.2e} above the bound {bounds[k]:.2e} (contract, or "
            f"{ALLOWANCE:.0f} x torch's own floor where torch misses the contract itself)",
        )
    unexplained = np.flatnonzero(~counters_equal & ~sensitivity.counters_may_differ(dtype, cumulative))
    if unexplained.size:
        return Verdict(
            False,
            f"step {int(unexplained[0]) + 1}: counters differ where torch's own are determined (its floor "
            "is within the contract and its perturbed runs keep them)",
        )
    return Verdict(
        True,
        f"chaotic: error {np.max(errors):.2e} within {ALLOWANCE:.0f} x torch's own floor "
        f"(largest floor {np.max(sensitivity.floors):.2e})",
    )
