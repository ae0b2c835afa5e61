"""Shared fixtures: the table of optimizer configurations the generic tests run over."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from parity.catalog import all_cases


def representative_cases():
    """Per family, the property-tested case with the most arguments switched on."""
    best = {}
    for case in all_cases():
        if not case.property_tests:
            continue
        score = len(case.kwargs) + len(case.ours_kwargs)
        if case.family not in best or score > best[case.family][0]:
            best[case.family] = (score, case)
    return [case for _, case in best.values()]


def small_params(dtype=np.float32):
    """A small tree with a 4-D kernel, a matrix, a zero bias and a scalar leaf."""
    rng = np.random.default_rng(0)
    return {
        "conv": {"kernel": jax.numpy.asarray(rng.normal(size=(2, 2, 1, 3)), dtype)},
        "dense": {"kernel": jax.numpy.asarray(rng.normal(size=(3, 2)), dtype), "bias": jax.numpy.zeros(2, dtype)},
        "temperature": jax.numpy.asarray(1.5, dtype),
    }


def gradients_like(params, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jax.numpy.asarray(rng.normal(size=np.shape(p)), p.dtype), params)


@pytest.fixture(params=representative_cases(), ids=lambda case: case.family)
def case(request):
    return request.param
