"""L-BFGS with torch.optim.LBFGS's exact semantics, as a jittable solver.

Design: torch's ``LBFGS.step(closure)`` re-evaluates the loss many times per step (once per inner
iteration, more in the line search), so it cannot be a plain ``GradientTransformation``, whose
``update`` sees one gradient. :func:`lbfgs` therefore returns an :class:`LBFGSSolver` with

* ``init(params) -> LBFGSState``, and
* ``step(loss_fn, params, state, *args) -> (params, state, loss)``, one call doing what one
  ``optimizer.step(closure)`` does: up to ``max_iter`` inner iterations inside a
  ``lax.while_loop``, with torch's stopping rules, evaluation counts and line search. ``loss`` is
  the loss at the incoming parameters (torch returns the closure's first value).

``step`` is pure and traceable: ``jax.jit(solver.step, static_argnums=0)`` compiles it once per
loss function (pass changing data, e.g. a batch, through ``*args``). Parameters may be any pytree;
they are flattened with ``jax.flatten_util.ravel_pytree``, as torch concatenates its tensors. For
optax pipelines, ``solver.as_gradient_transformation()`` wraps ``step`` as an
``optax.GradientTransformationExtraArgs`` that takes the loss as the ``value_fn`` extra argument.

The state is torch's state dict as arrays: the history lists ``old_dirs`` / ``old_stps`` / ``ro``
become ring buffers of ``history_size`` rows, with ``num_old`` valid rows starting at row
``old_start`` (torch's ``pop(0)`` + ``append`` is "overwrite the oldest row").

What is guaranteed, and how a trajectory is judged (docs/parity.md, "Chaotic procedures"):

* **Per step, exactly.** Started from torch's parameters and state, one ``step`` matches one
  ``optimizer.step(closure)``: float64 parameters and loss within 1e-12 relative, with the same
  ``func_evals`` and ``n_iter``. ``parity/lbfgs_harness.py`` checks this after every step of
  every case ("synced" mode).
* **Free-running, against torch's own sensitivity.** One step is up to ``max_iter`` iterations,
  each with data-dependent branches (the line search accepts or rejects a trial step, the
  stopping rules compare changes against tolerances). Two correct implementations round
  differently (XLA and ATen sum in other orders), and one rounding can flip a branch, after which
  they follow different but equally valid paths. Torch does this to itself: with every starting
  value moved by one ulp, its own 60-iteration trajectories part by ~1e-9 on a logistic
  regression in float64 and by more than ``assert_close`` allows within a step or two in float32.
  So a carried-over trajectory is judged against torch's floor, measured in the same run on the
  same machine: where torch misses the contract against itself under rounding-level
  perturbations, ours may differ by up to 100 times torch's own deviation
  (``parity/chaos.py``); where torch keeps the contract, so must we.

Porting an L-BFGS loop, e.g. pytorch/examples' time_sequence_prediction (``LBFGS(lr=0.8)`` with a
closure, a sequence model), you may see the two runs part after a few steps, by 1e-1 or more
over 30 steps in float32: that is the line search's chaos, not a porting error. What to check instead: (1) one
step from torch's state — convert the live optimizer with ``fo.from_torch`` and compare the next
``step``; (2) torch against itself from a start moved by one ulp
(``np.nextafter(x, ±inf)``) — if torch's own runs part as far as ours, the port is right; (3) the
loss curves' shape and the final loss, which converge to the same values to the problem's
conditioning.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from functional_optreg import _reductions, _scalars, _tree, _validation
from functional_optreg._types import ScalarOrSchedule
from functional_optreg.optimizers import _line_search


class LBFGSState(NamedTuple):
    """State of :func:`lbfgs`; fields follow torch's state keys.

    ``func_evals`` and ``n_iter`` count loss evaluations and inner iterations over all steps, as
    torch's do. ``d``, ``t``, ``H_diag``, ``prev_flat_grad`` and ``prev_loss`` are the last
    iteration's direction, step length, initial inverse-Hessian scale, gradient and loss (flat,
    in the parameters' common dtype). ``old_dirs`` / ``old_stps`` (``history_size × n``) and
    ``ro`` (``history_size``) are ring buffers: logical entry ``i < num_old`` (0 = oldest) lives
    in row ``(old_start + i) % history_size``; :meth:`history` returns them in torch's order.
    ``step`` counts ``step`` calls (torch keeps none; lr schedules need it). Torch's scratch
    buffer ``al`` is not kept: it is rewritten before it is read.
    """

    step: jax.Array
    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    num_old: jax.Array
    old_start: jax.Array
    H_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array

    def history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(old_dirs, old_stps, ro)`` oldest first, as torch's lists (needs concrete values)."""
        size = self.ro.shape[0]
        rows = (int(self.old_start) + np.arange(int(self.num_old))) % size
        return np.asarray(self.old_dirs)[rows], np.asarray(self.old_stps)[rows], np.asarray(self.ro)[rows]


