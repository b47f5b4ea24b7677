"""The Parquet projection: partitioning, atomic visibility, exactly once across restarts and crashes."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querylog.logging import codec, parquet
from querylog.logging.events import (
    WRITTEN_VERSION,
    AnyEvent,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
    is_blank,
)
from querylog.logging.parquet import LAKE_SCHEMA, ParquetSink, _partition, events_to_table, tables_from_lines
from querylog.logging.projection import Batch, Projector, SinkSendError
from querylog.logging.segments import EventLog, LogReader


def _log_with(tmp_path: Path, n: int) -> Path:
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        for i in range(n):
            log.append(QueryReceived(query_id=f"q-{i}", query_text=f"하이닉스 {i}"))
            log.append(QueryCompleted(query_id=f"q-{i}", latency_ms=float(i)))
        log.flush()
    return log_dir


def _lake_ids(lake: Path) -> list[str]:
    files = sorted((lake / "events").glob("date=*/hour=*/*.parquet"))
    return [i for f in files for i in pq.read_table(f, columns=["event_id"]).column("event_id").to_pylist()]


def test_files_are_hive_partitioned_by_utc_date_and_hour(tmp_path: Path) -> None:
    events = [
        QueryReceived(query_id="a", query_text="x", ts=datetime(2026, 3, 1, 23, 59, tzinfo=UTC)),
        QueryReceived(query_id="b", query_text="y", ts=datetime(2026, 3, 2, 0, 1, tzinfo=UTC)),
    ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"s": 1}))
        rel = sorted(str(f.relative_to(tmp_path / "lake" / "events").parent) for f in sink.files())
    assert rel == ["date=2026-03-01/hour=23", "date=2026-03-02/hour=00"]


def test_events_before_1970_and_before_the_year_1000_are_filed_under_their_own_date_and_hour() -> None:
    # Producers may backfill any age: an hour is floored (1969-12-31T23:59 is not 1970-01-01's hour 00) and a
    # year always has four digits (compact and retention read `date=YYYY-MM-DD`), on either path to the lake.
    times = [datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]
    events = [QueryReceived(query_id=f"q-{i}", query_text="x", ts=t) for i, t in enumerate(times)]
    expected = {("1969-12-31", "23"), ("0001-01-01", "00")}
    assert set(_partition(events)) == expected
    fast = tables_from_lines([codec.encode(e) for e in events])
    assert fast is not None and set(fast) == expected


def test_every_file_has_the_lake_schema(tmp_path: Path) -> None:
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=[QueryCompleted(query_id="q", latency_ms=1.0)], checkpoint={"s": 1}))
        schema = pq.read_schema(sink.files()[0])
    assert set(schema.names) == set(LAKE_SCHEMA.names)


def test_projection_is_exactly_once_across_restarts(tmp_path: Path) -> None:
    log_dir = _log_with(tmp_path, 50)
    reader = LogReader(log_dir)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(reader, sink, batch_max_events=30).run_once()  # stop part-way
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(reader, sink, batch_max_events=30).catch_up()
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == 100 == len(set(ids))


def test_a_commit_says_which_schema_its_release_reads_so_an_older_leader_is_told_apart(tmp_path: Path) -> None:
    started = time.time() - 1
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(_log_with(tmp_path, 3)), sink).catch_up()
    # This release's commits: never taken for an older release's (/healthz would call its own lake degraded).
    assert not ParquetSink.committed_by_an_older_release(tmp_path / "lake", since=started)
    commit = tmp_path / "lake" / "_querylog" / "parquet-commit.json"
    ours = commit.read_bytes()
    assert b',"reads_schema":3' in ours
    # A release that reads v2 (a search's null count is corrupt to it), and one from before commits said.
    for older in (ours.replace(b',"reads_schema":3', b',"reads_schema":2'), ours.replace(b',"reads_schema":3', b"")):
        commit.write_bytes(older)
        assert ParquetSink.committed_by_an_older_release(tmp_path / "lake", since=started)
    assert not ParquetSink.committed_by_an_older_release(tmp_path / "lake", since=time.time() + 60)  # before then


def test_a_crash_after_commit_before_rename_is_rolled_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import querylog.logging.parquet as parquet

    log_dir = _log_with(tmp_path, 20)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("power cut")  # not an OSError: nothing may clean up

    with ParquetSink(tmp_path / "lake") as sink:
        monkeypatch.setattr(parquet.os, "replace", crash)
        with pytest.raises(KeyboardInterrupt):
            Projector(LogReader(log_dir), sink).run_once()
        monkeypatch.undo()
    assert _lake_ids(tmp_path / "lake") == []  # nothing visible yet: the renames never happened
    with ParquetSink(tmp_path / "lake") as sink:  # open rolls the committed batch forward
        Projector(LogReader(log_dir), sink).catch_up()
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == 40 == len(set(ids))


def test_a_batch_whose_hour_directory_a_day_compaction_swapped_away_lands_in_the_new_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `compact` exchanges a whole day directory for one holding the hours it had when it listed them: an hour the
    # sink made just before the exchange is gone from the live day when the sink moves its file in.
    log_dir = _log_with(tmp_path, 20)
    real_replace = os.replace
    swapped: list[Path] = []

    def exchange_first(src: Any, dst: Any) -> None:
        day = Path(dst).parent.parent
        if not swapped and day.name.startswith("date="):
            swapped.append(day.rename(tmp_path / "old-day"))
            day.mkdir()  # the new day, without the hour directory the sink just made
        real_replace(src, dst)

    with ParquetSink(tmp_path / "lake") as sink:
        monkeypatch.setattr(parquet.os, "replace", exchange_first)
        Projector(LogReader(log_dir), sink).catch_up()
        monkeypatch.undo()
    assert swapped, "the simulated exchange did not happen"
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == 40 == len(set(ids))


def test_a_file_that_could_not_be_moved_into_its_hour_is_carried_by_the_next_commit_and_moved_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = _log_with(tmp_path, 20)  # 40 events: two batches of 20
    real_replace = os.replace
    refusing = [True]

    def replace(src: Any, dst: Any) -> None:
        if refusing[0] and "/events/" in str(dst):
            raise FileNotFoundError(2, "No such file or directory", str(dst))  # its hour swapped away, each time
        real_replace(src, dst)

    monkeypatch.setattr(parquet.os, "replace", replace)
    with ParquetSink(tmp_path / "lake") as sink:
        projector = Projector(LogReader(log_dir), sink, batch_max_events=20)
        projector.run_once()
        assert _lake_ids(tmp_path / "lake") == []  # committed, not in its hour yet
        refusing[0] = False
        projector.catch_up()  # the next batch's commit names it too, and moves it
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == 40 == len(set(ids))
    with ParquetSink(tmp_path / "lake"):  # and a restart finds no stray and loses nothing
        pass
    assert sorted(_lake_ids(tmp_path / "lake")) == sorted(ids)


def test_a_crash_before_commit_leaves_nothing_and_the_batch_is_projected_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import querylog.logging.parquet as parquet

    log_dir = _log_with(tmp_path, 20)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("power cut")

    with ParquetSink(tmp_path / "lake") as sink:
        monkeypatch.setattr(parquet, "atomic_write", crash)
        with pytest.raises(KeyboardInterrupt):
            Projector(LogReader(log_dir), sink).run_once()
        monkeypatch.undo()
    tmp_files = list((tmp_path / "lake" / "_querylog" / "tmp").iterdir())
    assert tmp_files  # a half-done batch was left behind, invisible to readers
    with ParquetSink(tmp_path / "lake") as sink:
        assert sink.checkpoint() == {}
        Projector(LogReader(log_dir), sink).catch_up()
    assert not list((tmp_path / "lake" / "_querylog" / "tmp").iterdir())
    ids = _lake_ids(tmp_path / "lake")
    assert len(ids) == 40 == len(set(ids))


def test_readers_never_see_a_half_written_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a batch is being written, the lake glob that DuckDB reads matches only complete files."""
    import querylog.logging.parquet as parquet

    log_dir = _log_with(tmp_path, 10)
    seen: list[int] = []
    real_write_table = pq.write_table

    def spy(table: object, where: object, **kw: object) -> None:
        real_write_table(table, where, **kw)  # type: ignore[arg-type]
        glob = str(tmp_path / "lake" / "events" / "*" / "*" / "*.parquet")
        try:
            with duckdb.connect() as con:
                [(count,)] = con.execute(f"select count(*) from read_parquet('{glob}')").fetchall()
            seen.append(count)
        except duckdb.IOException:
            seen.append(0)  # no file matches yet

    monkeypatch.setattr(parquet.pq, "write_table", spy)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(log_dir), sink).catch_up()
    assert seen == [0]


