"""Log line → Loki entry: three labels, ids as structured metadata, a UTF-8 NFC JSON line; and back, exactly."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.loki_entries import entry_of, event_from_entry

from querylog.logging.codec import DecodeError, decode, encode
from querylog.logging.events import (
    TRUNCATION_MARKER,
    FeedbackReceived,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    SearchCompleted,
    is_blank,
)
from querylog.logging.loki import encode_lines, plan_pushes
from querylog.logging.loki.encoding import MAX_LINE_BYTES, LineError

TS = datetime(2026, 11, 24, 1, 35, 17, 636728, tzinfo=UTC)


def _received(text: str = "SK하이닉스 주가 전망은?", **kw: object) -> QueryReceived:
    return QueryReceived(query_id="q-1", session_id="s-7", user_id="u-42", query_text=text, ts=TS, **kw)  # type: ignore[arg-type]


def test_labels_are_app_env_event_and_ids_are_structured_metadata() -> None:
    entry = entry_of(_received(trace_id="t-9"), app="querylog", env="prod")
    assert entry.labels == {"app": "querylog", "env": "prod", "event": "query_received"}
    assert entry.metadata == {"user_id": "u-42", "session_id": "s-7", "query_id": "q-1", "trace_id": "t-9"}
    assert entry.ts_ns == 1_795_484_117_636_728_000


def test_only_the_ids_that_are_set_become_metadata() -> None:
    entry = entry_of(QueryCompleted(query_id="q-1", latency_ms=5.0, ts=TS), app="querylog", env="dev")
    assert entry.metadata == {"query_id": "q-1"}


def test_the_line_is_utf8_json_without_labels_ids_or_timestamp() -> None:
    entry = entry_of(_received(), app="querylog", env="dev")
    assert "하이닉스" in entry.line and "\\u" not in entry.line
    fields = orjson.loads(entry.line)
    assert list(fields) == ["level", "query_text", "event_id", "schema_version"]
    assert fields["level"] == "info"


def test_default_values_are_written_so_logql_can_filter_on_them() -> None:
    miss = SearchCompleted(query_id="q", result_count=0, ts=TS)
    fields = orjson.loads(entry_of(miss, app="a", env="e").line)
    assert fields["cache_hit"] is False and fields["result_count"] == 0 and "duration_ms" not in fields


def test_a_failed_query_is_an_error_line_for_lokis_detected_level() -> None:
    failed = QueryFailed(query_id="q", error_type="Timeout", ts=TS)
    assert orjson.loads(entry_of(failed, app="a", env="e").line)["level"] == "error"


def test_decomposed_hangul_is_composed_in_the_line() -> None:
    nfd = unicodedata.normalize("NFD", "환불 요청")
    entry = entry_of(FeedbackReceived(query_id="q", score=-1, comment=nfd, ts=TS), app="a", env="e")
    assert "환불 요청" in entry.line and unicodedata.is_normalized("NFC", entry.line)


def test_service_and_env_stay_in_the_line_only_when_they_differ_from_the_labels() -> None:
    event = QueryCompleted(query_id="q", latency_ms=1.0, service="other", env="staging", ts=TS)
    fields = orjson.loads(entry_of(event, app="querylog", env="prod").line)
    assert (fields["service"], fields["env"]) == ("other", "staging")
    same = QueryCompleted(query_id="q", latency_ms=1.0, service="querylog", env="prod", ts=TS)
    assert "service" not in orjson.loads(entry_of(same, app="querylog", env="prod").line)


def test_a_line_over_the_limit_is_cut_with_a_marker_and_stays_json() -> None:
    event = QueryFailed(query_id="q", error_type="E", error_message="에" * 16_000, ts=TS)
    entry = entry_of(event, app="a", env="e", max_line_bytes=4096)
    assert entry.cut and len(entry.line.encode()) <= 4096
    assert orjson.loads(entry.line)["error_message"].endswith(TRUNCATION_MARKER)


def test_the_largest_event_fits_lokis_line_limit_uncut() -> None:
    event = QueryReceived(query_id="q", query_text="\u20ac" * 20_000, ts=TS)  # capped at 16,384 chars by the schema
    entry = entry_of(event, app="a", env="e")
    assert not entry.cut and len(entry.line.encode()) < MAX_LINE_BYTES


def test_an_absurd_id_is_capped_so_metadata_stays_under_lokis_limit() -> None:
    entry = entry_of(QueryCompleted(query_id="q" * 5000, latency_ms=1.0, ts=TS), app="a", env="e")
    assert entry.cut and len(entry.metadata["query_id"].encode()) <= 1024


# NFC text: the line is NFC by design (test_decomposed_hangul_is_composed_in_the_line), so a field the event itself
# does not normalise (QueryFailed.error_type: "\U0002f800" composes to "丽") would come back composed, not equal.
_text = (
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
    .map(lambda s: unicodedata.normalize("NFC", s))
    .filter(lambda s: not is_blank(s))  # as the events hold it: a soft hyphen alone is blank, though not space
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
    entry = entry_of(event, app="querylog", env="prod")
    # Loki's query API gives the stream labels merged with the entry's structured metadata (and its own extras).
    labels = {**entry.labels, "service_name": "querylog", "detected_level": "info", **entry.metadata}
    assert event_from_entry(str(entry.ts_ns), entry.line, labels) == event


@settings(max_examples=50, deadline=None)
@given(st.lists(_events, min_size=1, max_size=60), st.integers(2048, 20_000))
def test_pushes_respect_the_size_limit_and_keep_every_entry_once(events: list[QueryReceived], limit: int) -> None:
    entries = encode_lines([encode(e) for e in events], app="querylog", env="prod")
    pushes = plan_pushes(entries, app="querylog", env="prod", max_bytes=limit)
    assert sorted(i for p in pushes for i in p.positions) == list(range(len(events)))
    for push in pushes:
        assert len(push.body) <= limit or len(push.positions) == 1
        body = orjson.loads(push.body)
        for stream in body["streams"]:
            stamps = [int(v[0]) for v in stream["values"]]
            assert stamps == sorted(stamps)
            assert set(stream["stream"]) == {"app", "env", "event"}
    newest = [max(entries.times[i] for i in p.positions) for p in pushes]
    oldest = [min(entries.times[i] for i in p.positions) for p in pushes]
    assert all(a <= b for a, b in zip(newest, oldest[1:], strict=False))


@pytest.mark.parametrize(
    ("ts", "ns"),
    [
        ("2026-01-01T00:00:00.000001Z", 1_767_225_600_000_001_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000_000_000),
        ("2026-01-01T09:00:00.5+09:00", 1_767_225_600_500_000_000),
        ("2026-01-01T00:00:00.5+00:00", 1_767_225_600_500_000_000),  # 27 characters, as the common form
    ],
)
def test_the_timestamp_is_read_exactly_in_every_form_a_log_line_may_hold(ts: str, ns: int) -> None:
    line = encode(QueryCompleted(query_id="q", latency_ms=1.0, ts=TS)).replace(
        b'"2026-11-24T01:35:17.636728Z"', b'"' + ts.encode() + b'"'
    )
    assert encode_lines([line], app="a", env="e").times == [ns]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"event_type":"query_completed","latency_ms":1.0', "truncated"),
        (b'{"event_type":"query_teleported","query_id":"q","ts":"2026-01-01T00:00:00Z"}', "unknown type"),
        (
            b'{"event_type":"query_completed","latency_ms":"fast","query_id":"q","event_id":"e",'
            b'"ts":"2026-01-01T00:00:00Z"}',
            "wrong type",
        ),
        (b'{"event_type":"query_completed","latency_ms":1.0,"query_id":"q","event_id":"e","ts":"yesterday"}', "bad ts"),
        (
            b'{"event_type":"query_completed","latency_ms":-1.0,"query_id":"q","event_id":"e","ts":"2026-01-01T00:00:00Z"}',
            "bad value",
        ),
        (
            b'{"event_type":"query_completed","latency_ms":1.0,"query_id":"q","event_id":"e",'
            b'"ts":"2026-01-01T00:00:00Z","level":"debug"}',
            "a level, which only a Loki line has",
        ),
    ],
)
def test_a_line_that_is_not_an_event_is_refused_with_a_line_error(line: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode(line)  # the codec refuses it too: every projection counts it as corrupt
    with pytest.raises(LineError):
        encode_lines([line], app="a", env="e")


@pytest.mark.parametrize("text", ["\xad", "\u200b \ufeff", " \u2060\u200d"])
def test_a_query_of_invisible_characters_only_is_refused_on_its_loki_line_as_by_the_event(text: str) -> None:
    from querylog.logging.events import EventValidationError

    with pytest.raises(EventValidationError, match="query_text"):
        QueryReceived(query_id="q", query_text=text, ts=TS)
    line = orjson.dumps(
        {
            "event_type": "query_received",
            "query_id": "q",
            "event_id": "e",
            "query_text": text,
            "ts": "2026-01-01T00:00:00Z",
        }
    )
    with pytest.raises(DecodeError):
        decode(line)
    with pytest.raises(LineError):
        encode_lines([line], app="a", env="e")


_MINIMAL: dict[str, dict[str, object]] = {
    "query_received": {"query_text": "q"},
    "intent_classified": {"intent": "i", "confidence": 0.5},
    "search_completed": {"result_count": 1},
    "response_generated": {},
    "query_completed": {"latency_ms": 1.0},
    "query_failed": {"error_type": "E"},
    "feedback_received": {"score": 1},
}
_VALUES = {
    float: st.floats(-2, 2) | st.sampled_from([0.0, 1.0, -0.0]),
    int: st.integers(-3, 3),
    str: st.text(st.characters(blacklist_categories=("Cs",)), max_size=3),
}


def _scalar_kind(hint: object) -> type | None:
    """float, int or str for a scalar field (optional or annotated), else None."""
    for kind in (bool, float, int, str):
        if kind is bool and "bool" in repr(hint):
            return None
        if kind.__name__ in repr(hint) and not any(w in repr(hint) for w in ("tuple", "dict", "datetime")):
            return kind
    return None


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_a_value_the_event_refuses_is_refused_on_its_loki_line_and_only_then(data: st.DataObject) -> None:
    import typing

    from querylog.logging.events import EVENT_CLASSES, EventValidationError

    tag = data.draw(st.sampled_from(sorted(_MINIMAL)))
    cls = EVENT_CLASSES[tag]
    hints = typing.get_type_hints(cls)
    names = [n for n, h in hints.items() if n not in ("ts", "schema_version") and _scalar_kind(h) is not None]
    name = data.draw(st.sampled_from(sorted(names)))
    value = data.draw(_VALUES[_scalar_kind(hints[name])])  # type: ignore[index]
    fields = {"query_id": "q", "event_id": "e", **_MINIMAL[tag], name: value}
    try:
        cls(**fields, ts=TS)  # type: ignore[arg-type]
        refused_by_event = False
    except EventValidationError:
        refused_by_event = True
    line = orjson.dumps({"event_type": tag, **fields, "ts": "2026-11-24T01:35:17.636728Z"})
    try:
        encode_lines([line], app="a", env="e")
        refused_on_line = False
    except LineError:
        refused_on_line = True
    assert refused_on_line == refused_by_event, (tag, name, value)
