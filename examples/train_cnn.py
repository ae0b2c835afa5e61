"""Train the seed CNN with functional-optreg's Adam + L2, and check the first steps against torch.

The model (flax) is trained under ``jax.jit`` with ``optax.chain(fo.l2_penalty(wd), fo.adam(lr))``,
which is ``torch.optim.Adam(lr=lr, weight_decay=wd)``. Before training, the same network in
``torch.nn`` starts from the same weights (converted to torch layouts) and both sides take
``--parity-steps`` steps on the same batches (the first batches of the training run); the
per-step loss difference and a verdict are printed (``--float64`` runs this part in float64).

Default data: scikit-learn's bundled digits (no download), upsampled to 28×28; ``--mnist DIR``
reads MNIST's idx files instead.

Usage::

    python examples/train_cnn.py                  # digits, 5 epochs, 20 parity steps (float32)
    python examples/train_cnn.py --float64        # parity in float64 (relative loss diff <= 1e-9)
    python examples/train_cnn.py --mnist ~/mnist --epochs 2 --plot curves.png

Exit status 1 if the parity verdict fails.

Run as a script, it first sets XLA:CPU to run the convolutions on its Eigen kernels rather than
YNNPACK (faster for this network; :mod:`examples.seed_cnn.xla_cpu`), unless ``XLA_FLAGS`` already
chooses, and on glibc makes each step reuse the memory the previous one freed instead of mapping
fresh pages (:mod:`examples.seed_cnn.allocator`: glibc's malloc keeps freed memory, JAX dispatches
CPU computations synchronously), unless the environment already chooses.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python examples/train_cnn.py): make the repository root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    # Before the imports below: importing flax starts JAX's CPU backend, which reads XLA_FLAGS and
    # the dispatch setting once.
    from examples.seed_cnn import allocator, xla_cpu

    xla_cpu.prefer_eigen_convolutions()
    allocator.keep_freed_memory()

import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_optreg as fo
from examples.seed_cnn import allocator, model_flax
from examples.seed_cnn import data as data_lib


@functools.cache
def make_optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """Adam with coupled L2, as ``torch.optim.Adam(lr=lr, weight_decay=weight_decay)``.

    Cached, so that the training run and the parity run share one compiled step.
    """
    return optax.chain(fo.l2_penalty(weight_decay), fo.adam(lr=lr))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: final params, per-step training losses, per-epoch test accuracy."""

    params: Any
    losses: np.ndarray
    epoch_accuracies: list[float]
    seconds: float

    @property
    def test_accuracy(self) -> float:
        return self.epoch_accuracies[-1]


def train(
    data: data_lib.Dataset,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the seed CNN from ``model_flax.init_params(seed)`` in float32.

    Batches follow :func:`data_lib.iterate_batches` with ``seed`` (the parity run uses the same
    first batches). ``max_steps`` stops early (the last epoch is then partial); test accuracy is
    measured after each epoch and at the end.
    """
    from tqdm.auto import tqdm

    params = model_flax.init_params(seed)
    tx = make_optimizer(lr, weight_decay)
    state = tx.init(params)

    images, labels = jnp.asarray(data.train_images), jnp.asarray(data.train_labels)
    steps_per_epoch = len(data.train_labels) // batch_size
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    losses, accuracies = [], []
    start = time.perf_counter()
    bar = tqdm(total=total, desc="training", unit="step", disable=not progress)
    batches = data_lib.iterate_batches(len(data.train_labels), batch_size, seed, epochs)
    current_epoch = 0
    for index, (epoch, indices) in enumerate(batches):
        if index == total:
            break
        if epoch != current_epoch:
            accuracies.append(model_flax.accuracy(params, data.test_images, data.test_labels))
            current_epoch = epoch
        loss, params, state = model_flax.train_step(tx, params, state, images[indices], labels[indices])
        losses.append(loss)
        if index % 10 == 0 or index == total - 1:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.4f}", refresh=False)
        bar.update()
    bar.close()
    accuracies.append(model_flax.accuracy(params, data.test_images, data.test_labels))
    return TrainResult(params, np.asarray(jax.device_get(losses)), accuracies, time.perf_counter() - start)


def run_parity(args: argparse.Namespace, data: data_lib.Dataset):
    """The first ``--parity-steps`` steps, flax + fo vs torch.nn + torch.optim.Adam."""
    import torch

    from examples.seed_cnn import side_by_side

    batches = data_lib.first_batches(len(data.train_labels), args.batch_size, args.seed, args.parity_steps)
    return side_by_side.run_loss_parity(
        model_flax.init_params(args.seed),
        data,
        batches,
        make_optimizer(args.lr, args.weight_decay),
        lambda ps: torch.optim.Adam(ps, lr=args.lr, weight_decay=args.weight_decay),
        dtype="float64" if args.float64 else "float32",
    )


def plot_curves(path: str, result: TrainResult, steps_per_epoch: int) -> None:
    """Save the training loss per step and the test accuracy per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, len(result.losses) + 1)
    loss_ax.plot(steps, result.losses, alpha=0.4, label="batch loss")
    window = min(20, len(result.losses))
    if window > 1:
        smooth = np.convolve(result.losses, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("NLL loss")
    loss_ax.set_yscale("log")
    loss_ax.legend()
    epochs_done = np.minimum(np.arange(1, len(result.epoch_accuracies) + 1) * steps_per_epoch, len(result.losses))
    acc_ax.plot(epochs_done, result.epoch_accuracies, marker="o")
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("test accuracy")
    fig.suptitle("seed CNN: flax + functional_optreg Adam (L2 5e-4)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--mnist", metavar="DIR", help="read MNIST idx files (plain or .gz) from DIR")
    parser.add_argument("--parity-steps", type=int, default=20, help="steps compared with torch")
    parser.add_argument("--float64", action="store_true", help="run the torch comparison in float64")
    parser.add_argument("--no-parity", action="store_true", help="skip the torch comparison")
    parser.add_argument("--plot", metavar="PATH", help="save training curves as a PNG")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.parity_steps < 0:
        parser.error("--epochs and --batch-size must be positive, --parity-steps non-negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = data_lib.load_mnist(args.mnist) if args.mnist else data_lib.load_digits()
    print(data)
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(unset)')}; host memory: {allocator.describe()}")

    parity_report = None
    if not args.no_parity and args.parity_steps > 0:
        print(f"\nflax + functional_optreg vs torch, first {args.parity_steps} steps:")
        parity_report = run_parity(args, data)
        print(parity_report)

    print(f"\ntraining: {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}, L2 {args.weight_decay:g}")
    result = train(
        data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    per_epoch = ", ".join(f"{accuracy:.3f}" for accuracy in result.epoch_accuracies)
    print(f"test accuracy per epoch: {per_epoch}")
    print(f"final test accuracy: {result.test_accuracy:.4f} ({len(result.losses)} steps, {result.seconds:.1f} s)")
    if args.plot:
        plot_curves(args.plot, result, len(data.train_labels) // args.batch_size)
        print(f"training curves saved to {args.plot}")
    if parity_report is not None:
        print(parity_report.summary())
        return 0 if parity_report.passed else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
