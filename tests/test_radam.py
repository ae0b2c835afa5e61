"""fo.radam beyond the parity catalog: signature, validation, rho_t, the switch, state vs torch."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bounds import EPS32, U32, XLA32_ELEMENTARY_ULPS, ulp_error
from state_trajectories import side_by_side

import functional_optreg as fo
from functional_optreg import verify
from functional_optreg.optimizers.radam import sma_length
from parity.cases.radam import CASES

torch = pytest.importorskip("torch")
mpmath = pytest.importorskip("mpmath")


def _torch_rho(beta2, step):
    """rho_t exactly as _single_tensor_radam writes it, in Python floats."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)


_U64 = np.finfo(np.float64).eps / 2  # unit roundoff of float64


def _rho_bound(beta2, steps):
    r"""How far two correct float64 evaluations of torch's ``rho_t`` expression may differ.

    With :math:`P = \beta_2^t` and :math:`f(P) = 2tP/(1-P)`, :math:`\rho_t = \rho_\infty - f`.
    ``pow`` is a library function: CPython calls libm, XLA its own kernel, and neither is
    correctly rounded by specification. As :math:`\exp(t \log\beta_2)` with every operation
    rounded, its relative error is at most :math:`\delta = (3|t\log\beta_2| + 4)u` (the log's and
    the product's roundings magnified by the exponential's slope, plus a few ulps of the exp
    itself; our ``-expm1(t·log1p(β − 1))`` for :math:`1 - \beta^t` has the same bound). ``rho_t``
    amplifies it by the expression's own condition, :math:`|f'(P)|P = 2tP/(1-P)^2` (about
    :math:`2/(t(1-\beta_2)^2)` for small :math:`t`: 2e8 at :math:`\beta_2 = 0.9999`, t = 1). The
    other operations (``1 - P``, the product, the quotient, :math:`\rho_\infty`'s two, the final
    difference) round by at most :math:`u` each relative to :math:`\rho_\infty + 1 \geq f`:
    :math:`8u(\rho_\infty + 1)`. Each side is within that of the exact value, so the two
    sides are within twice of each other.
    """
    t = np.asarray(steps, np.float64)
    power = beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    return 2 * (2 * t * power / (1 - power) ** 2 * _pow_error(beta2, t) + 8 * _U64 * (rho_inf + 1))


def _pow_error(beta, t):
    """Relative error bound of ``beta**t`` computed as ``exp(t·log(beta))`` (see :func:`_rho_bound`)."""
    return (3 * np.abs(t * np.log(beta)) + 4) * _U64


def test_signature_matches_torch():
    ours = inspect.signature(fo.radam).parameters
    theirs = dict(inspect.signature(torch.optim.RAdam.__init__).parameters)
    del theirs["self"], theirs["params"]
    assert list(ours) == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        assert ours[name].default == parameter.default, name


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1e-3),
        dict(eps=-1e-8),
        dict(betas=(1.0, 0.999)),
        dict(betas=(0.9, -0.5)),
        dict(weight_decay=-0.1),
    ],
)
def test_validation_messages_match_torch(kwargs):
    with pytest.raises(ValueError) as theirs:
        torch.optim.RAdam([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(theirs.value))}$"):
        fo.radam(**kwargs)


_STEPS = np.concatenate([np.arange(1, 200), np.arange(200, 20000, 397)])
_BETA2S = [0.6, 0.75, 0.9, 0.99, 0.999, 0.9999]


@pytest.mark.parametrize("beta2", _BETA2S)
def test_sma_length_in_float64_is_torchs_expression(beta2):
    with jax.enable_x64(True):
        ours = np.asarray(jax.vmap(lambda s: sma_length(beta2, s))(jnp.asarray(_STEPS, jnp.int32)))
    theirs = np.array([_torch_rho(beta2, float(t)) for t in _STEPS])
    # Torch's own cancellation is reproduced: the sides differ by rounding that the expression's
    # own conditioning amplifies (_rho_bound), not by its cancellation against the exact value.
    bound = _rho_bound(beta2, _STEPS)
    assert np.all(np.abs(ours - theirs) <= bound), np.max(np.abs(ours - theirs) / bound)
    # The bound still sees a real difference: beta2 rounded to float32 on the way in.
    if np.float32(beta2) != beta2:
        leaked = np.array([_torch_rho(float(np.float32(beta2)), float(t)) for t in _STEPS])
        assert np.any(np.abs(leaked - theirs) > bound)


