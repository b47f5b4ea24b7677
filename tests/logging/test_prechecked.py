"""The tracker's prechecked events against the event classes: whatever a stage is given, the tracker either raises
the error the event class raises (naming the same field) or writes the very line the event class would, byte for
byte.

The request path builds prechecked events (`querylog.logging.events.Prechecked`) whose values the tracker checked
once, in one expression per stage; these tests hold those expressions to the schema's rules, valid and invalid
values mixed.
"""

from __future__ import annotations

import math
import pickle
import unicodedata
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querylog.logging import codec
from querylog.logging.events import (
    EVENT_CLASSES,
    MAX_SOURCES,
    Event,
    EventValidationError,
    IntentClassified,
    Prechecked,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
    name_text_problem,
    prechecked,
)
from querylog.logging.tracker import QueryTracker, TrackedQuery
from querylog.testing import CapturingEmitter


class _Kept:
    """An emitter that keeps exactly what the tracker hands it, prechecked or not."""

    def __init__(self) -> None:
        self.got: list[Event] = []

    def append(self, event: Event) -> None:
        self.got.append(event)

    def flush(self) -> None:
        pass


# Values that pass and values that fail, mixed: the edges of every rule (0, 1, negative, NaN, infinities, past the
# schema's bounds), and values of the wrong type a Python caller can pass (a bool is an int to Python, `true` in JSON).
_wrong_types = st.sampled_from([True, False, "1", b"1", [1]])
_numbers = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 0.0, 1.0, -0.0, -1, 1e308, 1e12, 1e12 + 1e-3])
    | _wrong_types
)
_counts = st.none() | st.integers(-3, 10**9) | st.sampled_from([2**31 - 1, 2**31, 2.0, 2.5]) | _wrong_types
# Names: empty included, and ones the ingest endpoints' rule for names refuses (long, a control character).
_words = st.text(max_size=6) | st.sampled_from(["i" * 201, "a\nb", "\x7f"])
# Text a user may send: NFD Hangul, lone surrogates, blank, and longer than an event keeps.
_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "  ",
            "\u200b",
            " \u200d\ufeff",
            "\u1102\u1161\u110b\u1175\u1107\u1165",
            "a\ud800b",
            "x" * 16_400,
            "네이버 " * 3000,
        ]
    ),
)


def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", make()
    except EventValidationError as exc:
        return "refused", exc.field


def _stage(stage: Callable[[TrackedQuery], None]) -> tuple[str, Any]:
    """Run one stage inside a query; ("ok", what the tracker emitted for it) or ("refused", the field named)."""
    kept = _Kept()
    tracker = QueryTracker(kept, service="chat", env="test")

    def run() -> Event:
        with tracker.query("네이버 주가", query_id="q-1") as q:
            stage(q)
        return kept.got[1]

    return _outcome(run)


def _same_line(produced: Event, reference: Event) -> None:
    """`produced` is written exactly as the event class writes the same values; the log reads it back as one."""
    line = codec.encode(produced)
    assert line == codec.encode(msgspec.structs.replace(reference, event_id=produced.event_id, ts=produced.ts))
    assert codec.decode(line) == (produced.checked() if isinstance(produced, Prechecked) else produced)


def _named(theirs: tuple[str, Any], **names: object) -> tuple[str, Any]:
    """The event class's outcome with the ingest endpoints' rule for names on top, which the tracker holds names
    to as `POST /v1/events` does (the class itself reads what earlier releases wrote): the first name it refuses."""
    if theirs[0] == "ok":
        for field, value in names.items():
            if isinstance(value, str) and name_text_problem(value) is not None:
                return "refused", field
    return theirs


def _agree(ours: tuple[str, Any], theirs: tuple[str, Any]) -> None:
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "refused":
        assert ours[1] == theirs[1]
    else:
        _same_line(ours[1], theirs[1])


