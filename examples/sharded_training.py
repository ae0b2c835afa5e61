"""Data-parallel training of the seed CNN over 8 simulated devices, with ZeRO-1 optimizer state.

The batch is split over the mesh axis ``"data"``; parameters are replicated; the optimizer state
(AdamW's two moments) is split over the same axis with :func:`functional_optreg.shard_optimizer_state`,
so each device keeps 1/8 of it. Everything else is ``jax.jit``: XLA inserts the gradients'
reduction and the gather of the updates. A single-device run of the same first steps checks the
result: the data-parallel gradient is summed in another order, so the two differ by float32
rounding, which Adam's normalisation enlarges where gradients are tiny (~1e-5 relative after 5
steps; tests/test_sharding.py shows the optimizer itself is bit for bit identical when given the
same gradients).

On a machine without accelerators the 8 devices are simulated CPU devices
(``--xla_force_host_platform_device_count``), which this script sets before importing JAX.

Usage::

    python examples/sharded_training.py                # 3 epochs of digits, ZeRO-1 state
    python examples/sharded_training.py --no-zero      # optimizer state replicated instead
    python examples/sharded_training.py --devices 4 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices (default 8)")
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


def state_bytes_on_first_device(state) -> tuple[int, int]:
    """(bytes of the optimizer state held by device 0, bytes of the whole state)."""
    leaves = jax.tree.leaves(state)
    local = sum(leaf.addressable_shards[0].data.nbytes for leaf in leaves)
    return local, sum(leaf.nbytes for leaf in leaves)


def main(args: argparse.Namespace) -> int:
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    if args.batch_size % len(devices):
        raise SystemExit(f"--batch-size (={args.batch_size}) must be divisible by {len(devices)} devices")

    data = data_lib.load_digits()
    print(f"{data}; {len(devices)} devices; global batch {args.batch_size}")
    base = make_optimizer(args.lr, args.weight_decay)
    tx = base if args.no_zero else fo.shard_optimizer_state(base, mesh, "data")

    params = jax.device_put(model_flax.init_params(0), replicated)
    state = tx.init(params)
    local, total = state_bytes_on_first_device(state)
    print(f"optimizer state: {total / 1e6:.2f} MB in all, {local / 1e6:.2f} MB on device 0")

    step = make_step(tx)
    batches = list(data_lib.iterate_batches(len(data.train_labels), args.batch_size, 0, args.epochs))
    reference = check_against_one_device(base, data, batches[: args.check_steps], step, params, state, mesh)

    start = time.perf_counter()
    losses = []
    for _, indices in batches:
        images = jax.device_put(data.train_images[indices], batch_sharding)
        labels = jax.device_put(data.train_labels[indices], batch_sharding)
        loss, params, state = step(params, state, images, labels)
        losses.append(float(loss))
    seconds = time.perf_counter() - start
    accuracy = model_flax.accuracy(jax.device_get(params), data.test_images, data.test_labels)
    print(
        f"{len(batches)} steps in {seconds:.1f} s: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
        f"test accuracy {accuracy:.3f}"
    )
    print(f"first {args.check_steps} steps vs one device: max relative difference {reference:.2e}")
    ok = reference < 1e-4 and losses[-1] < losses[0]
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def check_against_one_device(base, data, batches, sharded_step, params, state, mesh) -> float:
    """Run ``batches`` on the mesh and on one device; the largest relative parameter difference."""
    one = jax.devices()[0]
    single_step = make_step(base)
    single_params = jax.device_put(jax.device_get(params), one)
    single_state = jax.jit(base.init)(single_params)
    batch_sharding = NamedSharding(mesh, P("data"))
    for _, indices in batches:
        images, labels = data.train_images[indices], data.train_labels[indices]
        _, params, state = sharded_step(
            params, state, jax.device_put(images, batch_sharding), jax.device_put(labels, batch_sharding)
        )
        _, single_params, single_state = single_step(
            single_params, single_state, jax.device_put(images, one), jax.device_put(labels, one)
        )
    worst = 0.0
    for ours, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(single_params)):
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        worst = max(worst, float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))))
    return worst


if __name__ == "__main__":
    raise SystemExit(main(ARGS))
