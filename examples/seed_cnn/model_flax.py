"""The seed CNN in flax (linen), with explicit parameters.

conv 1→32 (3×3, SAME) → ReLU → 2×2 max-pool → conv 32→64 → ReLU → 2×2 max-pool (28→14→7)
→ flatten → dense 3136→128 → ReLU → dense 128→10 → log-softmax; the loss is the mean NLL.

The pooling is :func:`examples.seed_cnn.pooling.max_pool_2x2`, not ``nn.max_pool``: the same
values, the gradient routed as torch's ``max_pool2d`` routes it, and about 3× less time for the
training step on CPU (``benchmarks/RESULTS.md``). conv1 (one input channel) runs its forward pass as
nine multiply-adds in one loop (:mod:`examples.seed_cnn.convolution`), which XLA:CPU runs several
times faster than its convolution.

Parameters are the plain dict ``{"conv1": {"kernel", "bias"}, "conv2": ..., "fc1": ..., "fc2": ...}``
(linen's ``"params"`` collection, unwrapped); conv kernels are HWIO and dense kernels (in, out).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.seed_cnn.convolution import conv_general_dilated
from examples.seed_cnn.data import IMAGE_SIZE, NUM_CLASSES
from examples.seed_cnn.pooling import max_pool_2x2

Params = dict[str, dict[str, jax.Array]]


class SeedCNN(nn.Module):
    """The seed CNN; ``__call__`` maps NHWC images ``(N, 28, 28, 1)`` to log-probabilities ``(N, 10)``."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images
        for name, features in (("conv1", 32), ("conv2", 64)):
            x = nn.Conv(features, (3, 3), padding="SAME", conv_general_dilated=conv_general_dilated, name=name)(x)
            x = max_pool_2x2(nn.relu(x))
        # Flatten channel-major, as torch's NCHW flatten does, so that fc1's kernel rows mean the
        # same on both sides and the weight conversion is a plain transpose.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, name="fc1")(x))
        x = nn.Dense(NUM_CLASSES, name="fc2")(x)
        return nn.log_softmax(x)


def init_params(seed: int = 0, dtype: Any = jnp.float32) -> Params:
    """linen's default initialisation (LeCun-normal kernels, zero biases) from ``seed``, cast to ``dtype``."""
    variables = _jit_init(jax.random.key(seed), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), jnp.float32))
    return cast_params(variables["params"], dtype)


# One compiled call instead of linen's op-by-op initialisation (seconds of dispatch on CPU).
_jit_init = jax.jit(SeedCNN().init)


def cast_params(params: Any, dtype: Any) -> Params:
    """``params`` with every leaf as a ``dtype`` JAX array (nested dicts, as linen gives them)."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), dict(params))


def log_probs(params: Params, images: jax.Array) -> jax.Array:
    """Log-probabilities ``(N, 10)`` of NHWC ``images``."""
    return SeedCNN().apply({"params": params}, images)


def nll_loss(params: Params, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of ``labels``, as ``torch.nn.functional.nll_loss``."""
    picked = jnp.take_along_axis(log_probs(params, images), labels[:, None], axis=1)
    return -jnp.mean(picked)


@functools.partial(jax.jit, static_argnums=0)
def train_step(
    tx: optax.GradientTransformation, params: Params, state: Any, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, Params, Any]:
    """One step of ``tx`` on the batch's NLL loss: ``(loss before the step, new params, new state)``.

    ``tx`` is a static argument: pass the same transform object again (and the same shapes and
    dtypes) to reuse the compiled step.
    """
    loss, grads = jax.value_and_grad(nll_loss)(params, images, labels)
    updates, state = tx.update(grads, state, params)
    return loss, optax.apply_updates(params, updates), state


_jit_log_probs = jax.jit(log_probs)


def accuracy(params: Params, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Fraction of correctly classified images, evaluated in fixed-size chunks (one compilation)."""
    chunk = min(batch_size, len(labels))
    correct = 0
    for start in range(0, len(labels), chunk):
        batch = images[start : start + chunk]
        valid = len(batch)
        if valid < chunk:
            batch = np.concatenate([batch, np.zeros((chunk - valid,) + batch.shape[1:], batch.dtype)])
        predictions = np.asarray(jnp.argmax(_jit_log_probs(params, jnp.asarray(batch)), axis=1))[:valid]
        correct += int(np.sum(predictions == labels[start : start + valid]))
    return correct / len(labels)
