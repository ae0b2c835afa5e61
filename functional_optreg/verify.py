"""The comparison engine: run a torch optimizer and a transform side by side, step by step.

Both sides start from the same parameters and, at every step, receive gradients computed from
*their own* current parameters, so a wrong step changes every later step. After each step the
parameters are compared; the report gives the per-step error and the verdict under the parity
contract:

* float64 — the semantic check: every step's relative error (per leaf, the largest absolute
  difference divided by the largest absolute torch value, maximised over leaves) is at most
  ``1e-12``, with NaN (and each infinity) where torch has it and only there.
* float32 — the user's check: every element of every step satisfies torch's
  ``assert_close`` defaults, ``|ours − torch| <= 1e-5 + 1.3e-6·|torch|``.

Example::

    import numpy as np, torch, functional_optreg as fo
    from functional_optreg import verify

    params = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    report = verify.compare(
        torch_optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
        transform=fo.adam(lr=1e-2, weight_decay=1e-3),
        params=params, steps=50, dtype="float64")
    print(report)          # per-step table and verdict
    assert report.passed

One engine runs every side-by-side trajectory: :func:`run` steps both sides with a
``before_step`` hook (mid-run events applied to both) and an ``after_step`` hook that sees both
sides after each step (:class:`StepView`: parameters, torch's ``optimizer.state`` and ours).
:func:`compare` is :func:`run` with an error-measuring ``after_step``; :func:`torch_float32_drift`
runs torch alone through it; the fuzzer (``parity/fuzz.py``) and the state-trajectory tests
(``tests/state_trajectories.py``) use its hooks. Closure-based L-BFGS is the exception: torch's
``step(closure)`` evaluates the loss many times per step, so ``parity/lbfgs_harness.py`` drives it.

torch is imported when :func:`run` runs, not when this module is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

FLOAT64_RTOL = 1e-12
"""The float64 contract: relative error at every step."""
FLOAT32_RTOL = 1.3e-6
FLOAT32_ATOL = 1e-5
"""The float32 contract: ``torch.testing.assert_close`` defaults for float32."""

GradientFn = Callable[[int, Sequence[np.ndarray]], Sequence[np.ndarray]]
"""``gradient(step, leaves) -> grads``: a NumPy function of the current parameter leaves."""

BeforeStep = Callable[[int, Any, Any], Any]
"""``before_step(step, torch_optimizer, state) -> state``: a mid-run event applied to both sides
before the 0-based step ``step`` (change a hyperparameter, restore a checkpoint, hand the state
over); it returns our (possibly new) state."""

StatePairs = Callable[[Any, Any], Sequence[tuple[np.ndarray, np.ndarray]]]
"""``state_pairs(torch_optimizer, state) -> [(ours, torch), ...]``: the optimizer state of both
sides as matching NumPy arrays, compared after every step like the parameters."""


@dataclasses.dataclass(frozen=True)
class LossPair:
    """The same loss written twice: gradients come from each framework's own autodiff.

    ``torch_loss(step, tensors)`` returns a scalar tensor from the list of parameter tensors;
    ``jax_loss(step, params)`` returns a scalar from the parameter pytree; it is jitted with
    ``step`` traced, so pick batches with ``jnp`` indexing. ``step`` lets both sides use the same
    batch.
    """

    torch_loss: Callable[[int, list], Any]
    jax_loss: Callable[[int, Any], jax.Array]


def _quadratic_terms(params: Any, seed: int) -> tuple[list, list, list]:
    """The leaves of ``params`` and, per leaf, the curvature and the minimiser drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
    curvature = [rng.uniform(0.5, 2.0, leaf.shape) for leaf in leaves]
    target = [rng.normal(size=leaf.shape) for leaf in leaves]
    return leaves, curvature, target


