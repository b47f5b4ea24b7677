"""The DuckDB catalog: events, queries and sessions views over the lake; lock-free; clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from querylog.analytics.catalog import Catalog, CatalogError
from querylog.logging.events import (
    Event,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
)
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.tracker import QueryTracker


def _lake(tmp_path: Path) -> Path:
    log_dir, lake = tmp_path / "log", tmp_path / "lake"
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log, env="test")
        for i, (text, intent, hit) in enumerate(
            [("네이버 주가 전망은?", "stock_analysis", False), ("latest NVIDIA news", "news_inquiry", True)] * 3
        ):
            with tracker.query(text, session_id=f"s-{i % 2}", user_id="u-1") as q:
                with q.stage("classify"):
                    q.classified(intent, 0.8)
                with q.stage("search"):
                    q.searched(2, cache_hit=hit)
                with q.stage("generate"):
                    q.responded(model="m", quality_score=0.5)
        failing = tracker.query("카카오 #fail", session_id="s-9")

        def fail() -> None:
            with failing as q:
                q.classified("stock_analysis", 0.7)
                raise RuntimeError("LLM down")

        with pytest.raises(RuntimeError):
            fail()
        q = failing
        tracker.feedback(q.query_id, -1, comment="별로")
    with ParquetSink(lake) as sink:
        Projector(LogReader(log_dir), sink).catch_up()
    return lake


def test_events_view_has_one_row_per_event(tmp_path: Path) -> None:
    with Catalog(_lake(tmp_path)) as cat:
        _, rows = cat.query("select count(*), count(distinct event_id) from events")
        assert rows == [(6 * 5 + 3 + 1, 6 * 5 + 3 + 1)]
        columns, _ = cat.query("select * from events limit 0")
    for name in (
        "event_id",
        "event_type",
        "ts",
        "query_id",
        "session_id",
        "user_id",
        "intent",
        "query_text",
        "latency_ms",
    ):
        assert name in columns


def test_queries_view_has_one_row_per_query_with_its_story(tmp_path: Path) -> None:
    with Catalog(_lake(tmp_path)) as cat:
        columns, rows = cat.query(
            "select query_text, intent, status, latency_ms, classify_ms, search_ms, generate_ms, cache_hit, "
            "quality_score, session_id, user_id, started_at, error_type, feedback_score from queries order by started_at"
        )
    assert len(rows) == 7
    first = dict(zip(columns, rows[0], strict=True))
    assert first["query_text"] == "네이버 주가 전망은?"
    assert first["intent"] == "stock_analysis" and first["status"] == "completed"
    assert first["latency_ms"] >= first["classify_ms"] >= 0
    assert first["cache_hit"] is False and first["quality_score"] == 0.5
    assert first["session_id"] == "s-0" and first["user_id"] == "u-1" and first["started_at"] is not None
    failed = dict(zip(columns, rows[-1], strict=True))
    assert failed["status"] == "failed" and failed["error_type"] == "RuntimeError"
    assert failed["feedback_score"] == -1


def test_sessions_view_groups_queries(tmp_path: Path) -> None:
    with Catalog(_lake(tmp_path)) as cat:
        _, rows = cat.query("select session_id, queries, failed from sessions order by session_id")
    assert rows == [("s-0", 3, 0), ("s-1", 3, 0), ("s-9", 1, 1)]


def test_an_empty_lake_has_empty_views_not_errors(tmp_path: Path) -> None:
    with Catalog(tmp_path / "nothing") as cat:
        assert cat.query("select count(*) from queries")[1] == [(0,)]
        assert cat.query("select count(*) from sessions")[1] == [(0,)]


def test_new_files_are_seen_without_reopening(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    with Catalog(lake) as cat:
        before = cat.query("select count(*) from events")[1][0][0]
        log_dir = tmp_path / "log"
        with EventLog(log_dir) as log, QueryTracker(log).query("삼성전자"):
            pass
        with ParquetSink(lake) as sink:
            Projector(LogReader(log_dir), sink).catch_up()
        assert cat.query("select count(*) from events")[1][0][0] == before + 2


def test_a_cursor_read_in_part_does_not_block_the_catalogs_next_query(tmp_path: Path) -> None:
    """DuckDB 2 refuses a relation on a connection whose last result was not read to its end: one row taken from
    `execute`'s cursor made every later `arrow`, `refresh` and search sync fail with Resource In Use."""
    from querylog.analytics.queries import arrow_table
    from querylog.analytics.upkeep import LakeSearch

    with Catalog(_lake(tmp_path)) as cat:
        assert cat.execute("select query_id from queries order by started_at").fetchone() is not None
        assert cat.arrow("select count(*) as n from queries").to_pylist() == [{"n": 7}]
        cat.execute("select * from events").fetchone()
        cat.refresh()
        cat.execute("select * from events").fetchone()
        assert arrow_table(cat, "select count(*) as n from sessions").to_pylist() == [{"n": 3}]
        cat.execute("select * from events").fetchone()
        assert LakeSearch(tmp_path / "home").sync(cat, now=datetime.now(UTC)) == 7


