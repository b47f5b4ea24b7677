"""The JSON echo on stdout (`StdoutSink`, style ``json``): the line structlog wrote for each event, written whole."""

from __future__ import annotations

import io
import select
from pathlib import Path
from typing import Any

import msgspec
import orjson
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from querylog.logging.events import (
    AnyEvent,
    FeedbackReceived,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
    is_blank,
)
from querylog.logging.projection import Batch
from querylog.logging.sinks import StdoutSink
from querylog.logging.structured import render_json

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda t: not is_blank(t)
)
_NUMBER = st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.sampled_from([0.0, 1e-7, 123456.789, 5e-324])
_FRACTION = st.floats(min_value=0, max_value=1, allow_nan=False)
_EVENTS = st.one_of(
    st.builds(
        QueryReceived, query_id=_TEXT, query_text=_TEXT, session_id=st.none() | _TEXT, language=st.none() | _TEXT
    ),
    st.builds(
        SearchCompleted,
        query_id=_TEXT,
        result_count=st.integers(0, 50),
        top_score=st.none() | _NUMBER,
        sources=st.none()
        | st.lists(st.tuples(_TEXT, st.none() | _TEXT, _NUMBER), max_size=3).map(
            lambda docs: tuple(Source(doc_id=d, title=t, score=s, rank=n) for n, (d, t, s) in enumerate(docs, 1))
        ),
    ),
    st.builds(
        ResponseGenerated,
        query_id=_TEXT,
        answer_text=st.none() | _TEXT,
        quality_score=st.none() | _FRACTION,
        duration_ms=st.none() | _NUMBER,
        tags=st.none() | st.lists(_TEXT.map(lambda t: t[:60]), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(QueryFailed, query_id=_TEXT, error_type=_TEXT, stage=st.none() | _TEXT, latency_ms=_NUMBER),
    st.builds(FeedbackReceived, query_id=_TEXT, score=st.sampled_from([-1, 0, 1]), comment=st.none() | _TEXT),
)


def _structlog_lines(events: list[AnyEvent]) -> list[dict[str, Any]]:
    """What the echo wrote when each event was a structlog call: ``log.info(event_type, **fields)`` (``error`` for
    a failed query) through the JSON renderer the service's own log lines use."""
    out = io.BytesIO()
    log = structlog.wrap_logger(
        structlog.BytesLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=render_json),
        ],
    )
    for event in events:
        fields = {k: v for k, v in msgspec.to_builtins(event).items() if k != "event_type"}
        (log.error if event.event_type == "query_failed" else log.info)(event.event_type, **fields)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


class _Writes(io.BytesIO):
    """A stream that keeps each write apart, as a pipe's reader would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return super().write(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_EVENTS, min_size=1, max_size=40))
def test_each_event_is_echoed_as_the_line_structlog_wrote_for_it_in_whole_writes(
    tmp_path: Path, events: list[AnyEvent]
) -> None:
    out = _Writes()
    sink = StdoutSink(tmp_path / "stdout.json", style="json", stream=out).open()  # type: ignore[arg-type]
    sink.write(Batch(events, {"seg": len(events)}))
    echoed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    expected = _structlog_lines(events)
    # Same keys in the same order, same values; only the time of writing differs.
    assert [list(line) for line in echoed] == [list(line) for line in expected]
    assert [{**line, "timestamp": None} for line in echoed] == [{**line, "timestamp": None} for line in expected]
    assert all(line["timestamp"].endswith("Z") for line in echoed)
    # Whole lines a write, a write no longer than a pipe takes at once unless one line is longer.
    for write in out.writes:
        assert write.endswith(b"\n")
        assert len(write) <= select.PIPE_BUF or write.count(b"\n") == 1
    assert sink.telemetry.snapshot().sent == len(events)
