"""Housekeeping of a data directory: the log trimmed behind the durable projections, lake retention applied, and
what it did on /metrics and /healthz."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Collection
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.housekeeping import Housekeeper, LogCollector, load_totals, log_holders, run_housekeeping
from querylog.logging.metrics import MetricsProjection
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import CheckpointFile, Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.sinks import MetricsSink
from querylog.logging.tracker import QueryTracker
from querylog.service.app import create_app


def _write(settings: Settings, n: int, *, writers: int = 1) -> None:
    for w in range(writers):  # each writer its own segment, finished when it closes
        with EventLog(settings.log_dir) as log:
            tracker = QueryTracker(log)
            for i in range(n):
                with tracker.query(f"삼성전자 {w}-{i}", user_id="u-1") as q:
                    q.classified("stock_analysis", 0.9)


def _project(settings: Settings) -> None:
    """The lake and the metrics snapshot catch up with the log, as a running service's would."""
    with ParquetSink(settings.lake_dir) as sink:
        Projector(LogReader(settings.log_dir), sink).catch_up()
    metrics = MetricsSink(MetricsProjection(), snapshot_path=settings.metrics_snapshot_path, log_dir=settings.log_dir)
    with metrics:
        Projector(LogReader(settings.log_dir), metrics).catch_up()


def _age(settings: Settings, seconds: float, *, except_: Collection[Path] = ()) -> None:
    """Make every segment (but those in `except_`) look written and created `seconds` ago (their names carry the
    creation time)."""
    then = time.time() - seconds
    for path in set(LogReader(settings.log_dir).segments()) - set(except_):
        os.utime(path, (then, then))
        stamp, rest = path.name.split("-", 1)
        path.rename(path.with_name(f"{int(stamp) - int(seconds * 1e9):020d}-{rest}"))


def _lake_events(settings: Settings) -> int:
    with Catalog(settings.lake_dir) as catalog:
        return int(catalog.query("select count(*) from events")[1][0][0])


def test_with_zero_retention_only_what_the_lake_has_is_trimmed_and_the_lake_keeps_every_event(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False, log_retention="0s")
    _write(settings, 5, writers=3)
    _age(settings, 120)
    assert run_housekeeping(settings).trim.delete == ()  # the lake has nothing yet: the log holds
    _project(settings)
    report = run_housekeeping(settings)
    assert len(report.trim.delete) == 3 and LogReader(settings.log_dir).segments() == []
    assert _lake_events(settings) == 3 * 5 * 3  # received, classified, completed
    totals = load_totals(settings)
    assert totals.trimmed_segments == 3 and totals.trimmed_bytes > 0 and totals.forced == {}


def test_trimming_an_empty_segment_moves_no_event_out_and_not_the_time_reconcile_compares_from(
    tmp_path: Path,
) -> None:
    """A 0-byte segment trimmed now set the log's trimmed-through time to now: reconcile then compared only what came
    after, though the log still held every event before it."""
    settings = Settings(home=tmp_path, stdout_events=False, log_retention="0s")
    _write(settings, 5)
    _age(settings, 3 * 3600)
    _project(settings)
    run_housekeeping(settings)
    through = load_totals(settings).trimmed_through
    assert 0 < through < time.time() - 3 * 3600 + 60
    (settings.log_dir / f"{time.time_ns():020d}-4242-0a1b2c.jsonl").touch()  # a writer that wrote nothing
    assert len(run_housekeeping(settings, now=time.time() + 60).trim.delete) == 1
    assert load_totals(settings).trimmed_through == through


def test_every_configured_durable_projection_holds_the_log(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=True, loki_url="http://loki:3100", log_retention="0s")
    _write(settings, 3, writers=2)
    _age(settings, 120)
    _project(settings)
    assert [h.name for h in log_holders(settings)] == ["parquet", "loki", "stdout", "metrics"]
    assert run_housekeeping(settings).trim.delete == ()  # Loki and stdout have committed nothing
    end = LogReader(settings.log_dir).end_checkpoint()
    CheckpointFile(settings.state_dir / "checkpoints" / "stdout.json").save(end)
    first = sorted(end)[0]
    CheckpointFile(settings.state_dir / "checkpoints" / "loki.json").save({first: end[first]})  # Loki: one segment
    report = run_housekeeping(settings)
    assert [s.name for s in report.trim.delete] == [first]
    assert report.trim.behind_seconds["loki"] > 100 and report.trim.behind_seconds["parquet"] == 0


