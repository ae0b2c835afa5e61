"""The seed CNN ported from torch to flax correctly, and with eight classic mistakes.

Each public function is a *port factory* for the divergence locator: it takes no argument and
returns a :class:`functional_optreg.port_check.Port`, so it runs from the command line::

    python -m parity port examples.seed_cnn_ports:eps_inside_sqrt --out reports/eps

or from Python with ``compare_training(eps_inside_sqrt())``. The torch side is the seed CNN
(:mod:`examples.seed_cnn.model_torch`), weights mapped by :func:`functional_optreg.module_to_flax`;
three mistakes need layers the seed CNN lacks, so they use :class:`SeedCNNVariant`, with a
BatchNorm after ``conv1`` or torchvision-style 3×3 stride-2 padded pooling. Where each is found:

=====================================  =======================================================
port                                   first divergence
=====================================  =======================================================
``correct``, ``correct_*``             none
``maxpool_padding_same``               activation of ``conv2`` (flax "SAME" pads (0, 1), torch (1, 1))
``batchnorm_running_var_unconverted``  model state ``bn1.running_var`` (biased vs unbiased)
``kernel_not_transposed``              activation of ``conv1`` (kernel = weight.T swaps H and W)
``loss_sum_not_mean``                  loss
``clip_after_weight_decay``            update (the clipped vector includes the L2 term)
``eps_inside_sqrt``                    update (optax's eps_root: sqrt(v + eps))
``schedule_off_by_one``                update at step 2 (one common factor 0.5: the lr schedule)
``flatten_channels_last``              activation of ``fc1`` (NHWC flatten feeding a Linear layer)
=====================================  =======================================================
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_optreg as fo
from examples.seed_cnn import model_flax
from examples.seed_cnn.data import NUM_CLASSES, first_batches, load_digits
from functional_optreg.port_check import Port

BATCH_SIZE = 8
NUM_BATCHES = 10


@functools.lru_cache(maxsize=1)
def _batches() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    data = load_digits()
    indices = first_batches(len(data.train_labels), BATCH_SIZE, seed=0, count=NUM_BATCHES)
    return tuple((data.train_images[rows], data.train_labels[rows]) for rows in indices)


def _torch_nchw(batch: Any) -> tuple:
    return (batch[0].permute(0, 3, 1, 2),)


def _torch_nll(log_probs: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    return F.nll_loss(log_probs, batch[1].long())


def _jax_nll(log_probs: jax.Array, batch: Any) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(log_probs, batch[1][:, None].astype(jnp.int32), axis=1))


def _jax_nll_sum(log_probs: jax.Array, batch: Any) -> jax.Array:
    return -jnp.sum(jnp.take_along_axis(log_probs, batch[1][:, None].astype(jnp.int32), axis=1))


def _seed_cnn_port(name: str, **overrides: Any) -> Port:
    import torch

    from examples.seed_cnn.model_torch import SeedCNNTorch

    torch.manual_seed(0)
    module = SeedCNNTorch()
    variables, mapping = fo.module_to_flax(module)
    fields: dict[str, Any] = {
        "torch_module": module,
        "torch_loss": _torch_nll,
        "torch_optimizer": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
        "flax_module": model_flax.SeedCNN(),
        "variables": variables,
        "jax_loss": _jax_nll,
        "transform": fo.adam(lr=1e-3),
        "mapping": mapping,
        "batches": _batches(),
        "torch_inputs": _torch_nchw,
        "name": name,
    }
    fields.update(overrides)
    return Port(**fields)


def correct() -> Port:
    """The seed CNN with Adam, ported correctly."""
    return _seed_cnn_port("seed CNN (correct port)")


def loss_sum_not_mean() -> Port:
    """The JAX loss sums the batch's NLL where torch's ``nll_loss`` averages it."""
    return _seed_cnn_port("seed CNN, loss sum vs mean", jax_loss=_jax_nll_sum)


def kernel_not_transposed() -> Port:
    """Conv kernels converted with ``weight.T`` (W, H, I, O) instead of HWIO: same shape, H and W swapped."""
    port = _seed_cnn_port("seed CNN, conv kernel = weight.T")
    module = port.torch_module
    params = {key: dict(value) for key, value in port.variables["params"].items()}
    mapping = dict(port.mapping)
    for layer in ("conv1", "conv2"):
        weight = getattr(module, layer).weight.detach().numpy()
        params[layer]["kernel"] = np.ascontiguousarray(weight.T)
        mapping[f"{layer}.weight"] = fo.ParamPath((layer, "kernel"), (3, 2, 1, 0))
    port.variables = {"params": params}
    port.mapping = mapping
    return port


def _clip(module: Any) -> Any:
    import torch

    return torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm=0.1)


def _sgd_with_clipping(name: str, transform: optax.GradientTransformation) -> Port:
    import torch

    return _seed_cnn_port(
        name,
        torch_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.05),
        torch_clip=_clip,
        transform=transform,
    )


def correct_clipping() -> Port:
    """SGD with weight decay after ``clip_grad_norm_``, ported as clip → SGD(weight_decay)."""
    return _sgd_with_clipping(
        "seed CNN, clip then SGD(weight_decay) (correct)",
        optax.chain(fo.clip_grad_norm(0.1), fo.sgd(lr=0.05, momentum=0.9, weight_decay=0.05)),
    )


def clip_after_weight_decay() -> Port:
    """The port adds the L2 term first and clips the sum, where torch clips the raw gradient."""
    return _sgd_with_clipping(
        "seed CNN, clipping after weight decay",
        optax.chain(fo.l2_penalty(0.05), fo.clip_grad_norm(0.1), fo.sgd(lr=0.05, momentum=0.9)),
    )


def eps_inside_sqrt() -> Port:
    """Adam ported with optax's ``eps_root`` (epsilon inside the square root, RMSprop-style)."""
    return _seed_cnn_port(
        "seed CNN, Adam eps inside sqrt",
        transform=optax.chain(optax.scale_by_adam(eps=0.0, eps_root=1e-8), optax.scale(-1e-3)),
    )


