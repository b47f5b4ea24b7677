"""Event model v1: validation names the field, text is NFC, ids are UUIDv7, timestamps are UTC."""

from __future__ import annotations

import contextlib
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from querylog.logging import codec
from querylog.logging.events import (
    EVENT_TYPES,
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    TRUNCATION_MARKER,
    WRITTEN_VERSION,
    EventValidationError,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    is_blank,
)


def test_the_seven_event_types_exist() -> None:
    assert set(EVENT_TYPES) == {
        "query_received",
        "intent_classified",
        "search_completed",
        "response_generated",
        "query_completed",
        "query_failed",
        "feedback_received",
    }


def test_events_carry_a_uuidv7_id_a_utc_timestamp_and_the_schema_version() -> None:
    event = QueryReceived(query_id="q-1", query_text="네이버 주가")
    parsed = uuid.UUID(event.event_id)
    assert parsed.version == 7
    assert event.ts.tzinfo is not None and event.ts.utcoffset() == timedelta(0)
    assert event.schema_version == WRITTEN_VERSION == 2 and SCHEMA_VERSION == 3
    assert event.event_type == "query_received"


def test_uuidv7_ids_sort_by_creation() -> None:
    ids = [QueryReceived(query_id="q", query_text="x").event_id for _ in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200


def test_events_are_frozen() -> None:
    event = QueryReceived(query_id="q-1", query_text="hello")
    with pytest.raises(AttributeError):
        event.query_text = "changed"  # type: ignore[misc]


def test_query_text_is_nfc_normalised() -> None:
    nfd = unicodedata.normalize("NFD", "하이닉스 환불")
    assert nfd != "하이닉스 환불"
    event = QueryReceived(query_id="q-1", query_text=nfd)
    assert event.query_text == "하이닉스 환불"
    assert len(event.query_text.encode()) == len("하이닉스 환불".encode())


def test_non_utc_timestamps_are_converted_to_utc() -> None:
    kst = timezone(timedelta(hours=9))
    event = QueryReceived(query_id="q", query_text="x", ts=datetime(2026, 1, 1, 9, 0, tzinfo=kst))
    assert event.ts == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert event.ts.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused_naming_the_field() -> None:
    with pytest.raises(EventValidationError) as info:
        QueryReceived(query_id="q", query_text="x", ts=datetime(2026, 1, 1))
    assert info.value.field == "ts"


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: QueryReceived(query_id="", query_text="x"), "query_id"),
        (lambda: QueryReceived(query_id="q", query_text="   "), "query_text"),
        (lambda: QueryReceived(query_id="q", query_text="\u200b \u200d\ufeff"), "query_text"),  # draws nothing
        (lambda: IntentClassified(query_id="q", intent="x", confidence=1.5), "confidence"),
        (lambda: IntentClassified(query_id="q", intent="", confidence=0.5), "intent"),
        (lambda: SearchCompleted(query_id="q", result_count=-1), "result_count"),
        (lambda: SearchCompleted(query_id="q", result_count=1, duration_ms=float("nan")), "duration_ms"),
        (lambda: ResponseGenerated(query_id="q", quality_score=2.0), "quality_score"),
        (lambda: ResponseGenerated(query_id="q", gen_ai_usage_input_tokens=-3), "gen_ai_usage_input_tokens"),
        (lambda: QueryCompleted(query_id="q", latency_ms=-1.0), "latency_ms"),
        (lambda: QueryFailed(query_id="q", error_type=""), "error_type"),
        (lambda: FeedbackReceived(query_id="q", score=5), "score"),
        (lambda: QueryReceived(query_id="q", query_text="x", env=""), "env"),
    ],
)
def test_invalid_values_raise_an_error_naming_the_field(factory: object, field: str) -> None:
    with pytest.raises(EventValidationError) as info:
        factory()  # type: ignore[operator]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_overlong_query_text_is_truncated_with_a_marker() -> None:
    event = QueryReceived(query_id="q", query_text="가" * (MAX_TEXT_CHARS * 2))
    assert len(event.query_text) == MAX_TEXT_CHARS
    assert event.query_text.endswith(TRUNCATION_MARKER)


