"""The differential tester: a fixed-seed slice in CI, its ability to find and shrink a bug, and
the first-found reproducers of the bugs it found, kept as regressions.

Longer runs: ``python -m parity fuzz --minutes 30 --seed S``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from functional_optreg import _scalars
from functional_optreg.optimizers._records import RECORDS
from parity import __main__ as cli
from parity import fuzz
from parity.fuzz import Config

SLICE_SEED = 2042
SLICE_COUNT = 24
"""A seed whose first 24 configurations hold every feature the coverage test asks for."""


def test_fixed_seed_slice_matches_torch():
    log = io.StringIO()
    ran, steps, failures = fuzz.fuzz(SLICE_SEED, count=SLICE_COUNT, log=lambda text: log.write(text + "\n"))
    assert (ran, steps) == (SLICE_COUNT, SLICE_COUNT * fuzz.STEPS)
    assert not failures, log.getvalue()


def test_the_slice_covers_optimizers_lr_kinds_hostile_gradients_and_events():
    rng = np.random.default_rng(SLICE_SEED)
    configs = [fuzz.generate(rng) for _ in range(SLICE_COUNT)]
    assert len({c.optimizer for c in configs}) >= 9
    assert {c.lr_kind for c in configs} == set(fuzz.LR_KINDS)
    kinds = {kind for c in configs for *_, kind in c.specials}
    assert {"nan", "inf", "zero"} <= kinds
    assert {event[1] for c in configs for event in c.events} == set(fuzz.EVENT_KINDS)
    assert any(len(event) == 5 for c in configs for event in c.events), "a set event for one param group"
    assert any(len(c.groups) == 2 and any(overrides for _, overrides in c.groups) for c in configs)
    assert any(c.epoch > 1 for c in configs), "a scheduler stepped per epoch"
    assert any(c.bridge and c.lr_kind == "schedule" for c in configs)
    assert any(() in c.shapes for c in configs) and any((0,) in c.shapes for c in configs)


_ADAM_AS_ADAMW = dataclasses.replace(RECORDS["AdamW"], factory_name="adam")
"""A wrong record: fo.adam posing as torch's AdamW (weight decay 0 vs 0.01)."""


def test_the_sampled_optimizers_are_records_and_set_only_settable_hyperparameters():
    for name, optimizer in fuzz.OPTIMIZERS.items():
        assert optimizer.record is RECORDS[optimizer.record.torch_name] and name == optimizer.record.factory_name
        accepted = inspect.signature(optimizer.record.load_factory()).parameters
        assert set(optimizer.choices) <= set(accepted) and set(optimizer.settable) <= set(accepted), name
        assert not set(optimizer.settable) & set(optimizer.record.structural), name


def test_a_wrong_optimizer_is_found_shrunk_and_reproduced(monkeypatch):
    """``fo.adam`` posing as torch's AdamW (weight decay 0 vs 0.01) must fail, shrink to one leaf
    without events or specials, and its printed reproducer must replay the failure."""
    monkeypatch.setitem(fuzz.OPTIMIZERS, "wrong", fuzz.Optimizer(_ADAM_AS_ADAMW, dict(amsgrad=(False, True))))
    config = Config(
        "wrong",
        dict(amsgrad=True),
        0.01,
        "schedule",
        ((3, 4), (5,)),
        specials=((3, 0, 2, "zero"),),
        events=((10, "checkpoint", "", 0),),
    )
    result = fuzz.run(config)
    assert not result.passed
    minimal = fuzz.shrink(result)
    assert not minimal.passed
    assert minimal.config.events == () and minimal.config.specials == () and len(minimal.config.shapes) == 1
    assert minimal.config.kwargs == {} and minimal.config.lr_kind == "float"
    assert minimal.config.steps == 1
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(fuzz.reproducer(minimal), {})  # noqa: S102 - the reproducer is the product under test
    assert output.getvalue().startswith("FAIL wrong")