def test_bad_sql_is_one_clear_line(tmp_path: Path) -> None:
    with Catalog(_lake(tmp_path)) as cat, pytest.raises(CatalogError) as info:
        cat.query("select nope from queries")
    assert "\n" not in str(info.value) and "nope" in str(info.value)


def test_parameters_are_bound_not_interpolated(tmp_path: Path) -> None:
    with Catalog(_lake(tmp_path)) as cat:
        _, rows = cat.query("select count(*) from queries where query_text = ?", ["x' or '1'='1"])
    assert rows == [(0,)]


def _query_row(tmp_path: Path, events: list) -> dict:
    log_dir, lake = tmp_path / "log", tmp_path / "lake"
    with EventLog(log_dir) as log:
        for event in events:
            log.append(event)
    with ParquetSink(lake) as sink:
        Projector(LogReader(log_dir), sink).catch_up()
    with Catalog(lake) as cat:
        columns, rows = cat.query("select * from queries")
    [row] = rows
    return dict(zip(columns, row, strict=True))


def _at(second: int) -> datetime:
    return datetime(2026, 12, 1, 9, 0, second, tzinfo=UTC)


def test_a_query_with_several_responses_shows_the_last_answer_and_every_responses_tokens(tmp_path: Path) -> None:
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            ResponseGenerated(**q, gen_ai_request_model="gpt-4o", gen_ai_usage_input_tokens=200,
                              gen_ai_usage_output_tokens=20, answer_text="final", duration_ms=2.0, ts=_at(5)),
            ResponseGenerated(**q, gen_ai_request_model="gpt-4o-mini", gen_ai_usage_input_tokens=100,
                              gen_ai_usage_output_tokens=10, answer_text="draft", duration_ms=1.0, ts=_at(2)),
            QueryCompleted(**q, latency_ms=5.0, ts=_at(6)),
        ],
    )  # fmt: skip
    assert (row["model"], row["answer_text"]) == ("gpt-4o", "final")  # the later one, whatever the log's order
    assert (row["input_tokens"], row["output_tokens"], row["generate_ms"]) == (300, 30, 3.0)
    assert row["cost_source"] is not None and row["cost_usd"] > 0  # both priced: the sum of both


def test_the_last_search_and_response_are_shown_whole_not_mixed_with_an_earlier_steps(tmp_path: Path) -> None:
    """A draft answer the user never saw was shown beside the filtered final response's model, and a first search's
    three sources beside the second's 0 results: each column took the latest step that had a value (walk)."""
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            SearchCompleted(**q, result_count=3, top_score=0.9, sources=(Source(doc_id="a", rank=1),), ts=_at(1)),
            ResponseGenerated(**q, gen_ai_request_model="gpt-4o", answer_text="초안", finish_reason="tool_calls",
                              response_type="draft", ttft_ms=50.0, ts=_at(2)),
            SearchCompleted(**q, result_count=0, ts=_at(3)),
            ResponseGenerated(**q, gen_ai_request_model="claude-sonnet-4", finish_reason="content_filter",
                              answer_chars=0, ts=_at(4)),
            QueryCompleted(**q, latency_ms=5.0, ts=_at(5)),
        ],
    )  # fmt: skip
    assert (row["model"], row["finish_reason"], row["answer_chars"]) == ("claude-sonnet-4", "content_filter", 0)
    assert (row["answer_text"], row["response_type"], row["ttft_ms"]) == (None, None, None)
    assert (row["result_count"], row["top_score"], row["sources"]) == (0, None, None)


