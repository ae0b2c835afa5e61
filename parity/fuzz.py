"""Differential testing against torch: generated configurations, hostile gradients, mid-run events.

The catalog holds the cases we thought of; this module generates the others. A :class:`Config`
is one optimizer with sampled arguments and flags, an lr given as a float, a float32 or float64
tensor or a schedule, parameters of mixed shapes (0-d, size-0, 1-D to 4-D) at a scale from
1e-100 to 1e150 (see :data:`SCALES`), a parameter-dependent gradient stream with special elements (NaN, ±inf, exact
zeros, sign flips, bursts) and mid-run events (a hyperparameter set through
``fo.set_hyperparams``, momentum switched on or off, a checkpoint saved and restored). :func:`run`
drives torch and ours through :func:`functional_optreg.verify.compare` (the one engine, with its
``before_step`` events and ``state_pairs``): every step's parameters *and* state are compared
under the float64 contract (≤ 1e-12 relative, NaN and infinities exactly where torch has them;
relative to each entry's largest value so far, since generated leaves such as a 0-d parameter or
a moment cross zero).

A failure is shrunk (:func:`shrink`) to a minimal configuration and printed as a runnable
snippet (:func:`reproducer`). ``python -m parity fuzz --minutes N --seed S`` runs until the time is
up; ``parity/test_fuzz.py`` runs a fixed-seed slice in CI.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SHAPES = ((), (0,), (5,), (3, 4), (2, 3, 4), (2, 2, 3, 2))
SCALES = (1e-100, 1e-8, 1.0, 1e8, 1e150)
"""Parameter and gradient scales. Not 1e-150: squared gradients times a decay factor then reach
the subnormal range (below 2.2e-308), which XLA on CPU flushes to zero and torch keeps (found by
this fuzzer: Adadelta's state at scale 1e-150 differs by 3e-12 relative); that is the platform's
floating-point mode, not a formula, so the float64 contract cannot hold there."""
SPECIALS = ("nan", "inf", "-inf", "zero", "flip", "burst")
LR_KINDS = ("float", "float32_tensor", "float64_tensor", "schedule")
STEPS = 50


@dataclasses.dataclass(frozen=True)
class Config:
    """One generated configuration; every field is a plain Python value, so ``repr`` is runnable.

    Attributes:
      optimizer: a key of :data:`OPTIMIZERS`.
      kwargs: the arguments both sides get (torch's names), ``lr`` excluded.
      lr: the learning rate's value; ``lr_kind`` says how it is given (see :data:`LR_KINDS`).
      shapes: the parameter leaves' shapes; ``scale`` multiplies parameters and gradients.
      specials: ``(step, leaf, flat index, kind)`` gradient elements overwritten (kind in
        :data:`SPECIALS`: a value, or ``flip`` = negated, ``burst`` = times 1e3).
      events: ``(step, kind, name, value)`` applied before the 0-based ``step``: ``("set", name,
        value)`` sets a hyperparameter on both sides, ``("checkpoint", "", 0)`` saves and
        restores both states.
      steps, seed: the run's length and the seed of its parameters and gradient noise.
    """

    optimizer: str
    kwargs: dict[str, Any]
    lr: float
    lr_kind: str = "float"
    shapes: tuple[tuple[int, ...], ...] = ((5,), (3, 4))
    scale: float = 1.0
    specials: tuple[tuple[int, int, int, str], ...] = ()
    events: tuple[tuple[int, str, str, Any], ...] = ()
    steps: int = STEPS
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of :func:`run`: ``passed``, and otherwise where and how it failed."""

    config: Config
    passed: bool
    detail: str
    first_failure: int | None = None

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.config.optimizer}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """How to sample one optimizer: our factory, torch's class and each argument's choices."""

    ours: str
    torch: str
    choices: dict[str, Sequence[Any]]
    settable: tuple[str, ...] = ()
    """Hyperparameters an event may set mid-run (numeric, not tuples)."""


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(
        "sgd",
        "SGD",
        dict(momentum=(0.0, 0.5, 0.9), dampening=(0.0, 0.3), weight_decay=(0.0, 0.1), nesterov=(False, True)),
        ("lr", "weight_decay", "momentum", "dampening"),
    ),
    "adam": Optimizer(
        "adam",
        "Adam",
        dict(
            betas=((0.9, 0.999), (0.5, 0.9)),
            eps=(1e-8, 1e-3),
            weight_decay=(0.0, 0.1),
            amsgrad=(False, True),
            decoupled_weight_decay=(False, True),
            foreach=(None, False),
        ),
        ("lr", "weight_decay", "eps"),
    ),
    "adamw": Optimizer(
        "adamw",
        "AdamW",
        dict(betas=((0.9, 0.999), (0.8, 0.99)), weight_decay=(0.01, 0.1), amsgrad=(False, True)),
        ("lr", "weight_decay"),
    ),
    "adamax": Optimizer(
        "adamax", "Adamax", dict(betas=((0.9, 0.999), (0.5, 0.9)), eps=(1e-8, 1e-3), weight_decay=(0.0, 0.1)), ("lr",)
    ),
    "nadam": Optimizer(
        "nadam",
        "NAdam",
        dict(weight_decay=(0.0, 0.1), momentum_decay=(4e-3, 0.05), decoupled_weight_decay=(False, True)),
        ("lr", "weight_decay"),
    ),
    "radam": Optimizer(
        "radam", "RAdam", dict(weight_decay=(0.0, 0.1), decoupled_weight_decay=(False, True)), ("lr", "weight_decay")
    ),
    "rmsprop": Optimizer(
        "rmsprop",
        "RMSprop",
        dict(alpha=(0.99, 0.5), eps=(1e-8, 1e-3), weight_decay=(0.0, 0.1), momentum=(0.0, 0.9), centered=(False, True)),
        ("lr", "weight_decay", "alpha"),
    ),
    "adagrad": Optimizer(
        "adagrad",
        "Adagrad",
        dict(lr_decay=(0.0, 0.01), weight_decay=(0.0, 0.1), initial_accumulator_value=(0.0, 0.1), eps=(1e-10, 1e-3)),
        ("lr", "weight_decay", "lr_decay"),
    ),
    "adadelta": Optimizer(
        "adadelta", "Adadelta", dict(rho=(0.9, 0.5), eps=(1e-6, 1e-3), weight_decay=(0.0, 0.1)), ("lr", "weight_decay")
    ),
    "asgd": Optimizer(
        "asgd", "ASGD", dict(lambd=(1e-4, 1e-2), alpha=(0.75, 0.5), t0=(1e6, 10.0), weight_decay=(0.0, 0.1)), ()
    ),
    "rprop": Optimizer(
        "rprop", "Rprop", dict(etas=((0.5, 1.2), (0.3, 1.5)), step_sizes=((1e-6, 50.0), (1e-3, 0.1))), ()
    ),
    "adafactor": Optimizer("adafactor", "Adafactor", dict(beta2_decay=(-0.8, -0.5), weight_decay=(0.0, 0.1)), ()),
}

