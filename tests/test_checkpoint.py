"""Saving optimizer state mid-run (npz fallback and orbax); the continuation is bit for bit equal."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import gradients_like, small_params

import functional_optreg as fo

STEPS, SAVE_AT = 8, 3

CONFIGS = {
    "sgd_plain": lambda: fo.sgd(lr=0.1),  # momentum_buffer is None
    "sgd_momentum": lambda: fo.sgd(lr=0.1, momentum=0.9, nesterov=True),
    "adam_amsgrad": lambda: fo.adam(lr=0.01, amsgrad=True),
    "adam_plain": lambda: fo.adam(lr=0.01),  # max_exp_avg_sq is None
    "adagrad": lambda: fo.adagrad(lr=0.1, lr_decay=0.01),
    "asgd": lambda: fo.asgd(lr=0.05, t0=2),  # scalar eta and mu
    "nadam": lambda: fo.nadam(lr=0.01),  # scalar mu_product
    "rprop": lambda: fo.rprop(lr=0.01),
    "rmsprop_centered": lambda: fo.rmsprop(lr=0.01, centered=True),  # momentum_buffer None
    "clip+adamw": lambda: optax.chain(fo.clip_grad_norm(1.0), fo.adamw(lr=0.01)),
    "skip_nonfinite": lambda: fo.nonfinite_policy(fo.adam(lr=0.01), "skip"),  # bool leaf
    "plateau": lambda: optax.chain(fo.adam(lr=0.01), fo.reduce_lr_on_plateau(0.01, patience=0)),
}


def _step(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, value=jnp.sum(grads["dense"]["kernel"]))
        return optax.apply_updates(params, updates), state

    return step


def _stream(params):
    return [gradients_like(params, seed=k) for k in range(STEPS)]


def _assert_bitwise(left, right):
    assert jax.tree.structure(left) == jax.tree.structure(right)
    for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _uninterrupted_and_interrupted(tx, params, save, load):
    tx = optax.with_extra_args_support(tx)
    step = _step(tx)
    grads = _stream(params)
    p, s = params, tx.init(params)
    for k in range(STEPS):
        p, s = step(p, s, grads[k])
        if k + 1 == SAVE_AT:
            save({"params": p, "opt_state": s})
    uninterrupted = (p, s)
    fresh = {"params": params, "opt_state": tx.init(params)}
    restored = load(fresh)
    p, s = restored["params"], restored["opt_state"]
    for k in range(SAVE_AT, STEPS):
        p, s = step(p, s, grads[k])
    return uninterrupted, (p, s)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_npz_continuation_is_bitwise_identical(name, tmp_path):
    path = tmp_path / "checkpoint.npz"
    uninterrupted, resumed = _uninterrupted_and_interrupted(
        CONFIGS[name](),
        small_params(),
        lambda tree: fo.save_state(path, tree),
        lambda like: fo.load_state(path, like=like),
    )
    _assert_bitwise(uninterrupted, resumed)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


@pytest.mark.parametrize("name", ["sgd_plain", "adam_amsgrad", "asgd", "skip_nonfinite", "clip+adamw"])
def test_orbax_continuation_is_bitwise_identical(name, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    checkpointer = ocp.StandardCheckpointer()

    def save(tree):
        checkpointer.save(tmp_path / "step", tree)
        checkpointer.wait_until_finished()

    def load(like):
        return checkpointer.restore(tmp_path / "step", jax.eval_shape(lambda: like))

    uninterrupted, resumed = _uninterrupted_and_interrupted(CONFIGS[name](), small_params(), save, load)
    _assert_bitwise(uninterrupted, resumed)


def test_namedtuples_none_fields_and_scalars_round_trip(tmp_path):
    params = small_params()
    state = fo.sgd(lr=0.1).init(params)
    fo.save_state(tmp_path / "s.npz", state)
    restored = fo.load_state(tmp_path / "s.npz", like=state)
    assert type(restored) is fo.SGDState
    assert restored.momentum_buffer is None
    assert restored.step.shape == () and restored.step.dtype == jnp.int32


def test_low_precision_and_complex_leaves_round_trip(tmp_path):
    tree = {
        "bf16": jnp.asarray([1.5, -2.25, 3e-3], jnp.bfloat16),
        "f16": jnp.asarray([[1.0, 65504.0]], jnp.float16),
        "c64": jnp.asarray([1 + 2j, -3j], jnp.complex64),
        "empty": jnp.zeros((0, 3)),
        "flag": jnp.asarray(True),
        "mixed": fo.mixed_precision(fo.adam(0.1)).init({"w": jnp.ones(2, jnp.bfloat16)}),
    }
    fo.save_state(tmp_path / "t.npz", tree)
    _assert_bitwise(tree, fo.load_state(tmp_path / "t.npz", like=tree))


def test_structure_mismatch_names_the_path(tmp_path):
    params = small_params()
    fo.save_state(tmp_path / "adam.npz", fo.adam(0.1).init(params))
    with pytest.raises(ValueError, match=r"only like has a leaf at \.max_exp_avg_sq\['conv'\]\['kernel'\]"):
        fo.load_state(tmp_path / "adam.npz", like=fo.adam(0.1, amsgrad=True).init(params))
    other = dict(params, temperature=jnp.ones(3))
    with pytest.raises(ValueError, match=r"\.exp_avg\['temperature'\] is float32\[\], but like there is float32\[3\]"):
        fo.load_state(tmp_path / "adam.npz", like=fo.adam(0.1).init(other))
    renamed = {"conv": params["conv"], "dense": params["dense"], "tau": params["temperature"]}
    message = r"file has a leaf at \.exp_avg\['temperature'\] where like has one at \.exp_avg\['tau'\]"
    with pytest.raises(ValueError, match=message):
        fo.load_state(tmp_path / "adam.npz", like=fo.adam(0.1).init(renamed))


def test_dtype_mismatch_and_foreign_files_are_refused(tmp_path):
    state = fo.adam(0.1).init({"w": jnp.ones(2)})
    fo.save_state(tmp_path / "s.npz", state)
    with pytest.raises(ValueError, match=r"\.exp_avg\['w'\] is float32\[2\], but like there is bfloat16\[2\]"):
        fo.load_state(tmp_path / "s.npz", like=fo.adam(0.1).init({"w": jnp.ones(2, jnp.bfloat16)}))
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    with pytest.raises(ValueError, match="is not a state file written by save_state"):
        fo.load_state(tmp_path / "plain.npz", like=state)


def test_restores_onto_the_like_leaves_sharding(tmp_path):
    device = jax.devices()[0]
    state = jax.device_put(fo.adam(0.1).init({"w": jnp.ones(2)}), device)
    fo.save_state(tmp_path / "s.npz", state)
    like = jax.eval_shape(lambda: state)
    restored = fo.load_state(tmp_path / "s.npz", like=like)
    assert restored.exp_avg["w"].devices() == {device}


def test_a_state_of_another_optimizer_with_the_same_leaves_is_refused(tmp_path):
    """RAdam's state has Adam's leaf paths (step, exp_avg, exp_avg_sq); only the node type differs."""
    params = small_params()
    fo.save_state(tmp_path / "radam.npz", fo.radam(0.1).init(params))
    with pytest.raises(ValueError, match=r"at <root> the file has a RAdamState where like has a AdamState"):
        fo.load_state(tmp_path / "radam.npz", like=fo.adam(0.1).init(params))
    fo.save_state(tmp_path / "tuple.npz", (jnp.ones(2), None))
    with pytest.raises(ValueError, match=r"at <root> the file has a tuple where like has a list"):
        fo.load_state(tmp_path / "tuple.npz", like=[jnp.ones(2), None])
    with pytest.raises(ValueError, match=r"at \[1\] the file has a NoneType where like has a tuple"):
        fo.load_state(tmp_path / "tuple.npz", like=(jnp.ones(2), ()))


def test_truncated_or_corrupted_files_name_the_file(tmp_path):
    state = fo.adam(0.1).init(small_params())
    fo.save_state(tmp_path / "s.npz", state)
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.npz' is not a readable state file"):
        fo.load_state(tmp_path / "truncated.npz", like=state)
    middle = len(data) // 2
    (tmp_path / "corrupted.npz").write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    with pytest.raises(ValueError, match=r"corrupted\.npz' is not a readable state file"):
        fo.load_state(tmp_path / "corrupted.npz", like=state)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npz' is not a readable state file"):
        fo.load_state(tmp_path / "empty.npz", like=state)


def test_missing_folders_and_files_are_named_by_their_path(tmp_path):
    state = fo.adam(0.1).init({"w": jnp.ones(2)})
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(FileNotFoundError, match=re.escape(f"the folder {str(missing)!r} does not exist")):
        fo.save_state(missing / "s.npz", state)
    assert not (tmp_path / "no").exists()
    with pytest.raises(FileNotFoundError, match=re.escape("missing.npz")):
        fo.load_state(tmp_path / "missing.npz", like=state)
