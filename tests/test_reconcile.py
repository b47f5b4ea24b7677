"""`querylog reconcile`: clean when the projections agree with the log, exit 1 when one does not."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.support.http_server import answering, serving
from tests.support.loki_query import queryable_loki

from querylog.analytics.catalog import Catalog
from querylog.analytics.queries import parse_since
from querylog.analytics.upkeep import retained_from
from querylog.cli import main
from querylog.config import Settings
from querylog.logging.events import IntentClassified, QueryCompleted, QueryFailed, QueryReceived, prechecked
from querylog.logging.loki import LokiOptions, LokiSink
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.reconcile import (
    ARRIVAL_ORDER,
    LOKI_WINDOW,
    ReconcileReport,
    count_events,
    count_metrics,
    history_floor,
    reconcile,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        for i in range(12):
            qid = f"q-{i}"
            log.append(QueryReceived(query_id=qid, query_text="삼성전자"))
            log.append(
                IntentClassified(query_id=qid, intent="stock_analysis" if i % 3 else "news_inquiry", confidence=0.9)
            )
            if i == 5:
                log.append(QueryFailed(query_id=qid, error_type="TimeoutError"))  # no intent on the event itself
            else:
                log.append(
                    QueryCompleted(
                        query_id=qid,
                        latency_ms=3.0,
                        intent=None if i == 7 else "stock_analysis" if i % 3 else "news_inquiry",
                    )
                )
        log.flush()
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    return home


def test_counts_attribute_intent_from_the_terminal_event_else_the_classification() -> None:
    events = [
        IntentClassified(query_id="a", intent="news_inquiry", confidence=1.0),
        QueryFailed(query_id="a", error_type="E"),
        QueryCompleted(query_id="b", latency_ms=1.0),
    ]
    counts = count_events(events)
    assert counts.intents == {"news_inquiry": 1, "unclassified": 1}
    assert counts.events == {"intent_classified": 1, "query_failed": 1, "query_completed": 1}


def test_a_query_whose_end_came_before_its_classification_is_counted_by_it_save_in_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A producer that sends a query's events out of order (`POST /v1/events` asks no order): the lake counts it by
    its classification, the metrics (a fold) as unclassified; reconcile compared both with the fold's count."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        for i in range(4):
            end = QueryCompleted(query_id=f"q-{i}", latency_ms=3.0)  # no intent of its own
            classified = IntentClassified(query_id=f"q-{i}", intent="stock_analysis", confidence=0.9)
            for event in (end, classified) if i % 2 else (classified, end):
                log.append(event)
        log.flush()
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    report = reconcile(Settings(home=home))
    assert report.clean
    assert report.sources["log"].intents == report.sources["lake"].intents == {"stock_analysis": 4}
    assert report.sources["metrics"].intents == {"stock_analysis": 2, "unclassified": 2}
    assert report.baselines == {"metrics": ARRIVAL_ORDER}
    assert main(["reconcile"]) == 0
    assert ARRIVAL_ORDER in capsys.readouterr().err


def test_reconcile_is_clean_when_everything_agrees(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile"]) == 0
    out = capsys.readouterr().out
    assert "DIFFERS" not in out and "query_received" in out and "stock_analysis" in out


def test_reconcile_exits_1_and_names_the_row_when_the_lake_lost_a_file(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted((home / "lake" / "events").glob("date=*/hour=*/*.parquet"))
    files[0].unlink()
    assert main(["reconcile"]) == 1
    captured = capsys.readouterr()
    assert "DIFFERS" in captured.out and "disagree" in captured.err
    # Its events are seconds old: the stores, read one after another under traffic, may differ by that alone.
    assert "events were still arriving" in captured.err


def test_a_difference_just_after_an_erasure_is_put_down_to_it_not_to_traffic(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On an idle server, reconcile after `erase` said "events were still arriving": the only write was the erasure
    blanking the log. Traffic written since, or just before the erasure, still says traffic; so does an erasure that
    blanked nothing."""

    def quiet_for_an_hour() -> None:
        hour_ago = time.time() - 3600
        for segment in (home / "log").glob("*.jsonl"):
            os.utime(segment, (hour_ago, hour_ago))

    def said() -> str:
        capsys.readouterr()
        assert main(["reconcile"]) == 1
        return capsys.readouterr().err

    quiet_for_an_hour()
    assert main(["erase", "--query-id", "q-1"]) == 0
    files = sorted((home / "lake" / "events").glob("date=*/hour=*/*.parquet"))
    files[0].unlink()  # a difference of any kind (the metrics a server counted before the erasure, in real use)
    err = said()
    assert "by an erasure (state/erasures.jsonl), not by traffic" in err and "still arriving" not in err
    with EventLog(home / "log") as log:
        log.append(QueryReceived(query_id="q-new", query_text="카카오"))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    err = said()
    assert "events were still arriving" in err and "by an erasure" not in err
    assert main(["erase", "--query-id", "q-nobody"]) == 0  # blanks nothing: the last write is still the traffic's
    err = said()
    assert "events were still arriving" in err and "by an erasure" not in err
    assert main(["erase", "--query-id", "q-new"]) == 0  # right after traffic: the stores may lag that traffic
    err = said()
    assert "events were still arriving" in err and "by an erasure" not in err