def test_encoding_is_utf8_json_not_unicode_escapes() -> None:
    line = codec.encode(QueryReceived(query_id="q", query_text="네이버 주가"))
    assert "네이버 주가".encode() in line
    assert b"\\u" not in line


def test_decoding_names_the_bad_field() -> None:
    line = b'{"event_type":"intent_classified","query_id":"q","intent":"x","confidence":"high"}'
    with pytest.raises(codec.DecodeError, match=r"\$\.confidence"):
        codec.decode(line)


def test_decoding_refuses_unknown_event_types_and_garbage() -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(b'{"event_type":"nope","query_id":"q"}')
    with pytest.raises(codec.DecodeError):
        codec.decode(b"\x00\x00\x00")


def test_decoding_runs_value_validation_too() -> None:
    with pytest.raises(codec.DecodeError, match="confidence"):
        codec.decode(b'{"event_type":"intent_classified","query_id":"q","intent":"x","confidence":7}')


def test_upcasters_turn_old_schema_versions_into_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam a renaming change would use: pretend v1 named a field differently. The version is kept."""
    import querylog.logging.codec as codec_module

    def upcast_v1_v2(obj: dict[str, object]) -> dict[str, object]:
        obj = dict(obj)
        obj["query_text"] = obj.pop("text")
        return obj

    monkeypatch.setattr(codec_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(codec_module.UPCASTERS, 1, upcast_v1_v2)
    old = b'{"event_type":"query_received","schema_version":1,"query_id":"q","text":"\xeb\x84\xa4\xec\x9d\xb4\xeb\xb2\x84"}'
    event = codec_module.decode(old)
    assert isinstance(event, QueryReceived)
    assert event.query_text == "네이버"
    assert event.schema_version == 1  # the shape is upcast; the version it was written under is kept


def test_a_newer_schema_version_than_this_build_reads_is_refused() -> None:
    with pytest.raises(codec.DecodeError, match="schema_version"):
        codec.from_builtins({"event_type": "query_received", "schema_version": 99, "query_id": "q", "query_text": "x"})


# Not blank as events judge it (whitespace and invisible characters only, "\u200b" among them): refused.
_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200).filter(lambda s: not is_blank(s))
_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(
    text=_text,
    query_id=_ids,
    session=st.none() | _ids,
    confidence=st.floats(0, 1),
    latency=st.floats(0, 1e7, allow_nan=False),
    count=st.integers(0, 10_000),
    hit=st.booleans(),
)
def test_codec_round_trips_every_event_type(
    text: str, query_id: str, session: str | None, confidence: float, latency: float, count: int, hit: bool
) -> None:
    events = [
        QueryReceived(query_id=query_id, session_id=session, query_text=text),
        IntentClassified(query_id=query_id, intent="stock_analysis", confidence=confidence, duration_ms=latency),
        SearchCompleted(query_id=query_id, result_count=count, cache_hit=hit),
        ResponseGenerated(query_id=query_id, gen_ai_usage_output_tokens=count, quality_score=confidence),
        QueryCompleted(query_id=query_id, latency_ms=latency, intent="x", cache_hit=hit),
        QueryFailed(query_id=query_id, error_type="TimeoutError", error_message=text),
        FeedbackReceived(query_id=query_id, score=-1, comment=text),
    ]
    for event in events:
        line = codec.encode(event)
        assert b"\n" not in line  # one event, one line in the log
        assert codec.decode(line) == event


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(codec.DecodeError):
        codec.decode(data)


def test_to_builtins_is_what_is_written() -> None:
    event = SearchCompleted(query_id="q", result_count=2, cache_hit=True)
    assert msgspec.json.decode(codec.encode(event)) == codec.to_builtins(event)


def test_a_lone_surrogate_in_text_becomes_the_replacement_character() -> None:
    event = QueryReceived(query_id="q", query_text="abc\ud800 네이버")
    assert event.query_text == "abc\ufffd 네이버"
    assert codec.decode(codec.encode(event)) == event