def test_over_the_cap_the_lake_decides_and_the_loss_to_loki_is_counted_on_metrics(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False, loki_url="http://loki:3100", log_max_gb=1e-9)
    _write(settings, 3, writers=2)
    _age(settings, 120)
    _project(settings)
    report = run_housekeeping(settings)  # retention 7d: only the cap deletes
    assert len(report.trim.delete) == 2 and report.trim.forced == {"loki": 2}
    families = {
        f.name: f for f in text_string_to_metric_families(_exposition(settings)) if f.name.startswith("querylog_log_")
    }
    forced = {s.labels["projection"]: s.value for s in families["querylog_log_forced_trims"].samples}
    assert forced == {"loki": 2.0, "metrics": 0.0, "parquet": 0.0}  # every holder, from zero
    assert families["querylog_log_segments"].samples[0].value == 0


def _exposition(settings: Settings) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(LogCollector(settings, "querylog"))
    return generate_latest(registry).decode()


def test_lake_retention_follows_querylog_retention(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False, retention="2d")
    with EventLog(settings.log_dir) as log:
        tracker = QueryTracker(log)
        from datetime import UTC, datetime, timedelta

        from querylog.logging.events import QueryReceived

        old = datetime.now(UTC) - timedelta(days=10)
        log.append(QueryReceived(query_id="old", query_text="지난달", ts=old))
        with tracker.query("오늘"):
            pass
    _project(settings)
    assert settings.log_retention_s == 2 * 86_400  # the log never keeps longer than QUERYLOG_RETENTION either
    report = run_housekeeping(settings)
    assert report.lake_days_removed == [(old.date()).isoformat()]
    with Catalog(settings.lake_dir) as catalog:
        assert catalog.query("select distinct query_id = 'old' from events")[1] == [(False,)]


@pytest.mark.parametrize("auto_compact", [True, False])
def test_the_running_service_merges_the_lakes_closed_hours_unless_told_not_to(
    tmp_path: Path, auto_compact: bool
) -> None:
    """Nothing merged the lake unless `querylog compact` ran from cron: a day of traffic was tens of thousands of
    files that every search and explorer page listed and opened (a search over 7,000 took 30-60 s)."""
    from datetime import UTC, datetime, timedelta

    from querylog.logging.events import QueryReceived
    from querylog.logging.projection import Batch

    settings = Settings(home=tmp_path, stdout_events=False, auto_compact=auto_compact)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=5, second=0, microsecond=0)
    with ParquetSink(settings.lake_dir) as sink:
        for n in range(5):  # five commits: five files in that hour
            event = QueryReceived(query_id=f"q-{n}", query_text="삼성전자", ts=hour + timedelta(minutes=n))
            sink.write(Batch(events=[event], checkpoint={"a.jsonl": n + 1}))
    files = lambda: len(list((settings.lake_dir / "events").rglob("*.parquet")))  # noqa: E731
    assert files() == 5
    report = run_housekeeping(settings)
    assert (report.lake_hours_compacted, files()) == ((1, 1) if auto_compact else (0, 5))
    assert _lake_events(settings) == 5


def test_the_running_service_merges_an_hour_minutes_after_it_closed_not_an_hour(tmp_path: Path) -> None:
    """Hours were merged an hour after they closed: readers met two hours of a file a second (the explorer took 86 s
    to open over 700 of them, 6-12 s once merged). Five minutes after: at most the open hour is many files."""
    from datetime import UTC, datetime, timedelta

    from querylog.logging.events import QueryReceived
    from querylog.logging.projection import Batch

    settings = Settings(home=tmp_path, stdout_events=False)
    start = datetime(2026, 12, 7, 4, tzinfo=UTC)
    with ParquetSink(settings.lake_dir) as sink:
        for n in range(6):  # three files in hour 04, three in hour 05 (the open hour)
            event = QueryReceived(query_id=f"q-{n}", query_text="삼성전자", ts=start + timedelta(minutes=5 + 20 * n))
            sink.write(Batch(events=[event], checkpoint={"a.jsonl": n + 1}))
    files = lambda hour: len(list((settings.lake_dir / "events").glob(f"date=*/hour={hour}/*.parquet")))  # noqa: E731
    at = lambda minutes: (start + timedelta(hours=1, minutes=minutes)).timestamp()  # noqa: E731
    assert run_housekeeping(settings, now=at(2)).lake_hours_compacted == 0  # its events may still be on their way
    assert run_housekeeping(settings, now=at(10)).lake_hours_compacted == 1
    assert (files("04"), files("05")) == (1, 3)
    assert _lake_events(settings) == 6


