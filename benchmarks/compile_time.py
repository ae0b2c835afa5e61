"""Compile time on CPU: the seed CNN's training step, and ``tx.init`` / ``tx.update`` for two models.

    python benchmarks/compile_time.py                     # Adam, AdamW, SGD(momentum), RMSprop, Adagrad
    python benchmarks/compile_time.py --optimizers adam --markdown benchmarks/RESULTS.md

Models: the seed CNN's parameters (8 arrays, 421,642 parameters) and a 400-leaf model
(``update_step.leaf_shapes(2M, 400)``: 2M parameters in 400 arrays, alternating matrices and
vectors). Measured per optimizer, each in its own jit:

  init           ``jax.jit(tx.init)``: trace + lower, then XLA compile
  update         ``jax.jit(lambda g, s, p: tx.update(g, s, p))`` followed by ``optax.apply_updates``
  train step     (seed CNN only) ``model_flax.train_step``: loss, gradient, update, in one jit

Each figure is the median of ``--repeats`` fresh compilations (JAX's caches are cleared between
them), split into tracing + lowering (Python, JAX) and XLA's compilation; the target is < 2 s
for each whole figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _harness

jax = jnp = optax = fo = None


def timed_compile(function, *args) -> tuple[float, float, float]:
    """``(trace + lower s, XLA compile s, CPU s)`` of ``jax.jit(function)`` for ``args``, uncached.

    The first two are wall clock; the third is the process's CPU time for both (all threads), which
    other processes on a shared machine barely disturb.
    """
    jax.clear_caches()
    cpu = time.process_time()
    started = time.perf_counter()
    lowered = jax.jit(function).lower(*args)
    traced = time.perf_counter()
    lowered.compile()
    return traced - started, time.perf_counter() - traced, time.process_time() - cpu


def seed_cnn_params():
    from examples.seed_cnn import model_flax

    return model_flax.init_params(0)


def many_leaf_params(total: int = 2_000_000, leaves: int = 400):
    from update_step import leaf_shapes

    return [jnp.full(shape, 0.5, jnp.float32) for shape in leaf_shapes(total, leaves)]


def optimizers():
    return {
        "adam": lambda: fo.adam(1e-3),
        "adamw": lambda: fo.adamw(1e-3),
        "sgd_momentum": lambda: fo.sgd(1e-2, momentum=0.9),
        "rmsprop": lambda: fo.rmsprop(1e-2),
        "adagrad": lambda: fo.adagrad(1e-2),
    }


def measure(name: str, make_tx, repeats: int) -> list[dict]:
    from train_step import batch

    from examples.seed_cnn import model_flax

    rows = []
    images, labels = batch(64)
    for model, params in (("seed CNN", seed_cnn_params()), ("400 leaves", many_leaf_params())):
        tx = make_tx()
        state = tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)

        def update(g, s, p, tx=tx):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        cases = {"init": (tx.init, (params,)), "update": (update, (grads, state, params))}
        if model == "seed CNN":
            x, y = jnp.asarray(images), jnp.asarray(labels)
            cases["train step"] = (
                lambda p, s, a, b, tx=tx: model_flax.train_step.__wrapped__(tx, p, s, a, b),
                (params, state, x, y),
            )
        for what, (function, args) in cases.items():
            samples = [timed_compile(function, *args) for _ in range(repeats)]
            trace = statistics.median(s[0] for s in samples)
            xla = statistics.median(s[1] for s in samples)
            total = statistics.median(s[0] + s[1] for s in samples)
            cpu = statistics.median(s[2] for s in samples)
            rows.append(
                {
                    "optimizer": name,
                    "model": model,
                    "what": what,
                    "trace_s": trace,
                    "xla_s": xla,
                    "total_s": total,
                    "cpu_s": cpu,
                }
            )
            print(f"{name:<13}{model:<12}{what:<12}{trace:>9.2f}{xla:>9.2f}{total:>9.2f}{cpu:>9.2f}", flush=True)
    return rows


def main(argv=None):
    global jax, jnp, optax, fo
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    import jax as _jax
    import jax.numpy as _jnp
    import optax as _optax

    jax, jnp, optax = _jax, _jnp, _optax
    platform_name = _harness.configure("cpu")
    import functional_optreg as _fo

    fo = _fo
    info = _harness.environment(platform_name)
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    print(f"{'optimizer':<13}{'model':<12}{'jit of':<12}{'trace s':>9}{'XLA s':>9}{'total s':>9}{'CPU s':>9}")
    table = optimizers()
    rows = [row for name in args.optimizers or list(table) for row in measure(name, table[name], args.repeats)]
    info["load average (1, 5, 15 min) at end"] = _harness.load_now()
    worst = max(rows, key=lambda row: row["total_s"])
    load = info["load average (1, 5, 15 min) at end"]
    print(f"slowest: {worst['optimizer']} {worst['model']} {worst['what']} {worst['total_s']:.2f} s; load {load}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "rows": rows}, handle, indent=1)
    if args.markdown:
        header = ["optimizer", "model", "jit of", "trace + lower s", "XLA compile s", "total s (wall)", "CPU s"]
        cells = [
            [
                r["optimizer"],
                r["model"],
                r["what"],
                f"{r['trace_s']:.2f}",
                f"{r['xla_s']:.2f}",
                f"{r['total_s']:.2f}",
                f"{r['cpu_s']:.2f}",
            ]
            for r in rows
        ]
        note = f"Median of {args.repeats} uncached compilations each (jax.clear_caches() before each)."
        _harness.append(
            args.markdown, _harness.markdown_section(f"Compile time, {info['device']}", info, header, cells, [note])
        )


if __name__ == "__main__":
    main()
