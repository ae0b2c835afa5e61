"""fo.param_groups: selectors, error messages, default groups, state layout."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import U32, gamma32

import functional_optreg as fo
from functional_optreg import groups as groups_module


def _params():
    return {
        "encoder": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2), "norm": {"scale": jnp.ones(2)}},
        "head": [jnp.ones((2, 4)), jnp.ones(4)],
    }


def _step(tx, params, grads=None):
    grads = jax.tree.map(jnp.ones_like, params) if grads is None else grads
    updates, state = tx.update(grads, tx.init(params), params)
    return updates, state


def test_path_strings_join_keys_with_slashes():
    class Pair(NamedTuple):
        left: jax.Array
        right: jax.Array

    tree = {"a": [jnp.zeros(1), {"b": jnp.zeros(1)}], "c": Pair(jnp.zeros(1), jnp.zeros(1))}
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    assert [groups_module.path_string(path) for path, _ in flat] == ["a/0", "a/1/b", "c/left", "c/right"]


def test_predicate_sees_path_and_leaf():
    seen = []

    def predicate(path, leaf):
        seen.append((path, np.shape(leaf)))
        return True

    fo.param_groups(fo.sgd, [{"params": predicate}], lr=0.1).init(_params())
    assert ("encoder/norm/scale", (2,)) in seen and ("head/0", (2, 4)) in seen


def test_three_selector_kinds_route_leaves_to_their_groups():
    tx = fo.param_groups(
        fo.sgd,
        [
            {"params": r"bias$", "lr": 1.0},
            {"params": lambda path, leaf: path.startswith("head/"), "lr": 2.0},
            {"params": {"encoder": {"kernel": False, "bias": False, "norm": True}, "head": False}, "lr": 3.0},
        ],
        default_group=True,
        lr=4.0,
    )
    updates, state = _step(tx, _params())
    assert float(updates["encoder"]["bias"][0]) == -1.0
    assert float(updates["head"][0][0, 0]) == -2.0 and float(updates["head"][1][0]) == -2.0
    assert float(updates["encoder"]["norm"]["scale"][0]) == -3.0
    assert float(updates["encoder"]["kernel"][0, 0]) == -4.0
    assert sorted(state.inner_states) == [0, 1, 2, 3]


def test_unmatched_parameter_names_its_path():
    tx = fo.param_groups(fo.sgd, [{"params": r"kernel$"}], lr=0.1)
    with pytest.raises(ValueError, match=r"'encoder/bias' is in no parameter group.*default_group"):
        tx.init(_params())


def test_overlapping_groups_raise_torchs_message_with_path_and_groups():
    with pytest.raises(ValueError) as theirs:
        tensor = torch.zeros(2, requires_grad=True)
        torch.optim.SGD([{"params": [tensor]}, {"params": [tensor]}], lr=0.1)
    tx = fo.param_groups(fo.sgd, [{"params": r"bias"}, {"params": r"^encoder/"}, {"params": r"."}], lr=0.1)
    with pytest.raises(ValueError) as ours:
        tx.init(_params())
    assert str(ours.value).startswith(str(theirs.value))
    assert "'encoder/bias' is selected by groups 0, 1, 2" in str(ours.value)


def test_unknown_hyperparameter_in_a_group_names_group_and_argument():
    with pytest.raises(ValueError, match=r"parameter group 1 sets 'momentun', which is not a hyperparameter of sgd"):
        fo.param_groups(fo.sgd, [{"params": "bias"}, {"params": "kernel", "momentun": 0.9}], lr=0.1)


def test_unknown_default_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"param_groups sets 'betas', which is not a hyperparameter of sgd.*momentum"):
        fo.param_groups(fo.sgd, [{"params": "."}], lr=0.1, betas=(0.9, 0.99))


def test_invalid_group_value_gets_torchs_message_prefixed_with_the_group():
    with pytest.raises(ValueError, match=r"^parameter group 1: Invalid learning rate: -0.5$"):
        fo.param_groups(fo.sgd, [{"params": "bias"}, {"params": "kernel", "lr": -0.5}], lr=0.1)


def test_group_must_be_a_dict_like_torch():
    with pytest.raises(TypeError) as theirs:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).add_param_group(["not a dict"])
    with pytest.raises(TypeError) as ours:
        fo.param_groups(fo.sgd, [["not a dict"]], lr=0.1)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "groups, kwargs, message",
    [
        ([{"lr": 0.1}], {}, "parameter group 0 has no 'params'"),
        ([{"params": "("}], {}, "parameter group 0: 'params' is not a valid regex"),
        ([], {}, "empty list of groups and no default_group"),
        ([{"params": "."}], {"default_group": "rest"}, "default_group must be one of"),
    ],
)
def test_construction_errors(groups, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fo.param_groups(fo.sgd, groups, lr=0.1, **kwargs)


def test_groups_must_be_a_list():
    with pytest.raises(TypeError, match="groups must be a list of dicts"):
        fo.param_groups(fo.sgd, {"params": "."}, lr=0.1)


def test_mask_tree_that_does_not_fit_names_the_group():
    tx = fo.param_groups(fo.sgd, [{"params": r"."}, {"params": {"other": True}}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 1: the bool tree in 'params' does not match"):
        tx.init(_params())


def test_frozen_default_group_leaves_the_rest_unchanged():
    tx = fo.param_groups(fo.adam, [{"params": r"kernel$"}], default_group="frozen", lr=0.1)
    updates, _ = _step(tx, _params())
    assert not np.any(np.asarray(updates["encoder"]["bias"]))
    assert not np.any(np.asarray(updates["head"][0]))
    assert np.all(np.asarray(updates["encoder"]["kernel"]) < 0)


def test_empty_group_is_allowed_and_untouched():
    params = {"kernel": jnp.ones((2, 2))}
    tx = fo.no_decay_on_bias_and_norm(fo.sgd, lr=0.1, momentum=0.9, weight_decay=0.1)
    updates, state = jax.jit(lambda p: _step(tx, p))(params)
    # float32: 0.1 twice, g + 0.1·p (p = 1, positive sum), · lr: 4 roundings (the momentum buffer's first
    # step is a copy).
    np.testing.assert_allclose(updates["kernel"], -0.1 * (1 + 0.1) * np.ones((2, 2)), rtol=gamma32(4))
    assert int(state.inner_states[0].inner_state.step) == 1  # decay: the kernel
    assert int(state.inner_states[1].inner_state.step) == 0  # no decay: empty


def test_is_bias_or_norm_selection():
    tree = {
        "Embed_0": {"embedding": jnp.zeros((10, 4))},
        "LayerNorm_0": {"scale": jnp.zeros(4), "bias": jnp.zeros(4)},
        "Dense_0": {"kernel": jnp.zeros((4, 4)), "bias": jnp.zeros(4)},
        "rel_pos": {"bias": jnp.zeros((3, 3))},
        "temperature": jnp.zeros(()),
    }
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    chosen = {
        groups_module.path_string(p) for p, leaf in flat if fo.is_bias_or_norm(groups_module.path_string(p), leaf)
    }
    assert chosen == {"LayerNorm_0/scale", "LayerNorm_0/bias", "Dense_0/bias", "rel_pos/bias", "temperature"}


@pytest.mark.parametrize("order", [("decay", "no_decay"), ("no_decay", "decay")])
def test_one_liner_excludes_bias_and_norm_from_decay_in_the_order_asked(order):
    tx = fo.no_decay_on_bias_and_norm(fo.sgd, lr=1.0, momentum=0.9, weight_decay=0.5, order=order)
    params = _params()
    updates, state = _step(tx, params, jax.tree.map(jnp.zeros_like, params))
    assert float(updates["encoder"]["kernel"][0, 0]) == -0.5
    assert float(updates["encoder"]["norm"]["scale"][0]) == 0.0
    assert float(updates["head"][1][0]) == 0.0
    decay = order.index("decay")
    momentum = state.inner_states[decay].inner_state.momentum_buffer
    assert isinstance(momentum["encoder"]["bias"], optax.MaskedNode)
    assert not isinstance(momentum["encoder"]["kernel"], optax.MaskedNode)


def test_default_order_is_torch_recipes_and_fits_a_bridged_state():
    """HuggingFace / nanoGPT build [decay, no_decay]: from_torch of such an AdamW gives the same
    group of each leaf as the one-liner, so its moments line up with our groups."""
    with jax.enable_x64(True):
        model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).double()
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("bias")]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith("bias")]
        optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        names = dict(model.named_parameters())
        tree = {name.replace(".", "/"): jnp.asarray(p.detach().numpy()) for name, p in names.items()}
        bridged, state = fo.from_torch(
            optimizer, module=model, params=(tree, {n: (n.replace(".", "/"),) for n in names})
        )
        ours = fo.no_decay_on_bias_and_norm(fo.adamw, lr=0.01).init(tree)
        for g in range(2):
            theirs = state.inner_states[g].inner_state.inner_state.exp_avg
            mine = ours.inner_states[g].inner_state.exp_avg
            assert jax.tree.map(lambda x: isinstance(x, optax.MaskedNode), theirs, is_leaf=_masked) == jax.tree.map(
                lambda x: isinstance(x, optax.MaskedNode), mine, is_leaf=_masked
            )


def _masked(node):
    return isinstance(node, optax.MaskedNode)


def test_order_and_is_bias_or_norm_arguments_are_checked():
    with pytest.raises(ValueError, match=r"order must be one of \[\('decay', 'no_decay'\), .*got \('decay',\)"):
        fo.no_decay_on_bias_and_norm(fo.sgd, order=("decay",))
    with pytest.raises(TypeError, match="path must be the leaf's path string .*got NoneType"):
        fo.is_bias_or_norm(None, jnp.ones(2))


def test_inject_hyperparams_optimizer_exposes_each_groups_values():
    tx = fo.param_groups(optax.inject_hyperparams(fo.sgd), [{"params": "bias", "lr": 0.5}], default_group=True, lr=0.1)
    _, state = _step(tx, _params())
    assert float(state.inner_states[0].inner_state.hyperparams["lr"]) == 0.5
    # inject_hyperparams stores 0.1 as a float32: one rounding, ≤ U32 relative.
    assert float(state.inner_states[1].inner_state.hyperparams["lr"]) == pytest.approx(0.1, rel=U32, abs=0)


def test_unknown_names_pass_for_factories_taking_kwargs():
    tx = fo.param_groups(lambda **kwargs: fo.sgd(**kwargs), [{"params": ".", "momentum": 0.5}], lr=0.1)
    _step(tx, _params())


def test_jit_traces_once():
    traces = []
    tx = fo.param_groups(fo.adamw, [{"params": "bias", "weight_decay": 0.0}], default_group=True, lr=0.1)

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    params = _params()
    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert len(traces) == 1


def test_optax_style_mask_function_selects_like_a_bool_tree():
    def is_matrix(params):
        return jax.tree.map(lambda leaf: leaf.ndim > 1, params)

    tx = fo.param_groups(fo.sgd, [{"params": is_matrix, "lr": 1.0}], default_group=True, lr=2.0)
    updates, _ = _step(tx, _params())
    assert float(updates["head"][0][0, 0]) == -1.0 and float(updates["head"][1][0]) == -2.0
