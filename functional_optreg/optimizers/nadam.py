"""NAdam with torch.optim.NAdam's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class NAdamState(NamedTuple):
    r"""State of :func:`nadam`; fields follow torch's state keys.

    ``mu_product`` is the running product :math:`\prod_{i \le t} \mu_i`. Torch keeps one copy
    per parameter, always equal, so it is a single scalar here; it is stored in float32 whatever
    the parameters' dtype, because torch's copy is a float32 tensor (``_get_scalar_dtype()`` under
    torch's default dtype) and its rounding is part of torch's trajectory. One difference: XLA on
    CPU flushes subnormal floats to zero, so once torch's product turns subnormal (below 1.2e-38,
    e.g. after about 38 steps with ``beta1 = 0.2``) ours is 0; the steps are unaffected, as
    :math:`1 - \Pi_t` is 1 either way.
    """

    step: jax.Array
    mu_product: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum_decay: Any = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    r"""NAdam (Adam with Nesterov momentum), exactly as ``torch.optim.NAdam``.

    With :math:`g_t` the gradient (negated if ``maximize``) and :math:`\psi` the momentum decay:

    .. math::

        \theta &\leftarrow \theta (1 - \gamma_t \lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda \theta \\
        \mu_t &= \beta_1 \left(1 - \tfrac12 \, 0.96^{t \psi}\right), \qquad
            \mu_{t+1} = \beta_1 \left(1 - \tfrac12 \, 0.96^{(t+1) \psi}\right), \qquad
            \Pi_t = \Pi_{t-1} \mu_t \\
        m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1 - \beta_1), \qquad
            v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
            d_t = \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1} - \gamma_t \frac{1 - \mu_t}{1 - \Pi_t} \frac{g_t}{d_t}
            - \gamma_t \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} \frac{m_t}{d_t}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      betas: :math:`(\beta_1, \beta_2)`, decay rates of the first and second moments; either may
        be a schedule (OneCycleLR / CyclicLR cycle :math:`\beta_1`; :math:`\mu_t` then uses the
        current value, as torch does).
      eps: :math:`\epsilon`, added to the bias-corrected root of the second moment.
      weight_decay: :math:`\lambda`; coupled L2 (added to the gradient) unless
        ``decoupled_weight_decay``.
      momentum_decay: :math:`\psi`, how fast the momentum schedule :math:`\mu_t` approaches
        :math:`\beta_1`.
      decoupled_weight_decay: NAdamW's decay, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`.
      maximize: ascend the objective instead of descending.
      foreach, capturable, differentiable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.NAdam`` with the same arguments, following ``_single_tensor_nadam``. Torch's
      particulars are reproduced: the bias correction of the second moment is taken *inside* the
      square root (unlike Adam), the first moment is never bias-corrected (the :math:`\Pi` factors
      play that role), and ``mu_product`` is a float32 scalar even for float64 parameters, so
      :math:`\Pi_t` is rounded to float32 at every step (``mu`` is rounded to float32 before the
      multiplication, as torch's tensor-times-scalar does). :math:`\mu_t`, :math:`\mu_{t+1}` and
      the two step sizes are computed in double precision when ``jax_enable_x64`` is on, as torch
      computes them in Python floats. Give ``update`` the parameters even without weight decay:
      the step is then rounded in torch's order. optax's ``nadam`` is a different algorithm (no
      :math:`\mu_t` schedule).

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.nadam(lr=0.1, momentum_decay=0.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> updates["w"]  # mu = 0.45: -0.1 * (0.55 / 0.55 + 0.045 / 0.7975)
      Array([-0.10564263, -0.10564263], dtype=float32)
      >>> state.mu_product
      Array(0.45, dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_eps(eps)
    _validation.check_betas(betas)
    _validation.check_weight_decay(weight_decay)
    _validation.check_momentum_decay(momentum_decay)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    beta1, beta2 = betas
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        return NAdamState(
            step=_scalars.zero_step(),
            mu_product=jnp.ones([], jnp.float32),
            exp_avg=_common.zeros_like_tree(params),
            exp_avg_sq=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("nadam", grads, state.exp_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "nadam")
        lr_t = _scalars.value_at(lr, state.step)
        beta1_t = _scalars.value_at(beta1, state.step)
        beta2_t = _scalars.value_at(beta2, state.step)
        step = _scalars.increment(state.step)
        # Torch's Python-float scalars: double precision whenever JAX has it.
        t = jnp.asarray(step, jnp.result_type(float))
        mu = beta1_t * (1.0 - 0.5 * jnp.power(0.96, t * momentum_decay))
        mu_next = beta1_t * (1.0 - 0.5 * jnp.power(0.96, (t + 1.0) * momentum_decay))
        mu_product = state.mu_product * jnp.asarray(mu, jnp.float32)
        product = jnp.asarray(mu_product, jnp.result_type(float))
        grad_step = (
            -lr_t * _scalars.as_float32_if(1.0 - mu, float32_lr) / _scalars.as_float32_if(1.0 - product, float32_lr)
        )
        avg_step = (-lr_t * _scalars.as_float32_if(mu_next, float32_lr)) / _scalars.as_float32_if(
            1.0 - product * mu_next, float32_lr
        )
        bias_correction2 = _scalars.bias_correction(beta2_t, step)

        def leaf(g, p, exp_avg, exp_avg_sq):
            g = -g if maximize else g
            new_p = p
            if use_weight_decay:
                if decoupled_weight_decay:
                    new_p = p * _scalars.decay_factor(lr_t, weight_decay, float32_lr)
                else:
                    g = _common.add_weight_decay(g, p, weight_decay)
            exp_avg = _scalars.lerp(exp_avg, g, 1 - beta1_t)
            exp_avg_sq = exp_avg_sq * beta2_t + (1 - beta2_t) * (g * g)
            denom = jnp.sqrt(exp_avg_sq / bias_correction2) + eps
            if p is None:
                return grad_step * g / denom + avg_step * exp_avg / denom, exp_avg, exp_avg_sq
            # torch's two in-place addcdiv_ calls, rounded in its order; for small steps the
            # difference to p is exact (Sterbenz), so apply_updates lands on that value. In
            # float32 this brings us about ten times closer to torch than summing the two terms.
            new_p = new_p + grad_step * g / denom
            new_p = new_p + avg_step * exp_avg / denom
            return _common.delta(new_p, p), exp_avg, exp_avg_sq

        updates, exp_avg, exp_avg_sq = _common.map_leaves(leaf, grads, params, state.exp_avg, state.exp_avg_sq)
        return updates, NAdamState(step, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
