"""The comparison engine must accept exact equivalents and catch wrong formulas."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import default_params


def test_exact_equivalent_passes_both_dtypes():
    for dtype in ("float64", "float32"):
        report = verify.compare(
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
            fo.sgd(lr=0.05, momentum=0.9),
            default_params(),
            steps=50,
            dtype=dtype,
        )
        assert report.passed, str(report)
        assert report.steps == 50 and report.first_failure is None


def test_eps_inside_the_sqrt_passes_float32_but_fails_float64():
    """optax.rmsprop puts eps inside the square root. At eps=1e-10 only float64 can tell.

    (At torch's default eps=1e-8 the difference is visible in float32 too.)
    """
    run = lambda dtype: verify.compare(
        lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.99, eps=1e-10),
        optax.rmsprop(1e-3, decay=0.99, eps=1e-10),
        default_params(),
        steps=50,
        dtype=dtype,
    )
    assert run("float32").passed
    float64 = run("float64")
    assert not float64.passed
    assert float64.first_failure == 1 and 1e-12 < float64.max_relative_error < 1e-4


def test_slightly_wrong_lr_fails_at_the_first_step():
    report = verify.compare(
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        fo.sgd(lr=0.1 * (1 + 1e-4)),
        default_params(),
        steps=50,
    )
    assert not report.passed and report.first_failure == 1
    assert "FAIL (first at step 1)" in report.summary()


def test_sgd_dampening_first_step_is_what_optax_misses():
    report = verify.compare(
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.5),
        optax.sgd(0.05, momentum=0.9),
        default_params(),
        steps=50,
    )
    assert report.first_failure == 2


def test_loss_pair_gradients_equal_the_numpy_stream():
    params = default_params()
    stream = verify.quadratic_gradients(params, seed=3)
    pair = verify.quadratic_losses(params, seed=3)
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
    with jax.enable_x64(True):
        grads = jax.grad(pair.jax_loss, argnums=1)(4, jax.tree.map(np.asarray, params))
    for ours, expected in zip(jax.tree.leaves(grads), stream(4, leaves)):
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)
    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in leaves]
    pair.torch_loss(4, tensors).backward()
    for tensor, expected in zip(tensors, stream(4, leaves)):
        np.testing.assert_allclose(tensor.grad.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_loss_pair_reports_losses_and_plots(tmp_path):
    params = default_params()
    report = verify.compare(
        lambda ps: torch.optim.Adam(ps, lr=0.01),
        fo.adam(lr=0.01),
        params,
        gradient=verify.quadratic_losses(params),
        steps=50,
    )
    assert report.passed
    assert report.losses.shape == (50, 2)
    np.testing.assert_allclose(report.losses[:, 0], report.losses[:, 1], rtol=1e-12)
    report.plot(str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_table_lists_failures():
    report = verify.compare(
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        fo.sgd(lr=0.11),
        default_params(),
        steps=50,
    )
    assert report.table().count("NO") == 50


@pytest.mark.parametrize("kwargs, message", [(dict(dtype="float16"), "dtype"), (dict(steps=0), "steps")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        verify.compare(lambda ps: torch.optim.SGD(ps, lr=0.1), fo.sgd(0.1), default_params(), **kwargs)


def test_torch_float32_drift_flags_ill_conditioned_configurations():
    well = verify.torch_float32_drift(lambda ps: torch.optim.Adam(ps, lr=1e-3), default_params(), steps=50)
    ill = verify.torch_float32_drift(lambda ps: torch.optim.Adadelta(ps, rho=0.0, eps=1e-4), default_params(), steps=50)
    assert well.shape == (50,) and well.max() < 0.5
    assert ill.max() > 1.0
