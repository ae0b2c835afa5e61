"""The device JAX computes on, and the parity contract's precision setting (docs/parity.md).

One place for what both ``python -m parity --platform gpu`` and the benchmarks
(``benchmarks/_harness.py``) need: JAX on the chosen platform (before the first computation), and
float32 matrix products at full precision on both sides, so that a GPU run compares float32 with
float32 rather than two different reduced-precision modes (TF32).
"""

from __future__ import annotations

import contextlib

PLATFORMS = ("cpu", "gpu")


class PlatformUnavailable(RuntimeError):
    """The platform asked for is not the one JAX runs on (no GPU, or no CUDA build of jaxlib)."""


def use_platform(name: str | None) -> str:
    """Make JAX run on ``name`` (``"cpu"``, ``"gpu"``, or ``None``: JAX's default device).

    Must run before JAX's first computation (the platform is fixed then). Returns the platform in
    use, ``"cpu"`` or ``"gpu"``; raises :class:`PlatformUnavailable` when ``"gpu"`` was asked for
    and JAX found none (``jax_platforms = "cuda,cpu"`` would otherwise fall back to the CPU
    silently).
    """
    import jax

    if name not in (None, *PLATFORMS):
        raise ValueError(f"platform must be one of {PLATFORMS} or None, got {name!r}")
    if name is not None:
        jax.config.update("jax_platforms", "cuda,cpu" if name == "gpu" else "cpu")
    used = "gpu" if jax.default_backend() == "gpu" else "cpu"
    if name == "gpu" and used != "gpu":
        raise PlatformUnavailable(
            f"asked for the GPU, but JAX runs on the CPU (jax.devices(): {jax.devices()}); install JAX's CUDA "
            "build (pip install -e '.[cuda]') and check that nvidia-smi sees the GPU and CUDA_VISIBLE_DEVICES allows it"
        )
    return used


@contextlib.contextmanager
def full_precision():
    """Float32 matrix products at full precision in both frameworks, restored on exit.

    JAX: ``jax.default_matmul_precision("highest")`` (on a GPU, JAX's default lets float32 dots run
    as TF32). torch, when installed: TF32 off for matmuls and cuDNN. The parity oracle runs torch
    on the CPU, so on a GPU the check is this library's GPU arithmetic against torch's CPU
    semantics; the benchmarks run torch on the GPU, where its flags matter.
    """
    import jax

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def describe() -> str:
    """The device JAX computes on, in words (for a run's header)."""
    import jax

    device = jax.devices()[0]
    kind = "" if device.device_kind == device.platform else f": {device.device_kind}"
    return f"{device.platform}{kind} (jax {jax.__version__})"
