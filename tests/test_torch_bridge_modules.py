"""Module weights through the torch bridge: torch nn.Module state dicts ↔ flax (linen) variables.

The forward passes of a torch model and its flax twin must agree in float64 after the weights
cross over, in both directions; the optimizer's moments follow the weights into flax's layout.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import functional_optreg as fo

BATCH = 3


class TorchNet(torch.nn.Module):
    """Every supported layer: Embedding, LayerNorm, Conv1d/2d/3d, BatchNorm1d/2d/3d, Linear."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.conv1d = torch.nn.Conv1d(6, 4, 3, padding=1)
        self.bn1d = torch.nn.BatchNorm1d(4)
        self.image = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.Tanh())
        self.conv3d = torch.nn.Conv3d(1, 2, 2, bias=False)
        self.bn3d = torch.nn.BatchNorm3d(2, eps=1e-3)
        self.head = torch.nn.Linear(4 * 5 + 3 * 4 * 4 + 2 * 2 * 2 * 2, 3)

    def forward(self, tokens, image, volume):
        x = self.norm(self.embed(tokens))
        x = self.bn1d(self.conv1d(x.transpose(1, 2)))
        y = self.image(image)
        z = self.bn3d(self.conv3d(volume))
        return self.head(torch.cat([x.flatten(1), y.flatten(1), z.flatten(1)], dim=1))


def _batch_norm(name, eps=1e-5):
    return nn.BatchNorm(use_running_average=True, epsilon=eps, momentum=0.9, name=name)


class FlaxNet(nn.Module):
    """The same network, channels-last, flattening channel-major as torch does."""

    @nn.compact
    def __call__(self, tokens, image, volume):
        x = nn.Embed(10, 6, name="embed")(tokens)
        x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm")(x)
        x = _batch_norm("bn1d")(nn.Conv(4, (3,), padding=[(1, 1)], name="conv1d")(x))
        y = nn.Conv(3, (3, 3), padding=[(1, 1), (1, 1)], name="0")(image)
        y = jnp.tanh(nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="1")(y))
        z = nn.Conv(2, (2, 2, 2), padding="VALID", use_bias=False, name="conv3d")(volume)
        z = _batch_norm("bn3d", eps=1e-3)(z)
        features = [
            jnp.transpose(x, (0, 2, 1)).reshape(BATCH, -1),
            jnp.transpose(y, (0, 3, 1, 2)).reshape(BATCH, -1),
            jnp.transpose(z, (0, 4, 1, 2, 3)).reshape(BATCH, -1),
        ]
        return nn.Dense(3, name="head")(jnp.concatenate(features, axis=1))


def _flax_names(torch_name: str):
    """The torch Sequential ``image.0`` / ``image.1`` are flax's ``0`` / ``1`` at the top level."""
    return torch_name.split(".")[-1:] if torch_name.startswith("image.") else torch_name


def _torch_net(seed=0):
    torch.manual_seed(seed)
    net = TorchNet().double().eval()
    with torch.no_grad():
        for name, value in net.state_dict(keep_vars=True).items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                value.copy_(torch.rand_like(value) + 0.5)
            else:
                value.copy_(torch.randn_like(value) * 0.5)
    return net


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 10, size=(BATCH, 5))
    image = rng.normal(size=(BATCH, 2, 4, 4))
    volume = rng.normal(size=(BATCH, 1, 3, 3, 3))
    return tokens, image, volume


def _torch_forward(net, inputs):
    tokens, image, volume = inputs
    with torch.no_grad():
        return net(torch.as_tensor(tokens), torch.as_tensor(image), torch.as_tensor(volume)).numpy()


def _flax_forward(variables, inputs):
    tokens, image, volume = inputs
    return np.asarray(
        FlaxNet().apply(
            variables, jnp.asarray(tokens), jnp.transpose(image, (0, 2, 3, 1)), jnp.transpose(volume, (0, 2, 3, 4, 1))
        )
    )