def test_a_round_that_finds_the_lake_busy_leaves_its_hours_to_the_next(tmp_path: Path) -> None:
    """A `querylog compact` from cron holding the lake made each round log `lake_compaction_failed` as an error."""
    import fcntl
    from datetime import UTC, datetime, timedelta

    from structlog.testing import capture_logs

    from querylog.logging.events import QueryReceived
    from querylog.logging.projection import Batch

    settings = Settings(home=tmp_path, stdout_events=False)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=5, second=0, microsecond=0)
    with ParquetSink(settings.lake_dir) as sink:
        for n in range(3):
            event = QueryReceived(query_id=f"q-{n}", query_text="네이버", ts=hour + timedelta(minutes=n))
            sink.write(Batch(events=[event], checkpoint={"a.jsonl": n + 1}))
    with (settings.lake_dir / "_querylog" / "upkeep.lock").open("a") as held, capture_logs() as logs:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert run_housekeeping(settings).lake_hours_compacted == 0
    assert [e["log_level"] for e in logs if e["event"].startswith("lake_compaction")] == ["info"]
    assert run_housekeeping(settings).lake_hours_compacted == 1  # once the lake is free


def test_one_process_leads_and_a_failure_never_escapes(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False)
    first, second = Housekeeper(settings), Housekeeper(settings)
    try:
        assert first.run_once() is not None
        assert second.run_once() is None  # another process (here: object) holds the lock
    finally:
        first.stop()
    (settings.state_dir / "housekeeping.json").unlink()
    (settings.state_dir / "housekeeping.json").mkdir()  # its totals cannot be written: the round fails
    broken = Housekeeper(settings)
    try:
        assert broken.run_once() is None and broken.errors == 1  # counted and logged, not raised
    finally:
        broken.stop()


def test_healthz_says_degraded_when_the_lake_is_behind_and_the_log_is_over_its_cap(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, env="test", stdout_events=False, projections="none", log_max_gb=1e-9)
    _write(settings, 2)
    with TestClient(create_app(settings, environ={})) as client:
        body = client.get("/healthz").json()
    assert body["status"] == "degraded" and body["log"]["over_cap"] and body["log"]["segments"] >= 1
    healthy = dataclasses.replace(settings, log_max_gb=None)
    with TestClient(create_app(healthy, environ={})) as client:
        body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["log"]["held_back_by"] == []


def test_a_cap_trim_does_not_count_as_lost_what_the_running_metrics_fold_has_read(tmp_path: Path) -> None:
    """The fold's snapshot (its hold on the log) is written every 30 s and not while idle: a cap trim between two
    counted segments the fold had read as lost to it, and QuerylogLogForcedTrim fired for metrics."""
    settings = Settings(home=tmp_path, stdout_events=False, log_max_gb=1e-9)
    _write(settings, 3, writers=2)
    _age(settings, 120)
    with ParquetSink(settings.lake_dir) as lake:
        Projector(LogReader(settings.log_dir), lake).catch_up()
    fold = MetricsSink(
        MetricsProjection(), snapshot_path=settings.metrics_snapshot_path, log_dir=settings.log_dir,
        snapshot_every_s=3600,
    )  # fmt: skip
    with fold:
        Projector(LogReader(settings.log_dir), fold).catch_up()  # read it all; no snapshot written yet
        assert not settings.metrics_snapshot_path.exists()
        report = Housekeeper(settings, before_trim=fold.snapshot_if_moved).run_once()
    assert report is not None and len(report.trim.delete) == 2
    assert report.trim.forced == {}  # the fold had read both segments: nothing lost to it


