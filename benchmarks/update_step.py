"""Jitted, donated optimizer update steps: functional_optreg vs optax vs torch, on this machine.

    python benchmarks/update_step.py                          # CPU: 1M, 2M, 10M, 50M params; 8 and 400 leaves
    python benchmarks/update_step.py --sizes 1e6 --leaves 400 --repeats 15 --optimizers adam
    python benchmarks/update_step.py --single-core --optimizers sgd_momentum   # CPU time on one pinned core
    python benchmarks/update_step.py --platform gpu --sizes 1e7 5e7       # as benchmarks/gpu.sh runs it

Each case (optimizer, parameter count, leaf count) builds every implementation, then times them
interleaved in one process (see ``benchmarks/_harness.py``). Before timing, every implementation
takes two steps from the same start and the first parameter array is compared with torch's
(``agree``: within 1e-5 relative).

Implementations:
  ours       ``fo.<name>(...)`` on the parameter tree as given (one XLA loop fusion per array).
  flat       ``optax.flatten(fo.<name>(...))``: gradients are concatenated into one vector, the
             state is one vector per field, updates are split back. Fewer, larger kernels and far
             fewer buffers crossing the jit boundary; the state layout changes (flat vectors).
  optax      optax's recipe for the same algorithm (``≈`` marks adagrad, whose eps optax puts
             inside the square root: close, not the same algorithm).
  torch      ``torch.optim.<Class>`` with ``fused=True`` where torch has it (the headline torch
             number) and with ``foreach=True``.
  floor      the optimizer's memory traffic (``reads + writes`` arrays of float32, e.g. Adam: params,
             grads and two moments in, params and two moments out: 28 bytes per parameter) at the
             streaming bandwidth of this machine, measured in the same rounds on flat arrays of
             the same total size: the better of a donated 4-in/1-out XLA kernel and torch's
             in-place ``addcmul`` (3 in, 1 out), in bytes per second.

Columns: median milliseconds per step (minimum over rounds in the JSON/Markdown output), the
ratios ours/optax, ours/torch-fused (else foreach), flat/torch and ours/floor; the first call's
lower+compile time; XLA's temporary buffer size for the step (``temp``: extra copies beyond the
donated state, 0 for the per-leaf step) and the donated bytes reused in place (``alias``);
``recomp``: recompilations of our jitted steps (ours, flat) after the first compile, over every
step of the run (must be 0; the JSON also holds optax's count: optax.sgd's ``init`` returns an
uncommitted momentum trace (likewise every optax recipe's zero state), which makes its step
compile a second time on the second call).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import math
import time
from collections.abc import Callable
from typing import Any

import _harness

# The frameworks are imported in main(), after the platform is chosen.
jax = jnp = optax = torch = fo = None


@dataclasses.dataclass(frozen=True)
class Spec:
    ours: Callable[[], Any]
    optax: Callable[[], Any]
    optax_same: bool
    torch: tuple[str, dict]
    reads: int
    writes: int


def specs() -> dict[str, Spec]:
    return {
        "adam": Spec(lambda: fo.adam(1e-3), lambda: optax.adam(1e-3), True, ("Adam", dict(lr=1e-3)), 4, 3),
        "adamw": Spec(
            lambda: fo.adamw(1e-3),
            lambda: optax.adamw(1e-3, weight_decay=1e-2),
            True,
            ("AdamW", dict(lr=1e-3)),
            4,
            3,
        ),
        "sgd_momentum": Spec(
            lambda: fo.sgd(1e-2, momentum=0.9),
            lambda: optax.sgd(1e-2, momentum=0.9),
            True,
            ("SGD", dict(lr=1e-2, momentum=0.9)),
            3,
            2,
        ),
        "rmsprop": Spec(
            lambda: fo.rmsprop(1e-2),
            lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
            True,
            ("RMSprop", dict(lr=1e-2)),
            3,
            2,
        ),
        "adagrad": Spec(
            lambda: fo.adagrad(1e-2),
            lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
            False,
            ("Adagrad", dict(lr=1e-2)),
            3,
            2,
        ),
    }


def leaf_shapes(total: int, leaves: int) -> list[tuple[int, ...]]:
    """``leaves`` shapes summing to about ``total`` elements: alternating matrices and vectors."""
    per_leaf = max(total // leaves, 1)
    shapes = []
    for index in range(leaves):
        if index % 2 == 0 and per_leaf >= 64:
            shapes.append((64, per_leaf // 64))
        else:
            shapes.append((per_leaf,))
    return shapes


@dataclasses.dataclass
class JaxImpl:
    run: Callable[[], None]
    first_param: Callable[[], Any]
    compile_s: float
    temp_bytes: int
    alias_bytes: int
    cache_size: Callable[[], int]


def jax_impl(tx, shapes, device, steps) -> JaxImpl:
    """``steps``: an int, or a one-element list read at each run (set after calibration)."""
    params = [jax.device_put(jnp.full(shape, 0.5, jnp.float32), device) for shape in shapes]
    grads = [jax.device_put(jnp.full(shape, 0.01, jnp.float32), device) for shape in shapes]
    state = jax.jit(tx.init)(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    started = time.perf_counter()
    compiled = jitted.lower(params, state, grads).compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()
    box = [params, state]

    def run():
        params, state = box
        for _ in range(_count(steps)):
            params, state = jitted(params, state, grads)
        box[0], box[1] = params, state
        # One execution defines all of its outputs at once: waiting for one waits for the step.
        params[0].block_until_ready()

    return JaxImpl(
        run=run,
        first_param=lambda: box[0][0],
        compile_s=compile_s,
        temp_bytes=getattr(memory, "temp_size_in_bytes", -1) if memory is not None else -1,
        alias_bytes=getattr(memory, "alias_size_in_bytes", -1) if memory is not None else -1,
        cache_size=jitted._cache_size,
    )


def _count(steps) -> int:
    return steps[0] if isinstance(steps, list) else steps


def stream_impl(total: int, device, steps) -> Callable[[], None]:
    """A donated 4-in/1-out kernel on flat arrays: the machine's streaming bandwidth at this size."""
    arrays = [jax.device_put(jnp.full((total,), 0.5 + k, jnp.float32), device) for k in range(4)]
    kernel = jax.jit(lambda a, b, c, d: a + b + c + d - 1.0, donate_argnums=0)
    box = [arrays]

    def run():
        a, b, c, d = box[0]
        for _ in range(_count(steps)):
            a = kernel(a, b, c, d)
        box[0] = [a, b, c, d]
        a.block_until_ready()

    return run


