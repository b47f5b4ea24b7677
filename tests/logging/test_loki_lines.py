"""The Loki projection's fast path (log line → entry, no event built) sends exactly what `entry_for` sends, and
leaves every line it cannot judge to `entry_for`."""

from __future__ import annotations

import gzip
import importlib.util
import unicodedata
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as event_note
from hypothesis import strategies as st

from querylog.logging.codec import decode, encode
from querylog.logging.events import SCHEMA_VERSION, AnyEvent, IntentClassified, QueryReceived
from querylog.logging.loki import LokiOptions, LokiSink
from querylog.logging.loki_entries import MAX_LINE_BYTES, entry_for, plan_pushes
from querylog.logging.loki_lines import fast_entries
from querylog.logging.tracker import QueryTracker
from querylog.testing import CapturingEmitter

_spec = importlib.util.spec_from_file_location(
    "querylog_loki_equivalence", Path(__file__).with_name("test_loki_equivalence.py")
)
assert _spec is not None and _spec.loader is not None
_equivalence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_equivalence)
any_event = _equivalence._any_event
labels = _equivalence._labels

APP, ENV = "querylog", "test"


def _line(event: AnyEvent) -> bytes:
    try:
        return encode(event)
    except UnicodeEncodeError:
        assume(False)  # the log counts and drops such an event: it never becomes a line
        raise


def _chat_events(n: int) -> list[AnyEvent]:
    """What the chat API's tracker writes: Korean text, ASCII ids."""
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, service=APP, env=ENV)
    for i in range(n):
        with tracker.query(f"SK하이닉스 주가 전망은? {i}", session_id=f"s-{i % 3}", user_id=f"u-{i}") as q:
            q.classified("stock_analysis", 0.9)
            q.searched(3, cache_hit=False)
            q.responded(model="m", input_tokens=10, output_tokens=20)
    return capture.events  # type: ignore[return-value]


_ascii_ids = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)


@st.composite
def _usual_event(draw: st.DrawFn) -> AnyEvent:
    """Any event, with what the fast path takes most often: the current schema and short ASCII ids."""
    event = draw(any_event())
    return msgspec.structs.replace(
        event,
        schema_version=SCHEMA_VERSION,
        query_id=draw(_ascii_ids),
        session_id=draw(st.none() | _ascii_ids),
        user_id=draw(st.none() | _ascii_ids),
        trace_id=draw(st.none() | _ascii_ids),
    )


def _check_event(event: AnyEvent, labels: tuple[str, str], max_line_bytes: int) -> bool:
    """Fast path and `entry_for` agree on the event as the log gives it back; True if the fast path took it."""
    app, env = labels
    logged = decode(_line(event))
    entries, parts = fast_entries([logged], app=app, env=env, max_line_bytes=max_line_bytes)
    if entries[0] is None:
        assert parts == [b""]
        return False
    slow = entry_for(logged, app=app, env=env, max_line_bytes=max_line_bytes)
    assert entries[0] == slow
    assert parts[0] == slow.encoded()
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_usual_event(), labels, st.sampled_from([MAX_LINE_BYTES, 4096, 300]))
def test_an_event_the_fast_path_takes_becomes_exactly_what_entry_for_builds(
    event: AnyEvent, labels: tuple[str, str], max_line_bytes: int
) -> None:
    event_note("fast" if _check_event(event, labels, max_line_bytes) else "left to entry_for")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(any_event(), labels, st.sampled_from([MAX_LINE_BYTES, 300]))
def test_any_event_is_taken_exactly_or_left_to_entry_for(
    event: AnyEvent, labels: tuple[str, str], max_line_bytes: int
) -> None:
    assume(event.schema_version == SCHEMA_VERSION)  # the log holds no newer version than the build reads
    _check_event(event, labels, max_line_bytes)


def test_the_chat_apis_events_all_take_the_fast_path() -> None:
    events = _chat_events(20)
    entries, parts = fast_entries(events, app=APP, env=ENV, max_line_bytes=MAX_LINE_BYTES)
    assert None not in entries
    assert entries == [entry_for(e, app=APP, env=ENV) for e in events]
    assert parts == [e.encoded() for e in entries if e is not None]


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (IntentClassified(query_id="q", intent=unicodedata.normalize("NFD", "주식"), confidence=0.5), "NFD"),
        (QueryReceived(query_id="q", query_text="x" * 5000), "longer than the line limit"),
        (QueryReceived(query_id="질문-1", query_text="x"), "non-ASCII id"),
        (QueryReceived(query_id="q" * 2000, query_text="x"), "id over the metadata limit"),
    ],
)
def test_events_entry_for_must_cut_or_clean_are_left_to_it(event: AnyEvent, why: str) -> None:
    entries, parts = fast_entries([event], app=APP, env=ENV, max_line_bytes=4096)
    assert entries == [None] and parts == [b""], why


def test_a_prepared_batch_sends_the_same_pushes_as_the_events_path() -> None:
    events = _chat_events(30)
    # Lines the fast path leaves alone, among the others: cut, cleaned, or in NFD.
    events[3] = QueryReceived(query_id="질문-1", query_text="삼성전자", ts=events[3].ts)
    events[7] = QueryReceived(query_id="q-long", query_text="하이닉스 " * 3000, ts=events[7].ts)
    events[9] = IntentClassified(query_id="q", intent=unicodedata.normalize("NFD", "주식"), confidence=1.0)
    lines = [encode(e) for e in events]
    options = LokiOptions(max_push_bytes=8 * 1024, max_line_bytes=4096)
    sink = LokiSink("http://loki:3100", app=APP, env=ENV, options=options)
    prepared = sink.prepare(lines)
    assert prepared is not None and prepared.count == len(events)
    planned = prepared.rows
    expected = plan_pushes([entry_for(e, app=APP, env=ENV, max_line_bytes=4096) for e in events], max_bytes=8192)
    assert len(expected) > 1
    assert [p.body for p in planned.pushes] == [p.body for p in expected]  # type: ignore[attr-defined]
    assert [gzip.decompress(b) for b in planned.bodies] == [p.body for p in expected]  # type: ignore[attr-defined]
    assert prepared.last_ts == events[-1].ts
    sink.close()