LR_RANGE = (1e-3, 0.1)

KNOWN_DEVIATIONS = {
    "checkpoint": (
        ("nadam", "asgd"),
        "torch's load_state_dict casts floating-point state to the parameters' dtype, so a torch "
        "checkpoint round trip turns NAdam's float32 mu_product and ASGD's eta and mu into float64 "
        "and changes every later step (3e-10 relative); our state keeps torch's float32 and "
        "load_state keeps the saved dtypes",
    ),
    "size_zero": (("adafactor",), "torch.optim.Adafactor raises ZeroDivisionError for a size-0 parameter"),
    "float32_pow": (
        ("asgd",),
        "with a float32 tensor lr, ASGD's eta takes torch's float32 `** alpha` (its CPU pow/sqrt "
        "kernel), which is not always correctly rounded (1 ulp off for alpha=0.5 at step 15, for "
        "alpha=0.75 at step 38 in the reproducers); ours rounds the double-precision power, so "
        "eta can differ by one float32 ulp (1.4e-7 relative)",
    ),
    "subnormal": (
        ("adafactor",),
        "Adafactor's factored estimate multiplies two second moments (scale**4): below a scale of "
        "about 1e-77 it reaches the subnormal range, which XLA on CPU flushes to zero and torch "
        "keeps (6e-11 relative at scale 1e-100)",
    ),
}
"""Differences the fuzzer found that are torch's (or the CPU kernel's) and that it avoids
generating, with the reason. Reported in the closing note, not hidden."""


