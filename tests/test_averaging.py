"""fo.swa / fo.ema / fo.averaged_model / fo.swalr / fo.update_bn against torch.optim.swa_utils."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import EPS32, U32, U64, relative_error
from torch.optim import swa_utils

import functional_optreg as fo


def _tree(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"kernel": jnp.asarray(rng.normal(size=(3, 2)), dtype), "bias": jnp.asarray(rng.normal(size=2), dtype)}


_UPDATE_ROUNDING = 7
"""An average update ``a + w·(x − a)`` (or torch's ``x − (1 − w)·(x − a)`` for w ≥ ½, or
``decay·a + (1 − decay)·x``) with ``|a|, |x| ≤ M`` and ``0 ≤ w ≤ 1`` is off by ≤ 7·u·M on either
side: x − a (up to 2M) and w each round by ≤ u relative and are scaled by w ≤ 1 (4uM), then the
product and the sum (3uM; an FMA only removes one). Earlier errors shrink by 1 − w, so after k
updates the two sides are within k·7·2u·M = k·7·eps·M (eps = 2u, the dtype's machine epsilon)."""


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
    # Ours is the closed form (≤ 5 roundings and a cos). Torch's chainable form rebuilds the previous lr as
    # (lr − α'·swa)/(1 − α') each epoch; its earlier errors shrink by (1 − α)/(1 − α') ≤ 1 and vanish once α = 1,
    # while each annealing epoch adds the roundings of two α (|∂lr/∂α| ≤ |lr − swa_lr| = 5·swa_lr ≤ 5·lr: ≤ 30u) and
    # of the recombination (≤ 6u): ≤ 36u per annealing epoch, no cancellation (lr ≥ swa_lr > 0).
    np.testing.assert_allclose(ours, theirs, rtol=(6 + 36 * max(1, anneal_epochs)) * U64)
    assert theirs[-1] == 0.05  # annealed: swa_lr·1 + prev·0, exact


def test_swalr_is_jittable():
    schedule = jax.jit(fo.swalr(lr=0.1, swa_lr=0.01))
    # α = 0 at the start and 1 at the end: the float32 lr and swa_lr, one rounding each.
    assert schedule(0) == pytest.approx(0.1, rel=U32, abs=0) and schedule(50) == pytest.approx(0.01, rel=U32, abs=0)


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
    for a, b, *inputs in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), *map(jax.tree.leaves, trees)):
        # float32, against M = max |x| (a mean can cancel to near 0): 7 running updates with
        # w = 1/k, ≤ 7·u·M each (_UPDATE_ROUNDING), and np.mean's 7-term sum and division, ≤ 7·u·M.
        scale = max(float(np.max(np.abs(x))) for x in inputs)
        assert relative_error(a, b, scale) <= (7 * _UPDATE_ROUNDING + 7) * EPS32 / 2


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
    # a + (x − a)/n on 1, 3, 8: 1, then 2, then 4, all exact.
    np.testing.assert_array_equal(np.asarray(state_a.buffers["running_mean"]), [4.0, 4.0])


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
    # The same float32 updates, scanned or jitted in a loop (XLA may fuse differently, FMA or not): a copy, then 2
    # lerps, each side within 2·_UPDATE_ROUNDING·u·M of exact (M: the inputs' max |x|; elements near 0 cancel, so
    # the bound is absolute).
    magnitude = max(float(np.max(np.abs(leaf))) for seed in range(4) for leaf in jax.tree.leaves(_tree(seed)))
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2 * _UPDATE_ROUNDING * EPS32 * magnitude)