def test_each_prechecked_class_is_its_event_class_without_the_checks() -> None:
    for tag, cls in EVENT_CLASSES.items():
        fast = prechecked(cls)
        assert issubclass(fast, cls) and issubclass(fast, Prechecked) and fast is not cls
        assert fast.__struct_config__.tag == tag and fast.__struct_config__.tag_field == "event_type"
        shape = [(f.name, f.type, f.default, f.default_factory) for f in msgspec.structs.fields(cls)]
        assert [(f.name, f.type, f.default, f.default_factory) for f in msgspec.structs.fields(fast)] == shape
        for option in ("frozen", "omit_defaults", "forbid_unknown_fields", "gc"):
            assert getattr(fast.__struct_config__, option) == getattr(cls.__struct_config__, option), (tag, option)


@settings(max_examples=300)
@given(text=_texts)
def test_query_received_agrees_with_its_class(text: str) -> None:
    ours = _outcome(lambda: _received(text))
    _agree(ours, _outcome(lambda: QueryReceived(query_id="q-1", service="chat", env="test", query_text=text)))


def _received(text: str) -> Event:
    kept = _Kept()
    with QueryTracker(kept, service="chat", env="test").query(text, query_id="q-1"):
        pass
    return kept.got[0]


@settings(max_examples=300)
@given(intent=_words, confidence=_numbers.filter(lambda v: v is not None), duration=_numbers)
def test_classified_agrees_with_its_class(intent: str, confidence: float, duration: float | None) -> None:
    ours = _stage(lambda q: q.classified(intent, confidence, duration_ms=duration))
    theirs = _outcome(
        lambda: IntentClassified(
            query_id="q-1", service="chat", env="test", intent=intent, confidence=confidence, duration_ms=duration
        )
    )
    theirs = _named(theirs, intent=intent)
    if duration is None and ours[0] == "ok":  # no duration given, none inside a stage: the tracker leaves it out
        assert ours[1].duration_ms is None
    _agree(ours, theirs)


_sources = st.none() | st.lists(
    st.builds(Source, doc_id=st.sampled_from(["d1", "d2", "문서"]), rank=st.integers(1, 30)), max_size=MAX_SOURCES + 5
)
_backends = st.none() | st.dictionaries(st.sampled_from(["", "opensearch", "neo4j", "x" * 70]), _numbers, max_size=3)


@settings(max_examples=300)
@given(count=_counts.filter(lambda v: v is not None), duration=_numbers, sources=_sources, backends=_backends)
def test_searched_agrees_with_its_class(
    count: int, duration: float | None, sources: list[Source] | None, backends: dict[str, float] | None
) -> None:
    ours = _stage(
        lambda q: q.searched(count, duration_ms=duration, sources=sources, backend_durations_ms=backends, top_score=1.5)
    )
    theirs = _outcome(
        lambda: SearchCompleted(
            query_id="q-1",
            service="chat",
            env="test",
            result_count=count,
            duration_ms=duration,
            top_score=1.5,
            sources=tuple(sources) if sources is not None else None,
            backend_durations_ms=backends,
        )
    )
    _agree(ours, theirs)


@settings(max_examples=400)
@given(
    tokens=st.tuples(_counts, _counts, _counts, _counts, _counts),
    quality=_numbers,
    duration=_numbers,
    ttft=_numbers,
    cost=_numbers,
    answer=st.none() | _texts,
    finish=st.none() | _words,
)
def test_responded_agrees_with_its_class(
    tokens: tuple[int | None, ...],
    quality: float | None,
    duration: float | None,
    ttft: float | None,
    cost: float | None,
    answer: str | None,
    finish: str | None,
) -> None:
    tokens_in, tokens_out, chars, cache_read, reasoning = tokens
    ours = _stage(
        lambda q: q.responded(
            system="openai",
            model="m",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            quality_score=quality,
            answer_chars=chars,
            duration_ms=duration,
            answer=answer,
            finish_reason=finish,
            ttft_ms=ttft,
            cost_usd=cost,
            cache_read_tokens=cache_read,
            reasoning_tokens=reasoning,
        )
    )
    theirs = _outcome(
        lambda: ResponseGenerated(
            query_id="q-1",
            service="chat",
            env="test",
            gen_ai_system="openai",
            gen_ai_request_model="m",
            gen_ai_usage_input_tokens=tokens_in,
            gen_ai_usage_output_tokens=tokens_out,
            quality_score=quality,
            answer_chars=len(answer) if chars is None and answer is not None else chars,
            duration_ms=duration,
            answer_text=answer,
            finish_reason=finish or None,  # an empty name is left out, as an absent one
            ttft_ms=ttft,
            cost_usd=cost,
            gen_ai_usage_cache_read_input_tokens=cache_read,
            gen_ai_usage_reasoning_output_tokens=reasoning,
        )
    )
    _agree(ours, _named(theirs, finish_reason=finish or None))