def generate(rng: np.random.Generator, steps: int = STEPS) -> Config:
    """A random configuration (reproducible from ``rng``)."""
    name = str(rng.choice(sorted(OPTIMIZERS)))
    spec = OPTIMIZERS[name]
    kwargs = {key: values[int(rng.integers(len(values)))] for key, values in spec.choices.items()}
    if name != "adafactor" and rng.random() < 0.3:
        kwargs["maximize"] = True
    if name == "sgd" and (kwargs["momentum"] == 0.0 or kwargs["dampening"] != 0.0):
        kwargs["nesterov"] = False
    lr = float(np.exp(rng.uniform(*np.log(LR_RANGE))))
    lr_kind = str(rng.choice(LR_KINDS))
    if name in KNOWN_DEVIATIONS["float32_pow"][0] and lr_kind == "float32_tensor":
        lr_kind = "float64_tensor"
    count = int(rng.integers(1, 4))
    shapes = tuple(SHAPES[int(i)] for i in rng.integers(len(SHAPES), size=count))
    if name in KNOWN_DEVIATIONS["size_zero"][0]:
        shapes = tuple(shape for shape in shapes if 0 not in shape) or ((5,),)
    scale = float(rng.choice(SCALES)) if rng.random() < 0.3 else 1.0
    if name in KNOWN_DEVIATIONS["subnormal"][0]:
        scale = max(scale, 1e-8)
    specials = tuple(
        sorted(
            (int(rng.integers(steps)), int(rng.integers(count)), int(rng.integers(100)), str(rng.choice(SPECIALS)))
            for _ in range(int(rng.integers(0, 4)))
        )
    )
    events: list[tuple[int, str, str, Any]] = []
    if lr_kind == "float" and spec.settable and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 3))):
            key = str(rng.choice(spec.settable))
            events.append((int(rng.integers(1, steps)), "set", key, _new_value(name, key, kwargs, lr, rng)))
    if rng.random() < 0.3 and name not in KNOWN_DEVIATIONS["checkpoint"][0]:
        events.append((int(rng.integers(1, steps)), "checkpoint", "", 0))
    return Config(
        name, kwargs, lr, lr_kind, shapes, scale, specials, tuple(sorted(events)), steps, int(rng.integers(2**31))
    )


def _new_value(name: str, key: str, kwargs: dict[str, Any], lr: float, rng: np.random.Generator) -> float:
    if key == "lr":
        return float(lr * rng.choice((0.1, 0.5, 2.0)))
    if key == "momentum":
        return float(rng.choice((0.0, 0.6, 0.9)))
    if key in ("dampening", "alpha"):
        return float(rng.choice((0.2, 0.7)))
    if key == "nesterov":
        return bool(kwargs.get("nesterov", False))
    return float(rng.choice((0.0, 0.05, 0.3)))


def _valid_events(config: Config) -> tuple[tuple[int, str, str, Any], ...]:
    """Drop settings torch would refuse (Nesterov needs momentum and no dampening)."""
    if config.optimizer != "sgd" or not config.kwargs.get("nesterov"):
        return config.events
    return tuple(e for e in config.events if not (e[1] == "set" and e[2] in ("momentum", "dampening")))


