"""fo.muon: validation, the 2-D rule, the bfloat16 Newton–Schulz iteration, transform properties.

Muon's parity cases cannot join the generic property table (its parameters include 1-D and 0-D
leaves, which Muon rejects), so the properties are checked here on matrices.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import EPS32, gamma32
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

import functional_optreg as fo
from functional_optreg.optimizers.muon import newton_schulz

COEFFICIENTS = (3.4445, -4.775, 2.0315)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Learning rate should be >= 0 but is: -0.1"),
        (dict(momentum=-0.5), "momentum should be >= 0 but is: -0.5"),
        (dict(weight_decay=-0.1), "weight decay should be >= 0 but is: -0.1"),
        (dict(adjust_lr_fn="sqrt"), "Adjust learning rate function sqrt is not supported"),
    ],
)
def test_validation_messages_match_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.muon(**kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ns_steps=100), "Number of steps must be less than 100 for computational efficiency"),
        (dict(ns_coefficients=(1.0, 2.0)), "Coefficients must be a tuple of exactly 3 values"),
    ],
)
def test_iteration_settings_are_checked_eagerly_with_torchs_messages(kwargs, message):
    with pytest.raises(ValueError) as ours:
        fo.muon(**kwargs)
    weight = torch.zeros(2, 2, requires_grad=True)
    optimizer = torch.optim.Muon([weight], **kwargs)  # torch only objects when it steps
    weight.grad = torch.ones(2, 2)
    with pytest.raises(ValueError) as theirs:
        optimizer.step()
    assert str(ours.value) == str(theirs.value) == message


@pytest.mark.parametrize("shape, path", [((3,), r"\['bias'\]"), ((2, 2, 3), r"\['conv'\]"), ((), r"\['t'\]")])
def test_init_rejects_non_matrices_naming_the_path(shape, path):
    params = {"w": jnp.ones((2, 3)), {(3,): "bias", (2, 2, 3): "conv", (): "t"}[shape]: jnp.ones(shape)}
    with pytest.raises(ValueError) as ours:
        fo.muon().init(params)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([torch.ones(shape, requires_grad=True)])
    torch_prefix = str(theirs.value).split("size:")[0]
    assert str(ours.value).startswith(torch_prefix + "size: " + str(shape))
    assert ours.match(path)


def test_state_fields_follow_torch_keys():
    weight = torch.ones(2, 3, requires_grad=True)
    optimizer = torch.optim.Muon([weight])
    weight.grad = torch.ones(2, 3)
    optimizer.step()
    state = fo.muon().init({"w": jnp.ones((2, 3))})
    assert set(optimizer.state[weight]) == {"momentum_buffer"}
    assert set(state._fields) == {"step", "momentum_buffer"}


_NS_SHAPES = [(5, 7), (8, 3), (3, 3), (1, 6), (6, 1)]
_TORCH_NEWTON_SCHULZ = """
import sys, numpy as np, torch
from torch.optim._muon import _zeropower_via_newtonschulz
inputs = np.load(sys.argv[1])
np.savez(sys.argv[2], **{key: _zeropower_via_newtonschulz(torch.tensor(inputs[key]), (3.4445, -4.775, 2.0315), 5,
                                                          1e-7).float().numpy() for key in inputs.files})
