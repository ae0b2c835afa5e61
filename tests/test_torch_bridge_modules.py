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
from bounds import gamma64

import functional_optreg as fo
from functional_optreg import verify
from parity import chaos

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


_U64 = np.finfo(np.float64).eps / 2


def _gamma(n):
    """The relative error bound of an ``n``-term inner product in any order, fused or not (Higham §3.1)."""
    return n * _U64 / (1 - n * _U64)


def _layer_norm_error(norm, x):
    r"""Per element, a first-order bound on one correct float64 LayerNorm's error (exact input ``x``,
    normalised over the last axis of ``n`` elements): the mean carries :math:`\gamma_{n+1}` of
    :math:`\overline{|x|}`; the variance, however it is computed (two passes, Welford, or
    :math:`E[x^2] - E[x]^2` as flax's fast variance), :math:`2\gamma_{n+2}\,\overline{x^2}`; the
    reciprocal square root halves the relative error and adds a few ulps (vectorised rsqrt); the
    scale, shift and difference add ``u`` of their terms each."""
    n = x.shape[-1]
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(variance + norm.eps)
    e_mean = _gamma(n + 1) * np.abs(x).mean(-1, keepdims=True)
    e_rstd = (_gamma(n + 2) * (x * x).mean(-1, keepdims=True)) / (variance + norm.eps) + 4 * _U64
    scale = np.abs(norm.weight.detach().numpy())
    centred = np.abs(x - mean)
    own = 4 * _U64 * (scale * centred * rstd + np.abs(norm.bias.detach().numpy()))
    return scale * rstd * (e_mean + _U64 * centred) + scale * centred * rstd * e_rstd + own


def _linear_error(apply, weight, bias, x, e_x, fan_in):
    r"""A linear layer (conv or dense) given as ``apply(input, weight, bias)``: the input's error
    through :math:`|W|` plus :math:`\gamma_{n+1}(|W||x| + |b|)` of its own sum."""
    magnitude = apply(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias))
    return apply(e_x, np.abs(weight), None) + _gamma(fan_in + 1) * magnitude


def _batch_norm_error(bn, z, e_z):
    r"""Evaluation-mode BatchNorm as :math:`z\alpha + \beta` (torch folds it so) or
    :math:`(z - \mu)\alpha + b` (flax): the input's error times :math:`|\alpha|`, and a few
    roundings of :math:`|\alpha|(|z| + |\mu|) + |b|`."""
    shape = (1, -1) + (1,) * (z.ndim - 2)
    alpha = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy().reshape(shape)
    mean, bias = bn.running_mean.numpy().reshape(shape), bn.bias.detach().numpy().reshape(shape)
    return np.abs(alpha) * e_z + 6 * _U64 * (np.abs(alpha) * (np.abs(z) + np.abs(mean)) + np.abs(bias))


def _torch_apply(function, **kwargs):
    def apply(x, weight, bias):
        tensor = torch.as_tensor
        return function(tensor(x), tensor(weight), None if bias is None else tensor(bias), **kwargs).numpy()

    return apply


def _forward_error_bound(net, inputs):
    """How far two correct float64 evaluations of :class:`TorchNet` (torch's, or :class:`FlaxNet` on
    the same weights) may differ, per output: each side within the first-order running error
    bound of its layers (the helpers above; tanh is 1-Lipschitz and adds a few ulps) of the exact
    value, so the two within twice of each other."""
    tokens, image, volume = (torch.as_tensor(a) for a in inputs)
    F = torch.nn.functional
    with torch.no_grad():
        embedded = net.embed(tokens).numpy()
        normed = net.norm(torch.as_tensor(embedded)).transpose(1, 2).numpy()
        e_normed = np.swapaxes(_layer_norm_error(net.norm, embedded), 1, 2)
        conv1d = _torch_apply(F.conv1d, padding=1)
        z1 = conv1d(normed, net.conv1d.weight.numpy(), net.conv1d.bias.numpy())
        e1 = _linear_error(conv1d, net.conv1d.weight.numpy(), net.conv1d.bias.numpy(), normed, e_normed, 6 * 3)
        x1, e1 = net.bn1d(torch.as_tensor(z1)).numpy(), _batch_norm_error(net.bn1d, z1, e1)
        conv2d, weight = _torch_apply(F.conv2d, padding=1), net.image[0].weight.numpy()
        z2 = conv2d(image.numpy(), weight, net.image[0].bias.numpy())
        zero = np.zeros_like(image.numpy())
        e2 = _linear_error(conv2d, weight, net.image[0].bias.numpy(), image.numpy(), zero, 2 * 9)
        y = net.image[1](torch.as_tensor(z2))
        x2 = torch.tanh(y).numpy()
        e2 = _batch_norm_error(net.image[1], z2, e2) + 4 * _U64 * np.abs(x2)
        conv3d = _torch_apply(F.conv3d)
        z3 = conv3d(volume.numpy(), net.conv3d.weight.numpy(), None)
        e3 = _linear_error(conv3d, net.conv3d.weight.numpy(), None, volume.numpy(), np.zeros_like(volume.numpy()), 8)
        x3, e3 = net.bn3d(torch.as_tensor(z3)).numpy(), _batch_norm_error(net.bn3d, z3, e3)
        features = np.concatenate([a.reshape(BATCH, -1) for a in (x1, x2, x3)], axis=1)
        e_features = np.concatenate([a.reshape(BATCH, -1) for a in (e1, e2, e3)], axis=1)
        dense = _torch_apply(F.linear)
        head = _linear_error(dense, net.head.weight.numpy(), net.head.bias.numpy(), features, e_features, 84)
    return 2 * head


