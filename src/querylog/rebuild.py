"""Rebuild the Parquet lake from the log: new schema columns for old events, corrected prices, a damaged lake.

The lake is a projection; the log is the truth. `rebuild_lake` projects the whole log into a fresh lake beside
the live one, checks that it holds at least every event the live lake holds, and swaps it into place. Nothing
is deleted before the new lake is complete: an interrupted rebuild leaves the live lake as it was (the next
run starts the fresh one over).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from querylog.config import Settings
from querylog.logging.parquet import ParquetSink, lake_files
from querylog.logging.projection import Projector
from querylog.logging.segments import LogReader

__all__ = [
    "LakeAsideError",
    "RebuildBusyError",
    "RebuildError",
    "RebuildReport",
    "rebuild_lake",
    "settle_interrupted_swap",
]

ProgressFn = Callable[[int, int], None]


class RebuildError(RuntimeError):
    """The lake could not be rebuilt; the live lake is untouched. The message says what to do."""


class RebuildBusyError(RebuildError):
    """The rebuild did not start: another querylog process holds the data directory or the lake."""


class LakeAsideError(RebuildError):
    """Nothing started: the lake a stopped rebuild put aside (``lake.previous``) stands beside a live one."""


@dataclass(frozen=True, slots=True)
class RebuildReport:
    events_before: int
    events_after: int
    files_after: int
    seconds: float
    #: The day before which the rebuilt lake holds nothing, as the live one did (a retention dropped those days).
    retained_from: datetime | None = None
    #: Live lake files whose events could not be read to check them (damaged: the rebuild replaced them).
    unreadable: tuple[Path, ...] = ()


def lake_rows(lake_dir: Path) -> tuple[int, int]:
    """(events, files) of a lake's committed data files, from their footers."""
    files = lake_files(lake_dir)
    return _rows(files), len(files)


def _rows(files: Iterable[Path]) -> int:
    """Events in Parquet `files`, from their footers."""
    return sum(pq.read_metadata(f).num_rows for f in files)


def _missing_from(fresh: Path, live_files: list[Path]) -> tuple[int, list[Path]]:
    """How many events of `live_files` (the live lake's) the lake at `fresh` lacks, by event id; and the live files
    whose ids could not be read (a damaged page: what a rebuild from the log is for, so they do not stop it)."""
    import duckdb

    fresh_files = [str(f) for f in lake_files(fresh)]
    spill = fresh.with_name(f"{fresh.name}.check")  # DuckDB spills a large join here, not into the cwd
    unreadable: list[Path] = []
    try:
        with duckdb.connect(config={"temp_directory": str(spill)}) as con:
            con.execute("CREATE TABLE live (event_id VARCHAR)")
            for path in live_files:
                try:
                    con.execute("INSERT INTO live SELECT event_id FROM read_parquet(?)", [str(path)])
                except duckdb.Error:
                    unreadable.append(path)
            query = "SELECT count(*) FROM live"
            if fresh_files:
                query += " ANTI JOIN read_parquet($fresh, union_by_name = true) AS fresh USING (event_id)"
            found = con.execute(query, {"fresh": fresh_files} if fresh_files else {}).fetchone()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return (int(found[0]) if found else 0), unreadable


#: Beside the lake, under QUERYLOG_HOME: the rebuilt lake being written, the live one while the two are swapped,
#: and the swapped-out one being deleted.
_FRESH, _PREVIOUS, _DISCARDED = "lake.rebuild", "lake.previous", "lake.discarded"


def settle_interrupted_swap(settings: Settings, *, leftovers: bool = True) -> str | None:
    """Put back the lake a rebuild stopped between its two renames left as ``lake.previous`` (nothing at ``lake``),
    before anything makes a new, empty lake there; with `leftovers`, drop what a stopped rebuild left
    (``lake.rebuild``, a swapped-out ``lake.discarded``: only where no rebuild can be at work). Raises
    `LakeAsideError` when both ``lake`` and ``lake.previous`` exist: a lake was made beside the one put aside (by a
    release before this one), and which holds what is for a person to say. Returns what it did, or None."""
    lake, previous = settings.lake_dir, settings.home / _PREVIOUS
    did = None
    if previous.exists():
        if lake.exists():
            raise LakeAsideError(
                f"{previous} is the lake a `querylog replay parquet` stopped midway put aside, and {lake} was made "
                "since, so each may hold events the other lacks: keep the one you want as lake (both, if unsure: "
                "move lake.previous elsewhere, then `querylog sql --lake` can read it) and remove or move the other"
            )
        os.rename(previous, lake)
        did = f"put back the lake a stopped `querylog replay parquet` had put aside ({previous} → {lake})"
    for leftover in (settings.home / _FRESH, settings.home / _DISCARDED) if leftovers else ():
        if leftover.exists():
            shutil.rmtree(leftover)
            did = did or f"removed {leftover}, left by a stopped `querylog replay parquet`"
    return did


