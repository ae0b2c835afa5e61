"""fo.reduce_lr_on_plateau: state against torch's attributes after every metric, and the protocol."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo

CONFIGS = {
    "defaults": dict(),
    "min_rel_patience_0": dict(factor=0.5, patience=0),
    "min_abs_cooldown": dict(factor=0.3, patience=1, threshold=0.05, threshold_mode="abs", cooldown=2),
    "max_rel": dict(mode="max", factor=0.5, patience=2, threshold=0.01),
    "max_abs_cooldown": dict(mode="max", factor=0.7, patience=1, threshold=0.1, threshold_mode="abs", cooldown=3),
    "min_lr_and_eps": dict(factor=0.2, patience=0, min_lr=1e-3, eps=1e-4),
    "eps_blocks": dict(factor=0.5, patience=0, eps=0.02),
}


def _metrics(seed, count=60):
    """A noisy metric that improves, stalls, gets worse and repeats values exactly (ties)."""
    rng = np.random.default_rng(seed)
    trend = np.concatenate([np.linspace(5.0, 1.0, 15), np.full(15, 1.0), np.linspace(1.0, 2.0, 15), np.full(15, 0.5)])
    values = trend[:count] + 0.05 * rng.normal(size=count)
    values[20:24] = values[19]
    return values


def _torch_trajectory(config, metrics, lr):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **config)
    rows = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        rows.append(
            (
                scheduler.get_last_lr()[0],
                scheduler.best,
                scheduler.num_bad_epochs,
                scheduler.cooldown_counter,
                scheduler.last_epoch,
            )
        )
    return rows


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_matches_torch_after_every_metric(name, seed):
    config, lr = CONFIGS[name], 0.1
    metrics = _metrics(seed)
    if config.get("mode") == "max":
        metrics = -metrics
    expected = _torch_trajectory(config, metrics, lr)
    with jax.enable_x64(True):
        tx = fo.reduce_lr_on_plateau(lr, **config)
        update = jax.jit(tx.update)
        state = tx.init({"w": jnp.zeros(1)})
        updates = {"w": jnp.ones(1)}
        for index, (metric, row) in enumerate(zip(metrics, expected)):
            lr_before = float(state.last_lr)
            scaled, state = update(updates, state, value=metric)
            assert float(scaled["w"][0]) == pytest.approx(lr_before / lr, rel=1e-15)
            ours = (
                float(state.last_lr),
                float(state.best),
                int(state.num_bad_epochs),
                int(state.cooldown_counter),
                int(state.last_epoch),
            )
            assert ours == row, f"metric {index}: ours {ours}, torch {row}"
    assert len({row[0] for row in expected}) > 1, "the metric stream should trigger a reduction"


def test_nan_metric_counts_as_bad():
    tx = fo.reduce_lr_on_plateau(1.0, factor=0.5, patience=1)
    state = tx.init(None)
    for metric in [1.0, float("nan"), float("nan")]:
        _, state = tx.update({}, state, value=metric)
    assert float(state.last_lr) == 0.5
    assert float(state.best) == 1.0


def test_missing_metric_is_a_clear_error():
    tx = fo.reduce_lr_on_plateau(0.1)
    with pytest.raises(TypeError, match="value=metric"):
        tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


def test_chained_after_optimizer_reads_value_and_rescales_every_leaf():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)}
    tx = optax.chain(fo.adam(lr=0.01), fo.reduce_lr_on_plateau(0.01, factor=0.5, patience=0))
    reference = fo.adam(lr=0.01)
    state, ref_state = tx.init(params), reference.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    step = jax.jit(tx.update)
    traces = []
    for metric in [2.0, 3.0, 3.0, 1.0]:
        scale = float(optax.tree.get(state, "last_lr")) / 0.01
        updates, state = step(grads, state, params, value=jnp.float32(metric))
        ref_updates, ref_state = reference.update(grads, ref_state, params)
        for ours, ref in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates)):
            assert ours.dtype == ref.dtype
            np.testing.assert_allclose(
                np.asarray(ours, np.float32),
                scale * np.asarray(ref, np.float32),
                rtol=1e-2 if ours.dtype == jnp.bfloat16 else 1e-6,
            )
        traces.append(scale)
    assert traces == pytest.approx([1.0, 1.0, 0.5, 0.25], rel=1e-6)


def test_state_dtypes_follow_the_default_float():
    state = fo.reduce_lr_on_plateau(0.1).init(None)
    assert state.last_lr.dtype == jnp.float32 and state.best.dtype == jnp.float32
    assert float(state.best) == np.inf
    assert fo.reduce_lr_on_plateau(0.1, mode="max").init(None).best == -np.inf
    assert state.num_bad_epochs.dtype == jnp.int32
