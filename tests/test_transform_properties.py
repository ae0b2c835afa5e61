"""Properties every optimizer transform must have, over one table of configurations.

The table is the parity catalog (one representative configuration per optimizer family), so a new
optimizer is covered here as soon as it has parity cases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from bounds import EPS32
from conftest import gradients_like, representative_cases, small_params


def _run_steps(tx, params, steps=3, jit=True, scales=None):
    """``steps`` updates; with a ``scales`` list, append each leaf's ``max|p| + UPDATE_ULPS·max|u|``
    summed over the steps (the allowance ``_assert_within_rounding`` gives that leaf)."""
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    total = jax.tree.map(lambda p: 0.0, params)
    for step in range(steps):
        updates, state = update(gradients_like(params, seed=step), state, params)
        params = optax.apply_updates(params, updates)
        total = jax.tree.map(
            lambda t, p, u: t + float(np.max(np.abs(p))) + UPDATE_ULPS * float(np.max(np.abs(u))),
            total,
            params,
            updates,
        )
    if scales is not None:
        scales.extend(jax.tree.leaves(total))
    return params, state


_DEFAULT_RUNS: dict[str, tuple] = {}


def _default_run(case):
    """``_run_steps(case.make_transform(), small_params())`` and its scales, computed once per case:
    five properties below read this same jitted float32 run (one compile instead of five; compiles
    are ~85% of this file's time)."""
    if case.name not in _DEFAULT_RUNS:
        scales = []
        params, state = _run_steps(case.make_transform(), small_params(), scales=scales)
        _DEFAULT_RUNS[case.name] = (params, state, scales)
    return _DEFAULT_RUNS[case.name]


UPDATE_ULPS = 32
"""Two float32 runs of the same update rule that differ only in compilation (jit fusion, FMA
contraction, hyperparameters as traced arrays or folded constants) round differently: each
step's update comes from ≤ ~10 float32 operations on the state and gradient, whose roundings
(½ ulp each, on each side) accumulate over the 3 steps to ≤ 30 eps32 relative to the leaf's
largest update (per leaf: an element cancelling to near 0 is measured against the leaf), and
``p + u`` rounds once per step (eps32 of max|p|). A float32 run cannot resolve an lr changed by
1e-6 (the float64 parity cases do); an lr changed by 1e-4 exceeds this."""


def _assert_within_rounding(ours, reference, scales):
    for a, b, scale in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), scales):
        error = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        assert error <= EPS32 * scale, f"{error:.3e} > {EPS32 * scale:.3e}"


def test_jit_does_not_recompile(case):
    tx = case.make_transform()
    traces = []

    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step)
    params = small_params()
    state = tx.init(params)
    for seed in range(3):
        params, state = step(params, state, gradients_like(params, seed))
    assert len(traces) == 1


def test_jit_matches_eager(case):
    tx = case.make_transform()
    scales = []
    jitted, _, _ = _default_run(case)
    eager, _ = _run_steps(tx, small_params(), jit=False, scales=scales)
    _assert_within_rounding(jitted, eager, scales)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtypes_are_preserved(case, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = small_params(jnp.dtype(dtype))
        if dtype == "float32":
            new_params, state, _ = _default_run(case)
        else:
            new_params, state = _run_steps(case.make_transform(), params)
        for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
            assert after.dtype == before.dtype
            assert bool(jnp.all(jnp.isfinite(after)))
        for leaf in jax.tree.leaves(state):
            if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.ndim > 0:
                assert leaf.dtype == jnp.dtype(dtype), f"state leaf has dtype {leaf.dtype}"


def test_update_changes_params(case):
    params = small_params()
    new_params, _, _ = _default_run(case)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params))]
    assert any(moved)


