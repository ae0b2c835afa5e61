"""torch.optim.LBFGS against ``fo.lbfgs``: a closure-driven harness judged by :mod:`parity.chaos`.

:func:`functional_optreg.verify.compare` feeds one gradient per step, but ``LBFGS.step(closure)``
evaluates the loss many times, so LBFGS has this harness. After every outer ``step`` it compares
the parameters, the returned loss and the counters (``func_evals``, ``n_iter``, history length)
in two modes:

* synced: our step starts from torch's parameters and state (:func:`state_from_torch`), so it
  checks one ``step`` (stopping rules, line search, the history it consumes) in isolation;
* free: our own state is carried over, as a user runs it.

Each mode passes within the contract, or, where torch itself misses the contract under one
rounding, within :data:`parity.chaos.ALLOWANCE` times torch's own floor measured here and now
(:func:`step_sensitivity` for synced, :func:`trajectory_sensitivity` for free). The floors are
only measured when the contract is missed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import functional_optreg as fo
from functional_optreg import verify
from parity import chaos
from parity.cases.lbfgs import LBFGSCase, Problem

COUNTER_NAMES = ("func_evals", "n_iter", "history")


@dataclasses.dataclass(frozen=True)
class TorchStep:
    """Torch after one outer step: parameters, returned loss, state (NumPy) and its state dict."""

    params: list[np.ndarray]
    loss: float
    snapshot: dict
    state_dict: dict

    @property
    def counters(self) -> tuple[int, int, int]:
        return self.snapshot["func_evals"], self.snapshot["n_iter"], len(self.snapshot.get("old_dirs", []))


@dataclasses.dataclass
class Trace:
    """Per outer step of one comparison mode.

    Parameter errors are normwise per leaf (largest absolute difference over the largest absolute
    torch value). The loss error is relative to the largest loss of the run: a converged loss is
    ~0, a difference of terms of the order of the starting loss, and its rounding is measured
    against that scale. ``counters[step]`` holds (torch, ours) pairs for :data:`COUNTER_NAMES`.
    The carried state is not compared entry by entry here: near convergence ``H_diag = yᵀs / yᵀy``
    and ``ro = 1 / yᵀs`` are ratios of cancelling differences, ill-conditioned in torch itself. It
    enters through what it does: in synced mode our step starts from torch's state and must
    reproduce torch's next parameters (``tests/test_lbfgs.py`` compares the state itself on a
    well-conditioned problem).
    """

    param_errors: np.ndarray
    closeness: np.ndarray
    loss_errors: np.ndarray
    loss_closeness: np.ndarray
    counters: np.ndarray

    def errors(self, dtype: str) -> np.ndarray:
        """Per step, the larger of the parameter and loss errors in the dtype's contract measure."""
        if dtype == "float64":
            return np.maximum(self.param_errors, self.loss_errors)
        return np.maximum(self.closeness, self.loss_closeness)

    @property
    def counters_equal(self) -> np.ndarray:
        return np.all(self.counters[:, :, 0] == self.counters[:, :, 1], axis=1)

    def summary(self) -> str:
        evals, iters, _ = self.counters[-1]
        return (
            f"rel err params {np.max(self.param_errors):.2e} loss {np.max(self.loss_errors):.2e}, "
            f"assert_close ratio {np.max(self.closeness):.3g} (loss {np.max(self.loss_closeness):.3g}), "
            f"n_iter {iters[0]}/{iters[1]}, func_evals {evals[0]}/{evals[1]}"
            f"{'' if np.all(self.counters_equal) else ' COUNTERS DIFFER'}"
        )


