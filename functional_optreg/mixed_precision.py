r"""Low-precision parameters with full-precision master weights, as in AMP-style training."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _tree


class MixedPrecisionState(NamedTuple):
    """State of :func:`mixed_precision`.

    ``master_params`` holds the full-precision copy of every parameter (the weights torch's
    optimizer steps in AMP-style training); ``inner_state`` is the wrapped optimizer's state,
    built on the master weights, so its moments have the master dtype.
    """

    master_params: Any
    inner_state: Any


def _master_dtype_for(leaf: Any, master_dtype: Any) -> Any:
    """``master_dtype``, or its complex counterpart for a complex leaf; never lower than the leaf's."""
    dtype = jnp.result_type(leaf)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.result_type(master_dtype, jnp.complex64))
    return jnp.promote_types(dtype, master_dtype)


def mixed_precision(
    tx: optax.GradientTransformation, master_dtype: Any = jnp.float32
) -> optax.GradientTransformationExtraArgs:
    r"""Run ``tx`` on full-precision master weights while the model keeps low-precision params.

    With :math:`\theta` the (e.g. ``bfloat16``) parameters, :math:`\Theta` the master weights and
    :math:`\operatorname{cast}` the rounding to the parameters' dtype:

    .. math::

        \Theta_0 &= \theta_0 \text{ (in the master dtype)} \\
        (u_t, s_t) &= \mathrm{tx.update}(g_t \text{ in the master dtype}, s_{t-1}, \Theta_{t-1}),
        \qquad \Theta_t = \Theta_{t-1} + u_t \\
        \text{returned update} &= \operatorname{cast}(\Theta_t) - \theta_{t-1}
        \quad \text{(in the master dtype)}

    Args:
      tx: the optimizer; it sees master-dtype gradients and parameters, so its moments are kept
        in ``master_dtype``.
      master_dtype: the master weights' dtype (``float32``); a leaf already at least this
        precise keeps its own dtype.

    Returns:
      A transform whose state is :class:`MixedPrecisionState`. ``update`` needs ``params``. Its
      updates have the master dtype, so that ``optax.apply_updates(params, updates)`` (which
      adds in the promoted dtype and casts back) gives exactly :math:`\operatorname{cast}
      (\Theta_t)`; the one exception is a weight whose magnitude changes by a factor above
      about :math:`2^{15}` in a single step, where the sum is rounded in the master dtype first
      and may land one low-precision ulp away (the next update, computed from the actual
      params, corrects it; the master weights are exact regardless).

    PyTorch equivalence:
      AMP-style training with float32 master weights: torch keeps ``float32`` parameters, the
      optimizer (``torch.optim.X``) steps them with the gradients cast to ``float32``, and the
      forward pass uses their ``bfloat16``/``float16`` cast. The master weights and moments here
      follow torch's float32 run step for step (``tests/test_mixed_precision.py`` compares
      them), and the returned low-precision params equal ``master.to(bfloat16)``. Without this
      wrapper, an optimizer given ``bfloat16`` params keeps ``bfloat16`` moments, as torch does
      for ``bfloat16`` parameters. Loss scaling (``GradScaler``, needed for ``float16``
      gradients) is separate: combine with :func:`functional_optreg.nonfinite_policy` to skip
      overflowing steps.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.mixed_precision(fo.sgd(lr=1e-3))
      >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(2, jnp.bfloat16)}, state, params)
      >>> optax.apply_updates(params, updates)["w"]  # 0.999 rounds back to 1 in bfloat16 ...
      Array([1, 1], dtype=bfloat16)
      >>> state.master_params["w"]  # ... but the master weights moved
      Array([0.999, 0.999], dtype=float32)
    """

    inner = optax.with_extra_args_support(tx)

    def to_master(tree: Any, like: Any) -> Any:
        return jax.tree.map(lambda x, p: jnp.asarray(x).astype(_master_dtype_for(p, master_dtype)), tree, like)

    def init_fn(params):
        _tree.check_float_params(params)
        master = to_master(params, params)
        return MixedPrecisionState(master_params=master, inner_state=inner.init(master))

    def update_fn(updates, state, params=None, **extra_args):
        _tree.require_params(params, "mixed_precision", "the updates to the low-precision params")
        _tree.check_same_structure("the master params", state.master_params, "grads", updates)
        _tree.check_same_structure("grads", updates, "params", params)
        master = state.master_params
        inner_updates, inner_state = inner.update(to_master(updates, params), state.inner_state, master, **extra_args)
        master = optax.apply_updates(master, inner_updates)
        updates = jax.tree.map(
            lambda m, p: m.astype(jnp.result_type(p)).astype(m.dtype) - jnp.asarray(p).astype(m.dtype),
            master,
            params,
        )
        return updates, MixedPrecisionState(master_params=master, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
