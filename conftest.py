"""Settings for every pytest run: a JAX compilation cache per pytest-xdist worker, when asked for.

The tests compile the same small programs many times: a property test, the catalog and the
bridge tests build the same optimizer on the same tree, and every closure is a new function to
``jax.jit``, so its in-memory cache misses. JAX's persistent cache recognises a program by its
HLO and flags, so a directory per worker saves those compilations; a hit returns the executable
the compilation would have produced, so nothing that runs changes. One directory per worker,
never shared: a worker reading an entry another is still writing gets a truncated file.
``tests/run.sh`` asks for it with ``FO_TEST_COMPILATION_CACHE=DIR`` (a fresh temporary directory).
"""

from __future__ import annotations

import os

import jax


def pytest_configure(config) -> None:
    del config
    root = os.environ.get("FO_TEST_COMPILATION_CACHE")
    if not root:
        return
    # JAX creates the directory at its first write (xdist's controller process compiles nothing).
    directory = os.path.join(root, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
