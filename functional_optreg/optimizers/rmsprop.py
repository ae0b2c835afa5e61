"""RMSprop with torch.optim.RMSprop's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_optreg import _device_errors, _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class RMSpropState(NamedTuple):
    """State of :func:`rmsprop`; fields follow torch's state keys.

    ``momentum_buffer`` is ``None`` unless ``momentum > 0`` and ``grad_avg`` is ``None`` unless
    ``centered``, as in torch.

    ``momentum_buffer_set`` is ``None`` unless ``momentum`` is a JAX scalar (as under
    ``optax.inject_hyperparams``, where ``fo.set_hyperparams`` may change it mid-run). Then the
    buffer is always kept and this boolean scalar says whether torch's buffer exists: torch
    creates it (zero) at the first update only, if momentum is positive then; a buffer that
    exists is left unchanged while momentum is zero and resumed afterwards.
    """

    step: jax.Array
    square_avg: Any
    momentum_buffer: Any
    grad_avg: Any
    momentum_buffer_set: Any = None


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
        ``cycle_momentum``). A JAX scalar (``optax.inject_hyperparams``) may be changed between
        updates as torch's ``group["momentum"]`` can: the buffer is created at the first update if
        momentum is positive then, and is frozen while momentum is zero. Switching momentum on
        after a first update without it raises ``ValueError`` (torch has no buffer then and raises
        ``KeyError: 'momentum_buffer'``).
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
    # A JAX scalar momentum can be changed between updates (``fo.set_hyperparams``), even to or
    # from zero, so it always keeps a buffer and tracks whether torch's buffer exists.
    switchable = isinstance(momentum, jax.Array)

    def init_fn(params):
        _tree.check_float_params(params)
        return RMSpropState(
            step=_scalars.zero_step(),
            square_avg=_common.zeros_like_tree(params),
            momentum_buffer=_common.zeros_like_tree(params) if use_momentum or switchable else None,
            grad_avg=_common.zeros_like_tree(params) if centered else None,
            momentum_buffer_set=jnp.zeros([], bool) if switchable else None,
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("rmsprop", grads, state.square_avg, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "rmsprop")
        lr_t = _scalars.value_at(lr, state.step)
        momentum_t = _scalars.value_at(momentum, state.step)
        # The state, not ``use_momentum``, decides: under ``inject_hyperparams`` a zero momentum
        # arrives traced here although ``init`` saw it concrete and kept no buffer.
        has_buffers = state.momentum_buffer is not None
        switchable_state = state.momentum_buffer_set is not None
        buffer_set: Any = None
        active: Any = None
        if switchable_state:
            active = momentum_t > 0
            buffer_set = jnp.where(state.step == 0, active, state.momentum_buffer_set)
            _refuse_late_momentum(jnp.logical_and(active, jnp.logical_not(buffer_set)))

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
            if not has_buffers:
                return -lr_t * g / avg, square_avg, buf, grad_avg
            new_buf = buf * momentum_t + g / avg
            if not switchable_state:
                return -lr_t * new_buf, square_avg, new_buf, grad_avg
            update = jnp.where(active, -lr_t * new_buf, -lr_t * g / avg)
            return update, square_avg, jnp.where(active, new_buf, buf), grad_avg

        updates, square_avg, momentum_buffer, grad_avg = _common.map_leaves(
            leaf, grads, params, state.square_avg, state.momentum_buffer, state.grad_avg
        )
        new_state = RMSpropState(_scalars.increment(state.step), square_avg, momentum_buffer, grad_avg, buffer_set)
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


LATE_MOMENTUM = (
    "rmsprop: momentum was switched on after a first update without it; torch.optim.RMSprop creates "
    "its momentum_buffer only at the first step (if momentum > 0 then) and raises KeyError: "
    "'momentum_buffer' here. Build the optimizer with momentum > 0 (a later momentum of 0 pauses the "
    "buffer) or set momentum before the first update."
)


def _raise_late_momentum(late: Any) -> None:
    if np.any(late):
        raise ValueError(LATE_MOMENTUM)


def _refuse_late_momentum(late: jax.Array) -> None:
    """Raise :data:`LATE_MOMENTUM` where ``late``; under ``jit`` only when the step runs, and the
    callback is staged in the taken branch only, so a valid step pays no host round trip."""
    if not isinstance(late, jax.core.Tracer):
        _raise_late_momentum(late)
        return
    jax.lax.cond(late, lambda x: _device_errors.check(_raise_late_momentum, x), lambda x: None, late)
