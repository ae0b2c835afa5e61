"""The divergence locator's report: per-stage checks, the first divergence and its known causes.

:func:`functional_optreg.port_check.compare_training` fills a :class:`PortReport`; this module
holds what the report says (the causes known for each stage, the evidence tests on the numbers)
and how it is shown (text, table, plot, a folder).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

STAGES = (
    "initial parameters",
    "initial model state",
    "activation",
    "output",
    "model state",
    "loss",
    "gradient",
    "update",
    "optimizer state",
    "parameters",
)
"""The stages of one training step, in the order they happen (and are checked)."""

CAUSES: dict[str, tuple[str, ...]] = {
    "initial parameters": (
        "the weight conversion disagrees with the mapping: a conv kernel goes OIHW -> HWIO "
        "(np.transpose(w, (2, 3, 1, 0))), not w.T or a reshape; a Linear weight (out, in) -> kernel (in, out)",
        "a parameter copied from the wrong layer, or left at flax's own initialization",
    ),
    "initial model state": ("BatchNorm buffers not copied: running_mean/running_var -> batch_stats mean/var",),
    "activation": (
        "padding: torch pads symmetrically (padding=1 -> [(1, 1), (1, 1)]); flax's 'SAME' puts the extra "
        "pixel at the end when the stride is above 1, so strided convs and pools see other windows",
        "a kernel in the wrong axis order: w.T swaps a conv kernel's spatial axes (HW) and keeps the shape",
        "pooling between this layer and the previous one: window, stride (flax's max_pool defaults to "
        "stride 1), padding, ceil_mode",
        "layout: NCHW vs NHWC, or a flatten in channel-last order feeding a Linear layer",
        "an activation function's variant (flax's gelu is the tanh approximation by default, torch's is exact)",
        "normalization constants: BatchNorm/LayerNorm eps (torch 1e-5, flax 1e-5/1e-6), train vs eval mode",
    ),
    "output": ("the layers after the last compared one: log_softmax vs logits, a missing final activation",),
    "model state": (
        "BatchNorm running variance: torch updates it with the unbiased batch variance (x n/(n-1)), flax's "
        "nn.BatchNorm with the biased one",
        "BatchNorm momentum: flax's momentum weighs the old statistics (flax momentum = 1 - torch momentum)",
        "running statistics updated in one framework's eval mode (use_running_average) but not the other's",
    ),
    "loss": (
        "reduction: sum vs mean (torch losses default to mean), or a mean over another axis",
        "log_softmax applied twice or not at all (nll_loss expects log-probabilities, cross_entropy logits)",
        "label smoothing, class weights or ignore_index set on one side only",
        "a regularization term added to one loss only (L2 in the loss vs the optimizer's weight_decay)",
    ),
    "gradient": (
        "a non-differentiable point: max-pool ties (torch gives the gradient to the first maximal element), "
        "relu'(0), abs'(0)",
        "a stop_gradient/detach on one side, or a parameter the loss does not use",
        "gradient accumulation: summed vs averaged micro-batches",
    ),
    "update": (
        "eps placement: torch adds eps after the square root (sqrt(v) + eps); optax's eps_root and RMSprop put it "
        "inside (sqrt(v + eps))",
        "clipping order: torch clips the raw gradients before optimizer.step() adds weight decay; clipping after "
        "an L2 penalty (or after the optimizer) clips another vector",
        "weight decay: coupled L2 (Adam's weight_decay) vs decoupled (AdamW multiplies it by lr)",
        "learning-rate schedule timing: scheduler.step() per epoch vs per step, or off by one step",
        "optimizer defaults: Adam eps 1e-8, RMSprop alpha 0.99 (optax decay 0.9), Adagrad eps 1e-10, "
        "SGD's first momentum buffer is the raw gradient",
    ),
    "optimizer state": (
        "a moment's convention: bias correction folded into the state, initial accumulator value, amsgrad's max",
        "the step counter advanced on a skipped step",
    ),
    "parameters": (
        "the update is applied differently (an in-place decay p * (1 - lr*wd) vs an added delta) - a float32 "
        "rounding effect if the update stage matched",
    ),
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One comparison: ``error`` (the stage's measure) against ``tolerance``; passes when ``error <= tolerance``."""

    step: int
    stage: str
    name: str
    error: float
    tolerance: float
    detail: str = ""

    @property
    def ratio(self) -> float:
        return self.error / self.tolerance if self.tolerance > 0 else (0.0 if self.error == 0 else float("inf"))

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance

    def __str__(self) -> str:
        where = f"{self.stage} of {self.name}" if self.name else self.stage
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"step {self.step}: {where}: error {self.error:.3e} > tolerance {self.tolerance:.1e} "
            f"({self.ratio:.3g}x){extra}"
        )


def update_evidence(ours: np.ndarray, theirs: np.ndarray, grad: np.ndarray | None) -> list[str]:
    """What the numbers of a diverging update say about its cause (empty when nothing stands out).

    Two signatures: one common factor between the updates (a learning-rate, schedule or clipping
    coefficient difference), and a relative difference that grows as the gradient shrinks (an
    epsilon in another place or of another size).
    """
    ours64, theirs64 = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    usable = (np.abs(theirs64) > 0) & np.isfinite(ours64) & np.isfinite(theirs64)
    if usable.sum() < 2:
        return []
    ratio = ours64[usable] / theirs64[usable]
    evidence = []
    spread = float(np.std(ratio) / max(abs(float(np.mean(ratio))), 1e-300))
    if spread < 1e-6:
        evidence.append(
            f"every element's update differs by the same factor {float(np.mean(ratio)):.9g}: a learning rate, "
            "a schedule step or a clipping coefficient, not the update's formula"
        )
    elif grad is not None:
        magnitude = np.abs(np.asarray(grad, np.float64).ravel()[usable])
        relative = np.abs(ratio - 1.0)
        if np.all(magnitude > 0) and np.ptp(magnitude) > 0:
            correlation = np.corrcoef(np.argsort(np.argsort(-magnitude)), np.argsort(np.argsort(relative)))[0, 1]
            if correlation > 0.9:
                evidence.append(
                    f"the relative difference grows as |gradient| shrinks (rank correlation {correlation:.3f}): an "
                    "epsilon placed or sized differently (inside vs outside the square root)"
                )
    return evidence


