"""Construction-time checks of the schedules: torch's exception and message where torch has one."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import functional_optreg as fo

S = torch.optim.lr_scheduler


def _torch_error(make_scheduler, lr=0.1):
    """The exception torch raises when constructing (and, if needed, stepping) the scheduler."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    with pytest.raises(Exception) as info:
        make_scheduler(optimizer)
    return info.value


TORCH_WORDED = [
    ("constant_factor", lambda: fo.constant_lr(0.1, factor=1.5), lambda o: S.ConstantLR(o, factor=1.5)),
    ("linear_start", lambda: fo.linear_lr(0.1, start_factor=0.0), lambda o: S.LinearLR(o, start_factor=0.0)),
    ("linear_end", lambda: fo.linear_lr(0.1, end_factor=1.5), lambda o: S.LinearLR(o, end_factor=1.5)),
    (
        "warm_restarts_T_0",
        lambda: fo.cosine_annealing_warm_restarts(0.1, 0),
        lambda o: S.CosineAnnealingWarmRestarts(o, 0),
    ),
    (
        "warm_restarts_T_0_float",
        lambda: fo.cosine_annealing_warm_restarts(0.1, 2.0),
        lambda o: S.CosineAnnealingWarmRestarts(o, 2.0),
    ),
    (
        "warm_restarts_T_mult",
        lambda: fo.cosine_annealing_warm_restarts(0.1, 2, 0),
        lambda o: S.CosineAnnealingWarmRestarts(o, 2, 0),
    ),
    (
        "warm_restarts_eta_min",
        lambda: fo.cosine_annealing_warm_restarts(0.1, 2, 1, "0"),
        lambda o: S.CosineAnnealingWarmRestarts(o, 2, 1, "0"),
    ),
    ("cyclic_mode", lambda: fo.cyclic_lr(0.01, 0.1, mode="square"), lambda o: S.CyclicLR(o, 0.01, 0.1, mode="square")),
    ("cyclic_two_groups", lambda: fo.cyclic_lr([0.01, 0.02], 0.1), None),
    ("one_cycle_missing_steps", lambda: fo.one_cycle_lr(0.1), lambda o: S.OneCycleLR(o, 0.1)),
    (
        "one_cycle_total_steps",
        lambda: fo.one_cycle_lr(0.1, total_steps=0),
        lambda o: S.OneCycleLR(o, 0.1, total_steps=0),
    ),
    (
        "one_cycle_epochs",
        lambda: fo.one_cycle_lr(0.1, epochs=0, steps_per_epoch=3),
        lambda o: S.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3),
    ),
    (
        "one_cycle_steps_per_epoch",
        lambda: fo.one_cycle_lr(0.1, epochs=2, steps_per_epoch=1.5),
        lambda o: S.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=1.5),
    ),
    (
        "one_cycle_pct_start",
        lambda: fo.one_cycle_lr(0.1, total_steps=10, pct_start=1.5),
        lambda o: S.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5),
    ),
    (
        "one_cycle_pct_start_int",
        lambda: fo.one_cycle_lr(0.1, total_steps=10, pct_start=1),
        lambda o: S.OneCycleLR(o, 0.1, total_steps=10, pct_start=1),
    ),
    (
        "one_cycle_anneal",
        lambda: fo.one_cycle_lr(0.1, total_steps=10, anneal_strategy="exp"),
        lambda o: S.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"),
    ),
    ("sequential_empty", lambda: fo.sequential_lr([], []), lambda o: S.SequentialLR(o, [], [])),
    ("chained_empty", lambda: fo.chained_scheduler([]), lambda o: S.ChainedScheduler([], o)),
    (
        "sequential_milestone_count",
        lambda: fo.sequential_lr([fo.step_lr(0.1, 2), fo.exponential_lr(0.1, 0.9)], [2, 4]),
        lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.ExponentialLR(o, 0.9)], [2, 4]),
    ),
    (
        "sequential_plateau",
        lambda: fo.sequential_lr([fo.step_lr(0.1, 2), fo.reduce_lr_on_plateau(0.1)], [2]),
        lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.ReduceLROnPlateau(o)], [2]),
    ),
    (
        "chained_plateau",
        lambda: fo.chained_scheduler([fo.step_lr(0.1, 2), fo.reduce_lr_on_plateau(0.1)]),
        lambda o: S.ChainedScheduler([S.StepLR(o, 2), S.ReduceLROnPlateau(o)]),
    ),
    ("plateau_factor", lambda: fo.reduce_lr_on_plateau(0.1, factor=1.0), lambda o: S.ReduceLROnPlateau(o, factor=1.0)),
    ("plateau_mode", lambda: fo.reduce_lr_on_plateau(0.1, mode="low"), lambda o: S.ReduceLROnPlateau(o, mode="low")),
    (
        "plateau_threshold_mode",
        lambda: fo.reduce_lr_on_plateau(0.1, threshold_mode="pct"),
        lambda o: S.ReduceLROnPlateau(o, threshold_mode="pct"),
    ),
    (
        "plateau_min_lrs",
        lambda: fo.reduce_lr_on_plateau(0.1, min_lr=[0.0, 0.1]),
        lambda o: S.ReduceLROnPlateau(o, min_lr=[0.0, 0.1]),
    ),
]


