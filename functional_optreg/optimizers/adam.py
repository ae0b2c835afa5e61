"""Adam and AdamW with torch.optim.Adam / torch.optim.AdamW's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class AdamState(NamedTuple):
    """State of :func:`adam` / :func:`adamw`; fields follow torch's state keys.

    ``max_exp_avg_sq`` is ``None`` unless ``amsgrad=True``, as in torch.
    """

    step: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformation:
    r"""Adam, exactly as ``torch.optim.Adam``.

    With :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        \theta &\leftarrow \theta (1 - \gamma_t \lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda \theta \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1), \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad, else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma_t}{1 - \beta_1^t} \cdot
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      betas: :math:`(\beta_1, \beta_2)`, decay rates of the first and second moments; either
        may be a schedule (OneCycleLR / CyclicLR cycle :math:`\beta_1`, and the bias correction
        then uses the current value, as torch does).
      eps: :math:`\epsilon`, added to the bias-corrected root of the second moment.
      weight_decay: :math:`\lambda`; coupled L2 (added to the gradient) unless
        ``decoupled_weight_decay``.
      amsgrad: keep the running maximum of the second moment (``max_exp_avg_sq``).
      maximize: ascend the objective instead of descending.
      decoupled_weight_decay: AdamW's decay, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`.
      foreach, capturable, differentiable, fused: torch's implementation flags; accepted, no
        effect under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Adam`` with the same arguments, following ``_single_tensor_adam``: eps is
      added *after* the square root and the bias correction of the second moment, and AMSGrad
      takes the maximum of the *uncorrected* second moment (optax's ``amsgrad`` differs on both).

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adam(lr=1e-3, weight_decay=5e-4)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
      >>> updates["w"]
      Array([-0.001, -0.001], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_eps(eps)
    _validation.check_betas(betas)
    _validation.check_weight_decay(weight_decay)
    _validation.check_implementation_flags(foreach, fused, capturable, differentiable)
    beta1, beta2 = betas
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        return AdamState(
            step=_scalars.zero_step(),
            exp_avg=_common.zeros_like_tree(params),
            exp_avg_sq=_common.zeros_like_tree(params),
            max_exp_avg_sq=_common.zeros_like_tree(params) if amsgrad else None,
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("adam", grads, state.exp_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "adam")
        lr_t = _scalars.value_at(lr, state.step)
        beta1_t = _scalars.value_at(beta1, state.step)
        beta2_t = _scalars.value_at(beta2, state.step)
        step = _scalars.increment(state.step)
        step_size = lr_t / _scalars.as_float32_if(_scalars.bias_correction(beta1_t, step), float32_lr)
        bias_correction2_sqrt = jnp.sqrt(_scalars.bias_correction(beta2_t, step))

        def leaf(g, p, exp_avg, exp_avg_sq, max_exp_avg_sq):
            g = -g if maximize else g
            decayed = None
            if use_weight_decay:
                if decoupled_weight_decay:
                    # torch: param.mul_(1 - lr * weight_decay) (a float32 factor for a float32 tensor lr).
                    factor = _scalars.decay_factor(lr_t, weight_decay, float32_lr)
                    decayed = p * jnp.asarray(factor).astype(p.dtype)
                else:
                    g = _common.add_weight_decay(g, p, weight_decay)
            exp_avg = _scalars.lerp(exp_avg, g, 1 - beta1_t)
            exp_avg_sq = exp_avg_sq * beta2_t + (1 - beta2_t) * (g * g)
            if amsgrad:
                max_exp_avg_sq = jnp.maximum(max_exp_avg_sq, exp_avg_sq)
                second_moment = max_exp_avg_sq
            else:
                second_moment = exp_avg_sq
            denom = jnp.sqrt(second_moment) / bias_correction2_sqrt + eps
            update = -step_size * exp_avg / denom
            if decayed is not None:
                # Decay then step, as torch does; a parameter torch keeps at ±inf stays there.
                update = _common.delta(decayed + update, p)
            return update, exp_avg, exp_avg_sq, max_exp_avg_sq

        updates, exp_avg, exp_avg_sq, max_exp_avg_sq = _common.map_leaves(
            leaf, grads, params, state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq
        )
        return updates, AdamState(step, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformation:
    r"""AdamW, exactly as ``torch.optim.AdamW``: :func:`adam` with decoupled weight decay.

    .. math::

        \theta \leftarrow \theta (1 - \gamma_t \lambda), \text{ then the Adam step of } :func:`adam`

    Note the decay multiplies the learning rate (torch's convention; optax's ``adamw`` does the
    same, but its ``eps`` and AMSGrad placement differ).

    PyTorch equivalence:
      ``torch.optim.AdamW(params, lr, betas, eps, weight_decay=1e-2, amsgrad, maximize=...)``,
      which torch implements as ``Adam(..., decoupled_weight_decay=True)``.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.adamw(lr=0.1, weight_decay=0.5)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"]  # torch: p.mul_(1 - lr * weight_decay)
      Array([0.95, 0.95], dtype=float32)
    """
    return adam(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        foreach=foreach,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
        decoupled_weight_decay=True,
    )
