"""Merge the JSON files written by the benchmarks (``--json``) into Markdown tables.

    python benchmarks/report.py run1.json run2.json ... > tables.md

Files of one kind (update step, training step, many small arrays) and one timing mode (wall clock
on all cores, or CPU time on one pinned core) become one table; the environment lines list every
run's date and load average.
"""

from __future__ import annotations

import argparse
import json

import train_step
import update_step


def kind(document: dict) -> str:
    if "times" in document:
        return "many_leaves"
    return "train_step" if "batch" in document["rows"][0] else "update_step"


def section(title: str, documents: list[dict], header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    first = documents[0]["environment"]
    lines = [f"### {title}", ""]
    for key in ("device", "timing", "jax", "optax", "torch", "flax", "python", "XLA_FLAGS"):
        if key in first:
            lines.append(f"- {key}: {first[key]}")
    for document in documents:
        env = document["environment"]
        lines.append(
            f"- run {env['date']}: load average {env['load average (1, 5, 15 min) at start']} at start, "
            f"{env.get('load average (1, 5, 15 min) at end', '?')} at end"
            + (f" (interrupted {env['interrupted']})" if "interrupted" in env else "")
        )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    groups: dict[tuple[str, str], list[dict]] = {}
    for path in args.files:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        groups.setdefault((kind(document), document["environment"]["timing"]), []).append(document)
    out = []
    for (name, timing), documents in groups.items():
        if name == "update_step":
            header, rows = update_step.markdown_rows([row for d in documents for row in d["rows"]])
            notes = [update_step.MARKDOWN_NOTE]
            title = "Update step"
        elif name == "train_step":
            header, rows = train_step.markdown_rows([row for d in documents for row in d["rows"]])
            notes = [train_step.MARKDOWN_NOTE]
            title = "Seed CNN training step"
        else:
            header = ["variant", "ms per step, median (min)", "/ torch fused (400 tensors)"]
            rows, notes = [], []
            for document in documents:
                times = document["times"]
                target = times["torch fused"]
                for variant, t in times.items():
                    rows.append(
                        [
                            variant,
                            f"{t['median'] * 1e3:.2f} ({t['min'] * 1e3:.2f})",
                            f"{t['median'] / target['median']:.2f} ({t['min'] / target['min']:.2f})",
                        ]
                    )
            size = f"{documents[0]['params'] / 1e6:.0f}M parameters in {documents[0]['leaves']} arrays"
            title = f"Many small arrays (Adam, {size})"
        out.append(section(f"{title}: {timing}", documents, header, rows, notes))
    print("\n".join(out))


if __name__ == "__main__":
    main()
