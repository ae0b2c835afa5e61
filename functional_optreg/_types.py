"""Type aliases shared across the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import jax

Params = Any
"""A pytree of parameter arrays."""

Updates = Any
"""A pytree of update deltas, shaped like ``Params`` (apply with ``optax.apply_updates``)."""

Scalar = Union[float, int, jax.Array]
"""A Python number or a 0-d JAX array (which may be a tracer)."""

Schedule = Callable[[jax.Array], jax.Array]
"""A function of the update count (0 for the first update) returning a scalar."""

ScalarOrSchedule = Union[Scalar, Schedule]
