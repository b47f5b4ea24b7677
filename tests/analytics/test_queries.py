"""The typed query layer: every answer checked against the generated lake's ground truth; filters bind, never splice."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

from querylog.analytics.catalog import Catalog
from querylog.analytics.queries import Filters, LakeQueries, parse_duration, parse_since

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake, SampleQuery


@pytest.fixture(params=[False, True], ids=["view", "snapshot"])
def lq(request: pytest.FixtureRequest, sample_lake: SampleLake) -> Iterator[LakeQueries]:
    with Catalog(sample_lake.lake) as catalog:
        yield LakeQueries(catalog, snapshot=request.param)


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks: DuckDB's quantile_cont."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _in(queries: list[SampleQuery], f: Filters) -> list[SampleQuery]:
    return [
        q
        for q in queries
        if (f.since is None or q.started_at >= f.since)
        and (f.until is None or q.started_at < f.until)
        and (not f.intents or q.intent in f.intents)
        and (not f.envs or q.env in f.envs)
    ]


def test_summary_matches_the_ground_truth(lq: LakeQueries, sample_lake: SampleLake) -> None:
    truth = sample_lake.queries
    s = lq.summary()
    assert s.queries == len(truth)
    assert s.completed == len(sample_lake.truth(status="completed"))
    assert s.failed == len(sample_lake.truth(status="failed"))
    assert s.in_progress == len(sample_lake.truth(status="in_progress"))
    assert s.error_rate == pytest.approx(s.failed / (s.completed + s.failed))
    latencies = [q.latency_ms for q in truth if q.latency_ms is not None]
    assert s.p50_ms == pytest.approx(_quantile(latencies, 0.5))
    assert s.p95_ms == pytest.approx(_quantile(latencies, 0.95))
    assert s.p99_ms == pytest.approx(_quantile(latencies, 0.99))
    searched = [q for q in truth if q.cache_hit is not None]
    assert s.cache_hit_rate == pytest.approx(sum(q.cache_hit for q in searched) / len(searched))  # type: ignore[misc]
    assert s.no_result_rate == pytest.approx(sum(q.result_count == 0 for q in searched) / len(searched))
    with_feedback = [q for q in truth if q.feedback is not None and q.status != "in_progress"]
    assert s.feedback_rate == pytest.approx(len(with_feedback) / (s.completed + s.failed))
    assert s.mean_feedback == pytest.approx(statistics.mean(q.feedback for q in with_feedback))  # type: ignore[misc]
    assert s.sessions == len({q.session_id for q in truth})


def test_intent_totals_and_shares(lq: LakeQueries, sample_lake: SampleLake) -> None:
    totals = lq.intent_totals()
    expected = Counter(q.intent for q in sample_lake.queries)
    assert dict(zip(totals["intent"], totals["queries"], strict=True)) == expected
    assert totals["share"].sum() == pytest.approx(1.0)
    assert totals["queries"].to_list() == sorted(totals["queries"].to_list(), reverse=True)
    # Queries that never got an intent are a group of their own, not a NULL that filters cannot select.
    assert "unclassified" in expected


def test_intent_trend_by_day_counts_each_day_and_fills_gaps(lq: LakeQueries, sample_lake: SampleLake) -> None:
    trend = lq.intent_trend(bucket="day")
    by_day = Counter((q.started_at.date(), q.intent) for q in sample_lake.queries)
    for row in trend.iter_rows(named=True):
        assert row["queries"] == by_day.get((row["bucket"].date(), row["intent"]), 0)
    days = trend["bucket"].unique().sort().to_list()
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))
    shares = trend.group_by("bucket").agg(pl.col("share").sum())
    assert all(v == pytest.approx(1.0) for v in shares["share"])
    # The generator makes news questions grow day by day: the trend must show it.
    news = trend.filter(pl.col("intent") == "news_inquiry").sort("bucket")["share"].to_list()
    assert news[-2] > news[0]


def test_intent_trend_by_hour_has_every_hour_between_first_and_last(lq: LakeQueries) -> None:
    trend = lq.intent_trend(bucket="hour")
    hours = trend["bucket"].unique().sort().to_list()
    assert len(hours) == int((hours[-1] - hours[0]) / timedelta(hours=1)) + 1
    assert trend.filter(pl.col("queries") > 0)["bucket"].n_unique() < len(hours)  # data only at some hours
    with pytest.raises(ValueError, match="bucket"):
        lq.intent_trend(bucket="week")  # type: ignore[arg-type]


def test_latency_by_intent_and_by_stage(lq: LakeQueries, sample_lake: SampleLake) -> None:
    by_intent = lq.latency_by_intent()
    for row in by_intent.iter_rows(named=True):
        values = [q.latency_ms for q in sample_lake.truth(intent=row["intent"]) if q.latency_ms is not None]
        assert row["queries"] == len(values)
        assert row["p95_ms"] == pytest.approx(_quantile(values, 0.95))
    assert by_intent["intent"][0] == "market_overview"  # generated twice as slow
    stages = lq.latency_by_stage()
    assert stages["stage"].to_list() == ["classify", "search", "generate", "total"]
    generate = [q.generate_ms for q in sample_lake.queries if q.generate_ms is not None]
    row = stages.filter(pl.col("stage") == "generate").row(0, named=True)
    assert row["queries"] == len(generate)
    assert row["p50_ms"] == pytest.approx(_quantile(generate, 0.5))


def test_errors_and_error_trend(lq: LakeQueries, sample_lake: SampleLake) -> None:
    errors = lq.errors()
    failed = sample_lake.truth(status="failed")
    assert errors["queries"].sum() == len(failed)
    by_stage = Counter(q.failed_stage for q in failed)
    assert dict(zip(errors["failed_stage"], errors["queries"], strict=True)) == by_stage
    trend = lq.error_trend(bucket="day")
    assert trend["failed"].sum() == len(failed)
    assert trend["finished"].sum() == len(failed) + len(sample_lake.truth(status="completed"))


def test_cache_quality_and_feedback(lq: LakeQueries, sample_lake: SampleLake) -> None:
    cache = lq.cache_by_intent()
    searched = [q for q in sample_lake.queries if q.cache_hit is not None]
    assert cache["searched"].sum() == len(searched)
    assert cache["cache_hits"].sum() == sum(bool(q.cache_hit) for q in searched)
    quality = lq.quality_distribution()
    assert quality.height == 10
    assert quality["queries"].sum() == sum(q.quality_score is not None for q in sample_lake.queries)
    assert quality["bin_start"].to_list()[0] == 0.0
    assert quality["bin_end"].to_list()[-1] == 1.0
    feedback = lq.feedback_by_intent()
    for row in feedback.iter_rows(named=True):
        done = [q for q in sample_lake.truth(intent=row["intent"]) if q.status != "in_progress"]
        scores = [q.feedback for q in done if q.feedback is not None]
        assert (row["finished"], row["with_feedback"]) == (len(done), len(scores))
        assert (row["positive"], row["negative"]) == (sum(s > 0 for s in scores), sum(s < 0 for s in scores))


def test_top_and_no_result_queries(lq: LakeQueries, sample_lake: SampleLake) -> None:
    top = lq.top_queries(limit=5)
    counts = Counter(q.text.lower() for q in sample_lake.queries)
    assert top.height == 5
    assert top["queries"].to_list() == sorted(counts.values(), reverse=True)[:5]
    assert any("주가" in t or "뉴스" in t for t in top["query_text"])  # Korean comes back intact
    empty = lq.no_result_queries(limit=1000)
    assert empty["queries"].sum() == sum(q.result_count == 0 for q in sample_lake.queries)


def test_sessions_count_queries_and_repeats(lq: LakeQueries, sample_lake: SampleLake) -> None:
    stats = lq.session_stats()
    per_session: dict[str, list[str]] = {}
    for q in sample_lake.queries:
        per_session.setdefault(q.session_id, []).append(q.text.lower())
    repeats = {s: len(texts) - len(set(texts)) for s, texts in per_session.items()}
    assert stats.sessions == len(per_session)
    assert stats.max_queries == max(len(t) for t in per_session.values())
    assert stats.repeated_queries == sum(repeats.values())
    assert stats.sessions_with_repeats == sum(1 for r in repeats.values() if r)
    table = lq.sessions(limit=1000)
    assert dict(zip(table["session_id"], table["repeats"], strict=True)) == repeats


def test_funnel_counts_how_far_queries_got(lq: LakeQueries, sample_lake: SampleLake) -> None:
    funnel = lq.funnel()
    truth = [q for q in sample_lake.queries if q.status != "in_progress"]  # still going: dropped nowhere yet
    assert len(truth) < len(sample_lake.queries)
    expected = [
        len(truth),
        sum(q.classify_ms is not None for q in truth),
        sum(q.search_ms is not None for q in truth),
        sum(q.generate_ms is not None for q in truth),
        len(sample_lake.truth(status="completed")),
    ]
    assert funnel["step"].to_list() == ["received", "classified", "searched", "answered", "completed"]
    assert funnel["queries"].to_list() == expected
    assert funnel["dropped"].to_list() == [0] + [a - b for a, b in itertools.pairwise(expected)]
    assert funnel["of_received"][0] == 1.0
    # The first step drops nothing: 0, not a blank the explorer showed as "None".
    assert funnel["drop_rate"].to_list() == [0.0] + [(a - b) / a for a, b in itertools.pairwise(expected)]


def test_a_query_that_skipped_a_step_still_counts_at_it_so_no_step_gains_queries(tmp_path: Path) -> None:
    """A producer that never classifies (the docs' own FastAPI example) made "classified" drop and "searched" gain:
    a negative drop-off in the explorer's funnel."""
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    with EventLog(tmp_path / "log") as log:
        tracker = QueryTracker(log)
        for i in range(3):
            with tracker.query(f"질문 {i}") as q:
                if i == 0:
                    q.classified("news_inquiry", 0.9)
                q.searched(2)  # no response_generated: straight to completed
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as catalog:
        funnel = LakeQueries(catalog).funnel()
    assert funnel["queries"].to_list() == [3, 3, 3, 3, 3]
    assert funnel["dropped"].to_list() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "asked",
    [
        [
            "What is the price target for NAVER?",
            "what is the  price target\tfor naver?",
            " What is the price target for NAVER? ",
        ],
        [
            "SK하이닉스 목표주가는?",
            "ＳＫ하이닉스 목표주가는？",
            "sk하이닉스 목표주가는?",
        ],  # a keyboard's full-width mode
    ],
    ids=["spacing", "full-width"],
)
def test_top_queries_count_a_question_as_search_does_whatever_its_spacing(tmp_path: Path, asked: list[str]) -> None:
    """The report's top queries said 28 where search said 29 for one question: one asking had a double space
    inside, which search merges (`question_key`) and the top queries did not. ＳＫ하이닉스 typed in full width was
    another question to both, although search finds it as SK하이닉스."""
    from querylog.analytics.search_groups import question_key
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    with EventLog(tmp_path / "log") as log:
        tracker = QueryTracker(log)
        for text in asked:
            with tracker.query(text, session_id="s-1") as q:
                q.searched(0)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as catalog:
        lq = LakeQueries(catalog)
        top, empty = lq.top_queries(), lq.no_result_queries()
        stats = lq.session_stats()
    assert len({question_key(t) for t in asked}) == 1
    assert top["queries"].to_list() == [3] and empty["queries"].to_list() == [3]
    assert stats.repeated_queries == 2


