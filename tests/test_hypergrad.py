"""Hypergradients through unrolled updates: `fo.unroll`, `fo.unrolled_loss`, traced hyperparameters.

The reference is an independent one: central finite differences in float64 (the five-point
stencil, whose truncation error is O(h⁴)), plus a closed form for SGD on a quadratic. The torch
comparison (``differentiable=True``) is in ``test_hypergrad_torch.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from bounds import U64, leaf_errors

import functional_optreg as fo
from functional_optreg import verify

NOISE_SAMPLES = 8
"""Pairs of evaluations ``f(x ± jη·v)`` (j = 1 … 8) that measure the rounding noise
of the unrolled loss here and now; see :func:`derivative_bounds`."""


# --- the problem: a small tanh MLP, softmax cross-entropy, minibatches, a validation set ---------

DIM, HIDDEN, CLASSES, BATCH, NUM_BATCHES = 5, 4, 3, 12, 20


def problem_data(seed: int = 0) -> dict:
    """NumPy arrays (float64) shared with the torch comparison."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(DIM, CLASSES))
    x = rng.normal(size=(NUM_BATCHES * BATCH + 40, DIM))
    y = np.argmax(x @ teacher + rng.normal(size=(len(x), CLASSES)), axis=1)
    split = NUM_BATCHES * BATCH
    return {
        "x": x[:split].reshape(NUM_BATCHES, BATCH, DIM),
        "y": y[:split].reshape(NUM_BATCHES, BATCH),
        "x_val": x[split:],
        "y_val": y[split:],
        "params": {
            "w1": rng.normal(size=(DIM, HIDDEN)) * 0.5,
            "b1": np.zeros(HIDDEN),
            "w2": rng.normal(size=(HIDDEN, CLASSES)) * 0.5,
            "b2": np.zeros(CLASSES),
        },
    }


def cross_entropy(params, x, y):
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    picked = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def _loss_scale(params, x):
    """How far ``cross_entropy(params, x, ·)`` may move between two runs whose params agree to the
    contract's per-leaf FLOAT64_RTOL (ε): a logit ``z = tanh(x·W1 + b1)·W2 + b2`` moves by ≤ ε
    times ``Σ|tanh|·max|W2| + max|b2| + Σ|W2|·(Σ|x|·max|W1| + max|b1|)`` (|tanh'| ≤ 1), and
    lse − z_y moves by ≤ twice the largest logit change; both sides' own rounding of lse − z_y
    (≤ 8u of the logits' magnitude) is far below that."""
    big = {k: float(np.max(np.abs(np.asarray(v)))) for k, v in params.items()}
    x = np.abs(np.asarray(x))
    hidden = np.abs(np.tanh(x @ np.asarray(params["w1"]) + np.asarray(params["b1"])))
    pre = x.sum(axis=1, keepdims=True) * big["w1"] + big["b1"]
    terms = hidden.sum(axis=1) * big["w2"] + big["b2"] + pre[:, 0] * np.abs(np.asarray(params["w2"])).sum()
    return 2 * verify.FLOAT64_RTOL * float(np.mean(terms))


def mlp_config(make_tx, steps, data=None):
    """Keyword arguments of `fo.unrolled_loss` for the MLP problem (call under enable_x64)."""
    data = problem_data() if data is None else data
    x_val, y_val = jnp.asarray(data["x_val"]), jnp.asarray(data["y_val"])
    return dict(
        make_tx=make_tx,
        loss_fn=lambda p, batch: cross_entropy(p, *batch),
        val_loss_fn=lambda p: cross_entropy(p, x_val, y_val),
        batches=(jnp.asarray(data["x"][:steps]), jnp.asarray(data["y"][:steps])),
    )


def initial_params(data=None):
    data = problem_data() if data is None else data
    return jax.tree.map(jnp.asarray, data["params"])


# --- finite differences ----------------------------------------------------------------------