def test_forward_passes_agree_torch_to_flax():
    with jax.enable_x64(True):
        net = _torch_net()
        variables, _ = fo.module_to_flax(net, names=_flax_names)
        inputs = _inputs()
        expected = _torch_forward(net, inputs)
        np.testing.assert_allclose(_flax_forward(variables, inputs), expected, rtol=1e-12, atol=1e-13)


def test_variables_match_flax_init_structure():
    """The converted tree has exactly the structure (and shapes) flax's own init produces."""
    with jax.enable_x64(True):
        variables, _ = fo.module_to_flax(_torch_net(), names=_flax_names)
        tokens, image, volume = _inputs()
        initialised = FlaxNet().init(
            jax.random.key(0),
            jnp.asarray(tokens),
            jnp.transpose(image, (0, 2, 3, 1)),
            jnp.transpose(volume, (0, 2, 3, 4, 1)),
        )
        shapes = jax.tree.map(np.shape, dict(initialised))
        assert jax.tree.map(np.shape, variables) == shapes


def test_forward_passes_agree_flax_to_torch():
    with jax.enable_x64(True):
        template = _torch_net(seed=0)
        variables, _ = fo.module_to_flax(_torch_net(seed=5), names=_flax_names)
        variables = jax.tree.map(lambda x: x * 1.5 + 0.1, variables)
        state_dict = fo.flax_to_module_state_dict(variables, template, names=_flax_names)
        template.load_state_dict(state_dict, strict=True)
        inputs = _inputs(seed=2)
        np.testing.assert_allclose(
            _torch_forward(template, inputs), _flax_forward(variables, inputs), rtol=1e-12, atol=1e-13
        )


def test_round_trip_is_identity_and_keeps_num_batches_tracked():
    net = _torch_net()
    net.bn1d.num_batches_tracked.fill_(7)
    variables, _ = fo.module_to_flax(net, names=_flax_names)
    back = fo.flax_to_module_state_dict(variables, net, names=_flax_names)
    original = net.state_dict()
    assert list(back) == list(original)
    for key in original:
        assert back[key].dtype == original[key].dtype, key
        assert torch.equal(back[key], original[key]), key


def test_mapping_names_parameters_with_their_permutation():
    net = _torch_net()
    variables, mapping = fo.module_to_flax(net, names=_flax_names)
    assert set(mapping) == {name for name, _ in net.named_parameters()}
    assert mapping["head.weight"] == fo.ParamPath(("head", "kernel"), (1, 0))
    assert mapping["conv1d.weight"] == fo.ParamPath(("conv1d", "kernel"), (2, 1, 0))
    assert mapping["image.0.weight"] == fo.ParamPath(("0", "kernel"), (2, 3, 1, 0))
    assert mapping["conv3d.weight"] == fo.ParamPath(("conv3d", "kernel"), (2, 3, 4, 1, 0))
    assert mapping["embed.weight"] == fo.ParamPath(("embed", "embedding"), None)
    assert "running_mean" not in str(mapping)
    np.testing.assert_array_equal(variables["batch_stats"]["bn1d"]["var"], net.bn1d.running_var.numpy())


def test_unsupported_layer_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GRU(2, 2))
    with pytest.raises(TypeError, match=r"submodule '1' \(torch\.nn\.modules\.rnn\.GRU\) has weights"):
        fo.module_to_flax(model)


def test_batch_norm_cumulative_average_is_rejected():
    with pytest.raises(ValueError, match="momentum=None keeps a cumulative average"):
        fo.module_to_flax(torch.nn.Sequential(torch.nn.BatchNorm1d(3, momentum=None)))


def test_missing_flax_entry_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(KeyError, match=r"no 'params' entry at \('0', 'bias'\)"):
        fo.flax_to_module_state_dict({"params": {"0": {"kernel": np.zeros((2, 2))}}}, model)


class _TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


class _FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm")(nn.Dense(8, name="fc1")(x))
        return nn.Dense(2, name="fc2")(jnp.tanh(x))