def test_forward_passes_agree_torch_to_flax():
    with jax.enable_x64(True):
        net = _torch_net()
        variables, _ = fo.module_to_flax(net, names=_flax_names)
        inputs = _inputs()
        expected = _torch_forward(net, inputs)
        bound = _forward_error_bound(net, inputs)
        assert np.all(np.abs(_flax_forward(variables, inputs) - expected) <= bound)
        with torch.no_grad():
            net.head.bias.mul_(1 + 1e-6)  # a real difference: a bias off by one part in a million
        assert np.any(np.abs(_torch_forward(net, inputs) - expected) > bound)


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
        error = np.abs(_torch_forward(template, inputs) - _flax_forward(variables, inputs))
        assert np.all(error <= _forward_error_bound(template, inputs))


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


def _mse(model, x, y):
    return torch.mean((model(torch.as_tensor(x)) - torch.as_tensor(y)) ** 2)


def _make_adamw(model, lr=0.01):
    return torch.optim.AdamW(model.named_parameters(), lr=lr, weight_decay=0.1, amsgrad=True)


def _torch_continuation(model, optimizer, data, perturbation, rounding, first_gradients):
    """Torch's own run over ``data`` from copies of ``model`` and ``optimizer`` (parity/chaos.py's
    perturbations; exact zeros left alone, as in parity/training_floor.py), parameters per step."""
    import copy

    twin = copy.deepcopy(model)
    names = [name for name, _ in twin.named_parameters()]
    moved = chaos.nudge([p.detach().numpy().copy() for p in twin.parameters()], perturbation)
    with torch.no_grad():
        for p, value in zip(twin.parameters(), moved):
            p.copy_(torch.as_tensor(np.where(p.numpy() == 0, p.numpy(), value)))
    twin_optimizer = _make_adamw(twin)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # loading keeps the tensors
    tilt = chaos.tilt(perturbation, first_gradients, rounding)
    draw = chaos.jitter(perturbation, first_gradients, rounding)
    trajectory = []
    for x, y in data:
        twin_optimizer.zero_grad()
        factor, extra = (1.0, tilt) if draw is None else draw()
        (_mse(twin, x, y) * factor).backward()
        for p, added in zip(twin.parameters(), extra or []):
            p.grad += torch.from_numpy(np.where(p.grad.numpy() == 0, 0, added))
        twin_optimizer.step()
        trajectory.append(dict(zip(names, (p.detach().numpy().copy() for p in twin.parameters()))))
    return trajectory


def _torch_sensitivity(model, optimizer, data, ours_first, reference):
    """Torch against itself from the hand-over point, per step (parity/chaos.py's rule), with the
    rounding the two sides' first gradients differ by."""
    probe = _make_adamw(model)
    probe.zero_grad()
    _mse(model, *data[0]).backward()
    first_gradients = [p.grad.numpy().copy() for p in model.parameters()]
    probe.zero_grad()
    theirs_first = fo.module_to_flax(_with_values(model, first_gradients))[0]["params"]
    rounding = chaos.evaluation_rounding(
        (0.0, [np.asarray(g) for g in jax.tree.leaves(ours_first)]), (0.0, jax.tree.leaves(theirs_first)), "float64"
    )
    floors = np.zeros(len(data))
    for perturbation in ("nudge-0", "nudge-1", "tilt-0", "jitter-0"):
        run = _torch_continuation(model, optimizer, data, perturbation, rounding, first_gradients)
        for step, (moved, fixed) in enumerate(zip(run, reference)):
            floors[step] = max(floors[step], max(verify._relative_error(moved[k], fixed[k]) for k in fixed))
    return chaos.Sensitivity(floors=floors, counters_move=np.zeros(len(data), bool))


def _with_values(model, values):
    import copy

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, value in zip(twin.parameters(), values):
            p.copy_(torch.as_tensor(value))
    return twin