def _sgd_with_step_lr(name: str, lr: Any) -> Port:
    import torch

    return _seed_cnn_port(
        name,
        torch_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        torch_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
        transform=fo.sgd(lr=lr),
    )


def correct_schedule() -> Port:
    """SGD with ``StepLR(step_size=2, gamma=0.5)`` stepped after every update, ported as ``fo.step_lr``."""
    return _sgd_with_step_lr("seed CNN, SGD + StepLR (correct)", fo.step_lr(0.05, step_size=2, gamma=0.5))


def schedule_off_by_one() -> Port:
    """The schedule is read one update ahead (the count after the increment), a classic off-by-one."""
    schedule = fo.step_lr(0.05, step_size=2, gamma=0.5)
    return _sgd_with_step_lr("seed CNN, StepLR one step early", lambda count: schedule(count + 1))


class TorchBatchNorm(nn.Module):
    r"""Training-mode ``torch.nn.BatchNorm2d`` for channels-last inputs.

    Normalizes with the biased batch variance and updates the running variance with the
    unbiased one, :math:`\hat v \leftarrow (1 - m)\hat v + m\,\sigma^2_B\,n/(n - 1)`, as torch
    does; flax's ``nn.BatchNorm`` averages the biased variance.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), x.dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), x.dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), x.dtype)
        axes = tuple(range(x.ndim - 1))
        count = x.size // features
        mean = jnp.mean(x, axes)
        var = jnp.mean(jnp.square(x - mean), axes)
        if not self.is_initializing():
            running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
            running_var.value = (1 - self.momentum) * running_var.value + self.momentum * var * count / (count - 1)
        return (x - mean) / jnp.sqrt(var + self.epsilon) * scale + bias


class SeedCNNVariant(nn.Module):
    """The seed CNN with an optional BatchNorm after ``conv1`` and 3×3 stride-2 pooling padded by 1.

    ``pool_padding`` is ``"torch"`` (symmetric, as ``max_pool2d(x, 3, 2, padding=1)``) or ``"SAME"``;
    ``batchnorm`` is ``None``, ``"torch"`` (:class:`TorchBatchNorm`) or ``"flax"`` (``nn.BatchNorm``);
    ``channels_last_flatten`` flattens NHWC as it is, where torch's flatten is channel-major.
    """

    pool_padding: str = "torch"
    batchnorm: str | None = None
    channels_last_flatten: bool = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        padding: Any = ((1, 1), (1, 1)) if self.pool_padding == "torch" else self.pool_padding
        x = nn.Conv(32, (3, 3), padding="SAME", name="conv1")(images)
        if self.batchnorm == "torch":
            x = TorchBatchNorm(name="bn1")(x)
        elif self.batchnorm == "flax":
            x = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn1")(x)
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=padding)
        x = nn.Conv(64, (3, 3), padding="SAME", name="conv2")(x)
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=padding)
        if not self.channels_last_flatten:  # torch flattens NCHW: channel-major
            x = jnp.transpose(x, (0, 3, 1, 2))
        x = nn.relu(nn.Dense(128, name="fc1")(x.reshape(x.shape[0], -1)))
        return nn.log_softmax(nn.Dense(NUM_CLASSES, name="fc2")(x))


def _torch_variant(batchnorm: bool) -> Any:
    import torch
    import torch.nn.functional as F

    class SeedCNNVariantTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(32) if batchnorm else None
            self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
            self.fc1 = torch.nn.Linear(64 * 7 * 7, 128)
            self.fc2 = torch.nn.Linear(128, NUM_CLASSES)

        def forward(self, images: Any) -> Any:
            x = self.conv1(images)
            if self.bn1 is not None:
                x = self.bn1(x)
            x = F.max_pool2d(F.relu(x), 3, 2, padding=1)
            x = F.max_pool2d(F.relu(self.conv2(x)), 3, 2, padding=1)
            x = F.relu(self.fc1(torch.flatten(x, 1)))
            return F.log_softmax(self.fc2(x), dim=1)

    torch.manual_seed(0)
    module = SeedCNNVariantTorch()
    if batchnorm:
        with torch.no_grad():  # non-trivial affine weights, so that a wrong mapping would show
            module.bn1.weight.uniform_(0.5, 1.5)
            module.bn1.bias.uniform_(-0.5, 0.5)
    return module


def _variant_port(name: str, flax_module: SeedCNNVariant, batchnorm: bool) -> Port:
    module = _torch_variant(batchnorm)
    variables, mapping = fo.module_to_flax(module)
    return _seed_cnn_port(name, torch_module=module, flax_module=flax_module, variables=variables, mapping=mapping)


def correct_variant() -> Port:
    """The variant with BatchNorm and padded pooling, ported correctly."""
    return _variant_port("seed CNN + BatchNorm + padded pooling (correct)", SeedCNNVariant("torch", "torch"), True)


def maxpool_padding_same() -> Port:
    """torch's ``max_pool2d(x, 3, 2, padding=1)`` ported as flax ``max_pool(..., padding="SAME")``."""
    return _variant_port("seed CNN, max-pool padding SAME", SeedCNNVariant("SAME", None), False)


def batchnorm_running_var_unconverted() -> Port:
    """torch's BatchNorm2d ported as flax's ``nn.BatchNorm``, whose running variance is the biased one."""
    return _variant_port("seed CNN, BatchNorm running variance", SeedCNNVariant("torch", "flax"), True)


def flatten_channels_last() -> Port:
    """The feature map is flattened in flax's NHWC order, so fc1's weight rows meet other features."""
    return _variant_port("seed CNN, flatten channels-last", SeedCNNVariant("torch", None, True), False)