def test_the_report_and_the_metrics_read_the_same_quality_score_when_a_producer_sends_two(tmp_path: Path) -> None:
    """A producer scoring the answer 0.2 and the completion 0.9: the report's mean quality (the lake) read 0.2 and
    the Grafana quality panel (/metrics) 0.9."""
    from querylog.logging.events import QueryCompleted, QueryReceived, ResponseGenerated
    from querylog.logging.metrics import MetricsProjection
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader

    scores = {"both": (0.2, 0.9), "answer only": (0.4, None), "completion only": (None, 0.7), "none": (None, None)}
    events = []
    for qid, (answer, completion) in scores.items():
        events += [
            QueryReceived(query_id=qid, query_text=qid),
            ResponseGenerated(query_id=qid, quality_score=answer),
            QueryCompleted(query_id=qid, latency_ms=5.0, quality_score=completion),
        ]
    with EventLog(tmp_path / "log") as log:
        for event in events:
            log.append(event)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    metrics = MetricsProjection("querylog")
    metrics.apply(events)
    page = metrics.exposition().decode()
    observed = {
        line.split()[0]: float(line.split()[1])
        for line in page.splitlines()
        if line.startswith("querylog_quality_score_")
    }
    with Catalog(tmp_path / "lake") as catalog:
        [(count, total)] = catalog.execute("SELECT count(quality_score), sum(quality_score) FROM queries").fetchall()
        mean = LakeQueries(catalog).summary().mean_quality
    assert (count, total) == (3, pytest.approx(0.2 + 0.4 + 0.7))
    assert observed["querylog_quality_score_count"] == count
    assert observed["querylog_quality_score_sum"] == pytest.approx(total)
    assert mean == pytest.approx(total / count)


