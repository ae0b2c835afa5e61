"""End-to-end parity on the seed CNN: torch and JAX trained from the same weights on the same batches.

Five optimizers, as torch users configure them for this network. Unlike the catalog's cases,
the two sides' *gradients* differ here by rounding (torch's and XLA's convolutions sum in
different orders; :mod:`parity.forward_bounds` bounds by how much), and optimizers that normalise
by the gradient's own magnitude (Adagrad, RMSprop: ``g/(|g| + eps)`` on near-zero conv
gradients) turn that into parameter differences of a few 1e-12 relative: the optimizer
contract's 1e-12 applies to identical gradients. A run is therefore judged as a chaotic one
(:mod:`parity.training_floor`): within the contract it passes, otherwise its error per step
(parameters and loss) may reach 100 × torch's own deviation under rounding-level perturbations
of the same run (float32: also torch's float32 run against its float64 run), measured in the
same process on the same machine.
"""

from __future__ import annotations

import functools

import numpy as np
import optax
import torch

import functional_optreg as fo
from examples.seed_cnn import model_flax
from examples.seed_cnn.data import first_batches, load_digits
from examples.seed_cnn.side_by_side import loss_pair
from functional_optreg import verify
from parity import chaos, training_floor

BATCH_SIZE = 8
STEPS = 100

CONFIGURATIONS = {
    "adam+l2": (
        lambda: optax.chain(fo.l2_penalty(5e-4), fo.adam(lr=1e-3)),
        lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=5e-4),
    ),
    "sgd_momentum_dampening": (
        lambda: fo.sgd(lr=0.05, momentum=0.9, dampening=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1),
    ),
    "rmsprop": (lambda: fo.rmsprop(lr=1e-3), lambda ps: torch.optim.RMSprop(ps, lr=1e-3)),
    "adagrad": (lambda: fo.adagrad(lr=1e-2), lambda ps: torch.optim.Adagrad(ps, lr=1e-2)),
    "nadam": (lambda: fo.nadam(lr=2e-3), lambda ps: torch.optim.NAdam(ps, lr=2e-3)),
}


@functools.lru_cache(maxsize=1)
def _data_and_batches():
    data = load_digits()
    return data, first_batches(len(data.train_labels), BATCH_SIZE, seed=0, count=STEPS)


def _initial_params():
    """linen's initial weights (drawn in float32) as NumPy float64; the engine casts per dtype."""
    import jax

    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), model_flax.init_params(0))


def run(
    name: str, dtype: str, steps: int = STEPS, transform: optax.GradientTransformation | None = None
) -> verify.ParityReport:
    """Train configuration ``name`` on both sides for ``steps`` steps in ``dtype``; ``transform``
    replaces our side's optimizer (a mutation check)."""
    ours, theirs = CONFIGURATIONS[name]
    data, batches = _data_and_batches()
    return verify.compare(
        theirs,
        ours() if transform is None else transform,
        _initial_params(),
        loss_pair(data, batches),
        steps=steps,
        dtype=dtype,
        name=f"seed_cnn/{name}",
    )


def judge(name: str, report: verify.ParityReport) -> chaos.Verdict:
    """The verdict on :func:`run`'s ``report`` of configuration ``name`` (module docstring)."""
    _, theirs = CONFIGURATIONS[name]
    data, batches = _data_and_batches()
    return training_floor.judge(report, theirs, _initial_params(), loss_pair(data, batches))


def loss_relative_differences(report: verify.ParityReport) -> np.ndarray:
    """Per step, ``|loss_ours − loss_torch| / |loss_torch|``."""
    torch_loss, our_loss = report.losses[:, 0], report.losses[:, 1]
    return np.abs(our_loss - torch_loss) / np.abs(torch_loss)


def loss_curve_plot(reports: list[verify.ParityReport], path: str) -> None:
    """Torch-vs-JAX loss curves, one panel per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4 * len(reports), 3.5), squeeze=False)
    for ax, report in zip(axes[0], reports):
        steps = np.arange(1, report.steps + 1)
        ax.plot(steps, report.losses[:, 0], label="torch")
        ax.plot(steps, report.losses[:, 1], "--", label="functional_optreg")
        ax.set_title(f"{report.name} ({report.dtype})", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


__all__ = ["CONFIGURATIONS", "STEPS", "judge", "loss_curve_plot", "loss_relative_differences", "run"]
