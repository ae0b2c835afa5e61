"""Jitted, donated optimizer update steps: functional_optreg vs optax vs torch, on this machine.

    python benchmarks/update_step.py                    # 1M, 10M, 50M params; 8 and 400 leaves
    python benchmarks/update_step.py --sizes 1e6 --leaves 400 --repeats 15

For each (optimizer, size, leaf count) every implementation runs the same number of steps,
interleaved (A, B, C, A, B, C, ...) in one process, and the median step time is reported with the
ratios ours/optax and ours/torch (torch's fastest: fused where it has it, else foreach). The
memory-traffic floor is a jitted kernel that reads and writes the same bytes as the optimizer
(Adam: params, grads, two moments in; params and two moments out) with trivial arithmetic.
Compile time is the first call's lower+compile; ``temp`` is XLA's temporary buffer size for the
step (0 means no extra copies of the state) and ``alias`` the donated bytes reused in place.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax
import torch

import functional_optreg as fo

# (ours, optax's same-algorithm recipe, torch class + kwargs, arrays read, arrays written)
OPTIMIZERS: dict[str, tuple[Callable, Callable, tuple, int, int]] = {
    "adam": (lambda: fo.adam(1e-3), lambda: optax.adam(1e-3), (torch.optim.Adam, dict(lr=1e-3)), 4, 3),
    "adamw": (lambda: fo.adamw(1e-3), lambda: optax.adamw(1e-3, weight_decay=1e-2), (torch.optim.AdamW, dict(lr=1e-3)), 4, 3),
    "sgd_momentum": (
        lambda: fo.sgd(1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
        (torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
        3,
        2,
    ),
    "rmsprop": (
        lambda: fo.rmsprop(1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        (torch.optim.RMSprop, dict(lr=1e-2)),
        3,
        2,
    ),
    "adagrad": (
        lambda: fo.adagrad(1e-2),
        lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
        (torch.optim.Adagrad, dict(lr=1e-2)),
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


def jax_stepper(tx: optax.GradientTransformation, shapes):
    params = [jnp.full(shape, 0.5, jnp.float32) for shape in shapes]
    grads = [jnp.full(shape, 0.01, jnp.float32) for shape in shapes]
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    started = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    compile_seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    box = {"params": params, "state": state}

    def run():
        box["params"], box["state"] = compiled(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    return run, compile_seconds, memory


def floor_stepper(shapes, reads: int, writes: int):
    """A kernel moving the optimizer's bytes: ``reads`` arrays in, ``writes`` arrays out, donated."""
    arrays = [[jnp.full(shape, 0.5, jnp.float32) for shape in shapes] for _ in range(reads)]

    def kernel(*groups):
        total = [sum(parts) for parts in zip(*groups)]
        return [[t * (k + 1) for t in total] for k in range(writes)]

    compiled = jax.jit(kernel, donate_argnums=tuple(range(writes))).lower(*arrays).compile()
    box = {"arrays": arrays}

    def run():
        outs = compiled(*box["arrays"])
        box["arrays"] = list(outs) + box["arrays"][writes:]
        jax.block_until_ready(outs)

    return run


def torch_stepper(cls, kwargs, shapes, mode: str):
    params = [torch.full(shape, 0.5, requires_grad=True) for shape in shapes]
    for p in params:
        p.grad = torch.full(p.shape, 0.01)
    optimizer = cls(params, **kwargs, **{mode: True})

    def run():
        optimizer.step()

    return run


def torch_modes(cls) -> list[str]:
    import inspect

    return ["fused", "foreach"] if "fused" in inspect.signature(cls).parameters else ["foreach"]


def measure(runners: dict[str, Callable], repeats: int) -> dict[str, float]:
    for run in runners.values():
        run()
        run()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 5e7])
    parser.add_argument("--leaves", nargs="+", type=int, default=[8, 400])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), optax {optax.__version__}, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    header = (f"{'optimizer':<13}{'params':>8}{'leaves':>7}{'ours ms':>9}{'optax ms':>9}{'torch ms':>9}"
              f"{'floor ms':>9}{'/optax':>8}{'/torch':>8}{'/floor':>8}  torch mode   compile s  temp MB alias MB")
    print(header)
    for name in args.optimizers:
        ours, reference, (cls, kwargs), reads, writes = OPTIMIZERS[name]
        for size in args.sizes:
            for leaves in args.leaves:
                shapes = leaf_shapes(int(size), leaves)
                ours_run, compile_seconds, memory = jax_stepper(ours(), shapes)
                optax_run, _, _ = jax_stepper(reference(), shapes)
                runners = {"ours": ours_run, "optax": optax_run, "floor": floor_stepper(shapes, reads, writes)}
                for mode in torch_modes(cls):
                    runners[f"torch_{mode}"] = torch_stepper(cls, kwargs, shapes, mode)
                medians = measure(runners, args.repeats)
                torch_mode = min((k for k in medians if k.startswith("torch_")), key=medians.get)
                print(
                    f"{name:<13}{size / 1e6:>7.0f}M{leaves:>7}"
                    f"{medians['ours'] * 1e3:>9.2f}{medians['optax'] * 1e3:>9.2f}{medians[torch_mode] * 1e3:>9.2f}"
                    f"{medians['floor'] * 1e3:>9.2f}"
                    f"{medians['ours'] / medians['optax']:>8.2f}{medians['ours'] / medians[torch_mode]:>8.2f}"
                    f"{medians['ours'] / medians['floor']:>8.2f}  {torch_mode[6:]:<11}{compile_seconds:>9.2f}"
                    f"{memory.temp_size_in_bytes / 2**20:>9.1f}{memory.alias_size_in_bytes / 2**20:>9.1f}",
                    flush=True,
                )
                del runners


if __name__ == "__main__":
    main()