def quadratic_gradients(params: Any, seed: int = 0, noise: float = 0.1) -> GradientFn:
    r"""A parameter-dependent gradient stream: a fixed quadratic plus fixed per-step noise.

    For leaf :math:`i`, :math:`g_t = h_i \odot (\theta - \theta^\star_i) + \sigma n_{i,t}` with
    :math:`h_i \in [0.5, 2]` and :math:`\theta^\star_i` drawn once from ``seed`` and
    :math:`n_{i,t}` drawn from ``(seed, t)``; all in float64, cast to each leaf's dtype.
    """
    _, curvature, target = _quadratic_terms(params, seed)

    def gradient(step: int, current: Sequence[np.ndarray]) -> list[np.ndarray]:
        step_rng = np.random.default_rng([seed, step])
        grads = []
        for theta, h, star in zip(current, curvature, target):
            n = step_rng.normal(size=theta.shape)
            grads.append((h * (theta.astype(np.float64) - star) + noise * n).astype(theta.dtype))
        return grads

    return gradient


@dataclasses.dataclass
class ParityReport:
    """The outcome of :func:`compare`.

    Attributes:
      name: a label for the configuration.
      dtype: ``"float64"`` or ``"float32"``.
      relative_errors: per step, the largest leaf-wise relative error (see module docstring), over
        the parameters and the state given by ``state_pairs``.
      closeness: per step, the largest ``|ours − torch| / (atol + rtol·|torch|)`` with the float32
        contract's tolerances; ``<= 1`` means ``assert_close`` passes at that step.
      losses: per step, ``(torch, ours)`` losses when a :class:`LossPair` drove the run.
      torch_params, jax_params: the final parameter leaves of each side, as NumPy arrays.
    """

    name: str
    dtype: str
    relative_errors: np.ndarray
    closeness: np.ndarray
    losses: np.ndarray | None
    torch_params: list[np.ndarray]
    jax_params: list[np.ndarray]

    @property
    def steps(self) -> int:
        return len(self.relative_errors)

    @property
    def step_passes(self) -> np.ndarray:
        """Per step, whether the dtype's contract holds."""
        if self.dtype == "float64":
            return self.relative_errors <= FLOAT64_RTOL
        return self.closeness <= 1.0

    @property
    def passed(self) -> bool:
        return bool(np.all(self.step_passes))

    @property
    def first_failure(self) -> int | None:
        """The first step (1-based) out of tolerance, or ``None``."""
        failing = np.flatnonzero(~self.step_passes)
        return int(failing[0]) + 1 if failing.size else None

    @property
    def max_relative_error(self) -> float:
        return float(np.max(self.relative_errors)) if self.steps else 0.0

    def summary(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL (first at step {self.first_failure})"
        return (
            f"{self.name} [{self.dtype}, {self.steps} steps]: max rel err "
            f"{self.max_relative_error:.3e}, max assert_close ratio "
            f"{float(np.max(self.closeness, initial=0.0)):.3f} -> {verdict}"
        )

    def table(self, every: int = 10) -> str:
        """The per-step errors as a text table (every ``every``-th step, the first and failures)."""
        rows = ["step  rel_err     assert_close_ratio  ok"]
        for index in range(self.steps):
            step = index + 1
            if step == 1 or step % every == 0 or step == self.steps or not self.step_passes[index]:
                rows.append(
                    f"{step:4d}  {self.relative_errors[index]:.3e}   "
                    f"{self.closeness[index]:18.3e}  {'yes' if self.step_passes[index] else 'NO'}"
                )
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.table()

    def plot(self, path: str) -> None:
        """Save the per-step relative error curve (and losses, if any) as a PNG (needs matplotlib)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if self.losses is not None else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
        steps = np.arange(1, self.steps + 1)
        ax = axes[0][0]
        ax.semilogy(steps, np.maximum(self.relative_errors, 1e-300), label="max relative error")
        bound = FLOAT64_RTOL if self.dtype == "float64" else None
        if bound is not None:
            ax.axhline(bound, color="red", linestyle="--", label="contract")
        ax.set_xlabel("step")
        ax.set_title(f"{self.name} ({self.dtype})")
        ax.legend()
        if self.losses is not None:
            ax = axes[0][1]
            ax.plot(steps, self.losses[:, 0], label="torch")
            ax.plot(steps, self.losses[:, 1], "--", label="functional_optreg")
            ax.set_xlabel("step")
            ax.set_title("loss")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _agreeing(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray | None:
    """Where the two sides agree exactly (equal values, equal infinities, NaN on both sides);
    ``None`` when the NaN patterns differ, which no tolerance excuses."""
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return None
    return (ours == theirs) | np.isnan(theirs)


def _relative_error(ours: np.ndarray, theirs: np.ndarray, scale: float | None = None) -> float:
    """The largest ``|ours − torch|`` over the largest finite ``|torch|`` (or over ``scale``);
    elements equal on both sides (including equal infinities and NaN on both sides) count as 0,
    a NaN on one side only or an infinity against anything else as ``inf``."""
    ours64, theirs64 = ours.astype(np.float64), theirs.astype(np.float64)
    agreeing = _agreeing(ours64, theirs64)
    if agreeing is None:
        return float("inf")
    if np.all(agreeing):
        return 0.0
    diff = float(np.max(np.abs(ours64[~agreeing] - theirs64[~agreeing])))
    if scale is None:
        scale = float(np.max(np.abs(theirs64[np.isfinite(theirs64)]), initial=0.0))
    return diff / scale if scale > 0 and np.isfinite(diff) else float("inf")


def _closeness(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest ``|ours − torch| / (atol + rtol·|torch|)`` over elements that differ; ``inf``
    where the NaN patterns differ or an infinity meets anything but the same infinity."""
    ours64, theirs64 = ours.astype(np.float64), theirs.astype(np.float64)
    agreeing = _agreeing(ours64, theirs64)
    if agreeing is None:
        return float("inf")
    if np.all(agreeing):
        return 0.0
    ours64, theirs64 = ours64[~agreeing], theirs64[~agreeing]
    if not (np.all(np.isfinite(ours64)) and np.all(np.isfinite(theirs64))):
        return float("inf")
    allowed = FLOAT32_ATOL + FLOAT32_RTOL * np.abs(theirs64)
    return float(np.max(np.abs(ours64 - theirs64) / allowed))


@dataclasses.dataclass(frozen=True)
class StepView:
    """Both sides of :func:`run` right after one step, as live objects.

    Attributes:
      step: the 0-based step just taken.
      optimizer: the torch optimizer.
      tensors: torch's parameter tensors, in the order of ``jax.tree.leaves(params)``.
      params: our parameter pytree (``None`` when only torch runs).
      state: our optimizer state (``None`` when only torch runs).
      loss: ``(torch, ours)`` losses of the step when a :class:`LossPair` drives the run.
    """

    step: int
    optimizer: Any
    tensors: list
    params: Any
    state: Any
    loss: tuple[float, float] | None = None

    def torch_leaves(self) -> list[np.ndarray]:
        """Torch's parameters as NumPy copies."""
        return [t.detach().numpy().copy() for t in self.tensors]

    def jax_leaves(self) -> list[np.ndarray]:
        """Our parameter leaves as NumPy arrays (empty when only torch runs)."""
        return [np.asarray(leaf) for leaf in jax.tree.leaves(self.params)]

    def torch_state(self) -> list[dict[str, Any]]:
        """Per parameter tensor, torch's ``optimizer.state[tensor]`` with tensors as NumPy copies."""
        return [{key: _to_numpy(value) for key, value in self.optimizer.state[t].items()} for t in self.tensors]

    def jax_state(self) -> Any:
        """Our state with every array leaf as a NumPy array."""
        return jax.tree.map(np.asarray, self.state)


AfterStep = Callable[[StepView], None]
"""``after_step(view)``: called after every step of :func:`run` with both sides (see :class:`StepView`)
to measure or record them."""


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().numpy().copy()
    if isinstance(value, list):
        return [_to_numpy(item) for item in value]
    return value


def _check_run(dtype: str, steps: int) -> None:
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")


def run(
    torch_optimizer: Callable[[list], Any],
    transform: optax.GradientTransformation | None,
    params: Any,
    gradient: GradientFn | LossPair | None = None,
    *,
    steps: int = 50,
    dtype: str = "float64",
    torch_scheduler: Callable[[Any], Any] | None = None,
    metric: Callable[[int, Sequence[np.ndarray]], float] | None = None,
    before_step: BeforeStep | None = None,
    after_step: AfterStep | None = None,
) -> StepView:
    """The trajectory engine: step torch and ``transform`` side by side, with event hooks.

    Both sides start from ``params`` cast to ``dtype``. Each step: ``before_step`` (a mid-run
    event), then each side's gradient from its *own* current parameters (or from its own
    autodiff of a :class:`LossPair`), torch's ``optimizer.step()`` and scheduler step, our jitted
    update, then ``after_step`` with both sides. :func:`compare` measures the errors with it;
    recording helpers (state trajectories, torch's own float32 drift) are ``after_step``
    observers.

    Args:
      torch_optimizer, params, gradient, steps, dtype, torch_scheduler, metric, before_step: as
        for :func:`compare`.
      transform: our transform, or ``None`` to run torch alone.
      after_step: called after every step with a :class:`StepView`.

    Returns:
      The :class:`StepView` after the last step.
    """
    _check_run(dtype, steps)
    with jax.enable_x64(dtype == "float64"):
        return _run(
            torch_optimizer,
            transform,
            params,
            gradient,
            steps,
            dtype,
            torch_scheduler,
            metric,
            before_step,
            after_step,
        )


def _device_input(value: Any) -> Any:
    """``value`` as an input of the jitted step: a NumPy array as it is (jit transfers it in its C++
    dispatch, ~6x faster than ``jnp.asarray`` per leaf, with the same abstract value: not weakly
    typed, the dtype canonicalized alike), anything else through ``jnp.asarray``."""
    return value if isinstance(value, np.ndarray) else jnp.asarray(value)


def _run(
    torch_optimizer,
    transform,
    params,
    gradient,
    steps,
    dtype,
    torch_scheduler,
    metric,
    before_step,
    after_step,
) -> StepView:
    import torch

    np_dtype = np.dtype(dtype)
    leaves, treedef = jax.tree.flatten(params)
    leaves = [np.asarray(leaf, dtype=np_dtype) for leaf in leaves]
    if gradient is None:
        gradient = quadratic_gradients(leaves)

    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in leaves]
    optimizer = torch_optimizer(tensors)
    scheduler = torch_scheduler(optimizer) if torch_scheduler is not None else None

    ours = transform is not None
    use_losses = isinstance(gradient, LossPair)
    jax_params = state = None
    if ours:
        tx = optax.with_extra_args_support(transform)
        jax_params = jax.tree.unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves])
        state = tx.init(jax_params)
        if use_losses:
            jax_value_and_grad = jax.jit(jax.value_and_grad(gradient.jax_loss, argnums=1))

        @jax.jit
        def jax_step(params, state, grads, extra):
            updates, state = tx.update(grads, state, params, **extra)
            return optax.apply_updates(params, updates), state

    view = StepView(-1, optimizer, tensors, jax_params, state)
    for step in range(steps):
        if before_step is not None:
            state = before_step(step, optimizer, state)
        torch_leaves = [t.detach().numpy().copy() for t in tensors]
        ours_leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax_params)]
        optimizer.zero_grad()
        loss = None
        if use_losses:
            torch_loss = gradient.torch_loss(step, tensors)
            torch_loss.backward()
            if ours:
                ours_loss, grads = jax_value_and_grad(step, jax_params)
                loss = (float(torch_loss.detach()), float(ours_loss))
        else:
            for tensor, grad in zip(tensors, gradient(step, torch_leaves)):
                tensor.grad = torch.from_numpy(np.array(grad, copy=True))
            if ours:
                grads = jax.tree.unflatten(treedef, [_device_input(g) for g in gradient(step, ours_leaves)])
        extra = {}
        torch_metric = None
        if metric is not None:
            torch_metric = metric(step, torch_leaves)
            if ours:
                extra = {"value": jnp.asarray(metric(step, ours_leaves), dtype=np_dtype)}
        optimizer.step()
        if scheduler is not None:
            if torch_metric is not None:
                scheduler.step(torch_metric)
            else:
                scheduler.step()
        if ours:
            jax_params, state = jax_step(jax_params, state, grads, extra)
        view = StepView(step, optimizer, tensors, jax_params, state, loss)
        if after_step is not None:
            after_step(view)
    return view


