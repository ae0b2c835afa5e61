"""2×2 max pooling with PyTorch's gradient rule, in a form XLA:CPU compiles into plain loops.

``max_pool_2x2(x)`` is ``torch.nn.functional.max_pool2d(x, 2)`` for NHWC ``x`` (stride 2, no
padding, ``ceil_mode=False``: a trailing odd row or column is dropped, as torch drops it):

.. math::

    y_{n,i,j,c} = \\max_{a,b \\in \\{0,1\\}} x_{n,2i+a,2j+b,c}

The forward pass is a reshape and an element-wise ``maximum`` of the four window slots, which
propagates NaN. (Not ``jnp.max`` over the window axes: jaxlib 0.10.2 hands large max-reductions to
YNNPACK, whose reduction drops NaNs, e.g. ``jnp.max`` of a (64, 28, 28, 32) array of zeros with
one NaN returns 0.) The gradient is a custom VJP
that follows torch's CPU kernel (``aten/src/ATen/native/cpu/MaxPoolKernel.cpp``): the window is
scanned row by row, and an element takes the window's slot when ``value > best or isnan(value)``,
so the whole cotangent goes to the *first* maximal element of each window (ties: the earliest in
row-major order) or to the *last* NaN when there is one. Every other element gets zero.

Why not ``flax.linen.max_pool``: its gradient is XLA's ``select_and_scatter``, which XLA:CPU runs
as a scalar loop over windows (RESULTS.md: 72 ms against 28 ms for the seed CNN's two blocks at
batch 64); here both passes are element-wise loops over the four window slots, which XLA fuses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _window_slots(x: jax.Array) -> tuple[jax.Array, ...]:
    """The four 2×2-window slots of NHWC ``x`` in torch's scan order, each ``(N, H//2, W//2, C)``."""
    n, h, w, c = x.shape
    windows = x[:, : h - h % 2, : w - w % 2].reshape(n, h // 2, 2, w // 2, 2, c)
    return windows[:, :, 0, :, 0], windows[:, :, 0, :, 1], windows[:, :, 1, :, 0], windows[:, :, 1, :, 1]


def _check(x: jax.Array) -> None:
    if x.ndim != 4 or x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"max_pool_2x2 expects NHWC input with H, W >= 2, got shape {x.shape}")


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``torch.nn.functional.max_pool2d(x, 2)`` on NHWC ``x``: ``(N, H, W, C)`` → ``(N, H//2, W//2, C)``.

    NaN-propagating in the forward pass (a window holding a NaN gives NaN); the gradient goes to
    one element per window, chosen as torch chooses it (see the module docstring).
    """
    _check(x)
    top_left, top_right, bottom_left, bottom_right = _window_slots(x)
    return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))


def _forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return max_pool_2x2(x), x


def _backward(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    slots = _window_slots(x)
    best, chosen = slots[0], jnp.zeros(cotangent.shape, jnp.int8)
    for index, value in enumerate(slots[1:], start=1):
        take = (value > best) | jnp.isnan(value)
        best = jnp.where(take, value, best)
        chosen = jnp.where(take, jnp.int8(index), chosen)
    zero = jnp.zeros((), cotangent.dtype)
    pieces = [jnp.where(chosen == index, cotangent, zero) for index in range(4)]
    n, h2, w2, c = cotangent.shape
    grad = jnp.stack(pieces, axis=3).reshape(n, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    grad = grad.reshape(n, 2 * h2, 2 * w2, c)
    h, w = x.shape[1], x.shape[2]
    if (h, w) != (2 * h2, 2 * w2):
        grad = jnp.pad(grad, ((0, 0), (0, h - 2 * h2), (0, w - 2 * w2), (0, 0)))
    return (grad,)


max_pool_2x2.defvjp(_forward, _backward)
