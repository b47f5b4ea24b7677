"""Small sinks: in memory (tests, the contract reference) and stdout (one structlog JSON line per event, or one
short console line per query for a person at a terminal)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import structlog

from querylog._format import rounded_ms, visible
from querylog.logging.codec import encode
from querylog.logging.events import EVENT_CLASSES, AnyEvent, QueryCompleted, QueryFailed, QueryReceived, level_of
from querylog.logging.forget import KEEP_S, ForgetList
from querylog.logging.metrics import FOLD_RULES, MetricsProjection, SnapshotOutdatedError
from querylog.logging.metrics_snapshot import (
    SNAPSHOT_FORMAT,
    MetricsSnapshot,
    covers,
    load_snapshot,
    publish_fold,
    write_snapshot,
)
from querylog.logging.projection import Batch, FileCheckpointSink, Sink
from querylog.logging.segments import Checkpoint
from querylog.logging.structured import bytes_out, console_logger, is_terminal, json_timestamp

__all__ = ["MemorySink", "MetricsSink", "StdoutSink", "StdoutStyle", "stdout_style"]

_log = structlog.get_logger("querylog.metrics")


class MemorySink(Sink):
    """Keeps every event in a list. Idempotent by event_id, like a real store should be."""

    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[AnyEvent] = []
        self._seen: set[str] = set()
        self._position: Checkpoint = {}

    def _write(self, batch: Batch) -> None:
        for event in batch.events:
            if event.event_id not in self._seen:
                self._seen.add(event.event_id)
                self.events.append(event)
        self._position = dict(batch.checkpoint)
        if batch.events:
            self.telemetry.sent(len(batch.events))

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)


StdoutStyle = Literal["json", "console"]


def stdout_style(setting: str, stream: TextIO | None = None) -> StdoutStyle:
    """``QUERYLOG_STDOUT_FORMAT`` resolved: ``auto`` is console on a terminal, JSON lines when piped or in a
    container (where a log collector reads them)."""
    if setting == "json":
        return "json"
    if setting == "console":
        return "console"
    return "console" if is_terminal(stream or sys.stdout) else "json"


def _fit(text: str, columns: int) -> str:
    """`text` on one line, cut and padded to `columns` terminal cells (Hangul and other wide characters take two);
    controls a terminal would obey shown escaped (`visible`)."""
    out, width = [], 0
    for ch in visible(" ".join(text.split())):
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if width + w > columns - 1:
            out.append("…")
            width += 1
            break
        out.append(ch)
        width += w
    return "".join(out) + " " * (columns - width)


#: The JSON echo writes at most this many bytes at once, in whole lines (a longer line alone): a pipe takes such a
#: write whole, so a line never interleaves with another writer's (the API process shares stdout with its child).
ECHO_WRITE_BYTES: Final = select.PIPE_BUF
#: Per event type: where its log encoding's fields start (past ``{"event_type":"…",``), and what its echo line
#: adds after them, up to the timestamp's value.
_ECHO_PARTS: Final = {
    tag: (len(f'{{"event_type":"{tag}",'), f',"event":"{tag}","level":"{level_of(tag)}","timestamp":"'.encode())
    for tag in EVENT_CLASSES
}


class StdoutSink(FileCheckpointSink):
    """The log echoed on stdout.

    ``json``: one JSON line per event, as the service's own structlog lines (``"event"`` holds the event type), for
    a collector that reads stdout.
    ``console``: one short line per query when it ends (the event's time, the question, latency, intent; a
    failure as an error with its type and stage), coloured on a terminal; a query's other events are not printed.
    """

    name = "stdout"
    QUESTION_COLUMNS = 44  # with the time, level and fields, a console line fits a 100-column terminal
    _PENDING_MAX = 10_000  # questions whose query has not ended yet; past this, the oldest are forgotten

    def __init__(self, checkpoint_path: Path, *, style: StdoutStyle = "json", stream: TextIO | None = None) -> None:
        super().__init__(checkpoint_path)
        self.style = style
        if style == "json":
            self._out = bytes_out(stream)
        else:
            self._logger = console_logger(stream, timestamp=False)
        self._questions: dict[str, str] = {}

    def _send(self, events: Sequence[AnyEvent]) -> None:
        if self.style == "json":
            self._echo_json(events)
        else:
            for event in events:
                self._console(event)
        self.telemetry.sent(len(events))

    def _echo_json(self, events: Sequence[AnyEvent]) -> None:
        """Each event as the JSON line a structlog call ``log.info(event_type, **fields)`` writes (the service's own
        log lines): the event's fields, then ``event`` (its type), ``level`` and ``timestamp`` (the batch's echo
        time). Cut from the event's log encoding rather than rendered by structlog call by call, which took a third
        of the projector process's CPU; written in whole lines, at most `ECHO_WRITE_BYTES` a write."""
        stamp = json_timestamp(None, "", {})["timestamp"].encode()
        chunk = bytearray()
        for event in events:
            tag = event.event_type
            cut, tail = _ECHO_PARTS[tag]
            line = b'{%b%b%b"}\n' % (encode(event)[cut:-1], tail, stamp)
            if chunk and len(chunk) + len(line) > ECHO_WRITE_BYTES:
                self._print(chunk)
                chunk = bytearray()
            chunk += line
        if chunk:
            self._print(chunk)

    def _print(self, data: bytearray) -> None:
        self._out.write(data)
        self._out.flush()

    def _console(self, event: AnyEvent) -> None:
        if isinstance(event, QueryReceived):
            if len(self._questions) >= self._PENDING_MAX:
                del self._questions[next(iter(self._questions))]
            self._questions[event.query_id] = event.query_text
            return
        if not isinstance(event, QueryCompleted | QueryFailed):
            return
        question = _fit(self._questions.pop(event.query_id, "") or event.query_id, self.QUESTION_COLUMNS)
        line: dict[str, Any] = {"timestamp": event.ts.astimezone().strftime("%H:%M:%S")}
        if event.latency_ms is not None:
            line["ms"] = rounded_ms(event.latency_ms)
        # Anyone who can reach the chat API or an ingest endpoint writes these: shown escaped, they cannot recolour,
        # retitle or reverse the operator's terminal.
        if event.intent:
            line["intent"] = visible(event.intent)
        if isinstance(event, QueryCompleted):
            self._logger.info(question, **line)
        else:
            stage = visible(event.stage) if event.stage is not None else None
            self._logger.error(question, **line, error=visible(event.error_type), stage=stage)


