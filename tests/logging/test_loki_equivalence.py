"""The optimised `entry_for` / `plan_pushes` build exactly what the straightforward code they replaced built:
the same streams, timestamps, lines, structured metadata, truncation flags and push bodies, byte for byte.

`_reference_entry_for` and `_reference_plan_pushes` are that earlier code, kept here verbatim as the oracle.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querylog.logging.events import (
    TRUNCATION_MARKER,
    AnyEvent,
    Event,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
)
from querylog.logging.loki_entries import (
    MAX_LINE_BYTES,
    MAX_METADATA_VALUE_BYTES,
    METADATA_FIELDS,
    LokiEntry,
    _fit,
    entry_for,
    plan_pushes,
    ts_ns,
)

_BASE_FIELDS = frozenset(Event.__struct_fields__)
_MARKER_BYTES = len(TRUNCATION_MARKER.encode())


def _reference_clean(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


def _reference_metadata(event: Event) -> tuple[tuple[tuple[str, str], ...], bool]:
    pairs: list[tuple[str, str]] = []
    truncated = False
    for name in METADATA_FIELDS:
        value = getattr(event, name)
        if value is None:
            continue
        value = _reference_clean(value)
        raw = value.encode()
        if len(raw) > MAX_METADATA_VALUE_BYTES:
            value = raw[: MAX_METADATA_VALUE_BYTES - _MARKER_BYTES].decode("utf-8", "ignore") + TRUNCATION_MARKER
            truncated = True
        pairs.append((name, value))
    return tuple(pairs), truncated


def _reference_entry_for(event: Event, *, app: str, env: str, max_line_bytes: int = MAX_LINE_BYTES) -> LokiEntry:
    own = [name for name in event.__struct_fields__ if name not in _BASE_FIELDS]
    names = [*own, "event_id", "schema_version"]
    if event.service != app:
        names.append("service")
    if event.env != env:
        names.append("env")
    values = {name: getattr(event, name) for name in names}
    fields: dict[str, Any] = msgspec.to_builtins({k: v for k, v in values.items() if v is not None})
    level = "error" if event.event_type == "query_failed" else "info"
    line, truncated = _fit({"level": level, **fields}, max_line_bytes)
    text = line.decode()
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    metadata, metadata_truncated = _reference_metadata(event)
    return LokiEntry(
        app=app,
        env=env,
        event=event.event_type,
        ts_ns=ts_ns(event.ts),
        line=text,
        metadata=metadata,
        event_id=event.event_id,
        truncated=truncated or metadata_truncated,
    )


def _reference_body(entries: Sequence[LokiEntry]) -> bytes:
    streams: dict[tuple[str, str, str], list[bytes]] = {}
    labels: dict[tuple[str, str, str], dict[str, str]] = {}
    for entry in entries:
        streams.setdefault(entry.stream, []).append(entry.encoded())
        labels.setdefault(entry.stream, entry.labels)
    return (
        b'{"streams":['
        + b",".join(
            b'{"stream":' + orjson.dumps(labels[key]) + b',"values":[' + b",".join(values) + b"]}"
            for key, values in streams.items()
        )
        + b"]}"
    )


def _reference_plan_pushes(
    entries: Iterable[LokiEntry], *, max_bytes: int
) -> list[tuple[tuple[LokiEntry, ...], bytes]]:
    ordered = sorted(entries, key=lambda e: e.ts_ns)
    pushes: list[tuple[tuple[LokiEntry, ...], bytes]] = []
    batch: list[LokiEntry] = []
    streams: set[tuple[str, str, str]] = set()

    def overhead(entry: LokiEntry) -> int:
        return len(b'{"stream":') + len(orjson.dumps(entry.labels)) + len(b',"values":[]},')

    size = len(b'{"streams":[]}')
    for entry in ordered:
        part = entry.encoded()
        extra = len(part) + 1 + (0 if entry.stream in streams else overhead(entry))
        if batch and size + extra > max_bytes:
            pushes.append((tuple(batch), _reference_body(batch)))
            batch, streams = [], set()
            size = len(b'{"streams":[]}')
            extra = len(part) + 1 + overhead(entry)
        batch.append(entry)
        streams.add(entry.stream)
        size += extra
    if batch:
        pushes.append((tuple(batch), _reference_body(batch)))
    return pushes


# Any text, lone surrogates and decomposed Hangul included: the cleaning paths must agree too.
_any_text = st.text(min_size=1, max_size=40).filter(str.strip) | st.sampled_from(
    ["SK하이닉스 주가", unicodedata.normalize("NFD", "삼성전자 실적"), "a\ud800b", '"quoted" \\ back']
)
_ids = (
    st.none()
    | st.text(min_size=1, max_size=12)
    | st.sampled_from(
        ["s-7", "x" * (MAX_METADATA_VALUE_BYTES + 5), "한" * 400, unicodedata.normalize("NFD", "세션"), "id\udfff"]
    )
)
_times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
_ms = st.none() | st.floats(0, 1e6, allow_nan=False)
_opt_texts = st.none() | _any_text


@st.composite
def _any_event(draw: st.DrawFn) -> AnyEvent:
    common: dict[str, Any] = {
        "query_id": draw(st.text(min_size=1, max_size=12) | st.just("q" * 2000)),
        "ts": draw(_times),
        "session_id": draw(_ids),
        "user_id": draw(_ids),
        "trace_id": draw(_ids),
        "service": draw(st.sampled_from(["querylog", "chat"])),
        "env": draw(st.sampled_from(["dev", "prod"])),
        "schema_version": draw(st.sampled_from([1, 1, 2])),
    }
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return QueryReceived(**common, query_text=draw(_any_text), language=draw(st.none() | st.just("ko")))
    if kind == 1:
        return IntentClassified(
            **common, intent=draw(_any_text), confidence=draw(st.floats(0, 1)), duration_ms=draw(_ms)
        )
    if kind == 2:
        return SearchCompleted(
            **common,
            result_count=draw(st.integers(0, 10**6)),
            cache_hit=draw(st.booleans()),
            duration_ms=draw(_ms),
            top_score=draw(st.none() | st.floats(-1e6, 1e6)),
        )
    if kind == 3:
        return ResponseGenerated(
            **common,
            gen_ai_system=draw(_opt_texts),
            gen_ai_request_model=draw(_opt_texts),
            gen_ai_usage_input_tokens=draw(st.none() | st.integers(0, 10**6)),
            gen_ai_usage_output_tokens=draw(st.none() | st.integers(0, 10**6)),
            duration_ms=draw(_ms),
            quality_score=draw(st.none() | st.floats(0, 1)),
            answer_chars=draw(st.none() | st.integers(0, 10**6)),
        )
    if kind == 4:
        return QueryCompleted(
            **common,
            latency_ms=draw(st.floats(0, 1e6)),
            intent=draw(_opt_texts),
            cache_hit=draw(st.none() | st.booleans()),
            result_count=draw(st.none() | st.integers(0, 10**6)),
            quality_score=draw(st.none() | st.floats(0, 1)),
        )
    if kind == 5:
        return QueryFailed(
            **common,
            error_type=draw(_any_text),
            error_message=draw(st.text(max_size=300)),
            stage=draw(_opt_texts),
            latency_ms=draw(_ms),
            intent=draw(_opt_texts),
        )
    return FeedbackReceived(**common, score=draw(st.sampled_from([-1, 0, 1])), comment=draw(_opt_texts))


_labels = st.tuples(st.sampled_from(["querylog", "chat"]), st.sampled_from(["dev", "prod"]))


@settings(max_examples=400, deadline=None)
@given(_any_event(), _labels, st.sampled_from([MAX_LINE_BYTES, 4096, 300, 120]))
def test_entry_for_builds_exactly_what_the_reference_builds(
    event: AnyEvent, labels: tuple[str, str], max_line_bytes: int
) -> None:
    app, env = labels
    try:
        slow = _reference_entry_for(event, app=app, env=env, max_line_bytes=max_line_bytes)
    except UnicodeEncodeError:
        # Known, and kept as it was: `_fit` cannot cut a line holding a lone surrogate (no decoded event has one).
        with pytest.raises(UnicodeEncodeError):
            entry_for(event, app=app, env=env, max_line_bytes=max_line_bytes)
        return
    fast = entry_for(event, app=app, env=env, max_line_bytes=max_line_bytes)
    assert fast == slow
    assert (fast.stream, fast.ts_ns, fast.line, fast.metadata, fast.truncated) == (
        slow.stream,
        slow.ts_ns,
        slow.line,
        slow.metadata,
        slow.truncated,
    )
    assert fast.encoded() == slow.encoded()


@settings(max_examples=100, deadline=None)
@given(st.lists(_any_event(), min_size=1, max_size=40), _labels, st.integers(600, 20_000))
def test_plan_pushes_sends_exactly_what_the_reference_sends(
    events: list[AnyEvent], labels: tuple[str, str], max_bytes: int
) -> None:
    app, env = labels
    entries = [entry_for(e, app=app, env=env) for e in events]
    fast = [(p.entries, p.body) for p in plan_pushes(entries, max_bytes=max_bytes)]
    assert fast == _reference_plan_pushes(entries, max_bytes=max_bytes)
    for push in plan_pushes(entries, max_bytes=max_bytes):
        first, second = push.halves()
        assert (first.entries, first.body) == (first.entries, _reference_body(first.entries))
        assert (second.entries, second.body) == (second.entries, _reference_body(second.entries))
