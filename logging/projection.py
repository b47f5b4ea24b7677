"""The sink seam and the projector that feeds it: tail the log from the sink's checkpoint, write a batch.

A sink stores events somewhere (memory, Parquet, Loki) and owns its checkpoint — the log position its
data reaches — so that a sink able to commit both together (Parquet) gets exactly-once, and one that
cannot (Loki) advances only after its server said yes. A `Projector` runs one sink in a background thread;
across processes a file lock lets exactly one projector per sink run while the others stand by.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

import msgspec
import structlog

from querylog.logging.codec import DecodeError, decode, line_time
from querylog.logging.events import AnyEvent
from querylog.logging.segments import Checkpoint, LogReader, ReadBatch, is_erased
from querylog.logging.telemetry import SinkTelemetry

__all__ = [
    "Batch",
    "CheckpointFile",
    "FileCheckpointSink",
    "Prepared",
    "Projector",
    "RetryPolicy",
    "Sink",
    "SinkClosedError",
    "SinkError",
    "SinkSendError",
    "atomic_write",
    "locked",
    "try_lead",
]

_log = structlog.get_logger("querylog.projection")


class SinkError(Exception):
    """Base class for sink failures."""


class SinkSendError(SinkError):
    """The sink could not store a batch. Nothing was committed; the same batch will be offered again.

    `stage` says where it failed (``connect``, ``http_429``, ``checkpoint``…: the `errors` counter's label) and
    `retry_after_s` how long the destination asked to be left alone, when it said."""

    def __init__(self, message: str, *, stage: str = "write", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.retry_after_s = retry_after_s


class SinkClosedError(SinkError):
    """The sink was used before `open()` or after `close()`."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """Rows a sink built straight from raw log lines (`Sink.prepare`); the projector only counts them."""

    rows: object
    count: int
    last_ts: datetime | None


@dataclass(frozen=True, slots=True)
class Batch:
    """Events read from the log (or the rows a sink prepared from its lines), and the position just past them."""

    events: Sequence[AnyEvent]
    checkpoint: Checkpoint
    #: How many of `events` were offered before (a retry after a failed write): not received again.
    redelivered: int = 0
    prepared: Prepared | None = None

    @property
    def count(self) -> int:
        return self.prepared.count if self.prepared is not None else len(self.events)


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class Sink(ABC):
    """Write a batch, report the checkpoint, close. Subclasses implement `_open`, `_write`, `_checkpoint`."""

    name: str = "sink"

    def __init__(self) -> None:
        self.telemetry = SinkTelemetry(self.name)
        self._state = _State.UNOPENED

    def open(self) -> Sink:
        if self._state is not _State.UNOPENED:
            raise SinkClosedError(f"{self.name} sink is {self._state.value}; open() is allowed once, on a new sink")
        self._open()
        self._state = _State.OPENED
        return self

    def close(self) -> None:
        if self._state is _State.OPENED:
            self._close()
        self._state = _State.CLOSED

    def write(self, batch: Batch) -> None:
        """Store the batch and commit `batch.checkpoint`. Raises `SinkSendError` having committed nothing.

        The counters every sink shares are counted here, once: `received` (events offered for the first time)
        and `errors` (a failed write, by its stage). The sink itself reports what became of the events (`sent`,
        `dropped`) and any trouble it got over without failing the write; the projector counts `retries`."""
        self._require_open("write")
        self.telemetry.received(max(0, batch.count - batch.redelivered))
        try:
            self._write(batch)
        except SinkSendError as exc:
            self.telemetry.error(exc.stage)
            raise
        except Exception:
            self.telemetry.error("write")
            raise

    def idle(self) -> None:
        """Called by the projector, on its thread, when a read found nothing new (each `interval_s` while the log
        is quiet): what a sink does between batches. Nothing by default."""
        return None  # a hook a sink may fill, not an abstract method every sink must write

    def prepare(self, lines: Sequence[bytes]) -> Prepared | None:
        """This sink's rows built straight from raw log lines, skipping the decode of each line into an event
        (decoding is most of a projection's cost). None — the default, and the answer for any batch a sink
        cannot take whole: a corrupt line, an older schema version — has the projector decode line by line.

        A projector with ``read_ahead`` calls this on its read-ahead thread while `write` runs on another, and
        may throw the result away: it must depend on nothing but `lines` and the sink's settings, and change
        nothing."""
        return None

    def checkpoint(self) -> Checkpoint:
        """The log position this sink's stored data reaches."""
        self._require_open("checkpoint")
        return self._checkpoint()

    def resume(self) -> None:
        """Read again what another process may have stored since this sink was opened: its checkpoint, its writes
        half done. The projector calls it when this process takes the projection's lead, so that a standby that
        takes over resumes where the old leader stopped, not where the log stood when it started."""
        self._require_open("resume")
        self._resume()

    def __enter__(self) -> Sink:
        return self.open() if self._state is _State.UNOPENED else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self, what: str) -> None:
        if self._state is not _State.OPENED:
            raise SinkClosedError(f"{what}() on a {self._state.value} {self.name} sink")

    def _open(self) -> None:  # noqa: B027 - optional hook
        pass

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass

    def _resume(self) -> None:  # noqa: B027 - optional hook: a sink whose state is all in this process has none
        pass

    @abstractmethod
    def _write(self, batch: Batch) -> None: ...

    @abstractmethod
    def _checkpoint(self) -> Checkpoint: ...


def _events_in(remaining_bytes: int, consumed: int, lines: int) -> int:
    """About how many events `remaining_bytes` of log hold, by the mean line of a batch (`lines` lines in `consumed`
    bytes, newlines included)."""
    return remaining_bytes // max(1, consumed // max(1, lines))


class CheckpointFile:
    """A checkpoint stored as JSON, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Checkpoint:
        try:
            data = self.path.read_bytes()
            return msgspec.json.decode(data, type=dict[str, int])
        except FileNotFoundError:
            return {}
        except (msgspec.DecodeError, IsADirectoryError) as exc:
            raise SinkError(
                f"checkpoint {self.path} is unreadable ({exc}); delete it to re-project from the start"
            ) from exc

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the stored checkpoint; `SinkSendError` (stage ``checkpoint``) if the disk refused: the batch it
        covers is offered again, and the sink's `errors{stage="checkpoint"}` says why."""
        try:
            atomic_write(self.path, msgspec.json.encode(checkpoint))
        except OSError as exc:
            raise SinkSendError(f"checkpoint {self.path} not saved: {exc}", stage="checkpoint") from exc


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` (made if missing), waited for and held for the ``with`` block: how the
    processes that rewrite one file (a snapshot, the forget list, the dead letters) take turns."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


def try_lead(lock_path: Path) -> IO[bytes] | None:
    """An exclusive lock on `lock_path` if no other process holds it (the file stays open while it is held; the
    lock dies with the process), else None. How one process per data directory is elected for a job."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = lock_path.open("ab")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: no empty temporary file is left beside the one kept
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class FileCheckpointSink(Sink):
    """A sink that commits its checkpoint to a file after `_send` succeeds (at-least-once on a crash
    between the two; sinks that can do better override `_write`). A batch sent whose checkpoint could not be saved
    (a full disk) is not sent again by this process: the write fails, and the position is saved with a later one,
    or when the log is next quiet."""

    def __init__(self, checkpoint_path: Path) -> None:
        super().__init__()
        self._checkpoint_file = CheckpointFile(checkpoint_path)
        self._position: Checkpoint = {}
        self._unsaved = False

    def _open(self) -> None:
        self._position = self._checkpoint_file.load()

    def _resume(self) -> None:
        self._position = self._checkpoint_file.load()
        self._unsaved = False

    def _write(self, batch: Batch) -> None:
        if batch.events:
            self._send(batch.events)
        self._position, self._unsaved = dict(batch.checkpoint), True  # sent: the next batch starts after it
        self._checkpoint_file.save(batch.checkpoint)
        self._unsaved = False

    def idle(self) -> None:
        if self._unsaved:  # a save that failed after its batch was sent: tried again while the log is quiet
            with contextlib.suppress(SinkSendError):  # the next batch's write says if the disk is still full
                self._checkpoint_file.save(self._position)
                self._unsaved = False

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)

    @abstractmethod
    def _send(self, events: Sequence[AnyEvent]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long a projector waits before offering a failed batch again: exponential backoff with jitter, as
    Promtail does it (dskit ``backoff``): failure ``n`` in a row waits a random time in ``[min·2ⁿ⁻¹, min·2ⁿ)``,
    capped at `max_backoff_s`. A destination's Retry-After is honoured up to five minutes (Promtail's longest
    wait). There is no last retry: the log keeps every event until the sink has it."""

    min_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"RetryPolicy needs 0 < min_backoff_s <= max_backoff_s, got {self.min_backoff_s} and "
                f"{self.max_backoff_s}"
            )

    def delay(self, failures: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1-based)."""
        low = min(self.max_backoff_s, self.min_backoff_s * 2 ** min(failures - 1, 62))
        wait = rng.uniform(low, min(self.max_backoff_s, 2 * low))
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, max(self.max_backoff_s, _MAX_RETRY_AFTER_S)))
        return wait


_MAX_RETRY_AFTER_S: Final = 300.0
#: With read-ahead, the first batch is this fraction of the byte budget; those read ahead double from there.
_RAMP_START_DIVISOR: Final = 8


@dataclass(slots=True)
class _Staged:
    """A batch read from `start` and made ready to write: the sink's prepared rows, or decoded events and
    the lines that would not decode (counted only once the batch is written, not when it is read ahead)."""

    start: Checkpoint
    read: ReadBatch
    prepared: Prepared | None
    events: list[AnyEvent] = field(default_factory=list)
    corrupt: list[tuple[str, bytes]] = field(default_factory=list)
    #: Why `Sink.prepare` raised, if it did (the lines were then decoded one by one).
    prepare_error: str | None = None
    #: The byte budget it was read with.
    max_bytes: int = 0


class Projector:
    """Runs one sink: read from its checkpoint, decode, write, repeat. Thread-safe start/stop.

    Batching: every `interval_s` it reads up to `batch_max_events` / `batch_max_bytes`; a batch the reader
    cut at those limits is followed at once by the next. Failed writes are retried with exponential backoff
    and jitter; the log keeps everything meanwhile, so a sink that is down falls behind and catches up.

    Read-ahead (for sinks that wait on a server, like Loki): while a batch is being written, the next one is
    read and prepared on a second thread, so that catching up keeps the server busy instead of taking turns
    with it. The batch read ahead is used only if the write succeeded (it starts where that write ended);
    otherwise it is thrown away and the failed batch is read again.
    """

    def __init__(
        self,
        reader: LogReader,
        sink: Sink,
        *,
        lock_path: Path | None = None,
        interval_s: float = 1.0,
        batch_max_events: int = 50_000,
        batch_max_bytes: int = 16 << 20,
        standby_poll_s: float = 2.0,
        read_ahead: bool = False,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if batch_max_events < 1 or batch_max_bytes < 1:
            raise ValueError("batch_max_events and batch_max_bytes must be >= 1")
        self.reader = reader
        self.sink = sink
        self.lock_path = lock_path
        self.interval_s = interval_s
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.standby_poll_s = standby_poll_s
        self.read_ahead = read_ahead
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        #: Failed writes in a row (the backoff grows with them).
        self.failures = 0
        #: Whether this projector has held its lock (led) at any time: its counters are then the projection's.
        self.has_led = lock_path is None
        self._ahead: Future[_Staged] | None = None
        self._more_waiting = False
        self._ahead_pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Waiting between retries ends early when the projector is stopped.
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._stop.wait
        self._lock_fh: IO[bytes] | None = None
        self._resumed = False  # a projector without a lock resumes its sink once, at its first batch
        self._io_lock = threading.Lock()
        self.corrupt_lines = 0
        # When this projector last had nothing left to deliver (None: not since it started). The lag in seconds is
        # never more than the time since: events dated long ago (a backfill) make no lag of months.
        self._caught_up_at: float | None = None
        # Where the last offered batch started and how many events it had: a retry reads from the same
        # checkpoint, so its first events are the ones already offered.
        self._offered_from: Checkpoint | None = None
        self._offered = 0
        #: Of the batch offered from `_offered_from`, the corrupt lines counted and logged: a retry counts none again.
        self._corrupt_reported = 0

    @property
    def telemetry(self) -> SinkTelemetry:
        return self.sink.telemetry

    # -- one step ---------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Read one batch and write it to the sink. Returns the number of log lines consumed (lines `querylog erase`
        blanked included: a batch of only those is no end of the log)."""
        with self._io_lock:
            if not self._resumed and self.lock_path is None:  # the only writer, by contract: tidy as a leader does
                self._resumed = True
                try:
                    self.sink.resume()
                except OSError as exc:  # what it read at open stands; the write says if the disk is still wrong
                    _log.warning("projector_resume_failed", sink=self.sink.name, error=f"{type(exc).__name__}: {exc}")
            start = self.sink.checkpoint()
            staged = self._take_read_ahead(start)
            if staged is None:
                # With read-ahead, a first batch read here has nothing in flight to overlap with, so it starts
                # small and the batches read ahead double up to full size (below): each is prepared while the
                # one before it, half its size, is in flight. A batch offered again (a retry) is read whole.
                first = self.read_ahead and start != self._offered_from
                try:
                    staged = self._stage(
                        start, max(1, self.batch_max_bytes // _RAMP_START_DIVISOR) if first else self.batch_max_bytes
                    )
                except Exception:
                    self.telemetry.error("read")  # a write's failures are counted by the sink's write()
                    raise
            read = staged.read
            # A batch the reader cut at a limit has whole lines behind it: read on at once. Bytes left over
            # behind a batch that was not cut are a line still being written: no reason not to wait.
            consumed = sum(map(len, read.lines)) + len(read.lines)
            self._more_waiting = read.remaining_bytes > 0 and read.cut
            if not read.lines and read.checkpoint == start:
                self._caught_up_at = time.time()
                self.telemetry.lag(0, 0.0)
                self.sink.idle()
                return 0
            if staged.prepare_error is not None:
                self.telemetry.error("prepare")
                _log.warning("sink_prepare_failed", sink=self.sink.name, error=staged.prepare_error)
            again = start == self._offered_from  # the batch offered before, and refused: a retry
            reported = self._corrupt_reported if again else 0
            for error, line in staged.corrupt[reported:]:  # the reader hands a retry the same lines first
                self.corrupt_lines += 1
                self.telemetry.dropped("corrupt_line")
                _log.error(
                    "log_line_corrupt", sink=self.sink.name, error=error, line=line[:200].decode(errors="replace")
                )
            self._corrupt_reported = max(reported, len(staged.corrupt))
            prepared, events = staged.prepared, staged.events
            count = prepared.count if prepared is not None else len(events)
            redelivered = self._offered if again else 0
            self._offered_from, self._offered = start, max(redelivered, count)
            if self.read_ahead and self._more_waiting:
                next_bytes = min(self.batch_max_bytes, 2 * staged.max_bytes)
                self._ahead = self._pool().submit(self._stage, dict(read.checkpoint), next_bytes)
            try:
                self.sink.write(
                    Batch(events=events, checkpoint=read.checkpoint, redelivered=redelivered, prepared=prepared)
                )
            except Exception:
                self._report_stuck(read.lines, read.checkpoint, consumed)
                raise
            last_ts = prepared.last_ts if prepared is not None else (events[-1].ts if events else None)
            # Behind the batch now, not when it was read: a large batch takes a while to write, and the log grows.
            self._report_lag(last_ts, self.reader.bytes_after(read.checkpoint), consumed, len(read.lines))
            return len(read.lines) + read.skipped

    def _stage(self, start: Checkpoint, max_bytes: int) -> _Staged:
        """Read a batch from `start` and prepare it (sink rows, or events decoded line by line). No side effects:
        a batch read ahead may be thrown away."""
        read = self.reader.read(start, max_events=self.batch_max_events, max_bytes=max(1, max_bytes))
        staged = _Staged(start=start, read=read, prepared=None, max_bytes=max(1, max_bytes))
        if read.lines:
            try:
                staged.prepared = self.sink.prepare(read.lines)
            except Exception as exc:  # preparing is a shortcut: if it fails, decode line by line instead
                staged.prepare_error = f"{type(exc).__name__}: {exc}"
        if staged.prepared is None:
            for line in read.lines:
                try:
                    staged.events.append(decode(line))
                except DecodeError as exc:
                    if not is_erased(line):  # blanked by an older release's erase, which listed no segments
                        staged.corrupt.append((str(exc), line))
        return staged

    def _take_read_ahead(self, start: Checkpoint) -> _Staged | None:
        """The batch read ahead, if it starts at `start` (the last write succeeded) and found lines; else None.
        (Read while the log held only part of a line, it may have found none that are there now.)"""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        try:
            staged = ahead.result()
        except Exception as exc:  # read again on this thread, where the failure is reported as usual
            _log.warning("projector_read_ahead_failed", sink=self.sink.name, error=f"{type(exc).__name__}: {exc}")
            return None
        return staged if staged.start == start and staged.read.lines else None

    def _pool(self) -> ThreadPoolExecutor:
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"querylog-read-ahead-{self.sink.name}"
            )
        return self._ahead_pool

    def _end_read_ahead(self) -> None:
        with self._io_lock:
            self._ahead = None
            if self._ahead_pool is not None:
                self._ahead_pool.shutdown(wait=True, cancel_futures=True)
                self._ahead_pool = None

    def catch_up(self, timeout_s: float | None = None, *, retry: bool = False) -> int:
        """Run batches until the sink has everything in the log now. Returns lines consumed. A failed write
        raises, or with `retry` is offered again after the policy's backoff (until `timeout_s` or `stop`)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        total = 0
        while True:
            n = self.attempt() if retry else self.run_once()
            total += n or 0
            if n == 0 or (retry and self._stop.is_set()) or (deadline is not None and time.monotonic() > deadline):
                return total

    def attempt(self, *, wait: Callable[[float], object] | None = None) -> int | None:
        """`run_once`; if it fails, the failure is logged, the backoff waited out and the retry counted, and
        the answer is None. The one place a projection retries. `wait` sleeps the backoff (default: until the
        projector is stopped); a caller driving the projector from its own thread passes its stop's wait."""
        try:
            n = self.run_once()
        except Exception as exc:  # a sink failure must never kill the projector: log, wait, retry
            self.failures += 1
            delay = self.retry.delay(self.failures, self._rng, getattr(exc, "retry_after_s", None))
            _log.warning(
                "projector_write_failed",
                sink=self.sink.name,
                stage=getattr(exc, "stage", type(exc).__name__),
                error=str(exc),
                failures=self.failures,
                retry_in_s=round(delay, 2),
            )
            (wait or self._sleep)(delay)
            if not self._stop.is_set():
                self.telemetry.retried()
            return None
        self.failures = 0
        return n

    def _report_lag(self, last_ts: datetime | None, remaining_bytes: int, consumed: int, lines: int) -> None:
        """Lag after a batch of `lines` lines (`consumed` bytes, newlines included) with `remaining_bytes` behind."""
        if remaining_bytes <= 0 or last_ts is None:
            self._caught_up_at = time.time()
            self.telemetry.lag(0, 0.0)
            return
        behind_s = self._behind_s((datetime.now(UTC) - last_ts).total_seconds())
        self.telemetry.lag(_events_in(remaining_bytes, consumed, lines), behind_s)

    def _behind_s(self, event_age_s: float) -> float:
        """How far behind the sink is: the age of the oldest event it has not delivered, but no more than the time
        since it was last caught up (a backfill of last month's events arriving now is seconds behind, not a month)."""
        if self._caught_up_at is not None:
            event_age_s = min(event_age_s, time.time() - self._caught_up_at)
        return max(0.0, event_age_s)

    def _report_stuck(self, lines: Sequence[bytes], end: Checkpoint, consumed: int) -> None:
        """Lag while a write fails (a destination down): the batch and all behind it, as old as its oldest line;
        what is behind it counted again at each snapshot, as the log grows between two attempts."""
        oldest = next((t for t in map(line_time, lines) if t is not None), None)
        behind_s = self._behind_s(time.time() - oldest) if oldest is not None else 0.0
        reader, n = self.reader, len(lines)

        def waiting() -> int:
            return n + _events_in(reader.bytes_after(end), consumed, n)

        self.telemetry.lag(waiting(), behind_s, events_now=waiting)

    # -- background thread ------------------------------------------------------------------------
    def start(self) -> Projector:
        if self._thread is not None:
            raise RuntimeError(f"projector for {self.sink.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"querylog-projector-{self.sink.name}", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Ask for a batch now rather than at the next interval."""
        self._wake.set()

    def stop(self, *, drain_timeout_s: float | None = 10.0) -> None:
        """Stop the thread; with a drain timeout, first project what is in the log (if this one leads)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if drain_timeout_s is not None and self._holds_lock():
                self.catch_up(timeout_s=drain_timeout_s)
        except Exception as exc:  # shutting down: what is not projected stays in the log for the next start
            _log.warning("projector_drain_failed", sink=self.sink.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._end_read_ahead()
            self._release_lock()

    @property
    def leading(self) -> bool:
        return self._holds_lock()

    def try_lead(self) -> bool:
        """Take this projection's lock if no other process holds it (True if this projector now leads). The
        background thread does this itself; a one-off `catch_up` outside it must, so as not to run beside a
        leader."""
        return self._try_acquire()

    def _holds_lock(self) -> bool:
        return self.lock_path is None or self._lock_fh is not None

    def _try_acquire(self) -> bool:
        if self._holds_lock():
            return True
        assert self.lock_path is not None
        fh = try_lead(self.lock_path)
        if fh is None:
            return False
        try:
            self.sink.resume()  # from where the last leader stopped: it may have gone on long after this one started
        except Exception as exc:  # not leading, then: the next attempt reads it again
            fh.close()
            _log.warning("projector_resume_failed", sink=self.sink.name, error=f"{type(exc).__name__}: {exc}")
            return False
        self._lock_fh = fh
        self.has_led = True
        _log.info("projector_leading", sink=self.sink.name, pid=os.getpid())
        return True

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._try_acquire():
                self._stop.wait(self.standby_poll_s)
                continue
            n = self.attempt()
            if n is None or (n and self._more_waiting):
                continue  # retried after its backoff; or the reader cut the batch with more waiting: no pause
            self._wake.wait(self.interval_s)
            self._wake.clear()
