"""Adadelta with torch.optim.Adadelta's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class AdadeltaState(NamedTuple):
    """State of :func:`adadelta`; fields follow torch's state keys.

    ``square_avg`` averages the squared gradients, ``acc_delta`` the squared parameter deltas.
    """

    step: jax.Array
    square_avg: Any
    acc_delta: Any


def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: Any = 0.0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    r"""Adadelta, exactly as ``torch.optim.Adadelta``.

    With :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} \, g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma_t \Delta_t

    Args:
      lr: learning rate :math:`\gamma` scaling the delta, a float, a JAX scalar or a schedule
        of the update count.
      rho: decay rate :math:`\rho` of both running averages, in ``[0, 1]``.
      eps: :math:`\epsilon`, added *inside* both square roots.
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      maximize: ascend the objective instead of descending.
      foreach, capturable, differentiable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Adadelta`` with the same arguments, following ``_single_tensor_adadelta``:
      unlike torch's Adam and RMSprop, eps sits inside the square roots, and the delta is
      scaled by ``lr`` (default 1.0, the original algorithm) only after ``acc_delta`` has been
      updated with the unscaled delta. optax's ``adadelta`` matches this rule; this transform
      adds torch's weight decay, maximize and state names.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adadelta(lr=0.5, rho=0.0, eps=9.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.full(2, 4.0)}, tx.init(params), params)
      >>> updates["w"]  # -0.5 * sqrt(0 + 9) / sqrt(16 + 9) * 4
      Array([-1.2, -1.2], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_rho(rho)
    _validation.check_eps(eps)
    _validation.check_weight_decay(weight_decay)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)

    def init_fn(params):
        _tree.check_float_params(params)
        return AdadeltaState(
            step=_scalars.zero_step(),
            square_avg=_common.zeros_like_tree(params),
            acc_delta=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("adadelta", grads, state.square_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "adadelta")
        lr_t = _scalars.value_at(lr, state.step)

        def leaf(g, p, square_avg, acc_delta):
            g = -g if maximize else g
            if use_weight_decay:
                g = _common.add_weight_decay(g, p, weight_decay)
            square_avg = square_avg * rho + (1 - rho) * g * g
            std = jnp.sqrt(square_avg + eps)
            delta = jnp.sqrt(acc_delta + eps) / std * g
            acc_delta = acc_delta * rho + (1 - rho) * delta * delta
            return -lr_t * delta, square_avg, acc_delta

        updates, square_avg, acc_delta = _common.map_leaves(leaf, grads, params, state.square_avg, state.acc_delta)
        return updates, AdadeltaState(_scalars.increment(state.step), square_avg, acc_delta)

    return optax.GradientTransformation(init_fn, update_fn)
