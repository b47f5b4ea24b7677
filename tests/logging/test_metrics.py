"""Tests for the metrics projection: values per event sequence, scrape-time sink telemetry, replay equals live."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from querylog.logging.events import (
    EVENT_TYPES,
    UNCLASSIFIED,
    Event,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
)
from querylog.logging.metrics import MetricsProjection
from querylog.logging.telemetry import SinkTelemetry

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def projected(events: Sequence[Event], *, stale_after_seconds: float = 300.0) -> CollectorRegistry:
    projection = MetricsProjection(stale_after_seconds=stale_after_seconds)
    projection.apply(events)
    registry = CollectorRegistry()
    projection.register(registry)
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def answered(query_id: str, *, intent: str = "stock_price", latency_ms: float = 1200.0, t: float = 0.0) -> list[Event]:
    """The events of one query that went the whole way, as the tracker emits them."""
    return [
        QueryReceived(query_id=query_id, ts=at(t), query_text="삼성전자 주가 알려줘"),
        IntentClassified(query_id=query_id, ts=at(t), intent=intent, confidence=0.92, duration_ms=15.0),
        SearchCompleted(query_id=query_id, ts=at(t), result_count=5, cache_hit=False, duration_ms=80.0),
        ResponseGenerated(query_id=query_id, ts=at(t), duration_ms=900.0, quality_score=0.8),
        QueryCompleted(query_id=query_id, ts=at(t + latency_ms / 1000), latency_ms=latency_ms, intent=intent),
    ]


# -- queries_total -----------------------------------------------------------------------------------------


def test_queries_are_counted_by_intent_and_status() -> None:
    events = [
        *answered("q1", intent="stock_price"),
        *answered("q2", intent="stock_price"),
        *answered("q3", intent="news"),
        QueryFailed(query_id="q4", ts=at(1), error_type="TimeoutError", stage="generate", intent="news"),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="stock_price", status="completed") == 2
    assert value(registry, "querylog_queries_total", intent="news", status="completed") == 1
    assert value(registry, "querylog_queries_total", intent="news", status="failed") == 1
    # At 0, not absent: a series that appears with its first count shows no increase to rate(), and an intent's first
    # failure went unseen on the dashboards.
    assert value(registry, "querylog_queries_total", intent="stock_price", status="failed") == 0


def test_intent_falls_back_to_the_classified_one_then_to_unclassified() -> None:
    events = [
        QueryReceived(query_id="q1", ts=at(0), query_text="네이버 뉴스"),
        IntentClassified(query_id="q1", ts=at(0), intent="news", confidence=0.7),
        QueryFailed(query_id="q1", ts=at(1), error_type="SearchError"),
        QueryReceived(query_id="q2", ts=at(0), query_text="hello"),
        QueryCompleted(query_id="q2", ts=at(1), latency_ms=300.0),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="news", status="failed") == 1
    assert value(registry, "querylog_queries_total", intent="unclassified", status="completed") == 1


def test_a_query_never_classified_is_counted_apart_from_one_the_classifier_could_not_tell() -> None:
    """The lake's frames call a query without an intent `unclassified`; the classifier's `unknown` is an answer:
    the metrics keep the two apart under the same names, so a panel and `querylog report` agree."""
    events = [
        QueryReceived(query_id="q1", ts=at(0), query_text="음"),
        IntentClassified(query_id="q1", ts=at(0), intent="unknown", confidence=0.0),
        QueryCompleted(query_id="q1", ts=at(1), latency_ms=10.0),
        QueryReceived(query_id="q2", ts=at(0), query_text="hello"),
        QueryCompleted(query_id="q2", ts=at(1), latency_ms=10.0),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="unknown", status="completed") == 1
    assert value(registry, "querylog_queries_total", intent=UNCLASSIFIED, status="completed") == 1


def test_the_terminal_events_own_intent_wins_over_the_classified_one() -> None:
    events = [
        IntentClassified(query_id="q1", ts=at(0), intent="news", confidence=0.4),
        QueryCompleted(query_id="q1", ts=at(1), latency_ms=500.0, intent="stock_price"),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="stock_price", status="completed") == 1
    assert value(registry, "querylog_queries_total", intent="news", status="completed") is None


# -- histograms --------------------------------------------------------------------------------------------


def test_query_duration_histogram_has_seconds_sum_count_and_cumulative_buckets() -> None:
    events = [
        *answered("q1", latency_ms=250.0),  # exactly on the 0.25 bound: `le` includes it
        *answered("q2", latency_ms=1200.0),
        *answered("q3", latency_ms=90_000.0),  # beyond the last bound: only +Inf holds it
    ]
    registry = projected(events)
    labels = {"intent": "stock_price", "status": "completed"}
    assert value(registry, "querylog_query_duration_seconds_count", **labels) == 3
    assert value(registry, "querylog_query_duration_seconds_sum", **labels) == pytest.approx(0.25 + 1.2 + 90.0)
    bucket = "querylog_query_duration_seconds_bucket"
    assert value(registry, bucket, le="0.1", **labels) == 0
    assert value(registry, bucket, le="0.25", **labels) == 1
    assert value(registry, bucket, le="1.0", **labels) == 1
    assert value(registry, bucket, le="2.0", **labels) == 2
    assert value(registry, bucket, le="60.0", **labels) == 2
    assert value(registry, bucket, le="+Inf", **labels) == 3


def test_failed_queries_are_timed_when_they_carry_a_latency() -> None:
    events = [
        QueryFailed(query_id="q1", ts=at(0), error_type="Timeout", latency_ms=30_000.0, intent="news"),
        QueryFailed(query_id="q2", ts=at(0), error_type="BadRequest", intent="news"),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="news", status="failed") == 2
    labels = {"intent": "news", "status": "failed"}
    assert value(registry, "querylog_query_duration_seconds_count", **labels) == 1
    assert value(registry, "querylog_query_duration_seconds_sum", **labels) == pytest.approx(30.0)


def test_stage_durations_come_from_each_stage_event_in_seconds() -> None:
    events = [
        IntentClassified(query_id="q1", ts=at(0), intent="news", confidence=0.9, duration_ms=4.0),
        IntentClassified(query_id="q2", ts=at(0), intent="news", confidence=0.9),  # untimed: not observed
        SearchCompleted(query_id="q1", ts=at(0), result_count=3, duration_ms=120.0),
        ResponseGenerated(query_id="q1", ts=at(0), duration_ms=2500.0),
    ]
    registry = projected(events)
    count, total = "querylog_stage_duration_seconds_count", "querylog_stage_duration_seconds_sum"
    assert value(registry, count, stage="classify") == 1
    assert value(registry, total, stage="classify") == pytest.approx(0.004)
    assert value(registry, "querylog_stage_duration_seconds_bucket", stage="classify", le="0.005") == 1
    assert value(registry, "querylog_stage_duration_seconds_bucket", stage="classify", le="0.0025") == 0
    assert value(registry, count, stage="search") == 1
    assert value(registry, total, stage="search") == pytest.approx(0.12)
    assert value(registry, count, stage="generate") == 1
    assert value(registry, total, stage="generate") == pytest.approx(2.5)


def test_stage_series_exist_at_zero_before_any_stage_event() -> None:
    registry = projected([])
    for stage in ("classify", "search", "generate"):
        assert value(registry, "querylog_stage_duration_seconds_count", stage=stage) == 0


def test_quality_is_observed_once_per_completed_query() -> None:
    events = [
        # Both carry a score: the generate step's is the one observed (as the lake has it), once.
        ResponseGenerated(query_id="q1", ts=at(0), quality_score=0.9),
        QueryCompleted(query_id="q1", ts=at(1), latency_ms=900.0, quality_score=0.3),
        # The generate step has none: the completion's stands in.
        ResponseGenerated(query_id="q2", ts=at(0)),
        QueryCompleted(query_id="q2", ts=at(1), latency_ms=900.0, quality_score=0.5),
        # Generated but failed afterwards: no answer reached the user, nothing observed.
        ResponseGenerated(query_id="q3", ts=at(0), quality_score=0.1),
        QueryFailed(query_id="q3", ts=at(1), error_type="StreamBroken"),
    ]
    registry = projected(events)
    assert value(registry, "querylog_quality_score_count") == 2
    assert value(registry, "querylog_quality_score_sum") == pytest.approx(1.4)
    assert value(registry, "querylog_quality_score_bucket", le="0.5") == 1  # 0.5 sits on its bound
    assert value(registry, "querylog_quality_score_bucket", le="0.4") == 0
    assert value(registry, "querylog_quality_score_bucket", le="1.0") == 2


# -- active queries ----------------------------------------------------------------------------------------


def test_active_queries_rise_on_receipt_and_fall_on_completion_or_failure() -> None:
    projection = MetricsProjection()
    registry = CollectorRegistry()
    projection.register(registry)

    projection.apply([QueryReceived(query_id=q, ts=at(0), query_text="hi") for q in ("q1", "q2", "q3")])
    assert value(registry, "querylog_active_queries") == 3
    projection.apply([QueryCompleted(query_id="q1", ts=at(1), latency_ms=1000.0)])
    assert value(registry, "querylog_active_queries") == 2
    projection.apply([QueryFailed(query_id="q2", ts=at(1), error_type="Boom")])
    assert value(registry, "querylog_active_queries") == 1


def test_a_repeated_receipt_or_an_unreceived_completion_does_not_skew_active_queries() -> None:
    events = [
        QueryReceived(query_id="q1", ts=at(0), query_text="hi"),
        QueryReceived(query_id="q1", ts=at(0), query_text="hi"),
        QueryCompleted(query_id="q9", ts=at(1), latency_ms=10.0),  # never received here
    ]
    assert value(projected(events), "querylog_active_queries") == 1


def test_a_query_whose_end_arrives_before_its_start_is_not_active_even_across_a_restart() -> None:
    # A producer's batches may arrive in any order (POST /v1/events): the completion first, the receipt later.
    projection = MetricsProjection()
    registry = CollectorRegistry()
    projection.register(registry)
    projection.apply([QueryCompleted(query_id="oo1", ts=at(2), latency_ms=10.0)])
    restarted = MetricsProjection()
    restarted.restore_state(projection.export_state())
    restarted.register(registry := CollectorRegistry())
    restarted.apply(
        [
            QueryReceived(query_id="oo1", ts=at(1), query_text="hi"),
            QueryReceived(query_id="q2", ts=at(3), query_text="hi"),
        ]
    )
    assert value(registry, "querylog_active_queries") == 1  # q2 only
    assert "oo1" not in restarted.export_state()["open"]  # nothing is kept for it once both ends are in


def test_open_queries_older_than_the_staleness_leave_active_queries_in_event_time() -> None:
    events = [
        QueryReceived(query_id="lost", ts=at(0), query_text="producer crashed after this"),
        QueryReceived(query_id="slow", ts=at(1), query_text="still running"),
        # 301 s later in event time: "lost" (first seen at 0) is older than 300 s, "slow" (at 1) is not yet.
        QueryReceived(query_id="new", ts=at(301), query_text="next"),
    ]
    assert value(projected(events), "querylog_active_queries") == 2
    assert value(projected(events, stale_after_seconds=1000), "querylog_active_queries") == 3
    assert value(projected(events, stale_after_seconds=10), "querylog_active_queries") == 1


def test_without_newer_events_nothing_goes_stale() -> None:
    # Staleness follows event time, not the wall clock, so a replay tomorrow gives today's numbers.
    events = [QueryReceived(query_id="q1", ts=at(0), query_text="hi")]
    assert value(projected(events, stale_after_seconds=1), "querylog_active_queries") == 1


def test_a_stale_query_leaves_the_gauge_and_its_late_completion_keeps_its_intent() -> None:
    events = [
        QueryReceived(query_id="q1", ts=at(0), query_text="hi"),
        IntentClassified(query_id="q1", ts=at(0), intent="news", confidence=0.9),
        QueryReceived(query_id="q2", ts=at(400), query_text="later"),
        QueryCompleted(query_id="q1", ts=at(401), latency_ms=401_000.0),
    ]
    registry = projected(events)
    # q1 left the active gauge when it went stale; its intent was remembered for the completion (the lake's too).
    assert value(registry, "querylog_queries_total", intent="news", status="completed") == 1
    assert value(registry, "querylog_queries_total", intent="unclassified", status="completed") is None
    assert value(registry, "querylog_active_queries") == 1


def test_a_backfill_split_by_live_traffic_keeps_its_intent_across_a_restart_and_an_erasure_forgets_it() -> None:
    """A backfilled query's start and classification, live traffic, then its completion without an intent: the live
    event aged the backfill out, and its completion was counted unclassified (the lake, billing: reconcile differed)."""
    old, now = -86_400.0, 0.0
    first = [
        QueryReceived(query_id="bf", ts=at(old), query_text="backfilled"),
        IntentClassified(query_id="bf", ts=at(old + 1), intent="billing", confidence=0.9),
        QueryReceived(query_id="live", ts=at(now - 2), query_text="now"),
        QueryCompleted(query_id="live", ts=at(now - 1), latency_ms=1_000.0, intent="billing"),
    ]
    end = [QueryCompleted(query_id="bf", ts=at(old + 2), latency_ms=2_000.0)]
    # Its answer came after it went stale, with a score (a new state): the intent it had before is kept too.
    answered = [ResponseGenerated(query_id="bf", ts=at(old + 1.5), quality_score=0.8), *end]
    for late in (answered, [*answered[:1], QueryReceived(query_id="x", ts=at(now), query_text="x"), *end]):
        fold = projected(first + late)
        assert value(fold, "querylog_queries_total", intent="billing", status="completed") == 2, late
        assert value(fold, "querylog_queries_total", intent="unclassified", status="completed") is None
    projection = MetricsProjection()
    projection.apply(first)
    restarted = MetricsProjection()
    restarted.restore_state(json.loads(json.dumps(projection.export_state())))  # as a snapshot on disk holds it
    restarted.apply(end)
    restarted.register(registry := CollectorRegistry())
    for fold in (projected(first + end), registry):
        assert value(fold, "querylog_queries_total", intent="billing", status="completed") == 2
        assert value(fold, "querylog_queries_total", intent="unclassified", status="completed") is None
        assert value(fold, "querylog_active_queries") == 0
    # Erasure forgets the remembered query, in a running fold and in a snapshot.
    state = projection.export_state()
    assert "bf" in str(state["stale"])
    MetricsProjection.forget_in_state(state, ["bf"])
    projection.forget_queries(["bf"])
    assert "bf" not in str(state) and "bf" not in str(projection.export_state())


def test_a_backfilled_query_keeps_its_intent_and_the_live_ones_stay_open() -> None:
    """A producer backfills last year's query (POST /v1/events) while live queries run: each is counted by its
    own events' times, not the newest event seen (the lake agrees; `querylog reconcile` checks it)."""
    year_ago = -365 * 86_400.0
    events = [
        QueryReceived(query_id="live", ts=at(0), query_text="now"),
        QueryReceived(query_id="old", ts=at(year_ago), query_text="backfilled"),
        IntentClassified(query_id="old", ts=at(year_ago + 0.1), intent="news", confidence=0.9),
        QueryCompleted(query_id="old", ts=at(year_ago + 0.3), latency_ms=300.0),  # no intent of its own
        QueryReceived(query_id="live-2", ts=at(1), query_text="now too"),
    ]
    registry = projected(events)
    assert value(registry, "querylog_queries_total", intent="news", status="completed") == 1
    assert value(registry, "querylog_queries_total", intent="unclassified", status="completed") is None
    assert value(registry, "querylog_active_queries") == 2


