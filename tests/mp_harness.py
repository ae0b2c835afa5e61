"""Run one worker script as N cooperating JAX processes on this machine, bounded in time.

:func:`launch` starts ``num_processes`` copies of a worker, each told (through environment
variables) the coordinator address ``127.0.0.1:<free port>``, the process count, its own id and
how many CPU devices it has. The worker calls :func:`initialize` first: it sets the CPU device
count, selects gloo for cross-process CPU collectives (XLA:CPU has no cross-process collectives
otherwise) and calls ``jax.distributed.initialize``. Each process writes its results as files in
``outdir`` (``process_<id>.json`` by convention); :func:`launch` returns when every process has
exited, and kills the whole lot, in ``finally``, when one fails or the time limit passes: no
process outlives the call.

A single process (``num_processes=1``) skips ``jax.distributed.initialize`` unless
``FO_MP_COLLECTIVES=gloo`` is in ``env``: then it joins a one-process runtime with gloo
collectives, so that its reductions are summed in the same order as those of N processes
(XLA's in-process CPU all-reduce uses another order).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

COORDINATOR = "FO_MP_COORDINATOR"
NUM_PROCESSES = "FO_MP_NUM_PROCESSES"
PROCESS_ID = "FO_MP_PROCESS_ID"
LOCAL_DEVICES = "FO_MP_LOCAL_DEVICES"
COLLECTIVES = "FO_MP_COLLECTIVES"


class LaunchError(RuntimeError):
    """A process failed, or the run passed its time limit; the message has every process's stderr tail."""


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """One process's exit status and the tail of what it wrote to stdout and stderr."""

    process_id: int
    returncode: int | None
    stdout: str
    stderr: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: str, limit: int = 4000) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()[-limit:]


def _kill_group(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGKILL the process's session (it and anything it started, even once it has exited), reap
    it, and wait up to ``grace`` seconds for the rest of the group to be gone.

    The group id cannot name anyone else while a member lives; once the group is empty the call
    finds nothing to kill.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def launch(
    script: str,
    args: Sequence[str],
    num_processes: int,
    local_devices: int,
    outdir: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> list[ProcessResult]:
    """Run ``python script *args`` as ``num_processes`` JAX processes with ``local_devices`` CPU devices each.

    Args:
      script: the worker; it calls :func:`initialize` before using JAX.
      args: its command-line arguments (the same for every process).
      num_processes: how many processes; ``1`` runs without the distributed runtime.
      local_devices: CPU devices per process (``jax_num_cpu_devices``).
      outdir: an existing directory; each process's stdout and stderr go to
        ``process_<id>.out`` / ``.err`` there, next to whatever the worker writes.
      timeout: seconds for the whole run, start to last exit.
      env: extra environment variables.

    Returns:
      One :class:`ProcessResult` per process, in process-id order.

    Raises:
      LaunchError: a process exited nonzero (the others are killed at once: they would wait
        for it until the coordinator's own timeout), or the time ran out.
    """
    base_env = dict(os.environ)
    base_env.pop("JAX_ENABLE_X64", None)
    base_env.update(env or {})
    base_env.update(
        {
            COORDINATOR: f"127.0.0.1:{free_port()}",
            NUM_PROCESSES: str(num_processes),
            LOCAL_DEVICES: str(local_devices),
        }
    )
    processes: list[subprocess.Popen] = []
    logs = []
    try:
        for process_id in range(num_processes):
            out, err = (os.path.join(outdir, f"process_{process_id}.{kind}") for kind in ("out", "err"))
            logs.append((out, err))
            with open(out, "w") as stdout, open(err, "w") as stderr:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, script, *args],
                        env={**base_env, PROCESS_ID: str(process_id)},
                        stdout=stdout,
                        stderr=stderr,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        failure = None
        while failure is None and any(p.poll() is None for p in processes):
            for process_id, process in enumerate(processes):
                code = process.poll()
                if code not in (None, 0):
                    failure = f"process {process_id} exited with {code}"
            if failure is None and time.monotonic() > deadline:
                failure = f"timed out after {timeout:.0f} s"
            time.sleep(0.05)
        for process_id, process in enumerate(processes):
            if failure is None and process.returncode not in (0, None):
                failure = f"process {process_id} exited with {process.returncode}"
    finally:
        for process in processes:
            _kill_group(process)
    results = [
        ProcessResult(process_id, process.returncode, _tail(out), _tail(err))
        for process_id, (process, (out, err)) in enumerate(zip(processes, logs))
    ]
    if failure is not None:
        details = "\n".join(f"--- process {r.process_id} (exit {r.returncode}):\n{r.stderr}" for r in results)
        raise LaunchError(f"{failure}\n{details}")
    return results


def initialize() -> tuple[int, int]:
    """In a worker, before any other JAX call: set up the devices and join the other processes (gloo).

    Returns ``(process_id, num_processes)``.
    """
    import jax

    num_processes = int(os.environ[NUM_PROCESSES])
    process_id = int(os.environ[PROCESS_ID])
    jax.config.update("jax_num_cpu_devices", int(os.environ[LOCAL_DEVICES]))
    if num_processes > 1 or os.environ.get(COLLECTIVES) == "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=os.environ[COORDINATOR],
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    return process_id, num_processes


def write_json(outdir: str, name: str, payload: object) -> None:
    """Write ``payload`` to ``outdir/name`` atomically (a reader never sees half a file)."""
    path = os.path.join(outdir, name)
    with open(path + ".tmp", "w") as handle:
        json.dump(payload, handle)
    os.replace(path + ".tmp", path)


def read_reports(outdir: str, processes: int) -> list:
    """Each process's ``process_<id>.json`` from ``outdir``, in process order."""
    reports = []
    for process_id in range(processes):
        with open(os.path.join(outdir, f"process_{process_id}.json")) as handle:
            reports.append(json.load(handle))
    return reports
