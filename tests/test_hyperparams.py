"""Reading and setting hyperparameters between steps (torch's ``param_groups[i]["lr"] = ...``).

The pattern: wrap the optimizer in ``optax.inject_hyperparams``; read with
``optax.tree.get(state, "lr")``; write with ``fo.set_hyperparams(state, lr=...)``, which keeps the
leaf's dtype so the jitted step is not traced again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo


def _grads(step, params):
    rng = np.random.default_rng(step)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def _counting_step(tx):
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    return step, traces


def test_setting_lr_does_not_retrace_and_changes_the_update():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    tx = optax.inject_hyperparams(fo.adam)(lr=1e-2, weight_decay=0.1)
    step, traces = _counting_step(tx)
    state = tx.init(params)
    assert float(optax.tree.get(state, "lr")) == pytest.approx(1e-2)
    for index in range(3):
        params, state, _ = step(params, state, _grads(index, params))
    state = fo.set_hyperparams(state, lr=3e-4, weight_decay=0.5)
    assert float(optax.tree.get(state, "lr")) == pytest.approx(3e-4)
    inner = state.inner_state
    params_after, state, updates = step(params, state, _grads(3, params))
    assert len(traces) == 1
    expected, _ = fo.adam(lr=3e-4, weight_decay=0.5).update(_grads(3, params), inner, params)
    for ours, theirs in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6)
    assert float(optax.tree.get(state, "lr")) == pytest.approx(3e-4)


def test_bare_python_float_retraces_which_set_hyperparams_avoids():
    params = {"w": jnp.ones(4)}
    tx = optax.inject_hyperparams(fo.sgd)(lr=0.1, momentum=0.9)
    step, traces = _counting_step(tx)
    state = tx.init(params)
    params, state, _ = step(params, state, _grads(0, params))
    params, state, _ = step(params, fo.set_hyperparams(state, lr=0.05), _grads(1, params))
    assert len(traces) == 1
    params, state, _ = step(params, optax.tree.set(state, lr=0.01), _grads(2, params))
    assert len(traces) == 2


def test_changing_lr_and_momentum_between_steps_matches_torch_param_groups():
    """Set lr at step 7 and momentum at step 12 on both sides; parameters agree in float64."""
    changes = {7: dict(lr=0.02), 12: dict(momentum=0.5), 15: dict(lr=0.2, momentum=0.95)}
    rng = np.random.default_rng(0)
    init = {"kernel": rng.normal(size=(3, 2)), "bias": np.zeros(2)}
    target = jax.tree.map(lambda p: rng.normal(size=p.shape), init)

    def grad(params):
        return jax.tree.map(lambda p, t: p - t, params, target)

    with jax.enable_x64(True):
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
        optimizer = torch.optim.SGD(list(tensors.values()), lr=0.1, momentum=0.9, nesterov=True)
        # fo.sgd checks nesterov against a zero dampening at construction: keep dampening static.
        tx = optax.inject_hyperparams(fo.sgd, static_args=("nesterov", "dampening"))(
            lr=0.1, momentum=0.9, nesterov=True
        )
        params = jax.tree.map(jnp.asarray, init)
        state = tx.init(params)
        step = jax.jit(lambda p, s, g: tx.update(g, s, p))
        for index in range(20):
            for name, value in changes.get(index, {}).items():
                optimizer.param_groups[0][name] = value
                state = fo.set_hyperparams(state, **{name: value})
            for name, tensor in tensors.items():
                tensor.grad = torch.from_numpy(grad({k: t.detach().numpy() for k, t in tensors.items()})[name])
            optimizer.step()
            updates, state = step(params, state, grad(params))
            params = optax.apply_updates(params, updates)
            for name, tensor in tensors.items():
                np.testing.assert_allclose(np.asarray(params[name]), tensor.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert step._cache_size() == 1


def test_scheduled_lr_is_exposed_as_the_lr_of_the_latest_update():
    schedule = fo.step_lr(0.1, step_size=2, gamma=0.5)
    tx = optax.inject_hyperparams(fo.sgd)(lr=schedule, momentum=0.9)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    seen = [float(state.hyperparams["lr"])]
    for index in range(5):
        _, state = tx.update(_grads(index, params), state, params)
        seen.append(float(state.hyperparams["lr"]))
    np.testing.assert_allclose(seen, [float(schedule(0))] + [float(schedule(c)) for c in range(5)], rtol=1e-7)
    np.testing.assert_allclose(float(schedule(state.count)), 0.025, rtol=1e-7)


def test_set_hyperparams_inside_a_chain_and_unknown_name():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(fo.adamw)(lr=1e-3))
    state = tx.init({"w": jnp.ones(2)})
    state = fo.set_hyperparams(state, lr=5e-4, weight_decay=0.2)
    assert float(optax.tree.get(state, "lr")) == pytest.approx(5e-4)
    assert optax.tree.get(state, "weight_decay").dtype == jnp.float32
    with pytest.raises(KeyError, match="'momentum' is not in this state"):
        fo.set_hyperparams(state, momentum=0.9)
