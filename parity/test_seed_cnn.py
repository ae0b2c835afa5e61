"""The seed CNN against torch: 100 steps in float64, 20 in float32, each step judged by the
contract or, where the two sides' own gradients make it miss, by torch's own floor (see
:mod:`parity.seed_cnn` and :mod:`parity.training_floor`).
"""

from __future__ import annotations

import optax
import pytest

import functional_optreg as fo
from parity import seed_cnn


@pytest.mark.parametrize("name", list(seed_cnn.CONFIGURATIONS))
def test_seed_cnn_float64_trajectory(name):
    report = seed_cnn.run(name, "float64")
    assert report.steps == seed_cnn.STEPS
    verdict = seed_cnn.judge(name, report)
    assert verdict.passed, f"{verdict.reason}\n{report}"


def test_seed_cnn_float32_trajectory():
    report = seed_cnn.run("adam+l2", "float32", steps=20)
    verdict = seed_cnn.judge("adam+l2", report)
    print(f"seed CNN adam+l2 float32: {verdict.reason}; {report.summary()}")
    assert verdict.passed, f"{verdict.reason}\n{report}"


def test_a_learning_rate_off_by_one_part_in_a_million_fails():
    """The floor is torch's rounding sensitivity, not a tolerance: a real difference exceeds it."""
    changed = optax.chain(fo.l2_penalty(5e-4), fo.adam(lr=1e-3 * (1 + 1e-6)))
    report = seed_cnn.run("adam+l2", "float64", steps=3, transform=changed)
    assert not seed_cnn.judge("adam+l2", report).passed
