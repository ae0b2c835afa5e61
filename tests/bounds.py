"""Rounding constants and scale-aware error measures for the tests' derived bounds.

docs/parity.md: a bound is derived, never measured, and a near-zero quantity is compared against
the scale of what produced it, not against itself. ``relative_error`` is the contract's measure
(``verify._relative_error``: ``max|ours − ref|`` over ``max|ref|`` per leaf, or over an explicit
``scale``); the constants are the unit roundoffs the derivations are written in.
"""

from __future__ import annotations

import jax
import numpy as np

from functional_optreg import verify

U64 = 2.0**-53
"""float64 unit roundoff: one correctly rounded operation is off by at most ``U64`` relative."""

EPS32 = 2.0**-23
"""float32 machine epsilon (the spacing of floats at 1; one rounding is off by ≤ EPS32/2)."""

BF16_EPS = 2.0**-7
"""bfloat16 machine epsilon (8 significand bits: the spacing at 1, twice the unit roundoff)."""


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