"""


def _normwise(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ns_inputs(dtype):
    rng = np.random.default_rng(0)
    return {f"{shape}-{k}": rng.normal(size=shape).astype(dtype) for shape in _NS_SHAPES for k in range(20)}


_TORCH_AT_LEVEL: dict[str, dict[str, np.ndarray]] = {}


def _torch_newton_schulz_at(level, dtype):
    """Torch's iteration on ``_ns_inputs(dtype)`` in a fresh process whose kernel level is ``level``.

    One process per level computes both dtypes' inputs (each start imports torch: seconds of CI)."""
    if level not in _TORCH_AT_LEVEL:
        inputs = {f"{name}/{key}": m for name in ("float32", "float64") for key, m in _ns_inputs(name).items()}
        with tempfile.TemporaryDirectory() as folder:
            source, result = pathlib.Path(folder, "in.npz"), pathlib.Path(folder, "out.npz")
            np.savez(source, **inputs)
            env = {**os.environ, "ATEN_CPU_CAPABILITY": level}
            command = [sys.executable, "-c", _TORCH_NEWTON_SCHULZ, source, result]
            subprocess.run(command, env=env, check=True, timeout=120)
            with np.load(result) as outputs:
                _TORCH_AT_LEVEL[level] = {key: outputs[key] for key in outputs.files}
    prefix = f"{dtype}/"
    return {key[len(prefix) :]: m for key, m in _TORCH_AT_LEVEL[level].items() if key.startswith(prefix)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_newton_schulz_matches_torchs_to_bfloat16_resolution(dtype):
    """Both iterations round to bfloat16 at the same places, but where a float32 intermediate falls
    relative to a bfloat16 boundary depends on fused multiply-adds and the norm's summation order,
    which move with the machine in torch too. So ours must stay within one bfloat16 ulp (2⁻⁸)
    normwise of torch's, or within torch's own spread between its kernel levels
    (``ATEN_CPU_CAPABILITY``), measured here and now; and a 1% change of one coefficient, the
    smallest semantic error the iteration could hide, must not."""
    inputs = _ns_inputs(dtype)
    theirs = {
        key: _zeropower_via_newtonschulz(torch.tensor(m), COEFFICIENTS, 5, 1e-7).float().numpy()
        for key, m in inputs.items()
    }
    current = os.environ.get("ATEN_CPU_CAPABILITY", "")
    spread = 0.0
    for level in ("default", "avx2", "avx512"):
        if level != current:
            other = _torch_newton_schulz_at(level, dtype)
            spread = max(spread, max(_normwise(other[key], theirs[key]) for key in inputs))
    bound = max(2.0**-8, spread)
    with jax.enable_x64(dtype == "float64"):
        iterate = jax.jit(newton_schulz, static_argnums=(1, 2))

        def ours(coefficients):
            return {
                key: np.asarray(iterate(jnp.asarray(m), coefficients, 5).astype(jnp.float32))
                for key, m in inputs.items()
            }

        ours_exact = ours(COEFFICIENTS)
        ours_wrong = ours((COEFFICIENTS[0] * 0.99, *COEFFICIENTS[1:]))
    assert all(value.dtype == np.float32 for value in ours_exact.values())
    error = max(_normwise(ours_exact[key], theirs[key]) for key in inputs)
    assert error <= bound, f"{error:.3e} > bound {bound:.3e} (torch's own spread {spread:.3e})"
    wrong = min(_normwise(ours_wrong[key], theirs[key]) for key in inputs)
    assert wrong > bound, f"a 1% coefficient error ({wrong:.3e}) hides within the bound {bound:.3e}"


def test_newton_schulz_of_zero_is_zero():
    ours = newton_schulz(jnp.zeros((3, 4)))
    theirs = _zeropower_via_newtonschulz(torch.zeros(3, 4), COEFFICIENTS, 5, 1e-7)
    np.testing.assert_array_equal(np.asarray(ours.astype(jnp.float32)), theirs.float().numpy())


@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (5, 5)])
def test_lr_adjustment_matches_torch(adjust_lr_fn, shape):
    # With weight_decay 0 and a zero momentum the update is -adjusted_lr · NS(g).
    grad = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    tx = fo.muon(lr=0.1, weight_decay=0.0, momentum=0.0, adjust_lr_fn=adjust_lr_fn)
    params = {"w": jnp.zeros(shape)}
    updates, _ = tx.update({"w": grad}, tx.init(params), params)
    ortho = newton_schulz(grad).astype(jnp.float32)
    # The same NS(g) on both sides times the adjusted lr, a double (≤ 2 roundings of U64) stored in float32, and the
    # float32 product: each side within γ_2 of exact.
    expected = -_adjust_lr(0.1, adjust_lr_fn, torch.Size(shape)) * ortho
    np.testing.assert_allclose(updates["w"], expected, rtol=2 * gamma32(2))


def _matrices(dtype=jnp.float32):
    rng = np.random.default_rng(2)
    return {"a": jnp.asarray(rng.normal(size=(4, 3)), dtype), "b": jnp.asarray(rng.normal(size=(2, 5)), dtype)}


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def test_jit_does_not_recompile():
    tx = fo.muon(lr=0.02)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = _matrices()
    state = tx.init(params)
    for seed in range(3):
        params, state = step(params, state, _grads(params, seed))
    assert len(traces) == 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
