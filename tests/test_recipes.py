"""The porting guide's recipes (docs/porting.md): well-known PyTorch training loops, side by side.

Each recipe is a tiny float64 model trained with a loop shaped like its original. Three runs are
compared with one uninterrupted torch run, step by step (≤ 1e-12 relative, docs/parity.md):

* full port: the JAX loop from the first step;
* hand-over: torch for ``HAND_OVER`` steps, ``fo.from_torch`` and JAX until ``HAND_BACK``;
* hand-back: from there ``fo.to_torch_state_dict`` (and ``fo.to_torch_scheduler_state_dict``)
  into a fresh torch optimizer (and scheduler), which runs to the end.

Models are lists of arrays in torch's order (the layout ``from_torch`` uses without ``params=``):
a two-layer tanh MLP whose gradients depend on the parameters (imagenet's with a BatchNorm in
training mode, normalizing with the batch's statistics, between the layers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as L

import functional_optreg as fo

RTOL = 1e-12
STEPS = 32
HAND_OVER = 12
HAND_BACK = 24
EPOCH = 4
"""Updates per epoch for the per-epoch schedulers (hand-over and hand-back fall on epoch ends)."""

SHAPES = [(3, 5), (5,), (5, 2), (2,)]
BATCH_NORM_SHAPES = [(3, 5), (5,), (5,), (5,), (5, 2), (2,)]
"""With ``nn.BatchNorm1d(5)``'s weight and bias after the first layer."""


def _init(seed: int = 0, shapes=SHAPES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=shape) * 0.5 + (1.0 if i == 2 and len(shapes) == 6 else 0.0) for i, shape in enumerate(shapes)
    ]


def _batch(it: int, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + 10 * it + micro)
    return rng.normal(size=(6, 3)), rng.normal(size=(6, 2))


def _loss(params: Any, x: Any, y: Any, xp: Any) -> Any:
    """The MLP's mean squared error; ``xp`` is ``torch`` or ``jnp``. Six parameters: a BatchNorm
    in training mode after the first layer (torch's ``F.batch_norm``: biased batch variance,
    eps 1e-5)."""
    if len(params) == 6:
        w1, b1, gamma, beta, w2, b2 = params
        h = x @ w1 + b1
        mean = h.mean(0)
        var = ((h - mean) ** 2).mean(0)
        h = (h - mean) / xp.sqrt(var + 1e-5) * gamma + beta
    else:
        w1, b1, w2, b2 = params
        h = x @ w1 + b1
    return ((xp.tanh(h) @ w2 + b2 - y) ** 2).mean()


def torch_loss(tensors, it, micro=0):
    x, y = (torch.tensor(a) for a in _batch(it, micro))
    return _loss(tensors, x, y, torch)


def jax_batch(it, micro=0):
    return tuple(jnp.asarray(a) for a in _batch(it, micro))


def jax_grad(params, batch, k=1):
    """The gradient of the loss (of ``loss / k`` with ``k`` micro-batches, as torch scales it)."""
    x, y = batch
    return jax.grad(lambda p: _loss(p, x, y, jnp) / k if k != 1 else _loss(p, x, y, jnp))(params)


@dataclasses.dataclass
class Recipe:
    """A training loop on both sides.

    Attributes:
      make_torch: ``tensors -> (optimizer, scheduler or None)``.
      torch_step: ``(tensors, optimizer, scheduler, it)``: iteration ``it`` as the original does it.
      port: ``() -> (tx, step)``: the full JAX port, ``step(params, state, it) -> (params, state)``.
      bridge: ``(optimizer, scheduler) -> (tx, state, step)``: the JAX continuation of a live torch
        run; ``tx`` is what ``fo.from_torch`` returned.
    """

    make_torch: Callable[[list[Any]], tuple[Any, Any]]
    torch_step: Callable[..., None]
    port: Callable[[], tuple[Any, Callable[..., Any]]]
    bridge: Callable[[Any, Any], tuple[Any, Any, Callable[..., Any]]]
    unwrap: Callable[[Any], Any] = lambda state: state
    """Our loop's state → the state of the transform ``fo.from_torch`` returned."""
    resume_torch: Callable[..., None] = lambda tensors, optimizer, scheduler, it: None
    """What torch's loop does between iterations ``it - 1`` and ``it`` that the JAX loop leaves
    to the next update (the per-epoch plateau step), run on the resumed torch side."""
    init: Callable[[], list[np.ndarray]] = _init
    """The initial parameters."""


