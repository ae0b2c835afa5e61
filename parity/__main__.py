"""``python -m parity``: run the catalog and print the coverage table.

    python -m parity                       # every case, both dtypes
    python -m parity --optimizer adam sgd  # some families
    python -m parity --dtype float64 --quick
    python -m parity --report-dir reports/ # also a Markdown summary and PNG plots
    python -m parity --quick --platform gpu  # our side on the GPU, torch's (the oracle) on the CPU
    python -m parity port MODULE:FACTORY   # locate where a ported training step diverges (parity/port.py)
    python -m parity fuzz --minutes 30 --seed 0  # differential testing on generated configurations

Exit status 1 when any case is out of tolerance, 2 when no case ran (nothing matched the filters,
or ``--platform gpu`` and JAX found no GPU).
"""

from __future__ import annotations

import argparse
import sys
import time

from parity.platform import PLATFORMS, PlatformUnavailable, describe, full_precision, use_platform
from parity.report import run_catalog, run_lbfgs_cases, write_report


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m parity",
        description=__doc__.split("\n")[0],
        epilog="Subcommands: 'python -m parity port MODULE:FACTORY' (where a ported training step diverges), "
        "'python -m parity fuzz --minutes M' (generated configurations against torch); each has its own --help.",
    )
    parser.add_argument("--optimizer", nargs="+", metavar="FAMILY", help="only these families (e.g. adam sgd)")
    parser.add_argument("--dtype", choices=("float64", "float32"), help="only this dtype")
    parser.add_argument("--quick", action="store_true", help="one case per family (a smoke run under 2 minutes)")
    parser.add_argument(
        "--report-dir", metavar="DIR", help="write summary.md and PNG plots here (also runs the seed CNN end to end)"
    )
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument(
        "--platform",
        choices=PLATFORMS,
        help="where our side computes (default: JAX's default device); torch, the oracle, stays on the CPU; "
        "'gpu' refuses to start rather than fall back to the CPU; float32 matmuls at full precision either way",
    )
    return parser.parse_args(argv)


def _run_seed_cnn(quick: bool):
    """The seed CNN end to end in float64 (all configurations; ``quick``: Adam + L2, 20 steps)."""
    from parity import seed_cnn

    names = ["adam+l2"] if quick else list(seed_cnn.CONFIGURATIONS)
    steps = 20 if quick else seed_cnn.STEPS
    reports = []
    for name in names:
        report = seed_cnn.run(name, "float64", steps=steps)
        difference = seed_cnn.loss_relative_differences(report).max()
        print(f"seed CNN {name} [float64, {steps} steps]: max loss rel diff {difference:.2e}")
        reports.append(report)
    return reports


def _fuzz_main(argv) -> int:
    """``python -m parity fuzz``: generated configurations against torch (parity/fuzz.py)."""
    from parity import fuzz

    parser = argparse.ArgumentParser(prog="python -m parity fuzz", description=_fuzz_main.__doc__)
    parser.add_argument("--minutes", type=float, default=None, help="run this long (default: until --count)")
    parser.add_argument("--count", type=int, default=None, help="run this many configurations")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (same seed, same configurations)")
    parser.add_argument("--steps", type=int, default=fuzz.STEPS, help="steps per configuration (at least 50)")
    args = parser.parse_args(argv)
    if args.minutes is None and args.count is None:
        parser.error("give --minutes or --count")
    started = time.perf_counter()
    ran, steps, failures = fuzz.fuzz(args.seed, minutes=args.minutes, count=args.count, steps=args.steps)
    print(
        f"fuzz: {ran} configurations, {steps} steps compared, {len(failures)} failed "
        f"({time.perf_counter() - started:.1f} s, seed {args.seed})"
    )
    return 1 if failures else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["port"]:
        from parity.port import main as port_main

        with full_precision():
            return port_main(argv[1:])
    if argv[:1] == ["fuzz"]:
        with full_precision():
            return _fuzz_main(argv[1:])
    args = _parse(argv)
    if not args.list:
        try:
            use_platform(args.platform)
        except PlatformUnavailable as error:
            print(f"python -m parity: {error}", file=sys.stderr)
            return 2
        print(f"device: {describe()}; torch (the oracle) on the CPU")
    with full_precision():
        return _run(args)


def _run(args) -> int:
    started = time.perf_counter()
    results = run_catalog(families=args.optimizer, dtype=args.dtype, quick=args.quick, dry_run=args.list)
    if args.list:
        for case, dtype, _ in results:
            print(f"{case.name} [{dtype}]")
        return 0
    lbfgs_results = run_lbfgs_cases(families=args.optimizer, dtype=args.dtype, quick=args.quick)
    if not results and not lbfgs_results:
        print("no case matches the filters", file=sys.stderr)
        return 2
    if args.report_dir:
        seed_cnn_reports = _run_seed_cnn(quick=args.quick)
        path = write_report(results, args.report_dir, seed_cnn_reports, lbfgs_results)
        print(f"\nreport written to {path}")
    runs = results + lbfgs_results
    failures = sum(not report.passed for _, _, report in runs)
    print(f"\nparity: {len(runs) - failures} passed, {failures} failed ({time.perf_counter() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