FIRST_FOUND = [
    # Rprop: jnp.sign(nan) is NaN, torch.sign(nan) is 0 (step sizes poisoned forever).
    Config("rprop", {}, 0.003774352246720921, "float", ((5,),), specials=((1, 0, 94, "nan"),), steps=2, seed=89514544),
    Config(
        "rprop",
        {},
        0.004528606436955579,
        "float",
        ((2, 2, 3, 2),),
        specials=((47, 0, 36, "inf"),),
        steps=48,
        seed=1193421927,
    ),
    # lr as a float32 tensor: torch's float32 scalar arithmetic.
    Config("adamax", {}, 0.019696044787648675, "float32_tensor", ((5,),), steps=1, seed=1549384412),
    Config("adamw", {}, 0.0010013856882956685, "float32_tensor", ((2, 2, 3, 2),), steps=1, seed=44846462),
    Config("adafactor", {}, 0.03430082296161186, "float32_tensor", ((2, 2, 3, 2),), steps=1, seed=1022560767),
    Config("nadam", {}, 0.0020137975355774976, "float32_tensor", ((2, 3, 4),), steps=1, seed=641890153),
    Config("nadam", {}, 0.09261245848408435, "float32_tensor", ((),), steps=1, seed=58832248),
    # Adafactor: torch takes Python's max(1.0, norm) and max(eps2, norm), which ignore a NaN norm.
    Config(
        "adafactor", {}, 0.004378612197465478, "float", ((5,),), specials=((48, 0, 1, "nan"),), steps=49, seed=237493521
    ),
    Config(
        "adafactor",
        {},
        0.0011149743006942556,
        "float",
        ((2, 2, 3, 2),),
        specials=((2, 0, 48, "nan"),),
        steps=3,
        seed=1826633044,
    ),
    # ASGD: an update written as new_p - p turned a parameter torch keeps at -inf into NaN.
    Config(
        "asgd",
        {"maximize": True},
        0.01879034144978157,
        "float",
        ((2, 3, 4),),
        specials=((36, 0, 0, "-inf"),),
        steps=38,
        seed=341047247,
    ),
]


FIRST_FOUND += [
    # SGD with injected hyperparameters (here through fo.from_torch): a traced weight_decay of 0
    # made g + 0 * p NaN for a parameter at -inf; torch skips the add (if weight_decay != 0).
    Config(
        "sgd",
        {"maximize": True},
        0.006103961388685274,
        "float",
        ((5,),),
        specials=((13, 0, 52, "-inf"),),
        steps=15,
        seed=2085231282,
        bridge=True,
    ),
    Config(
        "sgd",
        {"maximize": True},
        0.006103961388685274,
        "float",
        ((5,),),
        specials=((3, 0, 2, "-inf"),),
        events=((1, "set", "lr", 0.005),),
        steps=8,
        seed=2085231282,
    ),
]

FIRST_FOUND += [
    # fo.from_torch took a float32 tensor lr as a float64 hyperparameter (NAdam's float32 lr
    # arithmetic lost, 4.5e-11 at step 1); fo.to_torch_state_dict wrote a float64 tensor lr as a
    # float32 tensor (1.0e-9 after the hand-over).
    Config("nadam", {}, 0.006950009763393818, "float32_tensor", ((3, 4),), steps=1, seed=1097041350, bridge=True),
    Config(
        "sgd",
        {},
        0.030823629881188207,
        "float64_tensor",
        ((3, 4),),
        events=((8, "to_torch", "", 0),),
        steps=9,
        seed=918187863,
        bridge=True,
    ),
]

FIRST_FOUND += [
    # With injected hyperparameters under jit a weight_decay of 0 is traced, so RAdam's (and Adam's,
    # NAdam's, ASGD's) g + 0·p was NaN for a parameter at -inf, where torch skips the add; AdamW's
    # decoupled decay made an infinite parameter NaN too (now decay, then step, as torch).
    Config(
        "radam",
        {},
        0.006103961388685274,
        "float",
        ((5,),),
        specials=((3, 0, 2, "-inf"),),
        events=((1, "set", "lr", 0.005),),
        steps=8,
        seed=2085231282,
    ),
]

FIRST_FOUND += [
    # fo.from_torch of an SGD built with momentum=0 kept momentum static, so setting it raised
    # KeyError; torch's param_groups[0]["momentum"] = 0.6 turns momentum on at the next step.
    Config(
        "sgd",
        {},
        0.002720723030568733,
        "float",
        ((0,),),
        events=((16, "set", "momentum", 0.6),),
        seed=1302366663,
        bridge=True,
    ),
]

FIRST_FOUND += [
    # fo.from_torch kept RMSprop's momentum static, so setting it on a bridged RMSprop(momentum=0.9)
    # raised KeyError naming the settable hyperparameters; torch's param_groups[0]["momentum"] = 0.5
    # works. Without the bridge (inject_hyperparams(fo.rmsprop)), momentum 0 overwrote the buffer
    # with g / avg where torch freezes it (the state 0.27 relative off at step 31) and a later
    # momentum resumed from that.
    Config(
        "rmsprop",
        {"momentum": 0.9},
        0.01,
        "float",
        ((5,), (3, 4)),
        events=((16, "set", "momentum", 0.5), (30, "set", "momentum", 0.0), (40, "set", "momentum", 0.6)),
        seed=7,
        bridge=bridge,
    )
    for bridge in (True, False)
]

FIRST_FOUND += [
    # torch.optim.Adagrad fills every parameter's "sum" from the constructor's
    # initial_accumulator_value and ignores a group's own; fo.param_groups used the group's
    # (1.8e-2 relative at step 1).
    Config(
        "adagrad",
        {"initial_accumulator_value": 0.1},
        0.008,
        "float",
        ((5,), (5,)),
        steps=1,
        groups=((1, {}), (1, {"initial_accumulator_value": 0.0})),
        bridge=bridge,
    )
    # The 30-minute run (seed 20261202) found the bridged one after the fo.param_groups fix:
    # fo.from_torch built the group's transform, and so its fresh state, from the group's value.
    for bridge in (False, True)
]

