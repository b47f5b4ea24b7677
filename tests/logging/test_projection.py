"""The projector: background batching, retry after failure, lag, and one leader per projection."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from querylog.logging.codec import encode
from querylog.logging.events import AnyEvent, QueryReceived
from querylog.logging.projection import (
    Batch,
    CheckpointFile,
    FileCheckpointSink,
    Prepared,
    Projector,
    RetryPolicy,
    Sink,
    SinkSendError,
)
from querylog.logging.segments import Checkpoint, EventLog, LogReader
from querylog.logging.sinks import MemorySink
from querylog.logging.time_order import TimeOrderedReader


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


def test_a_backfill_of_old_events_is_no_lag_of_months_while_it_is_delivered_or_stuck(tmp_path: Path) -> None:
    """A producer backfilling last month's events into a caught-up projection read as a lag of a month (the alert
    on lag_seconds fired at once): the lag counts from when the projection was last caught up, at most."""
    month_ago = datetime.now(UTC) - timedelta(days=30)
    sink = FlakySink(tmp_path / "cp.json", failures=0).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10)
    with EventLog(tmp_path / "log") as log:
        log.append(QueryReceived(query_id="now", query_text="x"))
    assert projector.catch_up() == 1  # caught up
    with EventLog(tmp_path / "log") as log:  # the backfill
        for i in range(30):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="x", ts=month_ago + timedelta(seconds=i)))
    assert projector.run_once() == 10  # delivering: twenty behind
    assert sink.telemetry.snapshot().lag_events == 20
    assert sink.telemetry.snapshot().lag_seconds < 60
    sink.failures = 1  # the destination goes down meanwhile
    with pytest.raises(SinkSendError):
        projector.run_once()
    snap = sink.telemetry.snapshot()
    assert snap.lag_events == 20 and snap.lag_seconds < 60  # behind since a moment ago, not since last month
    assert projector.catch_up() == 20
    assert sink.telemetry.snapshot().lag_seconds == 0


def test_while_writes_fail_the_lag_counts_the_whole_backlog_and_ages_from_its_oldest_event(tmp_path: Path) -> None:
    """A destination down must show as lag growing (the alert on lag_seconds), not as the last good figure."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with EventLog(tmp_path / "log") as log:
        for i in range(30):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="x", ts=hour_ago + timedelta(seconds=i)))
    sink = FlakySink(tmp_path / "cp.json", failures=1).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10)
    with pytest.raises(SinkSendError):
        projector.run_once()
    snap = sink.telemetry.snapshot()
    assert snap.lag_events == 30  # the batch that failed and the twenty behind it
    assert 3590 < snap.lag_seconds < 3700  # as old as the oldest event not delivered
    with EventLog(tmp_path / "log") as log:  # more arrive while the projection waits out its backoff
        for i in range(30, 50):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="x", ts=hour_ago + timedelta(seconds=i)))
    assert sink.telemetry.snapshot().lag_events == 50  # counted at the snapshot, not frozen at the last attempt
    assert projector.catch_up() == 50
    assert sink.telemetry.snapshot().lag_events == 0


def test_a_checkpoint_the_disk_refuses_fails_the_write_at_stage_checkpoint_and_the_batch_comes_again(
    tmp_path: Path,
) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 4)
    sink = FlakySink(tmp_path / "state" / "cp.json", failures=0).open()
    (tmp_path / "state").write_text("a file where the checkpoint's folder should be")
    projector = Projector(LogReader(tmp_path / "log"), sink)
    with pytest.raises(SinkSendError, match=r"checkpoint .*cp\.json not saved") as refused:
        projector.catch_up()
    assert refused.value.stage == "checkpoint"
    assert sink.telemetry.snapshot().errors == {"checkpoint": 1}
    end = LogReader(tmp_path / "log").read({}).checkpoint
    assert sink.checkpoint() == end  # sent: this process does not send the batch again
    assert projector.catch_up() == 0  # the disk still refuses: nothing new to send, nothing sent twice
    (tmp_path / "state").unlink()
    assert projector.catch_up() == 0  # the log is quiet: the position is saved now
    assert len(sink.stored) == 4 and sink.telemetry.snapshot().sent == 4
    assert CheckpointFile(tmp_path / "state" / "cp.json").load() == end


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