@dataclasses.dataclass
class _Errors:
    """An :data:`AfterStep` observer: per step, the float64 and float32 contract measures of the
    parameters (and of the state given by ``state_pairs``), and the losses."""

    state_pairs: StatePairs | None
    error_scale: str
    relative_errors: list[float] = dataclasses.field(default_factory=list)
    closeness: list[float] = dataclasses.field(default_factory=list)
    losses: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    largest: list[float] = dataclasses.field(default_factory=list)

    def __call__(self, view: StepView) -> None:
        pairs = list(zip(view.jax_leaves(), [t.detach().numpy() for t in view.tensors]))
        if self.state_pairs is not None:
            pairs += self.state_pairs(view.optimizer, view.state)
        scales: list[float | None] = [None] * len(pairs)
        if self.error_scale == "running":
            self.largest.extend([0.0] * (len(pairs) - len(self.largest)))
            for index, (_, t) in enumerate(pairs):
                finite = np.abs(t[np.isfinite(t)])
                self.largest[index] = max(self.largest[index], float(np.max(finite, initial=0.0)))
            scales = list(self.largest[: len(pairs)])
        self.relative_errors.append(max((_relative_error(o, t, s) for (o, t), s in zip(pairs, scales)), default=0.0))
        self.closeness.append(max((_closeness(o, t) for o, t in pairs), default=0.0))
        if view.loss is not None:
            self.losses.append(view.loss)


