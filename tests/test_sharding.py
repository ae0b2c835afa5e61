"""Sharded optimizer state on 8 simulated CPU devices, and the ZeRO-1 helper's unit behaviour.

The multi-device checks run in a subprocess (tests/sharding_worker.py): this process already
initialised JAX with one CPU device, and the device count cannot change afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import functional_optreg as fo

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharding_worker.py")

CATEGORIES = {
    "init_sharding": 15,
    "step_keeps_sharding": 15,
    "no_collectives": 15,
    "bitwise_vs_single_device": 15,
    "clip_float64_rounding": 2,
    "zero1_state_split": 6,
    "zero1_collectives": 6,
    "zero1_bitwise_vs_single_device": 6,
    "explicit_mesh": 2,
}
"""How many records each category must report (11 optimizers in float32, 4 also in float64)."""


@pytest.fixture(scope="module")
def worker_records():
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    completed = subprocess.run([sys.executable, WORKER], capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 0, completed.stderr[-4000:]
    records = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    by_category = {}
    for record in records:
        by_category.setdefault(record["category"], []).append(record)
    return by_category


def test_worker_sees_eight_devices(worker_records):
    (record,) = worker_records["devices"]
    assert record["ok"], record["detail"]


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_sharded_checks(worker_records, category):
    records = worker_records.get(category, [])
    assert len(records) == CATEGORIES[category], [r["name"] for r in records]
    failures = [f"{r['name']}: {r['detail']}" for r in records if not r["ok"]]
    assert not failures, "\n".join(failures)


def test_zero_partition_spec_splits_the_first_divisible_dimension():
    assert fo.zero_partition_spec((16, 8), "data", 8) == P("data")
    assert fo.zero_partition_spec((3, 3, 2, 8), "data", 8) == P(None, None, None, "data")
    assert fo.zero_partition_spec((0, 8), "data", 8) == P(None, "data")
    assert fo.zero_partition_spec((5,), "data", 8) == P()
    assert fo.zero_partition_spec((), "data", 8) == P()


def test_shard_optimizer_state_rejects_an_unknown_axis():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="mesh has no axis 'batch'"):
        fo.shard_optimizer_state(fo.sgd(0.1), mesh, "batch")


def test_shard_optimizer_state_on_one_device_equals_the_plain_optimizer():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jnp.arange(4.0), "b": jnp.zeros([])}
    plain, sharded = fo.adam(0.1, weight_decay=0.1), fo.shard_optimizer_state(fo.adam(0.1, weight_decay=0.1), mesh)
    states = [plain.init(params), sharded.init(params)]
    assert states[1].exp_avg["w"].sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 1)
    results = []
    for tx, state in zip((plain, sharded), states):
        p = params
        for k in range(3):
            grads = jax.tree.map(lambda x: jnp.sin(x + k), p)
            updates, state = jax.jit(tx.update)(grads, state, p)
            p = optax.apply_updates(p, updates)
        results.append(p)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_array_equal(a, b)


def test_state_shardings_matches_jit_init():
    params = {"w": jnp.ones((2, 3))}
    tx = fo.adam(1e-3)
    shardings = fo.state_shardings(tx, params)
    state = jax.jit(tx.init)(params)
    for sharding, leaf in zip(jax.tree.leaves(shardings), jax.tree.leaves(state)):
        assert sharding.is_equivalent_to(leaf.sharding, leaf.ndim)