def test_the_lag_after_a_batch_counts_what_arrived_while_it_was_written(tmp_path: Path) -> None:
    """A batch of 100,000 events takes seconds to write: /healthz said lag 0 while the lake was 19,000 behind."""

    class SlowSink(MemorySink):
        arriving = 15  # while the first batch is written

        def _write(self, batch: Batch) -> None:
            _write(log, self.arriving)
            self.arriving = 0
            super()._write(batch)

    with EventLog(tmp_path / "log") as log:
        _write(log, 10)
        projector = Projector(LogReader(tmp_path / "log"), SlowSink().open())
        assert projector.run_once() == 10
        assert projector.telemetry.snapshot().lag_events == 15
        assert projector.catch_up() == 15
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


# -- read-ahead ---------------------------------------------------------------------------------------------


class RecordingSink(Sink):
    """Stores query ids in order; notes the thread of every `prepare` call; fails the writes it is told to."""

    name = "recording"

    def __init__(self, fail_writes: Sequence[int] = (), prepare_raises: BaseException | None = None) -> None:
        super().__init__()
        self.prepare_raises = prepare_raises
        self.written = threading.Event()
        self.stored: list[str] = []
        self.batch_sizes: list[int] = []
        self.prepare_threads: list[str] = []
        self.fail_writes = set(fail_writes)
        self.writes = 0
        self._position: Checkpoint = {}

    def prepare(self, lines: Sequence[bytes]) -> Prepared | None:
        self.prepare_threads.append(threading.current_thread().name)
        if self.prepare_raises is not None:
            raise self.prepare_raises
        return None  # the projector decodes

    def _write(self, batch: Batch) -> None:
        self.writes += 1
        if self.writes in self.fail_writes:
            raise SinkSendError(f"write {self.writes} refused")
        self.stored.extend(e.query_id for e in batch.events)
        self.batch_sizes.append(len(batch.events))
        self._position = dict(batch.checkpoint)
        self.telemetry.sent(len(batch.events))
        self.written.set()

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("querylog-read-ahead-recording")]


def test_read_ahead_prepares_the_next_batch_on_its_own_thread_and_keeps_order(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 100)
    sink = RecordingSink().open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10, read_ahead=True)
    assert projector.catch_up() == 100
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(100)]
    assert sink.batch_sizes == [10] * 10
    # The first batch is read on the caller's thread; the other nine were read while the previous one was written.
    assert sum(name.startswith("querylog-read-ahead-recording") for name in sink.prepare_threads) == 9
    snap = sink.telemetry.snapshot()
    assert snap.received == snap.sent == 100
    assert _read_ahead_threads() == []  # stop() ends the read-ahead thread


def test_a_failed_write_throws_the_read_ahead_away_and_offers_the_batch_again(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 50)
    sink = RecordingSink(fail_writes=[2, 3]).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10, read_ahead=True)
    with pytest.raises(SinkSendError, match="write 2"):
        projector.catch_up()
    with pytest.raises(SinkSendError, match="write 3"):
        projector.catch_up()  # the batch read ahead past the failed one was not taken
    assert sink.checkpoint() == LogReader(tmp_path / "log").read({}, max_events=10).checkpoint
    assert projector.catch_up() == 40
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(50)]  # nothing skipped, nothing twice
    snap = sink.telemetry.snapshot()
    assert snap.received == snap.sent == 50  # a batch offered three times was received once


def test_batches_start_small_and_double_up_to_full_size_so_the_pipeline_starts_sooner(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 600)
    segment = next((tmp_path / "log").glob("*.jsonl"))
    line_bytes = segment.stat().st_size // 600
    sink = RecordingSink().open()
    projector = Projector(
        LogReader(tmp_path / "log"), sink, batch_max_events=1000, batch_max_bytes=80 * line_bytes, read_ahead=True
    )
    projector.catch_up()
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(600)]
    sizes = sink.batch_sizes
    # About 10, 20, 40, then 80 lines a batch (the budget is in bytes, and the lines' lengths differ a little).
    assert 6 <= sizes[0] <= 12
    assert all(later <= 2 * earlier + 2 for earlier, later in itertools.pairwise(sizes))
    assert sizes[1] > sizes[0] and sizes[2] > sizes[1]
    assert len(sizes) >= 6 and all(70 <= size <= 90 for size in sizes[3:-1])