@dataclasses.dataclass
class LBFGSReport:
    """Both modes of one case in one dtype, with torch's floors where they were needed."""

    case: LBFGSCase
    dtype: str
    synced: Trace
    free: Trace
    synced_sensitivity: chaos.Sensitivity | None = None
    free_sensitivity: chaos.Sensitivity | None = None
    rounding: float | None = None
    """How far the two sides' evaluations of the problem differ (sizes the perturbations)."""

    def verdict(self, mode: str) -> chaos.Verdict:
        trace, sensitivity = getattr(self, mode), getattr(self, f"{mode}_sensitivity")
        return chaos.judge(trace.errors(self.dtype), trace.counters_equal, self.dtype, sensitivity, mode == "free")

    @property
    def passed(self) -> bool:
        return self.verdict("synced").passed and self.verdict("free").passed

    @property
    def within_contract(self) -> bool:
        """Whether both modes met the contract itself (no floor was needed)."""
        return self.synced_sensitivity is None and self.free_sensitivity is None

    @property
    def worst(self) -> float:
        """The largest parameter or loss error of both modes, in the dtype's contract measure."""
        return max(float(np.max(t.errors(self.dtype))) for t in (self.synced, self.free))

    def __str__(self) -> str:
        rows = [f"{self.case.name} [{self.dtype}, {self.case.steps} steps]"]
        if self.rounding is not None:
            rows.append(f"  the two sides' evaluations of the problem differ by {self.rounding:.2e} (sizes the floors)")
        for mode in ("synced", "free"):
            verdict = self.verdict(mode)
            rows.append(f"  {mode:<6} {getattr(self, mode).summary()}")
            rows.append(f"         -> {'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}")
        rows.append("  step  synced: error  floor    | free: error  floor    | torch/ours evals, iters")
        for k in range(self.case.steps):
            s, f, c = self.synced.errors(self.dtype)[k], self.free.errors(self.dtype)[k], self.free.counters[k]
            floors = [
                f"{sens.floors[k]:.2e}" if sens is not None else "-"
                for sens in (self.synced_sensitivity, self.free_sensitivity)
            ]
            rows.append(
                f"  {k + 1:4d}  {s:13.2e}  {floors[0]:>8} | {f:11.2e}  {floors[1]:>8} | "
                f"{c[0][0]}/{c[0][1]}, {c[1][0]}/{c[1][1]}"
            )
        return "\n".join(rows)


def _snapshot(state: dict) -> dict:
    """A NumPy copy of torch's LBFGS state (torch updates its tensors in place)."""

    def copy_value(value):
        return value.detach().numpy().copy() if hasattr(value, "detach") else value

    return {
        key: [copy_value(v) for v in value] if isinstance(value, list) else copy_value(value)
        for key, value in state.items()
    }


def run_torch(
    case: LBFGSCase,
    problem: Problem,
    leaves: list[np.ndarray],
    *,
    perturbation: str = "",
    rounding: Rounding | None = None,
    resume: dict | None = None,
    steps: int | None = None,
) -> list[TorchStep]:
    """Torch's LBFGS from ``leaves`` for ``steps`` outer steps (default: the case's).

    ``resume``: a state dict to continue from (one step from there needs no scheduler: the lr
    the scheduler set is in the state dict's param groups). ``perturbation``: one of
    :data:`parity.chaos.PERTURBATIONS`, applied to the start and to every loss, of the size
    ``rounding`` gives.
    """
    import torch

    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in chaos.nudge(leaves, perturbation)]
    optimizer = torch.optim.LBFGS(tensors, **case.kwargs, **case.torch_kwargs)
    if resume is not None:
        optimizer.load_state_dict(copy.deepcopy(resume))
    scheduler = case.torch_scheduler(optimizer) if case.torch_scheduler is not None and resume is None else None
    factor, tilts, noise = 1.0, None, None
    if rounding is not None:
        factor = chaos.loss_factor(perturbation, rounding.size)
        tilts = chaos.tilt(perturbation, rounding.gradients, rounding.size)
        noise = chaos.jitter(perturbation, rounding.gradients, rounding.size)

    def closure():
        optimizer.zero_grad()
        loss = problem.torch_loss(tensors)
        scale, tilt = (factor, tilts) if noise is None else noise()
        if scale != 1.0:
            loss = loss * scale
        if tilt is not None:
            loss = loss + sum((torch.from_numpy(n) * t).sum() for n, t in zip(tilt, tensors))
        loss.backward()
        return loss

    records = []
    for _ in range(case.steps if steps is None else steps):
        loss = float(optimizer.step(closure).detach())
        if scheduler is not None:
            scheduler.step()
        records.append(
            TorchStep(
                [t.detach().numpy().copy() for t in tensors],
                loss,
                _snapshot(optimizer.state[tensors[0]]),
                copy.deepcopy(optimizer.state_dict()),
            )
        )
    return records


