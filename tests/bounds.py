"""Rounding constants and scale-aware error measures for the tests' derived bounds.

docs/parity.md: a bound is derived, never measured, and a near-zero quantity is compared against
the scale of what produced it, not against itself. ``relative_error`` is the contract's measure
(``verify._relative_error``: ``max|ours − ref|`` over ``max|ref|`` per leaf, or over an explicit
``scale``); the constants are the unit roundoffs the derivations are written in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from functional_optreg import verify

U64 = 2.0**-53
"""float64 unit roundoff: one correctly rounded operation is off by at most ``U64`` relative."""

EPS32 = 2.0**-23
"""float32 machine epsilon (the spacing of floats at 1; one rounding is off by ≤ EPS32/2)."""

U32 = 2.0**-24
"""float32 unit roundoff: one correctly rounded operation (or a decimal stored in float32) is off by at most ``U32``."""

BF16_EPS = 2.0**-7
"""bfloat16 machine epsilon (8 significand bits: the spacing at 1, twice the unit roundoff)."""


def gamma32(k: int) -> float:
    """Higham's γ_k for float32, ``k·U32 / (1 − k·U32)``: the relative error of a value reached through ``k``
    float32 roundings (+ − × ÷ √, decimals stored in float32) whose condition numbers are ≤ 1, i.e. products,
    quotients and same-sign sums, no cancellation. A float64 reference adds ≲ k·U64, inside γ_k's second-order
    slack (k²·U32² ≫ k·U64).

    >>> gamma32(1) > U32
    True
    """
    return k * U32 / (1 - k * U32)


def gamma64(k: int) -> float:
    """Higham's γ_k for float64, ``k·U64 / (1 − k·U64)``: as ``gamma32``, for ``k`` float64 roundings.

    >>> gamma64(2) < 1e-15
    True
    """
    return k * U64 / (1 - k * U64)


def relative_error(ours, ref, scale: float | None = None) -> float:
    """``max|ours − ref| / max|ref|`` (or ``/ scale``), NaN and infinities as in the contract;
    complex values as (real, imaginary) pairs, as the parity engine sees them."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if np.iscomplexobj(ours) or np.iscomplexobj(ref):
        ours, ref = (np.stack([np.real(x), np.imag(x)]) for x in (ours, ref))
    return verify._relative_error(ours, ref, scale)


def leaf_errors(ours, ref, scale=None) -> list[float]:
    """``relative_error`` per leaf of two pytrees of the same structure (``scale``: one per leaf)."""
    ours_leaves, ref_leaves = jax.tree.leaves(ours), jax.tree.leaves(ref)
    assert len(ours_leaves) == len(ref_leaves), (len(ours_leaves), len(ref_leaves))
    scales = [None] * len(ref_leaves) if scale is None else list(scale)
    return [relative_error(a, b, s) for a, b, s in zip(ours_leaves, ref_leaves, scales)]


XLA32_ELEMENTARY_ULPS = 2
"""Premise of the float32 bounds that pass through XLA:CPU's ``log1p`` / ``expm1`` (not correctly rounded by
specification): each result within this many float32 ulps of the exact value *at the inputs of the test that relies
on it*, which checks it there with ``ulp_error`` (measured on those inputs: ≤ 0.6 for ``log1p``, ≤ 1.3 for
``expm1``). It is not a general accuracy: sampled broadly, expm1 reaches 5.4 ulps on (−0.5, 0.5) and log1p 2.5 on
(0.1, 1), and on Adam's bias corrections expm1 reaches 3.8 ulps (beta2 0.999, step 285)."""


def ulp_error(approx, exact) -> np.ndarray:
    """``|approx − exact|`` in float32 ulps: units of the float32 spacing at ``|exact|`` (``exact`` in float64 or
    better, e.g. from mpmath); one ulp is at most ``EPS32·|exact|``.

    >>> float(ulp_error(np.float32(1) + np.float32(EPS32), 1.0))
    1.0
    """
    exact = np.asarray(exact, np.float64)
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(approx, np.float64) - exact) / spacing


XLA32_POW_ULPS = 1
"""Premise of the float32 bounds that pass through XLA:CPU's ``pow`` of two floats (not correctly rounded by
specification): the result within this many float32 ulps of the exact power of its float32 operands. Measured: ≤ 0.502
over 1.4·10⁶ draws (exponent 0.75 with bases over e^±30; 0.3, 1.7, 2.5, −1.3 with bases over e^±10); a test relying
on it checks it at its own inputs with ``ulp_error``."""

XLA32_COMPLEX_ABS_ULPS = 2
"""Premise of the complex64 bounds that pass through XLA:CPU's complex ``abs`` (not correctly rounded by
specification): the modulus within this many float32 ulps of the exact ``√(re² + im²)`` of its float32 parts.
Measured: ≤ 1.97 over 4·10⁵ draws (normal parts, and parts over e^±20); a test relying on it checks it at its own
inputs with ``ulp_error``."""


def check_bias_correction_premise(beta, t) -> None:
    """Assert :data:`XLA32_ELEMENTARY_ULPS` for the float32 log1p and expm1 of the bias correction
    ``1 − beta**t`` as the optimizers evaluate it (``−expm1(t·log1p(beta − 1))``)."""
    x = np.float32(beta - 1.0)
    log1p = np.float32(jnp.log1p(x))
    assert ulp_error(log1p, np.log1p(np.float64(x))) <= XLA32_ELEMENTARY_ULPS, (beta, "log1p")
    y = np.float32(np.float32(t) * log1p)
    assert ulp_error(jnp.expm1(y), np.expm1(np.float64(y))) <= XLA32_ELEMENTARY_ULPS, (beta, t, "expm1")