def test_erasures_in_a_row_or_run_again_are_still_the_logs_last_write_and_traffic_during_one_is_traffic(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second erasure took the first one's blanking for traffic; one run again that blanked nothing hid the
    first; and an event appended while an erasure scanned the log was put down to the erasure."""
    import querylog.erase as erasing

    hour_ago = time.time() - 3600
    for segment in (home / "log").glob("*.jsonl"):
        os.utime(segment, (hour_ago, hour_ago))
    sorted((home / "lake" / "events").glob("date=*/hour=*/*.parquet"))[0].unlink()  # a difference to explain

    def said() -> str:
        capsys.readouterr()
        assert main(["reconcile"]) == 1
        return capsys.readouterr().err

    assert main(["erase", "--query-id", "q-1"]) == 0
    assert main(["erase", "--query-id", "q-2"]) == 0
    assert "by an erasure (state/erasures.jsonl), not by traffic" in said()
    assert main(["erase", "--query-id", "q-2"]) == 0  # the same again: finds nothing, blanks nothing
    assert "by an erasure (state/erasures.jsonl), not by traffic" in said()
    blank = erasing.erase_from_log

    def traffic_meanwhile(directory: Path, subjects: erasing.Subjects) -> object:
        with EventLog(directory) as log:
            log.append(QueryReceived(query_id="q-during", query_text="카카오"))
        return blank(directory, subjects)

    monkeypatch.setattr(erasing, "erase_from_log", traffic_meanwhile)
    assert main(["erase", "--query-id", "q-3", "--wait", "0"]) == 1  # q-during is not projected: it says so
    err = said()
    assert "events were still arriving" in err and "by an erasure" not in err


def test_a_difference_among_old_events_is_not_put_down_to_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under live traffic reconcile exited 1 naming an erasure or a resend: it says events were arriving then; not
    when the log was last written long ago, whatever its events' times (a producer's clock may run ahead)."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    old = datetime.now(UTC) - timedelta(hours=2)
    with EventLog(home / "log") as log:
        for i in range(2):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="삼성전자", ts=old + timedelta(hours=i)))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    sorted((home / "lake" / "events").glob("date=*/hour=*/*.parquet"))[0].unlink()
    for segment in (home / "log").glob("*.jsonl"):  # written two hours ago
        os.utime(segment, (old.timestamp(), old.timestamp()))
    assert main(["reconcile"]) == 1
    assert "events were still arriving" not in capsys.readouterr().err
    # A process that started since opens a segment: no event came with it (a reconcile right after a `serve` start
    # put the difference down to traffic).
    with EventLog(home / "log"):
        pass
    assert main(["reconcile"]) == 1
    assert "events were still arriving" not in capsys.readouterr().err


def test_log_lines_no_store_can_read_are_counted_and_make_the_comparison_fail(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every store skips them alike, so every count agrees; yet each is an event written and held nowhere.
    with EventLog(home / "log") as log:
        log.append(prechecked(QueryCompleted)(query_id="q-x", latency_ms=1.0, result_count=2.5))  # type: ignore[arg-type]
        log.flush()
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    assert main(["reconcile"]) == 1
    captured = capsys.readouterr()
    assert "DIFFERS" not in captured.out
    assert "1 log line(s) could not be read as events" in captured.err and "result_count" in captured.err


def test_reconcile_compares_live_metrics_text(home: Path) -> None:
    settings = Settings.from_env()
    wrong = '# TYPE querylog_events_total counter\nquerylog_events_total{event_type="query_received"} 11.0\n'
    report = reconcile(settings, metrics_text=wrong)
    assert ("events", "query_received") in {(k, key) for k, key, _ in report.disagreements}


def test_events_the_api_s_log_refused_are_said_though_every_store_agrees(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk drops events before the log (the truth): the stores agree without them, and reconcile, given the
    API's /metrics, says how many the log refused, by reason. Other sinks' drops are not the log's."""
    from querylog.logging.codec import decode
    from querylog.logging.metrics import MetricsProjection

    settings = Settings.from_env()
    projection = MetricsProjection(settings.metrics_namespace)
    lines = b"".join(p.read_bytes() for p in sorted(settings.log_dir.glob("*.jsonl"))).splitlines()
    projection.apply([decode(line) for line in lines])
    page = projection.exposition() + (
        b"# TYPE querylog_sink_events_dropped_total counter\n"
        b'querylog_sink_events_dropped_total{sink="log",reason="disk_write_failed"} 3.0\n'
        b'querylog_sink_events_dropped_total{sink="log",reason="buffer_full"} 0.0\n'
        b'querylog_sink_events_dropped_total{sink="loki",reason="too_old"} 5.0\n'
    )
    report = reconcile(settings, metrics_text=page.decode())
    assert report.log_dropped == {"disk_write_failed": 3}
    assert report.clean  # nothing disagrees: the drops are said, not failed on (a producer may have re-sent them)
    with serving(answering(page)) as url:
        assert main(["reconcile", "--metrics-url", f"{url}/metrics"]) == 0
    assert "the API's log refused 3 event(s) since it started (disk_write_failed 3;" in capsys.readouterr().err


def test_the_metrics_counting_erased_events_is_explained_for_good_not_only_just_after_the_erasure(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an erasure the API's counters count the erased events for good (they never go down), so reconcile
    --metrics-url differs for good; it said why only in the minute after the erasure, then nothing."""
    import json

    from querylog.logging.codec import decode
    from querylog.logging.metrics import MetricsProjection

    settings = Settings.from_env()
    projection = MetricsProjection(settings.metrics_namespace)
    lines = b"".join(p.read_bytes() for p in sorted(settings.log_dir.glob("*.jsonl"))).splitlines()
    projection.apply([decode(line) for line in lines])  # what the running API counted before the erasure
    page = projection.exposition()
    hour_ago = time.time() - 3600
    for segment in settings.log_dir.glob("*.jsonl"):
        os.utime(segment, (hour_ago, hour_ago))
    assert main(["erase", "--query-id", "q-1"]) == 0
    audit = settings.state_dir / "erasures.jsonl"
    [entry] = [json.loads(line) for line in audit.read_text().splitlines()]
    entry["ts"] = datetime.fromtimestamp(hour_ago, UTC).isoformat()  # the erasure ran an hour ago
    audit.write_text(json.dumps(entry) + "\n")
    capsys.readouterr()
    with serving(answering(page)) as url:
        assert main(["reconcile", "--metrics-url", f"{url}/metrics"]) == 1
    err = capsys.readouterr().err
    assert "the metrics count 3 more events than the log where they differ: 1 erasure(s) blanked 3 event(s)" in err
    assert "never go down" in err and "still arriving" not in err and "s ago by an erasure" not in err


def test_since_leaves_out_metrics_and_windows_the_counts(home: Path) -> None:
    settings = Settings.from_env()
    report = reconcile(settings, since=datetime.now(UTC) + timedelta(hours=1))
    assert set(report.sources) == {"log", "lake"}
    assert report.clean and report.rows == []


def test_count_metrics_reads_the_exposition() -> None:
    text = (
        '# TYPE querylog_queries_total counter\nquerylog_queries_total{intent="x",status="completed"} 2.0\n'
        'querylog_queries_total{intent="x",status="failed"} 1.0\n'
    )
    assert count_metrics(text, "querylog").intents == {"x": 3}


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),  # the units QUERYLOG_RETENTION takes, there too
        ("2w", timedelta(weeks=2)),
        ("7D", timedelta(days=7)),
    ],
)
def test_since_durations(text: str, delta: timedelta) -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    assert parse_since(text, now=now) == now - delta


def test_since_iso_dates_and_errors() -> None:
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="30m, 12h, 7d or 2w"):
        parse_since("yesterday")
    # Nothing before Unix time: no event is older, and a report's previous window would run past year 1.
    for text in ("25000d", "0001-01-01", "0001-01-01T00:00:00+00:03", "1969-12-31"):
        with pytest.raises(ValueError, match="reaches back before 1970-01-01"):
            parse_since(text)
    for text in ("1000000d", "99999999999999d"):  # past any duration a command takes
        with pytest.raises(ValueError, match="at most 100 years"):
            parse_since(text)
    assert parse_since("1970-01-01") == datetime(1970, 1, 1, tzinfo=UTC)


def test_loki_is_held_to_the_window_it_can_hold_when_the_log_reaches_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A backfill a month old and a producer's clock a day ahead: the Loki projection never pushes those (it counts
    # them as dropped). Reconcile compares Loki with the log's events over the window Loki holds, not with all.
    home = tmp_path / "home"
    now = datetime.now(UTC)
    with EventLog(home / "log") as log:
        for i, ts in enumerate([now - timedelta(days=30), now - timedelta(minutes=5), now + timedelta(days=1)]):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="삼성전자", ts=ts))
            log.append(QueryCompleted(query_id=f"q-{i}", latency_ms=2.0, intent="news_inquiry", ts=ts))
    settings = Settings(home=home, stdout_events=False, service="querylog", env="test")
    loki, options = queryable_loki(), LokiOptions()
    with ParquetSink(settings.lake_dir) as lake:
        Projector(LogReader(settings.log_dir), lake).catch_up()
    with LokiSink("http://loki", env="test", transport=loki.transport(), options=options) as sink:
        Projector(LogReader(settings.log_dir), sink).catch_up()
        assert sink.telemetry.snapshot().dropped == {"too_old": 2, "too_new": 2}
    max_age_s = options.max_age_s - options.clock_margin_s
    with httpx.Client(transport=loki.transport(), base_url="http://loki") as client:
        report = reconcile(settings, loki=client, loki_max_age_s=max_age_s)
        assert report.clean, report.rows
        counts = {(kind, key): c for kind, key, c in report.rows}
        assert counts["events", "query_received"] == {"log": 3, "lake": 3, "metrics": 3, LOKI_WINDOW: 1, "loki": 1}
        assert counts["intents", "news_inquiry"][LOKI_WINDOW] == counts["intents", "news_inquiry"]["loki"] == 1
        # A Loki that lost the window's lines still disagrees.
        with httpx.Client(transport=queryable_loki().transport(), base_url="http://loki") as empty:
            lost = reconcile(settings, loki=empty, loki_max_age_s=max_age_s)
        assert {(kind, key) for kind, key, _ in lost.disagreements} == {
            ("events", "query_received"),
            ("events", "query_completed"),
            ("intents", "news_inquiry"),
        }
        assert lost.loki_surplus == 0  # fewer in Loki: no entries stored twice to explain
        assert lost.loki_shortfall == 2  # what reconcile then points at: the lag, and the drops by reason


def test_a_query_whose_end_leaves_out_its_classified_intent_agrees_with_loki(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`POST /v1/events` takes a query_completed without its intent (it is optional): the log, the lake and the
    metrics count the query under its classification, Loki (one line at a time) under unclassified, and reconcile
    differed for good on a healthy system."""
    home = tmp_path / "home"
    with EventLog(home / "log") as log:
        for i in range(3):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="삼성전자"))
            log.append(IntentClassified(query_id=f"q-{i}", intent="stock_analysis", confidence=0.9))
            log.append(QueryCompleted(query_id=f"q-{i}", latency_ms=12.0))
    settings = Settings(home=home, stdout_events=False, service="querylog", env="test")
    loki = queryable_loki()
    with ParquetSink(settings.lake_dir) as lake:
        Projector(LogReader(settings.log_dir), lake).catch_up()
    with LokiSink("http://loki", env="test", transport=loki.transport(), options=LokiOptions()) as sink:
        Projector(LogReader(settings.log_dir), sink).catch_up()
    with httpx.Client(transport=loki.transport(), base_url="http://loki") as client:
        report = reconcile(settings, loki=client, loki_max_age_s=7 * 86400)
    assert report.clean, report.disagreements
    counts = {(kind, key): c for kind, key, c in report.rows}
    assert counts["intents", "stock_analysis"] == {"log": 3, "lake": 3, "metrics": 3, LOKI_WINDOW: 0, "loki": 0}
    assert counts["intents", "unclassified"][LOKI_WINDOW] == counts["intents", "unclassified"]["loki"] == 3
    # The command says why Loki has a column of its own: the intents, not a window (every event is in it).
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    monkeypatch.setenv("QUERYLOG_ENV", "test")
    monkeypatch.setenv("LOKI_URL", "http://loki")
    monkeypatch.setattr(LokiOptions, "client", lambda self, url: httpx.Client(transport=loki.transport(), base_url=url))
    assert main(["reconcile"]) == 0
    err = capsys.readouterr().err
    assert "Loki's intents are held to the log's as LogQL reads them" in err and "older than Loki accepts" not in err