def five_point_directional(fn, point, directions, steps, spacings):
    """Directional derivatives of ``fn`` at ``point`` along each pytree in ``directions``.

    ``(−f(x+2hv) + 8f(x+hv) − 8f(x−hv) + f(x−2hv)) / 12h`` with ``h = steps[i]`` for direction
    ``i``, at h and at 2h, and the noise samples ``f(x + jηv) − f(x − jηv)`` (η = spacings[i],
    j = 1 … NOISE_SAMPLES) with their offsets jη; every evaluation runs in one ``vmap``, so
    ``fn`` is compiled once. Returns ``(fd_h, fd_2h, noise_differences, noise_offsets)``.
    """
    steps = jnp.asarray(steps)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *directions)
    stencil = jnp.array([-2.0, -1.0, 1.0, 2.0])
    near = jnp.asarray(spacings)[:, None] * jnp.arange(1.0, NOISE_SAMPLES + 1)
    offsets = jnp.concatenate([steps[:, None] * stencil, 2 * steps[:, None] * stencil, near, -near], axis=1)

    def along(direction, offset):
        return fn(jax.tree.map(lambda x, v: x + offset * v, point, direction))

    values = jax.jit(jax.vmap(jax.vmap(along, in_axes=(None, 0))))(stacked, offsets)
    weights = jnp.array([1.0, -8.0, 8.0, -1.0]) / 12.0
    fd_h = values[:, :4] @ weights / steps
    fd_2h = values[:, 4:8] @ weights / (2 * steps)
    noise = values[:, 8 : 8 + NOISE_SAMPLES] - values[:, 8 + NOISE_SAMPLES :]
    return fd_h, fd_2h, noise, offsets[:, 8 : 8 + NOISE_SAMPLES]


def derivative_bounds(fn, point, directions, steps, spacings):
    """``(|AD − FD|, allowed, AD)`` per direction (scale directions so that the steps are relative).

    The five-point difference errs by truncation T(h) = O(h⁴) and by the rounding noise δ of its
    four evaluations, ≤ (1 + 8 + 8 + 1)·δ/12h = 1.5δ/h. Richardson: FD(2h) − FD(h) ≈ 15·T(h), so
    T(h) ≤ |FD(2h) − FD(h)|/15 (which the noise only enlarges). δ is measured on this machine: a
    pair f(x + jηv) − f(x − jηv) − 2jη·FD(h) is two noise values apart, plus the next odd Taylor
    term (jη)³·f⁽³⁾/3 and 2jη times FD's own error, which only enlarge the estimate; half the
    largest of 8 pairs is the noise amplitude, and twice that covers the stencil's four draws of
    the same bounded noise. The samples are taken at η = h/10, the stencil's own scale, where its
    noise is drawn (for the float32-limited directions, h = 3e-2, across many float32 roundings of
    the state, so they see that noise; there the cubic term dominates, a looser but valid bound).
    AD is not used in the allowance, so a wrong AD derivative cannot widen it."""
    gradient = jax.jit(jax.grad(fn))(point)
    ad = jnp.stack(
        [sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(gradient), jax.tree.leaves(d))) for d in directions]
    )
    fd_h, fd_2h, noise, offsets = five_point_directional(fn, point, directions, steps, spacings)
    amplitude = jnp.max(jnp.abs(noise - 2 * offsets * fd_h[:, None]), axis=1) / 2
    allowed = 2 * 1.5 * amplitude / jnp.asarray(steps) + jnp.abs(fd_2h - fd_h) / 15
    return np.asarray(jnp.abs(ad - fd_h)), np.asarray(allowed), np.asarray(ad)


def unit_directions(hyperparams, params, names, seed=3):
    """One direction per hyperparameter name, and a random one in params.

    A hyperparameter's direction is scaled by its value, with a floor of 0.1: for a small value
    (weight decay 0.01, eps 1e-3) a purely relative step would be so small that the rounding of
    the loss dominates the difference quotient.
    """
    zeros_h = jax.tree.map(jnp.zeros_like, hyperparams)
    zeros_p = jax.tree.map(jnp.zeros_like, params)
    directions = []
    for name in names:
        scaled = dict(zeros_h)
        scaled[name] = jnp.maximum(jnp.abs(hyperparams[name]), 0.1)
        directions.append((scaled, zeros_p))
    rng = np.random.default_rng(seed)
    random_p = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    directions.append((zeros_h, random_p))
    return directions


