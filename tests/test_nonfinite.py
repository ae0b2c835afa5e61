"""fo.nonfinite_policy: propagate, raise (eager and under jit), skip (against torch skipping)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import default_params
from parity.schedules_for_cases import exponential_lr

NAN_STEPS = {3: "nan", 17: "inf", 18: "-inf", 40: "nan"}
"""Steps of the stream whose gradient gets a non-finite element (two in a row at 17/18)."""


def _poisoned(gradient):
    def poisoned(step, leaves):
        grads = [np.array(g) for g in gradient(step, leaves)]
        if step in NAN_STEPS:
            grads[step % len(grads)].reshape(-1)[0] = float(NAN_STEPS[step])
        return grads

    return poisoned


class _SkipNonfinite:
    """A torch optimizer whose step is skipped when any gradient is nan/inf (GradScaler's rule)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.skipped = 0

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]]
        if all(bool(torch.isfinite(g).all()) for g in grads):
            self.optimizer.step()
        else:
            self.skipped += 1


TORCH_CONFIGS = [
    ("sgd", fo.sgd, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    ("adam", fo.adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    ("adamw", fo.adamw, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ("nadam", fo.nadam, torch.optim.NAdam, dict(lr=0.01)),
    ("rmsprop", fo.rmsprop, torch.optim.RMSprop, dict(lr=0.01, centered=True)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, ours, torch_class, kwargs", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_skip_matches_torch_skipping_the_step(name, ours, torch_class, kwargs, dtype):
    params = default_params()
    skippers = []

    def build(tensors):
        skippers.append(_SkipNonfinite(torch_class(tensors, **kwargs)))
        return skippers[-1]

    report = verify.compare(
        torch_optimizer=build,
        transform=fo.nonfinite_policy(ours(**kwargs), "skip"),
        params=params,
        gradient=_poisoned(verify.quadratic_gradients(jax.tree.leaves(params))),
        steps=60,
        dtype=dtype,
        name=f"skip/{name}",
    )
    assert report.passed, str(report)
    assert skippers[0].skipped == len(NAN_STEPS)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, ours, torch_class, kwargs", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_skip_with_a_schedule_follows_torchs_amp_loop(name, ours, torch_class, kwargs, dtype):
    """``scaler.step(optimizer); scheduler.step()``: the scheduler advances on skipped steps too."""
    params = default_params()
    schedule, torch_exponential_lr = exponential_lr(kwargs["lr"], 0.95)
    skippers = []

    def build(tensors):
        skippers.append(_SkipNonfinite(torch_class(tensors, **kwargs)))
        return skippers[-1]

    report = verify.compare(
        torch_optimizer=build,
        transform=fo.nonfinite_policy(
            optax.inject_hyperparams(ours)(**{**kwargs, "lr": schedule}),
            "skip",
        ),
        params=params,
        gradient=_poisoned(verify.quadratic_gradients(jax.tree.leaves(params))),
        steps=60,
        dtype=dtype,
        torch_scheduler=lambda skipper: torch_exponential_lr(skipper.optimizer),
        name=f"skip+schedule/{name}",
    )
    assert report.passed, str(report)
    assert skippers[0].skipped == len(NAN_STEPS)


def test_skip_with_schedules_following_steps_freezes_them():
    tx = fo.nonfinite_policy(
        optax.inject_hyperparams(fo.sgd)(lr=lambda count: 0.1 / (1 + count)), "skip", schedules="steps"
    )
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for grad in ([1.0, jnp.nan], [1.0, 1.0]):
        updates, state = tx.update({"w": jnp.array(grad)}, state, params)
    # The frozen schedule's lr at count 0, 0.1 / 1 stored in float32, times g = 1: −fl32(0.1) exactly.
    np.testing.assert_array_equal(updates["w"], np.float32([-0.1, -0.1]))
    assert int(state.inner_state.count) == 1


def test_skip_leaves_the_state_untouched_and_counts_skips():
    tx = fo.nonfinite_policy(fo.adam(lr=0.1, weight_decay=0.1), "skip")
    params = {"w": jnp.arange(3.0), "b": jnp.zeros([])}
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates, state = step({"w": jnp.ones(3), "b": jnp.ones([])}, state, params)
    params = optax.apply_updates(params, updates)
    before = state
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        updates, state = step({"w": jnp.array([1.0, bad, 1.0]), "b": jnp.ones([])}, state, params)
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    for kept, now in zip(jax.tree.leaves(before.inner_state), jax.tree.leaves(state.inner_state)):
        np.testing.assert_array_equal(kept, now)
    assert int(state.total_notfinite) == 3
    assert int(state.notfinite_count) == 3
    assert not bool(state.last_finite)
    updates, state = step({"w": jnp.ones(3), "b": jnp.ones([])}, state, params)
    assert int(state.inner_state.step) == 2
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3


def test_skip_with_max_consecutive_errors_gives_up_like_optax():
    tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "skip", max_consecutive_errors=1)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.array([jnp.nan, 1.0])}
    updates, state = tx.update(grads, state, params)
    assert bool(jnp.all(updates["w"] == 0))
    updates, state = tx.update(grads, state, params)
    assert bool(jnp.isnan(updates["w"][0]))


def test_propagate_is_the_transform_itself_and_spreads_nan():
    inner = fo.adam(lr=0.1)
    tx = fo.nonfinite_policy(inner, "propagate")
    assert tx is inner
    params = {"w": jnp.ones(2)}
    updates, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, tx.init(params), params)
    assert bool(jnp.isnan(updates["w"][0])) and bool(jnp.isnan(state.exp_avg["w"][0]))


def test_raise_eagerly_names_the_first_nonfinite_leaf():
    tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "raise")
    params = {"a": jnp.ones(2), "b": {"c": jnp.ones(2), "d": jnp.ones(2)}}
    grads = {"a": jnp.ones(2), "b": {"c": jnp.array([1.0, jnp.inf]), "d": jnp.array([jnp.nan, 0.0])}}
    with pytest.raises(RuntimeError, match=r"Non-finite gradients \(nan or inf\) at \['b'\]\['c'\] and 1 more"):
        tx.update(grads, tx.init(params), params)


def test_raise_under_jit_raises_when_run():
    inner = fo.adam(lr=0.1)
    tx = fo.nonfinite_policy(inner, "raise")
    params = {"w": jnp.ones(3)}

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    new_params, new_state = step(params, state, {"w": jnp.full(3, 0.5)})
    reference, _ = inner.update({"w": jnp.full(3, 0.5)}, inner.init(params), params)
    np.testing.assert_array_equal(new_params["w"], optax.apply_updates(params, reference)["w"])
    with pytest.raises(RuntimeError, match=r"Non-finite gradients \(nan or inf\) at \['w'\]"):
        jax.block_until_ready(step(new_params, new_state, {"w": jnp.array([0.0, jnp.nan, 0.0])}))


def test_raise_under_jit_inside_original_errors_gives_the_message_first():
    """A user's ``jax.jit`` step: the JaxRuntimeError's text starts with jaxlib's callback report
    (tests/test_device_errors.py checks its form); inside fo.original_errors the RuntimeError
    itself comes back."""
    tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "raise")
    params = {"layer": {"w": jnp.ones(3), "b": jnp.ones(2)}}
    step = jax.jit(tx.update)
    grads = {"layer": {"w": jnp.ones(3), "b": jnp.array([jnp.inf, 0.0])}}
    with pytest.raises(RuntimeError) as raw:
        jax.block_until_ready(step(grads, tx.init(params), params))
    assert type(raw.value) is not RuntimeError
    with pytest.raises(RuntimeError) as ours:
        with fo.original_errors():
            jax.block_until_ready(step(grads, tx.init(params), params))
    assert type(ours.value) is RuntimeError
    assert str(ours.value).startswith("Non-finite gradients (nan or inf) at ['layer']['b']: the optimizer step")