def test_dtypes_are_preserved(dtype):
    with jax.enable_x64(dtype == "float64"):
        params = _matrices(jnp.dtype(dtype))
        tx = fo.muon(lr=0.02)
        state = tx.init(params)
        for seed in range(3):
            updates, state = jax.jit(tx.update)(_grads(params, seed), state, params)
            params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves((params, state.momentum_buffer)):
            assert leaf.dtype == jnp.dtype(dtype)
            assert bool(jnp.all(jnp.isfinite(leaf)))


def _newton_schulz_allowance(update, before, lr, weight_decay):
    """What one Muon step may differ by between two float32 runs whose Newton–Schulz inputs differ
    by float32 rounding (jit fusion, traced hyperparameters, batched dot products): the iteration
    rounds to bfloat16, so its output moves by up to one bfloat16 ulp normwise (2⁻⁸ ·‖NS‖, the
    premise of ``test_newton_schulz_matches_torchs_to_bfloat16_resolution``), scaled by the
    adjusted lr; ``adjusted_lr·‖NS‖ ≤ ‖u‖ + lr·wd·‖p‖`` since ``u = −lr·wd·p − adjusted_lr·NS``.
    The float32 parts (decay, momentum, ``p + u``) add ≤ 32·eps32 of ‖u‖ and ‖p‖, as
    ``UPDATE_ULPS`` in test_transform_properties.py: far below."""
    update, before = np.asarray(update, np.float64), np.asarray(before, np.float64)
    ortho = np.linalg.norm(update) + lr * weight_decay * np.linalg.norm(before)
    return 2.0**-8 * ortho + 32 * EPS32 * (np.linalg.norm(update) + np.linalg.norm(before))


def _three_steps(tx, lr, weight_decay):
    """Final params and each leaf's summed ``_newton_schulz_allowance`` over 3 jitted steps (the
    momentum buffers do not depend on the params and weight decay shrinks earlier differences,
    so the per-step allowances add up)."""
    p, state = _matrices(), tx.init(_matrices())
    allowance = {key: 0.0 for key in p}
    for seed in range(3):
        updates, state = jax.jit(tx.update)(_grads(p, seed), state, p)
        for key in p:
            allowance[key] += _newton_schulz_allowance(updates[key], p[key], lr, weight_decay)
        p = optax.apply_updates(p, updates)
    return p, allowance


def _normwise_difference(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def test_inject_hyperparams_matches_constant():
    constant, allowance = _three_steps(fo.muon(lr=0.02, momentum=0.9, weight_decay=0.1), 0.02, 0.1)
    injected, _ = _three_steps(optax.inject_hyperparams(fo.muon)(lr=0.02, momentum=0.9, weight_decay=0.1), 0.02, 0.1)
    for key in constant:
        assert _normwise_difference(injected[key], constant[key]) <= allowance[key], key
    # A 5% lr error (a bfloat16 ulp is 0.4%) stands out of the allowance.
    wrong, _ = _three_steps(optax.inject_hyperparams(fo.muon)(lr=0.021, momentum=0.9, weight_decay=0.1), 0.02, 0.1)
    assert all(_normwise_difference(wrong[key], constant[key]) > allowance[key] for key in constant)


def test_vmap_over_stacked_matrices_matches_one_by_one():
    tx = fo.muon(lr=0.05)
    stacked = {"w": jnp.asarray(np.random.default_rng(3).normal(size=(3, 4, 5)), jnp.float32)}
    grads = _grads(stacked, 4)
    batched = jax.vmap(lambda p, g: tx.update(g, tx.init(p), p)[0])(stacked, grads)
    for i in range(3):
        one = {"w": stacked["w"][i]}
        single, _ = tx.update({"w": grads["w"][i]}, tx.init(one), one)
        allowance = _newton_schulz_allowance(single["w"], one["w"], 0.05, 0.1)  # weight_decay: the default
        assert _normwise_difference(batched["w"][i], single["w"]) <= allowance


def test_needs_params_for_weight_decay_only():
    params = _matrices()
    grads = _grads(params, 0)
    with pytest.raises(ValueError, match="needs the current parameters"):
        fo.muon().update(grads, fo.muon().init(params))
    fo.muon(weight_decay=0.0).update(grads, fo.muon().init(params))


def test_pairing_example_runs_and_learns():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "muon_with_adamw.py"
    spec = importlib.util.spec_from_file_location("muon_with_adamw", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.train(steps=101)
    assert losses[-1] < 0.1 * losses[0]  # a training-progress margin, not a rounding bound