# --- unroll ------------------------------------------------------------------------------------


def test_unroll_matches_a_python_loop_of_updates():
    with jax.enable_x64(True):
        data = problem_data()
        params = initial_params(data)
        tx = fo.adam(lr=0.05, weight_decay=0.01)
        loss_fn = lambda p, batch: cross_entropy(p, *batch)  # noqa: E731
        batches = (jnp.asarray(data["x"][:7]), jnp.asarray(data["y"][:7]))
        final, state, losses = jax.jit(fo.unroll, static_argnums=(0, 2))(tx, params, loss_fn, batches)

        expected, expected_state, expected_losses, expected_scales = params, tx.init(params), [], []
        for t in range(7):
            loss, grads = jax.value_and_grad(loss_fn)(expected, (batches[0][t], batches[1][t]))
            updates, expected_state = tx.update(grads, expected_state, expected)
            expected_scales.append(_loss_scale(expected, batches[0][t]))
            expected = optax.apply_updates(expected, updates)
            expected_losses.append(loss)
        # Same operations, fused differently: the contract's per-leaf measure for params and state
        # (an exp_avg element crossing 0 is measured against its leaf).
        errors = leaf_errors((final, state), (expected, expected_state))
        assert max(errors) <= verify.FLOAT64_RTOL, errors
        # The losses are cross-entropies, lse − z_y, a cancelling difference: bounded through the
        # logits' term scale (``_loss_scale``), not relative to the loss itself.
        difference = np.abs(np.asarray(losses) - np.asarray(expected_losses))
        assert np.all(difference <= np.asarray(expected_scales)), difference / np.asarray(expected_scales)
        assert int(state.step) == 7


def test_unroll_cycles_through_batches_and_accepts_no_batches():
    batches = jnp.array([1.0, -2.0, 3.0])
    seen = []
    tx = fo.sgd(lr=0.0)

    def loss_fn(p, batch):
        seen.append(batch.shape)
        return p * batch

    _, _, losses = fo.unroll(tx, jnp.array(2.0), loss_fn, batches, steps=7)
    np.testing.assert_array_equal(losses, 2.0 * np.array([1.0, -2.0, 3.0, 1.0, -2.0, 3.0, 1.0]))
    assert seen and all(shape == () for shape in seen)
    final, _, losses = fo.unroll(fo.sgd(lr=0.25), jnp.array(4.0), lambda w: w**2, steps=2)
    np.testing.assert_array_equal(losses, [16.0, 4.0])
    assert float(final) == 1.0


def test_unroll_rejects_bad_arguments():
    tx = fo.sgd(lr=0.1)
    with pytest.raises(ValueError, match="give `steps` when `batches` is None"):
        fo.unroll(tx, jnp.ones(2), lambda p: jnp.sum(p))
    with pytest.raises(ValueError, match="same leading"):
        fo.unroll(tx, jnp.ones(2), lambda p, b: jnp.sum(p), (jnp.ones((3, 2)), jnp.ones((4,))))
    with pytest.raises(ValueError, match=r"`steps` \(=-1\) must be >= 0"):
        fo.unroll(tx, jnp.ones(2), lambda p: jnp.sum(p), steps=-1)


# --- closed form ---------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [5, 20])
def test_sgd_on_a_quadratic_matches_the_closed_form(steps):
    """L(w) = a w²/2: w_K = (1 − γa)^K w₀, so dL(w_K)/dγ = −K a² w₀² (1 − γa)^(2K−1)."""
    a, lr, w0 = 1.5, 0.1, 0.8
    with jax.enable_x64(True):
        config = dict(
            make_tx=lambda h: fo.sgd(lr=h),
            loss_fn=lambda w: 0.5 * a * w**2,
            val_loss_fn=lambda w: 0.5 * a * w**2,
            steps=steps,
        )
        d_lr, d_w0 = jax.grad(fo.unrolled_loss, argnums=(0, 1))(jnp.asarray(lr), jnp.asarray(w0), **config)
        shrink = 1.0 - lr * a
        # float64: each SGD step w − lr·(a·w) = 0.85·w rounds 3 times (the subtraction's condition 1.35): ≤ 1.35u·2
        # per step forward and back, the K-term same-sign sum of the lr derivative K·u, and the closed form's
        # 1 − 0.15 (condition 0.18) raised to 2K: ≤ (4.1·K + 10)·u; (5K + 10)·u holds it.
        rtol = (5 * steps + 10) * U64
        np.testing.assert_allclose(d_lr, -steps * a**2 * w0**2 * shrink ** (2 * steps - 1), rtol=rtol)
        np.testing.assert_allclose(d_w0, a * w0 * shrink ** (2 * steps), rtol=rtol)


