"""The Loki path sends exactly what it sent before it was rebuilt: the same streams, timestamps, lines, structured
metadata and push bodies, byte for byte, for any mix of events (v1 and v2 lines, NFD text, ids to clean or cap,
lines too long, services and envs unlike the labels), and through the whole sink (too-old events, several
writers) the same entries, each once, every stream in time order.

The reference is the event-by-event code the Loki path had before (`entry_for`, `plan_pushes`), kept here as
the oracle; the path under test starts from the log lines, as the projection does.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from querylog.logging.codec import decode, encode
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
    is_blank,
)
from querylog.logging.loki import METADATA_FIELDS, LokiOptions, LokiSink, encode_lines, plan_pushes
from querylog.logging.loki.encoding import MAX_LINE_BYTES, MAX_METADATA_VALUE_BYTES
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog
from querylog.logging.time_order import TimeOrderedReader

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LokiEntry:
    app: str
    env: str
    event: str
    ts_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...]
    event_id: str
    truncated: bool = False

    @property
    def stream(self) -> tuple[str, str, str]:
        return (self.app, self.env, self.event)

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.app, "env": self.env, "event": self.event}

    def encoded(self) -> bytes:
        value: list[Any] = [str(self.ts_ns), self.line]
        if self.metadata:
            value.append(dict(self.metadata))
        return msgspec.json.encode(value)


def ts_ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _reference_cleaned(obj: Any) -> Any:
    if isinstance(obj, str):
        return _reference_clean(obj)
    if isinstance(obj, dict):
        return {_reference_clean(k): _reference_cleaned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_reference_cleaned(v) for v in obj]
    return obj


def _reference_dumps(fields: dict[str, Any]) -> bytes:
    try:
        return msgspec.json.encode(fields)
    except UnicodeEncodeError:
        return msgspec.json.encode(_reference_cleaned(fields))


def _fit(fields: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    marker = len(TRUNCATION_MARKER.encode())
    line = _reference_dumps(fields)
    if len(line) <= limit:
        return line, False
    for _ in range(16):
        texts = [(len(v.encode()), k) for k, v in fields.items() if isinstance(v, str) and k != "level"]
        if not texts:
            break
        size, key = max(texts)
        keep = max(0, size - (len(line) - limit) - marker - 8)
        fields[key] = fields[key].encode()[:keep].decode("utf-8", "ignore") + TRUNCATION_MARKER
        line = _reference_dumps(fields)
        if len(line) <= limit:
            return line, True
    cut = line[: limit - marker].decode("utf-8", "ignore").encode()
    return cut + TRUNCATION_MARKER.encode(), True


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
# Not what events refuse as blank (whitespace and invisible characters only: "\u200b" is blank).
_any_text = st.text(min_size=1, max_size=40).filter(lambda s: not is_blank(s)) | st.sampled_from(
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
        "schema_version": draw(st.sampled_from([1, 1, 2, 3])),
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


def _log_line(event: AnyEvent, v1: bool) -> bytes:
    try:
        line = encode(event)
    except UnicodeEncodeError:
        assume(False)  # a lone surrogate: the log refuses the event (counted), so no line ever holds one
        raise
    # A line written by a schema-v1 querylog left the version out.
    return line.replace(b',"schema_version":1', b"") if v1 else line


def _pushed(bodies: Iterable[bytes]) -> list[tuple[dict[str, str], list[Any]]]:
    return [(s["stream"], v) for body in bodies for s in orjson.loads(body)["streams"] for v in s["values"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.lists(st.tuples(_any_event(), st.booleans()), min_size=1, max_size=30),
    _labels,
    st.sampled_from([MAX_LINE_BYTES, 4096, 1200]),
    st.integers(3_000, 40_000),
)
def test_log_lines_become_exactly_the_pushes_the_reference_builds_from_events(
    mix: list[tuple[AnyEvent, bool]], labels: tuple[str, str], max_line_bytes: int, max_bytes: int
) -> None:
    app, env = labels
    lines = [_log_line(event, v1 and event.schema_version == 1) for event, v1 in mix]
    reference = [_reference_entry_for(decode(line), app=app, env=env, max_line_bytes=max_line_bytes) for line in lines]
    entries = encode_lines(lines, app=app, env=env, max_line_bytes=max_line_bytes)
    assert [orjson.loads(v) for v in entries.values] == [orjson.loads(e.encoded()) for e in reference]
    assert entries.values == [e.encoded() for e in reference]
    assert entries.cut == {i for i, e in enumerate(reference) if e.truncated}
    pushes = plan_pushes(entries, app=app, env=env, max_bytes=max_bytes)
    assert [p.body for p in pushes] == [body for _, body in _reference_plan_pushes(reference, max_bytes=max_bytes)]


class _Capture(httpx.BaseTransport):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(gzip.decompress(request.read()))
        return httpx.Response(204)


NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(_any_event(), st.integers(0, 2), st.integers(-9 * 24 * 60, 5)),  # writer, minutes from now
        min_size=1,
        max_size=40,
    ),
)
def test_the_sink_pushes_the_references_entries_once_each_in_time_order_and_counts_the_rest(
    tmp_path_factory: pytest.TempPathFactory, mix: list[tuple[AnyEvent, int, int]]
) -> None:
    directory = tmp_path_factory.mktemp("log")
    events = [msgspec.structs.replace(e, ts=NOW + timedelta(minutes=m)) for e, _, m in mix]
    for writer in range(3):
        mine = sorted((e for e, (_, w, _) in zip(events, mix, strict=True) if w == writer), key=lambda e: e.ts)
        if mine:
            try:
                for e in mine:
                    encode(e)
            except UnicodeEncodeError:
                assume(False)
            with EventLog(directory, fsync="never") as log:
                for e in mine:
                    log.append(e)
    capture = _Capture()
    options = LokiOptions(max_line_bytes=4096, max_push_bytes=9000)
    sink = LokiSink("http://loki", app="querylog", env="dev", options=options, transport=capture, clock=NOW.timestamp)
    Projector(TimeOrderedReader(directory), sink.open(), batch_max_events=7, read_ahead=True).catch_up()
    oldest = NOW - timedelta(seconds=options.max_age_s - options.clock_margin_s)
    kept = [e for e in events if e.ts >= oldest]
    reference = [_reference_entry_for(decode(encode(e)), app="querylog", env="dev", max_line_bytes=4096) for e in kept]
    pushed = _pushed(capture.bodies)
    expected = [(e.labels, orjson.loads(e.encoded())) for e in reference]
    assert sorted(map(orjson.dumps, pushed)) == sorted(map(orjson.dumps, expected))
    seen: dict[str, int] = {}
    for labels, value in pushed:
        assert int(value[0]) >= seen.get(labels["event"], 0)
        seen[labels["event"]] = int(value[0])
    snap = sink.telemetry.snapshot()
    assert snap.sent == len(kept) and snap.dropped == (
        {"too_old": len(events) - len(kept)} if len(kept) < len(events) else {}
    )