def test_inside_chain_equals_alone(case):
    alone, _, _ = _default_run(case)
    chained, _ = _run_steps(optax.chain(optax.identity(), case.make_transform()), small_params())
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(chained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_masked_leaves_untouched(case):
    params = small_params()
    mask = {"conv": {"kernel": True}, "dense": {"kernel": True, "bias": False}, "temperature": False}
    masked = optax.chain(
        optax.masked(case.make_transform(), mask),
        optax.masked(optax.set_to_zero(), lambda p: jax.tree.map(lambda m: not m, mask)),
    )
    new_params, _ = _run_steps(masked, params)
    np.testing.assert_array_equal(new_params["dense"]["bias"], params["dense"]["bias"])
    np.testing.assert_array_equal(new_params["temperature"], params["temperature"])
    scales = []
    alone, _ = _run_steps(
        case.make_transform(), {"conv": params["conv"], "dense": {"kernel": params["dense"]["kernel"]}}, scales=scales
    )
    # The same update rule on the same leaf, compiled into another program (masked and chained): only
    # fusion and FMA contraction differ, within UPDATE_ULPS (scales[0] is the conv kernel's).
    _assert_within_rounding([new_params["conv"]["kernel"]], [alone["conv"]["kernel"]], scales[:1])


def test_inject_hyperparams_matches_constant(case):
    injected = optax.inject_hyperparams(case.ours)(**case.kwargs, **case.ours_kwargs)
    with_injection, state = _run_steps(injected, small_params())
    constant, _, scales = _default_run(case)
    _assert_within_rounding(with_injection, constant, scales)
    assert isinstance(state.hyperparams, dict)


def test_mismatched_grads_name_the_path(case):
    tx = case.make_transform()
    params = small_params()
    state = tx.init(params)
    grads = gradients_like(params)
    grads["dense"]["bias"] = jnp.zeros(5)
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\]"):
        tx.update(grads, state, params)
    del grads["dense"]["bias"]
    with pytest.raises(ValueError, match="bias"):
        tx.update(grads, state, params)


def test_integer_params_are_rejected(case):
    tx = case.make_transform()
    with pytest.raises(TypeError, match=r"\['steps'\].*int32"):
        tx.init({"w": jnp.ones(3), "steps": jnp.arange(3, dtype=jnp.int32)})


OPTIMIZER_CASES = [
    case for case in representative_cases() if case.ours.__module__.startswith("functional_optreg.optim")
]
NEEDS_PARAMS = {"adafactor"}
"""Families whose every update needs the parameters (Adafactor's relative step size)."""


def _dtype_mismatch_cases(with_params):
    for case in OPTIMIZER_CASES:
        if with_params or case.family not in NEEDS_PARAMS:
            yield pytest.param(case, with_params, id=f"{case.family}-{'params' if with_params else 'no_params'}")


@pytest.mark.parametrize("case, with_params", [*_dtype_mismatch_cases(True), *_dtype_mismatch_cases(False)])
def test_grads_of_another_dtype_name_the_path(case, with_params):
    """Torch refuses a float32 gradient for a float64 parameter; so do we, naming the path,
    instead of silently computing the state in float32 (without params, the state's dtype is
    the reference)."""
    with jax.enable_x64(True):
        tx = case.make_transform()
        params = small_params(np.float64)
        state = tx.init(params)
        grads = gradients_like(params)
        grads["dense"]["kernel"] = grads["dense"]["kernel"].astype(jnp.float32)
        with pytest.raises(TypeError, match=r"\['dense'\]\['kernel'\] have dtype float32.*float64"):
            tx.update(grads, state, params if with_params else None)


WEIGHT_DECAY_FACTORIES = ["sgd", "adam", "adamax", "adagrad", "nadam", "radam", "rmsprop", "adadelta"]


@pytest.mark.parametrize("name", WEIGHT_DECAY_FACTORIES)
def test_injected_hyperparams_under_jit_need_params_only_for_nonzero_weight_decay(name):
    """``inject_hyperparams`` traces every numeric argument under ``jit``, the default
    ``weight_decay=0.0`` included: an update without params must work while it is 0, and fail
    naming the optimizer once it is set to a non-zero value."""
    import functional_optreg as fo

    tx = optax.inject_hyperparams(getattr(fo, name))(lr=0.01)
    params = small_params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    updates, state = update(gradients_like(params), state)
    with_params, _ = jax.jit(tx.update)(gradients_like(params), tx.init(params), params)
    # Same step with and without params (NAdam rounds its two addcdiv_ terms in torch's order only
    # when given params: the float32 contract, not bitwise).
    for a, b in zip(
        jax.tree.leaves(optax.apply_updates(params, updates)), jax.tree.leaves(optax.apply_updates(params, with_params))
    ):
        np.testing.assert_allclose(a, b, rtol=1.3e-6, atol=1e-5)
    state = fo.set_hyperparams(state, weight_decay=0.1)
    with pytest.raises(Exception, match=f"{name} needs the current parameters for weight_decay"):
        jax.block_until_ready(update(gradients_like(params), state))
