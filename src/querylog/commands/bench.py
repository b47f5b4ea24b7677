"""``querylog bench``: measure the emit path, the projections, the lake queries and the API, side by side."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging as std_logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from querylog.config import Settings
from querylog.logging.redaction import shown_url

__all__ = ["FIGURES", "GROUPS", "BenchContext", "Figure", "add_parser", "run", "summarise"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One headline number: its unit, the goal it is held to ("<=" or ">=" a bound), and its group."""

    key: str
    unit: str
    group: str
    goal: tuple[str, float] | None = None
    meaning: str = ""


# The order here is the order of the JSON object, the terminal table and docs/benchmarks.md.
FIGURES: Final[tuple[Figure, ...]] = (
    Figure("emit_vs_structlog_ratio", "ratio", "emit", ("<=", 0.33), "a query recorded: ours / structlog lines"),
    Figure("emit_vs_stdlib_logging_ratio", "ratio", "emit", None, "same / a stdlib logging JSON line per step"),
    Figure("emit_vs_otel_span_ratio", "ratio", "emit", ("<=", 0.10), "same / OTel SDK spans, batch processor"),
    Figure("emit_vs_langfuse_ratio", "ratio", "emit", None, "same / Langfuse SDK observations, export off"),
    Figure("emit_us_p50", "us", "emit", None, "one stage event on the caller's thread, all sinks on (machine-bound)"),
    Figure("emit_us_p99", "us", "emit", None, "same, 99th percentile (machine-bound)"),
    Figure("lifecycle_us_p50", "us", "lifecycle", None, "a tracked query's 5 events + flush, minus untracked"),
    Figure(
        "speedup_vs_python_logging_loki", "x", "python_logging_loki", (">=", 100.0), "vs its per-record caller time"
    ),
    Figure(
        "speedup_vs_python_logging_loki_local_double",
        "x",
        "python_logging_loki",
        (">=", 100.0),
        "same, its HTTP push going to the loopback Loki double",
    ),
    Figure("loki_events_per_s", "events/s", "loki", None, "Loki projection throughput against LOKI_URL"),
    Figure("loki_raw_push_ceiling_events_per_s", "events/s", "loki", None, "minimal gzip-JSON push, same lines"),
    Figure("loki_share_of_raw_push_ceiling", "ratio", "loki", (">=", 0.9), "projection / raw ceiling"),
    Figure("loki_events_per_s_local_double", "events/s", "loki", None, "same against the loopback Loki double"),
    Figure("loki_raw_push_ceiling_events_per_s_local_double", "events/s", "loki", None, "raw push to the double"),
    Figure(
        "loki_share_of_raw_push_ceiling_local_double",
        "ratio",
        "loki",
        None,
        "projection / raw, double: our CPU per event, as the double does no work",
    ),
    Figure("parquet_events_per_s", "events/s", "parquet", (">=", 200_000.0), "log -> Parquet projection throughput"),
    Figure("trend_ms_10m", "ms", "lake", ("<=", 200.0), "hourly intent counts over a 10M-event lake"),
    Figure("percentiles_ms_10m", "ms", "lake", ("<=", 250.0), "p50/p95/p99 latency by intent, 10M events"),
    Figure("search_ms_10m", "ms", "lake", ("<=", 50.0), "top-50 Korean search (SearchIndex), 10M events"),
    Figure("search_ms_10m_ilike_baseline", "ms", "lake", None, "top-50 newest ILIKE matches in DuckDB, 10M events"),
    Figure("trend_ms_100k", "ms", "lake", None, "--quick stand-in: the trend query on a 100k-event lake"),
    Figure("percentiles_ms_100k", "ms", "lake", None, "--quick stand-in: percentiles on a 100k-event lake"),
    Figure("search_ms_100k", "ms", "lake", None, "--quick stand-in: SearchIndex on a 100k-event lake"),
    Figure("search_ms_100k_ilike_baseline", "ms", "lake", None, "--quick stand-in: ILIKE on a 100k-event lake"),
    Figure("api_throughput_ratio_instrumented", "ratio", "api", (">=", 0.95), "chat req/s with querylog on / off"),
    Figure("rss_mb_api", "MiB", "api", ("<=", 300.0), "the API process's peak RSS under that load"),
    Figure("restart_growth_ratio", "ratio", "history", ("<=", 1.5), "restart to full /metrics: 4M / 1M events"),
    Figure("rss_growth_ratio", "ratio", "history", ("<=", 1.2), "peak RSS after that restart: 4M / 1M events"),
)
FIGURE_BY_KEY: Final = {f.key: f for f in FIGURES}
#: Groups in the order they run; the emit figures feed the python-logging-loki speedup.
GROUPS: Final[tuple[str, ...]] = (
    "emit",
    "lifecycle",
    "python_logging_loki",
    "loki",
    "parquet",
    "lake",
    "api",
    "history",
)
#: Each group's code in the repository's bench/ folder (bench/<module>.py, function `run(ctx)`).
_GROUP_MODULES: Final = {
    "emit": "bench.emit",
    "lifecycle": "bench.emit",
    "python_logging_loki": "bench.loki",
    "loki": "bench.loki",
    "parquet": "bench.parquet",
    "lake": "bench.lake",
    "api": "bench.api",
    "history": "bench.history",
}
_GROUP_FUNCTIONS: Final = {
    "emit": "run_emit",
    "lifecycle": "run_lifecycle",
    "python_logging_loki": "run_python_logging_loki",
    "loki": "run_loki",
    "parquet": "run_parquet",
    "lake": "run_lake",
    "api": "run_api",
    "history": "run_history",
}
MIN_REPETITIONS: Final = 5