def test_equally_common_spellings_of_a_question_are_shown_the_same_way_every_time(tmp_path: Path) -> None:
    """Two spellings asked equally often: the top queries, the no-result ones and the most reformulated showed
    either, from one run to the next. Ties go to the spelling that sorts first, and so do the intents'."""
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    with EventLog(tmp_path / "log") as log:
        tracker = QueryTracker(log)
        for n in range(12):  # the spelling that sorts last is asked first, in each of twelve questions
            for text, intent in ((f"삼성전자{n} 주가", "stock"), (f"삼성전자{n}  주가", "news")) * 2:
                with tracker.query(text, session_id=f"s-{n}") as q:
                    q.classified(intent, 0.9)
                    q.searched(0)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as catalog:
        lq = LakeQueries(catalog)
        shown = [lq.top_queries(limit=100), lq.no_result_queries(limit=100), lq.most_reformulated(limit=100)]
    for frame in shown:
        assert frame.height == 12
        assert sorted(frame["query_text"]) == sorted(f"삼성전자{n}  주가" for n in range(12))
        assert set(frame["intent"]) == {"news"}


@pytest.mark.parametrize(
    "text",
    [
        *("a\u00a0b", "a\u3000b", " a  b\u3000", "a\u2009b", "a\x0bb", "a\x1cb", "a\x85b", "a\u2028b", "A\tB\nc"),
        *("ΣΑΣ ΟΔΟΣ", "İstanbul İ"),  # where Python's lower() and DuckDB's differ
        *(
            "ＳＫ하이닉스 ＇ｑ＇ ＼～",
            "ＩＳＴＡＮＢＵＬ ０６６５７０",
            "！～ ＠",
        ),  # full-width forms, quote and backslash
        *(
            "삼성\u200d전자 배당",
            "a\u00adb \ufeffc",
            "\u200bＳＫ\u2060하이닉스",
        ),  # what draws nothing, as search drops it
    ],
)
def test_the_sql_question_key_is_search_s(text: str) -> None:
    """DuckDB's regex `\\s` is ASCII only: a question typed with an ideographic space (a Korean keyboard's) or a
    no-break space was one question to search and another to the top queries."""
    import duckdb

    from querylog.analytics.queries import QUESTION_KEY_SQL
    from querylog.analytics.search_groups import question_key

    with duckdb.connect() as con:  # its own: a result left on DuckDB's shared default connection blocks its next user
        [(key,)] = con.execute(f"SELECT {QUESTION_KEY_SQL} FROM (SELECT $1 AS query_text)", [text]).fetchall()
    assert key == question_key(text)