def _float32_rho_path(beta2, t, small_y, delta, kinds):
    """``sma_length``'s float32 evaluation, written out with its i-th rounding scaled by ``1 + delta[i]`` (an
    elementary function's error too); ``kinds`` collects ``"op"`` or ``"elementary"`` per rounding."""

    def rounded(x, kind="op"):
        kinds.append(kind)
        return x * (1 + delta[len(kinds) - 1])

    e = rounded(1.0 - beta2)  # exact in float64 (Sterbenz), rounded to float32
    ell = -rounded(jnp.log1p(-e), "elementary")
    rho_inf = rounded(rounded(2.0 / e) - 1.0)
    if np.float32(1.0 - beta2) < 0.1:
        h = rounded(863.0 / 15120)
        for c in (3.0 / 80, 19.0 / 360, 1.0 / 12, 1.0 / 6):
            h = rounded(rounded(c) + rounded(e * h))
        offset = rounded(e * h)
    else:
        offset = rounded(rho_inf - rounded(2.0 / ell))
    y = rounded(t * ell)
    u = rounded(y * y)
    uu = rounded(u * u)
    poly = rounded(
        rounded(rounded(1.0 - rounded(u / 60.0)) + rounded(uu / 2520.0)) - rounded(rounded(uu * u) / 100800.0)
    )
    small = rounded(rounded(offset + t) - rounded(rounded(rounded(t * y) / 6.0) * poly))
    # exp overflows float32 beyond y ≈ 88, leaving ρ_∞ exactly; 700 keeps float64 finite with the same limit.
    expm1 = rounded(jnp.expm1(jnp.clip(y, 1.0, 700.0)), "elementary")
    large = rounded(rho_inf - rounded(2.0 * t / expm1))
    return jnp.where(small_y, small, large)


def _float32_rho_bound(beta2, steps, exact):
    r"""How far ``sma_length``'s float32 ρ_t may be from the exact ``exact``, per step, to first order in ``U32``.

    Premise: XLA:CPU's float32 ``log1p`` and ``expm1`` are within ``XLA32_ELEMENTARY_ULPS`` ulps of the exact value
    (``≤ k·EPS32`` relative; the test checks it at its inputs); every other operation is one IEEE rounding
    (``≤ U32`` relative; a fused multiply-add only removes one). With :math:`\hat\rho = \rho(\delta)` the
    evaluation with its i-th rounding scaled by :math:`1 + \delta_i`, :math:`|\hat\rho - \rho| \leq
    |\rho(0) - \rho| + \sum_i |\partial\rho/\partial\delta_i|\,w_i`: the series' truncation (the formula in exact
    arithmetic against mpmath) plus the roundings weighted by their sensitivities (autodiff in float64, which also
    sees the cancellation between ρ_∞ and the rest). Second-order terms are dropped: where ρ_∞ enters, either
    y ≥ 1, so ρ ≥ 0.42ρ_∞ − 0.6 and no intermediate exceeds ~2.4·max(1, ρ) + 1.4, or e ≥ 0.1, so ρ_∞ ≤ 19; with
    Σw ≤ 42·U32 they stay below (Σw)²·20 ≈ 1e-10 of max(1, |ρ|).
    """
    kinds: list[str] = []
    _float32_rho_path(beta2, 1.0, True, np.zeros(64), kinds)
    weights = np.array([XLA32_ELEMENTARY_ULPS * EPS32 if kind == "elementary" else U32 for kind in kinds])
    ell32 = -np.asarray(jnp.log1p(-jnp.float32(1.0 - beta2)))
    small_y = steps.astype(np.float32) * ell32 < 1.0  # the branch the float32 evaluation takes
    with jax.enable_x64(True):
        path = jax.value_and_grad(lambda t, small, delta: _float32_rho_path(beta2, t, small, delta, []), argnums=2)
        values, sensitivities = jax.jit(jax.vmap(path, in_axes=(0, 0, None)))(
            jnp.asarray(steps, jnp.float64), jnp.asarray(small_y), jnp.zeros(len(kinds))
        )
    return np.abs(np.asarray(values) - exact) + np.abs(np.asarray(sensitivities)) @ weights


