r"""How far two correct float64 evaluations of the seed CNN may differ: bounds from its operands' scale.

torch and XLA compute the same network with different summation orders (blocked GEMMs, im2col,
Eigen contractions, fused multiply-adds), so their outputs agree to rounding, not bit for bit.
The classical bound for an inner product of ``n`` terms computed in any order, fused or not, is
:math:`|\widehat{w \cdot x} - w \cdot x| \leq \gamma_n\, |w| \cdot |x|` with
:math:`\gamma_n = nu/(1 - nu)` (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1).
Through a network it composes: run the network on absolute values, :math:`A_l = |W_l| A_{l-1} + |b_l|`
(ReLU is the identity on non-negative values; max-pooling is kept), and every activation is
within :math:`c_l A_l` of its exact value, with :math:`c_l = c_{l-1} + \gamma_{n_l + 1}`
(:math:`n_l` the fan-in; ReLU and max-pooling are 1-Lipschitz, so they carry errors without
growing them, and :math:`|W_l| c_{l-1} A_{l-1} \leq c_{l-1} A_l`).

Backwards, the cotangent of the logits is :math:`(p - e_y)/B`, bounded by
:math:`\bar A_L = (p + e_y)/B`; through each layer it meets :math:`|W_l|^T` (an inner product over
the layer's fan-out) and the same fixed ReLU masks and pooling routes on both sides, so
:math:`\bar A_{l-1} = |W_l|^T \bar A_l` bounds it (the pooling here sends the cotangent to every
element of the window, which bounds any routing) and its error grows by :math:`\gamma` of the
fan-out per layer. A weight gradient sums :math:`P` products of a cotangent and an input
(:math:`P` = batch × positions), so its error is within
:math:`(\epsilon_l + c_{l-1} + u + \gamma_P)\, G_l` with :math:`G_l = \sum \bar A_l A_{l-1}^T`, which
is the vector-Jacobian product of the absolute network with cotangent :math:`\bar A_L`.

These are first-order bounds (products of two rounding errors are dropped) for one side against
the exact value; two sides differ by at most twice as much. They assume the ReLU masks and the
pooling choices are not decided by rounding (no pre-activation, no pooling tie within its own
error bound): a flipped one changes one unit by its full size, far outside these bounds, and
shows as a failure to investigate, not as rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

U64 = float(np.finfo(np.float64).eps) / 2
"""float64 unit roundoff."""

LAYERS = ("conv1", "conv2", "fc1", "fc2")
FAN_IN = {"conv1": 9, "conv2": 9 * 32, "fc1": 64 * 7 * 7, "fc2": 128}
"""Terms in each output's inner product (the bias adds one more)."""
FAN_OUT = {"conv2": 9 * 64, "fc1": 128, "fc2": 10}
"""Terms in each input-cotangent's inner product (conv1's input needs none)."""
POSITIONS = {"conv1": 28 * 28, "conv2": 14 * 14, "fc1": 1, "fc2": 1}
"""Per image, the products a weight gradient sums."""
EXP_LOG_ULPS = 4
"""Accuracy, in ulps, assumed of a vectorised exp or log (SLEEF's and XLA's are within 1-3)."""


def gamma(n: int) -> float:
    """:math:`\\gamma_n = nu/(1 - nu)`, the relative error bound of an ``n``-term inner product."""
    return n * U64 / (1 - n * U64)


@jax.custom_vjp
def _pool_spreading_back(x: jax.Array) -> jax.Array:
    """2×2 max-pooling (NHWC) whose backward pass sends the cotangent to all four elements."""
    n, h, w, c = x.shape
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _pool_forward(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    return _pool_spreading_back(x), x.shape


def _pool_backward(shape: tuple[int, ...], cotangent: jax.Array) -> tuple[jax.Array]:
    return (jnp.repeat(jnp.repeat(cotangent, 2, axis=1), 2, axis=2).reshape(shape),)


_pool_spreading_back.defvjp(_pool_forward, _pool_backward)


def _absolute_logits(params: Any, images: jax.Array) -> jax.Array:
    """The seed CNN (:mod:`examples.seed_cnn.model_flax`) on non-negative weights and images, ReLU
    dropped (the identity there), max-pooling with :func:`_pool_spreading_back`."""
    x = images
    for layer in ("conv1", "conv2"):
        dims = ("NHWC", "HWIO", "NHWC")
        kernel = params[layer]["kernel"]
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dims) + params[layer]["bias"]
        x = _pool_spreading_back(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = x @ params["fc1"]["kernel"] + params["fc1"]["bias"]
    return x @ params["fc2"]["kernel"] + params["fc2"]["bias"]


@dataclasses.dataclass(frozen=True)
class SeedCNNBounds:
    """Per element, how far two correct float64 evaluations may differ.

    Attributes:
      log_probs: ``(N, 10)``, for the log-probabilities.
      loss: for the mean NLL loss.
      grads: the params tree of bounds for the loss's gradient.
    """

    log_probs: np.ndarray
    loss: float
    grads: Any


def seed_cnn_bounds(params: Any, images: np.ndarray, labels: np.ndarray, log_probs: np.ndarray) -> SeedCNNBounds:
    """The bounds of this module's docstring for the seed CNN's log-probabilities, mean NLL loss and
    its gradient, at ``params`` (flax layout) on NHWC ``images``; ``log_probs`` are one side's
    values (first order: either side's serve). Call inside ``jax.enable_x64(True)``."""
    absolute = jax.tree.map(lambda leaf: jnp.abs(jnp.asarray(leaf, jnp.float64)), params)
    x = jnp.abs(jnp.asarray(images, jnp.float64))
    batch = len(labels)
    picked = np.eye(log_probs.shape[1])[np.asarray(labels)]
    cotangent = (np.exp(log_probs) + picked) / batch
    logits, vjp = jax.vjp(lambda p: _absolute_logits(p, x), absolute)
    (weighted,) = vjp(jnp.asarray(cotangent))
    logits = np.asarray(logits)

    forward, before = {}, 0.0
    for layer in LAYERS:
        forward[layer] = before  # the error coefficient of the layer's input
        before += gamma(FAN_IN[layer] + 1)
    largest = logits.max(axis=1, keepdims=True)
    # log_softmax: the logits' own errors (one element's and, through the log-sum-exp, the largest),
    # and its own roundings: z − max, exp, a 10-term sum, log, a difference.
    own = 8 * U64 * (largest + EXP_LOG_ULPS + 1)
    one_side = before * (logits + largest) + own
    label_terms = np.sum(log_probs * picked, axis=1)
    loss_one_side = float(np.mean(np.sum(one_side * picked, axis=1)) + gamma(batch + 1) * np.mean(np.abs(label_terms)))

    # The logits' cotangent p − e_y: p = exp(log_probs) carries their error (×1.01 covers
    # exp(e) − 1 for e ≤ 0.02), the exp and the subtraction round.
    cotangent_error = 1.01 * float(one_side.max()) + (EXP_LOG_ULPS + 2) * U64
    grads, behind = {}, cotangent_error
    for layer in reversed(LAYERS):
        summed = gamma(batch * POSITIONS[layer])
        grads[layer] = {
            "kernel": 2 * (behind + forward[layer] + U64 + summed) * np.asarray(weighted[layer]["kernel"]),
            "bias": 2 * (behind + summed) * np.asarray(weighted[layer]["bias"]),
        }
        behind += gamma(FAN_OUT.get(layer, 0))
    return SeedCNNBounds(2 * one_side, 2 * loss_one_side, grads)
