"""Muon (momentum orthogonalized by Newton–Schulz) with torch.optim.Muon's exact semantics."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_optreg import _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _common

_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class MuonState(NamedTuple):
    """State of :func:`muon`: torch's ``momentum_buffer`` and a ``step`` count for schedules."""

    step: jax.Array
    momentum_buffer: Any


def _bf16_matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    """A bfloat16 product accumulated in float32 (exact products), as torch's CPU kernels do."""
    return jnp.matmul(x, y, preferred_element_type=jnp.float32)


def newton_schulz(
    matrix: jax.Array,
    ns_coefficients: tuple[Any, Any, Any] = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    eps: Any = 1e-7,
) -> jax.Array:
    r"""Torch's quintic Newton–Schulz orthogonalization of a 2-D array, in bfloat16.

    With :math:`X_0 = M / \max(\lVert M\rVert_F, \epsilon)` (transposed first when :math:`M` is
    tall) and :math:`A_k = X_k X_k^\top`:

    .. math::

        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

    Every intermediate is rounded to bfloat16 where torch's CPU kernels round it: the input
    (through float32, as torch's double-to-bfloat16 conversion does), the norm, the normalized
    input (a true division), each product :math:`A_k`, and each ``addmm`` result, for which
    torch accumulates the products in float32, rounds :math:`c A_k^2` to float32 and adds
    :math:`b A_k` in one fused multiply-add before rounding to bfloat16. The fused
    multiply-adds come from XLA's contraction of a product feeding a sum, so they are torch's
    under ``jit``; run op by op, the last bit can differ. Returns a bfloat16 array shaped like
    ``matrix``.
    """
    a, b, c = ns_coefficients
    x = matrix.astype(jnp.float32).astype(jnp.bfloat16)
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = x.T
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x32 * x32)).astype(jnp.bfloat16).astype(jnp.float32)
    norm = jnp.maximum(norm, eps).astype(jnp.bfloat16).astype(jnp.float32)
    # An elementwise divisor: XLA rewrites division by a broadcast scalar into multiplication by
    # its reciprocal, which rounds differently from torch's division.
    x = (x32 / jnp.where(x32 == x32, norm, 1.0)).astype(jnp.bfloat16)

    def iteration(_, x):
        gram = _bf16_matmul(x, x.T).astype(jnp.bfloat16)
        gram_squared = _bf16_matmul(gram, gram)
        # Torch's addmm rounds c·A², then adds b·A in one fused multiply-add; the select keeps
        # XLA from fusing c·A² instead (XLA contracts a product feeding an addition into an FMA).
        scaled = jnp.where(gram_squared == gram_squared, c * gram_squared, gram_squared)
        gram_update = (b * gram.astype(jnp.float32) + scaled).astype(jnp.bfloat16)
        return (a * x.astype(jnp.float32) + _bf16_matmul(gram_update, x)).astype(jnp.bfloat16)

    # A loop rather than unrolling, so that ns_steps may also be a traced hyperparameter.
    x = jax.lax.fori_loop(0, jnp.asarray(ns_steps, jnp.int32), iteration, x)
    return x.T if tall else x


