"""The XLA:CPU setting the seed CNN trains with: convolutions on XLA's Eigen kernels, not YNNPACK.

jaxlib 0.10 hands every CPU convolution to YNNPACK by default. For this network that is the slower
choice, and much slower at large batches: one core, CPU time per training step, same run, ratio to
torch eager (``benchmarks/RESULTS.md``): batch 64 1.16× → 1.01×, batch 256 2.13× → 1.35×. The
per-op profile names the cause: YNNPACK's weight gradient of conv2 (32→64 channels, 14×14) alone
took 41% of the batch-256 step. With ``-individual_convolution`` in
``--xla_cpu_experimental_ynn_fusion_type`` XLA keeps its other YNNPACK fusions (dots,
element-wise, reductions) and runs the convolutions itself.

XLA reads ``XLA_FLAGS`` once, when JAX starts its CPU backend: at the first computation, or
earlier, since importing flax starts it. So :func:`prefer_eigen_convolutions` must run before
both; ``examples/train_cnn.py`` calls it ahead of its imports when run as a script, and
``benchmarks/train_step.py`` before importing JAX unless ``--plain-xla``. A user's own
``xla_cpu_experimental_ynn_fusion_type`` setting is left alone.
"""

from __future__ import annotations

import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
"""Remove YNNPACK convolutions from XLA:CPU's default library fusions (jaxlib >= 0.10)."""


def prefer_eigen_convolutions(environ: dict[str, str] | None = None) -> bool:
    """Append :data:`FLAG` to ``XLA_FLAGS`` (of ``environ``, default ``os.environ``); True if appended.

    Nothing changes (False) with a jaxlib older than 0.10, whose XLA does not know the flag and
    would abort on it, or when ``XLA_FLAGS`` already sets ``xla_cpu_experimental_ynn_fusion_type``.
    """
    import jaxlib

    environ = os.environ if environ is None else environ
    major, minor = (int(part) for part in jaxlib.__version__.split(".")[:2])
    flags = environ.get("XLA_FLAGS", "")
    if (major, minor) < (0, 10) or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
