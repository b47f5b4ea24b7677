"""Event → Loki entry: three labels, ids as structured metadata, a UTF-8 NFC JSON line; and back, exactly."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from querylog.logging.events import (
    TRUNCATION_MARKER,
    FeedbackReceived,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    SearchCompleted,
)
from querylog.logging.loki_entries import (
    MAX_LINE_BYTES,
    entry_for,
    event_from_entry,
    plan_pushes,
    stream_selector,
    ts_ns,
)

TS = datetime(2026, 11, 24, 1, 35, 17, 636728, tzinfo=UTC)


def _received(text: str = "SK하이닉스 주가 전망은?", **kw: object) -> QueryReceived:
    return QueryReceived(query_id="q-1", session_id="s-7", user_id="u-42", query_text=text, ts=TS, **kw)  # type: ignore[arg-type]


def test_labels_are_app_env_event_and_ids_are_structured_metadata() -> None:
    entry = entry_for(_received(trace_id="t-9"), app="querylog", env="prod")
    assert entry.labels == {"app": "querylog", "env": "prod", "event": "query_received"}
    assert dict(entry.metadata) == {"user_id": "u-42", "session_id": "s-7", "query_id": "q-1", "trace_id": "t-9"}
    assert entry.ts_ns == 1_795_484_117_636_728_000


def test_only_the_ids_that_are_set_become_metadata() -> None:
    entry = entry_for(QueryCompleted(query_id="q-1", latency_ms=5.0, ts=TS), app="querylog", env="dev")
    assert entry.metadata == (("query_id", "q-1"),)


def test_the_line_is_utf8_json_without_labels_ids_or_timestamp() -> None:
    entry = entry_for(_received(), app="querylog", env="dev")
    assert "하이닉스" in entry.line and "\\u" not in entry.line
    fields = orjson.loads(entry.line)
    assert list(fields) == ["level", "query_text", "event_id", "schema_version"]
    assert fields["level"] == "info"


def test_default_values_are_written_so_logql_can_filter_on_them() -> None:
    miss = SearchCompleted(query_id="q", result_count=0, ts=TS)
    fields = orjson.loads(entry_for(miss, app="a", env="e").line)
    assert fields["cache_hit"] is False and fields["result_count"] == 0 and "duration_ms" not in fields


def test_a_failed_query_is_an_error_line_for_lokis_detected_level() -> None:
    failed = QueryFailed(query_id="q", error_type="Timeout", ts=TS)
    assert orjson.loads(entry_for(failed, app="a", env="e").line)["level"] == "error"


def test_decomposed_hangul_is_composed_in_the_line() -> None:
    nfd = unicodedata.normalize("NFD", "환불 요청")
    entry = entry_for(FeedbackReceived(query_id="q", score=-1, comment=nfd, ts=TS), app="a", env="e")
    assert "환불 요청" in entry.line and unicodedata.is_normalized("NFC", entry.line)


def test_service_and_env_stay_in_the_line_only_when_they_differ_from_the_labels() -> None:
    event = QueryCompleted(query_id="q", latency_ms=1.0, service="other", env="staging", ts=TS)
    fields = orjson.loads(entry_for(event, app="querylog", env="prod").line)
    assert (fields["service"], fields["env"]) == ("other", "staging")
    same = QueryCompleted(query_id="q", latency_ms=1.0, service="querylog", env="prod", ts=TS)
    assert "service" not in orjson.loads(entry_for(same, app="querylog", env="prod").line)


def test_a_line_over_the_limit_is_cut_with_a_marker_and_stays_json() -> None:
    event = QueryFailed(query_id="q", error_type="E", error_message="에" * 16_000, ts=TS)
    entry = entry_for(event, app="a", env="e", max_line_bytes=4096)
    assert entry.truncated and entry.line_bytes <= 4096
    assert orjson.loads(entry.line)["error_message"].endswith(TRUNCATION_MARKER)


def test_the_largest_event_fits_lokis_line_limit_uncut() -> None:
    event = QueryReceived(query_id="q", query_text="\u20ac" * 20_000, ts=TS)  # capped at 16,384 chars by the schema
    entry = entry_for(event, app="a", env="e")
    assert not entry.truncated and entry.line_bytes < MAX_LINE_BYTES


def test_an_absurd_id_is_capped_so_metadata_stays_under_lokis_limit() -> None:
    entry = entry_for(QueryCompleted(query_id="q" * 5000, latency_ms=1.0, ts=TS), app="a", env="e")
    assert entry.truncated and len(dict(entry.metadata)["query_id"].encode()) <= 1024


def test_stream_selector() -> None:
    assert stream_selector("querylog", "prod") == '{app="querylog", env="prod"}'
    assert stream_selector("querylog", "prod", "query_failed").endswith('event="query_failed"}')


# NFC text: the line is NFC by design (test_decomposed_hangul_is_composed_in_the_line), so a field the event itself
# does not normalise (QueryFailed.error_type: "\U0002f800" composes to "丽") would come back composed, not equal.
_text = (
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
    .map(lambda s: unicodedata.normalize("NFC", s))
    .filter(str.strip)
)
_events = st.one_of(
    st.builds(
        QueryReceived,
        query_id=st.uuids().map(str),
        query_text=_text,
        session_id=st.none() | _text,
        user_id=st.none() | _text,
        trace_id=st.none() | st.text("0123456789abcdef", min_size=32, max_size=32),
        language=st.none() | st.sampled_from(["ko", "en"]),
        env=st.sampled_from(["dev", "prod"]),
        service=st.sampled_from(["querylog", "chat"]),
    ),
    st.builds(
        SearchCompleted,
        query_id=st.uuids().map(str),
        result_count=st.integers(0, 100),
        cache_hit=st.booleans(),
        duration_ms=st.none() | st.floats(0, 1e6, allow_nan=False),
    ),
    st.builds(QueryFailed, query_id=st.uuids().map(str), error_type=_text, error_message=st.text(max_size=50)),
)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_the_event_comes_back_exactly_from_what_loki_returns(event: QueryReceived) -> None:
    entry = entry_for(event, app="querylog", env="prod")
    # Loki's query API gives the stream labels merged with the entry's structured metadata (and its own extras).
    labels = {**entry.labels, "service_name": "querylog", "detected_level": "info", **dict(entry.metadata)}
    assert event_from_entry(str(entry.ts_ns), entry.line, labels) == event


@settings(max_examples=50, deadline=None)
@given(st.lists(_events, min_size=1, max_size=60), st.integers(2048, 20_000))
def test_pushes_respect_the_size_limit_and_keep_every_entry_once(events: list[QueryReceived], limit: int) -> None:
    entries = [entry_for(e, app="querylog", env="prod") for e in events]
    pushes = plan_pushes(entries, max_bytes=limit)
    assert sorted(e.event_id for p in pushes for e in p.entries) == sorted(e.event_id for e in entries)
    for push in pushes:
        assert len(push.body) <= limit or len(push.entries) == 1
        body = orjson.loads(push.body)
        for stream in body["streams"]:
            stamps = [int(v[0]) for v in stream["values"]]
            assert stamps == sorted(stamps)
            assert set(stream["stream"]) == {"app", "env", "event"}
    newest = [max(e.ts_ns for e in p.entries) for p in pushes]
    oldest = [min(e.ts_ns for e in p.entries) for p in pushes]
    assert all(a <= b for a, b in zip(newest, oldest[1:], strict=False))


def test_ts_ns_is_exact() -> None:
    assert ts_ns(datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) % 10**9 == 1000
