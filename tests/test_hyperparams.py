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
from bounds import EPS32, U32, XLA32_ELEMENTARY_ULPS, check_bias_correction_premise, relative_error

import functional_optreg as fo
from functional_optreg import verify


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


def _adam_update_path(g, p, m0, v0, t, lr, weight_decay, delta, kinds, betas=(0.9, 0.999), eps=1e-8):
    """fo.adam's update (coupled decay) from float32 inputs, written out with its i-th rounding scaled by
    ``1 + delta[i]``; ``kinds`` collects ``"op"`` or ``"elementary"`` per rounding. Constants that both sides round
    to float32 the same way (β's, 1 − β's, eps) enter as those float32 values."""

    def rounded(x, kind="op"):
        kinds.append(kind)
        return x * (1 + delta[len(kinds) - 1])

    beta1, beta2 = betas
    c1, c2, b2, eps32 = (float(np.float32(c)) for c in (1 - beta1, 1 - beta2, beta2, eps))

    def bias_correction(beta):  # −expm1(t·log1p(β − 1)), β − 1 exact in float64 and rounded to float32
        return -rounded(
            jnp.expm1(rounded(t * rounded(jnp.log1p(float(np.float32(beta - 1.0))), "elementary"))), "elementary"
        )

    step_size = rounded(lr / bias_correction(beta1))
    bias_correction2_sqrt = rounded(jnp.sqrt(bias_correction(beta2)))
    g = rounded(g + weight_decay * p)  # weight_decay = 0.5: the product is exact
    m = rounded(m0 + rounded(c1 * rounded(g - m0)))
    v = rounded(rounded(v0 * b2) + rounded(c2 * rounded(g * g)))
    denom = rounded(rounded(rounded(jnp.sqrt(v)) / bias_correction2_sqrt) + eps32)
    return -rounded(rounded(step_size * m) / denom)


def _adam_update_bound(grads, params, inner, lr, weight_decay):
    r"""Per element, how far a float32 evaluation of that update may be from its exact value, to first order in
    ``U32``: :math:`\sum_i |\partial u/\partial\delta_i|\,w_i` over its roundings (autodiff in float64 of
    ``_adam_update_path``), :math:`w_i = U32` for each IEEE operation (sqrt and division correctly rounded; a fused
    multiply-add only removes one) and ``XLA32_ELEMENTARY_ULPS·EPS32`` for log1p and expm1 (the premise, checked by
    the caller). The sensitivities see the cancellation in g + λθ and in the lerp of m.
    """
    t = float(inner.step) + 1
    bounds = {}
    with jax.enable_x64(True):
        for name in params:
            arrays = [np.asarray(tree[name], np.float64) for tree in (grads, params, inner.exp_avg, inner.exp_avg_sq)]
            kinds: list[str] = []
            _adam_update_path(*arrays, t, lr, weight_decay, np.zeros(64), kinds)
            weights = np.array([XLA32_ELEMENTARY_ULPS * EPS32 if kind == "elementary" else U32 for kind in kinds])
            path = lambda delta, arrays=arrays: _adam_update_path(*arrays, t, lr, weight_decay, delta, [])
            bounds[name] = np.abs(np.asarray(jax.jacfwd(path)(jnp.zeros(len(kinds))))) @ weights
    return bounds


def test_setting_lr_does_not_retrace_and_changes_the_update():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    tx = optax.inject_hyperparams(fo.adam)(lr=1e-2, weight_decay=0.1)
    step, traces = _counting_step(tx)
    state = tx.init(params)
    # inject_hyperparams and set_hyperparams store a float32: one rounding of the value, exactly np.float32's.
    assert float(optax.tree.get(state, "lr")) == np.float32(1e-2)
    for index in range(3):
        params, state, _ = step(params, state, _grads(index, params))
    state = fo.set_hyperparams(state, lr=3e-4, weight_decay=0.5)
    assert float(optax.tree.get(state, "lr")) == np.float32(3e-4)
    inner = state.inner_state
    params_after, state, updates = step(params, state, _grads(3, params))
    assert len(traces) == 1
    expected, _ = fo.adam(lr=3e-4, weight_decay=0.5).update(_grads(3, params), inner, params)
    # Both sides evaluate the same float32 expression from the same float32 values (the eager lr 3e-4 and eps
    # 1e-8 are rounded to float32 at their first operation, as the injected ones were); they differ only where
    # jit fuses (FMA) or folds constants, so each is within _adam_update_bound of the exact value, and the two
    # within twice that.
    for beta in (0.9, 0.999):
        check_bias_correction_premise(beta, float(inner.step) + 1)
    bounds = _adam_update_bound(_grads(3, params), params, inner, float(np.float32(3e-4)), 0.5)
    for name in params:
        difference = np.abs(np.asarray(updates[name], np.float64) - np.asarray(expected[name], np.float64))
        assert np.all(difference <= 2 * bounds[name]), (name, difference, bounds[name])
    assert float(optax.tree.get(state, "lr")) == np.float32(3e-4)


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
                # The contract's float64 measure: same formulas in the same order, per leaf against
                # its largest value (the zero-started bias is not measured against itself).
                error = relative_error(params[name], tensor.detach().numpy())
                assert error <= verify.FLOAT64_RTOL, f"{name} at step {index + 1}: {error:.2e}"
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
    # step_lr's values are fl32(0.1)·2⁻ᵏ = fl32(0.1·2⁻ᵏ): exact in any evaluation, so equal.
    np.testing.assert_array_equal(seen, [float(schedule(0))] + [float(schedule(c)) for c in range(5)])
    assert float(schedule(state.count)) == np.float32(0.025)


