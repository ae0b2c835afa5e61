"""Rprop with torch.optim.Rprop's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class RpropState(NamedTuple):
    """State of :func:`rprop`; fields follow torch's state keys.

    ``prev`` is the previous gradient as torch stores it (zeroed where the sign flipped) and
    ``step_size`` the per-element step size, initialised to the learning rate.
    """

    step: jax.Array
    prev: Any
    step_size: Any


def rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[Any, Any] = (0.5, 1.2),
    step_sizes: tuple[Any, Any] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> optax.GradientTransformation:
    r"""Resilient backpropagation, exactly as ``torch.optim.Rprop``.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`p_{t-1}` the stored previous
    gradient and :math:`s_0 = \gamma_0`, elementwise:

    .. math::

        f_t &= \eta_+ \text{ if } g_t p_{t-1} > 0, \quad \eta_- \text{ if } g_t p_{t-1} < 0,
            \quad 1 \text{ otherwise} \\
        s_t &= \min(\max(s_{t-1} f_t, s_{\min}), s_{\max}) \\
        g_t &\leftarrow 0 \text{ where } f_t = \eta_- \\
        \theta_t &= \theta_{t-1} - \operatorname{sign}(g_t) \, s_t, \qquad p_t = g_t

    Args:
      lr: the initial step size :math:`\gamma_0`, a float, a JAX scalar or a schedule (only its
        value at count 0 is used, see below).
      etas: :math:`(\eta_-, \eta_+)`, the factors applied to the step size when the gradient's
        sign flips or stays (``0 < etaminus < 1 < etaplus``).
      step_sizes: :math:`(s_{\min}, s_{\max})`, the clamp of the step size.
      maximize: ascend the objective instead of descending.
      capturable, foreach, differentiable: torch's implementation flags; accepted, no effect
        under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Rprop`` with the same arguments, following ``_single_tensor_rprop``. Torch's
      particulars are reproduced: where the sign flips the step size shrinks *and* the gradient
      is zeroed, so the parameter does not move and the next update sees ``prev = 0`` (factor 1);
      the sign test is on the product ``g * prev`` (an underflow to zero counts as no sign);
      ``lr`` only initialises ``step_size``, so a learning-rate schedule has no effect after the
      first update (torch's schedulers change ``group["lr"]``, which Rprop never reads again);
      the clamp applies the minimum first, so ``step_sizes`` with min > max give max; a NaN
      gradient element has sign 0 (``torch.sign(nan) == 0``): its parameter and step size stay
      put and it is stored in ``prev``, where it again counts as no sign on the next update.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.rprop(lr=0.1)
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> for g in ([1.0, 1.0, 1.0], [1.0, -1.0, 0.0]):
      ...     updates, state = tx.update({"w": jnp.array(g)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"].round(6)  # the flipped and the zero gradient do not move
      Array([-0.22, -0.1 , -0.1 ], dtype=float32)
      >>> state.step_size["w"], state.prev["w"]  # the flip shrank its step and zeroed its grad
      (Array([0.12, 0.05, 0.1 ], dtype=float32), Array([1., 0., 0.], dtype=float32))
    """
    _validation.check_lr(lr)
    _validation.check_rprop_etas(etas)
    if not isinstance(step_sizes, (tuple, list)):
        raise TypeError(f"step_sizes must be a pair (min, max), got {step_sizes!r}")
    if len(step_sizes) != 2:
        raise ValueError(f"step_sizes must be a pair (min, max), got {step_sizes!r}")
    _validation.check_number(step_sizes[0], "step_sizes[0]")
    _validation.check_number(step_sizes[1], "step_sizes[1]")
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes

    def init_fn(params):
        _tree.check_float_params(params)
        lr_0 = _scalars.value_at(lr, _scalars.zero_step())
        return RpropState(
            step=_scalars.zero_step(),
            prev=_common.zeros_like_tree(params),
            step_size=_common.full_like_tree(params, lr_0),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("rprop", grads, state.prev, params)

        def leaf(g, prev, step_size):
            g = -g if maximize else g
            sign = _torch_sign(g * prev)
            factor = jnp.where(sign > 0, etaplus, jnp.where(sign < 0, etaminus, 1)).astype(step_size.dtype)
            step_size = jnp.minimum(jnp.maximum(step_size * factor, step_size_min), step_size_max)
            g = jnp.where(factor == etaminus, jnp.zeros_like(g), g)
            return -_torch_sign(g) * step_size, g, step_size

        updates, prev, step_size = _common.map_leaves(leaf, grads, state.prev, state.step_size)
        return updates, RpropState(_scalars.increment(state.step), prev, step_size)

    return optax.GradientTransformation(init_fn, update_fn)


def _torch_sign(x: jax.Array) -> jax.Array:
    """``torch.sign``: like ``jnp.sign`` but 0 for NaN, so a NaN gradient element neither moves
    its parameter nor changes its step size (``jnp.sign(nan)`` is NaN and would poison both)."""
    return jnp.where(jnp.isnan(x), jnp.zeros_like(x), jnp.sign(x))