def torch_stream_impl(total: int, platform_name: str, steps) -> Callable[[], None]:
    """``a ← a + b·c`` in place on flat tensors (3 in, 1 out, one pass): torch's streaming bandwidth."""
    device = _harness.torch_device(platform_name)
    sync = _harness.torch_sync(platform_name)
    a, b, c = (torch.full((total,), value, device=device) for value in (0.5, 1e-3, 1e-3))

    def run():
        for _ in range(_count(steps)):
            torch.addcmul(a, b, c, out=a)
        sync()

    return run


def torch_impl(class_name, kwargs, shapes, mode, platform_name, steps):
    """``(run, first_param)`` for torch's optimizer in ``mode`` (``fused``/``foreach``), or None."""
    cls = getattr(torch.optim, class_name)
    if mode == "fused" and "fused" not in inspect.signature(cls).parameters:
        return None
    device = _harness.torch_device(platform_name)
    sync = _harness.torch_sync(platform_name)
    params = [torch.full(shape, 0.5, device=device, requires_grad=True) for shape in shapes]
    for p in params:
        p.grad = torch.full(p.shape, 0.01, device=device)
    try:
        optimizer = cls(params, **kwargs, **{mode: True})
        optimizer.step()
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return None
    with torch.no_grad():
        for p in params:
            p.fill_(0.5)
    optimizer.state.clear()

    def run():
        for _ in range(_count(steps)):
            optimizer.step()
        sync()

    return run, lambda: params[0]