def compare(
    torch_optimizer: Callable[[list], Any],
    transform: optax.GradientTransformation,
    params: Any,
    gradient: GradientFn | LossPair | None = None,
    *,
    steps: int = 50,
    dtype: str = "float64",
    torch_scheduler: Callable[[Any], Any] | None = None,
    metric: Callable[[int, Sequence[np.ndarray]], float] | None = None,
    before_step: BeforeStep | None = None,
    state_pairs: StatePairs | None = None,
    error_scale: str = "current",
    name: str = "case",
) -> ParityReport:
    """Run torch and ``transform`` side by side for ``steps`` steps and compare every step.

    Args:
      torch_optimizer: builds the torch optimizer from the list of parameter tensors, in the
        order of ``jax.tree.leaves(params)``, e.g. ``lambda ps: torch.optim.SGD(ps, lr=0.1)``.
      transform: our transform (anything with optax's ``init``/``update``).
      params: the initial parameters, a pytree of arrays; cast to ``dtype`` for both sides.
      gradient: a NumPy gradient function of the current leaves (default:
        :func:`quadratic_gradients`), or a :class:`LossPair`.
      steps: number of optimizer steps.
      dtype: ``"float64"`` (turns on ``jax_enable_x64`` for the run only) or ``"float32"``.
      torch_scheduler: builds a torch lr scheduler from the optimizer; stepped after each
        ``optimizer.step()``.
      metric: ``metric(step, leaves)`` of the parameters *before* the step. Torch calls
        ``scheduler.step(metric)`` after ``optimizer.step()``; ours receives it as the
        ``value=`` extra argument of the same update (ReduceLROnPlateau's protocol).
      before_step: a mid-run event (see :data:`BeforeStep`), called before every step.
      state_pairs: the state of both sides to compare after every step (see
        :data:`StatePairs`); its errors count in the report like the parameters'.
      error_scale: what a leaf's float64 error is relative to: ``"current"``, its largest
        ``|torch value|`` at that step; ``"running"``, the largest it has had so far in the run,
        for leaves that cross zero (a 0-d parameter reaching its minimum, a moment whose
        gradient changes sign), whose rounding errors are those of the larger terms that
        produced them.
      name: a label for the report.

    Returns:
      A :class:`ParityReport`.
    """
    _check_run(dtype, steps)
    if error_scale not in ("current", "running"):
        raise ValueError(f"error_scale must be 'current' or 'running', got {error_scale!r}")
    errors = _Errors(state_pairs, error_scale)
    final = run(
        torch_optimizer,
        transform,
        params,
        gradient,
        steps=steps,
        dtype=dtype,
        torch_scheduler=torch_scheduler,
        metric=metric,
        before_step=before_step,
        after_step=errors,
    )
    return ParityReport(
        name=name,
        dtype=dtype,
        relative_errors=np.asarray(errors.relative_errors),
        closeness=np.asarray(errors.closeness),
        losses=np.asarray(errors.losses) if isinstance(gradient, LossPair) else None,
        torch_params=final.torch_leaves(),
        jax_params=final.jax_leaves(),
    )