def test_the_ramp_goes_on_over_writers_whose_times_do_not_overlap(tmp_path: Path) -> None:
    # Three workers' segments, one after another in time (a backlog across segment rolls): the Loki projection's
    # time-ordered reader takes a share of each and holds back lines past the oldest one's horizon, so a batch
    # it cuts holds well under half its budget. It is still cut at a limit, with whole lines behind it.
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    for k in range(3):
        lines = (
            encode(QueryReceived(query_id=f"q-{i}", query_text="x", ts=t0 + timedelta(seconds=i)))
            for i in range(k * 3000, (k + 1) * 3000)
        )
        (log_dir / f"000{k}-w{k}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    sink = RecordingSink().open()
    projector = Projector(
        TimeOrderedReader(log_dir), sink, batch_max_events=50_000, batch_max_bytes=3 << 20, read_ahead=True
    )
    projector.catch_up()
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(9000)]
    sizes = sink.batch_sizes
    assert sizes[1] >= 1.5 * sizes[0] and sizes[2] >= 1.5 * sizes[1], sizes


def _log_with_a_corrupt_line(log_dir: Path, before: int, after: int) -> None:
    """`before` events q-0…, a line that is no event, then `after` events more."""
    with EventLog(log_dir) as log:
        _write(log, before)
        segment = log.segment
        assert segment is not None
        with segment.open("ab") as fh:
            fh.write(b'{"event_type": "not an event"}\n')
        for i in range(before, before + after):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="x"))
        log.flush()


def test_a_corrupt_line_is_counted_once_even_when_its_read_ahead_is_thrown_away(tmp_path: Path) -> None:
    _log_with_a_corrupt_line(tmp_path / "log", 30, 30)
    # The third write fails while the batch holding the corrupt line is being read ahead: that read is thrown
    # away, and the line is counted when its batch is written, once.
    sink = RecordingSink(fail_writes=[3]).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10, read_ahead=True)
    with pytest.raises(SinkSendError):
        projector.catch_up()
    assert projector.corrupt_lines == 0
    projector.catch_up()
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(60)]
    assert projector.corrupt_lines == 1
    assert sink.telemetry.snapshot().dropped == {"corrupt_line": 1}


def test_a_corrupt_line_in_a_batch_the_sink_refuses_again_and_again_is_counted_once(tmp_path: Path) -> None:
    """Each retry of a batch holding one corrupt line counted it again: a Loki that was down read 22 drops for one
    line, and the drop alert fired on."""
    _log_with_a_corrupt_line(tmp_path / "log", 5, 5)
    sink = RecordingSink(fail_writes=[1, 2, 3]).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=100, read_ahead=True)
    for _ in range(3):  # the sink down: the batch offered again each time
        with pytest.raises(SinkSendError):
            projector.catch_up()
    projector.catch_up()
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(10)]
    assert projector.corrupt_lines == 1
    assert sink.telemetry.snapshot().dropped == {"corrupt_line": 1}


def test_the_background_loop_does_not_pause_between_batches_cut_by_size(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 300)
    segment = next((tmp_path / "log").glob("*.jsonl"))
    sink = RecordingSink().open()
    # Batches of about 20 lines by size; an hour between batches unless more is waiting.
    projector = Projector(
        LogReader(tmp_path / "log"),
        sink,
        interval_s=3600,
        batch_max_bytes=20 * segment.stat().st_size // 300,
        read_ahead=True,
    ).start()
    deadline = time.monotonic() + 30
    while len(sink.stored) < 300 and time.monotonic() < deadline:
        sink.written.wait(1)
        sink.written.clear()
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(300)]
    assert len(sink.batch_sizes) > 10