def test_a_query_whose_responses_are_not_all_priced_has_no_cost_not_a_part_of_it(tmp_path: Path) -> None:
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            ResponseGenerated(
                **q,
                gen_ai_request_model="gpt-4o",
                gen_ai_usage_input_tokens=200,
                gen_ai_usage_output_tokens=1,
                ts=_at(1),
            ),
            ResponseGenerated(
                **q,
                gen_ai_request_model="my-private-llm",
                gen_ai_usage_input_tokens=10,
                gen_ai_usage_output_tokens=1,
                ts=_at(2),
            ),
        ],
    )
    assert (row["cost_usd"], row["cost_source"]) == (None, None)


@pytest.mark.parametrize("ending", ["failed", "in_progress"])
def test_a_query_without_a_response_has_no_cost_and_no_cost_source(tmp_path: Path, ending: str) -> None:
    q = {"query_id": "q-1"}
    events: list[Event] = [QueryReceived(**q, query_text="질문", ts=_at(0))]
    if ending == "failed":
        events.append(QueryFailed(**q, error_type="TimeoutError", stage="generate", latency_ms=9.0, ts=_at(1)))
    row = _query_row(tmp_path, events)
    assert (row["status"], row["cost_usd"], row["cost_source"]) == (ending, None, None)  # not 'mixed'


def test_recorded_and_priced_costs_add_up_and_say_they_are_mixed(tmp_path: Path) -> None:
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            ResponseGenerated(
                **q,
                gen_ai_request_model="gpt-4o",
                gen_ai_usage_input_tokens=1000,
                gen_ai_usage_output_tokens=1,
                ts=_at(1),
            ),
            ResponseGenerated(**q, gen_ai_request_model="x", cost_usd=0.5, ts=_at(2)),
        ],
    )
    assert row["cost_source"] == "mixed" and row["cost_usd"] > 0.5


def test_the_latest_feedback_gives_its_own_score_and_comment(tmp_path: Path) -> None:
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            FeedbackReceived(**q, score=-1, comment="오래된 정보예요", ts=_at(1)),
            FeedbackReceived(**q, score=1, comment="다시 보니 좋아요", ts=_at(2)),
            FeedbackReceived(**q, score=0, ts=_at(3)),
        ],
    )
    assert (row["feedback_score"], row["feedback_comment"]) == (0, None)


def test_the_terminal_events_intent_and_outcome_count_as_the_metrics_count_them(tmp_path: Path) -> None:
    # A producer that sends only the start and the end (its search and answer unrecorded) still has its result
    # count, cache hit and quality in the view; and the end's intent is the query's, as /metrics and reconcile say.
    q = {"query_id": "q-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, query_text="질문", ts=_at(0)),
            IntentClassified(**q, intent="x", confidence=0.5, ts=_at(1)),
            QueryCompleted(**q, latency_ms=3.0, intent="y", result_count=1, cache_hit=True, quality_score=0.5,
                           ts=_at(3)),
        ],
    )  # fmt: skip
    assert (row["intent"], row["result_count"], row["cache_hit"], row["quality_score"]) == ("y", 1, True, 0.5)