class _Iteration(NamedTuple):
    x: jax.Array
    loss: jax.Array
    flat_grad: jax.Array
    n_iter: jax.Array
    current_evals: jax.Array
    stop: jax.Array
    state: LBFGSState


class LBFGSSolver(NamedTuple):
    """The pair returned by :func:`lbfgs`: ``init(params)`` and ``step(loss_fn, params, state)``."""

    init: Callable[[Any], LBFGSState]
    step: Callable[..., tuple[Any, LBFGSState, jax.Array]]

    def as_gradient_transformation(self) -> optax.GradientTransformationExtraArgs:
        """This solver as an optax transformation: ``update(grads, state, params, value_fn=...)``.

        ``value_fn(params)`` is the loss (torch's closure); the incoming gradients are ignored
        because the step re-evaluates them, as torch does. The update is ``new − old``, so
        ``optax.apply_updates`` may differ from ``step``'s parameters by one rounding.
        """

        def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
            del updates, extra_args
            _tree.require_params(params, "lbfgs", "its line search and loss re-evaluations")
            if value_fn is None:
                raise ValueError("lbfgs needs the loss function: call update(grads, state, params, value_fn=loss_fn).")
            new_params, state, _ = self.step(value_fn, params, state)
            return jax.tree.map(lambda new, old: new - old, new_params, params), state

        return optax.GradientTransformationExtraArgs(self.init, update_fn)


def _push(state: LBFGSState, y: jax.Array, s: jax.Array, ys: jax.Array, store: jax.Array):
    """Torch's ``pop(0)`` (when full) and ``append`` on the history, applied only where ``store``."""
    size = state.ro.shape[0]
    full = state.num_old == size
    row = (state.old_start + state.num_old) % size

    def put(buffer: jax.Array, value: jax.Array) -> jax.Array:
        return buffer.at[row].set(jnp.where(store, value, buffer[row]))

    return state._replace(
        old_dirs=put(state.old_dirs, y),
        old_stps=put(state.old_stps, s),
        ro=put(state.ro, 1.0 / ys),
        num_old=jnp.where(store & ~full, state.num_old + 1, state.num_old),
        old_start=jnp.where(store & full, (state.old_start + 1) % size, state.old_start),
    )


def _direction(flat_grad: jax.Array, state: LBFGSState) -> jax.Array:
    """Torch's two-loop recursion over the history, oldest entry first in the second loop."""
    size = state.ro.shape[0]

    def row(i):
        return (state.old_start + i) % size

    def newest_first(k, carry):
        q, al = carry
        i = row(state.num_old - 1 - k)
        al_i = jnp.dot(state.old_stps[i], q) * state.ro[i]
        return q + (-al_i) * state.old_dirs[i], al.at[i].set(al_i)

    q, al = lax.fori_loop(0, state.num_old, newest_first, (-flat_grad, jnp.zeros_like(state.ro)))

    def oldest_first(k, r):
        i = row(k)
        be_i = jnp.dot(state.old_dirs[i], r) * state.ro[i]
        return r + (al[i] - be_i) * state.old_stps[i]

    return lax.fori_loop(0, state.num_old, oldest_first, q * state.H_diag)


