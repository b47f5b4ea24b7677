"""The lake read back as events: every field as it was written, so replays need no log."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from querylog.lake_events import lake_events
from querylog.logging.codec import decode
from querylog.logging.events import QueryReceived, ResponseGenerated, SearchCompleted, Source
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.tracker import QueryTracker


def test_every_event_comes_back_as_it_was_logged(tmp_path: Path) -> None:
    log_dir, lake = tmp_path / "log", tmp_path / "lake"
    day = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log, release="r1", tags=["beta"], attributes={"k": "v"})
        with tracker.query("삼성전자 전망", user_id="u-1", session_id="s-1") as q:
            q.classified("stock_analysis", 0.9)
            q.searched(
                1, sources=[Source(doc_id="d-1", title="제목", score=1.5, rank=1)], backend_durations_ms={"a": 1}
            )
            q.responded(model="gpt-4o", input_tokens=10, output_tokens=5, answer="답변", cost_usd=0.5)
        with tracker.query("no cost recorded") as q:
            q.responded(model="gpt-4o", input_tokens=10, output_tokens=5)
        # A search whose count is unknown (an OTLP retrieval that lists no documents): null, required all the same.
        log.append(SearchCompleted(query_id="q-otlp", result_count=None, ts=day + timedelta(seconds=1)))
        log.append(QueryReceived(query_id="q-old", query_text="yesterday", ts=day, schema_version=1))
        log.append(QueryReceived(query_id="q-new", query_text="tomorrow", ts=day + timedelta(seconds=2)))
    with ParquetSink(lake) as sink:
        Projector(LogReader(log_dir), sink).catch_up()
    logged = sorted(
        (decode(line) for b in LogReader(log_dir).iter_all() for line in b.lines), key=lambda e: (e.ts, e.event_id)
    )
    read = [e for batch in lake_events(lake) for e in batch]
    assert read == logged  # the priced cost of the second answer is the lake's, not put back into the event
    responses = [e for e in read if isinstance(e, ResponseGenerated)]
    assert [r.cost_usd for r in responses] == [0.5, None]
    assert any(isinstance(e, SearchCompleted) and e.sources for e in read)
    assert [e.result_count for e in read if isinstance(e, SearchCompleted)] == [None, 1]
    later = [e.query_id for batch in lake_events(lake, since=day + timedelta(seconds=1)) for e in batch]
    assert "q-old" not in later and "q-new" in later


def test_replay_parquet_from_the_lake_reprices_history_the_log_no_longer_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import time

    from querylog.analytics.catalog import Catalog
    from querylog.cli import main
    from querylog.config import Settings
    from querylog.housekeeping import run_housekeeping
    from querylog.runtime import Runtime

    settings = Settings(home=tmp_path / "home", stdout_events=False, log_retention="0s")
    with Runtime(settings) as runtime:
        for i in range(5):
            with runtime.tracker.query(f"질문 {i}") as q:
                q.responded(model="our-own-llm", input_tokens=1_000_000, output_tokens=0)
    run_housekeeping(settings, now=time.time() + 3_600)
    assert LogReader(settings.log_dir).segments() == []  # the log is gone: only the lake has the history
    position = ParquetSink.committed_checkpoint(settings.lake_dir)

    def costs() -> list[tuple[float | None, str | None]]:
        with Catalog(settings.lake_dir) as catalog:
            return catalog.query("select cost_usd, cost_source from events where event_type = 'response_generated'")[1]

    assert costs() == [(None, None)] * 5  # not in the bundled table
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"version": "ours-1", "prices": [
        {"model": "our-own-llm", "effective_from": "2020-01-01", "input": 2.0, "output": 0.0}]}))  # fmt: skip
    capsys.readouterr()
    assert main(["--home", str(settings.home), "replay", "parquet"]) == 1  # the log lost history: refused
    err = capsys.readouterr().err
    assert "part of the log is gone" in err and "querylog replay parquet --from lake" in err
    monkeypatch.setenv("QUERYLOG_PRICES", str(prices))
    assert main(["--home", str(settings.home), "replay", "parquet", "--from", "lake"]) == 0
    assert "100% of the lake" in capsys.readouterr().err
    assert costs() == [(2.0, "price_table:ours-1")] * 5
    assert ParquetSink.committed_checkpoint(settings.lake_dir) == position  # the projection goes on from there


def test_a_rebuild_is_refused_while_the_service_runs_even_before_a_projection_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # QUERYLOG_PROJECTIONS=none: the API runs, no process runs the Parquet projection yet (as with a projector child
    # still starting). The service holds its own lock for as long as it runs; the rebuild sees it.
    from querylog.cli import main
    from querylog.config import Settings
    from querylog.runtime import Runtime

    settings = Settings(home=tmp_path / "home", stdout_events=False, projections="none")
    with Runtime(settings) as runtime:
        with runtime.tracker.query("삼성전자 실적"):
            pass
        capsys.readouterr()
        assert main(["--home", str(settings.home), "replay", "parquet"]) == 2  # it could not start
        err = capsys.readouterr().err
        assert "querylog is running on this data directory" in err
        assert "rebuilding" not in err  # it said "rebuilding …" first, then that it would not
    assert main(["--home", str(settings.home), "replay", "parquet"]) == 0  # stopped: the rebuild goes ahead
    assert f"rebuilding {settings.lake_dir}" in capsys.readouterr().err


def test_a_lake_a_stopped_rebuild_left_aside_is_put_back_before_the_projection_makes_a_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from querylog.cli import main
    from querylog.config import Settings
    from querylog.runtime import Runtime

    settings = Settings(home=tmp_path / "home", stdout_events=False, projections="thread")
    with Runtime(settings) as runtime:
        for i in range(5):
            with runtime.tracker.query(f"삼성전자 실적 {i}"):
                pass
    home, events = settings.home, 10
    shutil.rmtree(settings.log_dir)  # trimmed: the lake alone holds these events now
    # `replay parquet` stopped between its two renames: the live lake put aside, the rebuilt one not yet in place.
    shutil.copytree(settings.lake_dir, home / "lake.rebuild")
    settings.lake_dir.rename(home / "lake.previous")
    with Runtime(settings):  # the Parquet projection opens the lake
        pass
    assert not (home / "lake.previous").exists()
    capsys.readouterr()
    assert main(["--home", str(home), "sql", "select count(*) as n from events", "--format", "json"]) == 0
    assert f'"n":{events}' in capsys.readouterr().out.replace(" ", "")  # not a new, empty lake
    assert main(["--home", str(home), "replay", "parquet", "--from", "lake"]) == 0
    assert not (home / "lake.rebuild").exists() and not (home / "lake.discarded").exists()
    # A lake beside one put aside (made by an earlier release's start-up): neither is deleted, the user is told.
    shutil.copytree(settings.lake_dir, home / "lake.previous")
    capsys.readouterr()
    assert main(["--home", str(home), "replay", "parquet", "--from", "lake"]) == 2
    assert "lake.previous is the lake a `querylog replay parquet` stopped midway put aside" in capsys.readouterr().err
    assert main(["--home", str(home), "serve", "--port", "0"]) == 2
    assert (home / "lake.previous").is_dir() and settings.lake_dir.is_dir()


def test_a_rebuild_from_a_trimmed_log_holding_as_many_new_events_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check compared counts: a log trimmed of 5 queries' events and holding 5 new, not yet projected, had as
    many events as the lake, and `replay parquet` swapped in a lake of the new ones only, the history gone."""
    from querylog.analytics.catalog import Catalog
    from querylog.cli import main
    from querylog.config import Settings
    from querylog.housekeeping import run_housekeeping
    from querylog.runtime import Runtime

    settings = Settings(home=tmp_path / "home", stdout_events=False, log_retention="0s")
    with Runtime(settings) as runtime:
        for i in range(5):
            with runtime.tracker.query(f"옛 질문 {i}"):
                pass
    run_housekeeping(settings, now=time.time() + 3_600)
    assert LogReader(settings.log_dir).segments() == []
    with EventLog(settings.log_dir) as log:  # written while no projection ran
        for i in range(6):
            with QueryTracker(log).query(f"새 질문 {i}"):
                pass
    capsys.readouterr()
    assert main(["--home", str(settings.home), "replay", "parquet"]) == 1
    assert "the lake holds 10 events the log no longer has" in capsys.readouterr().err
    with Catalog(settings.lake_dir) as catalog:  # unchanged: the history is still there
        assert catalog.query("select count(*) from queries where query_text like '옛 질문%'")[1] == [(5,)]