def test_the_events_loki_counts_beyond_the_log_are_summed_as_its_surplus() -> None:
    """Entries stored twice (sent again after a crash, out of Loki's head block) are what count_over_time counts
    beyond the log: reconcile says so, rather than leave a bare DIFFERS."""
    rows = [
        ("events", "query_received", {"log": 100, "lake": 100, "loki": 103}),
        ("events", "query_completed", {"log": 98, "lake": 98, "loki": 97}),  # fewer: not a surplus
        ("intents", "news_inquiry", {"log": 50, "lake": 50, "loki": 52}),  # the same entries again, by intent
    ]
    report = ReconcileReport(sources={}, rows=rows)
    assert report.loki_surplus == 3 and not report.clean
    assert report.loki_shortfall == 1  # the other way: not shipped yet, or dropped as Loki would refuse it
    windowed = ReconcileReport(
        sources={},
        rows=[("events", "query_received", {"log": 9, LOKI_WINDOW: 5, "loki": 6})],
        baselines={"loki": LOKI_WINDOW},
    )
    assert windowed.loki_surplus == 1


def test_a_log_inside_lokis_window_is_compared_whole_and_an_unreachable_loki_is_named(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env()
    with httpx.Client(transport=queryable_loki().transport(), base_url="http://loki") as client:
        report = reconcile(settings, loki=client, loki_max_age_s=7 * 86400)
    # Every event is in the window: Loki is held to the whole log, its intents as LogQL reads them (two of the
    # fixture's queries end without an intent of their own: Loki cannot see their classification).
    assert report.sources[LOKI_WINDOW].events == report.sources["log"].events and "loki" in report.sources
    assert report.sources[LOKI_WINDOW].intents["unclassified"] == 2
    monkeypatch.setenv("LOKI_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["reconcile"]) == 2
    assert "querylog reconcile: http://127.0.0.1:9/loki/api/v1/query: " in capsys.readouterr().err


def test_a_metrics_url_that_is_not_a_metrics_page_is_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.testing import RecordedLoki

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "log").mkdir(parents=True)  # a home, however empty
    with RecordedLoki().serve() as url:  # answers /ready with a word, not with metrics
        assert main(["reconcile", "--metrics-url", f"{url}/ready"]) == 2
    assert "cannot be compared: " in capsys.readouterr().err
    # querylog's own /healthz: the parser's "Invalid labels: "status":"ok",…" said nothing of the mistake.
    with serving(answering(b'{"status":"ok","checks":{"log":"ok"}}')) as url:
        assert main(["reconcile", "--metrics-url", f"{url}/healthz"]) == 2
    assert "it answered JSON, not Prometheus metrics: is the path querylog's /metrics?" in capsys.readouterr().err
    # Another exporter's page (Prometheus's own): every count read 0 and "12 count(s) disagree", exit 1.
    with serving(answering(b"# TYPE prometheus_build_info gauge\nprometheus_build_info 1\n")) as url:
        assert main(["reconcile", "--metrics-url", f"{url}/metrics"]) == 2
    assert "no querylog_events_total on it: not querylog's metrics" in capsys.readouterr().err
    # querylog's own page before its metrics fold published (a server just started): not "not querylog's".
    with serving(answering(b"# TYPE querylog_log_bytes gauge\nquerylog_log_bytes 0\n")) as url:
        assert main(["reconcile", "--metrics-url", f"{url}/metrics"]) == 2
    assert "no querylog_events_total on it yet: the metrics are starting" in capsys.readouterr().err
    assert main(["reconcile", "--metrics-url", "notaurl"]) == 2
    assert "must be an http(s) URL" in capsys.readouterr().err
    # --since with --metrics-url left the metrics out without a word, while docs/loki.md advised the pair.
    # Then it read them all the same, and failed on an endpoint it had just said it leaves out.
    main(["reconcile", "--since", "1h", "--metrics-url", "http://127.0.0.1:9/metrics"])
    err = capsys.readouterr().err
    assert "--since leaves out the metrics" in err and "127.0.0.1:9" not in err


def test_once_the_log_is_trimmed_the_stores_are_compared_from_where_the_log_holds_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log keeps 7 days by default, the lake more: reconcile compared them over all time and disagreed for good
    once housekeeping had trimmed a segment."""
    import os
    import time

    from querylog.housekeeping import load_totals, run_housekeeping
    from querylog.runtime import Runtime

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_LOG_RETENTION", "1h")
    monkeypatch.setenv("QUERYLOG_STDOUT_EVENTS", "0")
    settings = Settings.from_env(overrides={"projections": "thread"})
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)

    def asked(log: EventLog, n: int, at: datetime | None) -> None:
        for i in range(n):
            when = {"ts": at} if at else {}
            log.append(QueryReceived(query_id=f"q-{at}-{i}", query_text="x", **when))
            log.append(QueryCompleted(query_id=f"q-{at}-{i}", latency_ms=5.0, intent="news", **when))

    with Runtime(settings) as runtime:
        asked(runtime.log, 3, two_hours_ago)
        first = runtime.log.segment
    assert first is not None
    os.utime(first, (two_hours_ago.timestamp(), two_hours_ago.timestamp()))  # last written two hours ago
    with Runtime(settings) as runtime:
        asked(runtime.log, 2, None)
    run_housekeeping(settings, now=time.time() + 5)  # a segment just made is never trimmed
    assert not first.exists() and load_totals(settings).trimmed_segments == 1
    assert main(["reconcile"]) == 0
    out, err = capsys.readouterr()
    assert "compared from" in err and "metrics" in err
    [received] = [line.split("|") for line in out.splitlines() if "query_received" in line]
    assert [cell.strip() for cell in received[3:5]] == ["2", "2"]  # log and lake, from the floor on
    # From the trimmed segment's last write on, with the 2 minutes an event may be dated ahead (the ingest endpoints'
    # bound): a slack of 10 put the floor in the future, and a reconcile right after a trim compared nothing.
    floor = history_floor(settings)
    assert floor is not None and abs((floor - two_hours_ago).total_seconds() - 120) < 1
    # Trimmed by an older release, which noted how many segments but not how far: reconcile said "log 2, lake 5",
    # exit 1, until this one trimmed a segment itself, a week later by default. The segment left began just now:
    # nothing is compared yet, and it says why.
    totals = settings.state_dir / "housekeeping.json"
    older = json.loads(totals.read_text())
    del older["trimmed_through"]
    totals.write_text(json.dumps(older))
    assert main(["reconcile"]) == 2
    assert "(the log was trimmed: it holds only what was written since" in capsys.readouterr().err


def test_a_log_an_older_release_trimmed_is_compared_from_its_oldest_segment_left(tmp_path: Path) -> None:
    from querylog.reconcile import _AHEAD_S, history_floor

    settings = Settings.from_env(overrides={"home": tmp_path / "home"})
    settings.log_dir.mkdir(parents=True)
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "housekeeping.json").write_text(json.dumps({"trimmed_segments": 3, "last_run": 2e9}))
    assert history_floor(settings) == datetime.fromtimestamp(2e9 + _AHEAD_S, UTC)  # no segment left: the last run
    for created, writer in ((1_800_000_000, "11-aa"), (1_700_000_000, "12-bb"), (1_750_000_000, "11-aa")):
        (settings.log_dir / f"{created * 10**9:020d}-{writer}.jsonl").write_bytes(b"")
    assert history_floor(settings) == datetime.fromtimestamp(1_700_000_000 + _AHEAD_S, UTC)


def test_days_a_one_off_compact_dropped_move_the_floor_as_the_configured_retention_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compact --retention-days 30` (docs/analytics.md's one-off) dropped a backfilled day from the lake, and
    reconcile then reported the log's copy of it as a difference, exit 1, with no word of why."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with EventLog(home / "log") as log:
        for i, at in enumerate([long_ago, None, None]):
            when = {"ts": at} if at else {}
            log.append(QueryReceived(query_id=f"q{i}", query_text="x", **when))
            log.append(QueryCompleted(query_id=f"q{i}", latency_ms=5.0, intent="news", **when))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    assert main(["reconcile"]) == 0
    capsys.readouterr()
    assert main(["compact", "--retention-days", "30"]) == 0
    assert "dropped 1 day(s)" in capsys.readouterr().out
    assert main(["reconcile"]) == 0
    out, err = capsys.readouterr()
    assert "compared from" in err and "DIFFERS" not in out


def test_a_lake_rebuilt_from_the_log_leaves_out_the_days_a_one_off_compact_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay parquet` after `compact --retention-days 30` brought the dropped days back from the log, and the
    rebuilt lake had lost the floor reconcile compares from."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with EventLog(home / "log") as log:
        for i, at in enumerate([long_ago, None]):
            when = {"ts": at} if at else {}
            log.append(QueryReceived(query_id=f"q{i}", query_text="x", **when))
            log.append(QueryCompleted(query_id=f"q{i}", latency_ms=5.0, intent="news", **when))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    assert main(["compact", "--retention-days", "30"]) == 0
    floor = retained_from(home / "lake")
    capsys.readouterr()
    assert main(["replay", "parquet"]) == 0
    err = capsys.readouterr().err
    assert f"days before {floor:%Y-%m-%d} stay out of the lake" in err
    assert retained_from(home / "lake") == floor
    with Catalog(home / "lake") as catalog:
        _, rows = catalog.query("select query_id from queries order by 1")
    assert rows == [("q1",)]
    assert main(["reconcile"]) == 0
    assert "DIFFERS" not in capsys.readouterr().out


def test_a_late_event_older_than_the_lakes_retention_does_not_stop_a_rebuild_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `compact --retention-days 30`, a backfilled event dated before the boundary landed in the live lake; the
    rebuild (which leaves those days out) counted it as an event the log had lost, and refused: "part of the log is
    gone (deleted or trimmed)", with the whole log in place."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with EventLog(home / "log") as log:
        log.append(QueryReceived(query_id="q-old", query_text="x", ts=long_ago))
        log.append(QueryReceived(query_id="q-now", query_text="x"))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    assert main(["compact", "--retention-days", "30"]) == 0
    with EventLog(home / "log") as log:  # the backfill, projected into the live lake as `querylog serve` would
        log.append(QueryReceived(query_id="q-late", query_text="x", ts=long_ago + timedelta(days=1)))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    capsys.readouterr()
    assert main(["replay", "parquet"]) == 0, capsys.readouterr().err
    with Catalog(home / "lake") as catalog:
        _, rows = catalog.query("select query_id from queries order by 1")
    assert rows == [("q-now",)]  # the days before the boundary stay out, the late event's with them


def test_with_a_lake_retention_set_a_rebuild_from_a_trimmed_log_is_refused_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With QUERYLOG_RETENTION(_DAYS) set, the check was skipped: a log trimmed of last week's segments rebuilt a lake
    without them, events well inside the retention lost, exit 0. The days past the retention (not dropped by compact
    yet, their segments trimmed) are left out, as the rebuild leaves them out: those do not stop it."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    monkeypatch.setenv("QUERYLOG_RETENTION_DAYS", "30")
    now = datetime.now(UTC)
    with EventLog(home / "log") as log:  # a segment of its own: the one housekeeping trimmed
        log.append(QueryReceived(query_id="q-expired", query_text="x", ts=now - timedelta(days=40)))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    (trimmed,) = sorted((home / "log").glob("*.jsonl"))
    trimmed.unlink()
    with EventLog(home / "log") as log:
        log.append(QueryReceived(query_id="q-last-week", query_text="x", ts=now - timedelta(days=7)))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    capsys.readouterr()
    assert main(["replay", "parquet"]) == 0, capsys.readouterr().err  # only a day past the retention is missing
    with Catalog(home / "lake") as catalog:
        assert catalog.query("select query_id from queries")[1] == [("q-last-week",)]
    for segment in (home / "log").glob("*.jsonl"):
        segment.unlink()
    with EventLog(home / "log") as log:
        log.append(QueryReceived(query_id="q-today", query_text="x"))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    capsys.readouterr()
    assert main(["replay", "parquet"]) == 1
    assert "the lake holds 1 events the log no longer has: part of the log is gone" in capsys.readouterr().err
    with Catalog(home / "lake") as catalog:  # the live lake is unchanged
        assert catalog.query("select query_id from queries order by 1")[1] == [("q-last-week",), ("q-today",)]


def test_a_comparison_with_no_events_in_it_says_nothing_was_checked(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right after housekeeping trimmed the whole log, reconcile printed an empty table, 'compared from' a time
    ten minutes ahead, and exit 0: it read as a clean bill. Under a short QUERYLOG_LOG_RETENTION every run did, so a
    cron job never learnt that reconcile could not check: it is exit 2, nothing compared."""
    import querylog.reconcile as reconciling

    ahead = datetime.now(UTC) + timedelta(minutes=10)  # the newest trimmed write, plus the clock margin
    monkeypatch.setattr(reconciling, "history_floor", lambda settings, now=None: ahead)
    assert main(["reconcile"]) == 2
    out, err = capsys.readouterr()
    assert "(0 rows)" in out
    assert (
        f"no events to compare from {ahead:%Y-%m-%d %H:%M:%S} UTC on: nothing was checked (the log was trimmed" in err
    )
    assert "compared from" not in err


def test_past_fifty_intents_the_stores_are_compared_as_the_metrics_count_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The metrics give the fifty-first intent on the series `other`; reconcile compared it by name with the log and
    the lake, and differed for good."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        for i in range(60):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="x"))
            log.append(QueryCompleted(query_id=f"q-{i}", latency_ms=1.0, intent=f"intent-{i:02d}"))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    report = reconcile(Settings.from_env())
    assert report.clean, report.disagreements
    counts = {key: c for kind, key, c in report.rows if kind == "intents"}
    assert counts["other"] == {"log": 10, "lake": 10, "metrics": 10} and counts["intent-00"]["metrics"] == 1


def test_an_empty_intent_an_earlier_release_took_reads_as_none_in_every_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /v1/events` took ``"intent": ""`` on a query's last event: the log and the metrics read it as none
    (the classifier's, else unclassified), the lake as the intent ``''``, and reconcile differed for good."""
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    with EventLog(home / "log") as log:
        log.append(QueryReceived(query_id="q-1", query_text="x"))
        log.append(QueryCompleted(query_id="q-1", latency_ms=1.0, intent=""))
        log.append(QueryReceived(query_id="q-2", query_text="y"))
        log.append(IntentClassified(query_id="q-2", intent="news_inquiry", confidence=0.9))
        log.append(QueryFailed(query_id="q-2", error_type="E", intent=""))
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    report = reconcile(Settings.from_env())
    assert report.clean, report.disagreements
    with Catalog(home / "lake") as catalog:
        rows = catalog.query("select query_id, intent from queries order by 1")[1]
    assert [tuple(r) for r in rows] == [("q-1", None), ("q-2", "news_inquiry")]


def test_loki_is_counted_under_the_labels_this_data_directory_shipped_with_whatever_env_reconcile_runs_with(
    tmp_path: Path,
) -> None:
    """Run with another QUERYLOG_ENV than the server's, reconcile counted Loki at 0 and blamed the lag and the drops;
    the labels the data directory shipped under are noted in state/loki-labels.json (erase reads them too)."""
    from querylog.erase import note_loki_labels

    home = tmp_path / "home"
    with EventLog(home / "log") as log:
        for i in range(3):
            log.append(QueryReceived(query_id=f"q-{i}", query_text="삼성전자"))
            log.append(QueryCompleted(query_id=f"q-{i}", latency_ms=12.0, intent="stock_analysis"))
    served = Settings(home=home, stdout_events=False, service="querylog", env="walk2")
    note_loki_labels(served)  # as the server does when it starts its Loki projection
    loki = queryable_loki()
    with ParquetSink(served.lake_dir) as lake:
        Projector(LogReader(served.log_dir), lake).catch_up()
    with LokiSink("http://loki", env="walk2", transport=loki.transport(), options=LokiOptions()) as sink:
        Projector(LogReader(served.log_dir), sink).catch_up()
    elsewhere = Settings(home=home, stdout_events=False, service="querylog", env="test")
    with httpx.Client(transport=loki.transport(), base_url="http://loki") as client:
        report = reconcile(elsewhere, loki=client, loki_max_age_s=7 * 86400)
    assert report.clean, report.disagreements
    counts = {(kind, key): c for kind, key, c in report.rows}
    assert counts["events", "query_received"]["loki"] == 3
    assert counts["intents", "stock_analysis"]["loki"] == 3