FIRST_FOUND += [
    # A float32 tensor lr with an injected weight decay: XLA:CPU contracted AdamW's float32
    # 1 - lr * weight_decay into a fused multiply-add, one rounding where torch has two
    # (0.99044806 vs 0.9904481; 6.2e-8 relative at step 1 for float64 parameters).
    Config(
        "adamw",
        {"weight_decay": 0.1},
        0.09551912736962634,
        "float32_tensor",
        ((5,),),
        events=((21, "set", "lr", 0.009551912736962634),),
        steps=22,
        seed=1028700552,
        bridge=bridge,
    )
    for bridge in (False, True)
]

SCALE_1E8 = [
    # Parameters at 1e-8 with lr 0.01: the steps dominate the parameters, which oscillate around
    # 0; every rounding difference grows about fivefold per step. Ours differed from torch's
    # arithmetic too (NAdam's 1 - beta2**step as expm1/log1p, 1.4e-14 off at step 2); now only
    # rounding differs, and torch's own floor is above the contract (3.9e-12, 6.7e-10).
    Config("adafactor", {"beta2_decay": -0.5}, 0.01, "float", ((5,), (3, 4)), 1e-8, seed=0),
    Config("nadam", {"momentum_decay": 0.05}, 0.01, "float", ((5,), (3, 4)), 1e-8, seed=3),
]


@pytest.mark.parametrize("config", FIRST_FOUND + SCALE_1E8, ids=lambda c: f"{c.optimizer}-{c.lr_kind}-{c.scale:g}")
def test_first_found_reproducers_now_pass(config):
    result = fuzz.run(config)
    assert result.passed, str(result)


def test_bias_corrections_are_torchs_double_expression():
    """Torch's ``1 - beta**step`` in Python floats, bit for bit: the expm1/log1p form is more
    accurate and so differs by up to ~1e-13 relative (found at scale 1e-8, where it shows)."""
    steps = np.arange(1, 3001)
    with jax.enable_x64(True):
        for beta in (0.9, 0.99, 0.999, 0.5, 0.8, 0.95, 0.9999):
            ours = np.asarray(_scalars.bias_correction(beta, jnp.asarray(steps)))
            np.testing.assert_array_equal(ours, [1 - beta ** float(step) for step in steps])


def test_decay_factor_is_torchs_float32_expression():
    """A float32 tensor lr's ``1 - lr * weight_decay`` rounds twice in torch; compiled, ours must
    too (XLA:CPU contracted it into one fused multiply-add before), with ``weight_decay`` static
    or traced, in float32 or float64."""
    rng = np.random.default_rng(0)
    lrs = np.exp(rng.uniform(np.log(1e-4), np.log(1.0), 2000)).astype(np.float32)
    decays = np.exp(rng.uniform(np.log(1e-4), np.log(1.0), 2000))
    # torch's adamw: param.mul_(1 - lr * weight_decay), lr a float32 tensor, weight_decay a float
    expected = np.array([(1 - torch.tensor(lr) * float(wd)).item() for lr, wd in zip(lrs, decays)], np.float32)
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            traced = jax.jit(jax.vmap(lambda lr, wd: _scalars.decay_factor(lr, wd, True)))
            np.testing.assert_array_equal(traced(jnp.asarray(lrs), jnp.asarray(decays, dtype)), expected)
        static = jax.jit(lambda lr: _scalars.decay_factor(lr, float(decays[0]), True))
        assert static(jnp.asarray(lrs[0])) == expected[0]


def test_a_wrong_formula_fails_where_torch_is_chaotic(monkeypatch):
    """Torch's own floor lifts the bound only to ALLOWANCE x the floor: AdamW's decay missing
    (fo.adam posing as AdamW) is still found in a configuration that amplifies rounding."""
    monkeypatch.setitem(fuzz.OPTIMIZERS, "wrong", fuzz.Optimizer(_ADAM_AS_ADAMW, {}))
    chaotic = Config("wrong", {}, 0.01, "float", ((5,), (3, 4)), 1e-8, seed=3)
    result = fuzz.run(chaotic)
    assert not result.passed and "floor" in result.detail, str(result)


def test_floors_of_a_stable_configuration_are_within_the_contract():
    floors = fuzz.torch_floors(Config("adam", {}, 0.01, "float", ((5,), (3, 4)), seed=3))
    assert floors.shape == (fuzz.STEPS,) and 0 < np.max(floors) <= 1e-12


def test_cli_runs_a_counted_fuzz(capsys):
    assert cli.main(["fuzz", "--count", "2", "--seed", "1"]) == 0
    assert "fuzz: 2 configurations, 100 steps compared, 0 failed" in capsys.readouterr().out
