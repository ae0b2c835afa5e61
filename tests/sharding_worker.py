"""Sharding checks on 8 simulated CPU devices; run by tests/test_sharding.py in a subprocess.

The device count is fixed when JAX initialises its backend, so these checks cannot run in the
main test process (one device). Usage: ``python tests/sharding_worker.py`` prints one JSON object
per line, ``{"category", "name", "ok", "detail"}``; the exit status is 0 even when a check fails
(the test reports the failures).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from bounds import U64  # noqa: E402  (the script's own folder, tests/, is on sys.path)
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

import functional_optreg as fo  # noqa: E402

STEPS = 12
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")

ELEMENTWISE = {
    "sgd": lambda: fo.sgd(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
    "adam": lambda: fo.adam(lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": lambda: fo.adamw(lr=0.01, weight_decay=0.1),
    "rmsprop": lambda: fo.rmsprop(lr=0.01, centered=True, momentum=0.5),
    "adagrad": lambda: fo.adagrad(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": lambda: fo.adadelta(lr=1.0, weight_decay=0.05),
    "adamax": lambda: fo.adamax(lr=0.02),
    "nadam": lambda: fo.nadam(lr=0.01, weight_decay=0.1),
    "radam": lambda: fo.radam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "asgd": lambda: fo.asgd(lr=0.02, t0=5),
    "rprop": lambda: fo.rprop(lr=0.02),
}
ZERO_SUBSET = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")
FLOAT64_SUBSET = ("sgd", "adam", "rmsprop", "radam")


def emit(category, name, ok, detail=""):
    print(json.dumps({"category": category, "name": name, "ok": bool(ok), "detail": detail}), flush=True)


def host_tree(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"kernel": rng.normal(size=(8, 12)), "bias": np.zeros(12)},
        "conv": rng.normal(size=(3, 3, 2, 8)),
        "scale": np.asarray(1.5),
        "odd": rng.normal(size=5),
    }


def cast(tree, dtype):
    return jax.tree.map(lambda x: np.asarray(x, dtype), tree)


def gradient_stream(dtype, scale=1.0):
    return [cast(jax.tree.map(lambda x: x * scale, host_tree(dtype, seed=100 + k)), dtype) for k in range(STEPS)]


def put(tree, shardings):
    return jax.tree.map(lambda x, s: jax.device_put(x, s), tree, shardings)


def make_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def run(tx, params, grads_stream, shardings):
    """``STEPS`` jitted steps from ``jax.jit(tx.init)``.

    Returns the trajectory of (params, state) as host arrays, the initial state, the final
    (params, state) as device arrays and the compiled step's HLO text.
    """
    params = put(params, shardings)
    state = initial = jax.jit(tx.init)(params)
    step = make_step(tx)
    trajectory = []
    for grads in grads_stream:
        params, state = step(params, state, put(grads, shardings))
        trajectory.append(jax.tree.map(np.asarray, (params, state)))
    hlo = step.lower(params, state, put(grads_stream[0], shardings)).compile().as_text()
    return trajectory, initial, (params, state), hlo


def param_shaped_fields(state, params):
    """The sub-trees of a NamedTuple state that have the parameters' tree structure."""
    treedef = jax.tree.structure(params)
    return {
        field: value
        for field, value in state._asdict().items()
        if value is not None and jax.tree.structure(value) == treedef
    }


def bitwise_equal(left, right):
    pairs = list(zip(jax.tree.leaves(left), jax.tree.leaves(right)))
    return all(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True) for a, b in pairs)


def max_relative_difference(left, right):
    worst = 0.0
    for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
        scale = float(np.max(np.abs(b), initial=0.0))
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        worst = max(worst, diff / scale if scale else diff)
    return worst


def collectives_in(hlo_text):
    return [name for name in COLLECTIVES if name in hlo_text]


def check_param_sharded(dtype, names):
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    specs = {
        "dense": {"kernel": P("data", "model"), "bias": P("model")},
        "conv": P(None, None, "data", "model"),
        "scale": P(),
        "odd": P(),
    }
    sharded = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    single = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), specs)
    params, grads = cast(host_tree(dtype), dtype), gradient_stream(dtype)
    for name in names:
        label = f"{name}/{np.dtype(dtype).name}"
        tx = ELEMENTWISE[name]()
        ours, fresh, (_, state), hlo = run(tx, params, grads, sharded)
        reference, *_ = run(tx, params, grads, single)

        mismatched = [
            f"{field}{jax.tree_util.keystr(path)}"
            for field, tree in param_shaped_fields(fresh, params).items()
            for (path, leaf), target in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(sharded))
            if not leaf.sharding.is_equivalent_to(target, leaf.ndim)
        ]
        emit("init_sharding", label, not mismatched, f"leaves not sharded like params: {mismatched}")

        kept = [
            f"{field}{jax.tree_util.keystr(path)}"
            for field, tree in param_shaped_fields(state, params).items()
            for (path, leaf), target in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(sharded))
            if not leaf.sharding.is_equivalent_to(target, leaf.ndim)
        ]
        emit("step_keeps_sharding", label, not kept, f"leaves resharded by the step: {kept}")

        found = collectives_in(hlo)
        emit("no_collectives", label, not found, f"compiled step contains {found}")

        same = all(bitwise_equal(a, b) for a, b in zip(ours, reference))
        detail = f"max relative difference {max(max_relative_difference(a, b) for a, b in zip(ours, reference)):.3e}"
        emit("bitwise_vs_single_device", label, same, detail)


