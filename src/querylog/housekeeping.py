"""Housekeeping of a data directory: the log trimmed, the lake and the search index kept within retention.

One process per data directory does it (elected by ``state/locks/housekeeping.lock``, like the projections), on
a timer in `querylog serve` / `querylog project`, and once in `querylog compact`. The durable projections' own
files say how far each has committed (`log_holders`), so it works whichever process runs them.

What it did is kept in ``state/housekeeping.json`` (totals only: no personal data), which `LogCollector` exposes
on `/metrics` with the log's size and how far behind each projection holds it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any, Final

import msgspec
import structlog
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from querylog.config import Settings
from querylog.logging.metrics_snapshot import say_unreadable, snapshot_checkpoint
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import CheckpointFile, SinkError, atomic_write, try_lead
from querylog.logging.trim import Holder, TrimPlan, plan_trim, segment_infos, trim_log

__all__ = [
    "Housekeeper",
    "HousekeepingReport",
    "HousekeepingTotals",
    "LogCollector",
    "load_totals",
    "log_health",
    "log_holders",
    "run_housekeeping",
]

_log = structlog.get_logger("querylog.housekeeping")


class HousekeepingTotals(msgspec.Struct):
    """Running totals, kept across restarts in ``state/housekeeping.json``."""

    trimmed_segments: int = 0
    trimmed_bytes: int = 0
    #: projection → segments deleted over the cap before it had read them
    forced: dict[str, int] = {}
    #: projection → when (Unix seconds) the last of those was deleted: a metrics snapshot older than it misses events
    #: the log no longer holds, and is not started from (`MetricsSink`).
    forced_at: dict[str, float] = {}
    lake_days_removed: int = 0
    runs: int = 0
    last_run: float = 0.0
    #: The newest last write (Unix seconds) of any segment trimmed: the log holds every event written after it.
    #: Bounded (year 5138): a damaged value past it makes the file read as no totals, not an OverflowError later.
    trimmed_through: Annotated[float, msgspec.Meta(ge=0, le=1e11)] = 0.0


def _totals_path(settings: Settings) -> Path:
    return settings.state_dir / "housekeeping.json"


def load_totals(settings: Settings) -> HousekeepingTotals:
    path = _totals_path(settings)
    try:
        return msgspec.json.decode(path.read_bytes(), type=HousekeepingTotals)
    except FileNotFoundError:  # none yet
        return HousekeepingTotals()
    except (OSError, msgspec.DecodeError) as exc:  # damaged (a directory, garbage): counted afresh, said once
        say_unreadable("housekeeping_totals_unreadable", path, exc)
        return HousekeepingTotals()


def _checkpoint(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    try:
        return CheckpointFile(path).load()
    except SinkError:
        return None  # unreadable: treated as "read nothing", so it holds the log rather than lose it


def log_holders(settings: Settings) -> list[Holder]:
    """The durable projections of this configuration and how far each has committed. A projection that has never
    committed holds the whole log."""
    has_commit = (settings.lake_dir / "_querylog" / "parquet-commit.json").exists()
    try:
        commit = ParquetSink.committed_checkpoint(settings.lake_dir) if has_commit else None
    except SinkError:
        commit = None  # unreadable: it holds the whole log until the lake is rebuilt (the projection says why)
    holders = [Holder("parquet", commit)]
    if settings.loki_url:
        holders.append(Holder("loki", _checkpoint(settings.loki_checkpoint_path)))
    if settings.stdout_events:
        holders.append(Holder("stdout", _checkpoint(settings.stdout_checkpoint_path)))
    # The metrics fold of every API process restarts from its snapshot: until one covers a segment, the segment
    # stays, or a restart would count fewer events than before it.
    holders.append(Holder("metrics", snapshot_checkpoint(settings.metrics_snapshot_path)))
    return holders


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    trim: TrimPlan
    lake_days_removed: list[str]
    #: Hours of the lake merged into one file each (`QUERYLOG_AUTO_COMPACT`).
    lake_hours_compacted: int = 0


def run_housekeeping(settings: Settings, *, now: float | None = None) -> HousekeepingReport:
    """One round: trim the log, apply lake and search-index retention, then merge the lake's closed hours
    (`QUERYLOG_AUTO_COMPACT`). Call it holding the lock."""
    plan = trim_log(
        settings.log_dir,
        log_holders(settings),
        retention_s=settings.log_retention_s,
        max_bytes=settings.log_max_bytes,
        now=now,
    )
    removed: list[str] = []
    days = settings.lake_retention_days
    if days is not None and (settings.lake_dir / "events").is_dir():
        from querylog.analytics.upkeep import (
            LakeSearch,
            SearchUnavailableError,
            apply_retention,
            built_search_fields,
        )

        at = datetime.fromtimestamp(now, UTC) if now is not None else None
        retained = apply_retention(settings.lake_dir, days=days, now=at)
        removed = retained.dates_removed
        for field in built_search_fields(settings.home):  # the questions' index and the answers'
            with contextlib.suppress(SearchUnavailableError):  # a build without the search module
                LakeSearch(settings.home, field=field).remove_older_than(retained.boundary)
    totals = load_totals(settings)
    totals.trimmed_segments += len(plan.delete)
    totals.trimmed_bytes += sum(s.size for s in plan.delete)
    # A segment without a whole line held no event: trimming it moves no event out of the log (and an empty one,
    # written now, would move the time reconcile compares from up to now).
    totals.trimmed_through = max([totals.trimmed_through, *(s.mtime for s in plan.delete if s.whole > 0)])
    for name, n in plan.forced.items():
        totals.forced[name] = totals.forced.get(name, 0) + n
        totals.forced_at[name] = time.time()
    totals.lake_days_removed += len(removed)
    totals.runs += 1
    totals.last_run = time.time()
    atomic_write(_totals_path(settings), msgspec.json.encode(totals))
    return HousekeepingReport(trim=plan, lake_days_removed=removed, lake_hours_compacted=_compact_hours(settings, now))


#: How long after an hour closes the running service merges its files: long enough for the events still on their
#: way (a projection's batch, a producer's retry), short enough that readers meet at most the open hour's files
#: unmerged (an hour's wait left two hours of a file a second: 86 s to open the explorer over 700 of them).
AUTO_COMPACT_AFTER: Final = timedelta(minutes=5)


def _compact_hours(settings: Settings, now: float | None) -> int:
    """Merge the lake's hours that closed over `AUTO_COMPACT_AFTER` ago (`QUERYLOG_AUTO_COMPACT`): under steady
    traffic the Parquet projection commits about a file a second, and every reader of the lake lists and opens each.
    Days are left to `querylog compact` (a day is sorted in memory). A failure is logged, and the next round tries
    again; a late event's file is merged into its hour at the next round."""
    if not settings.auto_compact or not (settings.lake_dir / "events").is_dir():
        return 0
    from querylog.analytics.upkeep import LakeCompactor, UpkeepBusyError

    try:
        report = LakeCompactor(settings.lake_dir).run(
            older_than=AUTO_COMPACT_AFTER, now=datetime.fromtimestamp(now, UTC) if now is not None else None
        )
    except UpkeepBusyError:  # a `querylog compact` or an erasure at work: the next round merges what is left
        _log.info("lake_compaction_skipped", reason="another upkeep of the lake is working")
        return 0
    except Exception as exc:  # the lake's upkeep must not stop the log's
        _log.error("lake_compaction_failed", error=f"{type(exc).__name__}: {exc}")
        return 0
    if report.partitions:
        _log.info("lake_hours_compacted", hours=report.partitions, files=report.files_before, events=report.events)
    return report.partitions


