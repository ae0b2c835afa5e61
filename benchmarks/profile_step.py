"""Per-op profile of the seed CNN's jitted training step on XLA:CPU, from XLA's own thunk trace.

    python benchmarks/profile_step.py                           # batch 64 and 256, both poolings
    python benchmarks/profile_step.py --batches 256 --pooling torch_rule --single-core
    python benchmarks/profile_step.py --markdown benchmarks/RESULTS.md

The step is ``model_flax.train_step`` with ``fo.adam(1e-3)`` (the main job's step). ``--pooling``
selects the network's 2×2 max-pool: ``torch_rule`` is the model's own
(:func:`examples.seed_cnn.pooling.max_pool_2x2`: element-wise loops in both passes),
``flax`` is ``flax.linen.max_pool`` (XLA's ``reduce-window`` forward and ``select-and-scatter``
gradient), the model's pooling before issue 17.

Like ``train_step.py``, the run applies the main job's XLA:CPU and host-memory settings first
(``_harness.apply_main_job_settings``); ``--plain-xla`` and ``--default-malloc`` opt out.

Method: ``jax.profiler.trace`` records one event per executed XLA:CPU thunk (a fusion, a
convolution, a dot); per thunk the fastest of ``--steps`` steps is kept (on a shared machine a
slow sample is another process's time, not the thunk's), and likewise the fastest whole step.
Each thunk is labelled from the optimized HLO: convolutions by what they compute (forward, input
gradient, weight gradient, from their shapes), dots, the pooling with its bias and ReLU, layout
copies, the optimizer's update (ops outside the gradient), the rest. Thunk time is the time inside
XLA's kernels; the wall time per step also holds dispatch and the gaps between thunks.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import tempfile
import time

import _harness
import numpy as np

LABELS = (
    "conv1 forward",
    "conv1 weight grad",
    "conv2 forward",
    "conv2 input grad",
    "conv2 weight grad",
    "bias, ReLU and pooling",
    "dense (dots)",
    "layout copies (transposes)",
    "loss, bias grads, other",
    "optimizer update",
)


def _instructions(hlo: str) -> dict[str, tuple[str, str, str]]:
    """``{name: (output shape, called computation body, op_name metadata)}`` for the entry computation."""
    bodies: dict[str, str] = {}
    for match in re.finditer(r"^(?:%)?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M):
        bodies[match.group(1)] = match.group(2)
    entry = hlo[hlo.index("\nENTRY") :]
    found = {}
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+)", line)
        if not match:
            continue
        calls = re.search(r"calls=%([\w.\-]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        body = bodies.get(calls.group(1), "") if calls else line
        found[match.group(1)] = (match.group(2), body, op_name.group(1) if op_name else "")
    return found


def label(name: str, shape: str, body: str, op_name: str, batch: int) -> str:
    """The row of :data:`LABELS` a thunk belongs to (see the module docstring)."""
    del name
    shape = shape.lstrip("(")  # a tuple's first element
    if "convolution(" in body and "fusion(" not in body:
        if shape.startswith(f"f32[{batch},28,28,32]"):
            return "conv1 forward"
        if shape.startswith(f"f32[{batch},14,14,64]"):
            return "conv2 forward"
        if shape.startswith(f"f32[{batch},14,14,32]"):
            return "conv2 input grad"
        return "conv1 weight grad" if re.match(r"f32\[(1,3,3,32|3,3,1,32)\]", shape) else "conv2 weight grad"
    if op_name and "jvp" not in op_name:
        return "optimizer update"
    if " dot(" in body or "dot_general" in op_name:
        return "dense (dots)"
    activation = re.match(rf"[fs]32\[{batch},(28|14|7),", shape) or re.match(r"s32\[\d{5,},", shape)
    if any(key in body for key in ("reduce-window(", "select-and-scatter(", "scatter(")) and (
        activation or re.match(r"[fs]32\[\d{4,}", shape)
    ):
        return "bias, ReLU and pooling"
    if activation:
        return "bias, ReLU and pooling"
    if ("transpose(" in body or "copy(" in body) and "," in shape.split("]")[0]:
        return "layout copies (transposes)"
    return "loss, bias grads, other"


def profile(batch: int, pooling: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from train_step import batch as make_batch

    import functional_optreg as fo
    from examples.seed_cnn import model_flax

    step = model_flax.train_step if pooling == "torch_rule" else flax_pool_train_step()
    tx = fo.adam(1e-3)
    params = model_flax.init_params(0)
    state = tx.init(params)
    images, labels = make_batch(batch)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    hlo = step.lower(tx, params, state, x, y).compile().as_text()
    instructions = _instructions(hlo)
    for _ in range(3):
        jax.block_until_ready(step(tx, params, state, x, y))
    directory = tempfile.mkdtemp(prefix="profile_step_")
    walls = []
    try:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                started = time.perf_counter()
                jax.block_until_ready(step(tx, params, state, x, y))
                walls.append(time.perf_counter() - started)
        (path,) = glob.glob(os.path.join(directory, "plugins", "profile", "*", "perfetto_trace.json.gz"))
        with gzip.open(path) as handle:
            events = json.load(handle)["traceEvents"]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    durations: dict[str, list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and event["name"] in instructions:
            durations[event["name"]].append(event.get("dur", 0.0) / 1e3)
    # Each thunk runs once per step; its fastest run is the least disturbed by other processes.
    per_thunk = {name: min(values) for name, values in durations.items()}
    per_label: dict[str, float] = dict.fromkeys(LABELS, 0.0)
    for name, ms in per_thunk.items():
        per_label[label(name, *instructions[name], batch)] += ms
    kernels = sum(per_label.values())
    return {
        "batch": batch,
        "pooling": pooling,
        "steps": steps,
        "wall_ms": min(walls) * 1e3,
        "kernels_ms": kernels,
        "ms": per_label,
        "top": sorted(
            ((ms, name, label(name, *instructions[name], batch)) for name, ms in per_thunk.items()), reverse=True
        ),
        "load": _harness.load_now(),
    }


def flax_pool_loss(params, images, labels):
    """The seed CNN's NLL loss with ``flax.linen.max_pool`` instead of the model's pooling."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    x = images
    for name in ("conv1", "conv2"):
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = nn.max_pool(nn.relu(x + bias), (2, 2), strides=(2, 2))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.relu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"])
    log_probs = nn.log_softmax(x @ params["fc2"]["kernel"] + params["fc2"]["bias"])
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def flax_pool_train_step():
    """``model_flax.train_step`` on :func:`flax_pool_loss`."""
    import functools

    import jax
    import optax

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, params, state, images, labels):
        value, grads = jax.value_and_grad(flax_pool_loss)(params, images, labels)
        updates, state = tx.update(grads, state, params)
        return value, optax.apply_updates(params, updates), state

    return step


