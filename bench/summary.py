"""Render a bench result JSON as the Markdown table in docs/benchmarks.md.

.venv/bin/python bench/summary.py bench/results/20261124T030000Z.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _fmt(value: float | None) -> str:
    if value is None:
        return "null"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def markdown(result: dict[str, Any]) -> str:
    from querylog.commands.bench import FIGURES

    rows = ["| figure | median | min – max | unit | goal | met |", "|---|---|---|---|---|---|"]
    for figure in FIGURES:
        if figure.key not in result:
            continue
        value = result[figure.key]
        spread = result["spread"].get(figure.key)
        goal = result["goals"].get(figure.key, {})
        met = {True: "yes", False: "**missed**", None: ""}[goal.get("met")]
        span = f"{_fmt(spread['min'])} – {_fmt(spread['max'])}" if spread else ""
        shown = _fmt(value) if value is not None else f"null ({result['reasons'].get(figure.key, '')})"
        rows.append(f"| `{figure.key}` | {shown} | {span} | {figure.unit} | {goal.get('goal', '')} | {met} |")
    machine = result["machine"]
    rows.append("")
    rows.append(
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['mem_total_mib'] / 1024:.0f} GiB, "
        f"Python {machine['python']}; load average (1/5/15 min) {machine.get('loadavg_start')} at the start, "
        f"{machine.get('loadavg_end')} at the end; commit {machine.get('git', {}).get('commit', '?')[:10]}"
        f"{' (dirty)' if machine.get('git', {}).get('dirty') else ''}; run took {result['elapsed_s']:.0f} s."
    )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
