"""Data-parallel training in one of N JAX processes; started by tests/mp_harness.py's ``launch``.

Every process builds the same global mesh (one axis, ``"data"``, over all devices of all
processes), feeds only its own slices of each global batch (``jax.make_array_from_callback``)
and runs the same jitted step, which trains every configuration (``layout/optimizer``) of the
run side by side from the same start; XLA's collectives (gloo between processes) do the rest.
After ``--steps`` steps each process writes:

- ``process_<id>.json``: per configuration, the SHA-256 of the final parameters (gathered), the
  losses, and the optimizer state's and parameters' bytes (:func:`memory_report`);
- process 0 only: ``params.npz``, the final parameters as ``<layout>/<optimizer>/<leaf path>``;
  with ``--trajectory``, ``trajectory.npz``, the parameters after every step
  (``<layout>/<optimizer>/<step>/<leaf path>``); with ``--save-state``, ``state.npz``.

Models: ``mlp`` (16-32-32-10, tanh) and ``cnn`` (the seed CNN). Layouts: ``replicated``
(parameters and state on every device), ``zero1`` (parameters replicated, state split by
:func:`functional_optreg.shard_optimizer_state`), ``fsdp`` (parameters split by
:func:`functional_optreg.zero_partition_spec`, state sharded like them by ``jax.jit(tx.init)``).
Usage (under the harness)::

    python tests/mp_train_worker.py OUTDIR --model mlp --steps 5 --configs zero1/adam,fsdp/adamw
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import functional_optreg as fo  # noqa: E402

LAYOUTS = ("replicated", "zero1", "fsdp")
OPTIMIZERS = ("adam", "adamw", "sgd_momentum", "adafactor", "muon_adamw", "clip_adam")
MLP_SIZES = (16, 32, 32, 10)
BATCH = {"mlp": 64, "cnn": 16}


def make_optimizer(name: str, params):
    if name == "adam":
        return fo.adam(lr=0.01)
    if name == "adamw":
        return fo.adamw(lr=0.01, weight_decay=0.1)
    if name == "sgd_momentum":
        return fo.sgd(lr=0.05, momentum=0.9, weight_decay=1e-3)
    if name == "adafactor":
        return fo.adafactor(lr=0.01)
    if name == "muon_adamw":
        return optax.multi_transform(
            {
                "muon": fo.muon(lr=0.02, weight_decay=0.01, adjust_lr_fn="match_rms_adamw"),
                "adamw": fo.adamw(lr=3e-3, weight_decay=0.01),
            },
            muon_labels(params),
        )
    if name == "clip_adam":
        return optax.chain(fo.clip_grad_norm(0.1), fo.adam(lr=0.01))
    raise ValueError(f"unknown optimizer {name!r}")


def muon_labels(params) -> dict:
    """Muon for the 2-D kernels between the first and the last layer, AdamW for everything else."""
    names = list(params)
    return {
        name: {
            leaf: "muon"
            if leaf == "kernel" and np.ndim(params[name][leaf]) == 2 and 0 < i < len(names) - 1
            else "adamw"
            for leaf in params[name]
        }
        for i, name in enumerate(names)
    }


def init_model(model: str, dtype):
    """``(params, loss_fn, batch_fn)``: host parameters, ``loss(params, x, y)`` and ``batch(step)``."""
    if model == "mlp":
        rng = np.random.default_rng(0)
        params = {
            f"layer{i}": {
                "kernel": (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype),
                "bias": np.zeros(fan_out, dtype),
            }
            for i, (fan_in, fan_out) in enumerate(zip(MLP_SIZES, MLP_SIZES[1:]))
        }

        def loss(params, x, y):
            for name in list(params)[:-1]:
                x = jnp.tanh(x @ params[name]["kernel"] + params[name]["bias"])
            logits = x @ params["layer2"]["kernel"] + params["layer2"]["bias"]
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

        def batch(step):
            rng = np.random.default_rng(1000 + step)
            return rng.normal(size=(BATCH["mlp"], MLP_SIZES[0])).astype(dtype), rng.integers(0, 10, BATCH["mlp"])

        return params, loss, batch

    from examples.seed_cnn import model_flax

    params = jax.tree.map(lambda leaf: np.asarray(leaf, dtype), model_flax.init_params(0, dtype))

    def batch(step):
        rng = np.random.default_rng(2000 + step)
        return rng.normal(size=(BATCH["cnn"], 28, 28, 1)).astype(dtype), rng.integers(0, 10, BATCH["cnn"])

    return params, model_flax.nll_loss, batch


def unique_local_bytes(leaf) -> int:
    """Bytes of ``leaf`` this process holds, each distinct shard counted once."""
    seen = {}
    for shard in leaf.addressable_shards:
        seen[str(shard.index)] = shard.data.nbytes
    return sum(seen.values())


def memory_report(tree, num_devices: int, num_processes: int, param_shapes) -> dict:
    """Bytes of ``tree``: ``total``, held by this process (``local``), and held if every leaf with a
    dimension divisible by ``num_devices`` were split (``split_if_divisible``); the ``param_shaped_``
    figures count only the leaves shaped like a parameter (moments, not Adafactor's factors or counts)."""
    leaves = jax.tree.leaves(tree)

    def ideal(leaf):
        divisible = fo.zero_partition_spec(leaf.shape, "data", num_devices) != P()
        return leaf.nbytes // num_processes if divisible else leaf.nbytes

    shaped = [leaf for leaf in leaves if tuple(leaf.shape) in param_shapes]
    return {
        "total": sum(leaf.nbytes for leaf in leaves),
        "local": sum(unique_local_bytes(leaf) for leaf in leaves),
        "split_if_divisible": sum(ideal(leaf) for leaf in leaves),
        "param_shaped_local": sum(unique_local_bytes(leaf) for leaf in shaped),
        "param_shaped_split_if_divisible": sum(ideal(leaf) for leaf in shaped),
    }


class Setup(NamedTuple):
    """Everything a run needs, built the same way by every process; configurations are ``layout/optimizer``."""

    mesh: Mesh
    configs: tuple[str, ...]
    host_params: Any
    param_shardings: dict
    state_shardings: dict
    init: Any
    step: Any
    batch: Any


def build(model: str, configs: Sequence[str], dtype) -> Setup:
    """The jitted ``init`` and ``step`` of every configuration at once (one compilation each)."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    host_params, loss_fn, batch_fn = init_model(model, dtype)
    txs, param_shardings = {}, {}
    for config in configs:
        layout, name = config.split("/")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        base = make_optimizer(name, host_params)
        txs[config] = fo.shard_optimizer_state(base, mesh, "data") if layout == "zero1" else base
        param_shardings[config] = jax.tree.map(
            lambda p, split=layout == "fsdp": NamedSharding(
                mesh, fo.zero_partition_spec(np.shape(p), "data", mesh.size) if split else P()
            ),
            host_params,
        )

    def init(params):
        return {config: tx.init(params[config]) for config, tx in txs.items()}

    abstract = {
        config: jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(np.shape(p), p.dtype, sharding=s), host_params, param_shardings[config]
        )
        for config in configs
    }
    # A state leaf built from no parameter (a constant step count) may come out of ``jit(init)``
    # on one device; every process must hold it, so it is replicated instead.
    state_shardings = jax.tree.map(
        lambda s: s if isinstance(s, NamedSharding) else replicated,
        jax.jit(init).trace(abstract).lower().compile().output_shardings,
    )

    def step(params, states, x, y):
        losses, new_params, new_states = {}, {}, {}
        for config, tx in txs.items():
            losses[config], grads = jax.value_and_grad(loss_fn)(params[config], x, y)
            updates, new_states[config] = tx.update(grads, states[config], params[config])
            new_params[config] = optax.apply_updates(params[config], updates)
        return losses, new_params, new_states

    return Setup(
        mesh=mesh,
        configs=tuple(configs),
        host_params=host_params,
        param_shardings=param_shardings,
        state_shardings=state_shardings,
        init=jax.jit(init, out_shardings=state_shardings),
        step=jax.jit(step, out_shardings=({c: replicated for c in configs}, param_shardings, state_shardings)),
        batch=batch_fn,
    )


def place(host, sharding):
    """The global array of ``host`` (the same on every process) with ``sharding``: each process puts its own slices."""
    return jax.make_array_from_callback(np.shape(host), sharding, lambda index: np.asarray(host)[index])


def initial_params(setup: Setup) -> dict:
    return {c: jax.tree.map(place, setup.host_params, setup.param_shardings[c]) for c in setup.configs}


def run_steps(setup: Setup, params, states, start: int, stop: int, history: dict) -> tuple[dict, dict]:
    """Steps ``start`` to ``stop - 1`` (batch ``k`` for step ``k``); appends each loss to ``history``."""
    batch_sharding = NamedSharding(setup.mesh, P("data"))
    for k in range(start, stop):
        x, y = setup.batch(k)
        losses, params, states = setup.step(params, states, place(x, batch_sharding), place(y, batch_sharding))
        for config in setup.configs:
            history.setdefault(config, []).append(float(np.asarray(losses[config].addressable_data(0))))
    return params, states


def host_params(setup: Setup, params) -> dict:
    """Per configuration, ``{leaf path: numpy array}`` of the full parameters (or states), gathered on every process."""
    gathered = jax.jit(lambda tree: tree, out_shardings=NamedSharding(setup.mesh, P()))(params)
    return {
        config: {
            jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
            for path, leaf in jax.tree_util.tree_flatten_with_path(gathered[config])[0]
        }
        for config in setup.configs
    }


def digest(arrays: dict) -> str:
    """SHA-256 of the arrays' bytes, in key order."""
    return hashlib.sha256(b"".join(arrays[key].tobytes() for key in sorted(arrays))).hexdigest()


def report(setup: Setup, params, states, history: dict) -> tuple[dict, dict]:
    """``(json report per configuration, {"<config>/<leaf path>": array})``."""
    n, processes = setup.mesh.size, jax.process_count()
    hosts = host_params(setup, params)
    shapes = {np.shape(leaf) for leaf in jax.tree.leaves(setup.host_params)}
    summary, arrays = {}, {}
    for config in setup.configs:
        summary[config] = {
            "sha256": digest(hosts[config]),
            "losses": history.get(config, []),
            "state_bytes": memory_report(states[config], n, processes, shapes),
            "param_bytes": memory_report(params[config], n, processes, shapes),
        }
        arrays.update({f"{config}/{key}": value for key, value in hosts[config].items()})
    return summary, arrays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument(
        "--configs",
        default=",".join(f"{layout}/{name}" for layout in LAYOUTS for name in OPTIMIZERS),
        help="comma-separated layout/optimizer pairs",
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--trajectory", action="store_true", help="also save the parameters after every step")
    parser.add_argument("--save-state", action="store_true", help="also save the final optimizer state")
    args = parser.parse_args(argv)
    import mp_harness

    process_id, _ = mp_harness.initialize()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    setup = build(args.model, args.configs.split(","), np.dtype(args.dtype))
    params = initial_params(setup)
    states = setup.init(params)
    history: dict = {}
    trajectory = {}
    for k in range(args.steps) if args.trajectory else ():
        params, states = run_steps(setup, params, states, k, k + 1, history)
        for config, leaves in host_params(setup, params).items():
            trajectory.update({f"{config}/{k + 1}/{key}": value for key, value in leaves.items()})
    params, states = run_steps(setup, params, states, len(history.get(setup.configs[0], [])), args.steps, history)
    summary, arrays = report(setup, params, states, history)
    summary["devices"] = {"global": jax.device_count(), "local": jax.local_device_count()}
    leaves = host_params(setup, states) if args.save_state else {}  # a collective: every process takes part
    if process_id == 0:
        np.savez(os.path.join(args.outdir, "params.npz"), **arrays)
        if args.trajectory:
            np.savez(os.path.join(args.outdir, "trajectory.npz"), **trajectory)
        if args.save_state:
            np.savez(
                os.path.join(args.outdir, "state.npz"),
                **{f"{config}/{key}": value for config in leaves for key, value in leaves[config].items()},
            )
    mp_harness.write_json(args.outdir, f"process_{process_id}.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
