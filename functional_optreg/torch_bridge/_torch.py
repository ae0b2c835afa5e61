"""Lazy access to torch and conversions between tensors and arrays.

Nothing in this module imports torch at import time; each function imports it when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_module() -> Any:
    """The ``torch`` package, imported on first use (the bridge is its only user)."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "functional_optreg.torch_bridge needs PyTorch: pip install 'functional-optreg[torch]'."
        ) from error
    return torch


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy copy of a tensor (bfloat16 goes through ml_dtypes) or of any array-like."""
    torch = torch_module()
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            return tensor.float().numpy().astype(ml_dtypes.bfloat16)
        return tensor.numpy().copy()
    return np.array(value)


def to_tensor(value: Any) -> Any:
    """A CPU tensor holding a copy of ``value`` (a JAX or NumPy array or a number), dtype kept."""
    torch = torch_module()
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def to_python(value: Any) -> Any:
    """A hyperparameter as a Python value: 0-d tensors become numbers, containers are mapped."""
    torch = torch_module()
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"expected a scalar hyperparameter, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    if isinstance(value, tuple):
        return tuple(to_python(item) for item in value)
    if isinstance(value, list):
        return [to_python(item) for item in value]
    return value


def scalar_dtype() -> Any:
    """The dtype torch gives scalar optimizer state (``step``, ``eta``, ...): float64 under a float64
    default dtype, else float32 (torch's ``_get_scalar_dtype``)."""
    torch = torch_module()
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
