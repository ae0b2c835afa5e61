"""torch.optim.LBFGS parity cases: problems written once per framework, and configurations.

Each :class:`Problem` writes one loss twice (torch tensors for the closure, ``jnp`` for
``fo.lbfgs().step``). :mod:`parity.lbfgs_harness` runs the cases (``LBFGS.step(closure)``
evaluates the loss many times, so they stay outside the generic catalog: ``CASES`` is empty)
and judges them with :mod:`parity.chaos`; ``parity/test_lbfgs.py`` is the pytest entry point.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parity.case import DTYPES, default_params

CASES: list = []


@dataclasses.dataclass(frozen=True)
class Problem:
    """Initial parameters and the same loss for both frameworks.

    ``torch_loss(tensors)`` takes the parameter tensors in ``jax.tree.leaves(params)`` order;
    ``jax_loss(params)`` takes the pytree. Constants are cast to the parameters' dtype.
    """

    params: Any
    torch_loss: Callable[[list], Any]
    jax_loss: Callable[[Any], jax.Array]


def separable(seed: int = 0) -> Problem:
    r"""``Σ h·(sqrt(1 + u²) − 1) + 0.05·u⁴`` with ``u = θ − θ*``, over the default parameter tree."""
    params = default_params(seed)
    rng = np.random.default_rng(seed + 1)
    leaves = jax.tree.leaves(params)
    scales = [rng.uniform(0.5, 2.0, leaf.shape) for leaf in leaves]
    targets = [rng.normal(size=leaf.shape) for leaf in leaves]

    def term(theta, h, star, sqrt):
        u = theta - star
        u2 = u * u
        return h * (sqrt(1 + u2) - 1) + 0.05 * (u2 * u2)

    def torch_loss(tensors):
        import torch

        total = 0.0
        for theta, h, star in zip(tensors, scales, targets):
            as_t = functools.partial(torch.as_tensor, dtype=theta.dtype)
            total = total + torch.sum(term(theta, as_t(h), as_t(star), torch.sqrt))
        return total

    def jax_loss(tree):
        total = 0.0
        for theta, h, star in zip(jax.tree.leaves(tree), scales, targets):
            as_j = functools.partial(jnp.asarray, dtype=theta.dtype)
            total = total + jnp.sum(term(theta, as_j(h), as_j(star), jnp.sqrt))
        return total

    return Problem(params, torch_loss, jax_loss)


def rosenbrock(start: tuple[float, ...] = (-1.2, 1.0)) -> Problem:
    """The chained Rosenbrock function ``Σ 100(x_{i+1} − x_i²)² + (1 − x_i)²``."""
    start = np.asarray(start, dtype=np.float64)

    def value(x):
        head, tail = x[:-1], x[1:]
        bend = tail - head * head
        return 100 * (bend * bend) + (1 - head) * (1 - head)

    return Problem(
        {"x": start},
        lambda tensors: value(tensors[0]).sum(),
        lambda tree: jnp.sum(value(tree["x"])),
    )


@functools.cache
def _digits(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (no download): inputs in [0, 1] and one-hot labels."""
    from sklearn.datasets import load_digits

    inputs, labels = load_digits(return_X_y=True)
    return inputs[:samples] / 16.0, np.eye(10)[labels[:samples]]


def _cross_entropy(logits, onehot, row_max, log, exp, total):
    """Mean softmax cross-entropy; ``row_max`` is a constant shift (no gradient flows through it)."""
    shifted = logits - row_max
    log_normaliser = log(total(exp(shifted), 1))
    return total(log_normaliser - total(onehot * shifted, 1), 0) / logits.shape[0]