def test_a_failed_write_raises_sink_send_error_and_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import querylog.logging.parquet as parquet

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with ParquetSink(tmp_path / "lake") as sink:
        monkeypatch.setattr(parquet.pq, "write_table", full)
        with pytest.raises(SinkSendError, match=r"batch of 1 events: .*No space left"):
            sink.write(Batch(events=[QueryCompleted(query_id="q", latency_ms=1.0)], checkpoint={"s": 5}))
        assert sink.checkpoint() == {}
        # A batch of no event (its lines blanked or corrupt) still moves the checkpoint: said so, not "0 events".
        monkeypatch.setattr(parquet, "atomic_write", full)
        with pytest.raises(SinkSendError, match=r"the lake's checkpoint \(a batch of no event\): .*No space left"):
            sink.write(Batch(events=[], checkpoint={"s": 9}))
        assert sink.checkpoint() == {}
    assert not os.listdir(tmp_path / "lake" / "_querylog" / "tmp")


def test_a_failed_parquet_batch_is_counted_once_by_the_projector_that_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import querylog.logging.parquet as parquet
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader

    real = parquet.pq.write_table
    failures = [OSError(28, "No space left on device")]

    def full_once(*args: object, **kwargs: object) -> None:
        if failures:
            raise failures.pop()
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(parquet.pq, "write_table", full_once)
    with EventLog(tmp_path / "log") as log:
        log.append(QueryCompleted(query_id="q", latency_ms=1.0))
        log.flush()
    sink = ParquetSink(tmp_path / "lake").open()
    projector = Projector(LogReader(tmp_path / "log"), sink, interval_s=0.01)
    projector.start()  # its own thread meets the failure, counts it, backs off and writes the batch again
    try:
        deadline = time.monotonic() + 30
        while sink.telemetry.snapshot().sent < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the projector's thread, bounded by the deadline
    finally:
        projector.stop()
        sink.close()
    snap = sink.telemetry.snapshot()
    assert snap.errors == {"write": 1} and snap.retries == 1 and snap.sent == 1