def test_the_request_path_builds_prechecked_events_and_a_capture_keeps_the_classes() -> None:
    kept = _Kept()
    with QueryTracker(kept, service="chat", env="test").query("네이버 주가") as q:
        q.classified("stock", 0.9)
        q.searched(2)
        q.responded(model="m", output_tokens=3)
    assert all(isinstance(e, Prechecked) for e in kept.got)  # the fast path is the one taken
    assert isinstance(kept.got[1], IntentClassified)  # and what it hands over is the event class, for its users
    capture = CapturingEmitter()
    capture.append(kept.got[1])
    assert type(capture.events[0]) is IntentClassified
    assert capture.events[0] == kept.got[1].checked()  # type: ignore[attr-defined]


def test_a_value_past_the_fast_check_is_the_event_class_s_to_judge() -> None:
    # A NaN confidence fails the tracker's expression; the event class then refuses it, naming the field.
    kept = _Kept()
    with (
        pytest.raises(EventValidationError, match="confidence"),
        QueryTracker(kept, service="chat", env="test").query("네이버") as q,
    ):
        q.classified("stock", math.nan)
    assert [e.event_type for e in kept.got] == ["query_received", "query_failed"]


# Redactors as a team might write them: one that lengthens what it masks, one that returns NFD Hangul, one that
# returns nothing for what it drops. Whatever they return, what the tracker writes is what the classes would.
_REDACTORS: dict[str, Callable[[str], Any]] = {
    "none": lambda s: s,
    "lengthens": lambda s: s.replace("x", "[MASKED]"),
    "nfd": lambda s: unicodedata.normalize("NFD", s),
    "drops": lambda s: None if "drop" in s else s,
}
_values = st.one_of(st.text(max_size=12), st.sampled_from(["x" * 600, "drop me", "네이버", "x"]))


@settings(max_examples=300)
@given(
    redactor=st.sampled_from(sorted(_REDACTORS)),
    service_attributes=st.none() | st.dictionaries(st.sampled_from(["plan", "ab.bucket", "채널"]), _values, max_size=3),
    query_attributes=st.none() | st.dictionaries(st.sampled_from(["plan", "region"]), _values, max_size=2),
    tags=st.none() | st.lists(st.sampled_from(["beta", " beta ", "ko", "x" * 70]), max_size=3),
)
def test_whatever_the_context_and_redactor_every_line_is_the_class_s(
    redactor: str,
    service_attributes: dict[str, str] | None,
    query_attributes: dict[str, str] | None,
    tags: list[str] | None,
) -> None:
    kept = _Kept()

    def run() -> None:
        tracker = QueryTracker(
            kept, service="chat", env="test", redact=_REDACTORS[redactor], attributes=service_attributes, tags=tags
        )
        with tracker.query("x 네이버 주가", attributes=query_attributes) as q:
            q.classified("stock", 0.5)
            q.searched(1)
            q.responded(answer="x 답", model="m")

    try:
        run()
    except (EventValidationError, TypeError):  # refused where it entered (TypeError: a text the redactor dropped)
        return
    assert len(kept.got) == 5
    for produced in kept.got:
        line = codec.encode(produced)
        assert isinstance(produced, Prechecked) and line == codec.encode(produced.checked())
        assert codec.decode(line) == produced.checked()


def test_a_prechecked_event_pickles_as_its_event_class() -> None:
    event = prechecked(IntentClassified)(query_id="q", intent="stock", confidence=0.5)
    restored = pickle.loads(pickle.dumps(event))
    assert type(restored) is IntentClassified and restored == event.checked()  # type: ignore[attr-defined]