def _check_elementary_premise(beta2):
    """XLA32_ELEMENTARY_ULPS holds for log1p and expm1 at the float32 arguments sma_length gives them."""
    e = jnp.float32(1.0 - beta2)
    log1p = jnp.log1p(-e)
    assert ulp_error(log1p, float(mpmath.log1p(-mpmath.mpf(float(e))))) <= XLA32_ELEMENTARY_ULPS
    y = np.maximum(_STEPS.astype(np.float32) * -np.asarray(log1p), np.float32(1.0))
    y = y[y < 88]  # beyond, expm1 overflows to inf in float32 and in exact rounding alike
    exact = np.array([float(mpmath.expm1(mpmath.mpf(float(v)))) for v in y])
    assert np.all(ulp_error(jnp.expm1(jnp.asarray(y)), exact) <= XLA32_ELEMENTARY_ULPS)


@pytest.mark.parametrize("beta2", _BETA2S)
def test_sma_length_in_float32_is_accurate(beta2):
    """Within its own float32 evaluation's first-order error bound (_float32_rho_bound), where the direct
    expression loses up to ~8000·EPS32: the cancelling brackets are taken analytically. The bound is ≤ 12·EPS32 of
    max(1, ρ) for β2 ≥ 0.99 and mostly ~2 below, but up to 68 at t = 1 for β2 = 0.9, where ρ_∞ − 2/ℓ cancels 19 down
    to 0.017 (four roundings and the log1p premise at 19 each); measured errors stay ≤ 3·EPS32, which is not a bound.
    """
    mpmath.mp.dps = 40
    b = mpmath.mpf(beta2)
    exact = np.array([float(2 / (1 - b) - 1 - 2 * int(t) * b ** int(t) / (1 - b ** int(t))) for t in _STEPS])
    ours = np.asarray(jax.vmap(lambda s: sma_length(beta2, s))(jnp.asarray(_STEPS, jnp.int32)))
    assert ours.dtype == np.float32
    _check_elementary_premise(beta2)
    bound = _float32_rho_bound(beta2, _STEPS, exact)
    error = np.abs(ours.astype(np.float64) - exact)
    assert np.all(error <= bound), np.max(error / bound)


