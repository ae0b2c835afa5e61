"""RMSprop with torch.optim.RMSprop's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class RMSpropState(NamedTuple):
    """State of :func:`rmsprop`; fields follow torch's state keys.

    ``momentum_buffer`` is ``None`` unless ``momentum > 0`` and ``grad_avg`` is ``None`` unless
    ``centered``, as in torch.
    """

    step: jax.Array
    square_avg: Any
    momentum_buffer: Any
    grad_avg: Any


def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: Any = 0.99,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum: Any = 0.0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    r"""RMSprop, exactly as ``torch.optim.RMSprop``.

    With :math:`g_t` the gradient (negated if ``maximize``):

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \bar g_t &= \operatorname{lerp}(\bar g_{t-1}, g_t, 1 - \alpha), \qquad
            \tilde v_t = v_t - \bar g_t^2 \text{ if centered, else } v_t \\
        b_t &= \mu b_{t-1} + \frac{g_t}{\sqrt{\tilde v_t} + \epsilon}, \qquad
            \theta_t = \theta_{t-1} - \gamma_t b_t \quad \text{if } \mu > 0 \\
        \theta_t &= \theta_{t-1} - \gamma_t \frac{g_t}{\sqrt{\tilde v_t} + \epsilon}
            \quad \text{otherwise}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      alpha: smoothing constant :math:`\alpha` of the squared-gradient average.
      eps: :math:`\epsilon`, added to the square root of the (centered) average.
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      momentum: momentum factor :math:`\mu`; a schedule makes it cycle (CyclicLR / OneCycleLR's
        ``cycle_momentum``).
      centered: normalise by an estimate of the gradient's variance instead of its second
        moment (keeps ``grad_avg``).
      maximize: ascend the objective instead of descending.
      capturable, foreach, differentiable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.RMSprop`` with the same arguments (same positional order), following
      ``_single_tensor_rmsprop``: eps is added *after* the square root (TensorFlow and optax's
      ``rmsprop`` add it inside), there is no bias correction, and the momentum buffer
      accumulates the normalised gradient, so ``lr`` is applied after the momentum.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.rmsprop(lr=0.01, alpha=0.75)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> updates["w"]
      Array([-0.02, -0.02], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_eps(eps)
    _validation.check_momentum(momentum)
    _validation.check_weight_decay(weight_decay)
    _validation.check_alpha(alpha)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    use_momentum = not _scalars.is_zero(momentum)

    def init_fn(params):
        _tree.check_float_params(params)
        return RMSpropState(
            step=_scalars.zero_step(),
            square_avg=_common.zeros_like_tree(params),
            momentum_buffer=_common.zeros_like_tree(params) if use_momentum else None,
            grad_avg=_common.zeros_like_tree(params) if centered else None,
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("rmsprop", grads, state.square_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "rmsprop")
        lr_t = _scalars.value_at(lr, state.step)
        momentum_t = _scalars.value_at(momentum, state.step)

        def leaf(g, p, square_avg, buf, grad_avg):
            g = -g if maximize else g
            if use_weight_decay:
                g = _common.add_weight_decay(g, p, weight_decay)
            square_avg = square_avg * alpha + (1 - alpha) * g * g
            if centered:
                grad_avg = _scalars.lerp(grad_avg, g, 1 - alpha)
                avg = jnp.sqrt(square_avg + -1 * grad_avg * grad_avg)
            else:
                avg = jnp.sqrt(square_avg)
            avg = avg + eps
            # The state, not ``use_momentum``, decides: under ``inject_hyperparams`` a zero
            # momentum arrives traced here although ``init`` saw it concrete and kept no buffer.
            if buf is not None:
                buf = buf * momentum_t + g / avg
                return -lr_t * buf, square_avg, buf, grad_avg
            return -lr_t * g / avg, square_avg, buf, grad_avg

        updates, square_avg, momentum_buffer, grad_avg = _common.map_leaves(
            leaf, grads, params, state.square_avg, state.momentum_buffer, state.grad_avg
        )
        return updates, RMSpropState(_scalars.increment(state.step), square_avg, momentum_buffer, grad_avg)

    return optax.GradientTransformation(init_fn, update_fn)
