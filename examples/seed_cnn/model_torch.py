"""The seed CNN in torch: the same network as :mod:`examples.seed_cnn.model_flax`, NCHW.

:class:`SeedCNNTorch` is the plain ``torch.nn`` model (weights in torch layouts, loaded from flax
params with :func:`examples.seed_cnn.weights.load_into_torch`); :func:`functional_forward` runs
the same network on weights kept in *flax* layouts, for comparisons whose parameter list must
match ``jax.tree.leaves(params)`` (``functional_optreg.verify.LossPair``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from examples.seed_cnn.data import NUM_CLASSES


class SeedCNNTorch(nn.Module):
    """conv1/conv2 (3×3, padding 1) + ReLU + 2×2 max-pool, fc1 3136→128 + ReLU, fc2 128→10, log-softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def to_nchw(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """NHWC NumPy images as an NCHW tensor of ``dtype``."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))).to(dtype)


def nll_loss(log_probs: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """Mean negative log-likelihood of ``labels`` (the same loss as the flax side)."""
    return F.nll_loss(log_probs, torch.from_numpy(np.asarray(labels, np.int64)))


def functional_forward(params: Mapping[str, Mapping[str, Any]], images: torch.Tensor) -> torch.Tensor:
    """The seed CNN on flax-layout weights (``params[layer]["kernel"]`` HWIO or (in, out)).

    The layout changes are differentiable views, so gradients flow back to the flax-layout
    tensors. ``images`` are NCHW.
    """
    x = images
    for layer in ("conv1", "conv2"):
        weight = params[layer]["kernel"].permute(3, 2, 0, 1)
        x = F.max_pool2d(F.relu(F.conv2d(x, weight, params[layer]["bias"], padding=1)), 2)
    x = torch.flatten(x, 1)
    x = F.relu(F.linear(x, params["fc1"]["kernel"].t(), params["fc1"]["bias"]))
    return F.log_softmax(F.linear(x, params["fc2"]["kernel"].t(), params["fc2"]["bias"]), dim=1)
