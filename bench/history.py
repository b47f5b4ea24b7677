"""What a restart costs as the history grows: a log of 1M and of 4M events, `querylog serve` started on each.

For each size, a log is written through the tracker (the bench workload: 4-5 events a query, 3% failures, dated
at `RATE_QPS` queries a second of event time, so that the larger log is a longer history, not a busier one),
`querylog serve` is started once to project it (Parquet caught up, metrics folded) and stopped with SIGTERM,
which writes the metrics snapshot as a running service does. Then, `repetitions` times, alternating the
sizes: `querylog serve` is started again and `/metrics` is polled until `querylog_queries_total` counts every
query of the log, and, when the metrics fold runs in the projector child (``QUERYLOG_PROJECTIONS=process``, the
default), until that child has published the fold itself (not only the file the last run left); the time from
the process's start to then is the restart time, and the peak RSS (VmHWM) of the API process and of its child,
added, one second later is its memory. The growth ratios are 4M / 1M per repetition pair.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench._common import GroupResult, free_port, new_result, status_mib
from bench._workload import write_log
from querylog.config import Settings

__all__ = ["run_history"]

SIZES = {"1m": 1_000_000, "4m": 4_000_000}
QUICK_SIZE = 50_000  # --quick: the same shape, a twentieth of the size (and --scale shrinks both)
#: The traffic the history was written at, in event time: a busy chat API (about 2M queries a day). The fold keeps
#: the last five minutes of sessions (reformulations), so what a restart loads depends on the rate, not the history.
RATE_QPS = 25.0
DEADLINE_S = 600.0  # a first start at 4M events projects 4M events: generous


def _queries_in(log_dir: Path) -> int:
    """How many queries the log holds (every one ended: completed or failed)."""
    return sum(p.read_bytes().count(b'"event_type":"query_received"') for p in sorted(log_dir.glob("*.jsonl")))


def _log_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "log").glob("*.jsonl"))


def _queries_total(text: str) -> int:
    for family in text_string_to_metric_families(text):
        if family.name == "querylog_queries":
            return int(sum(s.value for s in family.samples if s.name == "querylog_queries_total"))
    return 0


def _start(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUERYLOG_") and k != "LOKI_URL"}
    env.update({"QUERYLOG_HOME": str(home), "QUERYLOG_STDOUT_EVENTS": "false"})
    command = [sys.executable, "-m", "querylog", "serve", "--port", str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _until_totals(proc: subprocess.Popen[bytes], port: int, queries: int, started: float) -> float:
    """Seconds from `started` until /metrics counts `queries` queries."""
    url = f"http://127.0.0.1:{port}/metrics"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"querylog serve exited with {proc.returncode} before /metrics had its totals")
        try:
            if _queries_total(httpx.get(url, timeout=5.0).text) >= queries:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        if time.perf_counter() - started > DEADLINE_S:
            raise RuntimeError(f"/metrics did not count {queries} queries within {DEADLINE_S:.0f}s")
        time.sleep(0.02)  # the poll interval bounds the figure's resolution (20 ms)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # drains the projections and writes the metrics snapshot
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _lake_caught_up(home: Path) -> bool:
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.segments import LogReader

    return ParquetSink.committed_checkpoint(home / "lake") == LogReader(home / "log").end_checkpoint()


def _republished(home: Path, since: float) -> bool:
    """Whether the projector child has published the metrics fold since `since` (wall-clock seconds); True when
    the fold runs in the API process (no file)."""
    published = Settings(home=home).metrics_exposition_path
    return not published.exists() or published.stat().st_mtime >= since


def _restart(home: Path, queries: int) -> tuple[float, float]:
    """One restart: (seconds to full totals on /metrics, peak RSS of the API and its child in MiB a second later)."""
    port = free_port()
    since = time.time()
    started = time.perf_counter()
    proc = _start(home, port)
    try:
        _until_totals(proc, port, queries, started)
        while not _republished(home, since):
            if time.perf_counter() - started > DEADLINE_S:
                raise RuntimeError(f"the projector child did not publish the metrics fold within {DEADLINE_S:.0f}s")
            time.sleep(0.02)  # another process writes the file: nothing to wait on but its time
        seconds = time.perf_counter() - started
        time.sleep(1.0)  # what the first second of housekeeping and projections adds to the peak
        child = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0).json().get("projector_process", {})
        pids = [proc.pid, *([child["pid"]] if child.get("pid") else [])]
        rss = sum(status_mib(pid, "VmHWM") or float("nan") for pid in pids)
    finally:
        _stop(proc)
    return seconds, rss


def run_history(ctx: Any) -> GroupResult:
    result = new_result()
    small = ctx.size(SIZES["1m"], QUICK_SIZE, minimum=5_000)
    sizes = {"1m": small, "4m": 4 * small}
    homes: dict[str, tuple[Path, int]] = {}
    for label, n in sizes.items():
        home = ctx.work_dir / f"history-{label}"
        ctx.progress(f"history: writing a log of {n:,} events through the tracker")
        write_log(home / "log", n, rate_qps=RATE_QPS)
        queries = _queries_in(home / "log")
        ctx.progress(f"history: first start on {n:,} events (projects them all once)")
        port = free_port()
        started = time.perf_counter()
        proc = _start(home, port)
        try:
            first = _until_totals(proc, port, queries, started)
            deadline = time.monotonic() + DEADLINE_S
            while not _lake_caught_up(home) and time.monotonic() < deadline:
                time.sleep(0.5)  # the Parquet projection catches up in the server; nothing to wait on here
        finally:
            _stop(proc)
        homes[label] = (home, queries)
        result["extra"][f"first_start_s_{label}"] = round(first, 2)
    times: dict[str, list[float]] = {label: [] for label in sizes}
    peaks: dict[str, list[float]] = {label: [] for label in sizes}
    for rep in range(ctx.repetitions):
        ctx.progress(f"history: restart {rep + 1}/{ctx.repetitions} of each")
        order = list(sizes) if rep % 2 == 0 else list(reversed(sizes))
        for label in order:
            home, queries = homes[label]
            seconds, rss = _restart(home, queries)
            times[label].append(seconds)
            peaks[label].append(rss)
    result["samples"]["restart_growth_ratio"] = [b / a for a, b in zip(times["1m"], times["4m"], strict=True)]
    result["samples"]["rss_growth_ratio"] = [b / a for a, b in zip(peaks["1m"], peaks["4m"], strict=True)]
    result["extra"].update(
        {
            "events": sizes,
            "queries": {label: q for label, (_, q) in homes.items()},
            "restart_s": {label: [round(t, 3) for t in v] for label, v in times.items()},
            "restart_s_median": {label: round(statistics.median(v), 3) for label, v in times.items()},
            "peak_rss_mib": {label: [round(r, 1) for r in v] for label, v in peaks.items()},
            "peak_rss_mib_median": {label: round(statistics.median(v), 1) for label, v in peaks.items()},
            "log_bytes": {label: _log_bytes(home) for label, (home, _) in homes.items()},
            "means": "restart: process start to a /metrics scrape counting every query and, with the fold in the "
            "projector child, to that child's first publication (polled every 20 ms); RSS: VmHWM of the API "
            "process and its child, added, one second after; the absolute figures are machine-bound, the ratios "
            "are the goals",
        }
    )
    return result