def test_a_corrupt_log_line_is_counted_and_skipped(tmp_path: Path) -> None:
    log_dir = _log_with(tmp_path, 3)
    segment = sorted(log_dir.iterdir())[0]
    with segment.open("ab") as fh:
        fh.write(b'{"event_type":"query_received","query_id":""}\n')
    with ParquetSink(tmp_path / "lake") as sink:
        projector = Projector(LogReader(log_dir), sink)
        projector.catch_up()
        assert projector.corrupt_lines == 1
        assert sink.telemetry.snapshot().dropped == {"corrupt_line": 1}
    assert len(_lake_ids(tmp_path / "lake")) == 6


def test_a_line_with_a_count_past_the_lakes_int32_is_counted_and_skipped_not_retried_for_ever(tmp_path: Path) -> None:
    """Written by a release that took any count: every Parquet write of its batch failed, and the lake stopped."""
    log_dir = _log_with(tmp_path, 3)
    segment = sorted(log_dir.iterdir())[0]
    with segment.open("ab") as fh:
        fh.write(
            b'{"event_type":"response_generated","gen_ai_usage_output_tokens":1099511627776,'
            b'"event_id":"e-big","ts":"2026-12-04T10:00:00Z","query_id":"q-big"}\n'
        )
    with ParquetSink(tmp_path / "lake") as sink:
        projector = Projector(LogReader(log_dir), sink)
        projector.catch_up()  # raised ArrowInvalid at every attempt
        assert projector.corrupt_lines == 1
        assert sink.telemetry.snapshot().dropped == {"corrupt_line": 1}
    assert len(_lake_ids(tmp_path / "lake")) == 6


# Not what events refuse as blank (whitespace and invisible characters only: "\u200b" is blank).
_texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: not is_blank(s))
_opt_ids = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
_ms_value = st.floats(0, 1e6, allow_nan=False)
_ms = st.none() | _ms_value