def test_a_question_with_a_character_that_draws_nothing_is_the_same_question() -> None:
    """삼성\u200d전자 배당 (a zero-width joiner pasted from a chat app) was found by search as 삼성전자 배당 and listed
    beside it as another question that looked the same."""
    from querylog.analytics.search_groups import question_key

    for pasted in ("삼성\u200d전자 배당", "\ufeff삼성전자 배당", "삼성\u00ad전자\u200b 배당"):
        assert question_key(pasted) == question_key("삼성전자 배당") == "삼성전자 배당"


def test_feedback_and_latency_count_failed_queries_in_every_section(tmp_path: Path) -> None:
    """A thumbs-down on a failed query counted in the summary's mean but not in its rate nor by intent, and a canary
    release that failed slowly showed the latency of its completed queries only, looking faster than it was."""
    from querylog.logging.events import FeedbackReceived, QueryCompleted, QueryFailed, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    start = datetime(2026, 11, 20, 9, tzinfo=UTC)
    events: list[object] = []
    for i, latency in enumerate((300.0, 300.0, 5000.0)):
        common = {"query_id": f"q-{i}", "release": "canary", "ts": start + timedelta(minutes=i)}
        events.append(QueryReceived(query_text=f"질문 {i}", **common))  # type: ignore[arg-type]
        if latency > 1000:
            events.append(
                QueryFailed(error_type="Timeout", stage="generate", latency_ms=latency, intent="news_inquiry", **common)
            )  # type: ignore[arg-type]
            events.append(FeedbackReceived(score=-1, **common))  # type: ignore[arg-type]
        else:
            events.append(QueryCompleted(latency_ms=latency, intent="news_inquiry", **common))  # type: ignore[arg-type]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"t": 1}))  # type: ignore[arg-type]
    with Catalog(tmp_path / "lake") as catalog:
        lq = LakeQueries(catalog)
        summary = lq.summary()
        (by_intent,) = lq.feedback_by_intent().iter_rows(named=True)
        (canary,) = lq.compare_by(Filters(), "release").iter_rows(named=True)
    assert (summary.feedback_rate, summary.mean_feedback) == (pytest.approx(1 / 3), -1.0)
    assert (by_intent["finished"], by_intent["with_feedback"], by_intent["negative"]) == (3, 1, 1)
    assert (canary["with_feedback"], canary["mean_score"]) == (1, -1.0)
    assert canary["p95_ms"] == pytest.approx(_quantile([300.0, 300.0, 5000.0], 0.95))  # as the summary's