def _params(config: Config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    return {f"p{i}": rng.normal(size=shape) * config.scale for i, shape in enumerate(config.shapes)}


def _gradient(config: Config, params: dict[str, np.ndarray]) -> Callable[[int, Sequence[np.ndarray]], list]:
    """``h ⊙ (θ − s·θ*) + s·σ·n_t`` per leaf (parameter-dependent), with the configured specials."""
    rng = np.random.default_rng(config.seed + 1)
    leaves = list(params.values())
    curvature = [rng.uniform(0.5, 2.0, leaf.shape) for leaf in leaves]
    target = [rng.normal(size=leaf.shape) * config.scale for leaf in leaves]
    specials: dict[int, list[tuple[int, int, str]]] = {}
    for step, leaf, index, kind in config.specials:
        specials.setdefault(step, []).append((leaf, index, kind))

    def gradient(step: int, current: Sequence[np.ndarray]) -> list[np.ndarray]:
        noise_rng = np.random.default_rng([config.seed, step])
        grads = []
        for theta, h, star in zip(current, curvature, target):
            noise = noise_rng.normal(size=theta.shape) * 0.1 * config.scale
            grads.append((h * (theta - star) + noise).astype(theta.dtype))
        for leaf, index, kind in specials.get(step, ()):
            flat = grads[leaf % len(grads)].reshape(-1)
            if flat.size:
                flat[index % flat.size] = _special(kind, flat[index % flat.size])
        return grads

    return gradient


def _special(kind: str, value: float) -> float:
    return {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zero": 0.0, "flip": -value, "burst": value * 1e3}[kind]


def _lr_pair(config: Config) -> tuple[Any, Any, Any]:
    """``(ours, torch's, torch scheduler builder or None)`` for the configured lr kind."""
    import torch

    from parity.schedules_for_cases import exponential_lr

    if config.lr_kind == "float32_tensor":
        return np.float32(config.lr), torch.tensor(config.lr, dtype=torch.float32), None
    if config.lr_kind == "float64_tensor":
        return np.float64(config.lr), torch.tensor(config.lr, dtype=torch.float64), None
    if config.lr_kind == "schedule":
        schedule, scheduler = exponential_lr(config.lr, 0.97)
        return schedule, config.lr, scheduler
    return config.lr, config.lr, None


def _our_state(state: Any) -> Any:
    """The optimizer's NamedTuple inside ``optax.inject_hyperparams``'s state (or the state)."""
    return getattr(state, "inner_state", state)


def _state_pairs(optimizer: Any, state: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each per-parameter field of our state against torch's ``state[p][field]`` (same names),
    and per-group scalars (ASGD's ``eta``, NAdam's ``mu_product``) against parameter 0's."""
    import jax

    ours = _our_state(state)
    tensors = [p for group in optimizer.param_groups for p in group["params"]]
    torch_states = [optimizer.state.get(p, {}) for p in tensors]
    pairs = []
    for field in ours._fields:
        value = getattr(ours, field)
        if field == "step" or value is None:
            continue
        leaves = jax.tree.leaves(value)
        if len(leaves) == len(tensors) and not (
            len(leaves) == 1 and np.ndim(leaves[0]) == 0 and field in ("eta", "mu")
        ):
            for leaf, theirs in zip(leaves, torch_states):
                if field in theirs:
                    a, b = np.asarray(leaf, np.float64), theirs[field].detach().numpy().astype(np.float64)
                    if a.size == b.size:
                        pairs.append((a.reshape(-1), b.reshape(-1)))
        elif len(leaves) == 1 and np.ndim(leaves[0]) == 0 and torch_states and field in torch_states[0]:
            pairs.append((np.asarray(leaves[0], np.float64).reshape(1), _torch_scalar(torch_states[0][field])))
    return pairs


def _torch_scalar(value: Any) -> np.ndarray:
    return np.asarray(value.item() if hasattr(value, "item") else value, np.float64).reshape(1)


def _events(config: Config) -> Callable[[int, Any, Any], Any]:
    import functional_optreg as fo

    by_step: dict[int, list[tuple[str, str, Any]]] = {}
    for step, kind, name, value in _valid_events(config):
        by_step.setdefault(step, []).append((kind, name, value))

    def before_step(step: int, optimizer: Any, state: Any) -> Any:
        for kind, name, value in by_step.get(step, ()):
            if kind == "set":
                optimizer.param_groups[0][name] = value
                state = fo.set_hyperparams(state, **{name: value})
            elif kind == "checkpoint":
                optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
                with tempfile.TemporaryDirectory() as folder:
                    path = os.path.join(folder, "state.npz")
                    fo.save_state(path, state)
                    state = fo.load_state(path, like=state)
        return state

    return before_step


def run(config: Config) -> Result:
    """Run ``config`` on both sides in float64 and compare every step (parameters and state)."""
    import optax
    import torch

    import functional_optreg as fo
    from functional_optreg import verify

    spec = OPTIMIZERS[config.optimizer]
    ours_lr, torch_lr, scheduler = _lr_pair(config)
    factory = getattr(fo, spec.ours)
    uses_events = any(kind == "set" for _, kind, _, _ in _valid_events(config))
    torch_class = getattr(torch.optim, spec.torch)
    params = _params(config)
    try:
        torch_class([torch.zeros(2, dtype=torch.float64, requires_grad=True)], lr=torch_lr, **config.kwargs)
    except Exception as error:  # noqa: BLE001 - a configuration torch refuses must be refused by us too
        return _both_refuse(config, factory, ours_lr, error)
    transform = (optax.inject_hyperparams(factory) if uses_events else factory)(lr=ours_lr, **config.kwargs)
    try:
        report = verify.compare(
            torch_optimizer=lambda tensors: torch_class(tensors, lr=torch_lr, **config.kwargs),
            transform=transform,
            params=params,
            gradient=_gradient(config, params),
            steps=config.steps,
            dtype="float64",
            torch_scheduler=scheduler,
            before_step=_events(config),
            state_pairs=_state_pairs,
            error_scale="running",
            name=config.optimizer,
        )
    except Exception as error:  # noqa: BLE001 - any exception on one side only is a finding
        return Result(config, False, f"raised {type(error).__name__}: {error}", 1)
    if report.passed:
        return Result(config, True, f"max rel err {report.max_relative_error:.2e}")
    step = report.first_failure
    detail = f"step {step}: rel err {report.relative_errors[step - 1]:.3e} (max {report.max_relative_error:.3e})"
    return Result(config, False, detail, step)


def _both_refuse(config: Config, factory: Any, ours_lr: Any, error: Exception) -> Result:
    try:
        factory(lr=ours_lr, **config.kwargs)
    except Exception:  # noqa: BLE001
        return Result(config, True, f"both refuse: {error}")
    return Result(config, False, f"torch refuses ({type(error).__name__}: {error}), ours accepts", 0)


def _candidates(config: Config) -> list[Config]:
    """Smaller configurations, simplest first."""
    replace = dataclasses.replace
    found = []
    for index in range(len(config.events)):
        found.append(replace(config, events=config.events[:index] + config.events[index + 1 :]))
    for index in range(len(config.specials)):
        found.append(replace(config, specials=config.specials[:index] + config.specials[index + 1 :]))
    if len(config.shapes) > 1:
        for index in range(len(config.shapes)):
            specials = tuple(
                (s, leaf - (leaf > index), i, k)
                for s, leaf, i, k in config.specials
                if leaf % len(config.shapes) != index
            )
            found.append(replace(config, shapes=config.shapes[:index] + config.shapes[index + 1 :], specials=specials))
    for key in sorted(config.kwargs):
        found.append(replace(config, kwargs={k: v for k, v in config.kwargs.items() if k != key}))
    if config.lr_kind != "float":
        found.append(replace(config, lr_kind="float"))
    if config.scale != 1.0:
        found.append(replace(config, scale=1.0))
    return found


def shrink(result: Result, budget: int = 200) -> Result:
    """A minimal failing configuration: shorten to the first failing step, then drop events,
    specials, leaves and arguments (and simplify the lr and scale) while it still fails."""
    if result.passed:
        return result
    current = result
    if current.first_failure:
        shorter = run(dataclasses.replace(current.config, steps=max(current.first_failure, 1)))
        if not shorter.passed:
            current = shorter
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for candidate in _candidates(current.config):
            tries += 1
            attempt = run(candidate)
            if not attempt.passed:
                current, progress = attempt, True
                break
    return current


def reproducer(result: Result) -> str:
    """A runnable snippet that replays ``result``'s configuration."""
    return (
        "from parity.fuzz import Config, run\n"
        f"config = {result.config!r}\n"
        "print(run(config))  # " + result.detail.replace("\n", " ")
    )


def fuzz(
    seed: int, *, minutes: float | None = None, count: int | None = None, steps: int = STEPS, log: Any = print
) -> tuple[int, int, list[Result]]:
    """Run generated configurations until ``minutes`` pass or ``count`` ran.

    Returns ``(configurations, steps compared, failures shrunk to minimal reproducers)``.
    """
    rng = np.random.default_rng(seed)
    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    ran = compared = 0
    failures = []
    while (count is None or ran < count) and (deadline is None or time.monotonic() < deadline):
        result = run(generate(rng, steps))
        ran += 1
        compared += result.config.steps
        if not result.passed:
            minimal = shrink(result)
            failures.append(minimal)
            log(f"FAIL #{len(failures)} ({result.detail}); minimal reproducer:\n{reproducer(minimal)}\n")
    return ran, compared, failures