# -- counters by label -------------------------------------------------------------------------------------


def test_cache_requests_count_hits_and_misses_from_search_completed() -> None:
    events = [
        SearchCompleted(query_id="q1", ts=at(0), result_count=3, cache_hit=True),
        SearchCompleted(query_id="q2", ts=at(0), result_count=3, cache_hit=True),
        SearchCompleted(query_id="q3", ts=at(0), result_count=0, cache_hit=False),
    ]
    registry = projected(events)
    assert value(registry, "querylog_cache_requests_total", result="hit") == 2
    assert value(registry, "querylog_cache_requests_total", result="miss") == 1


def test_feedback_is_counted_by_score_with_every_score_present_from_the_start() -> None:
    events = [
        FeedbackReceived(query_id="q1", ts=at(0), score=1),
        FeedbackReceived(query_id="q2", ts=at(0), score=1),
        FeedbackReceived(query_id="q3", ts=at(0), score=-1),
    ]
    registry = projected(events)
    assert value(registry, "querylog_feedback_total", score="1") == 2
    assert value(registry, "querylog_feedback_total", score="-1") == 1
    assert value(registry, "querylog_feedback_total", score="0") == 0


def test_events_total_counts_every_event_by_type() -> None:
    events = [*answered("q1"), *answered("q2"), FeedbackReceived(query_id="q1", ts=at(5), score=0)]
    registry = projected(events)
    assert value(registry, "querylog_events_total", event_type="query_received") == 2
    assert value(registry, "querylog_events_total", event_type="query_completed") == 2
    assert value(registry, "querylog_events_total", event_type="feedback_received") == 1
    assert value(registry, "querylog_events_total", event_type="query_failed") == 0
    assert sum(value(registry, "querylog_events_total", event_type=t) or 0 for t in EVENT_TYPES) == len(events)


