"""Data-parallel training of the seed CNN over several devices and processes, with ZeRO-1 optimizer state.

The batch is split over the mesh axis ``"data"``; parameters are replicated; the optimizer state
(AdamW's two moments) is split over the same axis with :func:`functional_optreg.shard_optimizer_state`,
so each device keeps 1/n of it. Everything else is ``jax.jit``: XLA inserts the gradients'
reduction and the gather of the updates. A single-device run of the same first steps checks the
result: the data-parallel gradient is summed in another order, so the two differ by float32
rounding, which Adam's normalisation enlarges where gradients are tiny (~1e-5 relative after 5
steps; tests/test_sharding.py shows the optimizer itself is bit for bit identical when given the
same gradients, tests/test_multiprocess.py that N processes give the one-process result bit for bit).

Several processes: start one per process (on one machine or several) with the same
``--num-processes`` and ``--coordinator`` (process 0's address) and its own ``--process-id``. They
join through ``jax.distributed.initialize``; the mesh spans all their devices, each process feeds
only its slices of every batch, holds only its shards of the optimizer state, and CPU devices of
different processes talk through gloo. On a machine without accelerators the devices are
simulated CPU devices (``--devices`` per process).

Usage::

    python examples/sharded_training.py                # 3 epochs of digits, 8 devices, ZeRO-1 state
    python examples/sharded_training.py --no-zero      # optimizer state replicated instead
    python examples/sharded_training.py --devices 4 --epochs 1
    for i in 0 1; do                                   # 2 processes x 4 devices
        python examples/sharded_training.py --num-processes 2 --process-id $i --devices 4 &
    done; wait
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices per process (default 8)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="127.0.0.1:12355", help="process 0's host:port")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, split over devices")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--no-zero", action="store_true", help="replicate the optimizer state")
    parser.add_argument("--check-steps", type=int, default=5, help="steps compared with one device")
    return parser.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    ).strip()
    if __package__ in (None, ""):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

if ARGS is not None and ARGS.num_processes > 1:
    # Before anything starts JAX's backend: CPU devices of different processes need gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(ARGS.coordinator, num_processes=ARGS.num_processes, process_id=ARGS.process_id)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import functional_optreg as fo  # noqa: E402
from examples.seed_cnn import data as data_lib  # noqa: E402
from examples.seed_cnn import model_flax  # noqa: E402


def make_optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """clip_grad_norm_(1.0) then AdamW, skipping any step whose gradients are not finite."""
    return fo.nonfinite_policy(optax.chain(fo.clip_grad_norm(1.0), fo.adamw(lr=lr, weight_decay=weight_decay)), "skip")


def make_step(tx: optax.GradientTransformation):
    def step(params, state, images, labels):
        loss, grads = jax.value_and_grad(model_flax.nll_loss)(params, images, labels)
        updates, state = tx.update(grads, state, params)
        return loss, optax.apply_updates(params, updates), state

    return jax.jit(step)


def held_bytes(tree) -> tuple[int, int]:
    """(bytes of ``tree`` held by this process, each distinct shard once; bytes of the whole tree)."""
    local = total = 0
    for leaf in jax.tree.leaves(tree):
        local += sum({str(shard.index): shard.data.nbytes for shard in leaf.addressable_shards}.values())
        total += leaf.nbytes
    return local, total


def host_copy(tree):
    """A numpy copy of a tree of replicated arrays (each process has every element)."""
    return jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), tree)


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The array ``host`` (the same on every process) placed with ``sharding``: each process puts its own slices."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def main(args: argparse.Namespace) -> int:
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    if args.batch_size % len(devices):
        raise SystemExit(f"--batch-size (={args.batch_size}) must be divisible by {len(devices)} devices")
    say = print if jax.process_index() == 0 else (lambda *_: None)

    data = data_lib.load_digits()
    say(f"{data}; {jax.process_count()} processes, {len(devices)} devices; global batch {args.batch_size}")
    base = make_optimizer(args.lr, args.weight_decay)
    tx = base if args.no_zero else fo.shard_optimizer_state(base, mesh, "data")

    params = jax.tree.map(lambda leaf: global_array(np.asarray(leaf), replicated), model_flax.init_params(0))
    state = tx.init(params)
    local, total = held_bytes(state)
    print(f"process {jax.process_index()}: optimizer state {total / 1e6:.2f} MB in all, {local / 1e6:.2f} MB held here")

    step = make_step(tx)
    batches = list(data_lib.iterate_batches(len(data.train_labels), args.batch_size, 0, args.epochs))
    reference = check_against_one_device(base, data, batches[: args.check_steps], step, params, state, mesh)

    times, losses = [], []
    for _, indices in batches:
        images = global_array(data.train_images[indices], batch_sharding)
        labels = global_array(data.train_labels[indices], batch_sharding)
        start = time.perf_counter()
        loss, params, state = step(params, state, images, labels)
        losses.append(float(np.asarray(loss.addressable_data(0))))
        times.append(time.perf_counter() - start)
    accuracy = model_flax.accuracy(host_copy(params), data.test_images, data.test_labels)
    say(
        f"{len(batches)} steps in {sum(times):.1f} s (median step {1e3 * float(np.median(times)):.1f} ms): "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, test accuracy {accuracy:.3f}"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"process {jax.process_index()}: peak resident memory {rss:.0f} MB")
    say(f"first {args.check_steps} steps vs one device: max relative difference {reference:.2e}")
    ok = reference < 1e-4 and losses[-1] < losses[0]
    say("OK" if ok else "FAILED")
    return 0 if ok else 1


def check_against_one_device(base, data, batches, sharded_step, params, state, mesh) -> float:
    """Run ``batches`` on the mesh and on this process's first device; the largest relative parameter difference."""
    one = jax.local_devices()[0]
    single_step = make_step(base)
    single_params = jax.device_put(host_copy(params), one)
    single_state = jax.jit(base.init)(single_params)
    batch_sharding = NamedSharding(mesh, P("data"))
    for _, indices in batches:
        images, labels = data.train_images[indices], data.train_labels[indices]
        _, params, state = sharded_step(
            params, state, global_array(images, batch_sharding), global_array(labels, batch_sharding)
        )
        _, single_params, single_state = single_step(
            single_params, single_state, jax.device_put(images, one), jax.device_put(labels, one)
        )
    worst = 0.0
    for ours, theirs in zip(jax.tree.leaves(host_copy(params)), jax.tree.leaves(single_params)):
        theirs = np.asarray(theirs)
        worst = max(worst, float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))))
    return worst


if __name__ == "__main__":
    raise SystemExit(main(ARGS))