def test_traced_decay_works_under_jit():
    averager_of = lambda decay: fo.ema(decay)  # noqa: E731

    @jax.jit
    def run(decay):
        averager = averager_of(decay)
        state = averager.init(_tree(0))
        return averager.update(_tree(2), averager.update(_tree(1), state)).params

    eager = fo.ema(0.3)
    state = eager.update(_tree(2), eager.update(_tree(1), eager.init(_tree(0))))
    # A copy, then one lerp on each side; the traced weight 1 − fl32(0.3) rounds once more than the eager fl32(0.7):
    # within 2 updates' worth, 2·_UPDATE_ROUNDING·u·M (M: the inputs' max |x|; absolute, as the lerp cancels).
    magnitude = max(float(np.max(np.abs(leaf))) for seed in range(3) for leaf in jax.tree.leaves(_tree(seed)))
    for a, b in zip(jax.tree.leaves(run(0.3)), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2 * _UPDATE_ROUNDING * EPS32 * magnitude)


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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_averaged_model_on_a_batchnorm_model(ours, torch_kwargs, dtype):
    """Both sides average the same model and buffers. See ``_UPDATE_ROUNDING`` for the bound;
    an averaged value near 0 (an EMA of a bias or of a BN mean crossing 0) is measured against
    the largest value the leaf has been given, not against itself."""
    eps = float(torch.finfo(dtype).eps)
    with jax.enable_x64(True):
        model = _torch_bn_model().to(dtype)
        averaged = swa_utils.AveragedModel(model, **torch_kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        averager = ours()
        state = averager.init(_named(model, False), _named(model, True))
        scale = {name: np.abs(np.asarray(v, np.float64)) for name, v in {**state.params, **state.buffers}.items()}
        rng = np.random.default_rng(0)
        for update in range(1, 8):
            optimizer.zero_grad()
            model(torch.tensor(rng.normal(size=(8, 3)), dtype=dtype)).pow(2).mean().backward()
            optimizer.step()
            averaged.update_parameters(model)
            given = {**_named(model, False), **_named(model, True)}
            state = averager.update(_named(model, False), state, _named(model, True))
            theirs = {**_named(averaged.module, False), **_named(averaged.module, True)}
            for name, value in {**state.params, **state.buffers}.items():
                assert value.dtype == theirs[name].dtype, name
                scale[name] = np.maximum(scale[name], np.abs(np.asarray(given[name], np.float64)))
                error = relative_error(value, theirs[name], float(np.max(scale[name])))
                assert error <= update * _UPDATE_ROUNDING * eps, f"{name} at update {update}: {error:.2e}"
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
        scale = {name: 0.0 for name, _ in module.named_parameters()}
        for step in range(5):
            with torch.no_grad():
                for p in module.parameters():
                    p.mul_(0.7).add_(step)
            averaged.update_parameters(module)
            state = averager.update(_named(module, False), state)
            scale = {name: max(scale[name], float(p.detach().abs().max())) for name, p in module.named_parameters()}
        for name, value in _named(averaged.module, False).items():
            # The same expression on both sides, weight 2/(n + 2) ≤ 1: _UPDATE_ROUNDING per update.
            assert relative_error(state.params[name], value, scale[name]) <= 5 * _UPDATE_ROUNDING * 2 * U64, name


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


def _hidden_scale(variables, inputs):
    """Per hidden unit, the largest ``Σ_j |x_j W_jk| + |b_k|`` over the rows: the scale H of the
    terms a unit of ``Dense_0`` sums, which its rounding (in any order, on either side) is
    relative to; ``|h| ≤ H`` and the batch variance is ≤ H²."""
    dense = variables["params"]["Dense_0"]
    kernel, bias = (np.abs(np.asarray(dense[key], np.float64)) for key in ("kernel", "bias"))
    return np.max([np.abs(np.asarray(x, np.float64)) @ kernel + bias for x in inputs], axis=(0, 1))


_U32 = EPS32 / 2
BN_MEAN_BOUND = (8 + 16 + 70) * _U32
"""update_bn's mean between two implementations, in units of H. A hidden unit sums 4 terms, so
each side's h is within 4u·H of exact (8u between sides: MKL and XLA sum in different orders);
the mean of 8 rows rounds by ≤ 8u·H per side (16u); the running average over 5 batches by
≤ 5·7u·H per side (``_UPDATE_ROUNDING``, 70u)."""

BN_VAR_BOUND = 2 * (16 + 27 + 3 + 35) * _U32 * 8 / 7
"""The same for the variance, in units of H², per side: h's error 4u·H moves the variance by
≤ 2·max|h − μ|·4u·H ≤ 16u·H²; the variance of 8 rows, flax's E[h²] − E[h]² (E[h²] ≤ 9u·H²,
E[h]² ≤ 17u·H², the difference u·H², so 27u·H²; torch's two-pass form rounds less); Bessel's
factor 8/7 ≤ 3u·H²; the running average 35u·H²; all scaled by the factor 8/7."""


def _assert_bn_statistics(mean, var, ref_mean, ref_var, scale):
    mean_error = np.max(np.abs(np.asarray(mean, np.float64) - ref_mean) / scale)
    var_error = np.max(np.abs(np.asarray(var, np.float64) - ref_var) / scale**2)
    assert mean_error <= BN_MEAN_BOUND and var_error <= BN_VAR_BOUND, (mean_error, var_error)


def test_update_bn_matches_torch_up_to_bessels_correction():
    torch_model, variables = _flax_and_torch()
    loader = _loader()
    swa_utils.update_bn([torch.from_numpy(x) for x, _ in loader], torch_model)
    updated = fo.update_bn(loader, _Net(), variables, train=True)
    stats = updated["batch_stats"]["BatchNorm_0"]
    bn = torch_model[1]
    rows = loader[0][0].shape[0]
    scale = _hidden_scale(variables, [x for x, _ in loader])
    theirs_mean, theirs_var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    _assert_bn_statistics(stats["mean"], np.asarray(stats["var"]) * rows / (rows - 1), theirs_mean, theirs_var, scale)
    with pytest.raises(AssertionError):  # the biased variance is visibly not torch's
        _assert_bn_statistics(stats["mean"], stats["var"], theirs_mean, theirs_var, scale)
    assert bn.momentum == 0.1
    assert updated["params"] is not None and set(updated) == {"params", "batch_stats"}


def test_update_bn_ignores_stale_statistics_and_matches_a_direct_computation():
    _, variables = _flax_and_torch()
    variables["batch_stats"] = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), variables["batch_stats"])
    loader = _loader(seed=1)
    stats = fo.update_bn(loader, _Net(), variables, train=True)["batch_stats"]["BatchNorm_0"]
    hidden = [np.asarray(nn.Dense(4).apply({"params": variables["params"]["Dense_0"]}, x)) for x, _ in loader]
    # NumPy's two-pass float32 statistics of the same h: within the bounds' per-side terms.
    _assert_bn_statistics(
        stats["mean"],
        stats["var"],
        np.mean([h.mean(0) for h in hidden], axis=0),
        np.mean([h.var(0) for h in hidden], axis=0),
        _hidden_scale(variables, [x for x, _ in loader]),
    )


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
    before = np.asarray(variables["batch_stats"]["BatchNorm_0"]["mean"], np.float64)
    batch_mean = np.asarray(nn.Dense(4).apply({"params": variables["params"]["Dense_0"]}, x), np.float64).mean(0)
    # Against the operands' scale S = 0.9|before| + 0.1·H (the blend can cancel): h within 4u·H
    # per side (8u), the mean of 4 equal rows ≤ 3u, float32(1 − 0.9) = 0.1·(1 + 2.4e-7) ≤ 3u, the
    # two products and the sum ≤ 3u: 17u·S.
    scale = 0.9 * np.abs(before) + 0.1 * _hidden_scale(variables, [x])
    error = np.abs(
        np.asarray(mutated["batch_stats"]["BatchNorm_0"]["mean"], np.float64) - (0.9 * before + 0.1 * batch_mean)
    )
    assert np.all(error <= 17 * _U32 * scale), error / scale
