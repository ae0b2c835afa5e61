"""Data-parallel training across N JAX processes on this machine equals the single-process run.

tests/mp_harness.py starts the processes (``jax.distributed.initialize`` on 127.0.0.1, gloo for
the cross-process CPU collectives, several CPU devices each); tests/mp_train_worker.py trains.
The global mesh always has 8 devices: 1 process × 8, 2 × 4 and 4 × 2. Every run, the
single-process one included, uses the same collective implementation (gloo), so the programs
and the order of every reduction are the same and the parameters must be bit for bit identical.
(XLA's in-process CPU all-reduce sums in another order than gloo's: a one-process run without
gloo differs from these in the last bits of the gradients; that is a reduction order, not a
distribution effect.)

Default selection: the MLP, 5 steps, six layout/optimizer pairs that use every layout twice and
every optimizer once; the one-process run trains all six, the 2- and 4-process runs three each,
every layout in each, so each pair is compared with one process count (2 or 4), each process count
with every layout, and the job compiles 24 programs on two cores instead of 42. The full run (the
MLP and the seed CNN, every layout × every optimizer, 50 steps, float32 and float64) is ``slow``::

    .venv/bin/python -m pytest -q -p no:xdist -m slow tests/test_multiprocess.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mp_harness  # noqa: E402
import mp_train_worker  # noqa: E402

WORKER = os.path.join(HERE, "mp_train_worker.py")
LAYOUTS_PER_PROCESS_COUNT = {1: 8, 2: 4, 4: 2}
"""Processes → CPU devices per process: 8 devices in all."""
CI_CONFIGS = (
    "replicated/sgd_momentum",
    "replicated/adamw",
    "zero1/adam",
    "zero1/muon_adamw",
    "fsdp/adafactor",
    "fsdp/clip_adam",
)
"""Where sharding changes the most: Muon's Newton-Schulz on split matrices, the clipping norm summed
over shards, Adafactor's factored statistics following split parameters."""
CI_SPLIT = {
    1: CI_CONFIGS,
    2: ("replicated/sgd_momentum", "zero1/muon_adamw", "fsdp/adafactor"),
    4: ("replicated/adamw", "zero1/adam", "fsdp/clip_adam"),
}
"""Process count → the CI pairs it trains: every layout in each, every pair once beside one process."""
CI_STEPS = 5
FULL_CONFIGS = tuple(f"{layout}/{name}" for layout in mp_train_worker.LAYOUTS for name in mp_train_worker.OPTIMIZERS)
FULL_STEPS = 50


def train(tmp_path_factory, processes: int, model: str, configs, steps: int, dtype: str) -> dict:
    outdir = str(tmp_path_factory.mktemp(f"{model}_{dtype}_{processes}p"))
    args = [outdir, "--model", model, "--configs", ",".join(configs), "--steps", str(steps), "--dtype", dtype]
    start = time.perf_counter()
    mp_harness.launch(
        WORKER,
        args,
        processes,
        LAYOUTS_PER_PROCESS_COUNT[processes],
        outdir,
        timeout=900,
        env={mp_harness.COLLECTIVES: "gloo"},
    )
    reports = mp_harness.read_reports(outdir, processes)
    with np.load(os.path.join(outdir, "params.npz")) as arrays:
        params = dict(arrays)
    return {"reports": reports, "params": params, "configs": tuple(configs), "seconds": time.perf_counter() - start}


def check_equal_to_one_process(runs: dict) -> list[str]:
    """Every difference between the runs of ``runs`` (process count → run) and the one-process run,
    over the pairs each run trained (the one-process run trains them all)."""
    problems = []
    reference = runs[1]
    for processes, run in runs.items():
        configs = run["configs"]
        assert set(configs) <= set(reference["configs"])
        expected_keys = {key for key in reference["params"] if "/".join(key.split("/")[:2]) in configs}
        assert set(run["params"]) == expected_keys, (processes, sorted(run["params"]))
        for key, value in run["params"].items():
            if value.dtype != reference["params"][key].dtype or not np.array_equal(value, reference["params"][key]):
                worst = np.max(np.abs(value - reference["params"][key]))
                problems.append(f"{processes} processes: {key} differs (max abs {worst:.3e})")
        for process_id, report in enumerate(run["reports"]):
            assert report["devices"] == {"global": 8, "local": LAYOUTS_PER_PROCESS_COUNT[processes]}
            for config in configs:
                ours, theirs = report[config], reference["reports"][0][config]
                if ours["sha256"] != theirs["sha256"]:
                    problems.append(f"{processes} processes, process {process_id}: {config} parameters differ")
                if ours["losses"] != theirs["losses"]:
                    problems.append(f"{processes} processes, process {process_id}: {config} losses differ")
    return problems