@pytest.mark.parametrize("ours, theirs", [pytest.param(o, t, id=i) for i, o, t in TORCH_WORDED if t is not None])
def test_same_exception_and_message_as_torch(ours, theirs):
    expected = _torch_error(theirs)
    with pytest.raises(type(expected), match=f"^{re.escape(str(expected))}$"):
        ours()


def test_per_group_lists_name_the_length():
    with pytest.raises(ValueError, match="base_lr must have the same length as optimizer.param_groups"):
        fo.cyclic_lr([0.01, 0.02], 0.1)
    with pytest.raises(ValueError, match="Expected 1 lr_lambdas, but got 2"):
        fo.lambda_lr(0.1, [lambda e: 1.0, lambda e: 2.0])
    assert float(fo.lambda_lr(0.1, [lambda e: 2.0])(0)) == np.float32(0.2)  # fl32(0.1)·2 = fl32(0.2)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: fo.step_lr(-0.1, 2), ValueError, "Invalid learning rate: -0.1"),
        (lambda: fo.step_lr(fo.step_lr(0.1, 2), 2), TypeError, "not a schedule"),
        (lambda: fo.step_lr(0.1, 0), ValueError, "step_size must be a positive integer, got 0"),
        (
            lambda: fo.exponential_lr(0.1, 0.9, steps_per_epoch=0),
            ValueError,
            "steps_per_epoch must be a positive integer, got 0",
        ),
        (lambda: fo.cosine_annealing_lr(0.1, 0), ValueError, "T_max must be a positive number, got 0"),
        (lambda: fo.multiplicative_lr(0.1, 0.9), TypeError, "lr_lambda should be a function, but got float"),
        (lambda: fo.constant_lr(0.1, factor=0.0, total_iters=3), ZeroDivisionError, "factor=0"),
        (lambda: fo.cyclic_lr(0.01, 0.1, step_size_up=0, step_size_down=4), ZeroDivisionError, "step_size_up=0"),
        (lambda: fo.one_cycle_lr(0.1, total_steps=10, pct_start=0.1), ZeroDivisionError, "phase 0 has zero length"),
        (lambda: fo.cyclic_momentum(0.01, 0.1, cycle_momentum=False), ValueError, "cycle_momentum=False"),
        (lambda: fo.one_cycle_momentum(0.1, total_steps=10, cycle_momentum=False), ValueError, "cycle_momentum=False"),
    ],
)
def test_our_checks(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_torch_fails_later_where_we_fail_at_construction():
    """Configurations we reject eagerly do fail in torch once stepped far enough."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = S.ConstantLR(optimizer, factor=0.0, total_iters=2)
    optimizer.step()
    scheduler.step()
    with pytest.raises(ZeroDivisionError):
        optimizer.step()
        scheduler.step()
    with pytest.raises(ZeroDivisionError):
        S.OneCycleLR(
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9),
            0.1,
            total_steps=10,
            pct_start=0.1,
        )
    with pytest.raises(ZeroDivisionError):
        S.CyclicLR(
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9),
            0.01,
            0.1,
            step_size_up=0,
            step_size_down=4,
        )


def test_composite_member_checks():
    with pytest.raises(TypeError, match="SequentialLR at index 1 should be a schedule built by functional_optreg"):
        fo.sequential_lr([fo.step_lr(0.1, 2), lambda c: 0.1], [3])
    with pytest.raises(ValueError, match="same optimizer"):
        fo.chained_scheduler([fo.step_lr(0.1, 2), fo.exponential_lr(0.2, 0.9)])
    with pytest.raises(ValueError, match="steps_per_epoch=1"):
        fo.chained_scheduler([fo.step_lr(0.1, 2, steps_per_epoch=3)])
    with pytest.raises(ValueError, match="non-decreasing"):
        fo.sequential_lr([fo.step_lr(0.1, 2)] * 3, [5, 2])
    inner = fo.sequential_lr([fo.step_lr(0.1, 2), fo.exponential_lr(0.1, 0.9)], [3])
    with pytest.raises(ValueError, match="cannot restart the SequentialLR"):
        fo.sequential_lr([fo.step_lr(0.1, 2), inner], [3])
    with pytest.raises(ValueError, match="cannot chain the SequentialLR"):
        fo.chained_scheduler([fo.step_lr(0.1, 2), inner])


@pytest.mark.parametrize(
    "second, torch_second",
    [
        (lambda: fo.linear_lr(0.1, 0.5, 1.0, 0), lambda o: S.LinearLR(o, 0.5, 1.0, 0)),
        (lambda: fo.polynomial_lr(0.1, 0), lambda o: S.PolynomialLR(o, 0)),
    ],
)
def test_sequential_restart_that_divides_by_zero_in_torch(second, torch_second):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = S.SequentialLR(optimizer, [S.StepLR(optimizer, 2), torch_second(optimizer)], [2])
    with pytest.raises(ZeroDivisionError):
        for _ in range(3):
            optimizer.step()
            scheduler.step()
    with pytest.raises(ZeroDivisionError, match="SequentialLR milestone"):
        fo.sequential_lr([fo.step_lr(0.1, 2), second()], [2])
    # A member that never gets restarted (equal milestones skip it) is fine.
    fo.sequential_lr([fo.step_lr(0.1, 2), second(), fo.step_lr(0.1, 3)], [2, 2])


def _hf_linear_warmup(warmup, total):
    """HuggingFace's get_linear_schedule_with_warmup lr_lambda, as written there (Python ``if``)."""

    def lr_lambda(current_step):
        if current_step < warmup:
            return float(current_step) / float(max(1, warmup))
        return max(0.0, float(total - current_step) / float(max(1, total - warmup)))

    return lr_lambda


def test_untraceable_user_functions_fail_at_construction_naming_them():
    for factory in (fo.lambda_lr, fo.multiplicative_lr):
        with pytest.raises(ValueError, match=r"lr_lambda '.*lr_lambda' is not jnp-traceable.*jnp\.where"):
            factory(0.1, _hf_linear_warmup(5, 50))

    def scale(cycle):
        return 1.0 if cycle < 3 else 0.5

    with pytest.raises(ValueError, match=r"scale_fn '.*scale' is not jnp-traceable.*jnp\.where"):
        fo.cyclic_lr(0.01, 0.1, step_size_up=2, scale_fn=scale)


def test_hf_warmup_rewritten_with_jnp_where_matches_torch():
    """The rewrite the message suggests gives torch's LambdaLR lrs over 60 steps (float64)."""
    warmup, total = 5, 50

    def rewritten(step):
        step = jnp.asarray(step, jnp.result_type(float))
        return jnp.where(step < warmup, step / warmup, jnp.maximum(0.0, (total - step) / (total - warmup)))

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _hf_linear_warmup(warmup, total))
    expected = []
    for _ in range(60):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    with jax.enable_x64(True):
        schedule = fo.lambda_lr(0.3, rewritten)
        ours = [float(schedule(c)) for c in range(60)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)