@dataclass
class BenchContext:
    """What every group gets: the mode, where to put data, and a place to hand figures to later groups."""

    quick: bool
    scale: float
    home: Path
    work_dir: Path
    loki_url: str | None
    repetitions: int = MIN_REPETITIONS
    shared: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda message: None)

    def size(self, full: int, quick: int, *, minimum: int = 1) -> int:
        """A workload size: `full` for a full run, `quick` under --quick, both times --scale."""
        return max(minimum, int((quick if self.quick else full) * self.scale))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmarks (emit path, projections, lake queries, API) and save the figures",
        description="Measure, in one run: the emit cost on the caller's thread, a tracked query's overhead, "
        "the speedup over python-logging-loki, Loki and Parquet projection throughput, hourly-trend, percentile "
        "and search latency on a generated 10M-event lake (cached under $QUERYLOG_HOME/bench), and the chat API's "
        "throughput and RSS with querylog on versus off. Each figure is the median of at least 5 repetitions, "
        "with min and max. See docs/benchmarks.md.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (about 1.5 min on 2 cores, most of it the history group); a 100k-event lake instead of 10M",
    )
    p.add_argument("--only", default="", help=f"comma-separated groups to run: {', '.join(GROUPS)}")
    p.add_argument(
        "--output-dir", default=None, help="where <timestamp>.json goes (default: the repository's bench/results)"
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload size (e.g. 0.1 for a smoke run)")
    p.add_argument("--repetitions", type=int, default=MIN_REPETITIONS, help="repetitions per figure (at least 5)")
    p.set_defaults(run=run)


def _bench_root() -> Path | None:
    """The repository's bench/ folder: next to the working directory, or next to this source tree."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[3]]
    for root in candidates:
        if (root / "bench" / "__init__.py").is_file():
            return root
    return None


def _bench_package(root: Path) -> None:
    """Import the repository's bench/ as the package `bench`, from its path: another `bench` module that
    happens to be importable (a script in the working directory) must not be picked up instead. The root is
    never put on sys.path, so it cannot shadow the standard library either (see DESIGN.md)."""
    folder = (root / "bench").resolve()
    loaded = sys.modules.get("bench")
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "/").resolve().parent == folder:
        return
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "bench", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the bench package from {folder}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = package
    spec.loader.exec_module(package)


def _load_group(root: Path, group: str) -> Callable[[BenchContext], Mapping[str, Any]]:
    _bench_package(root)
    module = importlib.import_module(_GROUP_MODULES[group])
    function: Callable[[BenchContext], Mapping[str, Any]] = getattr(module, _GROUP_FUNCTIONS[group])
    return function


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _git(root: Path | None) -> dict[str, Any]:
    if root is None or shutil.which("git") is None:
        return {}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(dirty)}


def machine_info(root: Path | None) -> dict[str, Any]:
    """Enough to tell two runs' machines apart; with the load averages, whether the machine was busy."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "mem_total_mib": _mem_total_mib(),
        "wrk": shutil.which("wrk") is not None,
        "packages": {
            name: _version(name)
            for name in (
                "querylog",
                "msgspec",
                "pyarrow",
                "duckdb",
                "polars",
                "orjson",
                "fastapi",
                "uvicorn",
                "httpx",
                "python-logging-loki",
            )
        },
        "git": _git(root),
    }


