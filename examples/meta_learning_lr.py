"""Learn SGD's learning rate by hypergradient descent through unrolled training steps.

The inner problem: a classifier on scikit-learn's bundled digits (8×8 images, no download),
logistic regression by default (``--hidden N`` for a one-hidden-layer MLP), trained from a fixed
initialisation by ``--unroll`` steps of ``fo.sgd(lr, momentum)`` on random minibatches. The outer
problem: the validation loss after those steps, as a function of ``log(lr)``. Each
meta-iteration draws fresh minibatches, takes the hypergradient with one ``jax.grad`` through
:func:`functional_optreg.unrolled_loss` (a ``lax.scan`` over the steps), and updates ``log(lr)``
with ``fo.adam`` — the learning rate is learned in log space so that it stays positive and moves
by factors.

Usage::

    python examples/meta_learning_lr.py                      # 150 meta-iterations, from lr = 0.01
    python examples/meta_learning_lr.py --hidden 32 --momentum 0.9 --plot meta.png

It prints the learned learning rate and, for the initial and the learned one, the validation and
test loss and accuracy after ``--unroll`` steps (averaged over fresh minibatch draws). Note the
short-horizon bias of unrolled hypergradients: the learned rate is the best one for *this* number
of steps, not for training to convergence.
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
    # Run as a script (python examples/meta_learning_lr.py): make the repository root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

import functional_optreg as fo


@dataclasses.dataclass(frozen=True)
class Digits:
    """Digits split three ways: the inner loop trains on ``train``, the hypergradient follows
    ``val``, and ``test`` is only looked at in the final report."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def load_digits(seed: int = 0, num_val: int = 400, num_test: int = 397) -> Digits:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    val, test, train = np.split(order, [num_val, num_val + num_test])
    return Digits((x[train], y[train]), (x[val], y[val]), (x[test], y[test]))


def init_params(hidden: int, seed: int) -> dict[str, Any]:
    """Zeros for logistic regression; a fixed random draw for the MLP (the same every meta-step)."""
    if hidden == 0:
        return {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(k1, (64, hidden)) / 8.0,
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden),
        "b2": jnp.zeros(10),
    }


def logits(params: dict[str, Any], x: jax.Array) -> jax.Array:
    if "w" in params:
        return x @ params["w"] + params["b"]
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def cross_entropy(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    z = logits(params, x)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0])


def accuracy(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits(params, x), axis=-1) == y)


def sample_batches(key: jax.Array, train: tuple[jax.Array, jax.Array], steps: int, batch_size: int):
    """``steps`` minibatches drawn without replacement within each, stacked on a leading axis."""
    keys = jax.random.split(key, steps)
    index = jax.vmap(lambda k: jax.random.choice(k, len(train[1]), (batch_size,), replace=False))(keys)
    return train[0][index], train[1][index]


@dataclasses.dataclass
class MetaResult:
    learning_rates: np.ndarray
    """The learning rate before each meta-iteration, and after the last one."""
    val_losses: np.ndarray
    """The validation loss after the unrolled steps, at each meta-iteration (before its update)."""
    report: dict[str, dict[str, float]]
    """For "initial" and "learned": mean val/test loss and accuracy after the unrolled steps."""
    seconds: float