@dataclasses.dataclass(frozen=True)
class Rounding:
    """How far the two sides' evaluations of the problem differ at the start (``size``, see
    :func:`parity.chaos.evaluation_rounding`) and torch's gradient there (scales the tilt)."""

    size: float
    gradients: list[np.ndarray]


def evaluation_rounding(problem: Problem, leaves: list[np.ndarray], tree: Callable) -> Rounding:
    """Evaluate the problem's loss and gradient once on each side at ``leaves``."""
    import torch

    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in leaves]
    loss = problem.torch_loss(tensors)
    loss.backward()
    theirs = float(loss.detach()), [t.grad.numpy().copy() for t in tensors]
    value, grads = jax.value_and_grad(problem.jax_loss)(tree(leaves))
    ours = float(value), [np.asarray(g) for g in jax.tree.leaves(grads)]
    return Rounding(chaos.evaluation_rounding(ours, theirs, str(leaves[0].dtype)), theirs[1])


def state_from_torch(snapshot: dict, init: fo.LBFGSState, step: int) -> fo.LBFGSState:
    """Torch's LBFGS state dict (as NumPy) as our state, history oldest first from row 0."""
    state = init._replace(
        step=jnp.asarray(step, jnp.int32),
        func_evals=jnp.asarray(snapshot["func_evals"], jnp.int32),
        n_iter=jnp.asarray(snapshot["n_iter"], jnp.int32),
    )
    if "d" not in snapshot:
        return state
    dtype, count = init.d.dtype, len(snapshot["old_dirs"])

    def rows(buffer, values):
        return buffer.at[:count].set(jnp.asarray(np.reshape(values, (count,) + buffer.shape[1:]), dtype))

    def array(key):
        return jnp.asarray(np.asarray(snapshot[key]), dtype)

    return state._replace(
        d=array("d"),
        t=array("t"),
        H_diag=array("H_diag"),
        prev_flat_grad=array("prev_flat_grad"),
        prev_loss=array("prev_loss"),
        old_dirs=rows(init.old_dirs, snapshot["old_dirs"]),
        old_stps=rows(init.old_stps, snapshot["old_stps"]),
        ro=rows(init.ro, snapshot["ro"]),
        num_old=jnp.asarray(count, jnp.int32),
        old_start=jnp.asarray(0, jnp.int32),
    )


def _compare(ours: tuple, theirs: TorchStep, loss_scale: float, dtype: str) -> tuple:
    params, state, loss = ours
    loss_diff = abs(float(loss) - theirs.loss)
    return (
        max(verify._relative_error(np.asarray(o), t) for o, t in zip(params, theirs.params)),
        max(verify._closeness(np.asarray(o), t) for o, t in zip(params, theirs.params)),
        loss_diff / loss_scale if loss_diff else 0.0,
        verify._closeness(np.asarray(loss), np.asarray(theirs.loss, dtype=dtype)),
        list(zip(theirs.counters, (int(state.func_evals), int(state.n_iter), int(state.num_old)))),
    )


def _trace(rows: list[tuple]) -> Trace:
    *errors, counters = (np.asarray(column) for column in zip(*rows))
    return Trace(*(e.astype(np.float64) for e in errors), counters.astype(np.int64))


