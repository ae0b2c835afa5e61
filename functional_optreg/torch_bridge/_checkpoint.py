"""Reading torch checkpoints safely."""

from __future__ import annotations

import os
from typing import Any

from functional_optreg.torch_bridge import _torch


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a file written by ``torch.save`` with ``weights_only=True``, on the CPU.

    Only tensors, numbers, strings and plain containers are read: the file cannot run code
    (torch's unpickler refuses anything else). Optimizer and scheduler state dicts and module
    state dicts load this way.

    Args:
      path: the checkpoint file.

    Returns:
      The saved object (e.g. ``{"model": ..., "optimizer": ..., "scheduler": ...}``).

    To continue a saved run in JAX, rebuild the torch objects, load the dicts into them and
    convert them: ``optimizer.load_state_dict(ckpt["optimizer"])`` (after
    ``scheduler.load_state_dict(ckpt["scheduler"])``), then ``fo.from_torch(optimizer,
    scheduler)``; a state dict alone does not name the optimizer class or its parameters.
    """
    torch = _torch.torch_module()
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