def summarise(samples: Sequence[float]) -> dict[str, float | int]:
    """Median, min and max of a figure's repetitions."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def _met(figure: Figure, value: float) -> bool | None:
    if figure.goal is None:
        return None
    op, bound = figure.goal
    return value <= bound if op == "<=" else value >= bound


def _round(value: float) -> float:
    """Three significant digits past the point for small figures; whole numbers for throughputs."""
    if abs(value) >= 1000:
        return float(round(value))
    return float(f"{value:.4g}")


def _lake_keys(quick: bool) -> set[str]:
    """Keys a run of this mode cannot produce: the 10M lake under --quick, the 100k stand-in otherwise."""
    return {f.key for f in FIGURES if f.key.endswith(("_100k", "_100k_ilike_baseline"))} if not quick else set()


def run_bench(
    ctx: BenchContext, groups: Sequence[str], root: Path | None, *, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Run the groups; return the result object (figures as medians, spread, reasons, goals, extra, machine)."""
    started = time.monotonic()
    # 1-, 5- and 15-minute load averages: on a shared machine, figures taken at a load of 5 are not a quiet run's.
    load_start = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {
        "querylog_bench": 1,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": ctx.quick,
        "scale": ctx.scale,
        "repetitions": ctx.repetitions,
    }
    samples: dict[str, list[float]] = {}
    reasons: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for group in GROUPS:
        keys = [f.key for f in FIGURES if f.group == group]
        if group not in groups:
            for key in keys:
                reasons[key] = f"not run (--only {','.join(groups)})"
            continue
        if root is None:
            for key in keys:
                reasons[key] = "the repository's bench/ folder was not found: run from a source checkout"
            continue
        progress(f"{group}: starting")
        t0 = time.monotonic()
        try:
            outcome = _load_group(root, group)(ctx)
        except Exception as exc:  # one broken group must not lose the others' figures: record it, go on
            progress(f"{group}: failed: {type(exc).__name__}: {exc}")
            for key in keys:
                reasons.setdefault(key, f"{group} failed: {type(exc).__name__}: {exc}")
            extra[f"{group}_error"] = f"{type(exc).__name__}: {exc}"
            continue
        for key, values in dict(outcome.get("samples", {})).items():
            if values:
                samples[key] = [float(v) for v in values]
        for key, why in dict(outcome.get("reasons", {})).items():
            reasons.setdefault(key, str(why))
        if outcome.get("extra"):
            extra[group] = outcome["extra"]
        progress(f"{group}: done in {time.monotonic() - t0:.1f}s")
    spread: dict[str, Any] = {}
    goals: dict[str, Any] = {}
    excluded = _lake_keys(ctx.quick)
    for figure in FIGURES:
        if figure.key in excluded:
            continue
        values = samples.get(figure.key)
        if values:
            stats = summarise(values)
            result[figure.key] = _round(float(stats["median"]))
            spread[figure.key] = {
                "min": _round(float(stats["min"])),
                "max": _round(float(stats["max"])),
                "n": stats["n"],
                "unit": figure.unit,
            }
            reasons.pop(figure.key, None)
        else:
            result[figure.key] = None
            reasons.setdefault(figure.key, "not measured")
        if figure.goal is not None:
            value = result[figure.key]
            goals[figure.key] = {
                "goal": f"{figure.goal[0]} {figure.goal[1]:g}",
                "met": None if value is None else _met(figure, value),
            }
    result["spread"] = spread
    result["reasons"] = {k: v for k, v in reasons.items() if k not in excluded}
    result["goals"] = goals
    result["loki_target"] = ctx.shared.get(
        "loki_target", {"LOKI_URL": shown_url(ctx.loki_url) if ctx.loki_url else None}
    )
    result["extra"] = extra
    info = machine_info(root)
    info["loadavg_start"] = load_start
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = info
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def _table(result: Mapping[str, Any]) -> str:
    rows = [("figure", "median", "min", "max", "unit", "goal", "met")]
    for figure in FIGURES:
        if figure.key not in result:
            continue
        value = result[figure.key]
        spread = result["spread"].get(figure.key, {})
        goal = result["goals"].get(figure.key, {})
        met = goal.get("met")
        rows.append(
            (
                figure.key,
                "null" if value is None else f"{value:g}",
                f"{spread['min']:g}" if spread else "",
                f"{spread['max']:g}" if spread else "",
                figure.unit,
                goal.get("goal", ""),
                "" if met is None else ("yes" if met else "MISSED"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if result["reasons"]:
        lines.append("")
        lines += [f"{key}: null - {why}" for key, why in result["reasons"].items()]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, settings: Settings) -> int:
    groups = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        print(f"querylog bench: unknown group(s) {unknown}; choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    if args.repetitions < MIN_REPETITIONS:
        print(f"querylog bench: --repetitions must be at least {MIN_REPETITIONS}", file=sys.stderr)
        return 2
    if not 0 < args.scale < float("inf"):  # NaN too
        print(f"querylog bench: --scale must be a number > 0, got {args.scale}", file=sys.stderr)
        return 2
    from querylog.logging.structured import configure_structlog

    # The runtimes the groups start log through structlog; stdout must carry nothing but the result.
    configure_structlog(stream=sys.stderr, level=std_logging.WARNING, force=True)
    root = _bench_root()
    output_dir = Path(args.output_dir) if args.output_dir else (root or Path.cwd()) / "bench" / "results"
    work_dir = Path(tempfile.mkdtemp(prefix="querylog-bench-"))
    ctx = BenchContext(
        quick=args.quick,
        scale=args.scale,
        home=settings.home.resolve(),
        work_dir=work_dir,
        loki_url=settings.loki_url,
        repetitions=args.repetitions,
        progress=_progress,
    )
    try:
        result = run_bench(ctx, groups, root, progress=_progress)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = output_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _progress(f"saved {path}")
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_table(result))
    return 0