def test_a_rebuild_from_the_log_mends_a_lake_file_damaged_inside_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The by-id check read the live lake's data pages: a file damaged inside (its footer whole) stopped the very
    rebuild that mends it, and the CLI's advice for a damaged file was to run it."""
    import struct

    from querylog.analytics.catalog import Catalog
    from querylog.cli import main
    from querylog.config import Settings
    from querylog.runtime import Runtime

    settings = Settings(home=tmp_path / "home", stdout_events=False)
    with Runtime(settings) as runtime:
        for i in range(5):
            with runtime.tracker.query(f"질문 {i}"):
                pass
    (damaged,) = (settings.lake_dir / "events").rglob("*.parquet")
    data = bytearray(damaged.read_bytes())
    footer = struct.unpack("<I", data[-8:-4])[0]
    data[4 : len(data) - 8 - footer] = bytes(len(data) - 12 - footer)  # every page zeroed, the footer whole
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["--home", str(settings.home), "replay", "parquet"]) == 0
    err = capsys.readouterr().err
    assert f"1 damaged file(s) of the old lake could not be read to check them ({damaged})" in err
    with Catalog(settings.lake_dir) as catalog:
        assert catalog.query("select count(*) from queries")[1] == [(5,)]
    assert not list(settings.home.glob("lake.rebuild*"))  # the check's spill directory is gone too