def _reference_updates(g_stream, lr, beta1, beta2, eps):
    r"""_single_tensor_radam for one fixed gradient stream, in float64 NumPy, with per element a
    bound on how far another correct float64 evaluation may be from it.

    The bound, first order in ``u`` per side (doubled: each side is within it of the exact
    value). The first moment is a lerp of gradients of both signs, so it is bounded absolutely:
    with :math:`M_t = \beta_1 M_{t-1} + (1-\beta_1)|g_t| \geq |m_t|`, one step's three or four
    roundings (either of torch's lerp forms, fused or not) add at most :math:`4u(|g_t| + M_{t-1})`
    and earlier errors decay by :math:`\beta_1`. Everything else is relative: :math:`v_t` sums
    non-negative terms (:math:`4tu` after :math:`t` steps, so :math:`(2t + 2)u` for
    :math:`\sqrt{v_t} + \epsilon`); the bias corrections :math:`1 - \beta^t` carry ``pow``'s
    error amplified by :math:`\beta^t/(1-\beta^t)` (:func:`_pow_error`); the rectification
    :math:`r_t` carries :math:`\rho_t`'s (:func:`_rho_bound`) through
    :math:`|\partial \log r_t / \partial \rho_t| = \tfrac12|1/(\rho_t-4) + 1/(\rho_t-2) - 1/\rho_t|`
    plus its own ten operations; the update's five products and quotients add :math:`5u`.
    The switch ``rho_t > 5`` must be decided by more than :math:`\rho_t`'s bound (asserted).
    """
    u = _U64
    m = v = big_m = error_m = np.zeros_like(g_stream[0])
    updates, bounds = [], []
    for step, g in enumerate(g_stream, start=1):
        error_m = beta1 * error_m + 4 * u * (np.abs(g) + big_m)
        big_m = beta1 * big_m + (1 - beta1) * np.abs(g)
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**step)
        rho_inf = 2 / (1 - beta2) - 1
        rho = _torch_rho(beta2, step)
        rho_error = _rho_bound(beta2, step) / 2
        assert abs(rho - 5) > rho_error, f"step {step}: the switch is decided by rounding"
        power1 = beta1**step
        relative = _pow_error(beta1, step) * power1 / (1 - power1) + 4 * u
        if rho > 5:
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            update = -m_hat * lr * np.sqrt(1 - beta2**step) / (np.sqrt(v) + eps) * rect
            power2 = beta2**step
            relative += (_pow_error(beta2, step) * power2 / (1 - power2) + 4 * u) / 2 + u
            relative += abs(1 / (rho - 4) + 1 / (rho - 2) - 1 / rho) / 2 * rho_error + 10 * u
            relative += (2 * step + 2) * u + 5 * u
        else:
            update = -m_hat * lr
            relative += 2 * u
        coefficient = np.abs(update) / np.maximum(np.abs(m), np.finfo(np.float64).tiny)  # |update| per unit of m
        updates.append(update)
        bounds.append(2 * (coefficient * error_m + np.abs(update) * relative))
    return updates, bounds


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.75), (0.9, 0.6)])
def test_updates_follow_the_rectification_switch(betas):
    rng = np.random.default_rng(3)
    g_stream = [rng.normal(size=4) for _ in range(12)]
    expected, bounds = _reference_updates(g_stream, 0.01, *betas, 1e-8)
    # A real difference is far outside the bound: lr off by one part in a million.
    nudged, _ = _reference_updates(g_stream, 0.01 * (1 + 1e-6), *betas, 1e-8)
    assert all(np.all(np.abs(a - b) > bound) for a, b, bound in zip(nudged, expected, bounds))
    with jax.enable_x64(True):
        tx = fo.radam(lr=0.01, betas=betas)
        params = jnp.zeros(4)
        state = tx.init(params)
        for step, (g, want, bound) in enumerate(zip(g_stream, expected, bounds), start=1):
            updates, state = tx.update(jnp.asarray(g), state, params)
            error = np.abs(np.asarray(updates) - want)
            assert np.all(error <= bound), f"step {step}: {error} > {bound}"


def test_default_betas_switch_at_step_six():
    assert [_torch_rho(0.999, t) > 5 for t in range(1, 8)] == [False] * 5 + [True] * 2
    with jax.enable_x64(True):
        assert [bool(sma_length(0.999, t) > 5) for t in range(1, 8)] == [False] * 5 + [True] * 2
    assert [bool(sma_length(0.999, t) > 5) for t in range(1, 8)] == [False] * 5 + [True] * 2


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_state_matches_torch_float64(case):
    for index, (theirs, ours, _) in enumerate(side_by_side(case, "float64")):
        assert int(ours.step) == index + 1
        for key in ("exp_avg", "exp_avg_sq"):
            for leaf, torch_state in zip(jax.tree.leaves(getattr(ours, key)), theirs):
                scale = np.max(np.abs(torch_state[key]))
                error = np.max(np.abs(leaf - torch_state[key]))
                assert error <= verify.FLOAT64_RTOL * scale, f"{key} at step {index + 1}"


def test_weight_decay_needs_params():
    tx = fo.radam(weight_decay=0.1, decoupled_weight_decay=True)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="radam needs the current parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init(params))


def test_first_steps_stay_finite_for_zero_gradients():
    """Unrectified steps and the unselected sqrt branch must not leak NaN (0/0, sqrt of < 0)."""
    tx = fo.radam()
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    for _ in range(8):
        updates, state = jax.jit(tx.update)({"w": jnp.zeros(3)}, state, params)
        np.testing.assert_array_equal(updates["w"], np.zeros(3))
