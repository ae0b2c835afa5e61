"""Running the catalog and presenting it: the coverage table, Markdown summary and plots."""

from __future__ import annotations

import os
from collections.abc import Iterable

from parity.case import Case, CaseReport, run_case
from parity.catalog import all_cases
from parity.selection import first_of_each_family


def select_cases(
    families: Iterable[str] | None = None, dtype: str | None = None, quick: bool = False
) -> list[tuple[Case, str]]:
    """The (case, dtype) pairs matching the filters; ``quick`` keeps the first case per family."""
    wanted = set(families) if families else None
    cases = all_cases()
    firsts = first_of_each_family(cases)
    selected = []
    for case in cases:
        if wanted is not None and case.family not in wanted:
            continue
        if quick and case.name not in firsts:
            continue
        for case_dtype in case.dtypes:
            if dtype is None or case_dtype == dtype:
                selected.append((case, case_dtype))
    return selected


def _row(case: Case, dtype: str, report: CaseReport) -> str:
    first = "-" if report.first_failure is None else str(report.first_failure)
    verdict = "pass" if report.passed else "FAIL"
    if report.passed and not report.within_contract:
        verdict += " (chaotic: judged against torch's own floor, parity/chaos.py)"
    return (
        f"{case.name:<52} {dtype:<8} {report.max_relative_error:10.2e} "
        f"{float(report.closeness.max()):10.3f} {first:>6} {verdict}"
    )


HEADER = f"{'case':<52} {'dtype':<8} {'max_rel':>10} {'max_ratio':>10} {'first':>6} verdict"


def run_catalog(families=None, dtype=None, quick=False, dry_run=False, echo=print):
    """Run the selected cases, printing one table row per run; returns (case, dtype, report)."""
    selected = select_cases(families, dtype, quick)
    if dry_run:
        return [(case, case_dtype, None) for case, case_dtype in selected]
    echo(HEADER)
    results = []
    for case, case_dtype in selected:
        report = run_case(case, case_dtype)
        echo(_row(case, case_dtype, report))
        results.append((case, case_dtype, report))
    return results


def run_lbfgs_cases(families=None, dtype=None, quick=False, echo=print):
    """LBFGS is closure-driven, so its cases have their own harness; same filters and table."""
    if families and "lbfgs" not in families:
        return []
    from parity.cases.lbfgs import LBFGS_CASES
    from parity.lbfgs_harness import run_lbfgs_case

    results = []
    for case in LBFGS_CASES[:1] if quick else LBFGS_CASES:
        for case_dtype in case.dtypes:
            if dtype is not None and case_dtype != dtype:
                continue
            report = run_lbfgs_case(case, case_dtype)
            bound = "" if report.within_contract else " (chaotic: judged against torch's own floor, parity/chaos.py)"
            rel, ratio = (f"{report.worst:10.2e}", f"{'-':>10}")
            if case_dtype == "float32":
                rel, ratio = f"{'-':>10}", f"{report.worst:10.3f}"
            echo(f"{case.name:<52} {case_dtype:<8} {rel} {ratio} {'-':>6} {'pass' if report.passed else 'FAIL'}{bound}")
            results.append((case, case_dtype, report))
    return results


def write_report(results, directory: str, seed_cnn_reports=(), lbfgs_results=()) -> str:
    """Write ``summary.md``, one error-curve PNG per family and the seed CNN's loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    families: dict[str, list] = {}
    for case, dtype, report in results:
        families.setdefault(case.family, []).append((case, dtype, report))

    lines = [
        "# Parity report",
        "",
        "max_rel: largest per-leaf relative error over all steps (float64 contract: <= 1e-12).",
        "max_ratio: largest |ours - torch| / (1e-5 + 1.3e-6 |torch|) (float32 contract: <= 1).",
        "",
        "| case | dtype | steps | max_rel | max_ratio | first failing step | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, dtype, report in results:
        first = "-" if report.first_failure is None else str(report.first_failure)
        lines.append(
            f"| {case.name} | {dtype} | {report.steps} | {report.max_relative_error:.2e} | "
            f"{float(report.closeness.max()):.3f} | {first} | {'pass' if report.passed else 'FAIL'} |"
        )
    lines.append("")
    for family, rows in families.items():
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, dtype in zip(axes, ("float64", "float32")):
            for case, case_dtype, report in rows:
                if case_dtype != dtype:
                    continue
                values = report.relative_errors if dtype == "float64" else report.closeness
                ax.semilogy(
                    range(1, report.steps + 1), [max(v, 1e-18) for v in values], label=case.name.split("/", 1)[1]
                )
            has_curves = bool(ax.lines)
            ax.axhline(1e-12 if dtype == "float64" else 1.0, color="red", linestyle="--")
            ax.set_title(f"{family} {dtype}: " + ("relative error" if dtype == "float64" else "assert_close ratio"))
            ax.set_xlabel("step")
            if has_curves:
                ax.legend(fontsize=6)
        fig.tight_layout()
        image = f"{family}.png"
        fig.savefig(os.path.join(directory, image), dpi=80)
        plt.close(fig)
        lines.append(f"![{family}]({image})")
    if lbfgs_results:
        lines += [
            "",
            "## LBFGS (closure-driven harness: parity/cases/lbfgs.py)",
            "",
            "| case | dtype | steps | worst (float64: rel err; float32: ratio) | bound | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for case, dtype, report in lbfgs_results:
            bound = "contract" if report.within_contract else "torch's own floor (parity/chaos.py)"
            lines.append(
                f"| {case.name} | {dtype} | {case.steps} | {report.worst:.2e} | {bound} | "
                f"{'pass' if report.passed else 'FAIL'} |"
            )
    if seed_cnn_reports:
        from parity import seed_cnn

        lines += [
            "",
            "## Seed CNN, torch vs functional_optreg from the same weights on the same batches",
            "",
            "| configuration | dtype | steps | max loss rel diff | max param rel err |",
            "|---|---|---|---|---|",
        ]
        for report in seed_cnn_reports:
            lines.append(
                f"| {report.name} | {report.dtype} | {report.steps} | "
                f"{seed_cnn.loss_relative_differences(report).max():.2e} | {report.max_relative_error:.2e} |"
            )
        seed_cnn.loss_curve_plot(list(seed_cnn_reports), os.path.join(directory, "seed_cnn.png"))
        lines += ["", "![seed CNN loss curves](seed_cnn.png)"]
    path = os.path.join(directory, "summary.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
