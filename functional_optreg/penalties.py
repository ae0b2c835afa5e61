r"""L1, L2 and elastic-net regularization, as gradient transforms and as loss terms.

Two equivalent routes (a parity case proves they agree with each other and with torch autograd):

* **Transform route** — chain a penalty before the optimizer; it adds the penalty's gradient to
  the incoming gradient: ``optax.chain(fo.l2_penalty(5e-4), fo.adam(1e-3))``.
* **Loss route** — add :func:`l1_regularizer` / :func:`l2_regularizer` to the loss and
  differentiate the sum.

``mask`` (a bool tree shaped like the params, or a function of the params returning one) selects
the parameters the penalty applies to, as ``optax.masked`` does; masking out biases and
normalization scales reproduces torch param groups with ``weight_decay=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _tree, _validation

Mask = Union[Any, Callable[[Any], Any], None]


class PenaltyState(NamedTuple):
    """Penalties keep no state."""


def _check_weight(name: str, weight: Any) -> None:
    _validation.require(weight, lambda v: v >= 0.0, f"Invalid {name} value: {weight}")


def _penalty_transform(
    gradient_of_penalty: Callable[[jax.Array], jax.Array], name: str, mask: Mask
) -> optax.GradientTransformation:
    def init_fn(params):
        del params
        return PenaltyState()

    def update_fn(updates, state, params=None):
        _tree.require_params(params, name, "the penalty gradient")
        _tree.check_same_structure("params", params, "grads", updates)
        updates = jax.tree.map(lambda g, p: (g + gradient_of_penalty(p)).astype(jnp.result_type(g)), updates, params)
        return updates, state

    transform = optax.GradientTransformation(init_fn, update_fn)
    return transform if mask is None else optax.masked(transform, mask)


def l1_penalty(weight: Any, mask: Mask = None) -> optax.GradientTransformation:
    r"""Add the L1 gradient to the gradient: :math:`g + \lambda\,\mathrm{sign}(\theta)`.

    That is the gradient of :math:`\lambda \sum |\theta|`.

    At :math:`\theta = 0` the added term is 0, the subgradient torch's autograd of ``abs`` uses.

    PyTorch equivalence: ``loss = loss + weight * sum(p.abs().sum() for p in params)`` before
    ``backward()``; torch.optim has no built-in L1.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.l1_penalty(0.1)
      >>> params = {"w": jnp.array([-2.0, 0.0, 3.0])}
      >>> tx.update({"w": jnp.zeros(3)}, tx.init(params), params)[0]["w"]
      Array([-0.1,  0. ,  0.1], dtype=float32)
    """
    _check_weight("l1 weight", weight)
    return _penalty_transform(lambda p: weight * jnp.sign(p), "l1_penalty", mask)


def l2_penalty(weight: Any, mask: Mask = None) -> optax.GradientTransformation:
    r"""Add the gradient of :math:`\frac{\lambda}{2} \sum \theta^2` to the gradient: :math:`g + \lambda\theta`.

    PyTorch equivalence: the coupled ``weight_decay=λ`` of SGD, Adam, RMSprop, ... (not AdamW's
    decoupled decay), or ``loss + weight / 2 * sum(p.pow(2).sum() ...)``.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.l2_penalty(0.5)
      >>> params = {"w": jnp.array([2.0, 0.0])}
      >>> tx.update({"w": jnp.ones(2)}, tx.init(params), params)[0]["w"]
      Array([2., 1.], dtype=float32)
    """
    _check_weight("l2 weight", weight)
    return _penalty_transform(lambda p: weight * p, "l2_penalty", mask)


def elastic_net_penalty(l1: Any, l2: Any, mask: Mask = None) -> optax.GradientTransformation:
    r"""Add the elastic-net gradient to the gradient: :math:`g + \lambda_1\mathrm{sign}(\theta) + \lambda_2\theta`.

    That is the gradient of :math:`\lambda_1 \sum|\theta| + \frac{\lambda_2}{2}\sum\theta^2`.

    PyTorch equivalence: ``loss + l1 * Σ|p| + l2 / 2 * Σ p²`` before ``backward()``.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.elastic_net_penalty(l1=0.1, l2=1.0)
      >>> params = {"w": jnp.array([2.0, -1.0])}
      >>> tx.update({"w": jnp.zeros(2)}, tx.init(params), params)[0]["w"]
      Array([ 2.1, -1.1], dtype=float32)
    """
    _check_weight("l1 weight", l1)
    _check_weight("l2 weight", l2)
    return _penalty_transform(lambda p: l1 * jnp.sign(p) + l2 * p, "elastic_net_penalty", mask)


def _masked_leaves(params: Any, mask: Mask) -> list[jax.Array]:
    leaves = jax.tree.leaves(params)
    if mask is None:
        return leaves
    mask_tree = mask(params) if callable(mask) else mask
    _tree.check_same_structure("params", params, "mask", mask_tree, compare_shapes=False)
    return [leaf for leaf, keep in zip(leaves, jax.tree.leaves(mask_tree)) if keep]


def l1_regularizer(params: Any, weight: Any, mask: Mask = None) -> jax.Array:
    r"""The loss term :math:`\lambda \sum |\theta|` over the (masked) parameters.

    Written as :math:`\lambda \sum \theta\,\mathrm{sign}(\theta)` so that its JAX gradient at
    :math:`\theta = 0` is 0, like torch's autograd of ``abs`` (``jax.grad(jnp.abs)(0.)`` is 1).

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> fo.l1_regularizer({"w": jnp.array([-2.0, 1.0])}, 0.5)
      Array(1.5, dtype=float32)
    """
    _check_weight("l1 weight", weight)
    return weight * sum((jnp.sum(p * jnp.sign(p)) for p in _masked_leaves(params, mask)), 0.0)


def l2_regularizer(params: Any, weight: Any, mask: Mask = None) -> jax.Array:
    r"""The loss term :math:`\frac{\lambda}{2} \sum \theta^2` over the (masked) parameters.

    Its gradient is :math:`\lambda\theta`, torch's coupled ``weight_decay=λ``.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> fo.l2_regularizer({"w": jnp.array([2.0, 1.0])}, 0.5)
      Array(1.25, dtype=float32)
    """
    _check_weight("l2 weight", weight)
    return weight / 2 * sum((jnp.sum(p * p) for p in _masked_leaves(params, mask)), 0.0)
