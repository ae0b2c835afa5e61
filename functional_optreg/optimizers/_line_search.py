"""Torch's strong-Wolfe line search and cubic interpolation, as jittable JAX loops.

A line-by-line translation of ``_strong_wolfe`` and ``_cubic_interpolate`` in
``torch/optim/lbfgs.py`` (themselves ports of minFunc / lswolfe.lua). Torch's Python ``if`` /
``break`` become ``jnp.where`` and ``lax.while_loop`` conditions; every comparison keeps torch's
operator and operand order, and Python's ``min`` / ``max`` are mirrored exactly (``max(a, b)``
is ``b`` only when ``b > a``), so the branch taken is the one torch takes whenever the operands
agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_optreg import _reductions

ObjectiveAlong = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
"""``obj(t) -> (loss, flat_grad)`` at ``x + t·d``, the point torch's ``_directional_evaluate`` uses."""


def _py_max(a: Any, b: Any) -> jax.Array:
    """Python's ``max(a, b)``: ``b`` only if ``b > a`` (so NaN in ``b`` keeps ``a``)."""
    return jnp.where(b > a, b, a)


def _py_min(a: Any, b: Any) -> jax.Array:
    """Python's ``min(a, b)``: ``b`` only if ``b < a``."""
    return jnp.where(b < a, b, a)


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> jax.Array:
    """The minimiser of the cubic through two points with values and slopes, clamped to bounds.

    Torch's ``_cubic_interpolate``: without ``bounds`` the interval is ``[min(x1, x2),
    max(x1, x2)]``; when the cubic has no real minimiser the midpoint of the bounds is returned.
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        in_order = x1 <= x2
        xmin_bound = jnp.where(in_order, x1, x2)
        xmax_bound = jnp.where(in_order, x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
    from_x2 = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    from_x1 = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    min_pos = jnp.where(x1 <= x2, from_x2, from_x1)
    clamped = _py_min(_py_max(min_pos, xmin_bound), xmax_bound)
    return jnp.where(real, clamped, (xmin_bound + xmax_bound) / 2.0)


class _Bracketing(NamedTuple):
    t_prev: jax.Array
    f_prev: jax.Array
    g_prev: jax.Array
    gtd_prev: jax.Array
    t: jax.Array
    f_new: jax.Array
    g_new: jax.Array
    gtd_new: jax.Array
    ls_iter: jax.Array
    ls_func_evals: jax.Array


class _Zoom(NamedTuple):
    bracket: jax.Array
    bracket_f: jax.Array
    bracket_g: jax.Array
    bracket_gtd: jax.Array
    low_pos: jax.Array
    insuf_progress: jax.Array
    done: jax.Array
    ls_iter: jax.Array
    ls_func_evals: jax.Array


def strong_wolfe(
    obj_func: ObjectiveAlong,
    t: jax.Array,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: jax.Array,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Torch's ``_strong_wolfe``: returns ``(f_new, g_new, t, ls_func_evals)``.

    Two loops, as in torch: the bracketing phase extrapolates until the Armijo condition fails,
    the strong curvature condition holds or the slope turns non-negative; the zoom phase refines
    the bracket by safeguarded cubic interpolation. ``max_ls`` bounds both phases together and
    may be a traced integer (torch passes ``max_eval - current_evals``).
    """
    d_norm = _reductions.amax(jnp.abs(d), initial=0.0)  # torch's d.abs().max(), NaN-propagating
    f_new, g_new = obj_func(t)
    count = jnp.zeros([], jnp.int32)

    def armijo_fails(s: _Bracketing) -> jax.Array:
        return (s.f_new > f + c1 * s.t * gtd) | ((s.ls_iter > 1) & (s.f_new >= s.f_prev))

    def curvature_holds(gtd_new: jax.Array) -> jax.Array:
        return jnp.abs(gtd_new) <= -c2 * gtd

    def bracketing(s: _Bracketing) -> jax.Array:
        found = armijo_fails(s) | curvature_holds(s.gtd_new) | (s.gtd_new >= 0)
        return (s.ls_iter < max_ls) & ~found

    def extrapolate(s: _Bracketing) -> _Bracketing:
        min_step = s.t + 0.01 * (s.t - s.t_prev)
        max_step = s.t * 10
        t = cubic_interpolate(s.t_prev, s.f_prev, s.gtd_prev, s.t, s.f_new, s.gtd_new, bounds=(min_step, max_step))
        f_next, g_next = obj_func(t)
        return _Bracketing(
            s.t,
            s.f_new,
            s.g_new,
            s.gtd_new,
            t,
            f_next,
            g_next,
            jnp.dot(g_next, d),
            s.ls_iter + 1,
            s.ls_func_evals + 1,
        )

    s = lax.while_loop(
        bracketing,
        extrapolate,
        _Bracketing(jnp.zeros_like(t), f, g, gtd, t, f_new, g_new, jnp.dot(g_new, d), count, count + 1),
    )

    # Torch's exits, in its order: out of evaluations -> bracket [0, t]; Armijo failed or the
    # slope turned -> bracket [t_prev, t]; strong Wolfe holds -> done with the single point t
    # (stored twice, so either position returns it).
    exhausted = s.ls_iter == max_ls
    done = ~exhausted & ~armijo_fails(s) & curvature_holds(s.gtd_new)

    def first_end(at_zero: jax.Array, at_t: jax.Array, at_prev: jax.Array) -> jax.Array:
        return jnp.where(exhausted, at_zero, jnp.where(done, at_t, at_prev))

    bracket_f = jnp.stack([first_end(f, s.f_new, s.f_prev), s.f_new])
    zoom = _Zoom(
        bracket=jnp.stack([first_end(jnp.zeros_like(t), s.t, s.t_prev), s.t]),
        bracket_f=bracket_f,
        bracket_g=jnp.stack([first_end(g, s.g_new, s.g_prev), s.g_new]),
        bracket_gtd=jnp.stack([first_end(gtd, s.gtd_new, s.gtd_prev), s.gtd_new]),
        low_pos=jnp.where(bracket_f[0] <= bracket_f[1], 0, 1).astype(jnp.int32),
        insuf_progress=jnp.zeros([], bool),
        done=done,
        ls_iter=s.ls_iter,
        ls_func_evals=s.ls_func_evals,
    )

    def zooming(z: _Zoom) -> jax.Array:
        small = jnp.abs(z.bracket[1] - z.bracket[0]) * d_norm < tolerance_change
        return ~z.done & (z.ls_iter < max_ls) & ~small

    def refine(z: _Zoom) -> _Zoom:
        b = z.bracket
        t = cubic_interpolate(b[0], z.bracket_f[0], z.bracket_gtd[0], b[1], z.bracket_f[1], z.bracket_gtd[1])
        b_max, b_min = _py_max(b[0], b[1]), _py_min(b[0], b[1])
        eps = 0.1 * (b_max - b_min)
        near_boundary = _py_min(b_max - t, t - b_min) < eps
        at_boundary = z.insuf_progress | (t >= b_max) | (t <= b_min)
        moved = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
        t = jnp.where(near_boundary & at_boundary, moved, t)
        insuf_progress = near_boundary & ~at_boundary

        f_next, g_next = obj_func(t)
        gtd_next = jnp.dot(g_next, d)
        low, high = z.low_pos, 1 - z.low_pos
        rejected = (f_next > f + c1 * t * gtd) | (f_next >= z.bracket_f[low])
        wolfe = ~rejected & curvature_holds(gtd_next)
        old_high_to_low = ~rejected & ~wolfe & (gtd_next * (b[high] - b[low]) >= 0)
        slot = jnp.where(rejected, high, low)

        def place(values: jax.Array, new: jax.Array) -> jax.Array:
            values = jnp.where(old_high_to_low, values.at[high].set(values[low]), values)
            return values.at[slot].set(new)

        bracket_f = place(z.bracket_f, f_next)
        low_pos = jnp.where(rejected, jnp.where(bracket_f[0] <= bracket_f[1], 0, 1), low)
        return _Zoom(
            bracket=place(b, t),
            bracket_f=bracket_f,
            bracket_g=place(z.bracket_g, g_next),
            bracket_gtd=place(z.bracket_gtd, gtd_next),
            low_pos=low_pos.astype(jnp.int32),
            insuf_progress=insuf_progress,
            done=z.done | wolfe,
            ls_iter=z.ls_iter + 1,
            ls_func_evals=z.ls_func_evals + 1,
        )

    z = lax.while_loop(zooming, refine, zoom)
    low = z.low_pos
    return z.bracket_f[low], z.bracket_g[low], z.bracket[low], z.ls_func_evals
