"""Adagrad with torch.optim.Adagrad's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class AdagradState(NamedTuple):
    """State of :func:`adagrad`; fields follow torch's state keys.

    ``sum`` is the running sum of squared gradients, starting at ``initial_accumulator_value``.
    """

    step: jax.Array
    sum: Any


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: Any = 0.0,
    weight_decay: Any = 0.0,
    initial_accumulator_value: Any = 0.0,
    eps: Any = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformation:
    r"""Adagrad, exactly as ``torch.optim.Adagrad``.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`\gamma_t` the learning rate
    and :math:`\eta` the learning-rate decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        \tilde\gamma_t &= \frac{\gamma_t}{1 + (t - 1) \eta} \\
        s_t &= s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t \frac{g_t}{\sqrt{s_t} + \epsilon}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      lr_decay: :math:`\eta`; the learning rate of step :math:`t` is divided by
        :math:`1 + (t - 1)\eta`.
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      initial_accumulator_value: starting value of every element of ``sum``.
      eps: :math:`\epsilon`, added to the square root of the sum.
      maximize: ascend the objective instead of descending.
      foreach, differentiable, fused: torch's implementation flags; accepted, no effect under
        XLA (torch's rejected combinations, fused with foreach or with differentiable, are
        rejected too).

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Adagrad`` with the same arguments, following ``_single_tensor_adagrad``:
      eps is added *after* the square root and the default eps is ``1e-10`` with a zero initial
      accumulator (optax's ``adagrad`` puts eps inside the root and starts the sum at 0.1).
      ``lr_decay`` divides the (scheduled) learning rate, so it composes with a schedule the way
      torch's scheduler composes with it. Sparse gradients have no JAX counterpart.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adagrad(lr=0.1, initial_accumulator_value=3.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> updates["w"], state.sum["w"]
      (Array([-0.05, -0.05], dtype=float32), Array([4., 4.], dtype=float32))
    """
    _validation.check_lr(lr)
    _validation.check_lr_decay(lr_decay)
    _validation.check_weight_decay(weight_decay)
    _validation.check_initial_accumulator_value(initial_accumulator_value)
    _validation.check_eps(eps)
    _validation.check_implementation_flags(foreach=foreach, fused=fused, differentiable=differentiable)
    use_lr_decay = not _scalars.is_zero(lr_decay)
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        return AdagradState(
            step=_scalars.zero_step(),
            sum=_common.full_like_tree(params, initial_accumulator_value),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("adagrad", grads, state.sum, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "adagrad")
        lr_t = _scalars.value_at(lr, state.step)
        if use_lr_decay:
            # state.step is torch's ``step - 1``: the count before this update.
            previous_steps = jnp.asarray(state.step, dtype=jnp.result_type(float))
            clr = lr_t / _scalars.as_float32_if(1 + previous_steps * lr_decay, float32_lr)
        else:
            clr = lr_t

        def leaf(g, p, state_sum):
            g = -g if maximize else g
            if use_weight_decay:
                g = _common.add_weight_decay(g, p, weight_decay)
            state_sum = state_sum + g * g
            std = jnp.sqrt(state_sum) + eps
            return -clr * g / std, state_sum

        updates, sums = _common.map_leaves(leaf, grads, params, state.sum)
        return updates, AdagradState(_scalars.increment(state.step), sums)

    return optax.GradientTransformation(init_fn, update_fn)