#: A fold that moved is snapshotted once it has been idle this long (`MetricsSink.idle`).
IDLE_SNAPSHOT_S: Final = 5.0
#: How often a publication the disk refused is tried again while the log is quiet (a batch tries at once).
PUBLISH_RETRY_S: Final = 5.0


class MetricsSink(Sink):
    """Feeds the metrics projection, over the whole log: in each API process (``QUERYLOG_PROJECTIONS=thread`` or
    ``none``), so any worker's /metrics shows the same totals, or in the one projector child elected to fold for
    all (``process``; see docs/metrics.md). With a `snapshot_path`, it starts from the newest snapshot of the fold and
    writes one every `snapshot_every_s` and on close (`logging/metrics_snapshot.py`): a restart then folds only
    what came after, and no counter goes backwards. With an `exposition_path`, it publishes the fold's families
    there (Prometheus text) once open and after each batch, for the API process that shows them
    (`MetricsProjection.mirror`; ``QUERYLOG_PROJECTIONS=process``); without `publish_each_batch`, with each snapshot
    only (the in-process folds of the other modes: nobody reads it then, but a restart into process mode shows
    it until the child publishes). A publication the disk refused is tried again while the log is quiet, every
    `PUBLISH_RETRY_S`."""

    name = "metrics"

    def __init__(
        self,
        projection: MetricsProjection,
        *,
        snapshot_path: Path | None = None,
        log_dir: Path | None = None,
        snapshot_every_s: float = 30.0,
        exposition_path: Path | None = None,
        publish_each_batch: bool = True,
        forget: ForgetList | None = None,
        history: Callable[[], tuple[Checkpoint, Iterable[Sequence[AnyEvent]]] | None] | None = None,
        erased: Callable[[], bool] | None = None,
        forced_trim_at: Callable[[], float | None] | None = None,
    ) -> None:
        super().__init__()
        self.projection = projection
        #: When the log was last trimmed over its cap past what the fold's snapshot held (Unix seconds), if ever: a
        #: snapshot written before then misses events the log no longer holds (see `_restore`).
        self.forced_trim_at = forced_trim_at
        #: Whether `querylog erase` ever blanked events in this log: a fold from its start then counts fewer than the
        #: snapshot it would have started from (counters never go down; see `_restore`).
        self.erased = erased
        #: Without a usable snapshot, where the events the log no longer holds are (the lake, once the log is
        #: trimmed): the log position they reach, and them, a batch at a time; None when the log holds them all.
        self.history = history
        self.snapshot_path = snapshot_path
        #: The queries `querylog erase` removed while this fold runs: forgotten before each batch and snapshot.
        self.forget = forget
        self.log_dir = log_dir
        self.snapshot_every_s = snapshot_every_s
        self.exposition_path = exposition_path
        self.publish_each_batch = publish_each_batch
        self._publish_failing = False
        self._publish_failed_at = 0.0
        self._snapshot_failures = 0  # in a row: logged at the first, then once it works again
        self._position: Checkpoint = {}
        self._last_snapshot = time.monotonic()
        self._dirty = False
        self._fold_lock = threading.RLock()
        self._last_write = 0.0
        self._erased: set[str] = set()  # what the forget list named in the last KEEP_S
        self._erased_at = 0.0
        #: Events the loaded snapshot had folded (0: started from nothing).
        self.restored_events = 0

    def _open(self) -> None:
        self._restore()
        self._forget_erased()
        self.publish()  # the API shows the totals the snapshot holds while the rest of the log is folded

    def _restore(self) -> None:
        if self.snapshot_path is None:
            return
        snapshot = load_snapshot(self.snapshot_path)
        if snapshot is None:
            self._restore_history()
            self._said_erased("no snapshot (deleted, or not readable)")
            return
        mine = self.projection.config()
        if _without_prices(snapshot.config) != _without_prices(mine):
            self.telemetry.fell_back("snapshot_config_changed")
            _log.warning(
                "metrics_snapshot_ignored",
                reason="the namespace, buckets or staleness changed since it was written: folding the log again",
                path=str(self.snapshot_path),
            )
            self._restore_history()
            self._said_erased("the snapshot was written with other settings")
            return
        # The log was trimmed over its cap past this snapshot (a fold had read on, in a process that then died):
        # started from, the counters would miss those events for good, below what was served. The lake has them.
        if self._trimmed_past(snapshot) and self._restore_history(
            "snapshot_behind_forced_trim",
            "the snapshot is older than a trim over the log's cap (QUERYLOG_LOG_MAX_GB) that deleted events it had "
            "not folded",
        ):
            self._said_erased("the log was trimmed past the snapshot")
            return
        if snapshot.config.get("prices") != mine.get("prices"):
            # Counters never go back: the cost counted so far keeps the prices it was counted with, and new
            # responses are priced with the new table (the lake re-prices history: querylog replay parquet).
            _log.info("metrics_snapshot_prices_changed", was=snapshot.config.get("prices"), now=mine.get("prices"))
        try:
            self._start_from(snapshot)
        except SnapshotOutdatedError as exc:  # an older release's, without what this one folds: from the log again
            self.telemetry.fell_back("snapshot_outdated")
            # Set aside, not left to hold the log's trimming at the old end (and to refuse the new fold's snapshots).
            kept = self.snapshot_path.with_name(self.snapshot_path.name + ".outdated")
            with contextlib.suppress(OSError):
                os.replace(self.snapshot_path, kept)
            _log.warning("metrics_snapshot_ignored", reason=f"{exc}: folding the log again", path=str(kept))
            self._restore_history()
            self._said_erased("the snapshot was an older release's")

    def _trimmed_past(self, snapshot: MetricsSnapshot) -> bool:
        """Whether a trim over the log's cap deleted, after `snapshot` was written, events it had not folded."""
        forced_at = self.forced_trim_at() if self.forced_trim_at is not None else None
        return forced_at is not None and forced_at > snapshot.written_at

    def _said_erased(self, why: str) -> None:
        """A fold started over (`why`) in a log erasures blanked events in: its counters start lower than those
        served before, which Prometheus reads as a reset. Counted and logged."""
        if self.erased is None or not self.erased():
            return
        self.telemetry.fell_back("snapshot_missing_after_erasure")
        _log.warning(
            "metrics_folded_after_erasure",
            reason=f"{why}: the log is folded again without the events `querylog erase` blanked in it, so the "
            "counters start lower than they were served (Prometheus reads a reset; docs/privacy.md)",
        )

    def _start_from(self, snapshot: MetricsSnapshot) -> None:
        if snapshot.rules < FOLD_RULES:  # folded under older rules (a newer release's, after a rollback, is kept)
            raise SnapshotOutdatedError(
                f"it was folded under rules {snapshot.rules}; this release folds under {FOLD_RULES}"
            )
        self.projection.restore_state(snapshot.state)
        self._position = dict(snapshot.checkpoint)
        self.restored_events = sum(snapshot.state["events"].values())
        _log.info("metrics_snapshot_loaded", events=self.restored_events, written_at=snapshot.written_at)

    def _resume(self) -> None:
        """Taking the lead from another process, which folded on and snapshotted as it went: from its newest
        snapshot when that is further on than this fold, which stood by since it opened. The log between the two
        may be trimmed by now (housekeeping goes by the snapshot): folding on from here would miss it for good."""
        snapshot = load_snapshot(self.snapshot_path) if self.snapshot_path is not None else None
        if (
            snapshot is None
            or _without_prices(snapshot.config) != _without_prices(self.projection.config())  # said at open
            or snapshot.checkpoint == self._position
            or not covers(snapshot.checkpoint, self._position, self.log_dir)
            or self._trimmed_past(snapshot)  # this fold went on from the lake instead (`_restore`)
        ):
            return
        with self._fold_lock:
            try:
                self._start_from(snapshot)
            except SnapshotOutdatedError:  # an older release's (set aside at open): this fold goes on from here
                return
            self._forget_erased()
        self.publish()

    def _restore_history(
        self,
        reason: str = "snapshot_missing_log_trimmed",
        why: str = "no usable snapshot and the log was trimmed",
    ) -> bool:
        """No snapshot to start from (`why`): fold what the log no longer holds from `history` (the lake), so that a
        trimmed log does not start the counters from the events it still has. Counted as `reason` and logged, once.
        Whether it did (the log was trimmed and the lake says how far it reaches)."""
        found = self.history() if self.history is not None else None
        if found is None:
            return False
        checkpoint, batches = found
        events = 0
        for batch in batches:
            self.projection.apply(batch)
            events += len(batch)
        self._position = dict(checkpoint)
        self.restored_events = events
        # Worth a snapshot of its own: without one, an idle server stopped now leaves none, and its next start folds
        # the lake again (and holds back the log's trimming meanwhile).
        self._dirty = events > 0
        self.telemetry.fell_back(reason)
        _log.warning(
            "metrics_restored_from_lake",
            events=events,
            reason=f"{why}: the lake's events are folded, then the log from where the lake reaches (days past the "
            "lake's retention are not counted)",
        )
        return True

    def _forget_erased(self) -> None:
        """Forget the queries an erase listed since this fold last looked, and remember them for `KEEP_S`."""
        if self.forget is None:
            return
        try:
            erased = self.forget.new()
        except OSError as exc:  # the state directory's disk: the next batch or idle round tries again
            self.telemetry.error("forget")
            _log.error("metrics_forget_unreadable", path=str(self.forget.path), error=str(exc))
            return
        now = time.monotonic()
        if self._erased and now - self._erased_at > KEEP_S:
            self._erased = set()
        if erased:
            self.projection.forget_queries(erased)
            self._erased.update(erased)
            self._erased_at = now
            self._dirty = True  # the snapshot on disk was cleaned by the erase; this one must not put them back

    def _write(self, batch: Batch) -> None:
        with self._fold_lock:  # a snapshot another thread takes sees the state and its position together
            self._forget_erased()
            self.projection.apply(batch.events)
            self._last_write = time.monotonic()
            if self._erased:  # a batch read before the erase blanked the log brings an erased query back: not here
                back = {e.query_id for e in batch.events if e.query_id in self._erased}
                if back:
                    self.projection.forget_queries(back)
            self._position = dict(batch.checkpoint)
            if batch.events:
                self.telemetry.sent(len(batch.events))
                self._dirty = True
                # Each batch: the projector reads one every half second at most, or a large one while catching up.
                if self.publish_each_batch:
                    self.publish()
            if self._dirty and time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
                self.snapshot()

    def idle(self) -> None:
        """While the log is quiet: erasures are read within a poll, and a fold that moved is snapshotted once it
        has been idle `IDLE_SNAPSHOT_S` (its hold on the log then reaches what it read, and its memory no longer
        differs from the snapshot an erase cleans)."""
        with self._fold_lock:
            self._forget_erased()
            now = time.monotonic()
            if self._publish_failing and now - self._publish_failed_at >= PUBLISH_RETRY_S:
                self.publish()  # the disk refused the last one: the API would show it until the next batch
            if self._dirty and min(now - self._last_write, now - self._last_snapshot) >= IDLE_SNAPSHOT_S:
                self.snapshot()  # at most every IDLE_SNAPSHOT_S, a disk that refuses it included

    def snapshot_if_moved(self) -> bool:
        """A snapshot now if the fold moved since the last one: housekeeping asks before it trims, from its own
        thread, so that the snapshot (the metrics' hold on the log) reaches what the fold has read."""
        with self._fold_lock:
            self._forget_erased()
            return self._dirty and self.snapshot()

    def _close(self) -> None:
        if self._dirty:
            self.snapshot()

    def publish(self) -> bool:
        """Write the fold's families to `exposition_path` now. False without a path, when the disk refused, or
        when the fold there covers more of the log (`publish_fold`: one taking over from another process)."""
        if self.exposition_path is None:
            return False
        try:
            published = publish_fold(
                self.exposition_path, self.projection.fold_exposition(), self._position, log_dir=self.log_dir
            )
        except OSError as exc:  # the API shows the last one meanwhile; the next batch (or idle poll) tries again
            self.telemetry.error("publish")
            if not self._publish_failing:  # one line until it works again, not one a batch
                _log.error("metrics_publish_failed", path=str(self.exposition_path), error=str(exc))
            self._publish_failing, self._publish_failed_at = True, time.monotonic()
            return False
        if self._publish_failing:
            _log.info("metrics_publish_recovered", path=str(self.exposition_path))
            self._publish_failing = False
        return published

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)

    def snapshot(self) -> bool:
        """Write a snapshot of the fold now (False without a path, or when a newer one is there already)."""
        if self.snapshot_path is None:
            return False
        with self._fold_lock:
            return self._snapshot()

    def _snapshot(self) -> bool:
        assert self.snapshot_path is not None
        self._forget_erased()
        self._last_snapshot = time.monotonic()
        snapshot = MetricsSnapshot(
            format=SNAPSHOT_FORMAT,
            config=self.projection.config(),
            checkpoint=dict(self._position),
            state=self.projection.export_state(),
            written_at=time.time(),
            rules=FOLD_RULES,
        )
        try:
            written = write_snapshot(self.snapshot_path, snapshot, log_dir=self.log_dir)
        except OSError as exc:  # a full disk must not stop the fold: the next snapshot tries again
            self.telemetry.error("snapshot")
            if not self._snapshot_failures:  # one line until it works again (it is tried every few seconds)
                _log.error("metrics_snapshot_failed", error=str(exc), path=str(self.snapshot_path))
            self._snapshot_failures += 1
            return False
        if self._snapshot_failures:
            _log.info("metrics_snapshot_recovered", failed_before=self._snapshot_failures)
            self._snapshot_failures = 0
        self._dirty = False
        if not self.publish_each_batch:
            self.publish()
        return written


def _without_prices(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "prices"}
