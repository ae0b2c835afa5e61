r"""Hypergradients: differentiate a loss through K unrolled optimizer steps.

Every transform in this library is a pure function of ``(grads, state, params)`` and of its
hyperparameters, so running K updates inside a function and calling ``jax.grad`` on it gives the
*hypergradient*: the derivative of a validation loss after K steps with respect to the learning
rate, the weight decay, the momentum, ... and the initial parameters. In torch the same needs
``differentiable=True``, non-leaf parameter copies, ``create_graph=True`` and tensor
hyperparameters; here the hyperparameters are JAX scalars passed to the optimizer's factory
inside the differentiated function.

With :math:`\theta_0` the initial parameters, :math:`h` the hyperparameters, :math:`U_h` the
optimizer update (with its state :math:`s`) and :math:`b_t` the batch of step :math:`t`:

.. math::

    g_t &= \nabla_\theta L_{\text{train}}(\theta_t, b_t), \qquad
    (\theta_{t+1}, s_{t+1}) = U_h(g_t, s_t, \theta_t), \qquad t = 0, \dots, K-1 \\
    F(h, \theta_0) &= L_{\text{val}}(\theta_K), \qquad
    \frac{\partial F}{\partial h} = \nabla L_{\text{val}}(\theta_K)^\top
        \frac{d\theta_K}{dh}

For plain SGD, :math:`\theta_{t+1} = \theta_t - \gamma g_t`, the tangent obeys
:math:`\frac{d\theta_{t+1}}{d\gamma} = (I - \gamma H_t)\frac{d\theta_t}{d\gamma} - g_t` with
:math:`H_t` the Hessian of the training loss at :math:`\theta_t`: the hypergradient contains
second derivatives of the training loss, which reverse-mode autodiff through the inner
``jax.grad`` provides (as Hessian-vector products; no Hessian is formed).

The unrolled loop is a ``jax.lax.scan``, so it compiles once whatever K is; reverse mode keeps
each step's intermediates (memory linear in K), or recomputes them with ``remat=True``.

Hyperparameters that can be traced: every float hyperparameter of ``sgd``, ``adam``,
``adamw``, ``rmsprop``, ``adagrad``, ``adadelta``, ``adamax``, ``nadam``, ``radam``, ``asgd``
and ``rprop``. Exceptions and limits:

* Boolean switches (``nesterov``, ``amsgrad``, ``centered``, ``maximize``, ...) are structure,
  not values: they select the computation and cannot be traced.
* ASGD keeps ``eta`` and ``mu`` in float32 and NAdam keeps ``mu_product`` in float32 (torch's
  state dtypes), so derivatives that flow through them (ASGD: ``lr``, ``lambd``, ``alpha``;
  NAdam: ``betas[0]``, ``momentum_decay``) are only float32-accurate, even with x64. ASGD's
  ``t0`` only moves the average ``ax``: the parameters do not depend on it.
* Rprop's step is ``sign(g) · step_size``: the derivative with respect to the initial
  parameters ignores the sign (zero almost everywhere), and the derivative with respect to
  ``lr``, the etas and the step-size clamp is piecewise, as the update is.
* A hyperparameter at a non-smooth point gets the one-sided derivative JAX picks (e.g. RAdam
  exactly at the ``rho_t > 5`` switch, Adamax's maximum at a tie, Rprop's clamp).
* A traced ``momentum`` always keeps a momentum buffer (whether it is zero is unknown at
  construction). At exactly ``momentum == 0`` this is torch's ``momentum → 0⁺`` limit, which for
  SGD with ``dampening != 0`` scales steps after the first by ``1 − dampening``.

PyTorch equivalence:
  ``torch.optim.X(..., differentiable=True)`` with tensor hyperparameters gives the same
  derivatives (float64, to ~1e-15) where its graph is intact: SGD without momentum (lr,
  weight_decay, initial parameters), Adam and AdamW (lr, weight_decay, initial parameters),
  RAdam (lr, initial parameters), RMSprop, Adagrad and Adadelta (initial parameters). Torch
  differs elsewhere (torch 2.13, measured in ``tests/test_hypergrad_torch.py``):

  * SGD with momentum stores the first buffer as ``grad.detach().clone()``: the derivatives
    with respect to ``weight_decay`` and the initial parameters lose the first step's
    contribution through the buffer (8 to 45 % off after 10 steps in our test); ``lr`` is
    unaffected, the first gradient does not depend on it. Without nesterov, a tensor ``lr``
    fails over several steps (the buffer is modified in place after being saved).
  * Adam's differentiable path computes ``1 − beta**step`` from the ``step`` tensor, whose
    dtype is torch's default dtype: float32 by default, so float64 hypergradients are off by
    1e-6 to 1e-4 unless ``torch.set_default_dtype(torch.float64)``.
  * A tensor ``lr`` is rejected (TypeError) by RMSprop, Adagrad, Adadelta, Adamax and Rprop,
    and a tensor ``weight_decay`` by RMSprop; ASGD reads its step size with ``.item()``, so
    ``lr`` is not in the graph; NAdam with a tensor ``lr``, Adam with ``amsgrad``, centered
    RMSprop, Adamax and Rprop fail over several steps (state modified in place after being
    saved for the backward pass).

  Every one of these has a true derivative here, checked against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from functional_optreg._types import Params


def _batch_at(batches: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: jax.lax.dynamic_index_in_dim(leaf, index, keepdims=False), batches)


def _num_batches(batches: Any) -> int:
    """The common leading (step) axis of the leaves of ``batches``; scalars have none."""
    shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(batches)]
    sizes = {shape[0] if shape else "none" for shape in shapes}
    if len(sizes) != 1 or "none" in sizes:
        raise ValueError(
            "unroll: every leaf of `batches` must have the same leading (step) axis, got leading "
            f"sizes {sorted(map(str, sizes))}."
        )
    return int(shapes[0][0])


def unroll(
    tx: optax.GradientTransformation,
    params: Params,
    loss_fn: Callable[..., jax.Array],
    batches: Any = None,
    *,
    steps: int | None = None,
    remat: bool = False,
) -> tuple[Params, optax.OptState, jax.Array]:
    r"""Run ``steps`` updates of ``tx`` from ``params`` with ``jax.lax.scan``; differentiable.

    .. math::

        (\theta_{t+1}, s_{t+1}) = U(\nabla_\theta L(\theta_t, b_{t \bmod n}), s_t, \theta_t),
        \qquad s_0 = \text{tx.init}(\theta_0)

    Args:
      tx: the optimizer; build it inside the differentiated function from traced
        hyperparameters to differentiate with respect to them.
      params: the initial parameters :math:`\theta_0` (a pytree of float arrays).
      loss_fn: the training loss, ``loss_fn(params, batch)``, or ``loss_fn(params)`` when
        ``batches`` is ``None`` (full-batch training).
      batches: a pytree whose leaves all have a leading axis of length ``n``; step ``t`` uses
        slice ``t % n``. ``None`` for a loss without batches.
      steps: the number of updates K; defaults to ``n``. Required when ``batches`` is ``None``.
      remat: recompute each step's intermediates in the backward pass (``jax.checkpoint``)
        instead of storing them: less memory for long unrolls, about one more forward pass.

    Returns:
      ``(params, opt_state, losses)``: the parameters and optimizer state after K updates and
      the K training losses, each evaluated before its update.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> params, _, losses = fo.unroll(fo.sgd(lr=0.25), jnp.array(1.0), lambda w: w**2, steps=3)
      >>> print(params, losses)  # w_t = 2^-t
      0.125 [1.     0.25   0.0625]
    """
    if batches is None:
        if steps is None:
            raise ValueError("unroll: give `steps` when `batches` is None.")
        value_and_grad = jax.value_and_grad(lambda p, _: loss_fn(p))
        num_batches = 1
    else:
        value_and_grad = jax.value_and_grad(loss_fn)
        num_batches = _num_batches(batches)
        steps = num_batches if steps is None else steps
    if steps < 0:
        raise ValueError(f"unroll: `steps` (={steps}) must be >= 0.")

    def step(carry, t):
        params, state = carry
        batch = None if batches is None else _batch_at(batches, t % num_batches)
        loss, grads = value_and_grad(params, batch)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    if remat:
        step = jax.checkpoint(step)
    (params, state), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return params, state, losses


def unrolled_loss(
    hyperparams: Any,
    params: Params,
    *,
    make_tx: Callable[[Any], optax.GradientTransformation],
    loss_fn: Callable[..., jax.Array],
    val_loss_fn: Callable[[Params], jax.Array],
    batches: Any = None,
    steps: int | None = None,
    remat: bool = False,
) -> jax.Array:
    r"""The validation loss after K unrolled updates, as a function of hyperparameters and
    initial parameters: :math:`F(h, \theta_0) = L_{\text{val}}(\theta_K)`.

    The two differentiable inputs come first, so the hypergradient is one line::

        d_hyper, d_params = jax.grad(fo.unrolled_loss, argnums=(0, 1))(h, params, **config)

    Args:
      hyperparams: any pytree of JAX scalars (e.g. ``{"lr": 0.1, "weight_decay": 1e-3}``),
        handed to ``make_tx``.
      params: the initial parameters :math:`\theta_0`.
      make_tx: ``make_tx(hyperparams)`` builds the optimizer, e.g.
        ``lambda h: fo.sgd(lr=h["lr"], momentum=0.9)``.
      loss_fn, batches, steps, remat: as in :func:`unroll`.
      val_loss_fn: ``val_loss_fn(params)``, the loss evaluated after the last update.

    Returns:
      The scalar :math:`L_{\text{val}}(\theta_K)`.

    PyTorch equivalence:
      torch needs ``differentiable=True``, parameters that are non-leaf copies, the gradient
      taken with ``create_graph=True`` at every step and hyperparameters as tensors that require
      grad; see the module docstring for the places where torch's graph is cut.

    Example:
      Gradient descent with step :math:`\gamma` on :math:`w^2` from :math:`w_0 = 1`: after two
      steps :math:`w_2 = (1 - 2\gamma)^2`, and :math:`d w_2^2 / d\gamma = -8 (1 - 2\gamma)^3`,
      which is :math:`-1` at :math:`\gamma = 0.25`.

      >>> import jax, jax.numpy as jnp, functional_optreg as fo
      >>> config = dict(make_tx=lambda lr: fo.sgd(lr=lr), loss_fn=lambda w: w**2,
      ...               val_loss_fn=lambda w: w**2, steps=2)
      >>> jax.grad(fo.unrolled_loss)(jnp.array(0.25), jnp.array(1.0), **config)
      Array(-1., dtype=float32, weak_type=True)
    """
    tx = make_tx(hyperparams)
    final_params, _, _ = unroll(tx, params, loss_fn, batches, steps=steps, remat=remat)
    return val_loss_fn(final_params)