def _backward_step(tensors, optimizer, scheduler, it, clip=None, per_epoch=False):
    optimizer.zero_grad()
    torch_loss(tensors, it).backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(tensors, clip)
    optimizer.step()
    if scheduler is not None and (not per_epoch or (it + 1) % EPOCH == 0):
        scheduler.step()


def _plain_port(tx):
    @jax.jit
    def update(params, state, batch):
        updates, state = tx.update(jax_grad(params, batch), state, params)
        return optax.apply_updates(params, updates), state

    return tx, lambda params, state, it: update(params, state, jax_batch(it))


# --- mnist: Adadelta(lr=1.0) + StepLR(step_size=1, gamma=0.7), stepped once per epoch ---------


def _mnist_torch(tensors):
    optimizer = torch.optim.Adadelta(tensors, lr=1.0)
    return optimizer, L.StepLR(optimizer, step_size=1, gamma=0.7)


def _mnist_port():
    return _plain_port(fo.adadelta(lr=fo.step_lr(1.0, step_size=1, gamma=0.7, steps_per_epoch=EPOCH)))


def _mnist_bridge(optimizer, scheduler):
    tx, state = fo.from_torch(optimizer, scheduler)  # Adadelta keeps the count: 12 updates, epoch 3
    return (tx, state, _plain_port(tx)[1])


MNIST = Recipe(
    _mnist_torch,
    lambda *a: _backward_step(*a, per_epoch=True),
    _mnist_port,
    _mnist_bridge,
)


# --- imagenet: SGD(0.1, momentum 0.9, weight_decay 1e-4) + StepLR(30, 0.1) per epoch ----------
# (step_size 2 here, so that the decay happens within the run)


def _imagenet_torch(tensors):
    optimizer = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, weight_decay=1e-4)
    return optimizer, L.StepLR(optimizer, step_size=2, gamma=0.1)


def _imagenet_port():
    lr = fo.step_lr(0.1, step_size=2, gamma=0.1, steps_per_epoch=EPOCH)
    return _plain_port(fo.sgd(lr=lr, momentum=0.9, weight_decay=1e-4))


def _imagenet_bridge(optimizer, scheduler):
    tx, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=EPOCH)  # SGD keeps no count
    return (tx, state, _plain_port(tx)[1])


IMAGENET = Recipe(
    _imagenet_torch,
    lambda *a: _backward_step(*a, per_epoch=True),
    _imagenet_port,
    _imagenet_bridge,
    init=lambda: _init(shapes=BATCH_NORM_SHAPES),
)


# --- word_language_model: SGD + clip_grad_norm_(0.25) + lr/4 when the validation loss stalls ---


def _validation(params, epoch, xp):
    """The validation loss after ``epoch`` (a fixed held-out batch)."""
    x, y = _batch(10_000 + epoch)
    if xp is torch:
        x, y = torch.tensor(x), torch.tensor(y)
    return _loss(params, x, y, xp)


def _wlm_torch(tensors):
    optimizer = torch.optim.SGD(tensors, lr=5.0)
    return optimizer, L.ReduceLROnPlateau(optimizer, factor=0.25, patience=0)