def _floor(reference: list[TorchStep], runs: list[list[TorchStep]], dtype: str) -> chaos.Sensitivity:
    measure = chaos.measure(dtype)
    floors = [[max(measure(a, b) for a, b in zip(x.params, y.params)) for x, y in zip(run, reference)] for run in runs]
    moved = [[x.counters != y.counters for x, y in zip(run, reference)] for run in runs]
    return chaos.Sensitivity(np.max(np.asarray(floors), axis=0), np.any(np.asarray(moved), axis=0))


def trajectory_sensitivity(
    case: LBFGSCase, problem: Problem, leaves: list[np.ndarray], reference: list[TorchStep], rounding: Rounding
) -> chaos.Sensitivity:
    """Per step, how far a perturbed free-running torch moves from ``reference``."""
    runs = [run_torch(case, problem, leaves, perturbation=p, rounding=rounding) for p in chaos.PERTURBATIONS]
    return _floor(reference, runs, str(leaves[0].dtype))


def perturbed_single_steps(
    case: LBFGSCase, problem: Problem, leaves: list[np.ndarray], reference: list[TorchStep], rounding: Rounding
) -> list[list[TorchStep]]:
    """Per perturbation, per step k: one perturbed torch step from torch's own state after k − 1."""
    runs = []
    for perturbation in chaos.PERTURBATIONS:
        run = []
        for k in range(len(reference)):
            start, resume = (leaves, None) if k == 0 else (reference[k - 1].params, reference[k - 1].state_dict)
            run += run_torch(case, problem, start, perturbation=perturbation, rounding=rounding, resume=resume, steps=1)
        runs.append(run)
    return runs


def step_sensitivity(
    case: LBFGSCase, problem: Problem, leaves: list[np.ndarray], reference: list[TorchStep], rounding: Rounding
) -> chaos.Sensitivity:
    """Per step, how far one perturbed torch step from torch's own previous state moves."""
    return _floor(reference, perturbed_single_steps(case, problem, leaves, reference, rounding), str(leaves[0].dtype))


@dataclasses.dataclass
class _Sides:
    """One case set up on both sides in one dtype: torch's whole run, and our jitted step."""

    problem: Problem
    leaves: list[np.ndarray]
    tree: Callable[[list], Any]
    records: list[TorchStep]
    init: fo.LBFGSState
    step: Callable[[Any, fo.LBFGSState], tuple]

    def synced_start(self, k: int) -> tuple[Any, fo.LBFGSState]:
        """Where our step k starts in synced mode: torch's parameters and state after step k − 1."""
        if k == 0:
            return self.tree(self.leaves), self.init
        return self.tree(self.records[k - 1].params), state_from_torch(self.records[k - 1].snapshot, self.init, k)


def _prepare(case: LBFGSCase, dtype: str) -> _Sides:
    """Run torch and build our solver (call with ``jax_enable_x64`` set for ``dtype``)."""
    problem = case.problem()
    leaves, treedef = jax.tree.flatten(problem.params)
    leaves = [np.asarray(leaf, dtype=dtype) for leaf in leaves]

    def tree(arrays):
        return treedef.unflatten([jnp.asarray(a) for a in arrays])

    solver = fo.lbfgs(**{**case.kwargs, **case.ours_kwargs})
    step = jax.jit(functools.partial(solver.step, problem.jax_loss))
    return _Sides(problem, leaves, tree, run_torch(case, problem, leaves), solver.init(tree(leaves)), step)


