"""fo.reduce_lr_on_plateau: state against torch's attributes after every metric, and the protocol."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import BF16_EPS, U32, gamma32, gamma64

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
            # One float64 division each side (≤ u, and only if the operands differ in form): ≤ 2u apart.
            assert float(scaled["w"][0]) == pytest.approx(lr_before / lr, rel=gamma64(2), abs=0)
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


def test_update_without_a_metric_decides_nothing():
    tx = fo.reduce_lr_on_plateau(0.1, factor=0.5, patience=0)
    params = {"w": jnp.ones(1)}
    state = tx.update(params, tx.init(params), value=2.0)[1]
    state = tx.update(params, state, value=3.0)[1]  # bad metric: the next lr is halved
    updates, after = tx.update(params, state)
    assert after == state
    assert float(updates["w"][0]) == 0.5


def _word_language_model_loop(steps_per_epoch=4, epochs=10, hand_over_epoch=None):
    """SGD + clip_grad_norm_(0.25) + ReduceLROnPlateau(factor 0.25, patience 0) stepped once per
    epoch on a validation metric (pytorch/examples word_language_model divides lr by 4 when the
    validation loss stalls), torch next to ``chain(clip, sgd, plateau)`` given ``value=`` only at
    the end of each epoch; with ``hand_over_epoch``, the JAX side starts there from fo.from_torch."""
    rng = np.random.default_rng(3)
    target = rng.normal(size=5)
    init = rng.normal(size=5)

    def grad(p, count):
        shift = torch.tensor(target) if isinstance(p, torch.Tensor) else jnp.asarray(target)
        return (p - shift) * (1.0 + 0.1 * count)

    def metric(epoch):  # improves, then stalls: the lr is cut after epochs 4 and 6
        return [5.0, 4.0, 3.0, 2.5, 2.6, 2.4, 2.45, 2.3, 2.2, 2.1][epoch]

    with jax.enable_x64(True):
        w = torch.nn.Parameter(torch.tensor(init))
        optimizer = torch.optim.SGD([w], lr=2.0)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.25, patience=0)
        tx = optax.chain(fo.clip_grad_norm(0.25), fo.sgd(lr=2.0), fo.reduce_lr_on_plateau(2.0, factor=0.25, patience=0))
        update = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
        update_no_metric = jax.jit(lambda g, s, p: tx.update(g, s, p))
        params = jnp.asarray(init)
        state = tx.init(params)
        errors, lrs = [], []
        for epoch in range(epochs):
            if epoch == hand_over_epoch:
                bridged, bridged_state = fo.from_torch(optimizer, scheduler, update_count=epoch * steps_per_epoch)
                clip = fo.clip_grad_norm(0.25)
                tx = optax.chain(clip, bridged)
                state = (clip.init([params]), bridged_state)
                update = jax.jit(lambda g, s, p, v: tx.update([g], s, [p], value=v))
                update_no_metric = jax.jit(lambda g, s, p: tx.update([g], s, [p]))
                params = jnp.asarray(w.detach().numpy())
            for step in range(steps_per_epoch):
                count = epoch * steps_per_epoch + step
                w.grad = grad(w.detach(), count).clone()
                torch.nn.utils.clip_grad_norm_([w], 0.25)
                optimizer.step()
                g = grad(params, count)
                if step == steps_per_epoch - 1:
                    updates, state = update(g, state, params, metric(epoch))
                else:
                    updates, state = update_no_metric(g, state, params)
                updates = updates[0] if isinstance(updates, list) else updates
                params = params + updates
                errors.append(float(jnp.max(jnp.abs(params - w.detach().numpy())) / np.max(np.abs(w.detach().numpy()))))
            scheduler.step(metric(epoch))
            lrs.append(optimizer.param_groups[0]["lr"])
        return errors, lrs


def test_plateau_once_per_epoch_matches_torch():
    errors, lrs = _word_language_model_loop()
    assert lrs == [2.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.125, 0.125, 0.125, 0.125]
    assert max(errors) <= 1e-12, errors


@pytest.mark.parametrize("hand_over_epoch", [1, 5])
def test_plateau_once_per_epoch_through_the_bridge(hand_over_epoch):
    """Epoch 1: 4 updates and one metric fit 3 or 4 updates per epoch, which a plateau scheduler
    does not need to know (it decides when given a metric)."""
    errors, _ = _word_language_model_loop(hand_over_epoch=hand_over_epoch)
    assert max(errors) <= 1e-12, errors


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
            # scale is a power of two times fl32(0.01)/0.01 (≤ U32 off it); ours is the scaled update rounded to the
            # leaf's dtype: float32 ≤ 2 roundings apart, bfloat16 both sides a rounding of nearly the same value, so
            # at most one bfloat16 ulp apart (≤ BF16_EPS relative).
            np.testing.assert_allclose(
                np.asarray(ours, np.float32),
                scale * np.asarray(ref, np.float32),
                rtol=BF16_EPS + U32 if ours.dtype == jnp.bfloat16 else gamma32(3),
            )
        traces.append(scale)
    assert traces == pytest.approx([1.0, 1.0, 0.5, 0.25], rel=U32, abs=0)  # fl32(0.01)·2⁻ᵏ / 0.01


def test_state_dtypes_follow_the_default_float():
    state = fo.reduce_lr_on_plateau(0.1).init(None)
    assert state.last_lr.dtype == jnp.float32 and state.best.dtype == jnp.float32
    assert float(state.best) == np.inf
    assert fo.reduce_lr_on_plateau(0.1, mode="max").init(None).best == -np.inf
    assert state.num_bad_epochs.dtype == jnp.int32
