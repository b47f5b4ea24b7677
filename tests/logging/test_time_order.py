"""TimeOrderedReader: several writers' segments come out merged by event time, whole, each line once."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from querylog.logging.codec import encode
from querylog.logging.events import QueryCompleted
from querylog.logging.segments import LogReader
from querylog.logging.time_order import TimeOrderedReader

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def _segment(directory: Path, name: str, minutes: list[int], *, torn: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        encode(QueryCompleted(query_id=f"{name}-{m}", latency_ms=1.0, ts=T0 + timedelta(minutes=m))) for m in minutes
    ]
    data = b"".join(line + b"\n" for line in lines)
    if torn:
        data += b'{"event_type":"query_compl'
    (directory / f"{name}.jsonl").write_bytes(data)


def _drain(reader: LogReader, **kwargs: int) -> list[list[str]]:
    batches, position = [], {}
    while True:
        batch = reader.read(position, **kwargs)
        if not batch.lines:
            return batches
        batches.append([orjson.loads(line)["query_id"] for line in batch.lines])
        position = batch.checkpoint


def _minute(query_id: str) -> int:
    return int(query_id.rsplit("-", 1)[1])


def _furthest_step_back(batches: list[list[str]]) -> int:
    """How many minutes a batch reaches back behind the newest line of the batches before it."""
    newest, back = -1, 0
    for batch in batches:
        back = max(back, newest - min(_minute(q) for q in batch))
        newest = max(newest, *(_minute(q) for q in batch))
    return back


def test_two_writers_over_two_hours_come_out_interleaved(tmp_path: Path) -> None:
    # Worker A and worker B both wrote through the same two hours while Loki was down.
    _segment(tmp_path, "0001-a", list(range(0, 120, 2)))
    _segment(tmp_path, "0002-b", list(range(1, 120, 2)))
    # Segment by segment, B's first lines come two hours after A's last: Loki would refuse them.
    assert _furthest_step_back(_drain(LogReader(tmp_path), max_events=20)) > 60
    ordered = _drain(TimeOrderedReader(tmp_path), max_events=20)
    assert _furthest_step_back(ordered) == 0
    assert all(len(batch) <= 20 for batch in ordered)
    assert sorted(_minute(q) for batch in ordered for q in batch) == list(range(120))


def test_a_batch_with_lines_held_back_says_it_was_cut(tmp_path: Path) -> None:
    # Writer B's hour comes after writer A's: while A lasts, B's lines wait behind A's horizon.
    _segment(tmp_path, "0001-a", list(range(60)))
    _segment(tmp_path, "0002-b", list(range(60, 120)))
    reader, position, cuts = TimeOrderedReader(tmp_path), {}, []
    while batch := reader.read(position, max_events=20):
        cuts.append(batch.cut)
        position = batch.checkpoint
    assert cuts[-1] is False and all(cuts[:-1]) and len(cuts) > 3


def test_one_segment_reads_like_the_plain_reader(tmp_path: Path) -> None:
    _segment(tmp_path, "0001-a", list(range(30)))
    assert _drain(TimeOrderedReader(tmp_path), max_events=7) == _drain(LogReader(tmp_path), max_events=7)


def test_a_torn_tail_is_left_for_later_and_does_not_block_others(tmp_path: Path) -> None:
    _segment(tmp_path, "0001-a", [0, 5], torn=True)
    _segment(tmp_path, "0002-b", [1, 2, 3])
    flat = [q for batch in _drain(TimeOrderedReader(tmp_path)) for q in batch]
    assert flat == ["0001-a-0", "0002-b-1", "0002-b-2", "0002-b-3", "0001-a-5"]


def test_two_writers_each_caught_mid_line_give_an_empty_batch(tmp_path: Path) -> None:
    _segment(tmp_path, "0001-a", [], torn=True)
    _segment(tmp_path, "0002-b", [], torn=True)
    batch = TimeOrderedReader(tmp_path).read({})
    assert batch.lines == [] and not batch.cut and batch.remaining_bytes > 0
    assert batch.checkpoint == {"0001-a.jsonl": 0, "0002-b.jsonl": 0}


def test_a_corrupt_line_goes_out_at_once_for_the_projector_to_count(tmp_path: Path) -> None:
    _segment(tmp_path, "0001-a", [3, 4])
    (tmp_path / "0002-b.jsonl").write_bytes(b"not json\n")
    batch = TimeOrderedReader(tmp_path).read({})
    assert batch.lines[0] == b"not json"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 500), max_size=40).map(sorted), min_size=1, max_size=4),
    st.integers(1, 30),
)
def test_every_line_comes_out_once_in_time_order(segments: list[list[int]], n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        for i, minutes in enumerate(segments):
            _segment(directory, f"{i:04d}-w", minutes)
        reader = TimeOrderedReader(directory)
        batches = _drain(reader, max_events=n)
        assert all(len(batch) <= n for batch in batches)
        flat = [q for batch in batches for q in batch]
        assert sorted(flat) == sorted(f"{i:04d}-w-{m}" for i, ms in enumerate(segments) for m in ms)
        assert [_minute(q) for q in flat] == sorted(_minute(q) for q in flat)