def check_bytes_per_process(runs: dict) -> list[str]:
    """Each process holds 1/N of every leaf that its layout splits.

    ``zero1``: every state leaf with a dimension divisible by the device count (the rule of
    ``fo.zero_partition_spec``). ``fsdp``: every parameter so, and the state leaves shaped like a
    parameter (moments, momentum); other state leaves follow their parameter as XLA propagates it
    (Adafactor's row statistics are split with their rows, its column statistics, reduced over
    the split dimension, are replicated), so they only have to hold less than the whole state.
    ``replicated``: everything everywhere.
    """
    problems = []
    for processes, run in runs.items():
        for process_id, report in enumerate(run["reports"]):
            for config in run["configs"]:
                layout = config.split("/")[0]
                state, params = report[config]["state_bytes"], report[config]["param_bytes"]
                expected = {
                    "replicated": [(state, "local", "total"), (params, "local", "total")],
                    "zero1": [(state, "local", "split_if_divisible"), (params, "local", "total")],
                    "fsdp": [
                        (state, "param_shaped_local", "param_shaped_split_if_divisible"),
                        (params, "local", "split_if_divisible"),
                    ],
                }[layout]
                for held, measured, target in expected:
                    if held[measured] != held[target]:
                        problems.append(f"{processes} processes, process {process_id}, {config}: {measured} {held}")
                if layout == "fsdp" and processes > 1 and not state["local"] < state["total"]:
                    problems.append(f"{processes} processes, process {process_id}, {config}: all the state {state}")
    return problems


def test_n_processes_train_as_one_process(tmp_path_factory):
    """1, 2 and 4 processes: trained, bit for bit alike, each holding its shards.

    One test rather than several on a shared fixture: pytest-xdist would start the fixture's
    seven processes again in each of its workers.
    """
    runs = {
        processes: train(tmp_path_factory, processes, "mlp", CI_SPLIT[processes], CI_STEPS, "float32")
        for processes in LAYOUTS_PER_PROCESS_COUNT
    }
    for config in CI_CONFIGS:
        losses = runs[1]["reports"][0][config]["losses"]
        assert len(losses) == CI_STEPS and all(np.isfinite(losses)), (config, losses)
        assert losses[-1] < losses[0], (config, losses)
    problems = check_equal_to_one_process(runs) + check_bytes_per_process(runs)
    assert not problems, "\n".join(problems)
    zero1 = runs[4]["reports"][3]["zero1/adam"]["state_bytes"]
    assert zero1["local"] < zero1["total"] / 3, zero1


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_full_run_bit_identical_to_one_process(tmp_path_factory, model, dtype):
    runs = {
        processes: train(tmp_path_factory, processes, model, FULL_CONFIGS, FULL_STEPS, dtype)
        for processes in LAYOUTS_PER_PROCESS_COUNT
    }
    problems = check_equal_to_one_process(runs) + check_bytes_per_process(runs)
    assert not problems, "\n".join(problems)


def test_importing_the_package_leaves_jax_uninitialised():
    """``jax.distributed.initialize`` must come before JAX's backend starts; importing us must not start it."""
    code = "import functional_optreg; from jax._src import xla_bridge; print(xla_bridge.backends_are_initialized())"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr[-2000:]


SLEEPER = """
import os, subprocess, sys
process_id = int(os.environ["FO_MP_PROCESS_ID"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(sys.argv[1], f"pid_{process_id}.tmp"), "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}")
os.replace(os.path.join(sys.argv[1], f"pid_{process_id}.tmp"), os.path.join(sys.argv[1], f"pid_{process_id}"))
if process_id == int(sys.argv[2]):
    sys.exit(3)
child.wait()
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a killed process not reaped yet by its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("failing", [1, -1], ids=["one_fails", "timeout"])
def test_launch_kills_every_process_on_failure(tmp_path, failing):
    """A failed or late run ends at once, and neither the processes nor what they started survive it."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    timeout = 60 if failing >= 0 else 3
    start = time.perf_counter()
    with pytest.raises(mp_harness.LaunchError, match="exited with 3" if failing >= 0 else "timed out"):
        mp_harness.launch(str(script), [str(tmp_path), str(failing)], 3, 1, str(tmp_path), timeout=timeout)
    assert time.perf_counter() - start < timeout + 10
    written = sorted(tmp_path.glob("pid_?"))
    assert failing < 0 or written, "the failing process wrote its pids before exiting"
    pids = [int(pid) for path in written for pid in path.read_text().split()]
    assert not [pid for pid in pids if _running(pid)]