def quadratic_losses(params: Any, seed: int = 0, noise: float = 0.1, steps: int = 1000) -> LossPair:
    r"""The loss whose gradient is :func:`quadratic_gradients`, written for torch and for JAX.

    :math:`L_t(\theta) = \sum_i \tfrac12 h_i (\theta_i - \theta^\star_i)^2 + \sigma n_{i,t}\theta_i`
    with the same draws as :func:`quadratic_gradients` for the first ``steps`` steps. Use it when
    gradients must come from autodiff on each side, e.g. to add a penalty to the loss.
    """
    leaves, curvature, target = _quadratic_terms(params, seed)
    noise_by_step: list[list[np.ndarray]] = [[] for _ in leaves]
    for step in range(steps):
        step_rng = np.random.default_rng([seed, step])
        for index, leaf in enumerate(leaves):
            noise_by_step[index].append(step_rng.normal(size=leaf.shape))
    noise_tables = [np.stack(table) for table in noise_by_step]

    def torch_loss(step: int, tensors: list) -> Any:
        import torch

        total: Any = 0.0
        for theta, h, star, table in zip(tensors, curvature, target, noise_tables):
            h_t, star_t, n_t = (torch.as_tensor(a, dtype=theta.dtype) for a in (h, star, table[step]))
            total = total + torch.sum(0.5 * h_t * (theta - star_t) ** 2 + noise * n_t * theta)
        return total

    def jax_loss(step: Any, params: Any) -> jax.Array:
        total: Any = 0.0
        for theta, h, star, table in zip(jax.tree.leaves(params), curvature, target, noise_tables):
            dtype = theta.dtype
            h_j, star_j = jnp.asarray(h, dtype), jnp.asarray(star, dtype)
            n_j = jnp.asarray(table, dtype)[step]
            total = total + jnp.sum(0.5 * h_j * (theta - star_j) ** 2 + noise * n_j * theta)
        return total

    return LossPair(torch_loss, jax_loss)