def test_metrics_folded_again_after_an_erasure_say_their_counters_start_lower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `querylog erase`, a lost snapshot made the fold start over without the blanked events: counters stepped
    down (Prometheus read a reset and a spike) without a word. Counted and logged; a fold without erasures is not."""
    from querylog.erase import erase
    from querylog.runtime import metrics_projector

    settings = Settings(home=tmp_path, stdout_events=False)
    _write(settings, 3)

    def folded_again() -> dict[str, int]:
        projector = metrics_projector(settings, LogReader(settings.log_dir), MetricsProjection(), elected=False)
        try:
            projector.catch_up()
            return projector.sink.telemetry.snapshot().fallbacks
        finally:
            projector.stop(drain_timeout_s=None)
            projector.sink.close()

    assert folded_again() == {}  # no snapshot yet, nothing erased: the log holds every event
    settings.metrics_snapshot_path.unlink()
    assert erase(settings, user_ids=["u-1"], skip_loki=True).log_events > 0
    settings.metrics_snapshot_path.unlink(missing_ok=True)
    capsys.readouterr()
    assert folded_again() == {"snapshot_missing_after_erasure": 1}
    assert "metrics_folded_after_erasure" in capsys.readouterr().out


def test_an_unreadable_snapshot_after_a_trim_restarts_the_metrics_from_the_lake_not_from_zero(tmp_path: Path) -> None:
    """With the log trimmed, a damaged metrics snapshot set every counter back to what the log still held (0): the
    counters went back across a restart, which docs/reliability.md promises they never do."""
    from querylog.runtime import metrics_projector

    settings = Settings(home=tmp_path, stdout_events=False, log_retention="0s")
    _write(settings, 4, writers=2)
    _age(settings, 120)
    _project(settings)
    assert len(run_housekeeping(settings).trim.delete) == 2  # the log holds nothing now
    _write(settings, 1)  # and then one more query, which the lake has not
    settings.metrics_snapshot_path.write_text("{bad")

    def received(projection: MetricsProjection) -> float:
        (family,) = [
            f for f in text_string_to_metric_families(projection.exposition().decode()) if f.name == "querylog_events"
        ]
        return sum(s.value for s in family.samples if s.labels.get("event_type") == "query_received")

    projection = MetricsProjection()
    projector = metrics_projector(settings, LogReader(settings.log_dir), projection, elected=False)
    try:
        projector.catch_up()
        assert received(projection) == 2 * 4 + 1  # the lake's eight, then the log's one: each once
        assert projector.sink.telemetry.snapshot().fallbacks == {"snapshot_missing_log_trimmed": 1}
    finally:
        projector.stop(drain_timeout_s=None)
        projector.sink.close()


def test_a_snapshot_older_than_a_trim_over_the_cap_is_not_started_from_the_lake_is(tmp_path: Path) -> None:
    """A fold that had read on past its snapshot died; a trim over the cap then deleted what the snapshot had not
    folded (counted as forced for metrics). The next start loaded the snapshot: the counters went from 6 queries
    served to 3 for good, without a word (walk; `QUERYLOG_PROJECTIONS=none`, `project --once` trimming)."""
    from querylog.runtime import metrics_projector

    settings = Settings(home=tmp_path, stdout_events=False, log_max_gb=1e-9)
    _write(settings, 3)
    _age(settings, 120)
    _project(settings)  # the lake and the snapshot hold the first three
    first = LogReader(settings.log_dir).segments()
    _write(settings, 3)
    _age(settings, 60, except_=first)
    with ParquetSink(settings.lake_dir) as lake:  # the lake has the next three; the snapshot does not
        Projector(LogReader(settings.log_dir), lake).catch_up()
    assert run_housekeeping(settings).trim.forced == {"metrics": 1}
    projection = MetricsProjection()
    projector = metrics_projector(settings, LogReader(settings.log_dir), projection, elected=False)
    try:
        projector.catch_up()
        received = next(
            sum(s.value for s in f.samples if s.labels.get("event_type") == "query_received")
            for f in text_string_to_metric_families(projection.exposition().decode())
            if f.name == "querylog_events"
        )
        assert received == 6
        assert projector.sink.telemetry.snapshot().fallbacks == {"snapshot_behind_forced_trim": 1}
    finally:
        projector.stop(drain_timeout_s=None)
        projector.sink.close()


def test_metrics_restored_from_the_lake_are_snapshotted_though_no_event_comes(tmp_path: Path) -> None:
    """An idle server that had folded the lake (no snapshot, the log trimmed) left no snapshot on a clean stop: the
    next start folded the lake again, and the log's trimming waited for a snapshot meanwhile."""
    from querylog.runtime import metrics_projector

    settings = Settings(home=tmp_path, stdout_events=False, log_retention="0s")
    _write(settings, 4, writers=2)
    _age(settings, 120)
    _project(settings)
    assert len(run_housekeeping(settings).trim.delete) == 2  # the log holds nothing now
    settings.metrics_snapshot_path.unlink()
    for fallbacks in ({"snapshot_missing_log_trimmed": 1}, {}):  # the lake folded once, then the snapshot loaded
        projector = metrics_projector(settings, LogReader(settings.log_dir), MetricsProjection(), elected=False)
        try:
            projector.catch_up()  # nothing in the log: no event comes
            assert projector.sink.telemetry.snapshot().fallbacks == fallbacks
        finally:
            projector.stop(drain_timeout_s=None)
            projector.sink.close()
        assert settings.metrics_snapshot_path.exists()


def test_damaged_totals_are_counted_afresh_and_said_once(tmp_path: Path) -> None:
    """A damaged `state/housekeeping.json` read as no trim at all, without a word: the metrics fold and `replay
    --from auto` then take a trimmed log for the whole history."""
    from structlog.testing import capture_logs

    settings = Settings(home=tmp_path, stdout_events=False)
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "housekeeping.json").write_text('{"trimmed_segments": "x"}')
    with capture_logs() as logs:
        assert load_totals(settings).trimmed_segments == 0
        assert load_totals(settings).trimmed_segments == 0
    said = [e for e in logs if e["event"] == "housekeeping_totals_unreadable"]
    assert len(said) == 1 and said[0]["path"].endswith("housekeeping.json")
