"""fo.swa / fo.ema / fo.averaged_model / fo.swalr / fo.update_bn against torch.optim.swa_utils."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import swa_utils

import functional_optreg as fo


def _tree(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"kernel": jnp.asarray(rng.normal(size=(3, 2)), dtype), "bias": jnp.asarray(rng.normal(size=2), dtype)}


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_ema_decay_validation_matches_torch(decay):
    with pytest.raises(ValueError) as theirs:
        swa_utils.get_ema_multi_avg_fn(decay)
    with pytest.raises(ValueError) as ours:
        fo.ema(decay)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("kwargs", [dict(anneal_strategy="exp"), dict(anneal_epochs=-1), dict(anneal_epochs=2.5)])
def test_swalr_validation_matches_torch(kwargs):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError) as theirs:
        swa_utils.SWALR(optimizer, swa_lr=0.01, **kwargs)
    with pytest.raises(ValueError) as ours:
        fo.swalr(lr=0.1, swa_lr=0.01, **kwargs)
    assert str(ours.value) == str(theirs.value)


# --- SWALR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "anneal_epochs, anneal_strategy", [(10, "cos"), (7, "linear"), (1, "cos"), (0, "cos"), (0, "linear")]
)
def test_swalr_matches_torch_scheduler_lr_sequence(anneal_epochs, anneal_strategy):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    scheduler = swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy)
    theirs = []
    for _ in range(25):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    schedule = fo.swalr(lr=0.3, swa_lr=0.05, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy)
    with jax.enable_x64(True):
        ours = [float(schedule(jnp.asarray(count, jnp.int32))) for count in range(25)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-14)
    assert theirs[-1] == pytest.approx(0.05)


def test_swalr_is_jittable():
    schedule = jax.jit(fo.swalr(lr=0.1, swa_lr=0.01))
    assert schedule(0) == pytest.approx(0.1) and schedule(50) == pytest.approx(0.01)


# --- averagers: state and rules ---------------------------------------------------------------------


def test_first_update_copies_the_model_exactly():
    for averager in (fo.swa(), fo.ema(0.999), fo.ema(0.2, lerp=False)):
        state = averager.init(_tree(0))
        state = averager.update(_tree(1), state)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(_tree(1))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert state.n_averaged.dtype == jnp.int32 and int(state.n_averaged) == 1


def test_swa_is_the_running_mean():
    averager = fo.swa()
    state = averager.init(_tree(0))
    trees = [_tree(seed) for seed in range(1, 8)]
    for tree in trees:
        state = averager.update(tree, state)
    expected = jax.tree.map(lambda *leaves: np.mean(np.stack(leaves), axis=0), *trees)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)


def test_init_copies_and_update_before_first_call_is_the_initial_model():
    state = fo.ema().init(_tree(0))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(_tree(0))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(state.n_averaged) == 0 and state.buffers is None


def test_buffers_are_copied_without_use_buffers_and_averaged_with_it():
    buffers_seq = [{"running_mean": jnp.full(2, value)} for value in (1.0, 3.0, 8.0)]
    copied, averaged = fo.swa(), fo.swa(use_buffers=True)
    state_c = copied.init(_tree(0), {"running_mean": jnp.zeros(2)})
    state_a = averaged.init(_tree(0), {"running_mean": jnp.zeros(2)})
    for buffers in buffers_seq:
        state_c = copied.update(_tree(1), state_c, buffers)
        state_a = averaged.update(_tree(1), state_a, buffers)
    np.testing.assert_array_equal(np.asarray(state_c.buffers["running_mean"]), [8.0, 8.0])
    np.testing.assert_allclose(np.asarray(state_a.buffers["running_mean"]), [4.0, 4.0])


def test_buffers_given_to_init_must_be_given_to_update():
    averager = fo.swa()
    with pytest.raises(ValueError, match="buffers must be given to update exactly when"):
        averager.update(_tree(1), averager.init(_tree(0), {"b": jnp.zeros(1)}))
    with pytest.raises(ValueError, match="buffers must be given to update exactly when"):
        averager.update(_tree(1), averager.init(_tree(0)), {"b": jnp.zeros(1)})


def test_mismatched_params_name_the_path():
    averager = fo.ema()
    state = averager.init(_tree(0))
    wrong = _tree(1)
    wrong["bias"] = jnp.zeros(5)
    with pytest.raises(ValueError, match=r"\['bias'\]"):
        averager.update(wrong, state)


def test_dtype_of_the_average_is_kept():
    averager = fo.ema(0.9)
    state = averager.init(jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(0)))
    state = averager.update(_tree(1), averager.update(_tree(2), state))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(state.params))


def test_update_jits_once_and_scans():
    traces = []
    averager = fo.ema(0.9)

    @jax.jit
    def update(params, state):
        traces.append(1)
        return averager.update(params, state)

    state = averager.init(_tree(0))
    for seed in range(1, 4):
        state = update(_tree(seed), state)
    assert len(traces) == 1

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[_tree(seed) for seed in range(1, 4)])
    scanned, _ = jax.lax.scan(lambda s, p: (averager.update(p, s), None), averager.init(_tree(0)), stacked)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_traced_decay_works_under_jit():
    averager_of = lambda decay: fo.ema(decay)  # noqa: E731

    @jax.jit
    def run(decay):
        averager = averager_of(decay)
        state = averager.init(_tree(0))
        return averager.update(_tree(2), averager.update(_tree(1), state)).params

    eager = fo.ema(0.3)
    state = eager.update(_tree(2), eager.update(_tree(1), eager.init(_tree(0))))
    for a, b in zip(jax.tree.leaves(run(0.3)), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


# --- against AveragedModel with a real BatchNorm model (integer num_batches_tracked) ----------------


def _torch_bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def _named(module, buffers):
    items = module.named_buffers() if buffers else module.named_parameters()
    return {name: jnp.asarray(tensor.detach().numpy().copy()) for name, tensor in items}


@pytest.mark.parametrize(
    "ours, torch_kwargs",
    [
        (lambda: fo.swa(use_buffers=True), dict(use_buffers=True)),
        (lambda: fo.swa(), dict()),
        (
            lambda: fo.ema(0.6, use_buffers=True),
            dict(use_buffers=True, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.6)),
        ),
        (
            lambda: fo.ema(0.7, use_buffers=True, lerp=False),
            dict(use_buffers=True, avg_fn=swa_utils.get_ema_avg_fn(0.7)),
        ),
    ],
)
def test_matches_averaged_model_on_a_batchnorm_model(ours, torch_kwargs):
    with jax.enable_x64(True):
        model = _torch_bn_model()
        averaged = swa_utils.AveragedModel(model, **torch_kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        averager = ours()
        state = averager.init(_named(model, False), _named(model, True))
        rng = np.random.default_rng(0)
        for _ in range(7):
            optimizer.zero_grad()
            model(torch.tensor(rng.normal(size=(8, 3)), dtype=torch.float32)).pow(2).mean().backward()
            optimizer.step()
            averaged.update_parameters(model)
            state = averager.update(_named(model, False), state, _named(model, True))
            theirs = {**_named(averaged.module, False), **_named(averaged.module, True)}
            for name, value in {**state.params, **state.buffers}.items():
                assert value.dtype == theirs[name].dtype, name
                np.testing.assert_allclose(
                    np.asarray(value), np.asarray(theirs[name]), rtol=1e-6, atol=1e-12, err_msg=name
                )
        assert int(state.n_averaged) == int(averaged.n_averaged) == 7
        if torch_kwargs.get("use_buffers"):
            assert int(state.buffers["1.num_batches_tracked"]) < 7


def test_custom_avg_fn_receives_n_averaged_like_torch():
    def torch_fn(averaged, current, n):
        return averaged + (current - averaged) * (2.0 / (n.to(averaged.dtype) + 2.0))

    def jax_fn(averaged, current, n):
        return averaged + (current - averaged) * (2.0 / (n.astype(averaged.dtype) + 2.0))

    with jax.enable_x64(True):
        module = torch.nn.Linear(3, 2).double()
        averaged = swa_utils.AveragedModel(module, avg_fn=torch_fn)
        averager = fo.averaged_model(jax_fn)
        state = averager.init(_named(module, False))
        for step in range(5):
            with torch.no_grad():
                for p in module.parameters():
                    p.mul_(0.7).add_(step)
            averaged.update_parameters(module)
            state = averager.update(_named(module, False), state)
        for name, value in _named(averaged.module, False).items():
            np.testing.assert_allclose(np.asarray(state.params[name]), np.asarray(value), rtol=1e-15)


# --- update_bn ------------------------------------------------------------------------------------


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


def _loader(seed=0, batches=5, rows=8):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(rows, 3)).astype(np.float32) * 2 + 1, np.zeros(rows)) for _ in range(batches)]


def _flax_and_torch():
    torch_model = _torch_bn_model()
    variables = _Net().init(jax.random.key(0), jnp.zeros((1, 3)), train=False)
    params = dict(variables["params"])
    params["Dense_0"] = {
        "kernel": jnp.asarray(torch_model[0].weight.detach().numpy().T),
        "bias": jnp.asarray(torch_model[0].bias.detach().numpy()),
    }
    return torch_model, {"params": params, "batch_stats": variables["batch_stats"]}


def test_update_bn_matches_torch_up_to_bessels_correction():
    torch_model, variables = _flax_and_torch()
    loader = _loader()
    swa_utils.update_bn([torch.from_numpy(x) for x, _ in loader], torch_model)
    updated = fo.update_bn(loader, _Net(), variables, train=True)
    stats = updated["batch_stats"]["BatchNorm_0"]
    bn = torch_model[1]
    np.testing.assert_allclose(np.asarray(stats["mean"]), bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    rows = loader[0][0].shape[0]
    np.testing.assert_allclose(np.asarray(stats["var"]) * rows / (rows - 1), bn.running_var.numpy(), rtol=1e-5)
    assert bn.momentum == 0.1
    assert updated["params"] is not None and set(updated) == {"params", "batch_stats"}


def test_update_bn_ignores_stale_statistics_and_matches_a_direct_computation():
    _, variables = _flax_and_torch()
    variables["batch_stats"] = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), variables["batch_stats"])
    loader = _loader(seed=1)
    stats = fo.update_bn(loader, _Net(), variables, train=True)["batch_stats"]["BatchNorm_0"]
    hidden = [np.asarray(nn.Dense(4).apply({"params": variables["params"]["Dense_0"]}, x)) for x, _ in loader]
    np.testing.assert_allclose(
        np.asarray(stats["mean"]), np.mean([h.mean(0) for h in hidden], axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(stats["var"]), np.mean([h.var(0) for h in hidden], axis=0), rtol=1e-4)


def test_update_bn_requires_training_mode():
    _, variables = _flax_and_torch()
    with pytest.raises(ValueError, match=r"BatchNorm at BatchNorm_0 ran with use_running_average=True.*train=True"):
        fo.update_bn(_loader(), _Net(), variables, train=False)


def test_update_bn_without_batch_stats_returns_variables_and_empty_loader_raises():
    variables = {"params": {"w": jnp.ones(2)}}
    assert fo.update_bn(_loader(), _Net(), variables, train=True) is variables
    _, with_stats = _flax_and_torch()
    with pytest.raises(ValueError, match="loader yielded no batches"):
        fo.update_bn([], _Net(), with_stats, train=True)


def test_update_bn_restores_the_modules_momentum():
    _, variables = _flax_and_torch()
    fo.update_bn(_loader(), _Net(), variables, train=True)
    x = jnp.ones((4, 3))
    _, mutated = _Net().apply(variables, x, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["BatchNorm_0"]["mean"]
    batch_mean = np.asarray(nn.Dense(4).apply({"params": variables["params"]["Dense_0"]}, x)).mean(0)
    np.testing.assert_allclose(
        np.asarray(mutated["batch_stats"]["BatchNorm_0"]["mean"]),
        0.9 * np.asarray(before) + 0.1 * batch_mean,
        rtol=1e-5,
    )