def test_the_release_comparison_counts_the_queries_without_a_release_in_a_row_of_their_own(tmp_path: Path) -> None:
    """A window of v1 queries (no release) and v2 ones listed only the v2 releases: half the window was left out of
    the comparison without a word."""
    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    start = datetime(2026, 11, 20, 9, tzinfo=UTC)
    events: list[object] = []
    for i, release in enumerate(("r2", "r2", None, None, None)):
        common = {"query_id": f"q-{i}", "release": release, "ts": start + timedelta(minutes=i)}
        events += [QueryReceived(query_text=f"질문 {i}", **common), QueryCompleted(latency_ms=10.0, **common)]  # type: ignore[arg-type]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"t": 1}))  # type: ignore[arg-type]
    with Catalog(tmp_path / "lake") as catalog:
        lq = LakeQueries(catalog)
        rows = lq.compare_by(Filters(), "release").select("value", "queries").rows()
        assert rows == [("r2", 2), (None, 3)]  # those without one last, however many
        assert lq.compare_by(Filters(), "prompt_version").is_empty()  # none has one: nothing to compare


def test_filters_select_time_intent_and_env(lq: LakeQueries, sample_lake: SampleLake) -> None:
    day = sample_lake.start + timedelta(days=1)
    for f in (
        Filters(since=day, until=day + timedelta(days=1)),
        Filters(intents=("news_inquiry", "company_info")),
        Filters(envs=("staging",)),
        Filters(since=day, intents=("stock_analysis",), envs=("prod",)),
    ):
        expected = _in(sample_lake.queries, f)
        assert lq.summary(f).queries == len(expected) > 0
        assert lq.funnel(f)["queries"][0] == sum(q.status != "in_progress" for q in expected)
        assert lq.recent_queries(f, 1000)["query_id"].sort().to_list() == sorted(q.query_id for q in expected)


