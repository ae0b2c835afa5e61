"""Complex parameters: treated as real pairs by the elementwise optimizers, as torch does.

Torch parity is in parity/cases/complex.py; here: the mechanism (a complex leaf behaves exactly as
its real pairs), dtypes, jit/vmap, JAX's gradient convention, and the optimizers torch rejects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import EPS32, U32, XLA32_COMPLEX_ABS_ULPS, relative_error, ulp_error

import functional_optreg as fo
from functional_optreg import verify

ELEMENTWISE = {
    "sgd": lambda: fo.sgd(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
    "adam": lambda: fo.adam(lr=0.01, amsgrad=True, weight_decay=0.1),
    "adamw": lambda: fo.adamw(lr=0.01),
    "adamax": lambda: fo.adamax(lr=0.02),
    "adadelta": lambda: fo.adadelta(lr=1.0),
    "adagrad": lambda: fo.adagrad(lr=0.1, lr_decay=0.01),
    "asgd": lambda: fo.asgd(lr=0.02, t0=2),
    "nadam": lambda: fo.nadam(lr=0.01),
    "radam": lambda: fo.radam(lr=0.01),
    "rmsprop": lambda: fo.rmsprop(lr=0.01, centered=True, momentum=0.5),
    "ema_momentum": lambda: fo.ema_momentum(lr=0.1, beta=0.8),
    "adagrad_initial_accumulator_value": lambda: fo.adagrad(lr=0.1, initial_accumulator_value=0.3),
    "rprop": lambda: fo.rprop(lr=0.02),
}
UNSUPPORTED = {
    "adafactor": (lambda: fo.adafactor(lr=0.01), RuntimeError, "Adafactor does not support complex parameters"),
    "muon": (lambda: fo.muon(lr=0.01), RuntimeError, "Muon does not support complex parameters"),
    "sparse_adam": (lambda: fo.sparse_adam(lr=0.01), ValueError, "SparseAdam does not support complex parameters"),
}
"""Optimizers torch refuses complex parameters for, with torch's exception type and words. They
raise once adafactor.py / muon.py / sparse_adam.py call ``_tree.check_real_params`` in init."""


def _complex_params():
    rng = np.random.default_rng(0)
    return {
        "kernel": jnp.asarray(rng.normal(size=(2, 3, 2)) + 1j * rng.normal(size=(2, 3, 2)), jnp.complex64),
        "bias": jnp.zeros(3, jnp.complex64),
        "phase": jnp.asarray(0.5 - 0.25j, jnp.complex64),
        "empty": jnp.zeros((0, 2), jnp.complex64),
        "real": jnp.asarray(rng.normal(size=4), jnp.float32),
    }


def _grads(params, seed):
    rng = np.random.default_rng(seed)

    def draw(p):
        values = rng.normal(size=p.shape) + (1j * rng.normal(size=p.shape) if jnp.iscomplexobj(p) else 0)
        return jnp.asarray(values, p.dtype)

    return jax.tree.map(draw, params)


def _pairs(tree):
    return jax.tree.map(lambda x: jnp.stack([jnp.real(x), jnp.imag(x)], -1) if jnp.iscomplexobj(x) else x, tree)


def _run(tx, params, grads_stream):
    """Eager steps: op by op, so that XLA's fusion choices (which differ between the complex and
    the real-pair programs) cannot change float32 rounding and the comparison can be bitwise."""
    state = tx.init(params)
    for grads in grads_stream:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _complex_equals_pairs(name):
    params = _complex_params()
    stream = [_grads(params, seed) for seed in range(5)]
    complex_params, complex_state = _run(ELEMENTWISE[name](), params, stream)
    pair_params, pair_state = _run(ELEMENTWISE[name](), _pairs(params), [_pairs(g) for g in stream])
    ours_leaves = jax.tree.leaves((complex_params, complex_state))
    for ours, pairs in zip(ours_leaves, jax.tree.leaves((pair_params, pair_state))):
        np.testing.assert_array_equal(np.asarray(_pairs(ours)), np.asarray(pairs))
    for path, leaf in jax.tree_util.tree_flatten_with_path(complex_state)[0]:
        if leaf.shape and leaf.shape == params["kernel"].shape:
            assert leaf.dtype == jnp.complex64, jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_complex_leaf_behaves_as_its_real_pairs(name):
    _complex_equals_pairs(name)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_optimizers_torch_rejects_raise_torchs_error(name):
    factory, error, message = UNSUPPORTED[name]
    with pytest.raises(error, match=message):
        factory().init({"w": jnp.ones((3, 4)), "z": jnp.ones((3, 4), jnp.complex64)})


def test_check_real_params_names_the_complex_leaf():
    from functional_optreg import _tree

    with pytest.raises(RuntimeError, match=r"Muon does not support complex parameters \(params at \['z'\]"):
        _tree.check_real_params({"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}, "Muon")
    with pytest.raises(ValueError, match="SparseAdam does not support complex"):
        _tree.check_real_params({"z": jnp.ones(2, jnp.complex64)}, "SparseAdam", ValueError)
    _tree.check_real_params({"w": jnp.ones(2)}, "Muon")


def test_torch_rejects_the_same_optimizers():
    """The list above is torch's: these classes refuse complex parameters."""
    for torch_class in (torch.optim.Adafactor, torch.optim.Muon):
        param = torch.ones(3, 4, dtype=torch.complex64, requires_grad=True)
        optimizer = torch_class([param], lr=0.01)
        param.grad = torch.ones_like(param)
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            optimizer.step()
    with pytest.raises(ValueError, match="SparseAdam does not support complex parameters"):
        torch.optim.SparseAdam([torch.ones(3, dtype=torch.complex64, requires_grad=True)], lr=0.01)


