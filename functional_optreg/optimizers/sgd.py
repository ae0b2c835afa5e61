"""Stochastic gradient descent with torch.optim.SGD's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class SGDState(NamedTuple):
    """State of :func:`sgd`; fields follow torch's state keys.

    ``step`` counts completed updates (torch keeps no SGD step; we need it for schedules and the
    first-step rule). ``momentum_buffer`` is ``None`` when ``momentum`` is a Python zero, as in
    torch.

    ``momentum_buffer_set`` is ``None`` unless ``momentum`` is a JAX scalar (as under
    ``optax.inject_hyperparams``, where ``fo.set_hyperparams`` may switch momentum on or off
    mid-run). Then the buffer is always kept and this boolean scalar says whether torch's buffer
    exists yet: torch creates it (as a copy of the gradient) at the first update whose momentum
    is non-zero, keeps it unchanged while momentum is zero, and resumes from it afterwards.
    """

    step: jax.Array
    momentum_buffer: Any
    momentum_buffer_set: Any = None


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: Any = 0.0,
    dampening: Any = 0.0,
    weight_decay: Any = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformation:
    r"""Stochastic gradient descent, exactly as ``torch.optim.SGD``.

    With :math:`g_t` the gradient (negated if ``maximize``) and :math:`\lambda` the weight decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_1 &= g_1, \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t \quad (t > 1) \\
        g_t &\leftarrow g_t + \mu b_t \text{ if nesterov, else } b_t \\
        \theta_t &= \theta_{t-1} - \gamma_t g_t

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      momentum: momentum factor :math:`\mu`; a schedule makes it cycle (CyclicLR / OneCycleLR's
        ``cycle_momentum``). A JAX scalar (``optax.inject_hyperparams``) may be switched on and off
        between updates as torch's ``group["momentum"]`` can: the buffer starts as the gradient of
        the first update with non-zero momentum and is frozen while momentum is zero.
      dampening: dampening :math:`\tau` of the momentum.
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: ascend the objective instead of descending.
      foreach, differentiable, fused: torch's implementation flags; accepted, no effect under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov,
      maximize=maximize)``, following ``_single_tensor_sgd`` operation by operation. Torch's odd
      first step is reproduced: the first momentum buffer is the raw gradient, so dampening is not
      applied on step 1.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.sgd(lr=0.1, momentum=0.9)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([0.9, 0.9, 0.9], dtype=float32)
    """
    _validation.check_lr(lr)
    _validation.check_momentum(momentum)
    _validation.check_weight_decay(weight_decay)
    _validation.check_number(dampening, "dampening")
    _validation.check_implementation_flags(foreach=foreach, fused=fused, differentiable=differentiable)
    use_momentum = not _scalars.is_zero(momentum)
    # A JAX scalar momentum can be changed between updates (``fo.set_hyperparams``), even to or
    # from zero, so it always keeps a buffer and tracks whether torch's buffer exists yet.
    switchable = isinstance(momentum, jax.Array)
    if nesterov and (_scalars.is_zero(momentum) or _scalars.is_known_nonzero(dampening)):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def init_fn(params):
        _tree.check_float_params(params)
        buffers = _common.zeros_like_tree(params) if use_momentum or switchable else None
        buffer_set = jnp.zeros([], bool) if switchable else None
        return SGDState(step=_scalars.zero_step(), momentum_buffer=buffers, momentum_buffer_set=buffer_set)

    def update_fn(grads, state, params=None):
        reference = grads if state.momentum_buffer is None else state.momentum_buffer
        _common.check_update_inputs("sgd", grads, reference, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "sgd")
        lr_t = _scalars.value_at(lr, state.step)
        momentum_t = _scalars.value_at(momentum, state.step)
        # The state, not the hyperparameter, decides: under optax.inject_hyperparams ``init`` sees
        # a concrete momentum and ``update`` a traced one.
        has_buffers = state.momentum_buffer is not None
        if state.momentum_buffer_set is None:
            is_first_step = state.step == 0
            active = True
            buffer_set = None
        else:
            is_first_step = jnp.logical_not(state.momentum_buffer_set)
            active = momentum_t != 0
            buffer_set = jnp.logical_or(state.momentum_buffer_set, active)

        def leaf(g, p, buf):
            d_p = -g if maximize else g
            if use_weight_decay:
                d_p = _common.add_weight_decay(d_p, p, weight_decay)
            if has_buffers:
                new_buf = jnp.where(is_first_step, d_p, momentum_t * buf + (1 - dampening) * d_p)
                momentum_d_p = d_p + momentum_t * new_buf if nesterov else new_buf
                buf = jnp.where(active, new_buf, buf)
                d_p = jnp.where(active, momentum_d_p, d_p)
            return -lr_t * d_p, buf

        updates, buffers = _common.map_leaves(leaf, grads, params, state.momentum_buffer)
        return updates, SGDState(_scalars.increment(state.step), buffers, buffer_set)

    return optax.GradientTransformation(init_fn, update_fn)
