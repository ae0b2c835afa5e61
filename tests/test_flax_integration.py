"""Our transforms inside flax's training wrappers: ``flax.nnx.Optimizer`` and linen's ``TrainState``.

Each test runs a few jitted training steps through the flax wrapper and the same steps by hand
(``tx.init`` / ``tx.update`` / ``optax.apply_updates`` on a plain dict of arrays): the parameters must
be identical, so the wrapper adds nothing, and the loss must go down.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optreg as fo

nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")
train_state = pytest.importorskip("flax.training.train_state")

STEPS = 8


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    y = np.tanh(x @ w) + 0.1
    return jnp.asarray(x), jnp.asarray(y)


def _transforms():
    """Our optimizers with a schedule, param groups and a penalty chained in front."""
    schedule = fo.cosine_annealing_lr(0.05, T_max=STEPS)
    return {
        "adamw_groups_schedule": fo.no_decay_on_bias_and_norm(fo.adamw, lr=schedule, weight_decay=0.1),
        "sgd_l2_momentum": optax.chain(fo.l2_penalty(1e-2), fo.sgd(lr=schedule, momentum=0.9, nesterov=True)),
    }


def _by_hand(loss_of_params, params, tx):
    """The reference: plain tx.init / tx.update on a dict of arrays, jitted the same way."""

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_of_params)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = tx.init(params)
    losses = []
    for _ in range(STEPS):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return params, losses


def _assert_same(ours, reference):
    ours_paths = dict(jax.tree_util.tree_leaves_with_path(ours))
    reference_paths = dict(jax.tree_util.tree_leaves_with_path(reference))
    assert ours_paths.keys() == reference_paths.keys()
    for path, leaf in ours_paths.items():
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(reference_paths[path]), err_msg=str(path))


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(5, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.gelu(self.norm(self.hidden(x))))


@pytest.mark.parametrize("name", sorted(_transforms()))
def test_nnx_optimizer_matches_tx_by_hand(name):
    tx = _transforms()[name]
    x, y = _data()
    model = _NnxMLP(nnx.Rngs(0))
    graphdef, initial = nnx.split(model, nnx.Param)
    initial_params = nnx.to_pure_dict(initial)

    def loss_of_params(pure_params):
        state = nnx.State(initial)
        nnx.replace_by_pure_dict(state, pure_params)
        return jnp.mean((nnx.merge(graphdef, state)(x) - y) ** 2)

    reference, reference_losses = _by_hand(loss_of_params, initial_params, tx)

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(STEPS)]
    ours = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    _assert_same(ours, reference)
    assert losses == reference_losses
    assert losses[-1] < losses[0]
    assert int(optimizer.step[...]) == STEPS


class _LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.LayerNorm()(linen.Dense(8)(x))
        return linen.Dense(3)(jax.nn.gelu(h))


@pytest.mark.parametrize("name", sorted(_transforms()))
def test_linen_train_state_matches_tx_by_hand(name):
    tx = _transforms()[name]
    x, y = _data()
    module = _LinenMLP()
    params = module.init(jax.random.key(0), x)["params"]

    def loss_of_params(params):
        return jnp.mean((module.apply({"params": params}, x) - y) ** 2)

    reference, reference_losses = _by_hand(loss_of_params, params, tx)

    state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state):
        def loss_fn(params):
            return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(STEPS):
        state, loss = train_step(state)
        losses.append(float(loss))

    _assert_same(state.params, reference)
    assert losses == reference_losses
    assert losses[-1] < losses[0]
    assert int(state.step) == STEPS


def test_groups_exclude_bias_and_norm_in_flax_trees():
    """The by-hand reference would hide a labelling bug shared by both paths: check that the
    bias and LayerNorm leaves really skip AdamW's decay (zero gradient => only decay moves them)."""
    x, _ = _data()
    # All ones, so that decay would move every leaf, the zero-initialised biases included.
    params = jax.tree.map(jnp.ones_like, _LinenMLP().init(jax.random.key(0), x)["params"])
    tx = fo.no_decay_on_bias_and_norm(fo.adamw, lr=0.1, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    for path, update in jax.tree_util.tree_leaves_with_path(updates):
        name = jax.tree_util.keystr(path)
        moved = bool(jnp.any(update != 0))
        assert moved == name.endswith("['kernel']"), name