class Housekeeper:
    """Runs `run_housekeeping` every `interval_s` in a thread, in the one process that holds the lock."""

    def __init__(
        self,
        settings: Settings,
        *,
        interval_s: float | None = None,
        before_trim: Callable[[], object] | None = None,
    ) -> None:
        """`before_trim`: called at the start of each round, e.g. the metrics fold of this process writing its
        snapshot (`MetricsSink.snapshot_if_moved`): the snapshot is the metrics' hold on the log, and one left
        behind while the fold idles or between its 30-second snapshots would count a cap trim of segments the fold
        has read as lost to it."""
        self.settings = settings
        self.interval_s = settings.housekeeping_interval_s if interval_s is None else interval_s
        self.before_trim = before_trim
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fh: IO[bytes] | None = None
        self.errors = 0

    def _lead(self) -> bool:
        if self._lock_fh is None:
            self._lock_fh = try_lead(self.settings.state_dir / "locks" / "housekeeping.lock")
        return self._lock_fh is not None

    def run_once(self) -> HousekeepingReport | None:
        """A round if this process leads (None otherwise). A failure is logged and counted, never raised: the
        next round tries again."""
        if not self._lead():
            return None
        if self.before_trim is not None:
            try:
                self.before_trim()
            except Exception as exc:  # the trim goes ahead: a snapshot a full disk refused must not stop it
                self.errors += 1
                _log.error("housekeeping_before_trim_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            return run_housekeeping(self.settings)
        except Exception as exc:  # housekeeping must never take the service down
            self.errors += 1
            _log.error("housekeeping_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    def start(self) -> Housekeeper:
        self._thread = threading.Thread(target=self._loop, name="querylog-housekeeping", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:  # a first round at once: a service restarted after a long stop trims what waited
            self.run_once()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None


class LogCollector:
    """The log's series on `/metrics`, read from the files at each scrape (any process may trim)."""

    def __init__(self, settings: Settings, namespace: str) -> None:
        self.settings = settings
        self.namespace = namespace

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self, plan: TrimPlan | None = None, totals: HousekeepingTotals | None = None) -> Iterator[Metric]:
        ns = self.namespace
        size = GaugeMetricFamily(f"{ns}_log_bytes", "Bytes in the event log's segments.")
        segments = GaugeMetricFamily(f"{ns}_log_segments", "Segments in the event log.")
        behind = GaugeMetricFamily(
            f"{ns}_log_behind_seconds",
            "Age of the oldest log segment a durable projection has not committed: how far it holds the log back "
            "(0 when it has everything).",
            labels=["projection"],
        )
        over_cap = GaugeMetricFamily(
            f"{ns}_log_over_cap", "1 when the log is over QUERYLOG_LOG_MAX_GB because the lake has not committed it."
        )
        trimmed = CounterMetricFamily(f"{ns}_log_trimmed_segments_total", "Log segments deleted by trimming.")
        trimmed_bytes = CounterMetricFamily(f"{ns}_log_trimmed_bytes_total", "Bytes of log deleted by trimming.")
        forced = CounterMetricFamily(
            f"{ns}_log_forced_trims_total",
            "Segments deleted over the cap before this projection had read them (replay it from the lake).",
            labels=["projection"],
        )
        if plan is not None and totals is not None:
            size.add_metric([], plan.log_bytes)
            segments.add_metric([], plan.segments)
            for name, seconds in sorted(plan.behind_seconds.items()):
                behind.add_metric([name], seconds)
            over_cap.add_metric([], 1.0 if plan.over_cap else 0.0)
            trimmed.add_metric([], totals.trimmed_segments)
            trimmed_bytes.add_metric([], totals.trimmed_bytes)
            # Every holder from zero, so that increase() sees a projection's first forced trim.
            for name in sorted({*plan.behind_seconds, *totals.forced}):
                forced.add_metric([name], totals.forced.get(name, 0))
        yield from (size, segments, behind, over_cap, trimmed, trimmed_bytes, forced)

    def status(self) -> TrimPlan:
        """What a trim would do now (nothing is deleted)."""
        s = self.settings
        return plan_trim(
            segment_infos(s.log_dir),
            log_holders(s),
            retention_s=s.log_retention_s,
            max_bytes=s.log_max_bytes,
            now=time.time(),
        )

    def collect(self) -> list[Metric]:
        return list(self._families(self.status(), load_totals(self.settings)))


def log_health(settings: Settings, plan: TrimPlan, *, behind_limit_s: float = 86_400.0) -> dict[str, Any]:
    """The log's part of `/healthz`: degraded when over the cap, or when a projection holds back a segment older
    than the retention plus a day (it has stopped, or cannot keep up)."""
    limit = settings.log_retention_s + behind_limit_s
    stuck = sorted(name for name, seconds in plan.behind_seconds.items() if seconds > limit)
    return {
        "bytes": plan.log_bytes,
        "segments": plan.segments,
        "over_cap": plan.over_cap,
        "held_back_by": stuck,
        "degraded": plan.over_cap or bool(stuck),
    }
