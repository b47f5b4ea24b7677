"""What each projection reports about itself: received, sent, dropped by reason, retries, lag, batch sizes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import structlog

__all__ = ["FileTelemetry", "SinkTelemetry", "TelemetrySnapshot", "write_snapshot"]

_log = structlog.get_logger("querylog.telemetry")


@dataclass(frozen=True, slots=True)
class TelemetrySnapshot:
    """A consistent copy of one sink's counters, read at scrape time."""

    sink: str
    received: int
    sent: int
    dropped: dict[str, int]
    retries: int
    errors: dict[str, int]
    lag_events: int
    lag_seconds: float
    batches: int
    batch_events_total: int
    batch_bytes_total: int
    #: When these counters were read (Unix seconds): now for a projection in this process; for one that another
    #: process runs, when that process last published them (0: never).
    reported_at: float = 0.0
    #: Batches (or events) a fast path declined and the careful path handled instead, by reason.
    fallbacks: dict[str, int] = field(default_factory=dict)
    #: Whether the lag is known: False for a projection another process runs that has published nothing readable
    #: (its lag is then no 0, but unknown: /metrics leaves the lag series out, /healthz says null).
    lag_known: bool = True


@dataclass
class SinkTelemetry:
    """Counters one projection keeps, as Vector's component spec asks: telemetry for a batch equals telemetry
    for its events. Thread-safe; the metrics projection exposes them as ``querylog_sink_*`` series."""

    sink: str
    clock: Callable[[], float] = field(default=time.time, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _received: int = 0
    _sent: int = 0
    _dropped: Counter[str] = field(default_factory=Counter)
    _retries: int = 0
    _errors: Counter[str] = field(default_factory=Counter)
    _lag_events: int = 0
    #: When (Unix seconds, by `clock`) the oldest event not delivered yet was written; None when none is waiting.
    _lag_since: float | None = None
    #: Counts the events waiting again at each snapshot (a projection waiting out an outage), when set.
    _lag_events_now: Callable[[], int] | None = None
    _batches: int = 0
    _batch_events_total: int = 0
    _batch_bytes_total: int = 0
    _fallbacks: Counter[str] = field(default_factory=Counter)
    #: What `delivered` counted: events, batches, bytes.
    _delivered: tuple[int, int, int] = (0, 0, 0)

    def received(self, n: int) -> None:
        with self._lock:
            self._received += n

    def sent(self, n: int, *, nbytes: int = 0) -> None:
        with self._lock:
            self._sent += n
            self._batches += 1
            self._batch_events_total += n
            self._batch_bytes_total += nbytes

    def delivered(self, n: int, *, nbytes: int = 0) -> None:
        """`received` and `sent` in one step, for a sink that delivers each batch as it takes it in (the log).

        Called on every query's flush, so it takes no lock: its callers make one call at a time (the log makes it
        under its write lock), and its counts are one tuple, replaced whole, that `snapshot` reads at once."""
        events, batches, nbytes_total = self._delivered
        self._delivered = (events + n, batches + 1, nbytes_total + nbytes)

    def dropped(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += n

    def retried(self, n: int = 1) -> None:
        with self._lock:
            self._retries += n

    def error(self, stage: str) -> None:
        with self._lock:
            self._errors[stage] += 1

    def fell_back(self, reason: str, n: int = 1) -> bool:
        """Count a fallback from a fast path to the careful one; True the first time this reason is seen (the
        caller logs it then, once, rather than at every batch)."""
        with self._lock:
            first = reason not in self._fallbacks
            self._fallbacks[reason] += n
            return first

    def lag(self, events: int, seconds: float, *, events_now: Callable[[], int] | None = None) -> None:
        """`events` wait to be delivered, the oldest `seconds` old now. The age goes on growing at every snapshot
        until the next report: a projection waiting out a destination's outage shows its lag as it is, not as it
        was at the last failed write; with `events_now`, so does the count (called at each snapshot)."""
        with self._lock:
            self._lag_events = events
            self._lag_since = self.clock() - seconds if events else None
            self._lag_events_now = events_now if events else None

    def snapshot(self) -> TelemetrySnapshot:
        delivered, batches, nbytes = self._delivered
        if (count := self._lag_events_now) is not None:
            with contextlib.suppress(OSError):  # the log's directory unreadable now: the count last reported
                events = count()
                with self._lock:
                    if self._lag_events_now is count:  # not reported afresh meanwhile
                        self._lag_events = events
        with self._lock:
            return TelemetrySnapshot(
                sink=self.sink,
                received=self._received + delivered,
                sent=self._sent + delivered,
                dropped=dict(self._dropped),
                retries=self._retries,
                errors=dict(self._errors),
                lag_events=self._lag_events,
                lag_seconds=max(0.0, self.clock() - self._lag_since) if self._lag_since is not None else 0.0,
                batches=self._batches + batches,
                batch_events_total=self._batch_events_total + delivered,
                batch_bytes_total=self._batch_bytes_total + nbytes,
                reported_at=time.time(),
                fallbacks=dict(self._fallbacks),
            )


def write_snapshot(telemetry: SinkTelemetry, path: Path) -> None:
    """Publish `telemetry` as JSON at `path` (replaced atomically), for a `FileTelemetry` in another process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(asdict(telemetry.snapshot())))
    tmp.replace(path)


class FileTelemetry:
    """A sink's counters as another process publishes them (`write_snapshot`): what the API's /metrics shows for
    projections that run in `querylog project`. Read afresh at every scrape; zeros until the first publication.

    `reported_at` says when they were published. Until a first publication it is when this reader was made
    (the API's start), so the age of the report grows from there if no process runs the projection."""

    def __init__(self, sink: str, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.path = path
        self._since = clock()
        self._warned = False

    def snapshot(self) -> TelemetrySnapshot:
        try:
            data = self.path.read_bytes()
        except OSError:  # nothing published yet
            return dataclasses.replace(SinkTelemetry(self.sink).snapshot(), reported_at=self._since, lag_known=False)
        try:
            published = msgspec.json.decode(data, type=TelemetrySnapshot)
        except msgspec.DecodeError as exc:
            # Written by a querylog that counts differently (or damaged): no counters to show, but a process
            # that keeps publishing is alive, and its file's time says so.
            if not self._warned:
                self._warned = True
                _log.warning("telemetry_unreadable", sink=self.sink, path=str(self.path), error=str(exc))
            return dataclasses.replace(
                SinkTelemetry(self.sink).snapshot(), reported_at=self._file_time(), lag_known=False
            )
        self._warned = False
        if published.reported_at <= 0:  # written before counters carried their time: the file's own
            return dataclasses.replace(published, reported_at=self._file_time())
        return published

    def _file_time(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return self._since
