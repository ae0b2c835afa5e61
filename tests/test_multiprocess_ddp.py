"""torch ``DistributedDataParallel`` (gloo, 2 processes) and our 2-process run agree per step in float64.

tests/mp_ddp_worker.py trains the MLP of tests/mp_train_worker.py with DDP, each rank on half
of every global batch, with SGD(momentum) and AdamW; mp_train_worker trains it on a mesh of
2 processes × 4 devices with replicated state. The two reduce the batch's gradients in
different orders (DDP: each rank's mean, then gloo's sum of the two halves and a division by 2;
ours: per-device sums of 8 examples, gloo's sum over 8 devices, a division by 64), so the
parameters agree to rounding, not bit for bit: every step within the float64 contract of
docs/parity.md (1e-12 relative, normwise per leaf). ``fo.from_torch`` converts rank 0's
optimizer (its ``state_dict`` loaded into a plain, un-wrapped optimizer) into our state, which
must match the state our run ends with, to the same bound.

50 steps; ``slow`` (two torch processes start in tens of seconds on a loaded machine)::

    .venv/bin/python -m pytest -q -p no:xdist -m slow tests/test_multiprocess_ddp.py
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optreg as fo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mp_ddp_worker  # noqa: E402
import mp_harness  # noqa: E402

STEPS = 50
RTOL = 1e-12
CONFIGS = tuple(f"replicated/{name}" for name in mp_ddp_worker.OPTIMIZERS)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = float(np.max(np.abs(theirs)))
    diff = float(np.max(np.abs(ours - theirs)))
    return diff / scale if scale else diff


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch_dir, jax_dir = (str(tmp_path_factory.mktemp(name)) for name in ("ddp", "ours"))
    mp_harness.launch(os.path.join(HERE, "mp_ddp_worker.py"), [torch_dir, "--steps", str(STEPS)], 2, 1, torch_dir, 900)
    mp_harness.launch(
        os.path.join(HERE, "mp_train_worker.py"),
        [jax_dir, "--steps", str(STEPS), "--dtype", "float64", "--configs", ",".join(CONFIGS)]
        + ["--trajectory", "--save-state"],
        2,
        4,
        jax_dir,
        900,
        env={mp_harness.COLLECTIVES: "gloo"},
    )
    loaded = {}
    for name, directory in (("torch", torch_dir), ("ours", jax_dir)):
        with np.load(os.path.join(directory, "trajectory.npz")) as arrays:
            loaded[name] = dict(arrays)
    with np.load(os.path.join(jax_dir, "state.npz")) as arrays:
        loaded["state"] = dict(arrays)
    return loaded, torch_dir


@pytest.mark.slow
def test_every_step_agrees_with_ddp(runs):
    loaded, _ = runs
    torch_side, ours = loaded["torch"], loaded["ours"]
    assert set(torch_side) == set(ours) and len(ours) == len(CONFIGS) * STEPS * 6
    worst = {}
    for key, value in ours.items():
        config = key.rsplit("/", 2)[0]
        worst[config] = max(worst.get(config, 0.0), relative_error(value, torch_side[key]))
    assert all(error <= RTOL for error in worst.values()), worst
    # The runs moved: a comparison of two frozen trajectories would prove nothing.
    first, last = (ours[f"{CONFIGS[1]}/{k}/['layer1']['kernel']"] for k in (1, STEPS))
    assert relative_error(first, last) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", mp_ddp_worker.OPTIMIZERS)
def test_from_torch_takes_rank_zeros_state(runs, name):
    import torch

    loaded, torch_dir = runs
    host = {
        f"layer{i}": {
            leaf: loaded["torch"][f"replicated/{name}/{STEPS}/['layer{i}']['{leaf}']"] for leaf in ("kernel", "bias")
        }
        for i in range(3)
    }
    model = mp_ddp_worker.torch_mlp(host)
    optimizer = mp_ddp_worker.torch_optimizer(name, model.parameters())
    optimizer.load_state_dict(torch.load(os.path.join(torch_dir, f"{name}_optimizer.pt")))
    with jax.enable_x64(True):
        tree = jax.tree.map(jnp.asarray, host)
        mapping = {path: path for path, _ in model.named_parameters()}
        _, state = fo.from_torch(optimizer, params=(tree, mapping), module=model, update_count=STEPS)
        converted = {
            jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
        }
    prefix = f"replicated/{name}/"
    ours = {key[len(prefix) :]: value for key, value in loaded["state"].items() if key.startswith(prefix)}
    assert len(ours) > 6
    for key, value in ours.items():
        theirs = converted[".inner_state" + key]
        assert theirs.dtype == value.dtype, key
        assert relative_error(value, theirs) <= RTOL, (key, relative_error(value, theirs))