def torch_float32_drift(
    torch_optimizer: Callable[[list], Any],
    params: Any,
    gradient: GradientFn | None = None,
    *,
    steps: int = 50,
    torch_scheduler: Callable[[Any], Any] | None = None,
) -> np.ndarray:
    """How far torch's own float32 run drifts from its float64 run, per step.

    Returns the per-step ``assert_close`` ratio (see :class:`ParityReport.closeness`) of torch in
    float32 against torch in float64 on the same gradient stream (torch alone through :func:`run`, twice).
    A ratio near or above 1 means the configuration is ill-conditioned in float32: no
    implementation can track torch's float32 trajectory within ``assert_close`` there, and only
    the float64 check is meaningful.
    """
    leaves64 = [np.asarray(leaf, dtype=np.float64) for leaf in jax.tree.leaves(params)]
    if gradient is None:
        gradient = quadratic_gradients(leaves64)
    runs: dict[str, list[list[np.ndarray]]] = {"float64": [], "float32": []}
    for dtype, trajectory in runs.items():

        def record(view: StepView, trajectory: list[list[np.ndarray]] = trajectory) -> None:
            trajectory.append(view.torch_leaves())

        run(
            torch_optimizer,
            None,
            leaves64,
            gradient,
            steps=steps,
            dtype=dtype,
            torch_scheduler=torch_scheduler,
            after_step=record,
        )
    return np.asarray(
        [
            max(_closeness(low, high) for low, high in zip(step32, step64))
            for step32, step64 in zip(runs["float32"], runs["float64"])
        ]
    )
