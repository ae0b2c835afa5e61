"""The seed CNN trained by torch and by flax + an optax transform side by side, step by step.

:func:`run_loss_parity` starts both from the same weights, feeds both the same batches and
records, per step, each side's loss (on its own current weights) and the largest relative
parameter difference after the step. :func:`loss_pair` packages the same network and batches as
a :class:`functional_optreg.verify.LossPair`, for :func:`functional_optreg.verify.compare`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.seed_cnn import model_flax, model_torch, weights
from examples.seed_cnn.data import Dataset
from functional_optreg import verify

FLOAT64_LOSS_RTOL = 1e-9
"""float64 verdict: every step's losses agree to this relative difference."""

LAYERS = ("conv1", "conv2", "fc1", "fc2")


@dataclasses.dataclass
class LossParity:
    """Per-step losses of both sides and the verdict.

    Attributes:
      dtype: ``"float32"`` or ``"float64"``.
      torch_losses, jax_losses: per step, the loss each side computed on the step's batch
        before updating.
      param_errors: per step, after the update, the largest over layers of
        ``max|flax − torch| / max|torch|`` (torch weights converted back to flax layouts).
    """

    dtype: str
    torch_losses: np.ndarray
    jax_losses: np.ndarray
    param_errors: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.torch_losses)

    @property
    def abs_diffs(self) -> np.ndarray:
        return np.abs(self.jax_losses - self.torch_losses)

    @property
    def rel_diffs(self) -> np.ndarray:
        return self.abs_diffs / np.abs(self.torch_losses)

    @property
    def tolerance(self) -> str:
        if self.dtype == "float64":
            return f"relative loss difference <= {FLOAT64_LOSS_RTOL:g}"
        return f"assert_close on the loss: |diff| <= {verify.FLOAT32_ATOL:g} + {verify.FLOAT32_RTOL:g}·|torch|"

    @property
    def step_passes(self) -> np.ndarray:
        if self.dtype == "float64":
            return self.rel_diffs <= FLOAT64_LOSS_RTOL
        return self.abs_diffs <= verify.FLOAT32_ATOL + verify.FLOAT32_RTOL * np.abs(self.torch_losses)

    @property
    def passed(self) -> bool:
        return bool(np.all(self.step_passes))

    def summary(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL (first at step {int(np.argmin(self.step_passes)) + 1})"
        if not self.steps:
            return f"parity [{self.dtype}, 0 steps]: nothing compared"
        return (
            f"parity [{self.dtype}, {self.steps} steps, {self.tolerance}]: max |loss diff| "
            f"{self.abs_diffs.max():.3e}, max rel {self.rel_diffs.max():.3e}, max param rel err "
            f"{self.param_errors.max():.3e} -> {verdict}"
        )

    def table(self) -> str:
        rows = ["step  torch loss           flax loss            |diff|     rel diff   param rel err  ok"]
        for index in range(self.steps):
            rows.append(
                f"{index + 1:4d}  {self.torch_losses[index]:.15f}  {self.jax_losses[index]:.15f}  "
                f"{self.abs_diffs[index]:.3e}  {self.rel_diffs[index]:.3e}  {self.param_errors[index]:.3e}      "
                f"{'yes' if self.step_passes[index] else 'NO'}"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()


def _max_param_error(jax_params: Any, torch_module: Any) -> float:
    theirs = weights.torch_to_flax(torch_module.state_dict())
    worst = 0.0
    for layer, leaves in theirs.items():
        for name, torch_value in leaves.items():
            diff = np.max(np.abs(np.asarray(jax_params[layer][name], np.float64) - torch_value))
            worst = max(worst, float(diff / np.max(np.abs(torch_value))) if diff else 0.0)
    return worst


def run_loss_parity(
    params: Any,
    data: Dataset,
    batches: np.ndarray,
    transform: optax.GradientTransformation,
    torch_optimizer: Callable[[Any], Any],
    dtype: str = "float32",
) -> LossParity:
    """Train the flax model with ``transform`` and :class:`SeedCNNTorch` with torch side by side.

    Args:
      params: the initial flax params (cast to ``dtype`` for both sides).
      data: the dataset; batches index its training split.
      batches: ``(steps, batch_size)`` indices, one row per step.
      transform: our optimizer, e.g. ``optax.chain(fo.l2_penalty(5e-4), fo.adam(1e-3))``.
      torch_optimizer: builds the torch optimizer from ``module.parameters()``, e.g.
        ``lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=5e-4)``.
      dtype: ``"float32"`` or ``"float64"`` (the run then happens inside ``jax.enable_x64``).

    Returns:
      A :class:`LossParity`.
    """
    import torch

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    with jax.enable_x64(dtype == "float64"):
        np_dtype = np.dtype(dtype)
        torch_dtype = getattr(torch, dtype)
        jax_params = model_flax.cast_params(jax.tree.map(np.asarray, params), np_dtype)
        module = weights.load_into_torch(model_torch.SeedCNNTorch().to(torch_dtype), jax_params)
        optimizer = torch_optimizer(module.parameters())
        state = transform.init(jax_params)
        images = data.train_images.astype(np_dtype)

        torch_losses, jax_losses, param_errors = [], [], []
        for indices in batches:
            x, y = images[indices], data.train_labels[indices]
            optimizer.zero_grad()
            torch_loss = model_torch.nll_loss(module(model_torch.to_nchw(x, torch_dtype)), y)
            torch_loss.backward()
            optimizer.step()
            jax_loss, jax_params, state = model_flax.train_step(
                transform, jax_params, state, jnp.asarray(x), jnp.asarray(y)
            )
            torch_losses.append(float(torch_loss.detach()))
            jax_losses.append(float(jax_loss))
            param_errors.append(_max_param_error(jax_params, module))
    return LossParity(dtype, np.asarray(torch_losses), np.asarray(jax_losses), np.asarray(param_errors))


def loss_pair(data: Dataset, batches: np.ndarray) -> verify.LossPair:
    """The seed CNN's loss on ``batches`` (row ``step`` at step ``step``) for torch and for JAX.

    Parameters are the flax params tree; the torch side receives them in
    ``jax.tree.leaves`` order and flax layouts and runs :func:`model_torch.functional_forward`.
    Works in either dtype: images are cast to the parameters' dtype on each side.

    Example::

        report = verify.compare(
            lambda ps: torch.optim.Adam(ps, lr=1e-3), fo.adam(lr=1e-3),
            model_flax.init_params(0), loss_pair(data, first_batches(...)), steps=60)
    """
    treedef = jax.tree.structure({layer: {"bias": 0, "kernel": 0} for layer in LAYERS})
    images, labels, table = data.train_images.astype(np.float64), data.train_labels, np.asarray(batches)

    def torch_loss(step: int, tensors: list) -> Any:
        params = jax.tree.unflatten(treedef, tensors)
        x = model_torch.to_nchw(images[table[step]], tensors[0].dtype)
        return model_torch.nll_loss(model_torch.functional_forward(params, x), labels[table[step]])

    def jax_loss(step: Any, params: Any) -> jax.Array:
        dtype = jax.tree.leaves(params)[0].dtype
        indices = jnp.asarray(table)[step]
        x = jnp.asarray(images)[indices].astype(dtype)
        return model_flax.nll_loss(params, x, jnp.asarray(labels)[indices])

    return verify.LossPair(torch_loss, jax_loss)