@dataclasses.dataclass
class PortReport:
    """What :func:`functional_optreg.port_check.compare_training` found.

    Attributes:
      name, dtype, steps: the run; ``resync``: whether each step started from torch's weights.
      checks: every comparison, in the order made (step by step, stage by stage).
      first: the first check out of tolerance, or ``None`` when the port passes.
      causes: the known causes for ``first``'s stage (most specific first).
      evidence: what the numbers at ``first`` say about which cause it is.
      losses: per step, ``(torch, ours)``.
      notes: stages that could not be compared, and why.
    """

    name: str
    dtype: str
    steps: int
    resync: bool
    checks: list[Check]
    first: Check | None
    causes: list[str]
    evidence: list[str]
    losses: np.ndarray
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.first is None

    def stage_errors(self) -> dict[str, np.ndarray]:
        """Per stage, the largest ``error / tolerance`` at each step (``nan`` where not checked)."""
        table: dict[str, np.ndarray] = {}
        for check in self.checks:
            row = table.setdefault(check.stage, np.full(self.steps + 1, np.nan))
            row[check.step] = np.fmax(row[check.step], check.ratio)
        return {stage: table[stage] for stage in STAGES if stage in table}

    def summary(self) -> str:
        head = f"{self.name} [{self.dtype}, {self.steps} steps, {'resync' if self.resync else 'free-running'}]"
        if self.first is None:
            worst = max((check.ratio for check in self.checks), default=0.0)
            return f"{head}: PASS ({len(self.checks)} checks, worst error/tolerance {worst:.3g})"
        return f"{head}: FAIL - first divergence at {self.first}"

    def table(self) -> str:
        """Steps as rows, stages as columns: the largest error/tolerance (``*`` marks > 1)."""
        errors = self.stage_errors()
        stages = list(errors)
        width = max([len(stage) for stage in stages] + [9])
        lines = ["step  " + "  ".join(stage.rjust(width) for stage in stages)]
        for step in range(self.steps + 1):
            cells = []
            for stage in stages:
                value = errors[stage][step]
                cell = "" if np.isnan(value) else f"{value:.2e}{'*' if value > 1 else ' '}"
                cells.append(cell.rjust(width))
            if any(cell.strip() for cell in cells):
                lines.append(f"{step:4d}  " + "  ".join(cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.first is not None:
            lines.append(f"likely causes ({self.first.stage}):")
            lines += [f"  - {cause}" for cause in self.causes]
            if self.evidence:
                lines.append("evidence:")
                lines += [f"  - {item}" for item in self.evidence]
        lines += [f"note: {note}" for note in self.notes]
        lines.append("error / tolerance per stage (largest over the stage's items; * = out of tolerance):")
        lines.append(self.table())
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> None:
        """Save per-stage error/tolerance over steps and the two loss curves as a PNG (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        steps = np.arange(self.steps + 1)
        for stage, values in self.stage_errors().items():
            shown = ~np.isnan(values)
            left.semilogy(steps[shown], np.maximum(values[shown], 1e-6), "o-", label=stage, markersize=3)
        left.axhline(1.0, color="red", linestyle="--", label="tolerance")
        left.set_xlabel("step")
        left.set_ylabel("error / tolerance (floored at 1e-6)")
        left.set_title(f"{self.name} ({self.dtype})")
        left.legend(fontsize=7)
        losses = np.asarray(self.losses).reshape(-1, 2)
        right.plot(np.arange(1, len(losses) + 1), losses[:, 0], label="torch")
        right.plot(np.arange(1, len(losses) + 1), losses[:, 1], "--", label="jax")
        right.set_xlabel("step")
        right.set_title("loss")
        right.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def write(self, folder: str | os.PathLike) -> dict[str, str]:
        """Write ``report.txt``, ``checks.csv`` and ``stages.png`` into ``folder``; returns their paths."""
        os.makedirs(folder, exist_ok=True)
        paths = {name: os.path.join(folder, name) for name in ("report.txt", "checks.csv", "stages.png")}
        with open(paths["report.txt"], "w") as handle:
            handle.write(str(self) + "\n")
        with open(paths["checks.csv"], "w") as handle:
            handle.write("step,stage,name,error,tolerance,passed\n")
            for check in self.checks:
                handle.write(f"{check.step},{check.stage},{check.name},{check.error:.6e},{check.tolerance:.3e},")
                handle.write(f"{check.passed}\n")
        self.plot(paths["stages.png"])
        return paths


def causes_for(stage: str, priorities: Sequence[str] = ()) -> list[str]:
    """The known causes for ``stage``; those starting with one of ``priorities`` first, in that order."""
    causes = list(CAUSES.get(stage, ()))

    def rank(cause: str) -> int:
        return next((index for index, word in enumerate(priorities) if cause.startswith(word)), len(priorities))

    return sorted(causes, key=rank)


def layer_kind(module: Any, name: str) -> str | None:
    """The class name of the torch submodule ``name`` (``None`` if there is none)."""
    try:
        return type(module.get_submodule(name)).__name__
    except AttributeError:
        return None