@st.composite
def _any_event(draw: st.DrawFn) -> AnyEvent:
    common = {
        "query_id": draw(st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s)),
        "ts": draw(_times),
        "session_id": draw(_opt_ids),
        "user_id": draw(_opt_ids),
        "trace_id": draw(_opt_ids),
        "service": draw(st.sampled_from(["querylog", "chat"])),
        "env": draw(st.sampled_from(["dev", "prod"])),
        # v2's context fields, nested ones included (maps take a path of their own in the fast path)
        "release": draw(st.none() | st.sampled_from(["2026.11.1", "2026.12.0"])),
        "prompt_version": draw(st.none() | _texts),
        "tags": draw(st.none() | st.lists(_texts, max_size=3).map(tuple)),
        "attributes": draw(st.none() | st.dictionaries(st.sampled_from(["plan", "ab.bucket", "region"]), _texts)),
    }
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return QueryReceived(**common, query_text=draw(_texts), language=draw(st.none() | st.just("ko")))
    if kind == 1:
        return IntentClassified(**common, intent=draw(_texts), confidence=draw(st.floats(0, 1)), duration_ms=draw(_ms))
    if kind == 2:
        sources = st.lists(
            st.builds(
                Source,
                doc_id=_texts,
                title=st.none() | _texts,
                score=st.none() | st.floats(-1e6, 1e6),
                rank=st.integers(1, 50),
            ),
            max_size=4,
        )
        return SearchCompleted(
            **common,
            result_count=draw(st.integers(0, 10**6)),
            cache_hit=draw(st.booleans()),
            sources=draw(st.none() | sources.map(tuple)),
            backend_durations_ms=draw(st.none() | st.dictionaries(st.sampled_from(["opensearch", "neo4j"]), _ms_value)),
        )
    if kind == 3:
        return ResponseGenerated(
            **common,
            gen_ai_request_model=draw(st.none() | _texts | st.sampled_from(["gpt-4o", "gpt-4o-2024-08-06"])),
            gen_ai_usage_input_tokens=draw(st.none() | st.integers(0, 10**6)),
            gen_ai_usage_output_tokens=draw(st.none() | st.integers(0, 10**6)),
            gen_ai_usage_cache_read_input_tokens=draw(st.none() | st.integers(0, 10**6)),
            quality_score=draw(st.none() | st.floats(0, 1)),
            answer_text=draw(st.none() | _texts),
            cost_usd=draw(st.none() | st.floats(0, 10)),
            ttft_ms=draw(_ms),
        )
    if kind == 4:
        return QueryCompleted(**common, latency_ms=draw(st.floats(0, 1e6)), cache_hit=draw(st.none() | st.booleans()))
    if kind == 5:
        return QueryFailed(
            **common, error_type=draw(_texts), error_message=draw(st.text(max_size=30)), stage=draw(st.none() | _texts)
        )
    return FeedbackReceived(**common, score=draw(st.sampled_from([-1, 0, 1])), comment=draw(st.none() | _texts))


_V2_FIELDS = (
    "release", "prompt_version", "tags", "attributes", "sources", "backend_durations_ms", "answer_text", "cost_usd",
    "ttft_ms", "gen_ai_usage_cache_read_input_tokens",
)  # fmt: skip


def _has_v2_fields(event: AnyEvent) -> bool:
    return any(getattr(event, name, None) is not None for name in _V2_FIELDS)


def _as_v1_line(line: bytes) -> bytes:
    """The line as schema v1 wrote it: no `schema_version` (v1 left its default out)."""
    return line.replace(b'"schema_version":%d,' % WRITTEN_VERSION, b"")


@given(st.lists(_any_event(), min_size=1, max_size=30), st.lists(st.booleans(), min_size=30, max_size=30))
@settings(max_examples=150, deadline=None)
def test_the_fast_path_writes_exactly_what_decoding_each_line_writes(events: list[AnyEvent], v1: list[bool]) -> None:
    # v1 lines stand among v2 ones here only when they hold no v2 field, as a v1 writer's would.
    lines = [
        _as_v1_line(codec.encode(e)) if old and not _has_v2_fields(e) else codec.encode(e)
        for e, old in zip(events, v1, strict=False)
    ]
    _assert_fast_path_writes_what_each_line_writes(lines)