def test_vmap_over_complex_params():
    tx = fo.adam(lr=0.01)
    params = {"z": jnp.ones((4, 3), jnp.complex64) * (1 + 2j)}
    grads = {"z": jnp.ones((4, 3), jnp.complex64) * (0.5 - 1j)}
    batched, _ = jax.vmap(tx.update)(grads, jax.vmap(tx.init)(params), params)
    single, _ = tx.update({"z": grads["z"][0]}, tx.init({"z": params["z"][0]}), {"z": params["z"][0]})
    np.testing.assert_array_equal(np.asarray(batched["z"][2]), np.asarray(single["z"]))


def test_jax_grad_is_the_conjugate_of_torchs_grad():
    """Training with ``jnp.conj(jax.grad(loss))`` follows torch step for step (float64).

    Each side differentiates the loss itself, so the gradients differ by rounding (a few ulps of
    the gradient's terms), not only by the params: the contract's premise of one gradient stream
    does not hold, and a free run could drift by more than the optimizer's rounding. So every
    step is taken from torch's exact params and Adam state (the contract's per-step rule):
    there our gradient differs from torch's by ≤ ~10u of its terms, which moves Adam's step by
    lr·δg/(√v̂ + eps) ≪ 1e-12 of the params, while a wrong rule moves it by far more."""
    rng = np.random.default_rng(3)
    target = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))
    weight = rng.uniform(0.5, 2.0, size=(3, 2))
    start = rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))

    with jax.enable_x64(True):

        def loss(z):
            return jnp.sum(weight * jnp.abs(z - target) ** 2) + jnp.sum(jnp.real(z) * jnp.imag(z))

        tx = fo.adam(lr=0.05)
        state = tx.init(jnp.asarray(start))
        tensor = torch.tensor(start, requires_grad=True)
        optimizer = torch.optim.Adam([tensor], lr=0.05)
        target_t, weight_t = torch.tensor(target), torch.tensor(weight)
        for step in range(60):
            before = jnp.asarray(tensor.detach().numpy().copy())
            torch_state = optimizer.state.get(tensor, {})
            synced = state._replace(
                step=jnp.asarray(step, state.step.dtype),
                exp_avg=jnp.asarray(torch_state["exp_avg"].numpy()) if torch_state else state.exp_avg,
                exp_avg_sq=jnp.asarray(torch_state["exp_avg_sq"].numpy()) if torch_state else state.exp_avg_sq,
            )
            optimizer.zero_grad()
            value = (weight_t * (tensor - target_t).abs() ** 2).sum() + (tensor.real * tensor.imag).sum()
            value.backward()
            optimizer.step()
            theirs = tensor.detach().numpy()
            one_step, _ = tx.update(jnp.conj(jax.grad(loss)(before)), synced, before)
            error = relative_error(optax.apply_updates(before, one_step), theirs)
            assert error <= verify.FLOAT64_RTOL, f"step {step + 1}: {error:.2e}"


def test_complex_penalty_and_clipping_compose():
    params = {"z": jnp.asarray([3 + 4j, 0j], jnp.complex64)}
    tx = optax.chain(fo.l2_penalty(0.1), fo.clip_grad_norm(0.25), fo.sgd(lr=1.0))
    updates, state = tx.update({"z": jnp.zeros(2, jnp.complex64)}, tx.init(params), params)
    # complex64, g = 0.1·z, update −0.25·g/(|g| + 1e-6): moving g by Δ moves it by ≤ |Δ|/|g| relative (the map's
    # Jacobian has norm 1/(|g| + 1e-6)), so every rounding has condition factor ≤ 1 (first order): fl32(0.1), the
    # penalty's product (per part, ≤ U32·|g| together), the leaf norm's |g|² (½, under the √) and √, the total's
    # square (½) and √ (the sums add 0), fl32(1e-6), 1 ÷ (n + 1e-6) and its + (· 0.25 exact), the product (per
    # part): 9·U32; the sign and lr = 1 are exact. Premise (checked here): the complex |g| within
    # XLA32_COMPLEX_ABS_ULPS ulps, an ulp ≤ EPS32 relative, reaching the coefficient with factor |g|/(|g| + 1e-6) ≤ 1.
    penalized = 0.1 * params["z"]  # as l2_penalty forms it
    exact = np.abs(np.asarray(penalized).astype(np.complex128))
    assert np.all(ulp_error(jnp.abs(penalized), exact) <= XLA32_COMPLEX_ABS_ULPS)
    expected = -np.asarray([0.3 + 0.4j, 0]) * 0.25 / (0.5 + 1e-6)
    rtol = 9 * U32 + XLA32_COMPLEX_ABS_ULPS * EPS32
    np.testing.assert_allclose(np.asarray(updates["z"]), expected, rtol=rtol)


def test_verify_engine_sees_the_complex_case_as_real_pairs():
    """A sanity check of the harness: a wrong rule (conjugated update) fails the contract."""
    from parity.cases.complex import complex_pair_params, ours_on_complex, torch_on_complex

    def conjugating_sgd(**kwargs):
        inner = fo.sgd(**kwargs)

        def update(grads, state, params=None):
            updates, state = inner.update(grads, state, params)
            return jax.tree.map(jnp.conj, updates), state

        return optax.GradientTransformation(inner.init, update)

    report = verify.compare(
        lambda tensors: torch_on_complex(torch.optim.SGD)(tensors, lr=0.05),
        ours_on_complex(conjugating_sgd)(lr=0.05),
        complex_pair_params(),
        steps=5,
    )
    assert not report.passed