def test_filter_values_are_bound_parameters(lq: LakeQueries) -> None:
    hostile = Filters(intents=("x' OR '1'='1", "news_inquiry'); DROP TABLE ql_queries; --"), envs=("' OR 1=1 --",))
    assert lq.summary(hostile).queries == 0
    assert lq.summary().queries > 0  # nothing was dropped
    assert lq.query_events("' OR '1'='1").is_empty()


def test_query_events_are_a_timeline(lq: LakeQueries, sample_lake: SampleLake) -> None:
    q = sample_lake.truth(status="completed")[0]
    events = lq.query_events(q.query_id)
    assert events["event_type"].to_list()[:5] == [
        "query_received",
        "intent_classified",
        "search_completed",
        "response_generated",
        "query_completed",
    ]
    assert events["offset_ms"][0] == 0.0
    assert events["offset_ms"].to_list() == sorted(events["offset_ms"].to_list())
    assert events["offset_ms"][4] == pytest.approx(q.latency_ms, abs=0.01)


def test_choices_for_filters(lq: LakeQueries, sample_lake: SampleLake) -> None:
    assert lq.intents() == sorted({q.intent for q in sample_lake.queries})
    assert lq.envs() == ["prod", "staging"]
    bounds = lq.time_bounds()
    assert bounds is not None
    assert bounds[0] == min(q.started_at for q in sample_lake.queries)


def test_an_empty_lake_answers_with_zeros_and_empty_frames(tmp_path: object) -> None:
    with Catalog(f"{tmp_path}/nothing") as catalog:
        lq = LakeQueries(catalog, snapshot=True)
        assert lq.time_bounds() is None
        s = lq.summary()
        assert (s.queries, s.error_rate, s.p95_ms) == (0, None, None)
        assert lq.intent_trend().is_empty()
        assert lq.funnel()["queries"].to_list() == [0, 0, 0, 0, 0]


def test_filters_refuse_values_they_cannot_use() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Filters(since=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="before"):
        Filters(since=datetime(2025, 1, 2, tzinfo=UTC), until=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="tuple of strings"):
        Filters(intents="news_inquiry")  # type: ignore[arg-type]


def test_previous_window_has_the_same_length() -> None:
    f = Filters(since=datetime(2025, 1, 8, tzinfo=UTC), until=datetime(2025, 1, 15, tzinfo=UTC), envs=("prod",))
    p = f.previous()
    assert (p.since, p.until, p.envs) == (datetime(2025, 1, 1, tzinfo=UTC), f.since, ("prod",))


def test_the_window_before_one_that_reaches_back_to_year_1_starts_at_year_1() -> None:
    """A lake holding an event of year 1 (an earlier release kept Go's zero time): the explorer's headline asked for
    the window before the whole range, and the page failed with OverflowError."""
    f = Filters(since=datetime(1, 1, 1, tzinfo=UTC), until=datetime(2026, 12, 6, tzinfo=UTC))
    with pytest.raises(ValueError, match="no window comes before"):
        f.previous()
    g = Filters(since=datetime(1000, 1, 1, tzinfo=UTC), until=datetime(2026, 12, 6, tzinfo=UTC))
    assert (g.previous().since, g.previous().until) == (datetime(1, 1, 1, tzinfo=UTC), g.since)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        (" 2 d ", timedelta(days=2)),
    ],
)
def test_parse_since_accepts_durations(text: str, expected: timedelta) -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_since(text, now=now) == now - expected
    assert parse_duration(text) == expected


def test_parse_since_accepts_iso_dates_as_utc() -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_since("2025-02-01", now=now) == datetime(2025, 2, 1, tzinfo=UTC)
    assert parse_since("2025-02-01T09:30+09:00", now=now) == datetime(2025, 2, 1, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "7", "7y", "2h30m", "-1d", "0h", "yesterday", "2025-13-01", "2099-01-01"])
def test_parse_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|ISO date|future|zero"):
        parse_since(text, now=datetime(2025, 3, 1, tzinfo=UTC))


