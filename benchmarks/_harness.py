"""Shared pieces of the benchmarks: device setup, interleaved timing, the environment, Markdown output.

Timing model. Every implementation of one case is held in memory at once and run in rounds; each
round runs every implementation once, in a fresh random order (seeded), so that slow phases of a
shared machine (other processes, frequency changes) hit all of them alike and no implementation
always follows the same one. A sample is ``steps`` consecutive steps with a single wait at the end
(JAX dispatches asynchronously, as in a real training loop), divided by ``steps``; each
implementation gets its own ``steps`` so that its sample lasts a few tens of ms. Before each sample
the harness sleeps 15 ms: after a parallel region torch's OpenMP worker keeps spinning for several
ms (libgomp's default spin count), and on a 2-core machine that spinning thread would take a core
from whatever runs next: with a fixed order, the implementation after torch's was measured up to
1.45x slower than the same kernel elsewhere in the round.
Reported: the median over rounds (the headline number) and the minimum (the least disturbed run).

``--single-core`` mode (see :func:`pin_to_one_core`) times CPU time instead of wall time on one
pinned core: a per-core comparison that other processes on a shared machine barely disturb.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def pin_to_one_core() -> int:
    """Restrict this process to one CPU (the last one), before any thread pool exists.

    With one schedulable CPU, XLA's and torch's thread pools each have a single thread, so the
    process's CPU time (``time.process_time``) counts the work alone: time spent descheduled by
    other processes on a shared machine drops out. Call before importing jax or torch.
    """
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    os.environ["OMP_NUM_THREADS"] = "1"
    return cpu


def add_main_job_options(parser) -> None:
    """Add ``--plain-xla`` and ``--default-malloc``, the opt-outs of :func:`apply_main_job_settings`."""
    parser.add_argument(
        "--plain-xla", action="store_true", help="XLA's default CPU convolutions (YNNPACK), not the main job's setting"
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="glibc's malloc defaults and asynchronous CPU dispatch, not the main job's setting",
    )


def apply_main_job_settings(args) -> str:
    """Apply ``examples/train_cnn.py``'s process settings unless ``args`` opts out; before JAX starts.

    Eigen convolutions (``examples/seed_cnn/xla_cpu.py``) and reuse of freed host memory
    (``examples/seed_cnn/allocator.py``). Returns the host-memory setting in words, for the report.
    """
    from examples.seed_cnn import allocator, xla_cpu

    if not args.plain_xla:
        xla_cpu.prefer_eigen_convolutions()
    if not args.default_malloc:
        allocator.keep_freed_memory()
    return allocator.describe()


_PROCESS_SETTINGS = contextlib.ExitStack()
"""What :func:`configure` enters for the rest of the process (a context manager left unreferenced
would be closed, and its setting undone, as soon as it is garbage-collected)."""


def configure(platform_name: str | None) -> str:
    """Pick the JAX platform and make both frameworks use full-precision float32 matmuls.

    ``parity.platform``'s ``use_platform``, and its ``full_precision`` for the rest of the process
    (TF32 would make both sides faster and less accurate by different amounts; the comparison is
    float32 against float32), plus one torch thread when pinned to one core. Returns the platform
    actually used (``cpu`` or ``gpu``). Must run before any computation.
    """
    import torch

    from parity.platform import PlatformUnavailable, full_precision, use_platform

    try:
        used = use_platform(platform_name)
    except PlatformUnavailable as error:
        raise SystemExit(str(error)) from None
    _PROCESS_SETTINGS.enter_context(full_precision())  # held until the process ends
    if single_core():
        torch.set_num_threads(1)
    if used == "gpu" and not torch.cuda.is_available():
        raise SystemExit("JAX sees a GPU but torch.cuda.is_available() is False: no torch comparison possible")
    return used


def torch_device(platform_name: str):
    import torch

    return torch.device("cuda" if platform_name == "gpu" else "cpu")


def torch_sync(platform_name: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if platform_name == "gpu" else (lambda: None)


def single_core() -> bool:
    return len(os.sched_getaffinity(0)) == 1


def clock() -> Callable[[], float]:
    """CPU time when pinned to one core (see :func:`pin_to_one_core`), else wall time."""
    return time.process_time if single_core() else time.perf_counter


def measure(
    runners: dict[str, Callable[[], None]],
    repeats: int,
    steps: int | dict[str, int] = 1,
    warmup: int = 2,
    gap_s: float = 0.015,
) -> dict[str, dict[str, float]]:
    """Interleaved timing of ``runners`` (each runs ``steps[name]`` steps and waits for the result).

    Returns ``{name: {"median": s, "min": s}}``, seconds per step.
    """
    if isinstance(steps, int):
        steps = dict.fromkeys(runners, steps)
    now = clock()
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            time.sleep(gap_s)
            started = now()
            runners[name]()
            samples[name].append((now() - started) / steps[name])
    return {name: {"median": statistics.median(v), "min": min(v)} for name, v in samples.items()}


def steps_for(run_one: Callable[[], None], target_s: float, limit: int = 64) -> int:
    """How many steps make one sample last about ``target_s`` (at least 1), from a trial step."""
    now = clock()
    run_one()
    started = now()
    run_one()
    once = now() - started
    return max(1, min(limit, int(target_s / max(once, 1e-6))))


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "unknown CPU").strip()
    l3 = fields.get("L3 cache", "").strip()
    return f"{model}{f', L3 {l3}' if l3 else ''}"


def environment(platform_name: str) -> dict[str, str]:
    import jax
    import jaxlib
    import optax
    import torch

    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _lscpu_model(),
        "nproc": str(os.cpu_count()),
        "load average (1, 5, 15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "jax": f"{jax.__version__} (jaxlib {jaxlib.__version__})",
        "optax": optax.__version__,
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "(unset)"),
        "matmul precision": (
            f"JAX {jax.config.jax_default_matmul_precision or 'default'}; torch TF32 "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else 'off'}"
        ),
        "timing": (
            f"CPU time on one pinned core (cpu {next(iter(os.sched_getaffinity(0)))})"
            if single_core()
            else f"wall clock, all {len(os.sched_getaffinity(0))} cores"
        ),
    }
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    if platform_name == "gpu":
        info["device"] = f"{jax.devices()[0].device_kind} (JAX); {torch.cuda.get_device_name(0)} (torch)"
    else:
        cores = "1 pinned core of " + info["nproc"] if single_core() else info["nproc"] + " cores"
        info["device"] = f"CPU: {info['cpu']}, {cores}"
    return info


def load_now() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown_section(
    title: str, info: dict[str, str], header: list[str], rows: list[list[str]], notes: list[str]
) -> str:
    lines = [f"## {title}", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n\n"


def append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