def relative_gap(a, b) -> float:
    import numpy as np

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_case(name: str, spec: Spec, size: int, leaves: int, args, platform_name: str, device) -> dict:
    shapes = leaf_shapes(size, leaves)
    total = sum(math.prod(s) for s in shapes)
    counts: dict[str, list[int]] = {}  # steps per call of each runner: 1 until calibrated below

    def count(key):
        counts[key] = [1]
        return counts[key]

    impls: dict[str, JaxImpl] = {"ours": jax_impl(spec.ours(), shapes, device, count("ours"))}
    if not args.no_flat:
        impls["flat"] = jax_impl(optax.flatten(spec.ours()), shapes, device, count("flat"))
    impls["optax"] = jax_impl(spec.optax(), shapes, device, count("optax"))
    runners: dict[str, Callable[[], None]] = {key: impl.run for key, impl in impls.items()}
    firsts = {key: impl.first_param for key, impl in impls.items()}
    class_name, kwargs = spec.torch
    for mode in ("fused", "foreach"):
        key = f"torch_{mode}"
        made = torch_impl(class_name, kwargs, shapes, mode, platform_name, count(key))
        if made is not None:
            runners[key], firsts[key] = made
    runners["stream"] = stream_impl(total, device, count("stream"))
    runners["stream_torch"] = torch_stream_impl(total, platform_name, count("stream_torch"))
    torch_key = "torch_fused" if "torch_fused" in runners else "torch_foreach"

    # Two steps each from the same start, then the parameters must agree (float32 rounding apart).
    for run in runners.values():
        run()
        run()
    reference = firsts[torch_key]().detach().cpu().numpy()
    agree = all(
        relative_gap(first().detach().cpu().numpy() if key.startswith("torch") else jax.device_get(first()), reference)
        < 1e-5
        for key, first in firsts.items()
        if key != "optax" or spec.optax_same
    )
    for key, run in runners.items():
        counts[key][0] = _harness.steps_for(run, args.sample_ms / 1e3)

    times = _harness.measure(runners, args.repeats, steps={key: c[0] for key, c in counts.items()})
    # The optimizer's arrays at the better of the two streaming bandwidths (XLA: 5 arrays moved per
    # element, torch: 4).
    floor = {
        stat: (spec.reads + spec.writes) * min(times["stream"][stat] / 5, times["stream_torch"][stat] / 4)
        for stat in ("median", "min")
    }

    row = {
        "optimizer": name,
        "params": total,
        "leaves": leaves,
        "steps_per_sample": {key: c[0] for key, c in counts.items()},
        "ms": {
            key: {stat: value * 1e3 for stat, value in t.items()}
            for key, t in times.items()
            if not key.startswith("stream")
        },
        "floor_ms": {stat: value * 1e3 for stat, value in floor.items()},
        "torch_ref": torch_key,
        "optax_same": spec.optax_same,
        "compile_s": {key: impl.compile_s for key, impl in impls.items()},
        "temp_mb": {key: impl.temp_bytes / 2**20 for key, impl in impls.items()},
        "alias_mb": {key: impl.alias_bytes / 2**20 for key, impl in impls.items()},
        "compilations": {key: impl.cache_size() for key, impl in impls.items()},
        "agree": agree,
        "load": _harness.load_now(),
    }
    ratios = {}
    for stat in ("median", "min"):
        ms = {key: t[stat] for key, t in row["ms"].items()}
        ratios[stat] = {
            "ours/optax": ms["ours"] / ms["optax"],
            "ours/torch": ms["ours"] / ms[torch_key],
            "flat/torch": ms["flat"] / ms[torch_key] if "flat" in ms else float("nan"),
            "flat/optax": ms["flat"] / ms["optax"] if "flat" in ms else float("nan"),
            "ours/floor": ms["ours"] / row["floor_ms"][stat],
        }
    row["ratios"] = ratios
    return row


COLUMNS = (
    f"{'optimizer':<13}{'params':>7}{'leaves':>7}{'ours':>8}{'flat':>8}{'optax':>8}{'t.fused':>8}{'t.forch':>8}"
    f"{'floor':>8}{'/optax':>7}{'/torch':>7}{'flat/t':>7}{'/floor':>7}{'comp s':>7}{'temp':>6}{'alias':>7}"
    f"{'recomp':>7}{'agree':>6}"
)


def format_row(row: dict) -> str:
    ms = {key: t["median"] for key, t in row["ms"].items()}
    r = row["ratios"]["median"]

    def cell(key, width=8):
        return f"{ms[key]:>{width}.2f}" if key in ms else f"{'-':>{width}}"

    recompiles = max(count for key, count in row["compilations"].items() if key != "optax") - 1
    optax_mark = "" if row["optax_same"] else "≈"
    agree = "yes" if row["agree"] else "NO"
    return (
        f"{row['optimizer']:<13}{row['params'] / 1e6:>6.0f}M{row['leaves']:>7}"
        f"{cell('ours')}{cell('flat')}{cell('optax')}{cell('torch_fused')}{cell('torch_foreach')}"
        f"{row['floor_ms']['median']:>8.2f}{optax_mark:>1}{r['ours/optax']:>6.2f}{r['ours/torch']:>7.2f}"
        f"{r['flat/torch']:>7.2f}{r['ours/floor']:>7.2f}{row['compile_s']['ours']:>7.1f}"
        f"{row['temp_mb']['ours']:>6.0f}{row['alias_mb']['ours']:>7.0f}{recompiles:>7}{agree:>6}"
    )


