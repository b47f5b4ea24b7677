"""Erasure in the log: a subject's lines blanked in place, every other line and every offset untouched."""

from __future__ import annotations

from pathlib import Path

from querylog.logging.codec import decode
from querylog.logging.erase import Subjects, erase_from_log, queries_of
from querylog.logging.events import IntentClassified, QueryReceived
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.time_order import TimeOrderedReader


def _write(directory: Path) -> None:
    with EventLog(directory) as log:
        for user, n in (("alice", 3), ("bob", 2)):
            for i in range(n):
                query = f"q-{user}-{i}"
                log.append(
                    QueryReceived(query_id=query, query_text=f"{user} 010-{i}", user_id=user, session_id=f"s-{user}")
                )
                log.append(IntentClassified(query_id=query, intent="x", confidence=0.5))  # no user id on it


def _events(directory: Path, reader: LogReader | None = None) -> list[tuple[str, str | None]]:
    reader = reader or LogReader(directory)
    return [(e.query_id, e.user_id) for b in reader.iter_all() for e in map(decode, b.lines)]


def test_a_users_events_and_their_queries_stage_events_are_blanked_in_place(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    _write(directory)
    sizes = {p.name: p.stat().st_size for p in LogReader(directory).segments()}
    halfway = LogReader(directory).read({}, max_events=3).checkpoint  # a projection's position before the erase
    report = erase_from_log(directory, Subjects(user_ids=frozenset({"alice"})))
    assert report.events == 6
    assert {p.name: p.stat().st_size for p in LogReader(directory).segments()} == sizes  # no offset moved
    raw = b"".join(p.read_bytes() for p in LogReader(directory).segments())
    assert b"alice" not in raw and b"bob" in raw
    assert {q for q, _ in _events(directory)} == {"q-bob-0", "q-bob-1"}
    assert {q for q, _ in _events(directory, TimeOrderedReader(directory))} == {"q-bob-0", "q-bob-1"}
    rest = [decode(line).query_id for line in LogReader(directory).read(halfway).lines]
    assert rest == ["q-bob-0", "q-bob-0", "q-bob-1", "q-bob-1"]  # the old checkpoint still lands on a line


def test_lines_an_older_release_blanked_without_listing_their_segments_are_not_counted_corrupt(
    tmp_path: Path,
) -> None:
    """A release of 2026-12-03 blanked erased lines but kept no list of the segments that hold them: the newest
    projections took those lines for corrupt ones (`log_line_corrupt`, a `corrupt_line` drop, `reconcile` exit 1)."""
    from querylog.config import Settings
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import ERASED_LIST
    from querylog.reconcile import reconcile

    directory = tmp_path / "log"
    _write(directory)
    with EventLog(directory) as other:  # a second writer: the time-ordered reader then merges segments
        other.append(QueryReceived(query_id="q-carol-0", query_text="carol", user_id="carol"))
    erase_from_log(directory, Subjects(user_ids=frozenset({"alice"})))
    (directory / ERASED_LIST).unlink()  # as that release left the log
    for reader in (LogReader(directory), TimeOrderedReader(directory)):
        with ParquetSink(tmp_path / f"lake-{type(reader).__name__}") as sink:
            projector = Projector(reader, sink)
            assert projector.catch_up() > 0
            assert (projector.corrupt_lines, projector.telemetry.snapshot().dropped) == (0, {})
    from querylog.logging.segments import is_erased

    assert not is_erased(' 전자 주가"}'.encode())  # a piece read from inside a line is corrupt, not blanked
    (tmp_path / "lake-LogReader").rename(tmp_path / "lake")
    report = reconcile(Settings(home=tmp_path, stdout_events=False))
    assert report.unreadable == 0 and report.clean


def test_erasing_again_or_erasing_nobody_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    _write(directory)
    subjects = Subjects(session_ids=frozenset({"s-bob"}))
    assert erase_from_log(directory, subjects).events == 4
    before = b"".join(p.read_bytes() for p in LogReader(directory).segments())
    assert erase_from_log(directory, subjects).events == 0
    assert erase_from_log(directory, Subjects(user_ids=frozenset({"nobody"}))).events == 0
    assert erase_from_log(directory, Subjects()).events == 0
    assert b"".join(p.read_bytes() for p in LogReader(directory).segments()) == before


def test_a_query_id_erases_that_query_only(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    _write(directory)
    assert queries_of(directory, Subjects(user_ids=frozenset({"bob"}))) == {"q-bob-0", "q-bob-1"}
    assert erase_from_log(directory, Subjects(query_ids=frozenset({"q-alice-1"}))).events == 2
    assert "q-alice-1" not in {q for q, _ in _events(directory)}
    assert len(_events(directory)) == 8


def test_a_segment_being_written_is_erased_and_the_writer_goes_on(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with EventLog(directory) as log:
        log.append(QueryReceived(query_id="q-1", query_text="carol's", user_id="carol"))
        log.flush()
        assert erase_from_log(directory, Subjects(user_ids=frozenset({"carol"}))).events == 1
        log.append(QueryReceived(query_id="q-2", query_text="dave's", user_id="dave"))
    assert _events(directory) == [("q-2", "dave")]


def test_a_catch_up_reads_past_a_batch_of_blanked_lines_only(tmp_path: Path) -> None:
    """A batch the byte budget filled with erased lines handed nothing on: `catch_up` (and `project --once`, and a
    rebuild) took that for the end of the log and left the lines behind it unprojected."""
    from querylog.logging.projection import Projector
    from querylog.logging.sinks import MemorySink

    directory = tmp_path / "log"
    with EventLog(directory) as log:
        for i in range(40):
            log.append(QueryReceived(query_id=f"q-alice-{i}", query_text="alice " * 20, user_id="alice"))
        log.append(QueryReceived(query_id="q-bob", query_text="bob", user_id="bob"))
    erase_from_log(directory, Subjects(user_ids=frozenset({"alice"})))
    for reader in (LogReader(directory), TimeOrderedReader(directory)):
        sink = MemorySink().open()
        projector = Projector(reader, sink, batch_max_bytes=2048)
        assert projector.catch_up() == 41
        assert [e.query_id for e in sink.events] == ["q-bob"]
        assert sink.checkpoint() == reader.end_checkpoint()