def table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["op"] + [f"batch {r['batch']}, {r['pooling']} pooling: ms (share)" for r in results]
    rows = []
    for key in LABELS:
        rows.append([key] + [f"{r['ms'][key]:.2f} ({r['ms'][key] / r['wall_ms']:.0%})" for r in results])
    rows.append(["all thunks"] + [f"{r['kernels_ms']:.2f} ({r['kernels_ms'] / r['wall_ms']:.0%})" for r in results])
    rows.append(["wall time per step"] + [f"{r['wall_ms']:.2f}" for r in results])
    rows.append(["load at end"] + [r["load"] for r in results])
    return header, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--pooling", nargs="+", choices=["flax", "torch_rule"], default=["flax", "torch_rule"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--single-core", action="store_true", help="pin to one core (one XLA thread)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    _harness.add_main_job_options(parser)
    args = parser.parse_args(argv)
    if args.single_core:
        _harness.pin_to_one_core()
    host_memory = _harness.apply_main_job_settings(args)
    platform_name = _harness.configure("cpu")
    info = _harness.environment(platform_name)
    info["host memory"] = host_memory
    results = [profile(b, p, args.steps) for b in args.batches for p in args.pooling]
    header, rows = table(results)
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(row))
    for result in results:
        top = ", ".join(f"{name} [{kind}] {ms:.2f}" for ms, name, kind in result["top"][:16])
        print(f"batch {result['batch']} {result['pooling']}: largest thunks (ms): {top}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "profiles": results}, handle, indent=1, default=str)
    if args.markdown:
        note = (
            "Per step, the time inside XLA:CPU's thunks per op (jax.profiler trace, per thunk the fastest of "
            f"{args.steps} steps), and its share of the fastest step's wall time."
        )
        _harness.append(
            args.markdown,
            _harness.markdown_section(f"Seed CNN step profile, {info['device']}", info, header, rows, [note]),
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
