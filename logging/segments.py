"""The event log: append-only NDJSON segment files, one writer per process, any number of readers.

Layout: ``<dir>/<created_ns>-<pid>-<rand>.jsonl``; one event per line, UTF-8 JSON, ``\\n``-terminated.
A line without its ``\\n`` is a torn write; readers never consume it and `repair` cuts it once its
writer is gone. A writer holds an exclusive ``flock`` on the segment it appends to, which is how
readers and repair tell an active segment from a finished one (the lock dies with the process).

Durability: `EventLog.append` buffers in memory (microseconds, no syscall); `EventLog.flush` hands the
buffer to the kernel with ``write(2)``. After `flush` returns, the events survive ``kill -9`` of the
process. Surviving a machine crash needs ``fsync``, which the ``fsync`` policy schedules.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import math
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import structlog

from querylog.logging.codec import raw_encode_into
from querylog.logging.codec import raw_encode_lines as _encode_lines
from querylog.logging.events import Event
from querylog.logging.telemetry import SinkTelemetry

__all__ = [
    "ERASED_LIST",
    "SEGMENT_SUFFIX",
    "Checkpoint",
    "EventLog",
    "FsyncPolicy",
    "LogClosedError",
    "LogReader",
    "ReadBatch",
    "is_erased",
    "last_written",
    "repair",
    "segment_paths",
]

SEGMENT_SUFFIX: Final = ".jsonl"
FsyncPolicy = Literal["always", "interval", "never"]
#: segment name → bytes consumed. A projection's position in the log.
Checkpoint = dict[str, int]

_log = structlog.get_logger("querylog.log")
#: At most one `log_write_failed` line this often while the disk refuses writes.
_WRITE_FAILED_LOG_EVERY_S: Final = 60.0


class LogClosedError(RuntimeError):
    """The log was used before `open()` or after `close()`."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


_OPENED: Final = _State.OPENED  # one global load on the hot path, not two


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


#: In the log directory: the names of the segments that hold erased lines, one per line (logging/erase.py).
ERASED_LIST: Final = "erased-segments"


def is_erased(line: bytes) -> bool:
    """A line `querylog erase` blanked in place (spaces, so that no offset moves); events start with ``{``. All
    spaces: a piece of a line that merely starts with one (a read from inside a line) is not blanked."""
    return line[:1] == b" " and not line.strip(b" ")