def test_remat_gives_the_same_hypergradient():
    with jax.enable_x64(True):
        config = mlp_config(lambda h: fo.adam(lr=h["lr"], weight_decay=h["weight_decay"]), 6)
        hyperparams = {"lr": jnp.asarray(0.02), "weight_decay": jnp.asarray(0.01)}
        plain, remat = (
            jax.jit(jax.grad(functools.partial(fo.unrolled_loss, **config, remat=remat), argnums=(0, 1)))(
                hyperparams, initial_params()
            )
            for remat in (False, True)
        )
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_traced_hyperparameters_compile_once():
    traces = []

    @jax.jit
    def hypergradient(lr):
        traces.append(1)
        return jax.grad(fo.unrolled_loss)(
            lr,
            jnp.array([1.0, -2.0]),
            make_tx=lambda h: fo.adam(lr=h),
            loss_fn=lambda w: jnp.sum(w**2),
            val_loss_fn=lambda w: jnp.sum(w**2),
            steps=5,
        )

    values = [hypergradient(jnp.float32(lr)) for lr in (0.1, 0.2, 0.3)]
    assert len(traces) == 1
    assert len(set(float(v) for v in values)) == 3


# --- every optimizer's float hyperparameters can be traced and differentiated --------------------


def _with_pairs(factory, **pairs):
    """Build ``factory`` from flat hyperparameters, regrouping torch's pairs (betas, etas, ...)."""

    def make(h):
        h = dict(h)
        grouped = {name: tuple(h.pop(part) for part in parts) for name, parts in pairs.items()}
        return factory(**h, **grouped)

    return make


CASES = {
    # name: (make_tx, hyperparameters limited to float32 accuracy, hyperparameters, K)
    "sgd_momentum": (
        _with_pairs(fo.sgd),
        set(),
        dict(lr=0.2, momentum=0.9, dampening=0.1, weight_decay=0.01),
        5,
    ),
    "sgd_nesterov": (
        _with_pairs(functools.partial(fo.sgd, nesterov=True)),
        set(),
        dict(lr=0.2, momentum=0.9, weight_decay=0.01),
        12,
    ),
    "adam": (
        _with_pairs(fo.adam, betas=("beta1", "beta2")),
        set(),
        dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.01),
        20,
    ),
    "adam_amsgrad": (
        _with_pairs(functools.partial(fo.adam, amsgrad=True), betas=("beta1", "beta2")),
        set(),
        dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.01),
        8,
    ),
    "adamw": (
        _with_pairs(fo.adamw, betas=("beta1", "beta2")),
        set(),
        dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.1),
        10,
    ),
    "rmsprop": (
        _with_pairs(functools.partial(fo.rmsprop, centered=True)),
        set(),
        dict(lr=0.005, alpha=0.9, eps=1e-3, weight_decay=0.01, momentum=0.5),
        15,
    ),
    "adagrad": (
        _with_pairs(fo.adagrad),
        set(),
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-3),
        8,
    ),
    "adadelta": (
        _with_pairs(fo.adadelta),
        set(),
        dict(lr=1.0, rho=0.9, eps=1e-3, weight_decay=0.01),
        8,
    ),
    "adamax": (
        _with_pairs(fo.adamax, betas=("beta1", "beta2")),
        set(),
        dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.01),
        8,
    ),
    "nadam": (
        _with_pairs(fo.nadam, betas=("beta1", "beta2")),
        {"beta1", "momentum_decay"},
        dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-3, weight_decay=0.01, momentum_decay=0.05),
        8,
    ),
    "radam": (
        _with_pairs(functools.partial(fo.radam, decoupled_weight_decay=True), betas=("beta1", "beta2")),
        set(),
        # beta2 = 0.8 switches the rectification on from step 4 (rho_t > 5) inside the unroll.
        dict(lr=0.02, beta1=0.9, beta2=0.8, eps=1e-3, weight_decay=0.1),
        8,
    ),
    "asgd": (
        _with_pairs(fo.asgd),
        {"lr", "lambd", "alpha"},
        # A large lambd makes lr, lambd and alpha matter; t0 only moves the average `ax`, which
        # the final parameters do not depend on (its derivative is 0, checked below).
        dict(lr=0.1, lambd=0.5, alpha=0.75, weight_decay=0.01),
        8,
    ),
    "rprop": (
        _with_pairs(fo.rprop, etas=("etaminus", "etaplus"), step_sizes=("step_min", "step_max")),
        set(),
        # Both clamps are active inside the unroll (0.01·0.5 < step_min, 0.01·1.2² > step_max),
        # with no step size landing exactly on a clamp, where the derivative does not exist.
        dict(lr=0.01, etaminus=0.5, etaplus=1.2, step_min=0.0055, step_max=0.013),
        8,
    ),
}