def _classifier(params: Any, forward: Callable, samples: int, weight_decay: float) -> Problem:
    """A softmax classifier on the digits with an L2 term on every leaf named ``kernel``."""
    inputs, onehot = _digits(samples)
    decayed = ["kernel" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

    def torch_loss(tensors):
        import torch

        x, y = (torch.as_tensor(a, dtype=tensors[0].dtype) for a in (inputs, onehot))
        logits = forward(x, tensors, torch.tanh)
        row_max = logits.detach().max(dim=1, keepdim=True).values
        data = _cross_entropy(logits, y, row_max, torch.log, torch.exp, lambda a, axis: a.sum(axis))
        penalty = sum(torch.sum(t * t) for t, flag in zip(tensors, decayed) if flag)
        return data + 0.5 * weight_decay * penalty

    def jax_loss(tree):
        leaves = jax.tree.leaves(tree)
        x, y = (jnp.asarray(a, dtype=leaves[0].dtype) for a in (inputs, onehot))
        logits = forward(x, leaves, jnp.tanh)
        row_max = jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
        data = _cross_entropy(logits, y, row_max, jnp.log, jnp.exp, lambda a, axis: jnp.sum(a, axis))
        penalty = sum(jnp.sum(t * t) for t, flag in zip(leaves, decayed) if flag)
        return data + 0.5 * weight_decay * penalty

    return Problem(params, torch_loss, jax_loss)


def digits_logistic(samples: int = 1797, weight_decay: float = 1e-3) -> Problem:
    """Multinomial logistic regression on all 1797 digits; the bias starts at zero."""
    rng = np.random.default_rng(3)
    params = {"bias": np.zeros(10), "kernel": 0.01 * rng.normal(size=(64, 10))}
    return _classifier(params, lambda x, p, tanh: x @ p[1] + p[0], samples, weight_decay)


def digits_mlp(samples: int = 300, hidden: int = 16, weight_decay: float = 1e-4) -> Problem:
    """A 64-``hidden``-10 tanh MLP on the first ``samples`` digits; biases start at zero."""
    rng = np.random.default_rng(4)
    params = {
        "hidden": {"bias": np.zeros(hidden), "kernel": rng.normal(size=(64, hidden)) / 8.0},
        "out": {"bias": np.zeros(10), "kernel": rng.normal(size=(hidden, 10)) / np.sqrt(hidden)},
    }

    def forward(x, p, tanh):
        return tanh(x @ p[1] + p[0]) @ p[3] + p[2]

    return _classifier(params, forward, samples, weight_decay)


@dataclasses.dataclass(frozen=True)
class LBFGSCase:
    """One ``torch.optim.LBFGS`` configuration on one problem, run for ``steps`` outer steps.

    There is no per-case bound: :mod:`parity.lbfgs_harness` judges every case by the contract, or
    where torch misses it against itself, by torch's own floor measured in the same run
    (:mod:`parity.chaos`).
    """

    name: str
    problem: Callable[[], Problem]
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 8
    ours_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    torch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    torch_scheduler: Callable[[Any], Any] | None = None
    dtypes: tuple[str, ...] = DTYPES


def _exponential_lr(base_lr: float, gamma: float):
    def torch_scheduler(optimizer):
        import torch

        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

    return (lambda count: base_lr * jnp.power(gamma, count)), torch_scheduler


_schedule, _torch_scheduler = _exponential_lr(0.5, 0.9)

LBFGS_CASES = [
    LBFGSCase("lbfgs/separable", separable, dict(lr=0.5, history_size=5), steps=6),
    LBFGSCase("lbfgs/separable+strong_wolfe", separable, dict(line_search_fn="strong_wolfe", history_size=4), steps=6),
    LBFGSCase(
        "lbfgs/separable+lr_schedule",
        separable,
        dict(max_iter=10, history_size=3),
        steps=8,
        ours_kwargs=dict(lr=_schedule),
        torch_kwargs=dict(lr=0.5),
        torch_scheduler=_torch_scheduler,
    ),
    LBFGSCase(
        "lbfgs/rosenbrock", functools.partial(rosenbrock, (-1.2, 1.0) * 3), dict(lr=1e-3, history_size=3), steps=6
    ),
    LBFGSCase(
        "lbfgs/rosenbrock+strong_wolfe",
        rosenbrock,
        dict(line_search_fn="strong_wolfe"),
        steps=4,
    ),
    LBFGSCase(
        "lbfgs/rosenbrock+strong_wolfe+max_eval",
        functools.partial(rosenbrock, (-1.2, 1.0) * 2),
        dict(line_search_fn="strong_wolfe", max_eval=7, history_size=4),
        steps=12,
    ),
    LBFGSCase(
        "lbfgs/digits_logistic",
        digits_logistic,
        dict(lr=0.5, max_iter=10, history_size=4),
        steps=6,
    ),
    LBFGSCase(
        "lbfgs/digits_logistic+strong_wolfe",
        digits_logistic,
        dict(line_search_fn="strong_wolfe", max_iter=10, history_size=5),
        steps=6,
    ),
    LBFGSCase(
        "lbfgs/digits_logistic_l2+strong_wolfe",
        functools.partial(digits_logistic, weight_decay=0.1),
        dict(line_search_fn="strong_wolfe", max_iter=10, history_size=5),
        steps=6,
    ),
    LBFGSCase(
        "lbfgs/digits_mlp+strong_wolfe",
        digits_mlp,
        dict(line_search_fn="strong_wolfe", max_iter=15, history_size=7),
        steps=5,
    ),
    LBFGSCase(
        "lbfgs/digits_mlp+tolerances",
        digits_mlp,
        dict(lr=0.3, max_iter=20, history_size=10, tolerance_grad=1e-3, tolerance_change=1e-4),
        steps=5,
    ),
]
