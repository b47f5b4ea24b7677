"""Log → Parquet projection throughput: the real projector end to end, where its time goes, and its two paths."""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench._common import GroupResult, new_result
from bench._workload import write_log
from bench.parquet_paths import PATHS, equal_to_per_line
from querylog.config import Settings
from querylog.logging.codec import decode
from querylog.logging.parquet import ParquetSink, _partition, events_to_table
from querylog.logging.projection import Projector
from querylog.logging.segments import LogReader

__all__ = ["run_parquet"]


def _lake_rows(lake: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (lake / "events").glob("date=*/hour=*/*.parquet"))


def _project(log_dir: Path, lake: Path, batch_events: int) -> tuple[float, int]:
    """Events per second of one catch-up from an empty lake, as `querylog serve`'s projector runs it."""
    shutil.rmtree(lake, ignore_errors=True)
    projector = Projector(LogReader(log_dir), ParquetSink(lake).open(), batch_max_events=batch_events)
    t0 = time.perf_counter()
    n = projector.catch_up()
    elapsed = time.perf_counter() - t0
    projector.sink.close()
    rows = _lake_rows(lake)
    if rows != n:
        raise RuntimeError(f"the lake holds {rows} rows after projecting {n} events")
    return n / elapsed, n


def _timed(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `fn` (CPU time shows the cost even when the machine is busy)."""
    walls, cpus = [], []
    gc.collect()  # once, so that garbage left by the previous step is not collected on this one's clock
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), statistics.median(cpus)


def _stages(lines: list[bytes], tmp: Path, reps: int) -> dict[str, dict[str, float]]:
    """Microseconds per event of each step of today's `Projector.run_once` + `ParquetSink._write`."""
    n = len(lines)
    events = [decode(line) for line in lines]
    parts = _partition(events)
    tables = [events_to_table(rows) for rows in parts.values()]
    out: dict[str, dict[str, float]] = {}

    def write() -> None:
        for i, table in enumerate(tables):
            path = tmp / f"stage-{i}.parquet"
            pq.write_table(table, path, compression="zstd")
            with path.open("rb+") as fh:
                os.fsync(fh.fileno())

    steps: dict[str, Callable[[], Any]] = {
        "decode (msgspec per line, __post_init__ validation)": lambda: [decode(line) for line in lines],
        "_partition (date/hour strings per event)": lambda: _partition(events),
        "events_to_table (getattr per event x 30 columns)": lambda: [events_to_table(r) for r in parts.values()],
        "write_table zstd + fsync": write,
    }
    for name, fn in steps.items():
        wall, cpu = _timed(fn, reps)
        out[name] = {"wall_us_per_event": round(wall / n * 1e6, 3), "cpu_us_per_event": round(cpu / n * 1e6, 3)}
    return out


def _profile(log_dir: Path, lake: Path, batch_events: int, top: int = 14) -> list[str]:
    """cProfile of one catch-up, by own time: the hot spots."""
    shutil.rmtree(lake, ignore_errors=True)
    projector = Projector(LogReader(log_dir), ParquetSink(lake).open(), batch_max_events=batch_events)
    profiler = cProfile.Profile()
    profiler.enable()
    projector.catch_up()
    profiler.disable()
    projector.sink.close()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(top)
    rows = [line.rstrip() for line in buf.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(rows) if line.lstrip().startswith("ncalls")), 0)
    return rows[start : start + top + 1]


def run_parquet(ctx: Any) -> GroupResult:
    result = new_result()
    n = ctx.size(300_000, 30_000, minimum=1_000)
    batch_events = Settings().parquet_batch_events
    log_dir = ctx.work_dir / "parquet-log"
    ctx.progress(f"parquet: writing a {n}-event log through QueryTracker")
    n = write_log(log_dir, n)
    lake = ctx.work_dir / "parquet-lake"
    current: list[float] = []
    for rep in range(ctx.repetitions):
        ctx.progress(f"parquet: repetition {rep + 1}/{ctx.repetitions} ({n} events, batches of {batch_events})")
        current.append(_project(log_dir, lake, batch_events)[0])
    result["samples"]["parquet_events_per_s"] = current

    ctx.progress("parquet: stage breakdown and both paths on one batch")
    lines = LogReader(log_dir).read({}, max_events=10_000 if ctx.quick else batch_events, max_bytes=1 << 30).lines
    tmp = ctx.work_dir / "parquet-stages"
    tmp.mkdir(exist_ok=True)
    reps = 1 if ctx.quick else max(3, ctx.repetitions)
    paths: dict[str, dict[str, Any]] = {}
    for name, path in PATHS.items():
        wall, cpu = _timed(lambda path=path: path(lines), reps)  # type: ignore[misc]
        paths[name] = {
            "events_per_s_wall": round(len(lines) / wall),
            "events_per_s_cpu": round(len(lines) / cpu),
            "same_rows_as_per_line": equal_to_per_line(lines, path(lines)),
        }
    result["extra"] = {
        "events": n,
        "batch_events": batch_events,
        "note": "end to end: read the log, decode, partition, build Arrow, write zstd Parquet, fsync, commit",
        "stages_on_one_batch": _stages(lines, tmp, reps),
        "lines_to_tables_paths_on_one_batch": paths,
        "cprofile_top_by_own_time": None if ctx.quick else _profile(log_dir, lake, batch_events),
    }
    return result
