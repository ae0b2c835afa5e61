"""Every schedule against torch's ``get_last_lr()`` (and momentum) in float64, over >= 3x its length.

The tables pair each configuration with the torch scheduler it mirrors: ``(id, ours, torch_factory,
epochs)`` where ``ours()`` builds our schedule and ``torch_factory(optimizer)`` the torch scheduler
on an optimizer whose lr is :data:`LR`; ``epochs`` is at least three times the schedule's own
length (milestones, T_max, cycles).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import U32, gamma32, relative_error

import functional_optreg as fo

LR = 0.1
S = torch.optim.lr_scheduler


def _cyclic(**kw):
    return (lambda: fo.cyclic_lr(**kw)), (lambda opt: S.CyclicLR(opt, **kw))


def _one_cycle(**kw):
    return (lambda: fo.one_cycle_lr(**kw)), (lambda opt: S.OneCycleLR(opt, **kw))


CYCLIC_CONFIGS = {
    "triangular": dict(base_lr=0.01, max_lr=0.1, step_size_up=4),
    "triangular_down": dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5),
    "triangular2": dict(base_lr=0.02, max_lr=0.2, step_size_up=3, step_size_down=4, mode="triangular2"),
    "exp_range": dict(base_lr=0.01, max_lr=0.1, step_size_up=5, step_size_down=2, mode="exp_range", gamma=0.97),
    "scale_fn_cycle": dict(
        base_lr=0.01,
        max_lr=0.1,
        step_size_up=4,
        scale_fn=lambda x: 1.0 / (x + 1.0),
        scale_mode="cycle",
        base_momentum=0.7,
        max_momentum=0.95,
    ),
    "scale_fn_iterations": dict(
        base_lr=0.01,
        max_lr=0.1,
        step_size_up=2,
        step_size_down=6,
        scale_fn=lambda x: 0.99**x,
        scale_mode="iterations",
    ),
}
CYCLIC_EPOCHS = 40

ONE_CYCLE_CONFIGS = {
    "cos": dict(max_lr=0.1, total_steps=40),
    "linear": dict(max_lr=0.2, total_steps=37, anneal_strategy="linear", pct_start=0.25),
    "three_phase": dict(max_lr=0.1, total_steps=50, three_phase=True, pct_start=0.2),
    "three_phase_linear": dict(
        max_lr=0.3,
        epochs=6,
        steps_per_epoch=7,
        three_phase=True,
        anneal_strategy="linear",
        div_factor=10.0,
        final_div_factor=100.0,
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    "div_factors": dict(max_lr=0.05, total_steps=45, div_factor=5.0, final_div_factor=50.0, pct_start=0.5),
}

LR_CASES = [
    ("lambda/power", lambda: fo.lambda_lr(LR, lambda e: 0.95**e), lambda o: S.LambdaLR(o, lambda e: 0.95**e), 30),
    (
        "lambda/int_division",
        lambda: fo.lambda_lr(LR, lambda e: e // 3 + 1),
        lambda o: S.LambdaLR(o, lambda e: e // 3 + 1),
        30,
    ),
    (
        "multiplicative/constant",
        lambda: fo.multiplicative_lr(LR, lambda e: 0.9),
        lambda o: S.MultiplicativeLR(o, lambda e: 0.9),
        30,
    ),
    (
        "multiplicative/varying",
        lambda: fo.multiplicative_lr(LR, lambda e: 1.0 - 0.01 * e),
        lambda o: S.MultiplicativeLR(o, lambda e: 1.0 - 0.01 * e),
        40,
    ),
    ("step/3_0.5", lambda: fo.step_lr(LR, 3, 0.5), lambda o: S.StepLR(o, 3, 0.5), 30),
    ("step/7_default_gamma", lambda: fo.step_lr(LR, 7), lambda o: S.StepLR(o, 7), 30),
    (
        "multi_step/repeated",
        lambda: fo.multi_step_lr(LR, [2, 5, 5, 9], 0.5),
        lambda o: S.MultiStepLR(o, [2, 5, 5, 9], 0.5),
        30,
    ),
    (
        "multi_step/zero_unsorted",
        lambda: fo.multi_step_lr(LR, [7, 0], 0.3),
        lambda o: S.MultiStepLR(o, [7, 0], 0.3),
        25,
    ),
    (
        "multi_step/never_firing",
        lambda: fo.multi_step_lr(LR, [-1, 2.5, 3]),
        lambda o: S.MultiStepLR(o, [-1, 2.5, 3]),
        12,
    ),
    ("constant/default", lambda: fo.constant_lr(LR), lambda o: S.ConstantLR(o), 20),
    ("constant/0.3_4", lambda: fo.constant_lr(LR, 0.3, 4), lambda o: S.ConstantLR(o, 0.3, 4), 15),
    ("constant/total_iters_0", lambda: fo.constant_lr(LR, 0.5, 0), lambda o: S.ConstantLR(o, 0.5, 0), 10),
    ("linear/default", lambda: fo.linear_lr(LR), lambda o: S.LinearLR(o), 20),
    ("linear/warmup_10", lambda: fo.linear_lr(LR, 0.1, 1.0, 10), lambda o: S.LinearLR(o, 0.1, 1.0, 10), 30),
    ("linear/to_zero", lambda: fo.linear_lr(LR, 1.0, 0.0, 8), lambda o: S.LinearLR(o, 1.0, 0.0, 8), 24),
    ("linear/total_iters_0", lambda: fo.linear_lr(LR, 0.5, 0.2, 0), lambda o: S.LinearLR(o, 0.5, 0.2, 0), 10),
    ("exponential/0.9", lambda: fo.exponential_lr(LR, 0.9), lambda o: S.ExponentialLR(o, 0.9), 60),
    ("exponential/0.5", lambda: fo.exponential_lr(LR, 0.5), lambda o: S.ExponentialLR(o, 0.5), 30),
    ("polynomial/default", lambda: fo.polynomial_lr(LR), lambda o: S.PolynomialLR(o), 15),
    ("polynomial/power_2", lambda: fo.polynomial_lr(LR, 10, 2.0), lambda o: S.PolynomialLR(o, 10, 2.0), 30),
    ("polynomial/power_0.5", lambda: fo.polynomial_lr(LR, 7, 0.5), lambda o: S.PolynomialLR(o, 7, 0.5), 21),
    ("polynomial/total_iters_0", lambda: fo.polynomial_lr(LR, 0), lambda o: S.PolynomialLR(o, 0), 10),
    ("cosine/T10", lambda: fo.cosine_annealing_lr(LR, 10), lambda o: S.CosineAnnealingLR(o, 10), 40),
    ("cosine/T7_eta_min", lambda: fo.cosine_annealing_lr(LR, 7, 0.01), lambda o: S.CosineAnnealingLR(o, 7, 0.01), 40),
    ("cosine/T50", lambda: fo.cosine_annealing_lr(LR, 50, 1e-3), lambda o: S.CosineAnnealingLR(o, 50, 1e-3), 200),
    ("cosine/T300", lambda: fo.cosine_annealing_lr(LR, 300, 1e-3), lambda o: S.CosineAnnealingLR(o, 300, 1e-3), 1000),
    (
        "warm_restarts/T5",
        lambda: fo.cosine_annealing_warm_restarts(LR, 5),
        lambda o: S.CosineAnnealingWarmRestarts(o, 5),
        30,
    ),
    (
        "warm_restarts/T3_mult2",
        lambda: fo.cosine_annealing_warm_restarts(LR, 3, 2, 0.01),
        lambda o: S.CosineAnnealingWarmRestarts(o, 3, 2, 0.01),
        70,
    ),
    (
        "warm_restarts/T4_mult3",
        lambda: fo.cosine_annealing_warm_restarts(LR, 4, 3),
        lambda o: S.CosineAnnealingWarmRestarts(o, 4, 3),
        60,
    ),
]
LR_CASES += [(f"cyclic/{name}", *_cyclic(**kw), CYCLIC_EPOCHS) for name, kw in CYCLIC_CONFIGS.items()]


def _seq(ours_members, torch_members, milestones):
    return (
        lambda: fo.sequential_lr([m() for m in ours_members], milestones),
        lambda o: S.SequentialLR(o, [m(o) for m in torch_members], milestones),
    )


def _chain(ours_members, torch_members):
    return (
        lambda: fo.chained_scheduler([m() for m in ours_members]),
        lambda o: S.ChainedScheduler([m(o) for m in torch_members]),
    )


_T = {name: (ours, theirs) for name, ours, theirs, _ in LR_CASES}


def _pick(*names):
    return [_T[n][0] for n in names], [_T[n][1] for n in names]


COMPOSITE_CASES = [
    ("sequential/warmup_exponential", *_seq(*_pick("linear/default", "exponential/0.9"), [5]), 30),
    ("sequential/warmup_cosine_step", *_seq(*_pick("linear/warmup_10", "cosine/T10", "step/3_0.5"), [10, 25]), 60),
    ("sequential/multiplicative_continues", *_seq(*_pick("step/3_0.5", "multiplicative/varying"), [7]), 30),
    ("sequential/constant_total_iters_0", *_seq(*_pick("exponential/0.5", "constant/total_iters_0"), [4]), 15),
    (
        "sequential/milestone_zero",
        *_seq(*_pick("exponential/0.5", "multiplicative/constant", "step/3_0.5"), [0, 6]),
        20,
    ),
    (
        "sequential/equal_milestones",
        *_seq(*_pick("constant/0.3_4", "polynomial/default", "linear/default"), [3, 3]),
        20,
    ),
    ("sequential/multi_step_closed_form", *_seq(*_pick("linear/default", "multi_step/never_firing"), [4]), 20),
    ("sequential/restarts_cyclic", *_seq(*_pick("warm_restarts/T5", "cyclic/triangular", "lambda/power"), [8, 20]), 40),
    ("chained/constant_exponential", *_chain(*_pick("constant/0.3_4", "exponential/0.9")), 30),
    ("chained/linear_step_multistep", *_chain(*_pick("linear/warmup_10", "step/3_0.5", "multi_step/repeated")), 30),
    ("chained/multiplicative_polynomial", *_chain(*_pick("multiplicative/varying", "polynomial/power_2")), 30),
    ("chained/lambda_then_exponential", *_chain(*_pick("exponential/0.9", "lambda/power", "exponential/0.5")), 20),
    ("chained/cyclic_then_constant", *_chain(*_pick("cyclic/triangular", "constant/0.3_4")), 20),
    ("chained/warmup_cosine", *_chain(*_pick("linear/default", "cosine/T10")), 45),
    ("chained/cosine_eta_min_step", *_chain(*_pick("cosine/T7_eta_min", "step/3_0.5")), 45),
    (
        "chained/nested",
        lambda: fo.chained_scheduler([fo.chained_scheduler([_T["constant/0.3_4"][0]()]), _T["exponential/0.9"][0]()]),
        lambda o: S.ChainedScheduler([S.ChainedScheduler([_T["constant/0.3_4"][1](o)]), _T["exponential/0.9"][1](o)]),
        20,
    ),
]


def _torch_group_values(make_scheduler, epochs, optimizer="sgd", key="lr"):
    """``key`` of the first param group before each of ``epochs + 1`` steps: index e is epoch e."""
    param = torch.zeros(1, requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([param], lr=LR, momentum=0.5)
    else:
        opt = torch.optim.Adam([param], lr=LR)
    scheduler = make_scheduler(opt)
    values = []
    for _ in range(epochs + 1):
        group = opt.param_groups[0]
        values.append(group["betas"][0] if key == "beta1" else group[key])
        opt.step()
        scheduler.step()
    return values


RTOL = 1e-12


def _ours(schedule, last_count):
    """The schedule at counts ``0 … last_count``, vmapped and jitted, in float64."""
    counts = jnp.arange(last_count + 1, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(counts), dtype=np.float64)


def _assert_matches(ours, theirs):
    """Every epoch within RTOL of the sequence's largest value, the scale its terms have: a value
    annealed to (near) 0 (cosine at T_max with eta_min 0, a cycle's low end) is a difference of
    O(base) terms, so its rounding is relative to base, not to itself. Ours is a closed form
    (≤ ~10 roundings), torch's chainable forms multiply the previous value by a ratio (≤ 3
    roundings per epoch): over ≤ 1000 epochs ≤ 3010·u ≈ 3.4e-13 of that scale, within RTOL."""
    theirs = np.asarray(theirs, dtype=np.float64)
    scale = np.max(np.abs(theirs))
    error = np.abs(ours - theirs) / scale
    worst = int(np.argmax(error))
    assert error[worst] <= RTOL, f"epoch {worst}: ours {ours[worst]!r}, torch {theirs[worst]!r}"


def _torch_last_lrs(make_scheduler, epochs):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=LR, momentum=0.5)
    scheduler = make_scheduler(optimizer)
    values = [scheduler.get_last_lr()[0]]
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
        values.append(scheduler.get_last_lr()[0])
    return values


@pytest.mark.parametrize(
    "ours, theirs, epochs", [pytest.param(o, t, n, id=i) for i, o, t, n in LR_CASES + COMPOSITE_CASES]
)
def test_lr_matches_torch_get_last_lr(ours, theirs, epochs):
    with jax.enable_x64(True):
        _assert_matches(_ours(ours(), epochs), _torch_last_lrs(theirs, epochs))


@pytest.mark.parametrize("name", sorted(ONE_CYCLE_CONFIGS))
def test_one_cycle_lr_matches_torch_up_to_total_steps(name):
    kw = ONE_CYCLE_CONFIGS[name]
    schedule = fo.one_cycle_lr(**kw)
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    with jax.enable_x64(True):
        ours = _ours(schedule, 3 * total)
        _assert_matches(ours[:total], _torch_last_lrs(lambda o: S.OneCycleLR(o, **kw), total - 1))
    # Past the last update torch raises; ours holds the end of the last phase.
    np.testing.assert_array_equal(ours[total - 1 :], ours[total - 1])
    # float64: cos(π) rounds to −1, so the end is initial_lr/final_div_factor up to the annealing's roundings, ≤ 2u
    # of initial_lr (linear: start + (end − start)), i.e. ≤ 2u·final_div_factor ≈ 2e-12 relative ≪ approx's 1e-6.
    assert ours[total - 1] == pytest.approx(kw["max_lr"] / kw.get("div_factor", 25.0) / kw.get("final_div_factor", 1e4))


@pytest.mark.parametrize("optimizer, key", [("sgd", "momentum"), ("adam", "beta1")])
@pytest.mark.parametrize("name", sorted(CYCLIC_CONFIGS))
def test_cyclic_momentum_matches_torch(name, optimizer, key):
    kw = CYCLIC_CONFIGS[name]
    theirs = _torch_group_values(lambda o: S.CyclicLR(o, **kw), CYCLIC_EPOCHS, optimizer, key)
    with jax.enable_x64(True):
        _assert_matches(_ours(fo.cyclic_momentum(**kw), CYCLIC_EPOCHS), theirs)


@pytest.mark.parametrize("optimizer, key", [("sgd", "momentum"), ("adam", "beta1")])
@pytest.mark.parametrize("name", sorted(ONE_CYCLE_CONFIGS))
def test_one_cycle_momentum_matches_torch(name, optimizer, key):
    kw = ONE_CYCLE_CONFIGS[name]
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    theirs = _torch_group_values(lambda o: S.OneCycleLR(o, **kw), total - 1, optimizer, key)
    with jax.enable_x64(True):
        ours = _ours(fo.one_cycle_momentum(**kw), 2 * total)
    _assert_matches(ours[:total], theirs)
    np.testing.assert_array_equal(ours[total - 1 :], ours[total - 1])


@pytest.mark.parametrize(
    "ours, theirs, epochs",
    [pytest.param(o, t, n, id=i) for i, o, t, n in LR_CASES + COMPOSITE_CASES if not i.startswith("cyclic/")],
)
def test_steps_per_epoch_steps_once_per_epoch(ours, theirs, epochs):
    schedule = ours()
    per_epoch = fo.TorchSchedule(**{**schedule.__dict__, "steps_per_epoch": 3})
    with jax.enable_x64(True):
        by_epoch = _ours(schedule, epochs)
        by_update = _ours(per_epoch, 3 * epochs + 2)
    np.testing.assert_array_equal(by_update, np.repeat(by_epoch, 3))


def test_steps_per_epoch_argument():
    schedule = fo.step_lr(1.0, step_size=2, gamma=0.5, steps_per_epoch=4)
    assert schedule.steps_per_epoch == 4
    assert [float(schedule(c)) for c in (0, 7, 8, 15, 16)] == [1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(fo.cosine_annealing_lr(0.1, 10), id="cosine"),
        pytest.param(fo.multiplicative_lr(0.1, lambda e: 0.9), id="multiplicative"),
        pytest.param(fo.chained_scheduler([fo.linear_lr(0.1), fo.cosine_annealing_lr(0.1, 5)]), id="chained_replay"),
        pytest.param(fo.sequential_lr([fo.linear_lr(0.1), fo.step_lr(0.1, 3)], [5]), id="sequential"),
        pytest.param(fo.one_cycle_momentum(0.1, total_steps=20), id="one_cycle_momentum"),
    ],
)
def test_jit_does_not_retrace_and_dtype_is_default_float(schedule):
    traces = []

    @jax.jit
    def lr_at(count):
        traces.append(count)
        return schedule(count)

    values = [lr_at(jnp.int32(c)) for c in range(12)]
    assert len(traces) == 1
    assert all(v.dtype == jnp.float32 for v in values)
    # The same float32 ops, jit or eager (fused and constant-folded differently). Cosine's lr·(1 + cos(πt/T))/2
    # cancels near T, so against the schedule's scale: the phase's 2 roundings (≤ 2π·u through cos), cos (≲ 2u),
    # 1 + cos (2u), ·lr/2 (u): ≤ 7u·max lr per side.
    eager = [float(schedule(c)) for c in range(12)]
    assert relative_error([float(v) for v in values], eager) <= 14 * U32


def test_schedule_drives_optimizer_first_update_uses_schedule_at_zero():
    schedule = fo.linear_lr(0.5, start_factor=0.2, total_iters=4)
    tx = fo.sgd(lr=schedule)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    steps = []
    for _ in range(6):
        updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        steps.append(-float(updates["w"][0]))
    # The update is −lr·1: the schedule's float32 value itself; the first is 0.5·fl32(0.2), two roundings.
    np.testing.assert_array_equal(steps, [float(schedule(c)) for c in range(6)])
    assert steps[0] == pytest.approx(0.1, rel=gamma32(2), abs=0)


def test_float_count_is_floored():
    schedule = fo.step_lr(1.0, step_size=1, gamma=0.5)
    assert float(schedule(2.7)) == 0.25


def test_multiplicative_restart_continues_from_previous_lr():
    """SequentialLR restarts MultiplicativeLR from the lr left by the previous scheduler."""
    sequence = fo.sequential_lr([fo.step_lr(1.0, 2), fo.multiplicative_lr(1.0, lambda e: 0.5)], [3])
    expected = [1.0, 1.0, 0.1, 0.1 * 0.5, 0.1 * 0.25]
    # fl32(0.1)·2⁻ᵏ = fl32(0.1·2⁻ᵏ): each value is one float32 rounding of the expected one.
    np.testing.assert_array_equal([float(sequence(c)) for c in range(5)], np.float32(expected))


def test_one_cycle_pct_start_1_runs_all_updates():
    """Torch fails when stepped after the last update (zero-length phase 2); ours does not."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = S.OneCycleLR(optimizer, 0.1, total_steps=5, pct_start=1.0)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    with pytest.raises(ZeroDivisionError):
        optimizer.step()
        scheduler.step()
    with jax.enable_x64(True):
        ours = _ours(fo.one_cycle_lr(0.1, total_steps=5, pct_start=1.0), 7)
    _assert_matches(ours[:5], lrs)
    assert ours[4] == ours[7] == 0.1