def _check_count(name: str, value: Any) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def lbfgs(
    lr: ScalarOrSchedule = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> LBFGSSolver:
    r"""L-BFGS, exactly as ``torch.optim.LBFGS``: one ``step`` is one ``optimizer.step(closure)``.

    Each inner iteration with gradient :math:`g` updates the history with
    :math:`y = g - g_{\text{prev}},\ s = t\,d` when :math:`y^\top s > 10^{-10}`, then
    computes the direction by the two-loop recursion over the :math:`k` stored pairs:

    .. math::

        q &= -g, \qquad \alpha_i = \rho_i\, s_i^\top q,\quad q \leftarrow q - \alpha_i y_i
            \quad (i = k-1, \dots, 0) \\
        d &= H_0\, q, \qquad \beta_i = \rho_i\, y_i^\top d,\quad
            d \leftarrow d + (\alpha_i - \beta_i) s_i \quad (i = 0, \dots, k-1) \\
        \rho_i &= 1 / y_i^\top s_i, \qquad H_0 = y^\top s / y^\top y, \qquad
            x \leftarrow x + t\, d

    with :math:`t = \min(1, 1/\lVert g\rVert_1)\,\gamma` on the very first iteration, :math:`t =
    \gamma` after, or :math:`t` from the strong-Wolfe line search.

    Args:
      lr: learning rate :math:`\gamma`, a float, a JAX scalar or a schedule of the number of
        ``step`` calls.
      max_iter: maximal number of inner iterations per ``step``.
      max_eval: maximal number of loss evaluations per ``step`` (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when :math:`\max_j |g_j| \le` this.
      tolerance_change: stop when the step, the loss change or the directional derivative falls
        below this.
      history_size: number of :math:`(y, s)` pairs kept.
      line_search_fn: ``None`` (fixed step :math:`t`) or ``"strong_wolfe"``.

    Returns:
      An :class:`LBFGSSolver`: ``init(params)`` and ``step(loss_fn, params, state, *args)``
      returning ``(params, state, loss)``, with ``loss_fn(params, *args)`` a scalar.

    PyTorch equivalence:
      ``torch.optim.LBFGS(params, lr, max_iter, max_eval, tolerance_grad, tolerance_change,
      history_size, line_search_fn)``, following ``LBFGS.step``, ``_strong_wolfe`` and
      ``_cubic_interpolate`` operation by operation, with the same stopping rules, evaluation
      counts and state carried between steps. Torch's quirks are reproduced: the
      :math:`1/\lVert g\rVert_1` step size applies only to the first iteration of the first step;
      without a line search the last iteration of a step moves without re-evaluating; the line
      search always uses its own ``tolerance_change=1e-9`` (torch does not pass the optimizer's)
      and ``max_ls = max_eval - current_evals``; its bracketing phase skips the "not lower than
      the previous trial" test for the first two trials (``ls_iter > 1``); a ``step`` that stops
      on a non-descent direction still stores that direction and its ``t``. Deviations: an unknown
      ``line_search_fn`` raises torch's ``RuntimeError`` at construction instead of at the
      first step, and ``history_size < 1`` and (with the line search) ``max_eval < 1``, on which
      torch's step crashes, raise ``ValueError``. ``step`` runs under ``jit`` and ``vmap``, not
      reverse-mode ``grad`` (it is a ``while_loop``).

    Example:
      >>> import jax, jax.numpy as jnp, functional_optreg as fo
      >>> solver = fo.lbfgs(lr=1, line_search_fn="strong_wolfe")
      >>> def loss_fn(p):
      ...     return jnp.sum((p["w"] - 3.0) ** 2) + jnp.sum(p["w"] ** 4) / 100
      >>> params = {"w": jnp.zeros(2)}
      >>> state = solver.init(params)
      >>> params, state, loss = jax.jit(solver.step, static_argnums=0)(loss_fn, params, state)
      >>> params["w"].round(4), float(loss), int(state.n_iter), int(state.func_evals)
      (Array([2.6344, 2.6344], dtype=float32), 18.0, 6, 7)
    """
    if not callable(lr) and jnp.ndim(lr) > 0:
        if jnp.size(lr) != 1:
            raise ValueError("Tensor lr must be 1-element")
        lr = jnp.reshape(lr, ())
    _validation.check_lr(lr)
    max_iter = _check_count("max_iter", max_iter)
    max_eval = max_iter * 5 // 4 if max_eval is None else _check_count("max_eval", max_eval)
    history_size = _check_count("history_size", history_size)
    if history_size < 1:
        raise ValueError(f"Invalid history_size value: {history_size} (torch's LBFGS needs at least 1)")
    if line_search_fn not in (None, "strong_wolfe"):
        raise RuntimeError("only 'strong_wolfe' is supported")
    use_line_search = line_search_fn is not None
    if use_line_search and max_eval < 1 <= max_iter:
        raise ValueError(
            f"Invalid max_eval value: {max_eval}; the strong-Wolfe line search needs max_eval >= 1 "
            "(torch's step fails with an UnboundLocalError)"
        )

    def init_fn(params: Any) -> LBFGSState:
        _tree.check_float_params(params)
        # Torch runs LBFGS on real views of complex params; ours flattens with jax.grad's
        # conjugate convention, which would be silently wrong, so complex is refused for now.
        _tree.check_real_params(params, "LBFGS (functional_optreg)")
        flat, _ = ravel_pytree(params)
        zero = jnp.zeros([], jnp.int32)
        return LBFGSState(
            step=zero,
            func_evals=zero,
            n_iter=zero,
            d=jnp.zeros_like(flat),
            t=jnp.zeros([], flat.dtype),
            old_dirs=jnp.zeros((history_size,) + flat.shape, flat.dtype),
            old_stps=jnp.zeros((history_size,) + flat.shape, flat.dtype),
            ro=jnp.zeros([history_size], flat.dtype),
            num_old=zero,
            old_start=zero,
            H_diag=jnp.ones([], flat.dtype),
            prev_flat_grad=jnp.zeros_like(flat),
            prev_loss=jnp.zeros([], flat.dtype),
        )

    def step_fn(loss_fn: Callable[..., jax.Array], params: Any, state: LBFGSState, *args: Any):
        flat, unravel = ravel_pytree(params)
        dtype = flat.dtype
        _tree.check_same_structure("the optimizer state", state.d, "the flattened params", flat)
        lr_t = jnp.asarray(_scalars.value_at(lr, state.step), dtype)

        def evaluate(x: jax.Array) -> tuple[jax.Array, jax.Array]:
            loss, grad = jax.value_and_grad(lambda v: loss_fn(unravel(v), *args))(x)
            return jnp.asarray(loss, dtype), grad

        def grad_converged(flat_grad: jax.Array) -> jax.Array:
            # torch's flat_grad.abs().max(): NaN (so not converged) if any element is NaN.
            return _reductions.amax(jnp.abs(flat_grad), initial=0.0) <= tolerance_grad

        def iteration(c: _Iteration) -> _Iteration:
            n_iter = c.n_iter + 1
            s = c.state._replace(n_iter=c.state.n_iter + 1)
            first = s.n_iter == 1
            y = c.flat_grad - s.prev_flat_grad
            step_taken = s.d * s.t
            ys = jnp.dot(y, step_taken)
            store = ~first & (ys > 1e-10)
            s = _push(s, y, step_taken, ys, store)
            H_diag = jnp.where(store, ys / jnp.dot(y, y), s.H_diag)
            s = s._replace(
                num_old=jnp.where(first, 0, s.num_old),
                old_start=jnp.where(first, 0, s.old_start),
                H_diag=jnp.where(first, 1, H_diag).astype(dtype),
            )
            d = _direction(c.flat_grad, s)
            inverse_l1 = 1.0 / jnp.sum(jnp.abs(c.flat_grad))
            t = jnp.where(first, jnp.where(inverse_l1 < 1.0, inverse_l1, 1.0) * lr_t, lr_t).astype(dtype)
            gtd = jnp.dot(c.flat_grad, d)
            no_descent = gtd > -tolerance_change

            def hold(_):
                return c.x, c.loss, c.flat_grad, t, jnp.zeros([], bool), jnp.zeros([], jnp.int32)

            def move(_):
                if use_line_search:
                    loss, flat_grad, t_ls, evals = _line_search.strong_wolfe(
                        lambda step_length: evaluate(c.x + step_length * d),
                        t,
                        d,
                        c.loss,
                        c.flat_grad,
                        gtd,
                        max_ls=max_eval - c.current_evals,
                    )
                    return c.x + t_ls * d, loss, flat_grad, t_ls, grad_converged(flat_grad), evals
                x = c.x + t * d

                def reevaluate(_):
                    loss, flat_grad = evaluate(x)
                    return loss, flat_grad, grad_converged(flat_grad), jnp.ones([], jnp.int32)

                def last_iteration(_):
                    return c.loss, c.flat_grad, jnp.zeros([], bool), jnp.zeros([], jnp.int32)

                loss, flat_grad, opt_cond, evals = lax.cond(n_iter != max_iter, reevaluate, last_iteration, None)
                return x, loss, flat_grad, t, opt_cond, evals

            x, loss, flat_grad, t, opt_cond, evals = lax.cond(no_descent, hold, move, None)
            current_evals = c.current_evals + evals
            stop = (
                no_descent
                | (n_iter == max_iter)
                | (current_evals >= max_eval)
                | opt_cond
                | (_reductions.amax(jnp.abs(d * t), initial=0.0) <= tolerance_change)
                | (jnp.abs(loss - c.loss) < tolerance_change)
            )
            s = s._replace(func_evals=s.func_evals + evals, d=d, t=t, prev_flat_grad=c.flat_grad, prev_loss=c.loss)
            return _Iteration(x, loss, flat_grad, n_iter, current_evals, stop, s)

        orig_loss, flat_grad = evaluate(flat)
        start = _Iteration(
            x=flat,
            loss=orig_loss,
            flat_grad=flat_grad,
            n_iter=jnp.zeros([], jnp.int32),
            current_evals=jnp.ones([], jnp.int32),
            stop=grad_converged(flat_grad),
            state=state._replace(func_evals=state.func_evals + 1),
        )
        end = lax.while_loop(lambda c: ~c.stop & (c.n_iter < max_iter), iteration, start)
        new_state = end.state._replace(step=_scalars.increment(state.step))
        return unravel(end.x), new_state, orig_loss

    return LBFGSSolver(init_fn, step_fn)
