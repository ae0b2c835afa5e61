"""Momentum in the classical exponential-moving-average form."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class EmaMomentumState(NamedTuple):
    """State of :func:`ema_momentum`: the step count and the average ``momentum_buffer``."""

    step: jax.Array
    momentum_buffer: Any


def ema_momentum(lr: ScalarOrSchedule, beta: Any = 0.9) -> optax.GradientTransformation:
    r"""Gradient descent with momentum as an exponential moving average of the gradients.

    .. math::

        v_0 = 0, \qquad v_t = \beta v_{t-1} + (1 - \beta) \nabla J(\theta_{t-1}), \qquad
        \theta_t = \theta_{t-1} - \alpha v_t

    Args:
      lr: learning rate :math:`\alpha`, a float, a JAX scalar or a schedule of the update count.
      beta: averaging coefficient :math:`\beta \in [0, 1)`.

    Returns:
      An optax ``GradientTransformation``.

    PyTorch equivalence:
      Torch has no EMA-form momentum, but two SGD configurations reproduce it exactly (both are
      parity cases):

      * ``SGD(lr=α·(1−β), momentum=β)``: with ``dampening=0`` torch's buffer is
        :math:`b_t = \beta b_{t-1} + g_t` and its first buffer :math:`b_1 = g_1` equals the zero
        start, so :math:`b_t = v_t / (1-\beta)` at every step.
      * ``SGD(lr=α, momentum=β, dampening=β)`` whose ``momentum_buffer`` state is pre-set to
        zeros. Left alone, torch's first buffer is the raw gradient :math:`g_1` rather than
        :math:`(1-\beta) g_1`, so it differs from this form on every step.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.ema_momentum(lr=1.0, beta=0.5)
      >>> updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}))
      >>> updates["w"]
      Array([-0.5, -0.5], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.require(beta, lambda v: 0.0 <= v < 1.0, f"Invalid beta value: {beta}", "beta")

    def init_fn(params):
        _tree.check_float_params(params)
        return EmaMomentumState(_scalars.zero_step(), _common.zeros_like_tree(params))

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("ema_momentum", grads, state.momentum_buffer, params)
        lr_t = _scalars.value_at(lr, state.step)

        def leaf(g, buffer):
            buffer = beta * buffer + (1 - beta) * g
            return -lr_t * buffer, buffer

        updates, buffers = _common.map_leaves(leaf, grads, state.momentum_buffer)
        return updates, EmaMomentumState(_scalars.increment(state.step), buffers)

    return optax.GradientTransformation(init_fn, update_fn)
