r"""Gradient accumulation with torch's arithmetic: a sum of scaled micro-batch gradients.

Torch accumulates by calling ``(loss / k).backward()`` on ``k`` micro-batches before one
``optimizer.step()`` (nanoGPT, the HuggingFace Trainer): ``param.grad`` is assigned by the first
backward and added to by the others, so the optimizer sees

.. math::

    G = \Big(\big(\nabla \tfrac{\ell_1}{k} + \nabla \tfrac{\ell_2}{k}\big) + \dots\Big)
        + \nabla \tfrac{\ell_k}{k}

with the scale :math:`1/k` applied inside each backward pass, not to the sum.
``optax.MultiSteps`` keeps a running mean (:math:`a \leftarrow a + (g - a)/(i+1)`) instead, which
equals :math:`G` only up to rounding. :func:`accumulate_gradients` sums exactly as torch does; give
it the gradients of the *scaled* loss (``jax.grad(lambda p: loss(p, batch) / k)``), as torch does.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars


class AccumulationState(NamedTuple):
    """State of :func:`accumulate_gradients`.

    ``micro_step`` counts the micro-batches of the current accumulation (``0 .. k-1``);
    ``grads`` is their running sum (torch's ``param.grad`` between backward calls and the step);
    ``inner_state`` the wrapped transform's state, advanced once per ``k`` micro-batches.
    """

    micro_step: jax.Array
    grads: Any
    inner_state: Any


def accumulate_gradients(inner: optax.GradientTransformation, every_k: int) -> optax.GradientTransformationExtraArgs:
    r"""Apply ``inner`` once per ``every_k`` micro-batches, to the sum of their gradients.

    Each update adds its gradients to the sum (the first assigns, as ``param.grad`` is ``None``
    after ``zero_grad``); the ``every_k``-th passes the sum to ``inner`` (any optimizer, or a
    chain with clipping first, as nanoGPT clips after accumulating) and resets it. The other
    updates are zeros and leave ``inner``'s state unchanged:

    .. math::

        G \leftarrow G + g_i, \qquad
        u_i = \begin{cases} \text{inner}(G) & i \equiv k-1 \pmod k \\ 0 & \text{else} \end{cases}

    Args:
      inner: the transform applied to the accumulated gradients.
      every_k: micro-batches per optimizer step (torch's ``gradient_accumulation_steps``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (extra arguments such as ``value=`` go to
      ``inner`` on the stepping update) with :class:`AccumulationState`.

    Raises:
      ValueError: if ``every_k`` is not a positive integer.

    PyTorch equivalence:
      ``for micro in range(k): (loss(micro) / k).backward()`` then ``optimizer.step();
      optimizer.zero_grad()``, with ``jax.grad(lambda p: loss(p, micro) / k)`` as the gradient
      fed here: the same scaled gradients summed in the same order, hence the same ``G``.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.accumulate_gradients(fo.sgd(lr=0.1), every_k=2)
      >>> params = jnp.ones(2)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(0.5 * jnp.ones(2), state, params)  # (loss_1 / 2) gradient
      >>> updates
      Array([0., 0.], dtype=float32)
      >>> updates, state = tx.update(1.5 * jnp.ones(2), state, params)  # step on 0.5 + 1.5
      >>> updates
      Array([-0.2, -0.2], dtype=float32)
    """
    if isinstance(every_k, bool) or not isinstance(every_k, numbers.Integral) or every_k < 1:
        raise ValueError(f"every_k must be a positive integer, got {every_k!r}")
    every_k = int(every_k)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return AccumulationState(
            micro_step=_scalars.zero_step(),
            grads=jax.tree.map(jnp.zeros_like, params),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        first = state.micro_step == 0
        summed = jax.tree.map(lambda acc, g: jnp.where(first, g, acc + g).astype(acc.dtype), state.grads, updates)

        def step(_):
            stepped, inner_state = inner.update(summed, state.inner_state, params, **extra_args)
            return stepped, inner_state, jax.tree.map(jnp.zeros_like, summed)

        def hold(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner_state, summed

        stepping = state.micro_step == every_k - 1
        new_updates, inner_state, grads = jax.lax.cond(stepping, step, hold, None)
        micro_step = jnp.where(stepping, 0, state.micro_step + 1).astype(state.micro_step.dtype)
        return new_updates, AccumulationState(micro_step=micro_step, grads=grads, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
