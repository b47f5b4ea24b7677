"""The event log: append, read, roll, torn tails, crashes, disk errors."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from querylog.logging import codec
from querylog.logging.events import QueryReceived, SearchCompleted, prechecked
from querylog.logging.segments import EventLog, LogClosedError, LogReader, repair, segment_paths


def _event(i: int) -> QueryReceived:
    return QueryReceived(query_id=f"q-{i}", query_text=f"삼성전자 주가 {i}")


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the log fsyncs from now on, in order: "segment" or "directory"."""
    import querylog.logging.segments as segments

    real_fsync = os.fsync
    calls: list[str] = []

    def recording_fsync(fd: int) -> None:
        calls.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "segment")
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", recording_fsync)
    return calls


def _read_ids(directory: Path) -> list[str]:
    reader = LogReader(directory)
    return [codec.decode(line).query_id for batch in reader.iter_all() for line in batch.lines]


def test_appended_events_are_read_back_in_order(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        for i in range(100):
            log.append(_event(i))
        log.flush()
        assert _read_ids(tmp_path) == [f"q-{i}" for i in range(100)]


def test_append_buffers_and_flush_writes(tmp_path: Path) -> None:
    with EventLog(tmp_path, flush_interval_s=3600) as log:
        log.append(_event(1))
        assert _read_ids(tmp_path) == []  # buffered: no syscall on the request path
        log.flush()
        assert _read_ids(tmp_path) == ["q-1"]


def test_lines_are_utf8_json_one_per_event(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(_event(1))
        log.flush()
        data = log.segment.read_bytes()  # type: ignore[union-attr]
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert "삼성전자".encode() in data


def test_segments_roll_by_size_and_readers_follow(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_max_bytes=2048) as log:
        for i in range(100):
            log.append(_event(i))
            log.flush()
    assert len(segment_paths(tmp_path)) > 3
    assert _read_ids(tmp_path) == [f"q-{i}" for i in range(100)]


def test_segments_roll_by_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.segments as segments

    now = [1000.0]
    monkeypatch.setattr(segments.time, "monotonic", lambda: now[0])
    with EventLog(tmp_path, segment_max_age_s=60, flush_interval_s=3600) as log:
        log.append(_event(1))
        log.flush()
        now[0] += 61
        log.append(_event(2))
        log.flush()
    assert len(segment_paths(tmp_path)) == 2


def test_reader_checkpoint_resumes_where_it_stopped(tmp_path: Path) -> None:
    reader = LogReader(tmp_path)
    with EventLog(tmp_path) as log:
        for i in range(10):
            log.append(_event(i))
        log.flush()
        first = reader.read({}, max_events=4)
        assert len(first) == 4
        for i in range(10, 12):
            log.append(_event(i))
        log.flush()
        rest = reader.read(first.checkpoint)
    ids = [codec.decode(x).query_id for x in first.lines + rest.lines]
    assert ids == [f"q-{i}" for i in range(12)]
    assert reader.read(rest.checkpoint).lines == []


def _two_segments(directory: Path, first: int, second: int) -> None:
    with EventLog(directory) as log:
        for i in range(first):
            log.append(_event(i))
    with EventLog(directory) as log:
        for i in range(first, first + second):
            log.append(_event(i))
    assert len(segment_paths(directory)) == 2


@pytest.mark.parametrize("batch_events", [1, 3, 4, 7])
def test_a_read_never_hands_on_a_later_segment_before_the_lines_left_in_an_earlier_one_after_an_erasure(
    tmp_path: Path, batch_events: int
) -> None:
    """Blanked lines were left out after the split that counted them: a batch fell short of its events, and the
    read went on into the next segment, ahead of the first one's lines still unread. A fold of the log met later
    events first (a query counted unclassified)."""
    from querylog.logging.erase import Subjects, erase_from_log

    _two_segments(tmp_path, 10, 5)
    erase_from_log(tmp_path, Subjects(query_ids=frozenset({"q-1", "q-2", "q-5"})))
    read = [
        codec.decode(line).query_id for b in LogReader(tmp_path).iter_all(batch_events=batch_events) for line in b.lines
    ]
    assert read == [f"q-{i}" for i in range(15) if i not in (1, 2, 5)]


def test_a_read_cut_mid_line_by_its_byte_budget_reads_no_later_segment(tmp_path: Path) -> None:
    """The bytes left of a budget that ended mid-line let a line or two of the next segment in, ahead of the rest."""
    _two_segments(tmp_path, 10, 5)
    first = segment_paths(tmp_path)[0]
    line = len(first.read_bytes().split(b"\n")[0]) + 1
    reader = LogReader(tmp_path)
    batch = reader.read({}, max_bytes=3 * line + line // 2)  # three lines and half of the fourth
    assert [codec.decode(x).query_id for x in batch.lines] == ["q-0", "q-1", "q-2"] and batch.cut
    assert set(batch.checkpoint.values()) == {3 * line, 0}
    order: list[str] = []
    position = dict(batch.checkpoint)
    while (batch := reader.read(position, max_bytes=3 * line + line // 2)).lines:
        order += [codec.decode(x).query_id for x in batch.lines]
        position = dict(batch.checkpoint)
    assert order == [f"q-{i}" for i in range(3, 15)]


def test_an_unended_line_longer_than_the_budget_holds_back_no_later_segment(tmp_path: Path) -> None:
    """A torn tail longer than a read's byte budget (a crash mid-write; `repair` cuts it at the next open) left
    nothing whole to read in its segment, yet held every later segment back."""
    _two_segments(tmp_path, 1, 1)
    first = segment_paths(tmp_path)[0]
    with first.open("ab") as fh:
        fh.write(b'{"event_type": "query_received", "query_text": "' + b"x" * 300)
    reader = LogReader(tmp_path)
    batch = reader.read({}, max_bytes=100)
    read = [codec.decode(x).query_id for x in batch.lines]
    while (batch := reader.read(batch.checkpoint, max_bytes=100)).lines:
        read += [codec.decode(x).query_id for x in batch.lines]
    assert read == ["q-0", "q-1"]


def test_reader_never_returns_a_partial_line(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(_event(1))
        log.flush()
        segment = log.segment
        assert segment is not None
        with segment.open("ab") as fh:  # a writer caught mid-line
            fh.write(b'{"event_type":"query_rec')
        batch = LogReader(tmp_path).read({})
        assert len(batch) == 1
        assert batch.checkpoint[segment.name] < segment.stat().st_size
        # What is left is a line still being written, not lines a limit left behind: nothing to read at once.
        assert batch.remaining_bytes > 0 and not batch.cut


def test_an_event_limit_cuts_between_lines_even_before_a_partial_one(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        for i in range(5):
            log.append(_event(i))
        log.flush()
        segment = log.segment
        assert segment is not None
        whole = segment.stat().st_size
        with segment.open("ab") as fh:  # a writer caught mid-line
            fh.write(b'{"event_type":"query_rec')
        reader = LogReader(tmp_path)
        first = reader.read({}, max_events=3)
        second = reader.read(first.checkpoint, max_events=3)
    assert [codec.decode(x).query_id for x in first.lines + second.lines] == [f"q-{i}" for i in range(5)]
    assert len(first) == 3 and len(second) == 2
    assert first.cut and not second.cut  # the limit left whole lines behind the first, not the second
    # Each checkpoint sits just past the last line returned: the partial line is left for later.
    assert first.checkpoint[segment.name] == sum(len(x) + 1 for x in first.lines)
    assert second.checkpoint[segment.name] == whole
    assert reader.read(second.checkpoint, max_events=3).lines == []


def test_a_read_says_whether_a_limit_left_whole_lines_behind(tmp_path: Path) -> None:
    with EventLog(tmp_path / "a", segment_max_bytes=1024) as log:  # several segments
        for i in range(12):
            log.append(_event(i))
            log.flush()
    reader = LogReader(tmp_path / "a")
    assert len(reader.segments()) > 1
    whole = reader.read({})
    assert len(whole) == 12 and not whole.cut and whole.remaining_bytes == 0
    line = len(whole.lines[0]) + 1
    by_bytes = reader.read({}, max_bytes=3 * line)
    by_events = reader.read({}, max_events=11)
    assert by_bytes.cut and 0 < len(by_bytes) < 12
    assert by_events.cut and len(by_events) == 11
    rest = reader.read(by_events.checkpoint)
    assert len(rest) == 1 and not rest.cut


def test_a_torn_tail_is_cut_when_the_log_is_next_opened(tmp_path: Path) -> None:
    log = EventLog(tmp_path).open()
    log.append(_event(1))
    log.flush()
    segment = log.segment
    assert segment is not None
    log.close()
    with segment.open("ab") as fh:
        fh.write(b'{"event_type":"query_received","query_id":"q-torn","query_te')
    with EventLog(tmp_path) as log2:
        log2.append(_event(2))
        log2.flush()
    assert segment.read_bytes().endswith(b"\n")
    assert _read_ids(tmp_path) == ["q-1", "q-2"]


def test_repair_leaves_a_live_writers_segment_alone(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(_event(1))
        log.flush()
        segment = log.segment
        assert segment is not None
        with segment.open("ab") as fh:
            fh.write(b'{"partial')
        assert repair(tmp_path) == {}  # locked by the live writer: not touched
        assert segment.read_bytes().endswith(b'{"partial')


def test_every_flushed_event_survives_kill_9(tmp_path: Path) -> None:
    """A child process appends and flushes, reports each flushed id, and is SIGKILLed mid-stream."""
    script = textwrap.dedent(
        f"""
        import sys
        from querylog.logging.segments import EventLog
        from querylog.logging.events import QueryReceived
        log = EventLog({str(tmp_path)!r}, fsync="never").open()
        i = 0
        while True:
            log.append(QueryReceived(query_id=f"q-{{i}}", query_text="x" * (i % 300 + 1)))
            if i % 3 == 2:
                log.flush()
                sys.stdout.write(f"{{i}}\\n")
                sys.stdout.flush()
            i += 1
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 3000:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    ids = _read_ids(tmp_path)
    assert len(ids) == len(set(ids))
    survived = {int(x.split("-")[1]) for x in ids}
    assert set(range(acknowledged + 1)) <= survived
    with EventLog(tmp_path) as log:  # reopening after the crash works and keeps everything
        log.flush()
    assert _read_ids(tmp_path) == ids


def test_concurrent_appenders_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_max_bytes=16 * 1024) as log:

        def work(t: int) -> None:
            for i in range(500):
                log.append(_event(t * 1000 + i))
                if i % 10 == 0:
                    log.flush()

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.flush()
    ids = _read_ids(tmp_path)
    assert len(ids) == 4000 == len(set(ids))
    for t in range(8):  # each thread's events in the order it appended them
        mine = [n for n in (int(x.split("-")[1]) for x in ids) if n // 1000 == t]
        assert mine == sorted(mine)


def test_the_log_counts_every_event_and_byte_it_wrote_once_whichever_thread_flushed(tmp_path: Path) -> None:
    # What /metrics shows as the log's received, sent, batches and bytes: the telemetry counts flushes without a
    # lock of its own (the log's write lock orders them), and must still agree with the disk.
    with EventLog(tmp_path, segment_max_bytes=16 * 1024, flush_interval_s=3600) as log:
        flushed: list[int] = []

        def work(t: int) -> None:
            for i in range(400):
                log.append(_event(t * 1000 + i))
                log.flush()
                flushed.append(1)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        snap = log.telemetry.snapshot()
    on_disk = sum(p.stat().st_size for p in segment_paths(tmp_path))
    assert snap.received == snap.sent == snap.batch_events_total == 1600 == len(_read_ids(tmp_path))
    assert snap.batch_bytes_total == on_disk
    assert 0 < snap.batches <= len(flushed)  # a flush that finds the queue emptied by another thread writes nothing


class _ClosingList(list):  # type: ignore[type-arg]
    """A log's queue that closes the log at the moment an event is queued: the race an append from one thread runs
    against close() from another, made to happen every time. `before`: close while the event is not yet queued."""

    def __init__(self, log: EventLog, *, before: bool) -> None:
        super().__init__()
        self.log, self.before = log, before

    def append(self, item: object) -> None:
        if self.before:
            self.log.close()  # closed (and its queue written) just before the event lands in the queue
            super().append(item)
        else:
            super().append(item)
            self.log.close()  # the event is queued and close() writes it


@pytest.mark.parametrize("before", [True, False])
def test_an_append_racing_close_is_written_or_refused_never_lost_silently(tmp_path: Path, before: bool) -> None:
    log = EventLog(tmp_path, flush_interval_s=3600).open()
    log._pending = _ClosingList(log, before=before)
    if before:
        with pytest.raises(LogClosedError):
            log.append(_event(1))
        assert _read_ids(tmp_path) == [] and not log._pending
    else:
        log.append(_event(1))
        assert _read_ids(tmp_path) == ["q-1"]


def test_events_queued_past_the_bound_are_dropped_and_counted_the_rest_written(tmp_path: Path) -> None:
    with EventLog(tmp_path, max_buffered_events=3, flush_interval_s=3600) as log:
        for i in range(5):  # nothing flushes meanwhile
            log.append(_event(i))
        assert log.telemetry.snapshot().dropped == {"buffer_full": 2}
        log.flush()
        log.append(_event(5))  # a flush makes room again
    assert _read_ids(tmp_path) == ["q-0", "q-1", "q-2", "q-5"]


def test_two_writers_in_one_directory_keep_their_own_segments(tmp_path: Path) -> None:
    with EventLog(tmp_path) as a, EventLog(tmp_path) as b:
        a.append(_event(1))
        b.append(_event(2))
        a.flush()
        b.flush()
        assert a.segment != b.segment
    assert sorted(_read_ids(tmp_path)) == ["q-1", "q-2"]


def test_a_disk_error_drops_and_counts_the_batch_and_writing_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import querylog.logging.segments as segments

    real_write = os.write
    failing = [True]

    def write(fd: int, data: bytes) -> int:
        if failing[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with EventLog(tmp_path, flush_interval_s=3600) as log:
        monkeypatch.setattr(segments.os, "write", write)
        log.append(_event(1))
        log.flush()  # must not raise: the API keeps answering
        assert log.telemetry.snapshot().dropped == {"disk_write_failed": 1}
        failing[0] = False
        log.append(_event(2))
        log.flush()
    assert _read_ids(tmp_path) == ["q-2"]


def test_a_partial_write_is_cut_back_to_the_last_whole_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.segments as segments

    real_write = os.write
    calls = [0]

    def write(fd: int, data: bytes) -> int:
        calls[0] += 1
        if calls[0] == 2:
            return real_write(fd, bytes(data[:7]))  # the disk filled up mid-line
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with EventLog(tmp_path, flush_interval_s=3600) as log:
        monkeypatch.setattr(segments.os, "write", write)
        log.append(_event(1))
        log.flush()
        log.append(_event(2))
        log.flush()
        log.append(_event(3))
        log.flush()
    assert _read_ids(tmp_path) == ["q-1", "q-3"]


def test_whole_lines_of_a_write_the_disk_cut_short_stay_in_the_log_for_readers_that_saw_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk filled up after one line and a half of a three-line flush: the flush cut back to where it began, so a
    projection that had read the first line projected an event the log no longer held, then read the next append
    from its middle (a corrupt line, a metric one short for good, a ghost event in Loki)."""
    import querylog.logging.segments as segments

    real_write = os.write
    seen: list[bytes] = []

    def write(fd: int, data: bytes) -> int:
        if seen:
            raise OSError(errno.ENOSPC, "No space left on device")
        first = bytes(data).index(b"\n") + 1
        done = real_write(fd, bytes(data[: first + 7]))  # one line, and 7 bytes of the next
        seen.extend(LogReader(tmp_path).read({}).lines)  # a projection reads meanwhile
        return done

    with EventLog(tmp_path, flush_interval_s=3600) as log:
        monkeypatch.setattr(segments.os, "write", write)
        for i in (1, 2, 3):
            log.append(_event(i))
        log.flush()
        monkeypatch.setattr(segments.os, "write", real_write)
        log.append(_event(4))
        log.flush()
        snapshot = log.telemetry.snapshot()
    assert len(seen) == 1
    assert _read_ids(tmp_path) == ["q-1", "q-4"]  # what the reader saw is still there; no line torn
    assert (snapshot.sent, snapshot.dropped) == (2, {"disk_write_failed": 2})


def test_a_torn_line_the_disk_would_not_cut_is_left_behind_and_kept_lines_are_synced_as_the_policy_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cut itself failed, the next append went on after the torn fragment (one corrupt line, its event lost
    to every projection); under fsync="always", the whole lines kept were not synced when the flush returned."""
    import querylog.logging.segments as segments

    real_write, real_fsync = os.write, os.fsync
    synced: list[int] = []

    def torn(fd: int, data: bytes) -> int:
        if synced == [-1]:
            raise OSError(errno.ENOSPC, "No space left on device")
        synced.append(-1)
        return real_write(fd, bytes(data[: bytes(data).index(b"\n") + 8]))

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    def refuse(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with EventLog(tmp_path, flush_interval_s=3600, fsync="always") as log:
        log.append(_event(1))
        log.flush()
        first = log.segment
        monkeypatch.setattr(segments.os, "write", torn)
        monkeypatch.setattr(segments.os, "fsync", fsync)
        monkeypatch.setattr(segments.os, "ftruncate", refuse)
        synced.clear()
        for i in (2, 3):
            log.append(_event(i))
        log.flush()
        assert synced[1:] and synced[-1] >= 0  # the kept line (q-2) is on disk when the flush returns
        monkeypatch.setattr(segments.os, "write", real_write)
        log.append(_event(4))
        log.flush()
        assert log.segment != first  # not appended after the torn fragment
    assert _read_ids(tmp_path) == ["q-1", "q-2", "q-4"]  # no corrupt line: the fragment is a torn tail, not read


def test_using_a_closed_log_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    with pytest.raises(LogClosedError, match="open"):
        log.append(_event(1))
    log.open()
    log.close()
    with pytest.raises(LogClosedError, match="closed"):
        log.append(_event(1))
    with pytest.raises(LogClosedError):
        log.open()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segment_max_bytes": 10}, "segment_max_bytes"),
        ({"segment_max_age_s": 0}, "segment_max_age_s"),
        ({"fsync": "sometimes"}, "fsync"),
        ({"max_buffered_events": 0}, "max_buffered_events"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventLog(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_fsync_always_syncs_on_every_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.segments as segments

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(segments.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with EventLog(tmp_path, fsync="always", flush_interval_s=3600) as log:
        before = len(synced)
        log.append(_event(1))
        log.flush()
        assert len(synced) == before + 1


def test_an_unencodable_event_is_counted_and_dropped_not_raised(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(QueryReceived(query_id="q-\ud800", query_text="x"))  # a lone surrogate in an id
        log.append(_event(2))
        log.flush()
        assert log.telemetry.snapshot().dropped == {"unencodable": 1}
    assert _read_ids(tmp_path) == ["q-2"]


def _looping_score() -> list[object]:
    """A value that contains itself: the encoder recurses until Python stops it (RecursionError)."""
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("score", [object, _looping_score], ids=["no-json-form", "contains-itself"])
def test_an_event_the_encoder_cannot_write_costs_itself_and_the_log_goes_on(tmp_path: Path, score: object) -> None:
    # The event classes refuse such values; a prechecked event (a producer's own checks, which may be wrong) does
    # not: a score of a type JSON cannot write or one that breaks the encoder (RecursionError) costs that event,
    # counted; it neither jams the queue nor loses the events flushed with it.
    with EventLog(tmp_path, flush_interval_s=3600) as log:
        log.append(_event(1))
        unchecked = prechecked(SearchCompleted)
        log.append(unchecked(query_id="q-x", result_count=1, top_score=score()))  # type: ignore[operator]
        log.append(_event(2))
        log.flush()
        log.append(_event(3))
        log.flush()
        assert log.telemetry.snapshot().dropped == {"unencodable": 1}
    assert _read_ids(tmp_path) == ["q-1", "q-2", "q-3"]


def test_appends_past_the_bound_do_not_wait_for_a_hung_write(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_buffered_events=1, flush_interval_s=3600).open()
    try:
        log.append(_event(1))
        with log._lock:  # what a write that hangs holds
            appender = threading.Thread(target=log.append, args=(_event(2),))
            appender.start()
            appender.join(timeout=10)
            assert not appender.is_alive()  # dropped and counted at once, not after the write
        assert log.telemetry.snapshot().dropped == {"buffer_full": 1}
    finally:
        log.close()


def test_sync_on_a_closed_log_is_refused_and_opens_no_segment(tmp_path: Path) -> None:
    log = EventLog(tmp_path).open()
    log.close()
    with pytest.raises(LogClosedError, match="closed"):
        log.sync()
    assert len(segment_paths(tmp_path)) == 1


@pytest.mark.parametrize("policy", ["interval", "never"])
def test_sync_makes_what_the_rolls_left_to_the_flusher_durable(tmp_path: Path, synced: list[str], policy: str) -> None:
    # A roll leaves the finished segment's sync and the directory's to the flusher (here: never running). `sync`
    # promises everything appended before it is durable: those segments included, whatever the policy.
    descriptors = len(os.listdir("/proc/self/fd"))
    log = EventLog(tmp_path, fsync=policy, segment_max_bytes=1024, flush_interval_s=3600).open()
    try:
        for i in range(40):
            log.append(_event(i))
            log.flush()
        rolled = len(segment_paths(tmp_path)) - 1
        assert rolled >= 3 and synced == []
        log.sync()
        assert synced.count("segment") == rolled + 1 and synced.count("directory") == 1
        assert len(os.listdir("/proc/self/fd")) == descriptors + 1  # the finished segments closed; the current open
    finally:
        log.close()


def test_sync_waits_for_the_flushers_round_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The flusher took a finished segment to sync outside the lock and is still at it: a `sync` meanwhile must not
    # return before that segment is durable.
    import querylog.logging.segments as segments

    real_fsync = os.fsync
    in_flusher, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_flusher_fsync(fd: int) -> None:
        if threading.current_thread().name == "querylog-log-flusher" and not release.is_set():
            in_flusher.set()
            release.wait(10)
            order.append("flusher's fsync done")
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", slow_flusher_fsync)
    log = EventLog(tmp_path, segment_max_bytes=1024, flush_interval_s=0.01, fsync_interval_s=3600).open()
    try:
        i = 0
        while len(segment_paths(tmp_path)) < 2:
            log.append(_event(i))
            log.flush()
            i += 1
        assert in_flusher.wait(10)  # the flusher's round is syncing the finished segment, outside the lock
        syncer = threading.Thread(target=lambda: (log.sync(), order.append("sync returned")))
        syncer.start()
        syncer.join(0.3)
        assert syncer.is_alive()  # still waiting for the round
        release.set()
        syncer.join(10)
        assert not syncer.is_alive()
        assert order == ["flusher's fsync done", "sync returned"]
    finally:
        release.set()
        log.close()


def test_the_flusher_outlives_a_round_that_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.segments as segments

    real_fsync = os.fsync
    failed: list[int] = []

    def fsync_once_failing(fd: int) -> None:
        if not failed and threading.current_thread().name == "querylog-log-flusher":
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", fsync_once_failing)
    with EventLog(tmp_path, flush_interval_s=0.01, fsync_interval_s=0.001) as log:
        for i in range(2):  # the first round's fsync fails; the flusher must still write the second event
            log.append(_event(i))
            deadline = time.monotonic() + 10
            while len(_read_ids(tmp_path)) <= i and time.monotonic() < deadline:
                time.sleep(0.01)  # waiting for the flusher's own round: the condition, not the sleep, decides
            assert len(_read_ids(tmp_path)) == i + 1
        assert failed and log.telemetry.snapshot().errors == {"flush": 1}


def test_a_request_flush_never_waits_for_the_interval_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The disk takes its time over the flusher's fsync (a busy disk: tens of ms; here, until released). Requests
    # flushing meanwhile hand their events to the kernel without waiting for it.
    import querylog.logging.segments as segments

    real_fsync = os.fsync
    in_fsync, release = threading.Event(), threading.Event()

    def slow_fsync(fd: int) -> None:
        if threading.current_thread().name == "querylog-log-flusher":
            in_fsync.set()
            release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", slow_fsync)
    log = EventLog(tmp_path, flush_interval_s=0.01, fsync_interval_s=0.001).open()
    try:
        log.append(_event(0))
        log.flush()
        assert in_fsync.wait(10), "the flusher never synced"
        request = threading.Thread(target=lambda: (log.append(_event(1)), log.flush()))
        request.start()
        request.join(10)
        flushed_meanwhile, written_meanwhile = not request.is_alive(), _read_ids(tmp_path)
    finally:
        release.set()
        log.close()
    assert flushed_meanwhile, "a request's flush waited for the fsync"
    assert written_meanwhile == ["q-0", "q-1"]


def test_an_interval_fsync_that_fails_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.segments as segments

    real_fsync = os.fsync
    attempts: list[int] = []

    def fsync_failing_once(fd: int) -> None:
        # The segment's syncs by the flusher, not the directory's: the first fails.
        if threading.current_thread().name == "querylog-log-flusher" and stat.S_ISREG(os.fstat(fd).st_mode):
            attempts.append(fd)
            if len(attempts) == 1:
                raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", fsync_failing_once)
    with EventLog(tmp_path, flush_interval_s=0.01, fsync_interval_s=0.001) as log:
        log.append(_event(0))
        log.flush()  # one write, then nothing: only the failed fsync's retry can sync it
        deadline = time.monotonic() + 10
        while len(attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the flusher's own rounds: the condition, not the sleep, decides
        assert len(attempts) >= 2
        assert log.telemetry.snapshot().errors == {"flush": 1}


def test_a_roll_leaves_its_syncs_to_the_flusher_and_close_does_what_is_left(tmp_path: Path, synced: list[str]) -> None:
    # A flush that fills a segment rolls to a new one. The finished segment and the directory (the new segment's
    # name) are synced off the request path: by the flusher's next round, or here, where it never runs, by close.
    descriptors = len(os.listdir("/proc/self/fd"))
    log = EventLog(tmp_path, segment_max_bytes=1024, flush_interval_s=3600, fsync_interval_s=3600).open()
    for i in range(40):
        log.append(_event(i))
        log.flush()
    rolled = len(segment_paths(tmp_path)) - 1
    assert rolled >= 3
    assert synced == []  # no request waited on the disk
    log.close()
    # Every finished segment (each held unsynced lines), the last one, and the directory once; nothing left open.
    assert synced.count("segment") == rolled + 1 and synced.count("directory") == 1
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert _read_ids(tmp_path) == [f"q-{i}" for i in range(40)]