def run_lbfgs_case(case: LBFGSCase, dtype: str) -> LBFGSReport:
    """Run ``case`` on both sides in ``dtype``; compare after every outer step, synced and free;
    measure torch's floors for a mode only where that mode misses the contract."""
    with jax.enable_x64(dtype == "float64"):
        sides = _prepare(case, dtype)
        records = sides.records
        loss_scale = max(abs(record.loss) for record in records)

        def ours(params, state):
            params, state, loss = sides.step(params, state)
            return [np.asarray(leaf) for leaf in jax.tree.leaves(params)], state, loss

        free, synced = [], []
        params, state = sides.tree(sides.leaves), sides.init
        for k, theirs in enumerate(records):
            result = ours(params, state)
            free.append(_compare(result, theirs, loss_scale, dtype))
            params, state = sides.tree(result[0]), result[1]
            synced.append(_compare(ours(*sides.synced_start(k)), theirs, loss_scale, dtype))
        report = LBFGSReport(case, dtype, _trace(synced), _trace(free))
        if report.passed:
            return report
        rounding = evaluation_rounding(sides.problem, sides.leaves, sides.tree)
        report.rounding = rounding.size
        if not report.verdict("synced").passed:
            report.synced_sensitivity = step_sensitivity(case, sides.problem, sides.leaves, records, rounding)
        if not report.verdict("free").passed:
            report.free_sensitivity = trajectory_sensitivity(case, sides.problem, sides.leaves, records, rounding)
    return report


STATE_ENTRIES = ("d", "t", "H_diag", "prev_flat_grad", "prev_loss", "old_dirs", "old_stps", "ro")
"""Torch's LBFGS state keys that carry information between steps (``al`` is scratch space)."""


def _torch_state_arrays(snapshot: dict) -> dict[str, np.ndarray]:
    arrays = {key: np.asarray(snapshot[key], dtype=np.float64) for key in STATE_ENTRIES if key in snapshot}
    for key in ("old_dirs", "old_stps"):  # a list of flat vectors, possibly empty: rows × n
        if key in arrays:
            arrays[key] = arrays[key].reshape(len(snapshot[key]), np.size(snapshot["d"]))
    return arrays


def _our_state_arrays(state: fo.LBFGSState) -> dict[str, np.ndarray]:
    arrays = dict(zip(("old_dirs", "old_stps", "ro"), state.history()))
    arrays.update({key: np.asarray(getattr(state, key)) for key in STATE_ENTRIES[:5]})
    return {key: np.asarray(value, dtype=np.float64) for key, value in arrays.items()}


def synced_state_verdicts(case: LBFGSCase, dtype: str = "float64") -> dict[str, chaos.Verdict]:
    """Per state entry, the judgement of our state after one step from torch's state against
    torch's: normwise relative error per step (a history entry as one array), within the
    contract, or where torch's own single step misses it under the perturbations of
    :mod:`parity.chaos`, within ``ALLOWANCE`` times that floor."""
    with jax.enable_x64(dtype == "float64"):
        sides = _prepare(case, dtype)
        records = sides.records
        errors: dict[str, list[float]] = {}
        for k, theirs in enumerate(records):
            our_arrays = _our_state_arrays(sides.step(*sides.synced_start(k))[1])
            for key, value in _torch_state_arrays(theirs.snapshot).items():
                errors.setdefault(key, []).append(verify._relative_error(our_arrays[key], value))
        sensitivities: dict[str, chaos.Sensitivity] = {}
        if any(max(values) > chaos.contract(dtype) for values in errors.values()):
            rounding = evaluation_rounding(sides.problem, sides.leaves, sides.tree)
            runs = perturbed_single_steps(case, sides.problem, sides.leaves, records, rounding)
            for key in errors:
                floors = [
                    max(_state_deviation(key, run[k], reference) for run in runs) for k, reference in enumerate(records)
                ]
                sensitivities[key] = chaos.Sensitivity(np.asarray(floors), np.zeros(len(records), bool))
    return {
        key: chaos.judge(np.asarray(values), np.ones(len(values), bool), dtype, sensitivities.get(key), False)
        for key, values in errors.items()
    }


def _state_deviation(key: str, moved: TorchStep, reference: TorchStep) -> float:
    """A perturbed torch step's state entry against the reference's (``inf`` if the history
    lengths part: a branch flipped)."""
    theirs, ours = _torch_state_arrays(reference.snapshot).get(key), _torch_state_arrays(moved.snapshot).get(key)
    if theirs is None:
        return 0.0
    if ours is None or ours.shape != theirs.shape:
        return np.inf
    return verify._relative_error(ours, theirs)