def test_an_empty_projection_exposes_zeroed_counters_for_known_label_values() -> None:
    registry = projected([])
    for event_type in EVENT_TYPES:
        assert value(registry, "querylog_events_total", event_type=event_type) == 0
    assert value(registry, "querylog_cache_requests_total", result="miss") == 0
    assert value(registry, "querylog_active_queries") == 0
    assert value(registry, "querylog_quality_score_count") == 0


# -- sink telemetry ----------------------------------------------------------------------------------------


def test_sink_telemetry_is_exposed_and_read_at_scrape_time() -> None:
    now = [1_000.0]
    loki = SinkTelemetry("loki", clock=lambda: now[0])
    projection = MetricsProjection()
    projection.add_sink(loki)
    projection.add_sink(SinkTelemetry("parquet"))
    registry = CollectorRegistry()
    projection.register(registry)

    loki.received(10)
    loki.sent(6, nbytes=2048)
    loki.sent(2, nbytes=512)
    loki.dropped("too_old", 2)
    loki.retried(3)
    loki.error("send")
    loki.error("send")
    loki.lag(events=4, seconds=1.5)

    def sink(name: str, **labels: str) -> float | None:
        return value(registry, f"querylog_sink_{name}", sink="loki", **labels)

    assert sink("events_received_total") == 10
    assert sink("events_sent_total") == 8
    assert sink("events_dropped_total", reason="too_old") == 2
    assert sink("retries_total") == 3
    assert sink("errors_total", stage="send") == 2
    assert sink("lag_events") == 4
    assert sink("lag_seconds") == 1.5
    assert sink("batches_total") == 2
    assert sink("batch_events_total") == 8
    assert sink("batch_bytes_total") == 2560
    assert value(registry, "querylog_sink_events_received_total", sink="parquet") == 0
    now[0] += 30  # nothing reported meanwhile (a projection waiting out an outage): the waiting events age
    assert sink("lag_seconds") == 31.5 and sink("lag_events") == 4

    loki.lag(events=0, seconds=0.0)  # no re-registration: the next scrape sees the new value
    assert sink("lag_events") == 0 and sink("lag_seconds") == 0


