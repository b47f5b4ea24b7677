"""The projector: background batching, retry after failure, lag, and one leader per projection."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from querylog.logging.events import AnyEvent, QueryReceived
from querylog.logging.projection import Batch, FileCheckpointSink, Projector, SinkSendError
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.sinks import MemorySink


class FlakySink(FileCheckpointSink):
    name = "flaky"

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.stored: list[AnyEvent] = []
        self.done = threading.Event()

    def _send(self, events: Sequence[AnyEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise SinkSendError("server said 503")
        self.stored.extend(events)
        self.telemetry.sent(len(events))
        self.done.set()


def _write(log: EventLog, n: int) -> None:
    for i in range(n):
        log.append(QueryReceived(query_id=f"q-{i}", query_text="x"))
    log.flush()


def test_a_failing_sink_does_not_advance_and_catches_up_after(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 10)
        sink = FlakySink(tmp_path / "cp.json", failures=2).open()
        projector = Projector(LogReader(tmp_path / "log"), sink, interval_s=0.01)
        projector.start()
        assert sink.done.wait(timeout=30)
        projector.stop()
    assert [e.query_id for e in sink.stored] == [f"q-{i}" for i in range(10)]
    snap = sink.telemetry.snapshot()
    assert snap.retries == 2
    assert snap.errors == {"write": 2}
    assert snap.received == snap.sent == 10  # a batch offered three times was received once


def test_a_file_checkpoint_sink_resumes_after_restart(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 5)
        first = FlakySink(tmp_path / "cp.json", failures=0).open()
        Projector(LogReader(tmp_path / "log"), first).catch_up()
        _write(log, 3)
    second = FlakySink(tmp_path / "cp.json", failures=0).open()
    Projector(LogReader(tmp_path / "log"), second).catch_up()
    assert len(first.stored) == 5 and len(second.stored) == 3


def test_only_one_projector_per_lock_leads(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "memory.lock"
    with EventLog(tmp_path / "log") as log:
        _write(log, 4)
        a = Projector(
            LogReader(tmp_path / "log"), MemorySink().open(), lock_path=lock, interval_s=0.01, standby_poll_s=0.01
        )
        b = Projector(
            LogReader(tmp_path / "log"), MemorySink().open(), lock_path=lock, interval_s=0.01, standby_poll_s=0.01
        )
        assert a._try_acquire() and not b._try_acquire()
        a.stop(drain_timeout_s=5)  # releases the lock
        assert b._try_acquire()
        b.stop(drain_timeout_s=5)
    assert len(b.sink.events) == 4  # type: ignore[attr-defined]


def test_lag_is_reported_while_behind_and_zero_when_caught_up(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 100)
        sink = MemorySink().open()
        projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10)
        projector.run_once()
        assert projector.telemetry.snapshot().lag_events > 0
        projector.catch_up()
        assert projector.telemetry.snapshot().lag_events == 0


def test_batches_respect_the_event_limit(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 25)
        sink = MemorySink().open()
        projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10)
        assert [projector.run_once() for _ in range(4)] == [10, 10, 5, 0]


def test_stop_drains_what_is_in_the_log(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        sink = MemorySink().open()
        projector = Projector(LogReader(tmp_path / "log"), sink, interval_s=3600).start()
        _write(log, 7)
        projector.stop(drain_timeout_s=10)
    assert len(sink.events) == 7


def test_batch_is_a_value() -> None:
    b = Batch(events=[], checkpoint={"a": 1})
    assert b.checkpoint == {"a": 1}
