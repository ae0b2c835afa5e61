"""The host-memory setting the seed CNN trains with: freed buffers are reused, not returned to the system.

XLA:CPU allocates the buffers of every execution (its temporaries and outputs) with ``malloc`` and
frees them when the execution ends. With glibc's defaults a request above 32 MiB (the ceiling of
its adaptive mmap threshold), or a large request from any thread but the main one (a thread's
arena is an mmapped heap of at most 64 MiB), is served by a fresh ``mmap`` and returned with
``munmap`` when freed. Every step then writes to memory the kernel has to map and zero-fill page
by page: at batch 256 the seed CNN's jitted step allocates 116, 79 and 58 MB per step and takes
≈ 19,300 minor page faults (75 MB): 28% of the step's time on one core, 42% on two
(``benchmarks/RESULTS.md``). Batch 64 stays under the thresholds and is unaffected.

:func:`keep_freed_memory` makes the main thread's heap serve and keep those buffers:

* glibc's ``mallopt``: no mmapped chunks (``M_MMAP_MAX = 0``) and freed memory kept at the top of
  the heap up to 2 GiB (``M_TRIM_THRESHOLD``), what ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
  glibc.malloc.trim_threshold=2147483647`` sets at start-up;
* JAX's ``jax_cpu_enable_async_dispatch`` off, so that XLA:CPU runs each computation, and
  allocates its buffers, on the calling thread, whose arena is the main one (with asynchronous
  dispatch it allocates on a worker thread, whose arena cannot grow past 64 MiB). XLA's own
  thread pool still runs the kernels; Python waits for each step instead of queueing the next.

After the first steps every step reuses the same, already mapped pages. The process keeps its
peak heap size until it exits. (``M_ARENA_MAX = 1`` instead of synchronous dispatch, i.e. every
thread on the main arena, measured as fast at batch 256 and 10–20% slower at batch 64 on two
cores.)

Call it before JAX's first computation: ``examples/train_cnn.py`` does so ahead of its imports
when run as a script, and ``benchmarks/train_step.py`` and ``profile_step.py`` before importing
JAX unless ``--default-malloc``. Nothing changes outside Linux with glibc, or when the environment
already sets glibc's malloc parameters (``GLIBC_TUNABLES`` with ``glibc.malloc.``, or a
``MALLOC_*`` variable).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""``mallopt`` parameter numbers, from glibc's ``malloc.h``."""

SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
"""No mmapped chunks; keep up to 2 GiB of freed memory at the top of the heap."""

_applied = False


def user_chooses(environ: dict[str, str] | None = None) -> bool:
    """Whether ``environ`` (default ``os.environ``) already sets glibc's malloc parameters."""
    environ = os.environ if environ is None else environ
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(name.startswith("MALLOC_") for name in environ)


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Apply the setting of the module docstring; True if applied.

    False, with nothing changed, outside Linux with glibc or when :func:`user_chooses`.
    """
    global _applied
    if not sys.platform.startswith("linux") or user_chooses(environ):
        return False
    libc = ctypes.CDLL(None)  # the C library this process runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc
        return False
    if not all(libc.mallopt(parameter, value) == 1 for parameter, value in SETTINGS):
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    _applied = True
    return True


def describe() -> str:
    """This process's setting in words, for a run's report."""
    return "keeps freed memory, synchronous CPU dispatch (examples/seed_cnn/allocator.py)" if _applied else "default"
