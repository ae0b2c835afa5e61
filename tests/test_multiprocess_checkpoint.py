"""Orbax checkpoints across processes: save from 2, restore into 4 and back, survive a crash mid-save.

One chain of runs of tests/mp_checkpoint_worker.py on one checkpoint directory, 8 devices in
every run (2 processes × 4 or 4 × 2), gloo collectives, the MLP with ZeRO-1 Adam and FSDP AdamW:

1. 2 processes train steps 0–3 without a break, saving step 1;
2. 4 processes restore step 1 into their own mesh (the same specs), train to 3, saving step 2;
3. 2 processes restore step 2 (written by 4), start saving step 3, and process 0 is killed
   before that save completes (the harness then ends the job);
4. 2 processes find steps 1 and 2 only, restore step 2 and train to 3.

Runs 2 and 4 must end bit for bit where run 1 ends, with each process holding only its shards.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mp_harness  # noqa: E402

WORKER = os.path.join(HERE, "mp_checkpoint_worker.py")
CONFIGS = ("zero1/adam", "fsdp/adamw")


def run(tmp_path_factory, checkpoints: str, processes: int, *args: str) -> list[dict]:
    outdir = str(tmp_path_factory.mktemp(f"checkpoint_{processes}p"))
    mp_harness.launch(
        WORKER,
        [outdir, checkpoints, "--configs", ",".join(CONFIGS), *args],
        processes,
        8 // processes,
        outdir,
        timeout=600,
        env={mp_harness.COLLECTIVES: "gloo"},
    )
    return mp_harness.read_reports(outdir, processes)


def test_checkpoints_across_processes(tmp_path_factory):
    """The chain of the module docstring, in one test (pytest-xdist would run a shared fixture once per worker)."""
    checkpoints = str(tmp_path_factory.mktemp("checkpoints"))
    runs = {"straight": run(tmp_path_factory, checkpoints, 2, "--stop", "3", "--save-at", "1")}
    runs["to_four"] = run(tmp_path_factory, checkpoints, 4, "--restore", "1", "--stop", "3", "--save-at", "2")
    with pytest.raises(mp_harness.LaunchError, match="process 0 exited with -9"):
        run(tmp_path_factory, checkpoints, 2, "--restore", "2", "--stop", "3", "--crash-at", "3")
    entries = sorted(os.listdir(checkpoints))
    runs["after_crash"] = run(tmp_path_factory, checkpoints, 2, "--restore", "2", "--stop", "3")

    # The crash: step 3 was being written (its temporary directory is there) and never committed.
    assert "3" not in entries and {"1", "2"} <= set(entries), entries
    assert any(entry.startswith("3.orbax-checkpoint-tmp") for entry in entries), entries
    assert [report["restored_steps"] for report in runs["after_crash"]] == [[1, 2], [1, 2]]

    # Restored runs end where the straight run ends, bit for bit, with the same losses on the way.
    straight = runs["straight"][0]
    for name in ("to_four", "after_crash"):
        for process_id, report in enumerate(runs[name]):
            for config in CONFIGS:
                assert report[config]["sha256"] == straight[config]["sha256"], (name, process_id, config)
                restored_losses = report[config]["losses"]
                assert restored_losses == straight[config]["losses"][-len(restored_losses) :], (name, config)

    # Each process holds 1/N of the state (and, for FSDP, of the parameters) after a restore too.
    for name, reports in runs.items():
        for report in reports:
            for config in CONFIGS:
                for kind in ("state_bytes", "param_bytes") if config.startswith("fsdp") else ("state_bytes",):
                    held = report[config][kind]
                    assert held["local"] == held["split_if_divisible"] < held["total"], (name, config, kind, held)