MARKDOWN_NOTE = (
    "Median ms per step over interleaved rounds (minimum in parentheses); ratios likewise. ours = fo.<name> "
    "on the arrays as given; flat = optax.flatten(fo.<name>) (flat state vectors); torch = fused where torch "
    "has it (RMSprop: foreach); floor = the optimizer's bytes (Adam 28 B/parameter) at the streaming "
    "bandwidth measured in the same rounds. ≈: optax's adagrad is not the same algorithm (eps inside the "
    "square root). temp MB: XLA's temporary buffers for our step (0: no copy of the state); recompiles: of "
    "our jitted steps after the first call (optax.sgd and friends recompile once: see update_step.py)."
)


def markdown_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "optimizer",
        "params",
        "leaves",
        "ours ms",
        "flat ms",
        "optax ms",
        "torch fused ms",
        "torch foreach ms",
        "floor ms",
        "ours/optax",
        "ours/torch",
        "flat/torch",
        "ours/floor",
        "compile s",
        "temp MB",
        "recompiles",
        "agree",
    ]
    out = []
    for row in rows:
        ms = row["ms"]

        def cell(key):
            return f"{ms[key]['median']:.2f} ({ms[key]['min']:.2f})" if key in ms else "–"

        def ratio(key):
            med, low = row["ratios"]["median"][key], row["ratios"]["min"][key]
            return f"{med:.2f} ({low:.2f})"

        out.append(
            [
                row["optimizer"],
                f"{row['params'] / 1e6:.0f}M",
                str(row["leaves"]),
                cell("ours"),
                cell("flat"),
                cell("optax"),
                cell("torch_fused"),
                cell("torch_foreach"),
                f"{row['floor_ms']['median']:.2f}",
                ("" if row["optax_same"] else "≈") + ratio("ours/optax"),
                ratio("ours/torch"),
                ratio("flat/torch"),
                ratio("ours/floor"),
                f"{row['compile_s']['ours']:.1f}",
                f"{row['temp_mb']['ours']:.0f}",
                str(max(count for key, count in row["compilations"].items() if key != "optax") - 1),
                "yes" if row["agree"] else "NO",
            ]
        )
    return header, out


def setup(platform: str | None, single_core: bool) -> str:
    """Pin (optionally), import the frameworks into this module, pick the platform; returns it."""
    global jax, jnp, optax, torch, fo
    if single_core:
        _harness.pin_to_one_core()
    import jax as _jax
    import jax.numpy as _jnp
    import optax as _optax
    import torch as _torch

    jax, jnp, optax, torch = _jax, _jnp, _optax, _torch
    platform_name = _harness.configure(platform)
    import functional_optreg as _fo

    fo = _fo
    return platform_name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platform", choices=["cpu", "gpu"], default=None, help="default: JAX's default backend")
    parser.add_argument("--optimizers", nargs="+", default=None)
    parser.add_argument(
        "--sizes", nargs="+", type=float, default=None, help="parameter counts (default 1e6 2e6 1e7 5e7)"
    )
    parser.add_argument("--leaves", nargs="+", type=int, default=[8, 400])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds per case")
    parser.add_argument("--sample-ms", type=float, default=20.0, help="approximate length of one sample")
    parser.add_argument("--no-flat", action="store_true", help="skip the optax.flatten variant")
    parser.add_argument(
        "--single-core", action="store_true", help="pin to one core and time CPU time (load-robust, per core)"
    )
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--markdown", help="append a Markdown section with the results to this file")
    args = parser.parse_args(argv)
    platform_name = setup(args.platform, args.single_core)
    device = jax.devices()[0]
    sizes = args.sizes or [1e6, 2e6, 1e7, 5e7]
    table = specs()
    names = args.optimizers or list(table)
    info = _harness.environment(platform_name)
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    print(COLUMNS)
    rows = []
    try:
        for name in names:
            for size in sizes:
                for leaves in args.leaves:
                    row = run_case(name, table[name], int(size), leaves, args, platform_name, device)
                    rows.append(row)
                    print(format_row(row), flush=True)
                    gc.collect()
    except KeyboardInterrupt:  # gpu.sh's time limit: keep the rows measured so far
        info["interrupted"] = f"after {len(rows)} cases"
        print(f"interrupted after {len(rows)} cases", flush=True)
    info["load average (1, 5, 15 min) at end"] = _harness.load_now()
    print(f"load average at end: {info['load average (1, 5, 15 min) at end']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "rows": rows}, handle, indent=1)
    if args.markdown:
        header, cells = markdown_rows(rows)
        notes = [MARKDOWN_NOTE]
        _harness.append(
            args.markdown,
            _harness.markdown_section(f"Update step, {info['device']}", info, header, cells, notes),
        )


if __name__ == "__main__":
    main()
