"""Lake upkeep: compact closed hour partitions, drop partitions past retention, keep the search index in step.

Compaction protocol for one hour partition ``events/date=D/hour=H`` (the *live* directory):

1. merge its files into ``_querylog/compact/D_H/swap/compacted-<uuid7>.parquet`` and fsync it (outside
   ``events/``, so no reader sees it); check that it holds exactly as many rows as the inputs;
2. atomically write ``_querylog/compact/D_H/journal.json`` naming the inputs and the merged file;
3. swap the two directories in one atomic step (``renameat2(RENAME_EXCHANGE)`` on Linux,
   ``renamex_np(RENAME_SWAP)`` on macOS): the live path now holds only the merged file, and ``swap/`` the
   small files — this is the commit point;
4. move back into the live directory any file that a lagging Parquet projection renamed into it after
   step 1 listed it (it is in ``swap/`` now);
5. delete ``_querylog/compact/D_H``.

Why a directory swap and not rename-then-delete: DuckDB expands the lake's glob by listing each hour
directory, and a listing of one directory sees either the old inode or the new one — every small file or
only the merged file, never both and never neither. (DuckDB's glob stats each listed entry by path and skips one
whose stat fails, which breaks that for a listing that straddles the swap: each swap is made in
`lake_generation.changing`, and the catalog runs such a query again.)
A query that listed the old files and opens one after the swap fails with "No such file or directory" and
can simply be re-run (the query layer does so by itself); it never returns wrong numbers. The one narrow
window is step 4: an event a lagging projection writes into an hour being compacted, in the instant between
step 1's last check and the swap, is hidden until step 4 moves it back a moment later (it is never lost:
recovery moves it back too).

Closed *days* can then be merged whole (`LakeCompactor.run_days`): one file per day sorted by (event_type, ts)
in 64k-row groups, by the same protocol one level up — the ``date=D`` directory is exchanged with a new one that
keeps every ``hour=HH`` name (see `LakeCompactor.compact_day` for why that keeps readers right).

A crash anywhere is repaired by `LakeCompactor.recover` (run at the start of every compaction): before the
journal exists the work is discarded; after it, the merged file's location says whether the swap happened,
and the journal says which files to move back.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
import uuid_utils

from querylog.analytics.lake_generation import changing, end_change
from querylog.analytics.queries import arrow_table
from querylog.logging.events import UNCLASSIFIED
from querylog.logging.parquet import DICTIONARY_COLUMNS
from querylog.logging.projection import atomic_write

if TYPE_CHECKING:
    from querylog.analytics.aliases import Aliases
    from querylog.analytics.catalog import Catalog

__all__ = [
    "DAY_FILE_PREFIX",
    "DAY_ROW_GROUP",
    "SEARCH_FIELDS",
    "CompactionReport",
    "DayPartition",
    "HourPartition",
    "LakeCompactor",
    "LakeSearch",
    "ProgressFn",
    "RetentionReport",
    "RowFilter",
    "SearchField",
    "SearchHitLike",
    "SearchIndexLike",
    "SearchUnavailableError",
    "UpkeepBusyError",
    "UpkeepError",
    "apply_retention",
    "built_search_fields",
    "exchange_directories",
    "expired_days",
    "retained_from",
    "retention_boundary",
    "search_index_dir",
    "when_the_lake_is_free",
]

#: Called as progress(done, total, what) while long work goes on.
ProgressFn = Callable[[int, int, str], None]
#: Marks the rows of a table to leave out (a boolean array, True = drop), e.g. an erased user's events.
RowFilter = Callable[[pa.Table], pa.Array]
#: Called as on_step(step, partition) after each step of the protocol; tests use it to crash or to read.
StepHook = Callable[[str, "HourPartition"], None]

#: Day-compacted files are named ``day-<uuid7>.parquet``.
_log = structlog.get_logger("querylog.search")

DAY_FILE_PREFIX: Final = "day-"
#: Rows per row group in a day file: enough groups per day for event_type/ts statistics to prune on.
DAY_ROW_GROUP: Final = 64 * 1024
#: Encodings of a merged file: a dictionary for the columns of few values (as the Parquet sink writes them; a
#: dictionary of unique ids or times only adds to them), deltas for the time and the ids (uuid7s share their
#: leading bytes in time order). A day file sorted by (event_type, ts) written with pyarrow's defaults was a
#: third larger than the hour files it replaced (170k events, uuid ids); with these, 5% (docs/analytics.md).
_MERGED_ENCODING: Final[dict[str, Any]] = {
    "use_dictionary": list(DICTIONARY_COLUMNS),
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "event_id": "DELTA_BYTE_ARRAY", "query_id": "DELTA_BYTE_ARRAY"},
}

_DATE_RE: Final = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE: Final = re.compile(r"^hour=(\d{2})$")


class UpkeepError(Exception):
    """Upkeep could not run; the message says why and what to do. The lake is left consistent."""


class UpkeepBusyError(UpkeepError):
    """Another upkeep of the lake holds it: nothing was done, and trying again later does it."""


class _Journal(msgspec.Struct):
    date: str
    #: the hour compacted, or ``"day"`` for a day compaction (then `inputs` are ``hour=HH/name`` paths)
    hour: str
    inputs: list[str]
    merged: str
    rows: int
    #: day compaction: the ``hour=HH`` directory that holds the merged file
    merged_hour: str | None = None


@dataclass(frozen=True, slots=True)
class HourPartition:
    """One ``events/date=D/hour=H`` directory."""

    date: str
    hour: str
    path: Path

    @property
    def start(self) -> datetime:
        return datetime.fromisoformat(self.date).replace(hour=int(self.hour), tzinfo=UTC)

    @property
    def name(self) -> str:
        return f"date={self.date}/hour={self.hour}"

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.parquet") if not p.name.startswith("."))


@dataclass(frozen=True, slots=True)
class DayPartition:
    """One ``events/date=D`` directory, compacted as a whole (see `LakeCompactor.run_days`)."""

    date: str
    path: Path

    @property
    def name(self) -> str:
        return f"date={self.date}"

    def files(self) -> list[Path]:
        """Its Parquet files, as paths relative to the day directory (``hour=HH/name``), sorted."""
        return sorted(
            p.relative_to(self.path)
            for p in self.path.glob("hour=*/*.parquet")
            if not p.name.startswith(".") and _HOUR_RE.match(p.parent.name) is not None
        )

    def hours(self) -> list[str]:
        return sorted(h.name for h in self.path.iterdir() if h.is_dir() and _HOUR_RE.match(h.name) is not None)

    def compacted(self) -> bool:
        files = self.files()
        return len(files) == 1 and files[0].name.startswith(DAY_FILE_PREFIX)


class _Partition(Protocol):
    """What `LakeCompactor._run_plan` needs of an hour or a day partition."""

    @property
    def name(self) -> str: ...

    def files(self) -> list[Path]: ...


@dataclass
class CompactionReport:
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    events: int = 0
    #: interrupted compactions found and repaired before starting
    recovered: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class RetentionReport:
    #: events older than this are gone (the start of the oldest UTC day kept)
    boundary: datetime
    dates_removed: list[str] = field(default_factory=list)
    files_removed: int = 0


# -- the atomic swap ------------------------------------------------------------------------------------
_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2  # linux/fs.h
_RENAME_SWAP: Final = 2  # macOS stdio.h


def exchange_directories(a: Path, b: Path) -> None:
    """Swap two paths in one atomic step. Raises `UpkeepError` where the system or filesystem cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    fa, fb = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        result = fn(_AT_FDCWD, fa, _AT_FDCWD, fb, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        result = fn(fa, fb, _RENAME_SWAP)
    else:
        raise UpkeepError(
            "compaction needs an atomic directory swap (Linux renameat2 or macOS renamex_np), which this system "
            "lacks; the lake is left as it is"
        )
    if result != 0:
        err = ctypes.get_errno()
        raise UpkeepError(
            f"could not swap {a} and {b} atomically: {os.strerror(err)} (the filesystem may not support "
            "RENAME_EXCHANGE); the lake is left as it is"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _partitions(events_dir: Path) -> Iterator[HourPartition]:
    if not events_dir.is_dir():
        return
    for day in sorted(events_dir.iterdir()):
        if (d := _DATE_RE.match(day.name)) is None or not day.is_dir():
            continue
        for hour in sorted(day.iterdir()):
            if (h := _HOUR_RE.match(hour.name)) is not None and hour.is_dir():
                yield HourPartition(d.group(1), h.group(1), hour)


@contextmanager
def _upkeep_lock(lake_dir: Path) -> Iterator[None]:
    """One compaction or retention run per lake at a time; a second one is refused, not queued."""
    meta = lake_dir / "_querylog"
    meta.mkdir(parents=True, exist_ok=True)
    with (meta / "upkeep.lock").open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpkeepBusyError(
                f"another upkeep is working on {lake_dir} (a `querylog compact`, an erasure, or a running service "
                "merging the hours that closed); try again when it is done"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_T = TypeVar("_T")

#: How long a command waits for another upkeep of the lake (the running service merging an hour takes seconds; a
#: `querylog compact` of days, minutes) before it stops with `UpkeepBusyError`.
LAKE_BUSY_WAIT_S: Final = 120.0


def when_the_lake_is_free(work: Callable[[], _T], waiting: Callable[[str], None], wait_s: float | None = None) -> _T:
    """`work()`, an upkeep of the lake, tried again while another holds the lake (it refuses at once, having done
    nothing), for `wait_s` at most (`LAKE_BUSY_WAIT_S`); `waiting` is told once."""
    deadline = time.monotonic() + (LAKE_BUSY_WAIT_S if wait_s is None else wait_s)
    said = False
    while True:
        try:
            return work()
        except UpkeepBusyError:
            if time.monotonic() >= deadline:
                raise
            if not said:
                waiting("waiting for another upkeep of the lake to finish (the service merging an hour, a compact)")
                said = True
            time.sleep(0.2)


def _rows_and_schema(inputs: Sequence[Path]) -> tuple[int, pa.Schema]:
    """The rows of `inputs` and the schema that holds them all: files written by different versions may differ in
    columns, and a merged file holds them all (nulls where a file lacked one), as the catalog's union_by_name read
    does. Each file is opened and closed in turn."""
    rows, schemas = 0, []
    for path in inputs:
        with pq.ParquetFile(path) as f:
            rows += f.metadata.num_rows
            schemas.append(f.schema_arrow)
    return rows, pa.unify_schemas(schemas)


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns, in its order and types; nulls for a column it lacks."""
    return pa.Table.from_arrays(
        [
            table.column(name).cast(schema.field(name).type)
            if name in table.column_names
            else pa.nulls(table.num_rows, schema.field(name).type)
            for name in schema.names
        ],
        schema=schema,
    )


# -- compaction -----------------------------------------------------------------------------------------
class LakeCompactor:
    """Merges the small files of closed hour partitions into one file each (`run`), and closed days into one
    sorted file each (`run_days`). See the module docstring."""

    def __init__(
        self,
        lake_dir: Path | str,
        *,
        progress: ProgressFn | None = None,
        on_step: StepHook | None = None,
        compression: str = "zstd",
        drop: RowFilter | None = None,
    ) -> None:
        """`drop` (erasure): rows it marks are left out of every file this compactor writes, and a partition of
        a single file is rewritten too (`rewrite`); `dropped` counts them."""
        self.lake_dir = Path(lake_dir)
        self.events_dir = self.lake_dir / "events"
        self.work_dir = self.lake_dir / "_querylog" / "compact"
        self.progress = progress
        self.on_step = on_step
        self.compression = compression
        self.drop = drop
        self.dropped = 0

    # -- planning ----------------------------------------------------------------------------------
    def plan(
        self, *, older_than: timedelta = timedelta(hours=1), now: datetime | None = None, min_files: int = 2
    ) -> list[HourPartition]:
        """Hour partitions that closed at least `older_than` ago and hold `min_files` files or more."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative; got {older_than}")
        if min_files < 2:
            raise ValueError(f"min_files must be at least 2 (one file is already compact); got {min_files}")
        now = now or datetime.now(UTC)
        closed_before = now - older_than - timedelta(hours=1)
        return [p for p in _partitions(self.events_dir) if p.start <= closed_before and len(p.files()) >= min_files]

    # -- running -----------------------------------------------------------------------------------
    def run(
        self, *, older_than: timedelta = timedelta(hours=1), now: datetime | None = None, min_files: int = 2
    ) -> CompactionReport:
        """Repair interrupted work, then compact every partition `plan` returns."""
        return self._run_plan(
            lambda: self.plan(older_than=older_than, now=now, min_files=min_files), self._compact_locked
        )

    def _run_plan(
        self, plan: Callable[[], Sequence[_Partition]], compact: Callable[[Any], int | None]
    ) -> CompactionReport:
        """Under the upkeep lock: repair, plan, then compact each partition with `compact`, reporting progress."""
        with _upkeep_lock(self.lake_dir):
            report = CompactionReport(recovered=self._recover_locked())
            todo = plan()
            for i, partition in enumerate(todo, 1):
                before = len(partition.files())
                rows = compact(partition)
                if rows is None:
                    report.skipped.append(partition.name)
                else:
                    report.partitions += 1
                    report.files_before += before
                    report.files_after += 1
                    report.events += rows
                if self.progress is not None:
                    done = (
                        "skipped: a file arrived meanwhile" if rows is None else f"{before} files → 1 ({rows} events)"
                    )
                    self.progress(i, len(todo), f"{partition.name}: {done}")
            return report

    # -- whole days ------------------------------------------------------------------------------
    def plan_days(self, *, older_than: timedelta = timedelta(0), now: datetime | None = None) -> list[DayPartition]:
        """Day partitions that ended at least `older_than` ago (by default: every day before today, UTC) and
        are not day-compacted already."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative; got {older_than}")
        now = now or datetime.now(UTC)
        closed_before = now - older_than - timedelta(days=1)
        days = []
        for day in sorted(self.events_dir.iterdir()) if self.events_dir.is_dir() else ():
            if (m := _DATE_RE.match(day.name)) is None or not day.is_dir():
                continue
            partition = DayPartition(m.group(1), day)
            start = datetime.fromisoformat(partition.date).replace(tzinfo=UTC)
            if start <= closed_before and partition.files() and not partition.compacted():
                days.append(partition)
        return days

    def run_days(self, *, older_than: timedelta = timedelta(0), now: datetime | None = None) -> CompactionReport:
        """Repair interrupted work, then merge each closed day (`plan_days`) into one file sorted by
        (event_type, ts) in row groups of `DAY_ROW_GROUP` rows. See `compact_day`."""
        return self._run_plan(lambda: self.plan_days(older_than=older_than, now=now), self._compact_day_locked)

    def compact_day(self, partition: DayPartition) -> int | None:
        """Compact one day; the number of events in its merged file, or None if it changed meanwhile.

        The same protocol as an hour, one level up: the new day directory (built under
        ``_querylog/compact/D_day/swap``) holds every ``hour=HH`` directory the old one had — empty — except the
        first hour that had files, which holds the merged file; then it is exchanged with ``events/date=D`` in
        one atomic step. A reader lists ``date=D`` and then each ``hour=HH`` by path, so its listing may
        straddle the swap; the hour names are the same on both sides, and the merged file sits in an hour the
        old side held files in, so a straddling listing either holds an old file (whose open then fails with
        "No such file or directory": the query is re-run) or only the new file — never both, never neither.
        The ``hour`` partition value of the events in a day file is therefore not their hour (the catalog's
        `events` view drops it; use ``ts``).
        """
        with _upkeep_lock(self.lake_dir):
            return self._compact_day_locked(partition)

    def _compact_day_locked(self, partition: DayPartition) -> int | None:
        inputs = partition.files()
        if not inputs or partition.compacted():
            return None
        hours = partition.hours()
        merged_hour = inputs[0].parent.name  # the first hour directory that holds a file
        work = self.work_dir / f"{partition.date}_day"
        swap = work / "swap"
        shutil.rmtree(work, ignore_errors=True)
        swap.mkdir(parents=True)
        for hour in hours:
            (swap / hour).mkdir()
        merged = swap / merged_hour / f"{DAY_FILE_PREFIX}{uuid_utils.uuid7()}.parquet"
        try:
            rows = self._merge_sorted([partition.path / f for f in inputs], merged)
            for hour in hours:
                _fsync_dir(swap / hour)
            _fsync_dir(swap)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._step("merged", partition)  # type: ignore[arg-type]
        if partition.files() != inputs or partition.hours() != hours:
            shutil.rmtree(work)
            return None
        journal = _Journal(partition.date, "day", [str(f) for f in inputs], merged.name, rows, merged_hour)
        atomic_write(work / "journal.json", msgspec.json.encode(journal))
        self._step("journaled", partition)  # type: ignore[arg-type]
        try:
            with changing(self.lake_dir):
                exchange_directories(partition.path, swap)  # the commit point
        except UpkeepError:
            shutil.rmtree(work)
            raise
        _fsync_dir(partition.path.parent)
        self._step("swapped", partition)  # type: ignore[arg-type]
        self._return_late_day_files(journal, partition.path, swap)
        self._step("returned", partition)  # type: ignore[arg-type]
        shutil.rmtree(work)
        self._step("done", partition)  # type: ignore[arg-type]
        return rows

    def _merge_sorted(self, inputs: Sequence[Path], target: Path) -> int:
        """All of `inputs` in one file sorted by (event_type, ts), in row groups of `DAY_ROW_GROUP` rows.
        A day is sorted in memory: about 750 bytes an event at the peak (a day of 171k events took 130 MB more
        than the hour merges)."""
        expected, schema = _rows_and_schema(inputs)
        tables = []
        for path in inputs:  # one open at a time (see `_merge`)
            with pq.ParquetFile(path) as f:
                tables.append(_conformed(f.read(), schema))
        table = pa.concat_tables(tables)
        keys = [(k, "ascending") for k in ("event_type", "ts") if k in schema.names]
        if keys:
            table = table.sort_by(keys)
        pq.write_table(table, target, compression=self.compression, row_group_size=DAY_ROW_GROUP, **_MERGED_ENCODING)
        with target.open("rb+") as fh:
            os.fsync(fh.fileno())
        stored = int(pq.read_metadata(target).num_rows)
        if not expected == table.num_rows == stored:
            raise UpkeepError(f"merging {len(inputs)} files gave {stored} rows, expected {expected}; nothing changed")
        return stored

    @staticmethod
    def _return_late_day_files(journal: _Journal, live: Path, swap: Path) -> None:
        """Move back into the live day any file of the swapped-out day that the journal does not name."""
        known = set(journal.inputs)
        for late in sorted(swap.glob("hour=*/*.parquet")):
            rel = f"{late.parent.name}/{late.name}"
            if rel not in known and late.name != journal.merged:
                (live / late.parent.name).mkdir(exist_ok=True)
                os.rename(late, live / rel)

    def compact(self, partition: HourPartition) -> int | None:
        """Compact one partition; the number of events in the merged file, or None if it changed meanwhile."""
        with _upkeep_lock(self.lake_dir):
            return self._compact_locked(partition)

    def recover(self) -> int:
        """Finish or undo compactions a crash interrupted; the number repaired."""
        with _upkeep_lock(self.lake_dir):
            return self._recover_locked()

    def _step(self, name: str, partition: HourPartition) -> None:
        if self.on_step is not None:
            self.on_step(name, partition)

    def rewrite(self, partitions: Sequence[HourPartition]) -> CompactionReport:
        """Repair interrupted work, then merge each of `partitions` into one file without the rows `drop` marks,
        by the compaction protocol: readers see each hour before or after, never half of it."""
        if self.drop is None:
            raise ValueError("rewrite needs a compactor made with drop=")
        return self._run_plan(lambda: [p for p in partitions if p.path.is_dir()], self._compact_locked)

    def _compact_locked(self, partition: HourPartition) -> int | None:
        inputs = partition.files()
        if len(inputs) < (1 if self.drop is not None else 2):
            return None
        work = self.work_dir / f"{partition.date}_{partition.hour}"
        swap = work / "swap"
        shutil.rmtree(work, ignore_errors=True)
        swap.mkdir(parents=True)
        # An erasure's rewrite of a day file keeps it one: named otherwise, the next `compact` sorted the day again
        # and the next `lake push` uploaded it again.
        day = self.drop is not None and len(inputs) == 1 and inputs[0].name.startswith(DAY_FILE_PREFIX)
        merged = swap / f"{DAY_FILE_PREFIX if day else 'compacted-'}{uuid_utils.uuid7()}.parquet"
        dropped_before = self.dropped
        try:
            rows = self._merge(inputs, merged)
        except BaseException:
            self.dropped = dropped_before
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._step("merged", partition)
        # A lagging projection may have added a file since the listing: compaction starts again next time rather
        # than widen the window in which its events would sit in swap/ (step 4). An erasure goes on (the new files
        # are returned to the hour, step 4, and erase's second pass reads them): the hour a live projection writes
        # to would otherwise never be rewritten while traffic lasts, and the subject's rows would stay in it.
        now_there = partition.files()
        if now_there != inputs and (self.drop is None or not set(inputs) <= set(now_there)):
            self.dropped = dropped_before
            shutil.rmtree(work)
            return None
        journal = _Journal(partition.date, partition.hour, [p.name for p in inputs], merged.name, rows)
        atomic_write(work / "journal.json", msgspec.json.encode(journal))
        self._step("journaled", partition)
        try:
            with changing(self.lake_dir):  # a query that straddles the swap runs again (lake_generation)
                exchange_directories(partition.path, swap)  # the commit point
        except UpkeepError:
            shutil.rmtree(work)  # refused before anything moved: the live files are as they were
            raise
        _fsync_dir(partition.path.parent)
        self._step("swapped", partition)
        self._return_late_files(journal, partition.path, swap)
        self._step("returned", partition)
        shutil.rmtree(work)
        self._step("done", partition)
        return rows

    def _merge(self, inputs: Sequence[Path], target: Path) -> int:
        """`inputs` in one file, in row groups of up to `DAY_ROW_GROUP` rows. One input is open at a time: an hour of
        steady traffic is thousands of files (the Parquet projection writes about one a second), past the 1024 open
        files a service is often allowed; and a row group per input left a merged hour of thousands of tiny groups."""
        expected, schema = _rows_and_schema(inputs)
        dropped = written = 0
        pending: list[pa.Table] = []  # the next row group, `held` rows
        held = 0
        with pq.ParquetWriter(target, schema, compression=self.compression, **_MERGED_ENCODING) as writer:
            for path in inputs:
                with pq.ParquetFile(path) as f:
                    for batch in f.iter_batches(batch_size=DAY_ROW_GROUP):
                        table = pa.Table.from_batches([batch])
                        if self.drop is not None:
                            gone = self.drop(table)
                            dropped += pc.sum(gone).as_py() or 0
                            table = table.filter(pc.invert(gone))
                        pending.append(_conformed(table, schema))
                        written += table.num_rows
                        held += table.num_rows
                        if held >= DAY_ROW_GROUP:
                            writer.write_table(pa.concat_tables(pending), row_group_size=DAY_ROW_GROUP)
                            pending, held = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=DAY_ROW_GROUP)
        with target.open("rb+") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(target.parent)
        stored = int(pq.read_metadata(target).num_rows)
        if not expected == written + dropped == stored + dropped:
            raise UpkeepError(
                f"merging {len(inputs)} files gave {stored} rows, expected {expected - dropped}; nothing changed"
            )
        self.dropped += dropped
        return stored

    @staticmethod
    def _return_late_files(journal: _Journal, live: Path, swap: Path) -> None:
        known = set(journal.inputs)
        for late in sorted(swap.glob("*.parquet")):
            if late.name not in known and late.name != journal.merged:
                os.rename(late, live / late.name)

    def _recover_locked(self) -> int:
        if not self.work_dir.is_dir():
            end_change(self.lake_dir)  # a crash mid-swap may have left the counter odd: nothing moves now
            return 0
        with changing(self.lake_dir):  # recovery may move files back
            return self._repair_all()

    def _repair_all(self) -> int:
        repaired = 0
        for work in sorted(self.work_dir.iterdir()):
            repaired += 1
            swap = work / "swap"
            journal_path = work / "journal.json"
            if not journal_path.exists():
                shutil.rmtree(work)  # crashed before the journal: the live files were never touched
                continue
            journal = msgspec.json.decode(journal_path.read_bytes(), type=_Journal)
            if journal.hour == "day":
                self._recover_day(journal, work)
                continue
            live = self.events_dir / f"date={journal.date}" / f"hour={journal.hour}"
            if (live / journal.merged).exists():
                self._return_late_files(journal, live, swap)  # swapped: finish steps 4 and 5
            elif swap.is_dir() and not (swap / journal.merged).exists():
                # The merged file is in neither place (removed by hand?): put every old file back, which can
                # only restore events, never double them, as the merged copy is not visible anywhere.
                live.mkdir(parents=True, exist_ok=True)
                for old in swap.glob("*.parquet"):
                    os.rename(old, live / old.name)
            shutil.rmtree(work)  # not swapped: the merged copy in swap/ is discarded
        return repaired

    def _recover_day(self, journal: _Journal, work: Path) -> None:
        swap = work / "swap"
        live = self.events_dir / f"date={journal.date}"
        if (live / str(journal.merged_hour) / journal.merged).exists():
            self._return_late_day_files(journal, live, swap)  # swapped: finish the protocol
        elif swap.is_dir() and not (swap / str(journal.merged_hour) / journal.merged).exists():
            # The merged file is in neither place: put every old file back (restores, never doubles).
            for old in swap.glob("hour=*/*.parquet"):
                (live / old.parent.name).mkdir(parents=True, exist_ok=True)
                os.rename(old, live / old.parent.name / old.name)
        shutil.rmtree(work)  # not swapped: the merged copy in swap/ is discarded


# -- retention ------------------------------------------------------------------------------------------
def retention_boundary(days: int, now: datetime | None = None) -> datetime:
    """The start of the oldest UTC day that retention keeps: every day that ended more than `days` days
    ago goes, as a whole."""
    if days < 1:
        raise ValueError(f"retention days must be at least 1; got {days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    return datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)


def expired_days(lake_dir: Path | str, boundary: datetime) -> list[Path]:
    """The lake's ``events/date=D`` directories of days before `boundary`."""
    events = Path(lake_dir) / "events"
    return sorted(
        d
        for d in (events.iterdir() if events.is_dir() else ())
        if (m := _DATE_RE.match(d.name)) is not None and date.fromisoformat(m.group(1)) < boundary.date()
    )


def apply_retention(
    lake_dir: Path | str,
    *,
    days: int | None = None,
    before: datetime | None = None,
    now: datetime | None = None,
    progress: ProgressFn | None = None,
) -> RetentionReport:
    """Drop the lake's date partitions that ended more than `days` days ago (or, with `before`, the days before
    that UTC day start: a retention already applied, kept by a rebuilt lake). Each day disappears at once (renamed
    out of ``events/``, then deleted), so a reader sees a day whole or not at all."""
    if (days is None) == (before is None):
        raise TypeError("apply_retention takes days or before, one of them")
    lake = Path(lake_dir)
    boundary = retention_boundary(days, now) if days is not None else before
    assert boundary is not None
    report = RetentionReport(boundary=boundary)
    trash = lake / "_querylog" / "trash"
    with _upkeep_lock(lake):
        # An interrupted compaction is settled first, so that it can never put back files of a day dropped here.
        LakeCompactor(lake)._recover_locked()
        if trash.is_dir():
            shutil.rmtree(trash)  # left by a crash after the rename: already invisible to readers
        expired = expired_days(lake, boundary)
        for i, day in enumerate(expired, 1):
            trash.mkdir(parents=True, exist_ok=True)
            files = sum(1 for _ in day.glob("hour=*/*.parquet"))
            gone = trash / f"{day.name}.{uuid_utils.uuid7()}"
            with changing(lake):  # a reader listing the day's hours as it goes would see part of it
                os.rename(day, gone)
            shutil.rmtree(gone)
            report.dates_removed.append(day.name.removeprefix("date="))
            report.files_removed += files
            if progress is not None:
                progress(i, len(expired), f"{day.name}: {files} files removed")
        if (report.dates_removed or before is not None) and (retained_from(lake) or boundary) <= boundary:
            # Kept, whoever dropped the days (housekeeping, or a one-off `compact --retention-days`): `querylog
            # reconcile` compares the stores from here on, where the lake still holds what the log holds, and a
            # lake rebuilt from the log leaves those days out again (`querylog replay parquet`).
            atomic_write(lake / _RETAINED_FROM, msgspec.json.encode({"from": boundary}))
    return report


_RETAINED_FROM: Final = Path("_querylog") / "retained-from.json"


def retained_from(lake_dir: Path | str) -> datetime | None:
    """The time from which the lake holds every event it was given: the last retention's boundary (None if no day
    was ever dropped)."""
    path = Path(lake_dir) / _RETAINED_FROM
    try:
        return msgspec.json.decode(path.read_bytes(), type=_RetainedFrom).from_
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:  # a directory, garbage, another shape
        raise UpkeepError(
            f"{path} is damaged ({exc}): it holds the time before which retention dropped the lake's days, as "
            '{"from": "2026-11-01T00:00:00Z"}; write it so, or delete it if retention never dropped a day'
        ) from exc


class _RetainedFrom(msgspec.Struct):
    from_: datetime = msgspec.field(name="from")


# -- the search index, kept in step with the lake --------------------------------------------------------
class SearchUnavailableError(UpkeepError):
    """The full-text search module is not part of this installation."""


class SearchHitLike(Protocol):
    query_id: str
    query_text: str
    ts: datetime
    intent: str | None
    score: float
    match: str  # exact, alias, initials or typo
    why: str  # outside the exact tier, what matched


#: The most hits looked through for queries an older index holds without an intent (`LakeSearch.search`).
_UNNAMED_MAX: Final = 10_000


def _best_first(hit: SearchHitLike) -> tuple[float, float, str]:
    """The index's order: best score, then newest, then query id."""
    return -hit.score, -hit.ts.timestamp(), hit.query_id


class SearchIndexLike(Protocol):
    """What `LakeSearch` needs of `querylog.analytics.search.SearchIndex` (tests pass a double)."""

    def add_arrow(self, table: pa.Table) -> Any: ...
    def search(
        self,
        text: str,
        *,
        limit: int = ...,
        intent: str | None = ...,
        since: datetime | None = ...,
        aliases: Aliases | None = ...,
        until: datetime | None = ...,
        distinct: bool = ...,
    ) -> Sequence[SearchHitLike]: ...
    def commit(self) -> Any: ...
    def remove_older_than(self, cutoff: datetime) -> Any: ...
    def __len__(self) -> int: ...


_LEDGER_SCHEMA: Final = pa.schema([("query_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))])
#: What a search index holds: the questions users asked, or the answers they got (schema v2).
SearchField = Literal["queries", "answers"]
SEARCH_FIELDS: Final[tuple[SearchField, ...]] = ("queries", "answers")
#: A query still in flight is indexed once it finishes — or after this long, if it never does.
SETTLE_AFTER: Final = timedelta(minutes=10)
_LEDGER_FOLD_AT: Final = 16


def search_index_dir(home: Path, field: SearchField) -> Path:
    """Where the index of `field` lives under a data directory."""
    return home / ("index" if field == "queries" else f"index-{field}")


def built_search_fields(home: Path) -> list[SearchField]:
    """The search indexes built under `home` (retention and erasure must reach each)."""
    return [f for f in SEARCH_FIELDS if search_index_dir(home, f).is_dir()]


class LakeSearch:
    """The full-text index at ``home/index`` (`querylog.analytics.search.SearchIndex`), fed from the lake.

    A ledger of indexed query ids (Parquet files under ``home/state/search-indexed``) says which rows of the
    `queries` view are new, so `sync` reads and adds exactly those: late-arriving events, compaction and
    restarts neither skip nor repeat a query. A query is indexed once it has finished (its intent is then
    final). Writers (`sync`, `remove_older_than`) take a lock and reopen the index first, so that two of them
    — the explorer and a `querylog search` — never commit over each other.
    """

    def __init__(
        self,
        home: Path | str,
        *,
        index_factory: Callable[[Path], SearchIndexLike] | None = None,
        field: SearchField = "queries",
    ) -> None:
        """`field` says what is indexed: the questions (``queries``, at ``home/index``) or the answers
        (``answers``, schema v2's `answer_text`, at ``home/index-answers``). Hits carry the indexed text."""
        if field not in SEARCH_FIELDS:
            raise ValueError(f"field must be one of {', '.join(SEARCH_FIELDS)}; got {field!r}")
        self.home = Path(home)
        self.field = field
        suffix = "" if field == "queries" else f"-{field}"
        self.directory = search_index_dir(self.home, field)
        self.ledger_dir = self.home / "state" / f"search-indexed{suffix}"
        self._lock_path = self.home / "state" / f"search-sync{suffix}.lock"
        self._column = "query_text" if field == "queries" else "answer_text"
        self._index_errors: tuple[type[BaseException], ...] = ()
        self._outdated: tuple[type[BaseException], ...] = ()
        if index_factory is None:
            try:
                # Imported by name: search is an optional part, and everything else must work without it.
                module = importlib.import_module("querylog.analytics.search")
            except ImportError as exc:
                raise SearchUnavailableError(
                    f"full-text search is not available in this installation ({exc}); the rest of querylog works"
                ) from exc
            index_factory = module.SearchIndex
            self._index_errors = (module.SearchIndexError,)
            self._outdated = (module.SearchIndexOutdatedError,)
        self._factory = index_factory
        self.index = self._open()

    def _open(self) -> SearchIndexLike:
        try:
            index = self._factory(self.directory)
        except self._outdated as exc:
            # An index is a projection of the lake: one an older version wrote is dropped and built again, by
            # the next sync, with the ledger that said what it held. Said once, in a log line.
            _log.warning("search_index_rebuilt", index=str(self.directory), reason=str(exc))
            shutil.rmtree(self.directory, ignore_errors=True)
            shutil.rmtree(self.ledger_dir, ignore_errors=True)
            return self._open()
        except self._index_errors as exc:
            raise UpkeepError(f"the search index at {self.directory} cannot be opened: {exc}") from exc
        if len(index) == 0:
            # The index was deleted (or never built): whatever the ledger says is no longer in it.
            shutil.rmtree(self.ledger_dir, ignore_errors=True)
        return index

    @contextmanager
    def _writing(self) -> Iterator[SearchIndexLike]:
        lock = self._lock_path
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self.index = self._open()  # the newest commit, so that ours cannot conflict with it
                yield self.index
            except self._index_errors as exc:
                raise UpkeepError(f"the search index at {self.directory} could not be updated: {exc}") from exc
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- the ledger ---------------------------------------------------------------------------------
    def _ledger(self) -> pa.Table:
        files = sorted(self.ledger_dir.glob("*.parquet")) if self.ledger_dir.is_dir() else []
        if not files:
            return _LEDGER_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=_LEDGER_SCHEMA) for f in files])

    def _write_ledger(self, table: pa.Table, *, replace: bool) -> None:
        """Add `table` as a new ledger file; with `replace`, it becomes the whole ledger."""
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        old = sorted(self.ledger_dir.glob("*.parquet"))
        name = self.ledger_dir / f"indexed-{uuid_utils.uuid7()}.parquet"
        tmp = self.ledger_dir / f".{name.name}.tmp"
        pq.write_table(table.cast(_LEDGER_SCHEMA), tmp)
        os.replace(tmp, name)
        if replace:
            # A crash before these unlinks leaves ids listed twice, which only repeats them in the anti-join.
            for f in old:
                f.unlink()

    def _record(self, table: pa.Table) -> None:
        if len(list(self.ledger_dir.glob("*.parquet"))) >= _LEDGER_FOLD_AT:
            self._write_ledger(pa.concat_tables([self._ledger(), table.cast(_LEDGER_SCHEMA)]), replace=True)
        else:
            self._write_ledger(table, replace=False)

    def indexed(self) -> int:
        """How many query ids the ledger holds."""
        return int(self._ledger().num_rows)

    def intents(self) -> list[str]:
        """The intents the index holds queries of (none from an index that cannot say)."""
        intents = getattr(self.index, "intents", None)
        return list(intents()) if callable(intents) else []

    # -- operations ---------------------------------------------------------------------------------
    def sync(
        self, catalog: Catalog, *, now: datetime | None = None, progress: ProgressFn | None = None, chunk: int = 50_000
    ) -> int:
        """Index the lake's finished queries that are not in the index yet; the number added."""
        now = now or datetime.now(UTC)
        with self._writing() as index:
            con = catalog.idle_connection()
            con.register("_ql_indexed", self._ledger())
            try:
                column = self._column  # one of two fixed names, never user input
                new = arrow_table(
                    catalog,
                    f"""
                    SELECT query_id, {column} AS query_text, started_at AS ts,
                           coalesce(intent, '{UNCLASSIFIED}') AS intent
                    FROM queries
                    WHERE {column} IS NOT NULL AND started_at IS NOT NULL
                      AND (status <> 'in_progress' OR started_at < $settled)
                      AND query_id NOT IN (SELECT query_id FROM _ql_indexed)
                    ORDER BY started_at, query_id
                    """,
                    {"settled": now - SETTLE_AFTER},
                )
            finally:
                con.unregister("_ql_indexed")
            for start in range(0, new.num_rows, chunk):
                part = new.slice(start, chunk)
                index.add_arrow(part)
                index.commit()
                # Recorded after the commit: a crash in between offers these rows again next time (the index
                # skips ids it holds) instead of leaving them out of the index for good.
                self._record(part.select(["query_id", "ts"]))
                if progress is not None:
                    progress(min(start + chunk, new.num_rows), new.num_rows, "queries indexed")
        return int(new.num_rows)

    def rebuild(self, catalog: Catalog, *, progress: ProgressFn | None = None) -> int:
        """Drop the index and its ledger and index the lake again (after an erasure, so that nothing the lake no
        longer holds stays findable); the number indexed. The drop waits for a sync in progress elsewhere, which
        may have read the lake before it changed; the sync that follows reads the lake as it is now."""
        with self._writing():
            for directory in (self.directory, self.ledger_dir):  # a failure must not pass: the index would keep it
                if directory.exists():
                    shutil.rmtree(directory)
        return self.sync(catalog, progress=progress)

    def search(
        self,
        text: str,
        *,
        limit: int = 10,
        intent: str | None = None,
        since: datetime | None = None,
        aliases: Aliases | None = None,
        until: datetime | None = None,
        distinct: bool = False,
    ) -> list[SearchHitLike]:
        """Ranked hits, best first, at most one per query id; with `aliases`, every name of a company the text
        names finds the others (querylog.analytics.aliases). `until` ends the dates as `since` starts them;
        `distinct` keeps the best hit of each text (`SearchIndex.search`)."""
        # The newer options only when used: an index made by another factory may not take them.
        more: dict[str, Any] = {k: v for k, v in (("until", until), ("distinct", distinct)) if v}
        try:
            hits = self.index.search(text, limit=limit, intent=intent, since=since, aliases=aliases, **more)
            if intent == UNCLASSIFIED:  # queries indexed before the index named them so: no intent at all
                # Looked for among the best hits of every intent (the index has no list of hits without one): wide,
                # so that newer hits of other intents do not crowd them out, but bounded.
                wide = min(_UNNAMED_MAX, max(limit * 20, 1_000))
                unnamed = self.index.search(text, limit=wide, since=since, aliases=aliases)
                hits = sorted([*hits, *(h for h in unnamed if h.intent is None)], key=_best_first)[:limit]
        except self._index_errors as exc:
            raise UpkeepError(f"the search index at {self.directory} could not be read: {exc}") from exc
        seen: set[str] = set()
        unique = []
        for hit in hits:
            if hit.query_id not in seen:
                seen.add(hit.query_id)
                unique.append(hit)
        return unique

    def remove_older_than(self, cutoff: datetime) -> None:
        """Forget queries that started before `cutoff`, in the index and in the ledger."""
        with self._writing() as index:
            index.remove_older_than(cutoff)
            index.commit()
            ledger = self._ledger()
            if ledger.num_rows:
                keep = pc.greater_equal(ledger.column("ts"), pa.scalar(cutoff, _LEDGER_SCHEMA.field("ts").type))
                self._write_ledger(ledger.filter(keep), replace=True)