def test_a_prepare_that_raises_falls_back_to_decoding_and_is_counted(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 30)
    sink = RecordingSink(prepare_raises=ValueError("a bug in a fast path")).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, batch_max_events=10, read_ahead=True)
    assert projector.catch_up() == 30
    projector.stop(drain_timeout_s=None)
    assert sink.stored == [f"q-{i}" for i in range(30)]
    assert sink.telemetry.snapshot().errors == {"prepare": 3}


def test_a_read_ahead_that_found_only_part_of_a_line_is_read_again(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        _write(log, 10)
        segment = log.segment
        assert segment is not None
    whole = segment.stat().st_size
    full_line = encode(QueryReceived(query_id="q-10", query_text="x")) + b"\n"
    with segment.open("ab") as fh:  # a writer caught mid-line
        fh.write(full_line[:15])
    sink = RecordingSink().open()
    # The first batch's byte budget (an eighth of the whole) ends inside the partial line: the reader cannot
    # tell a whole line from part of one there, so it says it was cut, and the next batch is read ahead.
    projector = Projector(LogReader(log_dir), sink, batch_max_bytes=8 * (whole + 5), read_ahead=True)
    assert projector.run_once() == 10
    assert projector._ahead is not None
    projector._ahead.result()  # the read-ahead has run, and found only the start of a line
    with segment.open("ab") as fh:  # the writer finishes its line
        fh.write(full_line[15:])
    assert projector.run_once() == 1  # read again, not taken as "nothing new"
    projector.stop(drain_timeout_s=None)
    assert sink.stored[-1] == "q-10"


def test_stop_survives_a_drain_that_raises_and_releases_everything(tmp_path: Path) -> None:
    class BrokenSink(RecordingSink):
        def _write(self, batch: Batch) -> None:
            raise RuntimeError("not a SinkError")

    with EventLog(tmp_path / "log") as log:
        _write(log, 30)
    lock = tmp_path / "locks" / "broken.lock"
    projector = Projector(
        LogReader(tmp_path / "log"), BrokenSink().open(), lock_path=lock, batch_max_events=10, read_ahead=True
    )
    assert projector._try_acquire()
    projector.stop(drain_timeout_s=5)  # logs the failure; does not raise
    assert not projector.leading and _read_ahead_threads() == []
    other = Projector(LogReader(tmp_path / "log"), MemorySink().open(), lock_path=lock)
    assert other._try_acquire()  # the lock was released
    other.stop(drain_timeout_s=None)


def test_the_retry_policy_backs_off_as_promtail_does_and_honours_retry_after() -> None:
    policy, rng = RetryPolicy(), random.Random(3)
    for failures in range(1, 12):
        low = min(30.0, 0.5 * 2 ** (failures - 1))
        assert low <= policy.delay(failures, rng) <= min(30.0, 2 * low)
    assert policy.delay(1, rng, retry_after_s=42) == 42  # a server's wish beyond the backoff's cap...
    assert policy.delay(1, rng, retry_after_s=10_000) == 300  # ...up to five minutes
    assert 0.5 <= policy.delay(1, rng, retry_after_s=0) <= 1
    with pytest.raises(ValueError, match="min_backoff_s <= max_backoff_s"):
        RetryPolicy(min_backoff_s=5, max_backoff_s=1)


def test_stopping_a_projector_ends_its_wait_between_retries(tmp_path: Path) -> None:
    with EventLog(tmp_path / "log") as log:
        _write(log, 1)
    sink = FlakySink(tmp_path / "cp.json", failures=10**6).open()
    projector = Projector(LogReader(tmp_path / "log"), sink, retry=RetryPolicy(min_backoff_s=3600, max_backoff_s=3600))
    projector.start()
    while projector.failures == 0:
        time.sleep(0.01)  # polling for the first failure: the test waits for a state, not for a result
    started = time.monotonic()
    projector.stop(drain_timeout_s=None)
    assert time.monotonic() - started < 60  # an hour's wait cut short
    assert sink.telemetry.snapshot().errors == {"write": 1} and sink.telemetry.snapshot().retries == 0