def hypergradient_errors(name):
    """(names, |AD − FD|, allowed, AD values) for one case."""
    make_tx, float32_limited, hyper, steps = CASES[name]
    with jax.enable_x64(True):
        config = mlp_config(make_tx, steps)
        hyperparams = {k: jnp.asarray(v) for k, v in hyper.items()}
        params = initial_params()

        def fn(point):
            return fo.unrolled_loss(*point, **config)

        directions = unit_directions(hyperparams, params, list(hyper))
        # A large step for the float32-limited ones (state torch keeps in float32: ASGD's eta,
        # NAdam's mu_product): the function is rounded to float32 there, noise ~1e-7 relative.
        limited = np.array([name in float32_limited for name in hyper] + [False])
        steps = np.where(limited, 3e-2, 1e-5)
        errors, allowed, ad = derivative_bounds(fn, (hyperparams, params), directions, steps, steps / 10)
    return [*hyper, "params"], errors, allowed, ad


SECOND_PROOFS = {"sgd_nesterov", "adamw"}
"""``slow``: variants one term away from a default case on the same code path (SGD's Nesterov
look-ahead beside ``sgd_momentum``; AdamW's decoupled decay beside ``adam``, whose lr and weight
decay hypergradients tests/test_hypergrad_torch.py also checks against torch's
``differentiable=True`` AdamW in every run)."""


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SECOND_PROOFS else name for name in CASES]
)
def test_hypergradients_match_finite_differences(name):
    """Every float hyperparameter, traced, and a direction in θ₀; float64, K from 5 to 20."""
    names, errors, allowed, ad = hypergradient_errors(name)
    assert np.all(np.abs(ad) > 1e-6), dict(zip(names, ad))  # informative, not ~0
    assert np.all(errors <= allowed), {n: (e, a, d) for n, e, a, d in zip(names, errors, allowed, ad)}


def test_asgd_t0_only_moves_the_average():
    with jax.enable_x64(True):
        config = mlp_config(lambda t0: fo.asgd(lr=0.1, t0=t0), 8)
        assert float(jax.grad(fo.unrolled_loss)(jnp.asarray(3.5), initial_params(), **config)) == 0.0


def test_meta_learning_example_raises_the_learning_rate_and_lowers_the_loss(tmp_path):
    from examples import meta_learning_lr

    args = meta_learning_lr.parse_args(["--meta-steps", "40", "--eval-draws", "4", "--unroll", "10"])
    result = meta_learning_lr.meta_learn(args, progress=False)
    assert result.learning_rates.shape == (41,) and result.val_losses.shape == (40,)
    # Behavioural margins (the meta-learner's progress), orders of magnitude away from rounding effects.
    assert result.learning_rates[-1] > 3 * args.initial_lr
    assert result.report["learned"]["val_loss"] < result.report["initial"]["val_loss"] - 0.1
    meta_learning_lr.plot(str(tmp_path / "meta.png"), result)
    assert (tmp_path / "meta.png").stat().st_size > 0