def segment_paths(directory: Path) -> list[Path]:
    """Segments in creation order (their names start with a nanosecond timestamp)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def last_written(directory: Path) -> datetime | None:
    """When a segment of the log was last written (not an event's time: a producer's clock may run ahead). An empty
    segment is left out: a process that starts opens one, and no event came with it."""
    times = []
    for path in segment_paths(directory):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            if stat.st_size:
                times.append(stat.st_mtime)
    return datetime.fromtimestamp(max(times), UTC) if times else None


def repair(directory: Path) -> dict[str, int]:
    """Cut torn tails from segments no live writer holds. Returns {segment: bytes cut} for those it cut.

    Safe to run at any time from any process: an active segment is locked by its writer and skipped.
    """
    cut: dict[str, int] = {}
    for path in segment_paths(directory):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            if not _try_lock(fd):
                continue
            size = os.fstat(fd).st_size
            keep = _last_line_end(fd, size)
            if keep < size:
                os.ftruncate(fd, keep)
                os.fsync(fd)
                cut[path.name] = size - keep
                _log.warning("log_torn_tail_cut", segment=path.name, bytes_cut=size - keep, kept=keep)
        finally:
            os.close(fd)  # closing releases the lock
    return cut


def _last_line_end(fd: int, size: int) -> int:
    """Offset just past the last ``\\n`` in the file (0 if none), scanning back from the end in chunks."""
    chunk = 64 * 1024
    end = size
    while end > 0:
        start = max(0, end - chunk)
        data = os.pread(fd, end - start, start)
        idx = data.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        end = start
    return 0


class EventLog:
    """The writer. One per process; thread-safe.

    ``append`` is the request-path cost: a list append, no lock. ``flush`` is the durability point (a query's
    events are flushed before its answer is returned): it encodes what was appended, in one call, and writes it.
    A background thread flushes stragglers every ``flush_interval_s`` and applies the fsync policy.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        segment_max_bytes: int = 64 * 1024 * 1024,
        segment_max_age_s: float = 3600.0,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
        flush_interval_s: float = 0.2,
        max_buffered_events: int = 250_000,
    ) -> None:
        if segment_max_bytes < 1024:
            raise ValueError(f"segment_max_bytes must be at least 1024, got {segment_max_bytes}")
        if segment_max_age_s <= 0:
            raise ValueError(f"segment_max_age_s must be > 0, got {segment_max_age_s}")
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', got {fsync!r}")
        if fsync_interval_s <= 0 or flush_interval_s <= 0:
            raise ValueError("fsync_interval_s and flush_interval_s must be > 0")
        self.directory = Path(directory)
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self.fsync_policy: FsyncPolicy = fsync
        self.fsync_interval_s = fsync_interval_s
        self.flush_interval_s = flush_interval_s
        if max_buffered_events < 1:
            raise ValueError(f"max_buffered_events must be at least 1, got {max_buffered_events}")
        self.max_buffered_events = max_buffered_events
        self.writer_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._state = _State.UNOPENED
        self._lock = threading.Lock()
        # Held by whoever syncs outside `_lock` (the flusher's round, `sync`, `close`), taken before `_lock`: a
        # `sync` waits for a round in flight, whose segments are then durable too.
        self._sync_lock = threading.Lock()
        # Appended events wait here until the next flush encodes them. A list's append is atomic, so the request
        # path takes no lock; `flush` (under the lock) copies the first n and deletes those n, two atomic steps:
        # whatever is appended meanwhile lands past them and waits for the next flush.
        self._pending: list[Event] = []
        self._fd = -1
        self._segment: Path | None = None
        self._segment_size = 0
        self._segment_opened = 0.0
        self._dirty_since_fsync = False
        # Refused writes not yet said in a line, and when the last line said some (None: writes go through).
        self._failures_unlogged = 0
        self._failures_logged_at: float | None = None
        self._write_error: str | None = None
        # What a roll leaves the flusher to sync outside the lock (the finished segments' descriptors, with whether
        # they hold unsynced data; the directory, for the new segment's name), so that no request waits on the disk.
        self._retired: list[tuple[int, bool]] = []
        self._directory_unsynced = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        # What was written and dropped: the same counts as every sink reports (the log's losses show up beside
        # theirs), and the log's only counters.
        self.telemetry = SinkTelemetry("log")

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> EventLog:
        if self._state is not _State.UNOPENED:
            raise LogClosedError(f"EventLog is {self._state.value}; open() is allowed once, on a new EventLog")
        self.directory.mkdir(parents=True, exist_ok=True)
        repair(self.directory)
        with self._lock:
            self._roll_locked()
        self._state = _State.OPENED
        self._flusher = threading.Thread(target=self._flush_loop, name="querylog-log-flusher", daemon=True)
        self._flusher.start()
        return self

    def close(self) -> None:
        if self._state is not _State.OPENED:
            self._state = _State.CLOSED
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._sync_lock:
            with self._lock:
                if self._state is not _State.OPENED:  # another thread's close() came first and did all this
                    return
                # Closed first: an append from now on is refused, and what was queued before is written below.
                self._state = _State.CLOSED
                self._flush_locked()
                if self._fd >= 0:  # retired like a rolled segment: synced as the policy says, then closed
                    self._retired.append((self._fd, self._dirty_since_fsync))
                    self._fd = -1
                retired, self._retired = self._retired, []
                sync_directory, self._directory_unsynced = self._directory_unsynced, False
            self._sync_outside_lock(retired, -1, sync_directory)

    def __enter__(self) -> EventLog:
        return self.open() if self._state is _State.UNOPENED else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def segment(self) -> Path | None:
        return self._segment

    # -- the hot path -----------------------------------------------------------------------------
    def append(self, event: Event) -> None:
        """Queue one event (prechecked or not: the same line) for the next `flush`, which encodes and writes
        it. A list append: no lock, no encoding, no I/O. Durable against a process crash after `flush`."""
        if self._state is not _OPENED:
            raise LogClosedError(f"append() on a {self._state.value} EventLog; open() it first")
        pending = self._pending
        if len(pending) >= self.max_buffered_events:
            self._dropped_full()
            return
        pending.append(event)
        if self._state is not _OPENED:  # closed meanwhile, by another thread: written by close, or refused here
            self._withdraw(event)

    def _withdraw(self, event: Event) -> None:
        """`event` was queued as the log closed: if close took it, it is written; if not, it never will be, so it
        leaves the queue and the caller is told (never lost without a word)."""
        with self._lock:  # close() holds it while it writes what is queued: after it, the queue is final
            for i, queued in enumerate(self._pending):
                if queued is event:
                    del self._pending[i]
                    raise LogClosedError(f"append() on a {self._state.value} EventLog; open() it first")

    def _dropped_full(self) -> None:
        # Nothing has flushed for long enough to queue `max_buffered_events` (a disk that hangs every write, or
        # a tracker that never flushes and a flusher that cannot run): drop, count, go on. Not under the log's
        # lock, which a hung write holds: the telemetry has its own.
        self.telemetry.received(1)
        self.telemetry.dropped("buffer_full")

    def _encode_one_by_one(self, batch: list[Event]) -> tuple[bytes, int]:
        """`batch` as lines, leaving out (and counting) the events that cannot be written; and how many are in."""
        buffer = bytearray()
        count = 0
        for event in batch:
            start = len(buffer)
            try:
                raw_encode_into(event, buffer, -1)
            except Exception as exc:
                # A value that cannot be written as UTF-8 JSON (a lone surrogate in an id; a value of a type JSON
                # has no form for, e.g. a numpy score; a value that contains itself): the request goes on; the
                # event is counted as dropped, with one line saying why. Never the others queued with it.
                del buffer[start:]
                self._dropped_unencodable(event, exc)
                continue
            buffer.append(10)  # b"\n"
            count += 1
        return bytes(buffer), count

    def _dropped_unencodable(self, event: Event, exc: Exception) -> None:
        self.telemetry.received(1)
        self.telemetry.dropped("unencodable")
        _log.error(
            "log_event_unencodable",
            event_type=getattr(event, "event_type", type(event).__name__),
            query_id=repr(getattr(event, "query_id", None))[:200],
            error=f"{type(exc).__name__}: {str(exc)[:500]}",
        )

    def flush(self) -> None:
        """Hand buffered events to the kernel (one ``write``); fsync too under the ``always`` policy."""
        with self._lock:
            if self._state is not _OPENED:
                raise LogClosedError(f"flush() on a {self._state.value} EventLog")
            self._flush_locked()

    @property
    def write_error(self) -> str | None:
        """Why the disk refused the last write (``No space left on device``) while writes fail; None once one goes
        through again (and before any failed)."""
        return self._write_error

    def sync(self) -> None:
        """Flush and fsync: every event appended before the call is durable against a machine crash once this
        returns, in segments a roll finished too (whatever the fsync policy). Appends and flushes go on meanwhile."""
        with self._sync_lock:  # a flusher round in flight finishes first
            with self._lock:
                if self._state is not _OPENED:
                    raise LogClosedError(f"sync() on a {self._state.value} EventLog")
                self._flush_locked()
                sync_fd = os.dup(self._fd) if self._fd >= 0 and self._dirty_since_fsync else -1
                self._dirty_since_fsync = False
                retired, self._retired = self._retired, []
                sync_directory, self._directory_unsynced = self._directory_unsynced, False
            self._sync_outside_lock(retired, sync_fd, sync_directory, every_dirty=True)

    # -- internals --------------------------------------------------------------------------------
    def _flush_locked(self) -> None:
        pending = self._pending
        if not pending:
            return
        # What is queued now, in order (appends meanwhile wait for the next flush), encoded in one call.
        n = len(pending)
        batch = pending[:n]
        del pending[:n]
        try:
            try:
                data, count = _encode_lines(batch), len(batch)
            except Exception:
                data, count = self._encode_one_by_one(batch)
        except BaseException:  # interrupted (KeyboardInterrupt): nothing is lost, the next flush has them all
            pending[:0] = batch
            raise
        if not count:
            return
        if (
            self._fd < 0
            or self._segment_size >= self.segment_max_bytes
            or (time.monotonic() - self._segment_opened >= self.segment_max_age_s)
        ):
            try:
                self._roll_locked()
            except OSError as exc:
                self._write_failed(exc, count)
                return
        written = 0
        try:
            written = os.write(self._fd, data)
            if written < len(data):  # a short write (a signal, a nearly full disk): the rest, in order
                with memoryview(data) as view:
                    while written < len(view):
                        written += os.write(self._fd, view[written:])
        except OSError as exc:
            # A partial write would leave half a line mid-segment: cut back to the last whole line. The whole lines
            # before it stay: a projection may have read them already, and a line it read must stay in the log.
            whole = data.rfind(b"\n", 0, written) + 1
            if written > whole:
                try:
                    os.ftruncate(self._fd, self._segment_size + whole)
                except OSError:  # the torn line stays: the next append goes to a new segment, `repair` cuts it
                    self._segment_opened = -math.inf
            kept = data.count(b"\n", 0, whole)  # one event a line
            self._segment_size += whole
            if kept:
                self.telemetry.delivered(kept, nbytes=whole)
                self._dirty_since_fsync = True
                if self.fsync_policy == "always":  # durable when the flush returns, as every flush's lines are
                    with contextlib.suppress(OSError):
                        os.fsync(self._fd)
                        self._dirty_since_fsync = False
            self._write_failed(exc, count - kept)
            return
        self._segment_size += written
        self.telemetry.delivered(count, nbytes=written)
        self._dirty_since_fsync = True
        if self._failures_logged_at is not None:  # writing again after refused writes: said once
            _log.warning("log_write_recovered", events_dropped_since_last_line=self._failures_unlogged)
            self._failures_logged_at, self._failures_unlogged, self._write_error = None, 0, None
        if self.fsync_policy == "always":
            os.fsync(self._fd)
            self._dirty_since_fsync = False

    def _write_failed(self, exc: OSError, count: int) -> None:
        """The disk refused the write (full, gone): the API keeps answering; these events are counted lost."""
        self.telemetry.received(count)
        self.telemetry.dropped("disk_write_failed", count)
        self.telemetry.error("write")
        # One line, then one a minute at most: a full disk refuses every request's write, and a line each (26,000
        # in 45 s under load) would fill the disk the logs go to. The counters have every one.
        self._failures_unlogged += count
        self._write_error = os.strerror(exc.errno) if exc.errno else str(exc)
        now = time.monotonic()
        if self._failures_logged_at is not None and now - self._failures_logged_at < _WRITE_FAILED_LOG_EVERY_S:
            return
        _log.error(
            "log_write_failed",
            error=self._write_error,
            disk_full=exc.errno == errno.ENOSPC,
            events_dropped=self._failures_unlogged,
            segment=self._segment.name if self._segment else None,
            next_line_in_s=_WRITE_FAILED_LOG_EVERY_S,
        )
        self._failures_logged_at, self._failures_unlogged = now, 0

    def _roll_locked(self) -> None:
        old_fd = self._fd
        name = f"{time.time_ns():020d}-{self.writer_id}{SEGMENT_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        if not _try_lock(fd):  # pragma: no cover - a fresh, uniquely named file is never locked
            os.close(fd)
            raise RuntimeError(f"segment {name} is locked by another writer")
        self._fd = fd
        self._segment = path
        self._segment_size = 0
        self._segment_opened = time.monotonic()
        if self.fsync_policy == "always":
            # Every flush is durable when it returns: the finished segment (already synced by its last flush) and
            # the new segment's name (a machine crash could lose the whole segment without it) are synced here.
            if old_fd >= 0:
                if self._dirty_since_fsync:
                    os.fsync(old_fd)
                os.close(old_fd)
            self._fsync_directory()
        else:
            # The flusher syncs both within `flush_interval_s`, outside the lock: the request whose flush rolled
            # the segment, and those waiting for the lock, do not wait on the disk (tens of ms for a segment).
            if old_fd >= 0:
                self._retired.append((old_fd, self._dirty_since_fsync))
            self._directory_unsynced = True
        self._dirty_since_fsync = False

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _flush_loop(self) -> None:
        last_fsync = time.monotonic()
        failing: str | None = None  # the error the last round failed with: logged once, not every 200 ms
        while not self._stop.wait(self.flush_interval_s):
            try:
                with self._sync_lock:
                    synced = self._flush_round(last_fsync)
                if synced is None:  # closed meanwhile
                    return
                last_fsync, failing = synced, None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if error != failing:
                    _log.error("log_flusher_round_failed", error=error)
                    self.telemetry.error("flush")
                failing = error

    def _flush_round(self, last_fsync: float) -> float | None:
        """One round of the flusher, holding `_sync_lock`: write what is queued, then sync outside `_lock` what the
        policy and the rolls since the last round ask for. Returns when the segment was last synced; None if the
        log is closed."""
        sync_fd = -1
        with self._lock:
            if self._state is not _State.OPENED:
                return None
            self._flush_locked()
            now = time.monotonic()
            if (
                self.fsync_policy == "interval"
                and self._dirty_since_fsync
                and now - last_fsync >= self.fsync_interval_s
                and self._fd >= 0
            ):
                # The fsync runs outside the lock, so that no request's flush waits on the disk (tens of ms on a
                # busy one). It syncs a duplicate of the segment's descriptor: a roll meanwhile may close the
                # original. What is written meanwhile marks the log dirty again.
                sync_fd = os.dup(self._fd)
                self._dirty_since_fsync = False
                last_fsync = now
            # Taken last, so that nothing above failing can drop them (a descriptor never closed).
            retired, self._retired = self._retired, []
            sync_directory, self._directory_unsynced = self._directory_unsynced, False
        self._sync_outside_lock(retired, sync_fd, sync_directory)
        return last_fsync

    def _sync_outside_lock(
        self, retired: list[tuple[int, bool]], sync_fd: int, sync_directory: bool, *, every_dirty: bool = False
    ) -> None:
        """What the flusher, `sync` or `close` syncs without holding `_lock` (holding `_sync_lock`): segments a roll
        (or `close`) finished, each then closed (those with unsynced lines synced, unless the policy is ``never``
        and not `every_dirty`); the current segment, through `sync_fd` (a duplicate of its descriptor, closed
        here); the directory. Each is done even if one before it fails; the first failure is raised after. What
        can be tried again is, at the next round: the current segment and the directory."""
        failures: list[OSError] = []
        for fd, dirty in retired:
            try:
                if dirty and (every_dirty or self.fsync_policy != "never"):
                    os.fsync(fd)
            except OSError as exc:
                failures.append(exc)
            finally:
                os.close(fd)
        if sync_fd >= 0:
            try:
                os.fsync(sync_fd)
            except OSError as exc:
                failures.append(exc)
                with self._lock:
                    self._dirty_since_fsync = True  # not durable yet: the next round tries again
            finally:
                os.close(sync_fd)
        if sync_directory:
            try:
                self._fsync_directory()
            except OSError as exc:
                failures.append(exc)
                with self._lock:
                    self._directory_unsynced = True
        if failures:
            raise failures[0]


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Whole lines read from the log, and the checkpoint just past them."""

    lines: list[bytes]
    checkpoint: Checkpoint
    remaining_bytes: int
    #: Whether a limit (`max_events` or `max_bytes`) ended the read, rather than the end of the whole lines
    #: in the log: then more is waiting, and a projector catching up should read again at once.
    cut: bool = False
    #: Lines `querylog erase` blanked that the read went past: consumed, never handed on.
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.lines)


def _take_unerased(data: bytes, end: int, want: int, out: list[bytes]) -> tuple[int, int]:
    """Append to `out` at most `want` lines of ``data[:end]`` (whole lines) that `querylog erase` did not blank; the
    bytes read (up to the last line taken, with the blanked lines after it) and how many blanked lines they hold."""
    start = taken = skipped = 0
    while start < end:
        stop = data.index(b"\n", start, end)
        line = data[start:stop]
        if not is_erased(line):
            if taken == want:
                return start, skipped
            out.append(line)
            taken += 1
        else:
            skipped += 1
        start = stop + 1
    return end, skipped


class LogReader:
    """Reads whole lines from every writer's segments, from a checkpoint on. Never takes a lock."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._erased: tuple[tuple[int, int], frozenset[str]] = ((0, 0), frozenset())

    def segments(self) -> list[Path]:
        return segment_paths(self.directory)

    def bytes_after(self, checkpoint: Checkpoint) -> int:
        """How many bytes the segments hold past `checkpoint` now (whole lines or not)."""
        total = 0
        for path in self.segments():
            with contextlib.suppress(FileNotFoundError):  # trimmed meanwhile
                total += max(0, path.stat().st_size - checkpoint.get(path.name, 0))
        return total

    def erased_segments(self) -> frozenset[str]:
        """The segments that hold lines `querylog erase` blanked (`ERASED_LIST`), re-read when the list changes:
        only their lines are checked, so a log that never saw an erasure pays nothing for it."""
        try:
            stat = (self.directory / ERASED_LIST).stat()
        except FileNotFoundError:
            return frozenset()
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._erased[0]:
            names = frozenset((self.directory / ERASED_LIST).read_text(encoding="utf-8").split())
            self._erased = (key, names)
        return self._erased[1]

    def read(self, checkpoint: Mapping[str, int], *, max_events: int = 10_000, max_bytes: int = 8 << 20) -> ReadBatch:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        lines: list[bytes] = []
        new: Checkpoint = {}
        remaining = 0
        budget = max_bytes
        cut = False
        skipped = 0
        live: set[str] = set()
        erased = self.erased_segments()
        held = False  # a segment's whole lines were left for the next read: none of a later one may come first
        for path in self.segments():
            name = path.name
            live.add(name)
            offset = checkpoint.get(name, 0)
            new[name] = offset
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= offset:
                continue
            if held or len(lines) >= max_events or budget <= 0:
                remaining += size - offset
                cut = True
                continue
            cut = cut or budget < size - offset
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(min(size - offset, budget))
            end = data.rfind(b"\n") + 1
            torn = False  # all that is left of the segment is a line not ended (being written, or cut by a crash)
            if end == 0 and len(data) == budget and budget < size - offset:
                # One line longer than the whole budget: read it alone rather than stall forever.
                with path.open("rb") as fh:
                    fh.seek(offset)
                    line = fh.readline()
                torn = not line.endswith(b"\n")
                data = b"" if torn else line
                end = len(data)
            if name in erased and end:  # lines `querylog erase` blanked are never handed on, nor counted as read
                end, passed = _take_unerased(data, end, max_events - len(lines), lines)
                skipped += passed
            else:
                # Split off at most the lines still wanted: the rest (and any partial last line) stays in one piece.
                pieces = data.split(b"\n", max_events - len(lines)) if end else [data]
                end = len(data) - len(pieces[-1])
                lines.extend(pieces[:-1])
            left = data.find(b"\n", end) >= 0  # whole lines read but left for the next read
            cut = cut or left
            new[name] = offset + end
            budget -= end
            remaining += max(0, size - offset - end)  # a long line read whole may end past the stat
            # Cut by a limit, not at a line still being written: the next read starts here, and no line of a later
            # segment may come before this one's (a budget that ended mid-line left some budget over).
            held = left or (len(data) < size - offset and not torn)
        # Keep positions only for segments that still exist (retention may delete old ones).
        checkpoint = {k: v for k, v in new.items() if k in live}
        return ReadBatch(lines=lines, checkpoint=checkpoint, remaining_bytes=remaining, cut=cut, skipped=skipped)

    def end_checkpoint(self) -> Checkpoint:
        """The position just past the last whole line of every segment: "start from now"."""
        result: Checkpoint = {}
        for path in self.segments():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                result[path.name] = _last_line_end(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        return result

    def iter_all(
        self, checkpoint: Mapping[str, int] | None = None, *, batch_events: int = 50_000
    ) -> Iterator[ReadBatch]:
        """Every whole line from `checkpoint` (default: the start) to the current end, batch by batch."""
        position: Mapping[str, int] = dict(checkpoint or {})
        while True:
            batch = self.read(position, max_events=batch_events)
            if batch.lines:
                yield batch
            elif not batch.cut or batch.checkpoint == position:  # the end; a batch of blanked lines only reads on
                return
            position = batch.checkpoint