@contextmanager
def _exclusive(path: Path, message: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RebuildBusyError(message) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def rebuild_lake(
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    source: Literal["log", "lake"] = "log",
    started: Callable[[], None] | None = None,
) -> RebuildReport:
    """Project the whole log into a fresh lake (current schema, current prices) and swap it in for the live one.

    Refused while ``querylog serve`` runs on this data directory, or a ``querylog project`` runs the Parquet
    projection, or a ``querylog compact`` works on the lake, and when the lake holds an event the rebuilt one lacks
    (part of the log was deleted or trimmed: the rebuilt lake would lose them). `started` is called once the
    rebuild holds its locks: a caller says "rebuilding" then, not before a refusal."""
    began = time.monotonic()
    lake = settings.lake_dir
    fresh = settings.home / _FRESH
    previous, discarded = settings.home / _PREVIOUS, settings.home / _DISCARDED
    running = (
        "querylog is running on this data directory (querylog serve, or a querylog project running the Parquet "
        "projection): stop it, then run the rebuild again"
    )
    with (
        _exclusive(settings.service_lock_path, running),
        _exclusive(settings.state_dir / "locks" / "parquet.lock", running),
        _exclusive(lake / "_querylog" / "upkeep.lock", "a querylog compact is working on the lake; try again later"),
    ):
        if started is not None:
            started()
        settle_interrupted_swap(settings)  # an earlier run stopped midway: its lake back, its copies gone
        before, _ = lake_rows(lake)
        if source == "lake":
            _from_lake(settings, fresh, before, progress)
        else:
            _from_log(settings, fresh, progress)
        from querylog.analytics.upkeep import apply_retention, expired_days, retained_from

        boundaries = []  # the rebuilt lake starts where the live one does: the days before are left out
        if settings.lake_retention_days is not None:  # days past the retention are dropped, as compact would
            boundaries.append(apply_retention(fresh, days=settings.lake_retention_days).boundary)
        dropped_before = retained_from(lake)  # and those a retention already dropped stay dropped
        if dropped_before is not None:
            apply_retention(fresh, before=dropped_before)
            boundaries.append(dropped_before)
        after, files = lake_rows(fresh)
        # The live lake's events dated before that boundary (days compact has not dropped yet, a late backfill) are
        # left out as well: they are not events the log lacks. Every other event of the lake must be in the log.
        left_out = {day.name for day in (expired_days(lake, max(boundaries)) if boundaries else [])}
        kept = [f for f in lake_files(lake) if f.parent.parent.name not in left_out]
        # By event id, not by count: a log trimmed of old events and holding as many new ones as yet unprojected
        # had as many events as the lake, and the rebuild dropped the whole trimmed history without a word.
        missing, unreadable = _missing_from(fresh, kept) if source == "log" else (0, [])
        if missing:
            shutil.rmtree(fresh, ignore_errors=True)
            raise RebuildError(
                f"the lake holds {missing:,} events the log no longer has: part of the log is gone (deleted or "
                "trimmed), or holds lines this release no longer reads, so a lake rebuilt from it would lose them. "
                "The live lake is unchanged. To write the lake again (current schema and prices) from what it "
                "holds: `querylog replay parquet --from lake`."
            )
        # Two renames, each atomic. The lake's own readers retry a query that a move broke (lake_generation);
        # between the renames no lake exists, and a reader sees an empty lake for that instant.
        if lake.exists():
            os.rename(lake, previous)
        os.rename(fresh, lake)
        # Renamed before it is deleted: a `lake.previous` beside a lake is then never one this run finished with.
        if previous.exists():
            os.rename(previous, discarded)
        shutil.rmtree(discarded, ignore_errors=True)
    elapsed = time.monotonic() - began
    return RebuildReport(
        events_before=before,
        events_after=after,
        files_after=files,
        seconds=elapsed,
        retained_from=retained_from(lake),
        unreadable=tuple(unreadable),
    )


def _from_log(settings: Settings, fresh: Path, progress: ProgressFn | None) -> None:
    reader = LogReader(settings.log_dir)
    total_bytes = max(1, sum(p.stat().st_size for p in reader.segments()))
    sink = ParquetSink(fresh, prices=settings.prices()).open()
    projector = Projector(reader, sink, batch_max_events=settings.parquet_batch_events)
    try:
        while projector.run_once():
            if progress is not None:
                position = sum(sink.checkpoint().values())
                progress(min(position, total_bytes), total_bytes)
    finally:
        projector.stop(drain_timeout_s=None)
        sink.close()


def _from_lake(settings: Settings, fresh: Path, total: int, progress: ProgressFn | None) -> None:
    """The live lake's events written again (current schema, current prices): what a trimmed log can no longer
    give. The new lake keeps the live one's log position, so the Parquet projection goes on where it was."""
    from querylog.lake_events import lake_events
    from querylog.logging.projection import Batch

    position = ParquetSink.committed_checkpoint(settings.lake_dir)
    sink = ParquetSink(fresh, prices=settings.prices()).open()
    done = 0
    try:
        for events in lake_events(settings.lake_dir):
            sink.write(Batch(events=events, checkpoint=position))
            done += len(events)
            if progress is not None:
                progress(min(done, max(total, 1)), max(total, 1))
        if done == 0:
            sink.write(Batch(events=[], checkpoint=position))
    finally:
        sink.close()