def test_raise_under_vmap_checks_every_member():
    tx = fo.nonfinite_policy(fo.sgd(lr=0.1), "raise")
    params = {"w": jnp.ones((4, 2))}
    state = jax.vmap(tx.init)(params)
    fine = jax.vmap(tx.update)({"w": jnp.ones((4, 2))}, state, params)[0]
    assert fine["w"].shape == (4, 2)
    bad = {"w": jnp.ones((4, 2)).at[2, 1].set(jnp.inf)}
    with pytest.raises(RuntimeError, match="Non-finite gradients"):
        jax.block_until_ready(jax.jit(jax.vmap(tx.update))(bad, state, params))


def test_policy_is_validated():
    with pytest.raises(ValueError, match=r"policy must be one of \('propagate', 'raise', 'skip'\), got 'ignore'"):
        fo.nonfinite_policy(fo.sgd(0.1), "ignore")
    with pytest.raises(ValueError, match="max_consecutive_errors only applies to policy='skip'"):
        fo.nonfinite_policy(fo.sgd(0.1), "raise", max_consecutive_errors=3)
    with pytest.raises(ValueError, match="max_consecutive_errors must be >= 0, got -1"):
        fo.nonfinite_policy(fo.sgd(0.1), "skip", max_consecutive_errors=-1)


def test_empty_tree_is_finite():
    for policy in ("raise", "skip"):
        tx = fo.nonfinite_policy(fo.adam(0.1), policy)
        updates, _ = tx.update({}, tx.init({}), {})
        assert updates == {}


INFINITE_PARAMETER_CASES = [
    ("adam", "Adam", {"lr": 0.1, "weight_decay": 0.0}),
    ("adamw", "AdamW", {"lr": 0.1, "weight_decay": 0.0}),
    ("adamw", "AdamW", {"lr": 0.1, "weight_decay": 0.01}),
    ("nadam", "NAdam", {"lr": 0.1, "weight_decay": 0.0}),
    ("radam", "RAdam", {"lr": 0.1, "weight_decay": 0.0}),
    ("asgd", "ASGD", {"lr": 0.1, "weight_decay": 0.0}),
]


@pytest.mark.parametrize("inject", [False, True], ids=["constant", "injected"])
@pytest.mark.parametrize("name, torch_name, kwargs", INFINITE_PARAMETER_CASES, ids=lambda v: str(v))
def test_an_infinite_parameter_stays_where_torch_keeps_it(name, torch_name, kwargs, inject):
    """torch skips ``grad.add(param, alpha=0)`` and multiplies an infinite parameter by a positive
    decay factor, so ±inf stays ±inf; ``g + 0·inf`` or ``p + (−lr·wd·p)`` would make it NaN (the
    injected case traces the zero weight decay)."""
    factory = getattr(fo, name)
    start = np.array([np.inf, 1.0, -np.inf])
    with jax.enable_x64(True):
        tx = optax.inject_hyperparams(factory)(**kwargs) if inject else factory(**kwargs)
        params = {"w": jnp.asarray(start)}
        updates, _ = jax.jit(tx.update)({"w": jnp.full(3, 0.5)}, tx.init(params), params)
        ours = np.asarray(optax.apply_updates(params, updates)["w"])
    tensor = torch.tensor(start, requires_grad=True)
    optimizer = getattr(torch.optim, torch_name)([tensor], **kwargs)
    tensor.grad = torch.full((3,), 0.5, dtype=torch.float64)
    optimizer.step()
    np.testing.assert_array_equal(ours, tensor.detach().numpy())