def _wlm_torch_step(tensors, optimizer, scheduler, it):
    _backward_step(tensors, optimizer, None, it, clip=0.25)
    if (it + 1) % EPOCH == 0:
        with torch.no_grad():
            scheduler.step(float(_validation(tensors, it // EPOCH, torch)))


def _wlm_jax_step(tx, first=0):
    """The validation loss of the epoch that ended goes with the next epoch's first update
    (``epoch_value=``): torch's ``scheduler.step(val_loss)`` between the two epochs (torch has
    already taken that step when the JAX loop starts at ``first``)."""

    @jax.jit
    def update(params, state, batch, epoch_value):
        updates, state = tx.update(jax_grad(params, batch), state, params, epoch_value=epoch_value)
        return optax.apply_updates(params, updates), state

    def step(params, state, it):
        epoch_value = _validation(params, it // EPOCH - 1, jnp) if it % EPOCH == 0 and it > first else None
        return update(params, state, jax_batch(it), epoch_value)

    return step


def _wlm_port():
    tx = optax.chain(fo.clip_grad_norm(0.25), fo.sgd(lr=5.0), fo.reduce_lr_on_plateau(5.0, factor=0.25, patience=0))
    return tx, _wlm_jax_step(tx)


def _wlm_bridge(optimizer, scheduler):
    bridged, bridged_state = fo.from_torch(optimizer, scheduler, steps_per_epoch=EPOCH)
    tx = optax.chain(fo.clip_grad_norm(0.25), bridged)
    return bridged, (fo.clip_grad_norm(0.25).init(None), bridged_state), _wlm_jax_step(tx, first=HAND_OVER)


def _wlm_resume(tensors, optimizer, scheduler, it):
    """The JAX loop gives the last epoch's metric with the next update; torch steps it now."""
    if it % EPOCH == 0:
        with torch.no_grad():
            scheduler.step(float(_validation(tensors, it // EPOCH - 1, torch)))


WORD_LANGUAGE_MODEL = Recipe(
    _wlm_torch, _wlm_torch_step, _wlm_port, _wlm_bridge, unwrap=lambda state: state[1], resume_torch=_wlm_resume
)


# --- two AdamW groups (nanoGPT, HuggingFace Trainer): decay on matrices, none on biases --------

NAMES = ["w1", "b1", "w2", "b2"]
MAPPING = {name: (index,) for index, name in enumerate(NAMES)}
"""Torch's parameter names → paths in our list; the groups reorder torch's indices."""


def _adamw_groups(tensors, lr, weight_decay, betas=(0.9, 0.999)):
    """``[decay, no_decay]`` as nanoGPT's ``configure_optimizers`` and HuggingFace build them."""
    named = list(zip(NAMES, tensors))
    decay = [(n, p) for n, p in named if p.ndim >= 2]
    no_decay = [(n, p) for n, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def _bridge_list(optimizer, scheduler=None):
    params = [jnp.asarray(p.detach().numpy()) for p in _by_name(optimizer)]
    return fo.from_torch(optimizer, scheduler, params=(params, MAPPING))


def _by_name(optimizer):
    tensors = {n: p for g in optimizer.param_groups for n, p in zip(g["param_names"], g["params"])}
    return [tensors[name] for name in NAMES]


# nanoGPT: AdamW(betas 0.9, 0.95; weight_decay 0.1 on the decay group), the lr set by hand every
# iteration (linear warmup, cosine decay), 2 micro-batches per step ((loss / 2).backward()),
# clip_grad_norm_(1.0) after accumulating.

MICRO = 2


def get_lr(it, warmup=5, decay=STEPS, max_lr=6e-3, min_lr=6e-4):
    """nanoGPT's ``get_lr``, as written there."""
    if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + np.cos(np.pi * ratio)) * (max_lr - min_lr)


def _nanogpt_torch_step(tensors, optimizer, scheduler, it):
    for group in optimizer.param_groups:
        group["lr"] = get_lr(it)
    for micro in range(MICRO):
        (torch_loss(tensors, it, micro) / MICRO).backward()
    torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _nanogpt_step(tx):
    @jax.jit
    def micro_update(params, state, batch):
        updates, state = tx.update(jax_grad(params, batch, k=MICRO), state, params)
        return optax.apply_updates(params, updates), state

    def step(params, state, it):
        state = fo.set_hyperparams(state, lr=get_lr(it))  # param_group["lr"] = get_lr(it)
        for micro in range(MICRO):
            params, state = micro_update(params, state, jax_batch(it, micro))
        return params, state

    return step


def _nanogpt_port():
    adamw = fo.no_decay_on_bias_and_norm(
        optax.inject_hyperparams(fo.adamw), lr=6e-3, betas=(0.9, 0.95), weight_decay=0.1
    )
    tx = fo.accumulate_gradients(optax.chain(fo.clip_grad_norm(1.0), adamw), every_k=MICRO)
    return tx, _nanogpt_step(tx)


def _nanogpt_bridge(optimizer, scheduler):
    bridged, bridged_state = _bridge_list(optimizer)
    tx = fo.accumulate_gradients(optax.chain(fo.clip_grad_norm(1.0), bridged), every_k=MICRO)
    params = [jnp.asarray(p.detach().numpy()) for p in _by_name(optimizer)]
    state = tx.init(params)
    state = state._replace(inner_state=(state.inner_state[0], bridged_state))
    return bridged, state, _nanogpt_step(tx)


NANOGPT = Recipe(
    lambda tensors: (_adamw_groups(tensors, 6e-3, 0.1, betas=(0.9, 0.95)), None),
    _nanogpt_torch_step,
    _nanogpt_port,
    _nanogpt_bridge,
    unwrap=lambda state: state.inner_state[1],
)


# HuggingFace Trainer defaults: AdamW (weight_decay on the decay group only), linear warmup then
# linear decay per update (get_linear_schedule_with_warmup, written without Python branches so
# that torch and JAX run the same function), clip_grad_norm_(1.0).

WARMUP = 5


def hf_linear_warmup(step):
    """``get_linear_schedule_with_warmup``'s lambda, branch-free: ``min`` and ``max`` through
    ``abs`` (a Python int in torch, a traced array in JAX, the same float64 arithmetic)."""
    warm = step / WARMUP
    decay = (STEPS - step) / (STEPS - WARMUP)
    low = (warm + decay - abs(warm - decay)) / 2
    return (low + abs(low)) / 2


def _hf_torch(tensors):
    optimizer = _adamw_groups(tensors, 5e-3, 0.01)
    return optimizer, L.LambdaLR(optimizer, hf_linear_warmup)


def _hf_port():
    lr = fo.lambda_lr(5e-3, hf_linear_warmup)
    return _plain_port(
        optax.chain(fo.clip_grad_norm(1.0), fo.no_decay_on_bias_and_norm(fo.adamw, lr=lr, weight_decay=0.01))
    )


def _hf_bridge(optimizer, scheduler):
    bridged, bridged_state = _bridge_list(optimizer, scheduler)  # AdamW counts: per update inferred
    tx = optax.chain(fo.clip_grad_norm(1.0), bridged)
    return bridged, (fo.clip_grad_norm(1.0).init(None), bridged_state), _plain_port(tx)[1]


HUGGINGFACE = Recipe(
    _hf_torch,
    lambda *a: _backward_step(*a, clip=1.0),
    _hf_port,
    _hf_bridge,
    unwrap=lambda state: state[1],
)


# --- time_sequence_prediction: LBFGS(lr=0.8) with a closure ---------------------------------

LBFGS_MAX_ITER = 2
"""The original's default 20 inner iterations converge this tiny problem before the hand-over (the
trajectories would then agree trivially); 2 keep it moving through all 32 steps."""


def _lbfgs_torch_step(tensors, optimizer, scheduler, it):
    """The original trains on the full data set at every step: one fixed batch."""

    def closure():
        optimizer.zero_grad()
        loss = torch_loss(tensors, 0)
        loss.backward()
        return loss

    optimizer.step(closure)


def _lbfgs_step(solver):
    @jax.jit
    def update(params, state, x, y):
        params, state, _ = solver.step(lambda p, x, y: _loss(p, x, y, jnp), params, state, x, y)
        return params, state

    return lambda params, state, it: update(params, state, *jax_batch(0))


def _lbfgs_port():
    solver = fo.lbfgs(lr=0.8, max_iter=LBFGS_MAX_ITER)
    return solver, _lbfgs_step(solver)


def _lbfgs_bridge(optimizer, scheduler):
    solver, state = fo.from_torch(optimizer, update_count=HAND_OVER)  # torch's LBFGS keeps no count
    return solver, state, _lbfgs_step(solver)


TIME_SEQUENCE_PREDICTION = Recipe(
    lambda tensors: (torch.optim.LBFGS(tensors, lr=0.8, max_iter=LBFGS_MAX_ITER), None),
    _lbfgs_torch_step,
    _lbfgs_port,
    _lbfgs_bridge,
)


# --- the harness --------------------------------------------------------------------------------


def _relative(ours, tensors):
    return max(
        float(np.max(np.abs(np.asarray(o) - t.detach().numpy())) / np.max(np.abs(t.detach().numpy())))
        for o, t in zip(ours, tensors)
    )


def _tensors(arrays):
    return [torch.nn.Parameter(torch.tensor(np.asarray(a))) for a in arrays]


def _reference(recipe):
    tensors = _tensors(recipe.init())
    optimizer, scheduler = recipe.make_torch(tensors)
    trajectory = []
    for it in range(STEPS):
        recipe.torch_step(tensors, optimizer, scheduler, it)
        trajectory.append([t.detach().clone() for t in tensors])
    return trajectory


def run_recipe(recipe: Recipe) -> dict[str, float]:
    """The largest per-step relative error of each run against the uninterrupted torch run."""
    with jax.enable_x64(True):
        reference = _reference(recipe)
        tx, step = recipe.port()
        params = [jnp.asarray(a) for a in recipe.init()]
        state = tx.init(params)
        full = []
        for it in range(STEPS):
            params, state = step(params, state, it)
            full.append(_relative(params, reference[it]))

        tensors = _tensors(recipe.init())
        optimizer, scheduler = recipe.make_torch(tensors)
        for it in range(HAND_OVER):
            recipe.torch_step(tensors, optimizer, scheduler, it)
        bridged, state, step = recipe.bridge(optimizer, scheduler)
        params = [jnp.asarray(t.detach().numpy()) for t in tensors]
        handed_over = []
        for it in range(HAND_OVER, HAND_BACK):
            params, state = step(params, state, it)
            handed_over.append(_relative(params, reference[it]))

        resumed = _tensors(params)
        optimizer, scheduler = recipe.make_torch(resumed)
        inner = recipe.unwrap(state)
        if scheduler is not None:
            scheduler.load_state_dict(fo.to_torch_scheduler_state_dict(bridged, inner))
        optimizer.load_state_dict(fo.to_torch_state_dict(bridged, inner))
        recipe.resume_torch(resumed, optimizer, scheduler, HAND_BACK)
        handed_back = []
        for it in range(HAND_BACK, STEPS):
            recipe.torch_step(resumed, optimizer, scheduler, it)
            handed_back.append(_relative([t.detach().numpy() for t in resumed], reference[it]))
    return {"full port": max(full), "hand-over": max(handed_over), "hand-back": max(handed_back)}


RECIPES = {
    "huggingface_trainer": HUGGINGFACE,
    "nanogpt": NANOGPT,
    "mnist": MNIST,
    "time_sequence_prediction": TIME_SEQUENCE_PREDICTION,
    "imagenet": IMAGENET,
    "word_language_model": WORD_LANGUAGE_MODEL,
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe(name):
    errors = run_recipe(RECIPES[name])
    assert max(errors.values()) <= RTOL, errors


# --- dcgan: two Adams (lr 2e-4, betas (0.5, 0.999)), discriminator then generator each step ----


def _dcgan_data(it):
    rng = np.random.default_rng(5000 + it)
    return rng.normal(size=(6, 3)) + 1.0, rng.normal(size=(6, 2))


def _discriminate(d, x, xp):
    w1, b1, w2, b2 = d
    return (xp.tanh(x @ w1 + b1) @ w2 + b2).mean(-1)


def _softplus(x, xp):
    return xp.log1p(xp.exp(x))


def _dcgan_losses(g, d, real, z, xp, detach=lambda t: t):
    fake = z @ g[0] + g[1]
    err_real = _softplus(-_discriminate(d, real, xp), xp).mean()
    err_fake = _softplus(_discriminate(d, detach(fake), xp), xp).mean()
    return err_real, err_fake, fake


def _dcgan_torch_step(g, d, opt_g, opt_d, it):
    real, z = (torch.tensor(a) for a in _dcgan_data(it))
    opt_d.zero_grad()
    err_real, err_fake, fake = _dcgan_losses(g, d, real, z, torch, detach=lambda t: t.detach())
    err_real.backward()
    err_fake.backward()
    opt_d.step()
    opt_g.zero_grad()
    _softplus(-_discriminate(d, fake, torch), torch).mean().backward()
    opt_g.step()


def _dcgan_jax_step(tx_g, tx_d):
    @jax.jit
    def step(g, d, state_g, state_d, real, z):
        grad_real = jax.grad(lambda d: _dcgan_losses(g, d, real, z, jnp)[0])(d)
        grad_fake = jax.grad(lambda d: _dcgan_losses(g, d, real, z, jnp)[1])(d)
        updates, state_d = tx_d.update(jax.tree.map(jnp.add, grad_real, grad_fake), state_d, d)
        d = optax.apply_updates(d, updates)
        grad_g = jax.grad(lambda g: _softplus(-_discriminate(d, z @ g[0] + g[1], jnp), jnp).mean())(g)
        updates, state_g = tx_g.update(grad_g, state_g, g)
        return optax.apply_updates(g, updates), d, state_g, state_d

    return lambda g, d, sg, sd, it: step(g, d, sg, sd, *(jnp.asarray(a) for a in _dcgan_data(it)))


def _dcgan_init():
    rng = np.random.default_rng(7)
    return [rng.normal(size=(2, 3)) * 0.5, rng.normal(size=3) * 0.1], _init(8)


def _adam(tensors):
    return torch.optim.Adam(tensors, lr=2e-4, betas=(0.5, 0.999))


def _dcgan_max_errors():
    g0, d0 = _dcgan_init()
    with jax.enable_x64(True):
        g, d = _tensors(g0), _tensors(d0)
        opt_g, opt_d = _adam(g), _adam(d)
        reference = []
        for it in range(STEPS):
            _dcgan_torch_step(g, d, opt_g, opt_d, it)
            reference.append([t.detach().clone() for t in g + d])

        tx_g = tx_d = fo.adam(lr=2e-4, betas=(0.5, 0.999))
        step = _dcgan_jax_step(tx_g, tx_d)
        gj, dj = [jnp.asarray(a) for a in g0], [jnp.asarray(a) for a in d0]
        sg, sd = tx_g.init(gj), tx_d.init(dj)
        full = []
        for it in range(STEPS):
            gj, dj, sg, sd = step(gj, dj, sg, sd, it)
            full.append(_relative(gj + dj, reference[it]))

        g, d = _tensors(g0), _tensors(d0)
        opt_g, opt_d = _adam(g), _adam(d)
        for it in range(HAND_OVER):
            _dcgan_torch_step(g, d, opt_g, opt_d, it)
        (tx_g, sg), (tx_d, sd) = fo.from_torch(opt_g), fo.from_torch(opt_d)
        step = _dcgan_jax_step(tx_g, tx_d)
        gj, dj = [jnp.asarray(t.detach().numpy()) for t in g], [jnp.asarray(t.detach().numpy()) for t in d]
        handed_over = []
        for it in range(HAND_OVER, HAND_BACK):
            gj, dj, sg, sd = step(gj, dj, sg, sd, it)
            handed_over.append(_relative(gj + dj, reference[it]))

        g, d = _tensors(gj), _tensors(dj)
        opt_g, opt_d = _adam(g), _adam(d)
        opt_g.load_state_dict(fo.to_torch_state_dict(tx_g, sg))
        opt_d.load_state_dict(fo.to_torch_state_dict(tx_d, sd))
        handed_back = []
        for it in range(HAND_BACK, STEPS):
            _dcgan_torch_step(g, d, opt_g, opt_d, it)
            handed_back.append(_relative([t.detach().numpy() for t in g + d], reference[it]))
    return {"full port": max(full), "hand-over": max(handed_over), "hand-back": max(handed_back)}


def test_recipe_dcgan():
    errors = _dcgan_max_errors()
    assert max(errors.values()) <= RTOL, errors
