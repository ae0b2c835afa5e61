"""Checkpoints written and read by all processes together (orbax); started by tests/mp_harness.py.

One call: build the configurations of tests/mp_train_worker.py on this run's global mesh; start
from scratch or restore a step of ``CKPT_DIR`` into this mesh's layout (the same specs, any
process count); train to ``--stop``, saving the steps of ``--save-at`` on the way; write the
report of mp_train_worker (parameters' digest, losses, bytes held per process) and, in
``restored_steps``, the steps the checkpoint manager found. With ``--crash-at STEP`` process 0
starts the (asynchronous) save of that step and kills itself before it completes: the harness
then kills the others, as a cluster scheduler ends a job that lost a process. Usage::

    python tests/mp_checkpoint_worker.py OUTDIR CKPT_DIR --configs zero1/adam --stop 4 --save-at 2
    python tests/mp_checkpoint_worker.py OUTDIR CKPT_DIR --configs zero1/adam --restore 2 --stop 4
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import mp_harness  # noqa: E402
import mp_train_worker  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402


def abstract_state(setup: mp_train_worker.Setup) -> dict:
    """The tree to restore into: shapes and dtypes of a fresh start, with this mesh's shardings."""
    params = {
        config: jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(np.shape(p), np.asarray(p).dtype, sharding=s),
            setup.host_params,
            setup.param_shardings[config],
        )
        for config in setup.configs
    }
    states = jax.eval_shape(setup.init, params)
    states = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), states, setup.state_shardings
    )
    return {"params": params, "states": states}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("checkpoints")
    parser.add_argument("--configs", required=True, help="comma-separated layout/optimizer pairs")
    parser.add_argument("--restore", type=int, help="the step to start from (default: a fresh start)")
    parser.add_argument("--stop", type=int, required=True)
    parser.add_argument("--save-at", default="", help="comma-separated steps to save")
    parser.add_argument("--crash-at", type=int, help="process 0 dies while this step is being saved")
    args = parser.parse_args(argv)

    process_id, _ = mp_harness.initialize()
    setup = mp_train_worker.build("mlp", args.configs.split(","), np.dtype("float32"))
    manager = ocp.CheckpointManager(
        args.checkpoints,
        options=ocp.CheckpointManagerOptions(max_to_keep=None, enable_async_checkpointing=True),
    )
    found = list(manager.all_steps())
    if args.restore is None:
        start, params = 0, mp_train_worker.initial_params(setup)
        states = setup.init(params)
    else:
        restored = manager.restore(args.restore, args=ocp.args.StandardRestore(abstract_state(setup)))
        start, params, states = args.restore, restored["params"], restored["states"]
    saves = {int(step) for step in args.save_at.split(",") if step}
    if args.crash_at is not None:
        saves.add(args.crash_at)
    history: dict = {}
    for stop in sorted({s for s in saves if start < s <= args.stop} | {args.stop}):
        params, states = mp_train_worker.run_steps(setup, params, states, start, stop, history)
        start = stop
        if stop in saves:
            manager.save(stop, args=ocp.args.StandardSave({"params": params, "states": states}))
            if stop == args.crash_at and process_id == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            manager.wait_until_finished()
    manager.close()
    summary, _ = mp_train_worker.report(setup, params, states, history)
    summary["restored_steps"] = found
    mp_harness.write_json(args.outdir, f"process_{process_id}.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
