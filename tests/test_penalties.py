"""Penalties: transform route equals the gradient of the loss route; masks; validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bounds import gamma32

import functional_optreg as fo

PARAMS = {"w": jnp.array([[-1.5, 0.0], [2.0, 0.25]]), "b": jnp.zeros(2)}
IS_MATRIX = {"w": True, "b": False}


@pytest.mark.parametrize(
    "transform, regularizer",
    [
        (fo.l1_penalty(0.3), lambda p: fo.l1_regularizer(p, 0.3)),
        (fo.l2_penalty(0.3), lambda p: fo.l2_regularizer(p, 0.3)),
        (fo.elastic_net_penalty(0.2, 0.4), lambda p: fo.l1_regularizer(p, 0.2) + fo.l2_regularizer(p, 0.4)),
        (fo.l2_penalty(0.3, mask=IS_MATRIX), lambda p: fo.l2_regularizer(p, 0.3, mask=IS_MATRIX)),
        (fo.l1_penalty(0.3, mask=lambda p: IS_MATRIX), lambda p: fo.l1_regularizer(p, 0.3, mask=lambda q: IS_MATRIX)),
    ],
)
def test_transform_adds_the_regularizer_gradient(transform, regularizer):
    zero_grads = jax.tree.map(jnp.zeros_like, PARAMS)
    added, _ = transform.update(zero_grads, transform.init(PARAMS), PARAMS)
    expected = jax.grad(regularizer)(PARAMS)
    # Each side is λ·sign(p) + λ'·p through ≤ 4 float32 roundings (λ's, e.g. 0.3 or 0.15 = 0.3/2, the products, a
    # same-sign sum; 2p and adding zero grads are exact): they differ by ≤ 2·γ_4.
    for a, b in zip(jax.tree.leaves(added), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2 * gamma32(4))


def test_l1_gradient_is_zero_at_zero():
    grads = jax.grad(lambda p: fo.l1_regularizer(p, 1.0))(PARAMS)
    assert float(grads["w"][0, 1]) == 0.0
    np.testing.assert_array_equal(grads["b"], jnp.zeros(2))


def test_regularizer_values():
    # Dyadic parameters and weights (0.5, 0.5 / 2): every product and sum is exact in float32.
    np.testing.assert_array_equal(fo.l1_regularizer(PARAMS, 0.5), 0.5 * (1.5 + 2.0 + 0.25))
    np.testing.assert_array_equal(fo.l2_regularizer(PARAMS, 0.5), 0.25 * (1.5**2 + 2.0**2 + 0.25**2))
    np.testing.assert_array_equal(fo.l2_regularizer(PARAMS, 0.5, mask={"w": False, "b": True}), 0.0)


def test_negative_weight_is_rejected():
    with pytest.raises(ValueError, match="Invalid l1 weight value: -0.1"):
        fo.l1_penalty(-0.1)
    with pytest.raises(ValueError, match="Invalid l2 weight value: -1"):
        fo.elastic_net_penalty(0.1, -1)


def test_penalty_needs_params_and_matching_trees():
    tx = fo.l2_penalty(0.1)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(PARAMS, tx.init(PARAMS))
    with pytest.raises(ValueError, match=r"\['b'\]"):
        tx.update({"w": PARAMS["w"], "b": jnp.zeros(3)}, tx.init(PARAMS), PARAMS)


def test_mask_with_wrong_structure_names_the_difference():
    with pytest.raises(ValueError, match="mask"):
        fo.l2_regularizer(PARAMS, 0.1, mask={"w": True})