@pytest.mark.parametrize("text", ["2025-02-01+09:00", "2025-02-01-09:00", "2025-02-0109:00", "2025-02-01_09:00"])
def test_a_date_and_an_offset_without_a_time_is_refused_not_read_as_a_time(text: str) -> None:
    """`--until 2026-12-08+09:00` (midnight in Korea meant) was 2026-12-08T09:00 UTC: Python reads any character
    after the date as the time's start, so the offset became the hour."""
    with pytest.raises(ValueError, match=r"join the date and the time with T"):
        parse_since(text, now=datetime(2025, 3, 1, tzinfo=UTC), future=True)
    assert parse_since("2025-02-01T00:00+09:00", now=datetime(2025, 3, 1, tzinfo=UTC)) == datetime(
        2025, 1, 31, 15, tzinfo=UTC
    )


@pytest.mark.parametrize("snapshot", [False, True], ids=["view", "snapshot"])
def test_a_query_asked_again_soon_in_the_same_session_is_reformulated(tmp_path: Path, snapshot: bool) -> None:
    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    t = datetime(2026, 11, 20, 14, tzinfo=UTC)
    asked = [  # query id, session, text, seconds after t, intent
        ("a1", "s1", "네이버 주가 전망은?", 0, "stock_analysis"),
        ("a2", "s1", "네이버  주가 전망 알려줘", 60, "stock_analysis"),  # asked again a minute later
        ("b1", "s2", "카카오 주가", 0, "stock_analysis"),
        ("b2", "s2", "카카오 주가", 600, "stock_analysis"),  # the same, but ten minutes later
        ("c1", "s3", "삼성전자 배당 일정", 0, "news_inquiry"),
        ("c2", "s3", "환율 전망", 30, "market_overview"),  # a new question
        ("d1", None, "테슬라 주가", 0, "stock_analysis"),
        ("d2", None, "테슬라 주가", 5, "stock_analysis"),  # no session: nothing to relate them by
        ("e1", "s5", "네이버 주가  전망은?", 900, "stock_analysis"),  # a1's question, spaced otherwise: one question
    ]
    events: list[object] = []
    for query_id, session, text, after, intent in asked:
        ts = t + timedelta(seconds=after)
        events += [
            QueryReceived(query_id=query_id, session_id=session, query_text=text, ts=ts),
            QueryCompleted(query_id=query_id, session_id=session, latency_ms=5.0, intent=intent, ts=ts),
        ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"r": 1}))  # type: ignore[arg-type]
    with Catalog(tmp_path / "lake") as catalog:
        _, rows = catalog.query("SELECT query_id FROM queries WHERE reformulated ORDER BY 1")
        assert rows == [("a1",)]
        lq = LakeQueries(catalog, snapshot=snapshot)
        by_intent = {r["intent"]: r for r in lq.reformulation_by_intent().iter_rows(named=True)}
        assert by_intent["stock_analysis"]["reformulated"] == 1 and by_intent["stock_analysis"]["queries"] == 7
        assert by_intent["stock_analysis"]["reformulation_rate"] == pytest.approx(1 / 7)
        assert by_intent["news_inquiry"]["reformulated"] == 0
        top = lq.most_reformulated().to_dicts()
        assert [(r["reformulated"], r["queries"]) for r in top] == [(1, 2)]  # as `top_queries` counts the question
        assert top[0]["query_text"] in ("네이버 주가 전망은?", "네이버 주가  전망은?")


def test_a_querys_steps_stamped_with_one_time_come_in_the_order_of_its_life(tmp_path: Path) -> None:
    """An OTLP producer may stamp a query's steps with its span's one start time: the timeline listed them by event
    id, so `intent_classified` could come before `query_received`."""
    from querylog.logging.events import IntentClassified, QueryCompleted, QueryReceived, SearchCompleted
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader

    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    q = {"query_id": "q-1", "ts": at}
    # Made last step first, so each step's event id (time-ordered) sorts before the one of the step before it.
    made = [
        QueryCompleted(**q, latency_ms=1.0),
        SearchCompleted(**q, result_count=1),
        IntentClassified(**q, intent="x", confidence=0.5),
        QueryReceived(**q, query_text="질문"),
    ]
    assert sorted(e.event_id for e in made) == [e.event_id for e in made]
    with EventLog(tmp_path / "log") as log:
        for event in reversed(made):
            log.append(event)
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as catalog:
        events = LakeQueries(catalog).query_events("q-1")
    assert events["event_type"].to_list() == [
        "query_received",
        "intent_classified",
        "search_completed",
        "query_completed",
    ]