def test_set_hyperparams_inside_a_chain_and_unknown_name():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(fo.adamw)(lr=1e-3))
    state = tx.init({"w": jnp.ones(2)})
    state = fo.set_hyperparams(state, lr=5e-4, weight_decay=0.2)
    assert float(optax.tree.get(state, "lr")) == np.float32(5e-4)  # stored in float32: one rounding
    assert optax.tree.get(state, "weight_decay").dtype == jnp.float32
    with pytest.raises(KeyError, match="'momentum' is not a settable hyperparameter"):
        fo.set_hyperparams(state, momentum=0.9)


# --- per group, and on bridged transforms -------------------------------------------------------


def _poly_grad(p):
    """A gradient that depends on the parameters (torch tensor or JAX array alike)."""
    return 0.1 * p**3 + 0.5 * p - 0.2


def test_per_group_lr_on_param_groups_matches_torch_and_does_not_retrace():
    """``opt.param_groups[1]["lr"] = x`` and ``fo.set_hyperparams(state, group=1, lr=x)``, 50 steps."""
    rng = np.random.default_rng(1)
    init = {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)}
    changes = {10: (1, dict(lr=0.003)), 20: (None, dict(weight_decay=0.2)), 30: (0, dict(eps=1e-3))}
    with jax.enable_x64(True):
        kernel = torch.tensor(init["kernel"], requires_grad=True)
        bias = torch.tensor(init["bias"], requires_grad=True)
        # fo.param_groups: group 0 is the bias (selected by name), group 1 the default (kernel).
        optimizer = torch.optim.AdamW([{"params": [bias], "lr": 0.02}, {"params": [kernel]}], lr=0.01)
        tx = fo.param_groups(
            optax.inject_hyperparams(fo.adamw), [{"params": "bias", "lr": 0.02}], default_group=True, lr=0.01
        )
        params = jax.tree.map(jnp.asarray, init)
        state = tx.init(params)
        step, traces = _counting_step(tx)
        errors = []
        for index in range(50):
            if index in changes:
                group, values = changes[index]
                state = fo.set_hyperparams(state, group=group, **values)
                for g in range(2) if group is None else [group]:
                    optimizer.param_groups[g].update(values)
            params, state, _ = step(params, state, jax.tree.map(_poly_grad, params))
            for tensor in (kernel, bias):
                tensor.grad = _poly_grad(tensor.detach()).clone()
            optimizer.step()
            errors.append(
                max(relative_error(params["kernel"], kernel.detach()), relative_error(params["bias"], bias.detach()))
            )
        assert len(traces) == 1
        assert max(errors) <= verify.FLOAT64_RTOL, errors
        assert float(fo.get_hyperparams(state)[1]["lr"]) == 0.003
        assert float(fo.get_hyperparams(state)[0]["eps"]) == 1e-3


