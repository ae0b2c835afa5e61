"""Averaged SGD with torch.optim.ASGD's exact semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class ASGDState(NamedTuple):
    """State of :func:`asgd`; fields follow torch's state keys.

    ``eta`` (the step size of the next update) and ``mu`` (the averaging weight of the next
    update) are scalars: torch keeps one copy per parameter, always equal. Both are float32 whatever
    the parameters' dtype, because torch's copies are float32 tensors (``_get_scalar_dtype()``
    under torch's default dtype) and their rounding is part of torch's trajectory. ``ax`` holds
    the averaged parameters (see :func:`asgd_averaged_params`).
    """

    step: jax.Array
    eta: jax.Array
    mu: jax.Array
    ax: Any


def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    weight_decay: Any = 0.0,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> optax.GradientTransformation:
    r"""Averaged stochastic gradient descent, exactly as ``torch.optim.ASGD``.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`\eta_1 = \gamma_0`,
    :math:`\mu_1 = 1`:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        \theta_t &= \theta_{t-1} (1 - \lambda_\eta \eta_t) - \eta_t g_t \\
        \bar\theta_t &= \theta_t \text{ if } \mu_t = 1, \text{ else }
            \bar\theta_{t-1} + \mu_t (\theta_t - \bar\theta_{t-1}) \\
        \eta_{t+1} &= \frac{\gamma_{t-1}}{(1 + \lambda_\eta \gamma_{t-1} t)^\alpha}, \qquad
            \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

    where :math:`\gamma_{t-1}` is the learning rate of update :math:`t` (0-based schedule index
    :math:`t - 1`), :math:`\lambda_\eta` is ``lambd`` and :math:`\lambda` is ``weight_decay``.

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
        It is read once per update to compute the *next* step size, as torch does.
      lambd: decay term :math:`\lambda_\eta` (shrinks the parameters and the step size).
      alpha: power :math:`\alpha` of the step-size decay.
      t0: the step after which averaging starts (before it, the average is the iterate itself).
      weight_decay: coupled L2 weight decay :math:`\lambda` (added to the gradient).
      foreach: torch's implementation flag; accepted, no effect under XLA.
      maximize: ascend the objective instead of descending.
      differentiable, capturable: torch's implementation flags; accepted, no effect under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``;
      the averaged parameters are in the state, read them with :func:`asgd_averaged_params`.

    PyTorch equivalence:
      ``torch.optim.ASGD`` with the same arguments (same positional order: ``foreach`` is not
      keyword-only), following ``_single_tensor_asgd``. Torch's particulars are reproduced: the
      step size used by update :math:`t` was computed at the end of update :math:`t - 1` from that
      update's learning rate, so a learning-rate schedule acts one update late (and the first
      update uses the learning rate at initialisation); ``eta`` and ``mu`` are rounded to float32
      (torch's state dtype); ``mu`` is 1 up to update :math:`t_0 + 2`, so for an integer ``t0``
      the average is the iterate itself until then and afterwards the running mean of the
      iterates from update :math:`t_0 + 2` on.
      torch's ``capturable=True`` path computes the same quantities in another order; it is not
      mirrored.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.asgd(lr=0.1, lambd=0.0, t0=0)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = tx.init(params)
      >>> for g in (1.0, 2.0, 3.0):
      ...     updates, state = tx.update({"w": jnp.full(1, g)}, state, params)
      ...     params = {"w": params["w"] + updates["w"]}
      >>> params["w"], fo.asgd_averaged_params(state)["w"].round(6)  # mean of iterates 2 and 3
      (Array([-0.6], dtype=float32), Array([-0.45], dtype=float32))
    """
    _validation.check_lr(lr)
    _validation.check_weight_decay(weight_decay)
    for value, name in ((lambd, "lambd"), (alpha, "alpha"), (t0, "t0")):
        _validation.check_number(value, name)
    _validation.check_implementation_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
    use_weight_decay = not _scalars.is_zero(weight_decay)
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        return ASGDState(
            step=_scalars.zero_step(),
            eta=jnp.asarray(_scalars.value_at(lr, _scalars.zero_step()), jnp.float32),
            mu=jnp.ones([], jnp.float32),
            ax=_common.zeros_like_tree(params),
        )

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("asgd", grads, state.ax, params)
        _tree.require_params(params, "asgd", "the parameter average and the lambd decay")
        lr_t = _scalars.value_at(lr, state.step)
        step = _scalars.increment(state.step)
        averaging = state.mu != 1.0

        def leaf(g, p, ax):
            g = -g if maximize else g
            if use_weight_decay:
                g = _common.add_weight_decay(g, p, weight_decay)
            # torch reads eta and mu as Python floats: exact widenings of the float32 state.
            eta = state.eta.astype(p.dtype)
            new_p = p * (1.0 - lambd * eta) + (-eta) * g
            ax = jnp.where(averaging, ax + (new_p - ax) * state.mu.astype(p.dtype), new_p)
            return _common.delta(new_p, p), ax

        updates, ax = _common.map_leaves(leaf, grads, params, state.ax)
        t = jnp.asarray(step, jnp.result_type(float))
        if float32_lr:
            # torch: lr / ((1 + lambd * lr * step) ** alpha) in float32 tensor arithmetic; its
            # float32 pow is correctly rounded, as the double-precision pow rounded to float32.
            base = 1.0 + _scalars.as_float32_if(lambd, float32_lr) * lr_t * t.astype(jnp.float32)
            eta = lr_t / jnp.power(base.astype(jnp.result_type(float)), alpha).astype(jnp.float32)
        else:
            eta = lr_t / jnp.power(1.0 + lambd * lr_t * t, alpha)
        mu = 1.0 / jnp.maximum(1.0, t - t0)
        return updates, ASGDState(step, eta.astype(jnp.float32), mu.astype(jnp.float32), ax)

    return optax.GradientTransformation(init_fn, update_fn)


def asgd_averaged_params(state: Any) -> Any:
    r"""The averaged parameters :math:`\bar\theta` that ASGD users evaluate.

    Args:
      state: the state of :func:`asgd`, or any optimizer state that contains exactly one
        :class:`ASGDState` (e.g. the state of an ``optax.chain`` holding ``asgd``).

    Returns:
      The ``ax`` tree of the state: torch's ``optimizer.state[p]["ax"]`` for each parameter.
      Up to update :math:`t_0 + 2` it equals the current parameters, afterwards it is the
      running average of the iterates (see :func:`asgd`); before the first update it is zeros,
      as in torch.

    Raises:
      ValueError: when ``state`` holds no ASGD state or more than one.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.asgd()
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> fo.asgd_averaged_params(state)["w"]
      Array([0., 0.], dtype=float32)
    """
    if isinstance(state, ASGDState):
        return state.ax
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda node: isinstance(node, ASGDState))
        if isinstance(node, ASGDState)
    ]
    if len(found) != 1:
        raise ValueError(f"asgd_averaged_params needs a state holding exactly one ASGDState, found {len(found)}.")
    return found[0].ax