def _assert_fast_path_writes_what_each_line_writes(lines: list[bytes]) -> None:
    fast = tables_from_lines(lines)
    assert fast is not None  # taken, not declined to the per-line path
    careful = {key: events_to_table(rows) for key, rows in _partition([codec.decode(x) for x in lines]).items()}
    assert fast.keys() == careful.keys()
    for key in careful:
        assert fast[key].to_pylist() == careful[key].to_pylist()


@given(st.lists(_any_event(), min_size=10, max_size=60))
@settings(max_examples=40, deadline=None)
def test_a_batch_parsed_block_by_block_on_every_core_writes_the_same_rows(events: list[AnyEvent]) -> None:
    # A catch-up batch is parsed a block at a time, in parallel, each block's types inferred on their own and
    # then merged: a field, a struct member or a float first seen in a later block, and a line longer than a
    # block, must change no row and must not send the batch down the per-line path.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parquet, "_BLOCK_BYTES", 512)
        _assert_fast_path_writes_what_each_line_writes([codec.encode(e) for e in events])


def test_the_fast_path_declines_what_needs_the_careful_one() -> None:
    good = codec.encode(QueryReceived(query_id="q", query_text="x"))
    assert tables_from_lines([good]) is not None
    assert tables_from_lines([good, b'{"event_type":"query_received","query_id":"q"']) is None  # torn
    assert (
        tables_from_lines([good, b'{"event_type":"nope","query_id":"q","event_id":"e","ts":"2026-01-01T00:00:00Z"}'])
        is None
    )
    assert (
        tables_from_lines(
            [
                b'{"event_type":"query_received","schema_version":0,"query_id":"q","query_text":"x","event_id":"e","ts":"2026-01-01T00:00:00Z"}'
            ]
        )
        is None
    )
    assert tables_from_lines([good.replace(b'"query_id"', b'"surprise":1,"query_id"')]) is None  # unknown field


def test_a_sink_opened_beside_a_leader_leaves_its_batch_being_written_alone(tmp_path: Path) -> None:
    """A standby (`project --once` from cron, a second worker) opening the lake deleted the leader's written but
    not yet committed file; the leader then committed a checkpoint past events no file held: lost for good."""
    log_dir = _log_with(tmp_path, 3)
    lake = tmp_path / "lake"
    leader = ParquetSink(lake).open()
    batch = LogReader(log_dir).read({})
    written_not_committed: list[Path] = []
    real_write = pq.write_table

    def write_then_open_a_standby(table: Any, where: Any, **kw: Any) -> None:
        real_write(table, where, **kw)
        written_not_committed.append(Path(where))
        ParquetSink(lake).open().close()  # the standby starts now

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pq, "write_table", write_then_open_a_standby)
        Projector(LogReader(log_dir), leader).run_once()
    leader.close()
    assert written_not_committed and sorted(_lake_ids(lake)) == sorted(codec.decode(x).event_id for x in batch.lines)


def test_a_standby_that_takes_the_lead_resumes_where_the_leader_stopped(tmp_path: Path) -> None:
    """Both opened at start; the first led and projected; when it stopped, the second resumed from its own (stale)
    checkpoint and wrote every event again: 26,665 duplicates in a two-worker failover."""
    log_dir = _log_with(tmp_path, 5)
    lake, lock = tmp_path / "lake", tmp_path / "parquet.lock"
    first = Projector(LogReader(log_dir), ParquetSink(lake).open(), lock_path=lock)
    second = Projector(LogReader(log_dir), ParquetSink(lake).open(), lock_path=lock)  # a standby since start
    assert first.try_lead() and not second.try_lead()
    first.catch_up()
    first.stop(drain_timeout_s=None)
    first.sink.close()
    with EventLog(log_dir) as log:
        log.append(QueryReceived(query_id="q-late", query_text="after the failover"))
    assert second.try_lead()
    second.catch_up()
    second.stop(drain_timeout_s=None)
    second.sink.close()
    ids = _lake_ids(lake)
    assert len(ids) == len(set(ids)) == 11