def test_set_hyperparams_errors_name_groups_and_hyperparameters_without_a_state_dump():
    tx = fo.param_groups(optax.inject_hyperparams(fo.adamw), [{"params": "bias", "lr": 0.02}], default_group=True)
    state = tx.init({"kernel": jnp.ones((30, 20)), "bias": jnp.ones(20)})
    with pytest.raises(KeyError) as error:
        fo.set_hyperparams(state, group=2, lr=0.1)
    message = str(error.value)
    assert "no param group 2" in message and "group 0: eps, lr, weight_decay" in message
    assert "Array" not in message and len(message) < 300
    with pytest.raises(
        KeyError, match="'momentum' is not a settable hyperparameter in group 1; this state has group 0"
    ):
        fo.set_hyperparams(state, group=1, momentum=0.9)
    with pytest.raises(KeyError, match="holds no injected hyperparameters.*optax.inject_hyperparams"):
        fo.set_hyperparams(fo.adamw().init({"w": jnp.ones(2)}), lr=0.1)
    scheduled = optax.inject_hyperparams(fo.sgd)(lr=fo.step_lr(0.1, 2))
    with pytest.raises(
        KeyError, match=r"no group: dampening, momentum, weight_decay \(scheduled, recomputed every update: lr\)"
    ):
        fo.set_hyperparams(scheduled.init({"w": jnp.ones(2)}), lr=0.1)


def _nanogpt_lr(it, warmup=5, decay=40, max_lr=6e-3, min_lr=6e-4):
    """nanoGPT's ``get_lr``: linear warmup, cosine decay to ``min_lr``."""
    if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + np.cos(np.pi * ratio)) * (max_lr - min_lr)


def test_bridged_transform_takes_a_hand_set_lr_every_iteration_and_writes_it_back():
    """nanoGPT's loop: ``param_group["lr"] = get_lr(it)`` every iteration, two AdamW groups;
    10 iterations in torch, 30 in JAX next to torch, 10 in torch again from the written state."""
    generator = torch.Generator().manual_seed(0)
    with jax.enable_x64(True):
        weight = torch.nn.Parameter(torch.randn(4, 3, generator=generator, dtype=torch.float64))
        bias = torch.nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64))

        def make(w, b):
            return torch.optim.AdamW(
                [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                lr=6e-3,
                betas=(0.9, 0.95),
            )

        def torch_step(optimizer, it):
            for group in optimizer.param_groups:
                group["lr"] = _nanogpt_lr(it)
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = _poly_grad(p.detach()).clone()
            optimizer.step()

        optimizer = make(weight, bias)
        for it in range(10):
            torch_step(optimizer, it)
        tx, state = fo.from_torch(optimizer)
        params = [jnp.asarray(weight.detach().numpy()), jnp.asarray(bias.detach().numpy())]
        step, traces = _counting_step(tx)
        errors = []
        for it in range(10, 40):
            state = fo.set_hyperparams(state, lr=_nanogpt_lr(it))
            params, state, _ = step(params, state, [_poly_grad(p) for p in params])
            torch_step(optimizer, it)
            errors.append(max(relative_error(params[0], weight.detach()), relative_error(params[1], bias.detach())))
        assert len(traces) == 1
        assert max(errors) <= verify.FLOAT64_RTOL, errors
        written = fo.to_torch_state_dict(tx, state)
        assert [g["lr"] for g in written["param_groups"]] == [_nanogpt_lr(39)] * 2
        resumed_weight = torch.nn.Parameter(torch.tensor(np.asarray(params[0])))
        resumed_bias = torch.nn.Parameter(torch.tensor(np.asarray(params[1])))
        resumed = make(resumed_weight, resumed_bias)
        resumed.load_state_dict(written)
        back = []
        for it in range(40, 50):
            torch_step(optimizer, it)
            torch_step(resumed, it)
            back.append(
                max(
                    relative_error(resumed_weight.detach(), weight.detach()),
                    relative_error(resumed_bias.detach(), bias.detach()),
                )
            )
        assert max(back) <= verify.FLOAT64_RTOL, back


def test_bridged_group_hyperparameters_per_group_and_scheduled_ones_are_fixed():
    with jax.enable_x64(True):
        params = [
            torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
            torch.nn.Parameter(torch.ones(1, dtype=torch.float64)),
        ]
        optimizer = torch.optim.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}], lr=0.1)
        tx, state = fo.from_torch(optimizer)
        state = fo.set_hyperparams(state, group=1, lr=0.25, betas=(0.5, 0.6))
        written = fo.to_torch_state_dict(tx, state)["param_groups"]
        assert (written[0]["lr"], written[1]["lr"], written[1]["betas"]) == (0.1, 0.25, (0.5, 0.6))
        assert written[0]["betas"] == (0.9, 0.999)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2)
        tx, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=1)
        with pytest.raises(KeyError, match="'lr' is not a settable hyperparameter in group 0; .*group 0: betas, eps"):
            fo.set_hyperparams(state, group=0, lr=0.3)