def test_training_continues_in_flax_with_the_optimizer_state():
    """Weights and Adam's moments cross into flax's layout; training continues step for step."""
    with jax.enable_x64(True):
        torch.manual_seed(0)
        model = _TorchMLP().double()
        optimizer = torch.optim.AdamW(model.named_parameters(), lr=0.01, weight_decay=0.1, amsgrad=True)
        rng = np.random.default_rng(0)
        data = [(rng.normal(size=(5, 4)), rng.normal(size=(5, 2))) for _ in range(10)]

        def torch_step(x, y):
            optimizer.zero_grad()
            torch.mean((model(torch.as_tensor(x)) - torch.as_tensor(y)) ** 2).backward()
            optimizer.step()

        for x, y in data[:5]:
            torch_step(x, y)
        variables, mapping = fo.module_to_flax(model)
        tx, state = fo.from_torch(optimizer, params=(variables["params"], mapping))
        params = jax.tree.map(jnp.asarray, variables["params"])

        @jax.jit
        def jax_step(params, state, x, y):
            grads = jax.grad(lambda p: jnp.mean((_FlaxMLP().apply({"params": p}, x) - y) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for x, y in data[5:]:
            params, state = jax_step(params, state, x, y)
            torch_step(x, y)
            expected, _ = fo.module_to_flax(model)
            for ours, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(expected["params"])):
                np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


class _TiedLM(torch.nn.Module):
    """nanoGPT's weight tying: the output head shares the token embedding."""

    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(10, 4)
        self.ln = torch.nn.LayerNorm(4)
        self.lm_head = torch.nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens):
        return self.lm_head(self.ln(self.wte(tokens)))


class _FlaxTiedLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        wte = nn.Embed(10, 4, name="wte")
        return wte.attend(nn.LayerNorm(epsilon=1e-5, name="ln")(wte(tokens)))


def test_tied_weights_are_exported_once_with_the_tie_in_the_mapping():
    torch.manual_seed(0)
    model = _TiedLM().double()
    variables, mapping = fo.module_to_flax(model)
    assert set(variables["params"]) == {"wte", "ln"}
    assert mapping["lm_head.weight"] == mapping["wte.weight"] == fo.ParamPath(("wte", "embedding"))
    tokens = np.array([[1, 5, 7], [0, 9, 3]])
    with jax.enable_x64(True):
        ours = _FlaxTiedLM().apply(variables, jnp.asarray(tokens))
        np.testing.assert_allclose(ours, model(torch.tensor(tokens)).detach().numpy(), rtol=1e-12, atol=1e-12)
    back = fo.flax_to_module_state_dict(variables, model)
    assert torch.equal(back["lm_head.weight"], back["wte.weight"])
    model.load_state_dict(back)


def test_batch_norm_running_var_conventions_are_explicit():
    """Mapped statistics are torch's; one more training batch updates them differently: torch
    averages in the unbiased batch variance, flax the biased one (the docstring's n/(n−1))."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(3, momentum=0.1).double()
    bn(torch.randn(8, 3, dtype=torch.float64) * 2)  # some running statistics
    variables, _ = fo.module_to_flax(torch.nn.Sequential(bn))
    np.testing.assert_array_equal(variables["batch_stats"]["0"]["var"], bn.running_var.numpy())
    batch = np.random.default_rng(0).normal(size=(8, 3))
    old = bn.running_var.clone().numpy()
    bn(torch.tensor(batch))
    with jax.enable_x64(True):
        flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
        _, updated = flax_bn.apply(
            {"params": variables["params"]["0"], "batch_stats": variables["batch_stats"]["0"]},
            jnp.asarray(batch),
            mutable=["batch_stats"],
        )
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 * old + 0.1 * batch.var(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 * old + 0.1 * batch.var(0), rtol=1e-12)
    assert not np.allclose(updated["batch_stats"]["var"], bn.running_var.numpy(), rtol=1e-6)
