"""Adafactor with torch.optim.Adafactor's exact semantics (not optax's, not the paper's)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common


class AdafactorState(NamedTuple):
    """State of :func:`adafactor`; fields follow torch's state keys.

    Each field but ``step`` is a tree shaped like the parameters. As in torch, a leaf with two
    or more dimensions keeps the factored statistics ``row_var`` (shape ``(..., R, 1)``) and
    ``col_var`` (shape ``(..., 1, C)``) and has ``None`` in ``variance``; a 1-D or 0-D leaf keeps
    a full ``variance`` and has ``None`` in ``row_var`` and ``col_var``.
    """

    step: jax.Array
    row_var: Any
    col_var: Any
    variance: Any


def _l2_norm(x: jax.Array, axis: Any = None, keepdims: bool = False) -> jax.Array:
    """``torch.norm(x, dim)``: the square root of the sum of squares."""
    return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


def _factored(leaf: Any) -> bool:
    return jnp.ndim(leaf) > 1


def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
) -> optax.GradientTransformation:
    r"""Adafactor, exactly as ``torch.optim.Adafactor``.

    With :math:`g_t` the gradient (negated if ``maximize``), :math:`n` the number of entries of
    the parameter and :math:`\beta_t = t^{\text{beta2\_decay}}` (so the first step keeps only
    the new statistics):

    .. math::

        \rho_t &= \min(\gamma_t, 1/\sqrt t), \qquad
            \alpha_t = \max(\epsilon_2, \lVert\theta_{t-1}\rVert_2 / \sqrt n)\, \rho_t \\
        \theta &\leftarrow \theta (1 - \gamma_t \lambda) \\
        R_t &= \operatorname{lerp}(R_{t-1}, \operatorname{mean}_{-1} g_t^2, \beta_t), \quad
        C_t = \operatorname{lerp}(C_{t-1}, \operatorname{mean}_{-2} g_t^2, \beta_t), \quad
        \hat V_t = \frac{R_t C_t}{\max(\operatorname{mean}_{-2} R_t, \epsilon_1)}
            \quad (\ge 2\text{-D}) \\
        \hat V_t &= V_t = \operatorname{lerp}(V_{t-1}, g_t^2, \beta_t) \quad (\text{1-D, 0-D}) \\
        U_t &= g_t / \sqrt{\max(\hat V_t, \epsilon_1^2)}, \qquad
        \theta_t = \theta - \frac{\alpha_t}{\max(1, \operatorname{RMS}(U_t) / d)}\, U_t

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count;
        it caps the relative step size :math:`\rho_t` and scales the weight decay.
      beta2_decay: exponent (``<= 0``) of the second-moment rate :math:`\beta_t = t^{c}`.
      eps: :math:`(\epsilon_1, \epsilon_2)`. :math:`\epsilon_1` floors the variance estimate
        (squared) and the row-statistic mean; ``None`` means ``jnp.finfo(dtype).eps`` of each
        leaf. :math:`\epsilon_2` floors the parameter RMS in :math:`\alpha_t`.
      d: clipping threshold on the RMS of the unscaled update (``>= 1``).
      weight_decay: :math:`\lambda`, decoupled and multiplied by ``lr`` (not by :math:`\rho_t`).
      maximize: ascend the objective instead of descending.
      foreach: torch's implementation flag; accepted, no effect under XLA.

    Returns:
      An optax ``GradientTransformation`` whose updates are deltas for ``optax.apply_updates``.

    PyTorch equivalence:
      ``torch.optim.Adafactor(params, lr, beta2_decay, eps, d, weight_decay, maximize=...)``,
      following ``_single_tensor_adafactor``: the statistics are means of squares computed as
      ``norm(g, dim)**2 / size``, the parameter norm in :math:`\alpha_t` is taken before the
      weight decay, and every tensor of two or more dimensions is factored over its *last two*
      dimensions whatever their sizes. One deviation: with ``eps1=None`` torch takes the machine
      epsilon of the *first* parameter's dtype for the whole group; here each leaf uses its own
      dtype's (the same when all leaves share a dtype).

      *Not the paper's or optax's Adafactor.* Against Shazeer & Stern (2018): :math:`\rho_t`
      is capped by ``lr`` instead of the constant ``1e-2``; :math:`\epsilon_1` clamps the
      variance estimate at :math:`\epsilon_1^2` (and the row mean at :math:`\epsilon_1`) instead
      of being added to :math:`g^2`; weight decay is added; there is no first moment. Against
      ``optax.adafactor``: optax factors only dimensions of at least 128 and picks the two
      largest, adds ``1e-30`` to :math:`g^2`, uses ``decay_rate=0.8`` with a different
      schedule, applies ``learning_rate`` as an extra multiplier, and decays weights by
      ``weight_decay_rate`` times the scaled learning rate.

    Example:
      >>> import jax.numpy as jnp, functional_optreg as fo
      >>> tx = fo.adafactor(lr=0.1)
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> state.row_var["w"].shape, state.col_var["w"].shape, state.variance["b"].shape
      ((2, 1), (1, 3), (3,))
      >>> updates, state = tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, state, params)
      >>> updates["w"], updates["b"]
      (Array([[-0.1, -0.1, -0.1],
             [-0.1, -0.1, -0.1]], dtype=float32), Array([-0.0001, -0.0001, -0.0001], dtype=float32))
    """
    _validation.require(lr, lambda v: 0.0 <= v, f"Learning rate should be >= 0 but is: {lr}", "lr")
    _validation.require(
        beta2_decay, lambda v: 0.0 >= v, f"beta2_decay should be <= 0 but is: {beta2_decay}", "beta2_decay"
    )
    if len(eps) != 2:
        raise ValueError(f"eps must be a pair (eps1, eps2), got {eps!r}")
    eps1, eps2 = eps
    if eps1 is not None:
        _validation.require(eps1, lambda v: 0.0 <= v, f"epsilon1 should be >= 0 but is: {eps1}", "eps1")
    _validation.require(eps2, lambda v: 0.0 <= v, f"epsilon2 should be >= 0 but is: {eps2}", "eps2")
    _validation.require(d, lambda v: 1.0 <= v, f"Clipping threshold d should be >= 1 but is: {d}", "d")
    _validation.require(
        weight_decay, lambda v: 0.0 <= v, f"weight_decay should be >= 0 but is: {weight_decay}", "weight_decay"
    )
    _validation.check_implementation_flags(foreach=foreach)
    use_weight_decay = not _scalars.is_zero(weight_decay)
    float32_lr = _scalars.is_float32_tensor_lr(lr)

    def init_fn(params):
        _tree.check_float_params(params)
        _tree.check_real_params(params, "Adafactor")

        # Built from slices of the parameter, not from shapes, so that under ``jax.jit`` the
        # statistics take the parameter's sharding (a constant would land on one device).
        def row_zeros(p):
            return _common.zeros_like_tree(jnp.asarray(p)[..., :1]) if _factored(p) else None

        def col_zeros(p):
            return _common.zeros_like_tree(jnp.asarray(p)[..., :1, :]) if _factored(p) else None

        return AdafactorState(
            step=_scalars.zero_step(),
            row_var=jax.tree.map(row_zeros, params),
            col_var=jax.tree.map(col_zeros, params),
            variance=jax.tree.map(lambda p: None if _factored(p) else _common.zeros_like_tree(p), params),
        )

    def update_fn(grads, state, params=None):
        _tree.require_params(params, "adafactor", "the relative step size")
        _common.check_update_inputs("adafactor", grads, params, params)
        lr_t = _scalars.value_at(lr, state.step)
        step = _scalars.increment(state.step)
        step_float = step.astype(jnp.result_type(float))
        one_minus_beta2_t = step_float**beta2_decay
        rho_t = jnp.minimum(lr_t, 1 / jnp.sqrt(step_float))
        # torch: rho_t = min(lr, 1 / step**0.5) is the float32 lr tensor itself when it is the
        # smaller, and the scalars computed from it are then float32 tensors.
        rho_is_float32_lr = lr_t <= 1 / jnp.sqrt(step_float)

        def leaf(g, p, row_var, col_var, variance):
            dtype = jnp.result_type(p)
            eps1_leaf = jnp.finfo(dtype).eps if eps1 is None else eps1
            numel = max(jnp.size(p), 1)
            relative_scale = _python_max(eps2, _l2_norm(p) / numel**0.5)
            alpha = relative_scale * rho_t
            if float32_lr:
                alpha32 = relative_scale.astype(jnp.float32) * lr_t
            g = -g if maximize else g
            if _factored(g):
                row_mean = jnp.square(_l2_norm(g, axis=-1, keepdims=True)) / g.shape[-1]
                row_var = _scalars.lerp(row_var, row_mean, one_minus_beta2_t).astype(dtype)
                col_mean = jnp.square(_l2_norm(g, axis=-2, keepdims=True)) / g.shape[-2]
                col_var = _scalars.lerp(col_var, col_mean, one_minus_beta2_t).astype(dtype)
                var_estimate = row_var * col_var
                var_estimate = var_estimate / jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), eps1_leaf)
            else:
                variance = _scalars.lerp(variance, g * g, one_minus_beta2_t).astype(dtype)
                var_estimate = variance
            update = jax.lax.rsqrt(jnp.maximum(var_estimate, eps1_leaf * eps1_leaf)) * g
            denom = _python_max(1.0, _l2_norm(update) / (numel**0.5 * d))
            scale = -alpha / denom
            if float32_lr:
                scale = jnp.where(rho_is_float32_lr, (-alpha32 / denom.astype(jnp.float32)).astype(scale.dtype), scale)
            update = scale * update
            if use_weight_decay and float32_lr:
                # torch: param.mul_(1 - lr * weight_decay), the factor a float32 tensor.
                update = update + (_scalars.decay_factor(lr_t, weight_decay, float32_lr).astype(p.dtype) - 1) * p
            elif use_weight_decay:
                update = update - (lr_t * weight_decay) * p
            return update.astype(dtype), row_var, col_var, variance

        # Not _common.map_leaves: the state trees hold None at the leaves a rule does not keep.
        # jaxlib's PyTreeDef has no stubs, so mypy cannot see its methods.
        treedef: Any = jax.tree.structure(grads)
        trees = (grads, params, state.row_var, state.col_var, state.variance)
        results = [leaf(*leaves) for leaves in zip(*(treedef.flatten_up_to(t) for t in trees))]
        updates, row_var, col_var, variance = (treedef.unflatten([result[i] for result in results]) for i in range(4))
        return updates, AdafactorState(step, row_var, col_var, variance)

    return optax.GradientTransformation(init_fn, update_fn)


def _python_max(first: Any, second: jax.Array) -> jax.Array:
    """Python's ``max(first, second)``, which torch applies to ``norm.item()``: ``second`` only
    where it is larger, so a NaN norm gives ``first`` (``jnp.maximum`` would give NaN)."""
    return jnp.where(second > first, second, jnp.asarray(first, jnp.result_type(second)))