def test_a_snapshot_keeps_its_answers_and_finds_a_query_newer_than_itself(tmp_path: Path) -> None:
    """The explorer keeps one snapshot across clicks: its answers are kept with it, and a query that came after it
    (found by a search, which reads the lake as it is now) still shows its answer."""
    from querylog.logging.events import QueryCompleted, QueryReceived, ResponseGenerated
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    def asked(query_id: str, answer: str) -> list[object]:
        ts = datetime(2026, 11, 20, 9, tzinfo=UTC)
        return [
            QueryReceived(query_id=query_id, query_text="네이버 주가", ts=ts),
            ResponseGenerated(query_id=query_id, answer_text=answer, answer_chars=len(answer), ts=ts),
            QueryCompleted(query_id=query_id, latency_ms=5.0, ts=ts),
        ]

    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=asked("q-1", "첫 답"), checkpoint={"r": 1}))  # type: ignore[arg-type]
    with Catalog(tmp_path / "lake") as catalog:
        lq = LakeQueries(catalog, snapshot=True)
        summary = lq.summary()
        assert summary.queries == 1
        with ParquetSink(tmp_path / "lake") as sink:  # a query arrives after the snapshot
            sink.write(Batch(events=asked("q-2", "둘째 답"), checkpoint={"r": 2}))  # type: ignore[arg-type]
        assert lq.summary() == summary  # the snapshot's picture, kept
        assert lq.top_queries() is lq.top_queries()  # asked again: the answer kept
        first, second = lq.answer("q-1"), lq.answer("q-2")
        assert first is not None and first.answer_text == "첫 답"
        assert second is not None and second.answer_text == "둘째 답"
        # Search's hits filtered by the sidebar: the newer query judged on the lake as it is now, not dropped (the
        # explorer then asked the index for ever more hits while traffic kept the best ones newer than the page).
        assert lq.matching(Filters(envs=("dev",)), ["q-1", "q-2", "q-none"]) == {"q-1", "q-2"}
        assert lq.matching(Filters(envs=("prod",)), ["q-1", "q-2"]) == set()
        assert lq.matching(Filters(intents=("unclassified",)), ["q-2"]) == {"q-2"}


def test_a_snapshot_of_the_queries_asked_from_a_time_answers_as_the_whole_lake_for_windows_after_it(
    sample_lake: SampleLake,
) -> None:
    """A report read the whole lake's queries into its snapshot whatever its window (an hour's report took as long
    as the lake's): the queries asked from the earlier window's start are enough, each with its late feedback and
    its session's next question."""
    import dataclasses

    from polars.testing import assert_frame_equal

    since = sample_lake.start + timedelta(days=1, hours=5)
    with Catalog(sample_lake.lake) as catalog:
        whole, bounded = LakeQueries(catalog), LakeQueries(catalog, snapshot=True, asked_from=since)
        for f in (Filters(since=since), Filters(since=since + timedelta(hours=20), intents=("news_inquiry",))):
            assert dataclasses.asdict(bounded.summary(f)) == pytest.approx(dataclasses.asdict(whole.summary(f)))
            for read in ("reformulation_by_intent", "feedback_by_intent", "top_queries", "latency_by_intent", "errors"):
                assert_frame_equal(getattr(bounded, read)(f), getattr(whole, read)(f), check_exact=False)
            assert_frame_equal(bounded.compare_by(f, "release"), whole.compare_by(f, "release"), check_exact=False)
        assert bounded.time_bounds() == whole.time_bounds()  # the lake's, for the report's quiet days
        assert 0 < bounded.summary().queries < whole.summary().queries  # the snapshot holds the window only
        assert whole.reformulation_by_intent(Filters(since=since))["reformulated"].sum() > 0  # there is one to keep
