"""A drop-in for ``lax.conv_general_dilated`` with a fast path for the seed CNN's first convolution.

conv1 has one input channel (grey images), a shape both of XLA:CPU's convolution back ends handle
badly: at batch 256, one core, Eigen took 11.7 ms and YNNPACK 3.6 ms for its forward pass, where
torch takes 3.4 ms. With one input channel a 3×3 "SAME" convolution is nine broadcast
multiply-adds,

.. math::

    y_{n,i,j,c} = \\sum_{a,b \\in \\{0,1,2\\}} \\tilde x_{n,i+a,j+b} \\, k_{a,b,0,c}

(:math:`\\tilde x` is ``x`` zero-padded by one pixel), which XLA fuses into one loop: 1.8 ms at
batch 256, 0.7 ms at batch 64 (``benchmarks/RESULTS.md``). Its gradients stay XLA's convolutions
(a custom VJP), so only the forward pass changes, and only by summation order.

:func:`conv_general_dilated` takes that path for NHWC input with one channel, an HWIO 3×3 kernel,
unit strides, "SAME" padding, no dilation and one feature group, and calls
``lax.conv_general_dilated`` otherwise; pass it to ``flax.linen.Conv(conv_general_dilated=...)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


@jax.custom_vjp
def conv3x3_one_channel(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")``; NHWC ``x`` (N, H, W, 1), HWIO kernel (3, 3, 1, C)."""
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = padded[:, :height, :width] * kernel[0, 0, 0]
    for a in range(3):
        for b in range(3):
            if (a, b) != (0, 0):
                out = out + padded[:, a : a + height, b : b + width] * kernel[a, b, 0]
    return out


def _forward(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv3x3_one_channel(x, kernel), (x, kernel)


def _backward(residuals: tuple[jax.Array, jax.Array], cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.vjp(_lax_conv, *residuals)[1](cotangent)


conv3x3_one_channel.defvjp(_forward, _backward)


def _is_dimension_numbers_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == _NHWC


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Any,
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``, through :func:`conv3x3_one_channel` where that applies (module docstring)."""
    fast = (
        _is_dimension_numbers_nhwc(dimension_numbers)
        and lhs.ndim == 4
        and lhs.shape[-1] == 1
        and rhs.shape[:3] == (3, 3, 1)
        and tuple(window_strides) == (1, 1)
        and padding in ("SAME", ((1, 1), (1, 1)), [(1, 1), (1, 1)])
        and lhs_dilation in (None, (1, 1))
        and rhs_dilation in (None, (1, 1))
        and feature_group_count == 1
        and not kwargs
    )
    if fast:
        return conv3x3_one_channel(lhs, rhs)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
