"""Moving the seed CNN's weights between flax and torch layouts.

The rules are per layer: a conv kernel goes HWIO → OIHW, a dense kernel (in, out) → (out, in),
biases are unchanged; flax's ``{"conv1": {"kernel", "bias"}}`` becomes torch's
``{"conv1.weight", "conv1.bias"}``. The flatten order needs no rule here because the flax model
flattens channel-major, as torch does (see :mod:`examples.seed_cnn.model_flax`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_KERNEL_TO_TORCH = {4: (3, 2, 0, 1), 2: (1, 0)}
_KERNEL_TO_FLAX = {4: (2, 3, 1, 0), 2: (1, 0)}


def flax_to_torch(params: Any) -> dict[str, np.ndarray]:
    """A torch ``state_dict``-shaped dict of NumPy arrays (dtype kept) from flax params."""
    state = {}
    for layer, leaves in params.items():
        kernel = np.asarray(leaves["kernel"])
        state[f"{layer}.weight"] = np.ascontiguousarray(np.transpose(kernel, _KERNEL_TO_TORCH[kernel.ndim]))
        state[f"{layer}.bias"] = np.array(leaves["bias"])
    return state


def torch_to_flax(state_dict: Any) -> dict[str, dict[str, np.ndarray]]:
    """Flax params (NumPy leaves) from a torch ``state_dict`` (tensors or arrays); inverse of :func:`flax_to_torch`."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        layer, kind = key.rsplit(".", 1)
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if kind == "weight":
            params.setdefault(layer, {})["kernel"] = np.ascontiguousarray(
                np.transpose(array, _KERNEL_TO_FLAX[array.ndim])
            )
        elif kind == "bias":
            params.setdefault(layer, {})["bias"] = np.array(array)
        else:
            raise ValueError(f"unexpected state_dict entry {key!r}")
    return params


def load_into_torch(module: Any, params: Any) -> Any:
    """Copy flax ``params`` into the torch ``module`` (strictly: every weight, no extra ones)."""
    import torch

    module.load_state_dict({key: torch.from_numpy(value) for key, value in flax_to_torch(params).items()})
    return module