def test_two_sinks_with_one_name_are_refused() -> None:
    projection = MetricsProjection()
    projection.add_sink(SinkTelemetry("loki"))
    with pytest.raises(ValueError, match="already added"):
        projection.add_sink(SinkTelemetry("loki"))


# -- namespace, options, registration ----------------------------------------------------------------------


def test_the_namespace_prefixes_every_metric() -> None:
    projection = MetricsProjection("ontology")
    projection.add_sink(SinkTelemetry("loki"))
    projection.apply(answered("q1"))
    registry = CollectorRegistry()
    projection.register(registry)
    assert value(registry, "ontology_queries_total", intent="stock_price", status="completed") == 1
    assert value(registry, "ontology_sink_lag_seconds", sink="loki") == 0
    assert value(registry, "querylog_queries_total", intent="stock_price", status="completed") is None
    names = {family.name for family in text_string_to_metric_families(projection.exposition().decode())}
    assert names
    assert all(name.startswith("ontology_") for name in names)


@pytest.mark.parametrize("namespace", ["", "query-log", "1querylog", "query log", "a:b", "__querylog", "검색"])
def test_a_namespace_that_is_no_metric_name_prefix_is_refused_with_what_to_do(namespace: str) -> None:
    with pytest.raises(ValueError, match="use letters, digits and underscores"):
        MetricsProjection(namespace)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [([], "non-empty"), ([0.1, float("inf")], "finite"), ([1.0, 0.5], "strictly increasing"), ([1, 1], "repeats")],
)
def test_bad_bucket_bounds_are_refused(buckets: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricsProjection(query_buckets=buckets)


@pytest.mark.parametrize("stale_after", [0.0, -5.0, float("nan"), float("inf")])
def test_a_staleness_that_is_not_a_positive_span_is_refused(stale_after: float) -> None:
    with pytest.raises(ValueError, match="stale_after_seconds"):
        MetricsProjection(stale_after_seconds=stale_after)


def test_custom_buckets_replace_the_defaults() -> None:
    projection = MetricsProjection(query_buckets=[1, 5])
    projection.apply(answered("q1", latency_ms=3000.0))
    registry = CollectorRegistry()
    projection.register(registry)
    labels = {"intent": "stock_price", "status": "completed"}
    assert value(registry, "querylog_query_duration_seconds_bucket", le="1.0", **labels) == 0
    assert value(registry, "querylog_query_duration_seconds_bucket", le="5.0", **labels) == 1
    assert value(registry, "querylog_query_duration_seconds_bucket", le="0.5", **labels) is None


def test_one_registry_refuses_two_projections_with_the_same_namespace() -> None:
    registry = CollectorRegistry()
    MetricsProjection().register(registry)
    MetricsProjection("ontology").register(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        MetricsProjection().register(registry)


def test_concurrent_apply_loses_no_event() -> None:
    projection = MetricsProjection()
    batches = [[FeedbackReceived(query_id=f"q{w}-{i}", ts=at(i), score=1) for i in range(500)] for w in range(4)]
    threads = [threading.Thread(target=projection.apply, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry = CollectorRegistry()
    projection.register(registry)
    assert value(registry, "querylog_feedback_total", score="1") == 2000


# -- replay equals live ------------------------------------------------------------------------------------

_query_ids = st.sampled_from(["q1", "q2", "q3", "q4"])
_intents = st.sampled_from(["stock_price", "news", "smalltalk"])
_durations = st.none() | st.floats(min_value=0, max_value=120_000, allow_nan=False)
_scores = st.none() | st.floats(min_value=0, max_value=1)


@st.composite
def _event(draw: st.DrawFn) -> Event:
    # Timestamps move in bigger steps than the staleness sometimes, so pruning is part of what is replayed.
    ts = at(draw(st.integers(min_value=0, max_value=900)))
    qid = draw(_query_ids)
    kind = draw(st.sampled_from(EVENT_TYPES))
    if kind == "query_received":
        return QueryReceived(query_id=qid, ts=ts, query_text="질문")
    if kind == "intent_classified":
        return IntentClassified(
            query_id=qid, ts=ts, intent=draw(_intents), confidence=0.5, duration_ms=draw(_durations)
        )
    if kind == "search_completed":
        return SearchCompleted(
            query_id=qid, ts=ts, result_count=1, cache_hit=draw(st.booleans()), duration_ms=draw(_durations)
        )
    if kind == "response_generated":
        return ResponseGenerated(
            query_id=qid,
            ts=ts,
            duration_ms=draw(_durations),
            quality_score=draw(_scores),
            gen_ai_request_model=draw(st.sampled_from([None, "gpt-4o", "gpt-4o-mini", "no-such-model"])),
            gen_ai_usage_input_tokens=draw(st.none() | st.integers(0, 5_000)),
            gen_ai_usage_output_tokens=draw(st.none() | st.integers(0, 5_000)),
            cost_usd=draw(st.none() | st.floats(min_value=0, max_value=1)),
        )
    if kind == "query_completed":
        latency = draw(st.floats(min_value=0, max_value=120_000))
        intent = draw(st.none() | _intents)
        release = draw(st.sampled_from([None, "r1", "r2"]))
        return QueryCompleted(
            query_id=qid, ts=ts, latency_ms=latency, intent=intent, quality_score=draw(_scores), release=release
        )
    if kind == "query_failed":
        return QueryFailed(
            query_id=qid, ts=ts, error_type="Boom", latency_ms=draw(_durations), intent=draw(st.none() | _intents)
        )
    return FeedbackReceived(query_id=qid, ts=ts, score=draw(st.sampled_from([-1, 0, 1])))


@settings(max_examples=150, deadline=None)
@given(events=st.lists(_event(), max_size=40), cut=st.integers(min_value=1, max_value=7))
def test_replaying_the_same_events_gives_the_same_exposition_however_they_were_batched(
    events: list[Event], cut: int
) -> None:
    live = MetricsProjection()  # fed as a tailing projector is: in small batches, as the log grows
    for start in range(0, len(events), cut):
        live.apply(events[start : start + cut])
    replayed = MetricsProjection()  # rebuilt from the log in one go
    replayed.apply(events)
    one_by_one = MetricsProjection()
    for event in events:
        one_by_one.apply([event])

    restarted = MetricsProjection()  # a restart from a snapshot taken after the first batch, then the rest
    restarted.apply(events[:cut])
    resumed = MetricsProjection()
    resumed.restore_state(restarted.export_state())
    resumed.apply(events[cut:])

    exposition = replayed.exposition()
    assert live.exposition() == exposition
    assert one_by_one.exposition() == exposition
    assert resumed.exposition() == exposition
    # And it is valid Prometheus text format, with every event counted.
    families = {f.name: f for f in text_string_to_metric_families(exposition.decode())}
    assert sum(s.value for s in families["querylog_events"].samples) == len(events)


# -- cost, releases, fallbacks (schema v2) ------------------------------------------------------------------------
def _samples(projection: MetricsProjection, family: str, *labels: str) -> dict[tuple[str, ...], float]:
    text = projection.exposition().decode()
    return {
        tuple(sample.labels[k] for k in labels): sample.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for sample in f.samples
        if sample.name.endswith("_total")
    }


def test_cost_is_the_recorded_one_else_the_price_tables_and_unpriced_responses_are_counted() -> None:
    from querylog.logging.pricing import DEFAULT_PRICES

    projection = MetricsProjection()
    projection.apply(
        [
            ResponseGenerated(query_id="a", ts=at(0), gen_ai_request_model="gpt-4o", cost_usd=0.25,
                              gen_ai_usage_input_tokens=10**6, gen_ai_usage_output_tokens=0),
            ResponseGenerated(query_id="b", ts=at(1), gen_ai_request_model="gpt-4o",
                              gen_ai_usage_input_tokens=2_000, gen_ai_usage_output_tokens=500),
            ResponseGenerated(query_id="c", ts=at(2), gen_ai_request_model="our-own-llm",
                              gen_ai_usage_input_tokens=10, gen_ai_usage_output_tokens=10),
            ResponseGenerated(query_id="d", ts=at(3), gen_ai_request_model="gpt-4o"),  # no tokens: unpriced
        ]
    )  # fmt: skip
    row = DEFAULT_PRICES.price("gpt-4o", at(1))
    assert row is not None
    priced = (2_000 * row.input + 500 * row.output) / 1e6
    assert _samples(projection, "querylog_llm_cost_usd", "model") == {("gpt-4o",): pytest.approx(0.25 + priced)}
    assert _samples(projection, "querylog_llm_unpriced_responses", "model") == {("gpt-4o",): 1.0, ("our-own-llm",): 1.0}


def test_another_price_table_prices_differently_and_a_snapshot_of_the_old_one_is_not_its_state() -> None:
    from datetime import date

    from querylog.logging.pricing import Price, PriceTable

    ours = PriceTable("ours-1", [Price(model="our-own-llm", effective_from=date(2020, 1, 1), input=1.0, output=2.0)])
    event = ResponseGenerated(query_id="c", ts=at(0), gen_ai_request_model="our-own-llm",
                              gen_ai_usage_input_tokens=1_000, gen_ai_usage_output_tokens=1_000)  # fmt: skip
    projection = MetricsProjection(prices=ours)
    projection.apply([event])
    assert _samples(projection, "querylog_llm_cost_usd", "model") == {("our-own-llm",): pytest.approx(0.003)}
    assert projection.config()["prices"] == "ours-1"  # the snapshot says which prices it counted with


def test_releases_and_models_are_bounded_label_values() -> None:
    from querylog.logging.metrics import MAX_LABEL_VALUES

    projection = MetricsProjection()
    projection.apply(
        [
            QueryCompleted(query_id=f"q{i}", ts=at(i), latency_ms=1.0, release=f"r{i}")
            for i in range(MAX_LABEL_VALUES + 5)
        ]
        + [QueryFailed(query_id="f", ts=at(999), error_type="E", release=None)]
    )
    releases = _samples(projection, "querylog_release_queries", "release", "status")
    assert len({release for release, _ in releases}) == MAX_LABEL_VALUES + 2  # the first ones, "other", "unknown"
    assert len(releases) == 2 * (MAX_LABEL_VALUES + 2)  # each at both statuses, 0 where none
    assert releases[("other", "completed")] == 5  # the releases past the cap share one series
    assert releases[("unknown", "failed")] == 1  # no release said: always its own series
    assert sum(releases.values()) == MAX_LABEL_VALUES + 6


def test_a_reformulated_query_without_intent_or_past_the_cap_takes_no_intent_slot() -> None:
    """A reformulation of a query counted `unclassified` (or `other`) put that label among the fifty intents, and the
    fiftieth real intent went to `other`: docs/metrics.md says both always keep their own series."""
    from querylog.logging.metrics import MAX_LABEL_VALUES

    projection = MetricsProjection()
    asked = [("u1", None, "삼성전자 주가 전망은?"), ("u2", None, "삼성전자 주가 전망 알려줘")]
    asked += [(f"q{i}", f"intent{i:02d}", f"question {i}") for i in range(MAX_LABEL_VALUES + 1)]
    asked += [("o1", "one-too-many", "현대차 주가 전망은?"), ("o2", "another", "현대차 주가 전망 알려줘")]
    events: list[object] = []
    for n, (query_id, intent, text) in enumerate(asked):
        session = "s-u" if query_id.startswith("u") else "s-o" if query_id.startswith("o") else f"s-{query_id}"
        events += [
            QueryReceived(query_id=query_id, session_id=session, query_text=text, ts=at(2 * n)),
            QueryCompleted(query_id=query_id, latency_ms=10.0, intent=intent, ts=at(2 * n + 1)),
        ]
    projection.apply(events)  # type: ignore[arg-type]
    queries = _samples(projection, "querylog_queries", "intent", "status")
    assert queries[(f"intent{MAX_LABEL_VALUES - 1:02d}", "completed")] == 1  # the fiftieth: its own series
    assert queries[("other", "completed")] == 3  # the fifty-first, and the two past it
    reformulated = _samples(projection, "querylog_reformulated_queries", "intent")
    assert reformulated == {("unclassified",): 1, ("other",): 1}
    copy = MetricsProjection()
    copy.restore_state(projection.export_state())
    copy.apply([QueryCompleted(query_id="late", latency_ms=1.0, intent="brand-new", ts=at(999))])
    assert _samples(copy, "querylog_queries", "intent", "status")[("other", "completed")] == 4


def test_a_backfilled_session_s_reformulation_is_counted_after_newer_events() -> None:
    """A producer's backfill of last week, ingested after today's traffic: its session's two askings, a minute
    apart, are a reformulation, as the lake says; the fold forgot the session at once (judged by the newest time
    seen, not the backfill's own)."""
    today = [QueryReceived(query_id="now", query_text="카카오 배당", ts=at(7 * 86_400))]  # no session
    backfill: list[Event] = []
    for n, (query_id, text) in enumerate([("b1", "네이버 주가 전망은?"), ("b2", "네이버 주가 전망 알려줘")]):
        backfill += [
            QueryReceived(query_id=query_id, session_id="s-old", query_text=text, ts=at(60 * n)),
            QueryCompleted(query_id=query_id, latency_ms=10.0, intent="stock_analysis", ts=at(60 * n + 1)),
        ]
    in_order, backfilled = MetricsProjection(), MetricsProjection()
    in_order.apply([*backfill, *today])
    backfilled.apply([*today, *backfill])
    expected = {("stock_analysis",): 1.0}
    assert _samples(in_order, "querylog_reformulated_queries", "intent") == expected
    assert _samples(backfilled, "querylog_reformulated_queries", "intent") == expected


def test_sink_fallbacks_are_exposed_by_sink_and_reason() -> None:
    projection = MetricsProjection()
    telemetry = SinkTelemetry("parquet")
    telemetry.fell_back("unknown_field")
    telemetry.fell_back("unknown_field")
    telemetry.fell_back("nested_shape")
    projection.add_sink(telemetry)
    assert _samples(projection, "querylog_sink_fallbacks", "sink", "reason") == {
        ("parquet", "nested_shape"): 1.0,
        ("parquet", "unknown_field"): 2.0,
    }


def test_intents_from_producers_are_bounded_as_models_are() -> None:
    """Apps name their own intents now (querylog.intent on OTLP spans): one that sends a new one per request must
    not make a series each."""
    from querylog.logging.events import UNCLASSIFIED, QueryCompleted, QueryFailed
    from querylog.logging.metrics import MAX_LABEL_VALUES, MetricsProjection

    projection = MetricsProjection()
    projection.apply([QueryCompleted(query_id=f"q-{i}", latency_ms=1.0, intent=f"intent-{i}") for i in range(60)])
    projection.apply([QueryFailed(query_id="q-none", error_type="E")])
    text = projection.exposition().decode()
    intents = {
        line.split('intent="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("querylog_queries_total{")
    }
    assert len(intents) == MAX_LABEL_VALUES + 2  # fifty, then `other`, and `unclassified` of its own
    assert "other" in intents and UNCLASSIFIED in intents and "intent-0" in intents and "intent-59" not in intents
    copy = MetricsProjection()
    copy.restore_state(projection.export_state())  # the bound survives a restart: no fifty more
    copy.apply([QueryCompleted(query_id="q-new", latency_ms=1.0, intent="brand-new")])
    assert 'querylog_queries_total{intent="other",status="completed"} 11.0' in copy.exposition().decode()
