"""Adamax with torch.optim.Adamax's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class AdamaxState(NamedTuple):
    """State of :func:`adamax`; fields follow torch's state keys.

    ``exp_avg`` is the first moment, ``exp_inf`` the exponentially weighted infinity norm.
    """

    step: jax.Array
    exp_avg: Any
    exp_inf: Any


def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> optax.GradientTransformation:
    r"""Adamax (Adam with the infinity norm), exactly as ``torch.optim.Adamax``.

    With :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1) \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma_t}{1 - \beta_1^t} \frac{m_t}{u_t}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      betas: :math:`(\beta_1, \beta_2)`, decay rates of the first moment and of the infinity
        norm; either may be a schedule (OneCycleLR / CyclicLR cycle :math:`\beta_1`, and the
        bias correction then uses the current value, as torch does).
      eps: :math:`\epsilon`, added to :math:`|g_t|` *inside* the maximum.
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      maximize: ascend the objective instead of descending.
      foreach, differentiable, capturable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Adamax`` with the same arguments, following ``_single_tensor_adamax``:
      eps enters the infinity norm as :math:`\max(\beta_2 u, |g| + \epsilon)`, so it is
      remembered and decays with :math:`\beta_2`, and only the first moment is bias-corrected.
      optax's ``adamax`` follows the same rule; this transform adds torch's weight decay,
      maximize, schedulable betas and state names.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adamax(lr=0.1, eps=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> updates["w"].round(6), state.exp_inf["w"]  # -(0.1 / 0.1) * 0.1 / (1 + 1)
      (Array([-0.05, -0.05], dtype=float32), Array([2., 2.], dtype=float32))
    """
    _validation.check_lr(lr)
    _validation.check_eps(eps)
    _validation.check_betas(betas)
    _validation.check_weight_decay(weight_decay)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    beta1, beta2 = betas
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        return AdamaxState(
            step=_scalars.zero_step(),
            exp_avg=_common.zeros_like_tree(params),
            exp_inf=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("adamax", grads, state.exp_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "adamax")
        lr_t = _scalars.value_at(lr, state.step)
        beta1_t = _scalars.value_at(beta1, state.step)
        beta2_t = _scalars.value_at(beta2, state.step)
        step = _scalars.increment(state.step)
        clr = lr_t / _scalars.as_float32_if(_scalars.bias_correction(beta1_t, step), float32_lr)

        def leaf(g, p, exp_avg, exp_inf):
            g = -g if maximize else g
            if use_weight_decay:
                g = _common.add_weight_decay(g, p, weight_decay)
            exp_avg = _scalars.lerp(exp_avg, g, 1 - beta1_t)
            exp_inf = jnp.maximum(exp_inf * beta2_t, jnp.abs(g) + eps)
            return -clr * exp_avg / exp_inf, exp_avg, exp_inf

        updates, exp_avg, exp_inf = _common.map_leaves(leaf, grads, params, state.exp_avg, state.exp_inf)
        return updates, AdamaxState(step, exp_avg, exp_inf)

    return optax.GradientTransformation(init_fn, update_fn)
