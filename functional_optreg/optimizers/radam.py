"""RAdam with torch.optim.RAdam's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class RAdamState(NamedTuple):
    """State of :func:`radam`; fields follow torch's state keys."""

    step: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def sma_length(beta2: Any, step: jax.Array) -> jax.Array:
    r"""The length :math:`\rho_t` of the approximated simple moving average of RAdam.

    .. math::

        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        \rho_\infty = \frac{2}{1 - \beta_2} - 1

    Both terms are about :math:`2 / (1 - \beta_2)` (2000 for the default :math:`\beta_2`) while
    :math:`\rho_t` is about :math:`t`, so the difference cancels. With double precision available
    (``jax_enable_x64``) it is evaluated exactly as torch writes it, which reproduces torch's own
    rounding. Without it, the cancellation is done analytically: with
    :math:`\ell = -\log\beta_2` and :math:`y = t\ell`,

    .. math::

        \rho_t = \Big(\rho_\infty - \frac{2}{\ell}\Big) + t
            - \frac{2}{\ell}\Big(\frac{y}{e^y - 1} - 1 + \frac{y}{2}\Big),

    with both brackets summed as series where they are small. Float32's first-order error bound
    (derived per step in ``tests/test_radam.py``, premise: XLA's float32 ``log1p``/``expm1`` within
    2 ulps) is at most 12 eps of :math:`\max(1, \rho_t)` for :math:`\beta_2 \in \{0.99, 0.999,
    0.9999\}`; for :math:`\beta_2 \le 0.9` the first bracket is computed as written and cancels
    itself (19 − 18.98 at :math:`\beta_2 = 0.9`), so the bound reaches 68 eps at :math:`t = 1`
    (3 eps measured; the median over the tested steps is 1–2 eps).
    """
    dtype = jnp.result_type(float)
    t = jnp.asarray(step, dtype)
    if jnp.finfo(dtype).bits >= 64:
        beta2_t = jnp.power(beta2, t)
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        return rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
    e = jnp.asarray(1.0 - beta2, dtype)
    ell = -jnp.log1p(-e)
    rho_inf = 2.0 / e - 1.0
    offset = jnp.where(
        e < 0.1,
        e * (1.0 / 6 + e * (1.0 / 12 + e * (19.0 / 360 + e * (3.0 / 80 + e * (863.0 / 15120))))),
        rho_inf - 2.0 / ell,
    )
    y = t * ell
    u = y * y
    small_y = offset + t - t * y / 6.0 * (1.0 - u / 60.0 + u * u / 2520.0 - u * u * u / 100800.0)
    large_y = rho_inf - 2.0 * t / jnp.expm1(jnp.maximum(y, 1.0))
    return jnp.where(y < 1.0, small_y, large_y)


def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    r"""RAdam (rectified Adam), exactly as ``torch.optim.RAdam``.

    With :math:`g_t` the gradient (negated if ``maximize``) and :math:`\rho_t` from
    :func:`sma_length`:

    .. math::

        \theta &\leftarrow \theta (1 - \gamma_t \lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda \theta \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1), \qquad
            v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
            \hat m_t = m_t / (1 - \beta_1^t) \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        \theta_t &= \theta_{t-1} - \gamma_t \hat m_t
            \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon} r_t \text{ if } \rho_t > 5,
            \text{ else } \theta_{t-1} - \gamma_t \hat m_t

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      betas: :math:`(\beta_1, \beta_2)`, decay rates of the first and second moments; either may
        be a schedule (OneCycleLR / CyclicLR cycle :math:`\beta_1`).
      eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}` (before the bias correction).
      weight_decay: :math:`\lambda`; coupled L2 (added to the gradient) unless
        ``decoupled_weight_decay``.
      decoupled_weight_decay: RAdamW's decay, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`.
      maximize: ascend the objective instead of descending.
      foreach, capturable, differentiable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.RAdam`` with the same arguments, following ``_single_tensor_radam``: the
      switch is ``rho_t > 5`` (strict), taken with ``jnp.where``; while it is off the step is
      plain bias-corrected momentum (with the default :math:`\beta_2` the first five steps), and
      eps is added to :math:`\sqrt{v_t}` *before* multiplying by :math:`\sqrt{1-\beta_2^t}`.
      optax's ``radam`` switches at a different threshold (``rho_t >= 5``) and places eps
      differently.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.radam(lr=0.1)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.full(2, 3.0)}, tx.init(params), params)
      >>> updates["w"].round(6)  # rho_1 = 1: no rectification, the step is -lr * m_1 / (1 - beta1)
      Array([-0.3, -0.3], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_eps(eps)
    _validation.check_betas(betas)
    _validation.check_weight_decay(weight_decay)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    beta1, beta2 = betas

    def init_fn(params):
        _tree.check_float_params(params)
        return RAdamState(
            step=_scalars.zero_step(),
            exp_avg=_common.zeros_like_tree(params),
            exp_avg_sq=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("radam", grads, state.exp_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "radam")
        lr_t = _scalars.value_at(lr, state.step)
        beta1_t = _scalars.value_at(beta1, state.step)
        beta2_t = _scalars.value_at(beta2, state.step)
        step = _scalars.increment(state.step)
        bias_correction1 = _scalars.bias_correction(beta1_t, step)
        bias_correction2_sqrt = jnp.sqrt(_scalars.bias_correction(beta2_t, step))
        rho_inf = 2.0 / (1.0 - beta2_t) - 1.0
        rho_t = sma_length(beta2_t, step)
        rectify = rho_t > 5.0
        # The unselected branch must stay finite: its radicand is negative for rho_t < 4.
        radicand = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf) / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        rect = jnp.sqrt(jnp.where(rectify, radicand, 1.0))

        def leaf(g, p, exp_avg, exp_avg_sq):
            g = -g if maximize else g
            decayed = None
            if use_weight_decay:
                if decoupled_weight_decay:
                    decayed = p * _scalars.decay_factor(lr_t, weight_decay, _scalars.is_float32_tensor_lr(lr))
                else:
                    g = _common.add_weight_decay(g, p, weight_decay)
            exp_avg = _scalars.lerp(exp_avg, g, 1 - beta1_t)
            exp_avg_sq = exp_avg_sq * beta2_t + (1 - beta2_t) * (g * g)
            momentum_step = exp_avg / bias_correction1 * lr_t
            adaptive_lr = bias_correction2_sqrt / (jnp.sqrt(exp_avg_sq) + eps)
            update = -jnp.where(rectify, momentum_step * adaptive_lr * rect, momentum_step)
            if decayed is not None:
                # Decay then step, as torch does; the difference to p is exact (Sterbenz).
                update = _common.delta(decayed + update, p)
            return update, exp_avg, exp_avg_sq

        updates, exp_avg, exp_avg_sq = _common.map_leaves(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
        return updates, RAdamState(step, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