def meta_learn(args: argparse.Namespace, progress: bool = True) -> MetaResult:
    start = time.perf_counter()
    data = load_digits(args.seed)
    train = tuple(map(jnp.asarray, data.train))
    val = tuple(map(jnp.asarray, data.val))
    test = tuple(map(jnp.asarray, data.test))
    params0 = init_params(args.hidden, args.seed)

    def make_tx(lr):
        return fo.sgd(lr=lr, momentum=args.momentum)

    def train_loss(params, batch):
        return cross_entropy(params, *batch)

    def val_loss(log_lr, batches):
        """The outer objective: the validation loss after the unrolled SGD steps."""
        return fo.unrolled_loss(
            jnp.exp(log_lr),
            params0,
            make_tx=make_tx,
            loss_fn=train_loss,
            val_loss_fn=lambda p: cross_entropy(p, *val),
            batches=batches,
        )

    meta_tx = fo.adam(lr=args.meta_lr)

    @jax.jit
    def meta_step(log_lr, meta_state, key):
        batches = sample_batches(key, train, args.unroll, args.batch_size)
        loss, grad = jax.value_and_grad(val_loss)(log_lr, batches)
        updates, meta_state = meta_tx.update(grad, meta_state, log_lr)
        return log_lr + updates, meta_state, loss

    @functools.partial(jax.jit, static_argnums=2)
    def evaluate(lr, key, draws):
        def one(k):
            batches = sample_batches(k, train, args.unroll, args.batch_size)
            final, _, _ = fo.unroll(make_tx(lr), params0, train_loss, batches)
            return jnp.stack(
                [cross_entropy(final, *val), accuracy(final, *val), cross_entropy(final, *test), accuracy(final, *test)]
            )

        return jnp.mean(jax.vmap(one)(jax.random.split(key, draws)), axis=0)

    from tqdm.auto import tqdm

    log_lr = jnp.log(jnp.float32(args.initial_lr))
    meta_state = meta_tx.init(log_lr)
    key = jax.random.key(args.seed)
    learning_rates, val_losses = [float(jnp.exp(log_lr))], []
    bar = tqdm(range(args.meta_steps), desc="meta-learning lr", unit="meta-step", disable=not progress)
    for _ in bar:
        key, sub = jax.random.split(key)
        log_lr, meta_state, loss = meta_step(log_lr, meta_state, sub)
        learning_rates.append(float(jnp.exp(log_lr)))
        val_losses.append(float(loss))
        bar.set_postfix(lr=f"{learning_rates[-1]:.4g}", val_loss=f"{val_losses[-1]:.4f}")
    bar.close()

    eval_key = jax.random.key(args.seed + 1)
    report = {}
    for name, lr in (("initial", args.initial_lr), ("learned", learning_rates[-1])):
        values = [float(v) for v in evaluate(jnp.float32(lr), eval_key, args.eval_draws)]
        report[name] = dict(zip(("val_loss", "val_acc", "test_loss", "test_acc"), values), lr=lr)
    return MetaResult(np.array(learning_rates), np.array(val_losses), report, time.perf_counter() - start)


def plot(path: str, result: MetaResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(7, 4))
    iterations = np.arange(len(result.val_losses))
    loss_ax.plot(iterations, result.val_losses, color="tab:blue")
    loss_ax.set_xlabel("meta-iteration")
    loss_ax.set_ylabel("validation loss after the unrolled steps", color="tab:blue")
    lr_ax = loss_ax.twinx()
    lr_ax.semilogy(iterations, result.learning_rates[:-1], color="tab:orange")
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    fig.suptitle("Hypergradient descent on SGD's learning rate (digits)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meta-steps", type=int, default=150, help="hypergradient steps on log(lr)")
    parser.add_argument("--meta-lr", type=float, default=0.05, help="Adam's step on log(lr)")
    parser.add_argument("--initial-lr", type=float, default=0.01)
    parser.add_argument("--unroll", type=int, default=20, help="inner SGD steps differentiated through")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--hidden", type=int, default=0, help="hidden units; 0 for logistic regression")
    parser.add_argument("--eval-draws", type=int, default=20, help="minibatch draws in the final report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save validation loss and lr vs meta-iteration as a PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = meta_learn(args, progress=not args.no_progress)
    print(f"learned lr: {result.learning_rates[-1]:.6g} (from {args.initial_lr:g}) in {result.seconds:.1f} s")
    print(f"after {args.unroll} SGD steps, mean of {args.eval_draws} minibatch draws:")
    for name, row in result.report.items():
        print(
            f"  {name:8s} lr={row['lr']:<10.4g} val loss {row['val_loss']:.4f}  val acc {row['val_acc']:.3f}  "
            f"test loss {row['test_loss']:.4f}  test acc {row['test_acc']:.3f}"
        )
    if args.plot:
        plot(args.plot, result)
        print(f"plot saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