def _lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """Torch's ``_adjust_lr`` factor for a parameter of ``shape`` (a Python float, as in torch)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def _check_2d(params: Any) -> None:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in flat:
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{tuple(jnp.shape(leaf))} (at {jax.tree_util.keystr(path) or '<root>'})"
            )


def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: Any = 0.1,
    momentum: Any = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = (3.4445, -4.775, 2.0315),
    eps: Any = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> optax.GradientTransformation:
    r"""Muon, exactly as ``torch.optim.Muon``: momentum orthogonalized by Newton–Schulz.

    For each 2-D parameter of shape :math:`(A, B)`, with :math:`g_t` the gradient:

    .. math::

        B_t &= \operatorname{lerp}(B_{t-1}, g_t, 1 - \mu), \qquad
        \tilde B_t = \operatorname{lerp}(g_t, B_t, \mu) \text{ if nesterov, else } B_t \\
        O_t &= \operatorname{NS}^{(a,b,c)}_k(\tilde B_t; \epsilon) \quad \text{(in bfloat16)} \\
        \theta_t &= \theta_{t-1}(1 - \gamma_t \lambda) - \gamma_t r_{A,B}\, O_t, \qquad
        r_{A,B} = \sqrt{\max(1, A/B)} \text{ or } 0.2\sqrt{\max(A, B)}

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the update count.
      weight_decay: :math:`\lambda`, decoupled: :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`
        with the *unadjusted* learning rate.
      momentum: :math:`\mu`; may be a schedule.
      nesterov: orthogonalize :math:`g + \mu(B - g)` instead of the buffer.
      ns_coefficients: :math:`(a, b, c)` of the quintic iteration (see :func:`newton_schulz`).
      eps: floor of the Frobenius norm that normalizes the input of the iteration.
      ns_steps: number of Newton–Schulz iterations :math:`k` (below 100).
      adjust_lr_fn: ``None`` or ``"original"`` (:math:`r = \sqrt{\max(1, A/B)}`, Keller Jordan's)
        or ``"match_rms_adamw"`` (:math:`r = 0.2\sqrt{\max(A, B)}`, Moonshot's).

    Returns:
      An optax ``GradientTransformation``. Every parameter leaf must be 2-D: route the others
      (biases, norms, embeddings, convolution kernels) to another optimizer with
      ``optax.multi_transform`` (see ``examples/muon_with_adamw.py``).

    PyTorch equivalence:
      ``torch.optim.Muon(params, lr, weight_decay, momentum, nesterov, ns_coefficients, eps,
      ns_steps, adjust_lr_fn)``, following ``_single_tensor_muon``. Torch runs the
      Newton–Schulz iteration in bfloat16 whatever the parameter dtype, so this does too:
      :math:`O_t` carries bfloat16 precision (about 3 significant digits) even for float64
      parameters, while the momentum, the decay and the final update stay in the parameter
      dtype. Parity is exact (float64 and float32 alike) whenever every bfloat16 rounding
      falls the same way on both sides, which needs the same float32 accumulation order inside
      the matrix products; neither library specifies it. For matrices with both sides at most
      8 (sums of at most 8 products) we found no difference in thousands of trials, and the
      parity cases and unit tests check the iteration bit for bit there. For larger matrices an accumulated
      float32 value occasionally lands on the other side of a bfloat16 rounding boundary
      (measured: 3 in 200 random 16×16 inputs, 26 in 200 at 64×32 on torch's AVX-512 CPU
      kernels), moving one element of :math:`O_t` by a bfloat16 ulp (relative
      :math:`2^{-8}`); over 60 steps on 64×32 and 16×16 matrices the parameters then differ
      from torch's by a relative 7e-5 (lr 1e-3) to 2e-3 (lr 0.02), in float64 as in float32.
      That is the precision torch itself gives the update, not a different formula.
      Torch checks the shapes when it is constructed and the iteration settings when it steps;
      here ``init`` rejects a non-2-D leaf naming its path and the factory checks ``ns_steps``
      and ``ns_coefficients`` with torch's messages.

    Example:
      >>> import jax.numpy as jnp, optax, functional_optreg as fo
      >>> tx = fo.muon(lr=0.1, weight_decay=0.0)
      >>> params = {"w": jnp.zeros((2, 2))}
      >>> updates, state = tx.update({"w": 3 * jnp.eye(2)}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"]  # 5 NS steps take 3·I to 1.125·I
      Array([[-0.1125,  0.    ],
             [ 0.    , -0.1125]], dtype=float32)
    """
    _validation.require(lr, lambda v: 0.0 <= v, f"Learning rate should be >= 0 but is: {lr}", "lr")
    _validation.require(momentum, lambda v: 0.0 <= v, f"momentum should be >= 0 but is: {momentum}", "momentum")
    _validation.require(
        weight_decay, lambda v: 0.0 <= v, f"weight decay should be >= 0 but is: {weight_decay}", "weight_decay"
    )
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    _validation.require(
        ns_steps, lambda v: v < 100, "Number of steps must be less than 100 for computational efficiency", "ns_steps"
    )
    _validation.check_number(eps, "eps")
    if not isinstance(ns_coefficients, (tuple, list)):
        raise TypeError(f"ns_coefficients must be a tuple of 3 numbers, got {ns_coefficients!r}")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for index, coefficient in enumerate(ns_coefficients):
        _validation.check_number(coefficient, f"ns_coefficients[{index}]")

    def init_fn(params):
        _tree.check_float_params(params)
        _tree.check_real_params(params, "Muon")
        _check_2d(params)
        return MuonState(step=_scalars.zero_step(), momentum_buffer=_common.zeros_like_tree(params))

    def update_fn(grads, state, params=None):
        _common.check_update_inputs("muon", grads, state.momentum_buffer, params)
        use_weight_decay = _common.weight_decay_in_use(weight_decay, params, "muon")
        lr_t = _scalars.value_at(lr, state.step)
        momentum_t = _scalars.value_at(momentum, state.step)

        def leaf(g, p, buf):
            dtype = jnp.result_type(g)
            # Torch's lerp casts its scalar weight to the tensor's dtype before using it.
            buf = _scalars.lerp(buf, g, jnp.asarray(1 - momentum_t, dtype))
            direction = _scalars.lerp(g, buf, jnp.asarray(momentum_t, dtype)) if nesterov else buf
            ortho = newton_schulz(direction, ns_coefficients, ns_steps, eps).astype(dtype)
            step = -(lr_t * _lr_ratio(adjust_lr_fn, g.shape)) * ortho
            if use_weight_decay:
                # Decay, then step; as a delta, so that p + delta is torch's new parameter.
                decayed = p * _scalars.decay_factor(lr_t, weight_decay, _scalars.is_float32_tensor_lr(lr))
                decayed = jnp.where(p == p, decayed, p)
                return _common.delta(decayed + step, p), buf
            return step, buf

        updates, buffers = _common.map_leaves(leaf, grads, params, state.momentum_buffer)
        return updates, MuonState(_scalars.increment(state.step), buffers)

    return optax.GradientTransformation(init_fn, update_fn)