@pytest.mark.parametrize(
    ("ends", "status", "latency_ms"),
    [
        ([("failed", 1, 1000.0), ("completed", 3, 3000.0)], "completed", 3000.0),  # retried to an answer
        ([("completed", 3, 3000.0), ("failed", 1, 1000.0)], "completed", 3000.0),  # the same, logged out of order
        ([("completed", 1, 10.0), ("failed", 2, None)], "failed", None),  # the last says no latency: none
        ([("completed", 2, 5.0), ("failed", 2, 7.0)], "failed", 7.0),  # a tie in time: the failure
    ],
)
def test_a_query_with_two_terminal_events_has_the_latest_ones_status_and_latency(
    tmp_path: Path, ends: list[tuple[str, int, float | None]], status: str, latency_ms: float | None
) -> None:
    """A failure followed by a successful retry under the same query id was `failed` with the retry's latency: the
    status came from any failure, the latency from the longest of the two."""
    q = {"query_id": "q-1"}
    events: list[Event] = [QueryReceived(**q, query_text="질문", ts=_at(0))]
    for kind, second, latency in ends:
        if kind == "failed":
            events.append(QueryFailed(**q, error_type="E", stage="generate", latency_ms=latency, ts=_at(second)))
        else:
            events.append(QueryCompleted(**q, latency_ms=latency, ts=_at(second)))
    row = _query_row(tmp_path, events)
    assert (row["status"], row["latency_ms"]) == (status, latency_ms)
    assert row["ended_at"] == _at(max(second for _, second, _ in ends))


def test_a_query_belongs_to_the_service_that_asked_it_not_to_the_server_that_took_its_feedback(
    tmp_path: Path,
) -> None:
    """`/v1/feedback` stamps a verdict with the server's own service, env and release: a query another app asked
    (an OTLP producer, say) moved to the server's service in the `queries` view, and so in reports and filters."""
    q = {"query_id": "q-1"}
    asked = {"service": "otel-chat", "env": "prod", "release": "1.4.2", "prompt_version": "p7"}
    row = _query_row(
        tmp_path,
        [
            FeedbackReceived(**q, score=-1, service="querylog", env="dev", release="server-9", ts=_at(9)),
            QueryReceived(**q, **asked, query_text="질문", ts=_at(0)),
            QueryCompleted(**q, **asked, latency_ms=5.0, ts=_at(1)),
        ],
    )
    assert {k: row[k] for k in asked} == asked
    assert row["feedback_score"] == -1


@pytest.mark.parametrize("own", [None, "s-asker"])
def test_a_query_s_session_user_and_trace_are_its_own_never_those_of_who_gave_feedback(
    tmp_path: Path, own: str | None
) -> None:
    """A query asked without a session took the session of whoever gave feedback on it, which made a session of a
    question it never asked in the `sessions` view."""
    q = {"query_id": "q-1"}
    ids = {"session_id": own, "user_id": own and "u-asker", "trace_id": own and "a" * 32}
    events = [
        FeedbackReceived(**q, score=1, session_id="s-fb", user_id="u-fb", trace_id="f" * 32, ts=_at(0)),
        QueryReceived(**q, **ids, query_text="질문", ts=_at(1)),
        QueryCompleted(**q, **ids, latency_ms=5.0, ts=_at(2)),
    ]
    row = _query_row(tmp_path, events)
    assert (row["session_id"], row["user_id"], row["trace_id"], row["feedback_score"]) == (*ids.values(), 1)
    with Catalog(tmp_path / "lake") as catalog:
        assert [r[0] for r in catalog.query("select session_id from sessions")[1]] == ([own] if own else [])


def test_two_services_under_one_query_id_are_the_first_asker_s_query(tmp_path: Path) -> None:
    """A query id two apps both used is one query (query ids are the producers' to keep unique): the app that
    asked first, every time the view is read, and the same app search names."""
    q = {"query_id": "shared-1"}
    row = _query_row(
        tmp_path,
        [
            QueryReceived(**q, service="svc-b", env="b", query_text="svc-b 질문", language="ko", ts=_at(5)),
            QueryReceived(**q, service="svc-a", env="a", query_text="svc-a 질문", ts=_at(0)),
        ],
    )
    # Its first asking as a whole: svc-a gave no language, and svc-b's is not lent to it.
    assert (row["service"], row["env"], row["query_text"], row["language"]) == ("svc-a", "a", "svc-a 질문", None)