def _flax_continuation(tx, state, params, data):
    @jax.jit
    def jax_step(params, state, x, y):
        grads = jax.grad(lambda p: jnp.mean((_FlaxMLP().apply({"params": p}, x) - y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    trajectory = []
    for x, y in data:
        params, state = jax_step(params, state, x, y)
        trajectory.append(params)
    return trajectory


def test_training_continues_in_flax_with_the_optimizer_state():
    """Weights and Adam's moments cross into flax's layout; training continues step for step.

    Each side differentiates the loss itself (matmuls, LayerNorm, tanh in other orders), so the
    gradients differ by rounding and the optimizer contract's premise of identical gradients does
    not hold: every step must meet the contract (1e-12 relative per leaf) or else stay within
    100 × torch's own floor from the hand-over point (parity/chaos.py); an lr off by one part in a
    million must not."""
    with jax.enable_x64(True):
        torch.manual_seed(0)
        model = _TorchMLP().double()
        optimizer = _make_adamw(model)
        rng = np.random.default_rng(0)
        data = [(rng.normal(size=(5, 4)), rng.normal(size=(5, 2))) for _ in range(10)]
        for x, y in data[:5]:
            optimizer.zero_grad()
            _mse(model, x, y).backward()
            optimizer.step()
        variables, mapping = fo.module_to_flax(model)
        params = jax.tree.map(jnp.asarray, variables["params"])
        first = jax.grad(lambda p: jnp.mean((_FlaxMLP().apply({"params": p}, data[5][0]) - data[5][1]) ** 2))(params)
        verdicts = {}
        for label, factor in (("same", 1.0), ("lr x (1 + 1e-6)", 1 + 1e-6)):
            optimizer.param_groups[0]["lr"] = 0.01 * factor
            tx, state = fo.from_torch(optimizer, params=(variables["params"], mapping))
            optimizer.param_groups[0]["lr"] = 0.01
            verdicts[label] = _flax_continuation(tx, state, params, data[5:])
        reference = _torch_continuation(model, optimizer, data[5:], "reference", 0.0, [])
        expected = [fo.module_to_flax(_with_values(model, list(step.values())))[0]["params"] for step in reference]
        sensitivity = None
        for label, trajectory in verdicts.items():
            errors = [
                max(verify._relative_error(np.asarray(a), np.asarray(b)) for a, b in zip(*map(jax.tree.leaves, pair)))
                for pair in zip(trajectory, expected)
            ]
            verdict = chaos.judge(np.asarray(errors), np.ones(len(errors), bool), "float64", None, cumulative=True)
            if not verdict.passed:
                if sensitivity is None:
                    sensitivity = _torch_sensitivity(model, optimizer, data[5:], first, reference)
                verdict = chaos.judge(
                    np.asarray(errors), np.ones(len(errors), bool), "float64", sensitivity, cumulative=True
                )
            verdicts[label] = verdict
    assert verdicts["same"].passed, verdicts["same"].reason
    assert not verdicts["lr x (1 + 1e-6)"].passed, verdicts["lr x (1 + 1e-6)"].reason


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
    with torch.no_grad():
        theirs = model(torch.tensor(tokens)).numpy()
        embedded = model.wte(torch.tensor(tokens)).numpy()
        normed = model.ln(torch.as_tensor(embedded)).numpy()
    # LayerNorm (flax's fast variance here), then a 4-term product with the tied embedding.
    weight = model.wte.weight.detach().numpy()
    linear = _torch_apply(torch.nn.functional.linear)
    bound = 2 * _linear_error(linear, weight, None, normed, _layer_norm_error(model.ln, embedded), 4)
    assert np.all(np.abs(np.asarray(ours) - theirs) <= bound)
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
    # A variance of n values, two-pass (NumPy), updating (Welford; either may be torch's kernel) or E[x²] − E[x]²
    # (flax's fast variance), is within 2γ_{n+4}·κ² relative, κ² = Σx²/Σ(x − x̄)² ≥ 1 (Chan, Golub & LeVeque 1983;
    # the textbook form's nκ²u is the largest, the others' nu + n²κ²u² and nκu lie under it to first order); the running
    # update then adds three roundings of non-negative terms, with each side's own constants (torch's 1 − 0.1 is
    # 0.9, flax's 1 − 0.9 is not 0.1). Each side and the NumPy reference are within that of the exact value.
    n = len(batch)
    kappa2 = np.sum(batch**2, axis=0) / np.sum((batch - batch.mean(0)) ** 2, axis=0)
    rtol = 2 * (2 * gamma64(n + 4) * kappa2 + gamma64(3))
    torch_var, flax_var = bn.running_var.numpy(), np.asarray(updated["batch_stats"]["var"])
    assert np.all(np.abs(torch_var - (0.9 * old + 0.1 * batch.var(0, ddof=1))) <= rtol * torch_var)
    assert np.all(np.abs(flax_var - (0.9 * old + (1 - 0.9) * batch.var(0))) <= rtol * flax_var)
    # The conventions differ by 0.1·(biased variance)/(n − 1), far beyond both bounds.
    assert np.all(np.abs(torch_var - flax_var) > rtol * (torch_var + flax_var))