def check_clipping():
    mesh = Mesh(np.array(jax.devices()), ("model",))
    specs = {
        "dense": {"kernel": P("model", None), "bias": P()},
        "conv": P(None, None, None, "model"),
        "scale": P(),
        "odd": P(),
    }
    sharded = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    single = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), specs)
    with jax.enable_x64(True):
        params, grads = cast(host_tree(np.float64), np.float64), gradient_stream(np.float64, scale=3.0)
        clippers = (
            ("clip_grad_norm_2", fo.clip_grad_norm(1.0)),
            ("clip_grad_norm_inf", fo.clip_grad_norm(0.5, norm_type="inf")),
        )
        for name, clip in clippers:
            tx = optax.chain(clip, fo.adam(lr=0.01))
            ours, _, _, hlo = run(tx, params, grads, sharded)
            reference, *_ = run(tx, params, grads, single)
            worst = max(max_relative_difference(a, b) for a, b in zip(ours, reference))
            clipped = bool(np.asarray(reference[0][1][0].total_norm) > 1.0)
            found = collectives_in(hlo)
            # The sides differ only in the order of the 258-term sum of squares (per-shard partial
            # sums all-reduced vs one reduction): the clip coefficient moves by δ ≤ 257u ≈ 2.9e-14
            # (typically √258·u ≈ 2e-15). The compared trees hold Adam's moments, off by δ (exp_avg)
            # and 2δ (exp_avg_sq) of themselves, and the parameters: Adam is invariant to a common
            # gradient scale apart from eps, but mixes steps with different δ, so a step moves by
            # ≤ 2δ of itself (the zero-started bias is measured against its own 12 steps). Bound:
            # 2δ plus the coefficient's own ÷ and the product (2u each side), ≈ 5.8e-14; the former
            # 1e-14 held only for the typical order difference.
            bound = 2 * (257 + 2) * U64
            emit(
                "clip_float64_rounding",
                name,
                worst <= bound and clipped and "all-reduce" in found,
                f"max relative difference {worst:.3e}; clipping active: {clipped}; collectives {found}",
            )


def check_zero1(dtype):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), host_tree(dtype))
    single = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), host_tree(dtype))
    params, grads = cast(host_tree(dtype), dtype), gradient_stream(dtype)
    for name in ZERO_SUBSET:
        label = f"{name}/{np.dtype(dtype).name}"
        tx = fo.shard_optimizer_state(ELEMENTWISE[name](), mesh, "data")
        ours, _, (last_params, state), hlo = run(tx, params, grads, replicated)
        reference, *_ = run(ELEMENTWISE[name](), params, grads, single)

        wrong = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            spec = fo.zero_partition_spec(leaf.shape, "data", 8)
            expected = NamedSharding(mesh, spec)
            if not leaf.sharding.is_equivalent_to(expected, leaf.ndim):
                wrong.append(jax.tree_util.keystr(path))
        split = sum(
            1 for leaf in jax.tree.leaves(state) if leaf.ndim and leaf.addressable_shards[0].data.size * 8 == leaf.size
        )
        emit(
            "zero1_state_split",
            label,
            not wrong and split > 0,
            f"{split} state leaves split 8 ways; leaves not on their ZeRO spec: {wrong}",
        )
        replicated_out = all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(last_params))
        found = collectives_in(hlo)
        emit(
            "zero1_collectives",
            label,
            replicated_out and found == ["all-gather"],
            f"params replicated after the step: {replicated_out}; collectives {found}",
        )
        same = all(bitwise_equal(a, b) for a, b in zip(ours, reference))
        detail = f"max relative difference {max(max_relative_difference(a, b) for a, b in zip(ours, reference)):.3e}"
        emit("zero1_bitwise_vs_single_device", label, same, detail)


def check_explicit_mesh():
    """``jax.make_mesh``'s default Explicit axes: param-sharded state and ZeRO-1, under set_mesh."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    host = {"w": np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32), "b": np.zeros(8, np.float32)}
    stream = [jax.tree.map(lambda x, k=k: (x + 0.1 * k).astype(np.float32), host) for k in range(1, STEPS + 1)]
    single = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), host)
    reference, *_ = run(ELEMENTWISE["adam"](), host, stream, single)
    layouts = {
        "param_sharded": (ELEMENTWISE["adam"](), jax.tree.map(lambda _: NamedSharding(mesh, P("data")), host)),
        "zero1": (
            fo.shard_optimizer_state(ELEMENTWISE["adam"](), mesh, "data"),
            jax.tree.map(lambda _: NamedSharding(mesh, P()), host),
        ),
    }
    for name, (tx, shardings) in layouts.items():
        with jax.sharding.set_mesh(mesh):
            ours, _, (_, state), _ = run(tx, host, stream, shardings)
        split = all(
            leaf.addressable_shards[0].data.size * 8 == leaf.size
            for leaf in jax.tree.leaves((state.exp_avg, state.exp_avg_sq))
        )
        same = all(bitwise_equal(a, b) for a, b in zip(ours, reference))
        emit("explicit_mesh", name, split and same, f"state split 8 ways: {split}; bitwise equal: {same}")


def timed(label, fn, *args):
    start = time.perf_counter()
    fn(*args)
    print(f"# {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def main():
    emit("devices", "count", jax.device_count() == 8, f"{jax.device_count()} devices")
    timed("param-sharded float32", check_param_sharded, np.float32, tuple(ELEMENTWISE))
    with jax.enable_x64(True):
        timed("param-sharded float64", check_param_sharded, np.float64, FLOAT64_SUBSET)
    timed("clipping", check_clipping)
    timed("zero1", check_zero1, np.float32)
    timed("explicit mesh", check_explicit_mesh)


if __name__ == "__main__":
    main()
