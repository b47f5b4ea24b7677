"""QueryTracker: the lifecycle on success and on exception, stage timings, redaction, durability."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from querylog.logging.events import (
    MAX_ANSWER_CHARS,
    MAX_ATTRIBUTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    TRUNCATION_MARKER,
    EventValidationError,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
)
from querylog.logging.redaction import default_redactor
from querylog.logging.tracker import QueryTracker
from querylog.testing import CapturingEmitter, capture_events


def _run(tracker: QueryTracker, text: str = "네이버 주가 전망은?") -> str:
    with tracker.query(text, session_id="s-7", user_id="u-42") as q:
        with q.stage("classify"):
            q.classified("stock_analysis", 0.9)
        with q.stage("search"):
            q.searched(3, cache_hit=True, top_score=4.2)
        with q.stage("generate"):
            q.responded(
                system="local", model="m", input_tokens=10, output_tokens=20, quality_score=0.7, answer_chars=99
            )
    return q.query_id


def test_a_successful_query_emits_its_whole_lifecycle() -> None:
    capture = CapturingEmitter()
    query_id = _run(QueryTracker(capture, service="chat", env="prod"))
    assert capture.event_types == [
        "query_received",
        "intent_classified",
        "search_completed",
        "response_generated",
        "query_completed",
    ]
    assert {e.query_id for e in capture.events} == {query_id}
    assert {(e.session_id, e.user_id, e.service, e.env) for e in capture.events} == {("s-7", "u-42", "chat", "prod")}
    received, classified, searched, responded, completed = capture.events
    assert isinstance(received, QueryReceived) and received.query_text == "네이버 주가 전망은?"
    assert (
        isinstance(classified, IntentClassified) and classified.duration_ms is not None and classified.duration_ms >= 0
    )
    assert isinstance(searched, SearchCompleted) and searched.cache_hit is True and searched.result_count == 3
    assert isinstance(responded, ResponseGenerated) and responded.gen_ai_usage_output_tokens == 20
    assert isinstance(completed, QueryCompleted)
    assert completed.intent == "stock_analysis"
    assert completed.cache_hit is True and completed.result_count == 3 and completed.quality_score == 0.7
    assert completed.latency_ms >= 0


def test_the_query_is_flushed_before_the_block_returns() -> None:
    capture = CapturingEmitter()
    _run(QueryTracker(capture))
    assert capture.flushes == 1


def test_a_failing_handler_emits_query_failed_with_error_type_and_stage_and_reraises() -> None:
    capture = CapturingEmitter()
    tracker = QueryTracker(capture)

    def handler() -> None:
        with tracker.query("삼성전자 실적") as q:
            with q.stage("classify"):
                q.classified("stock_analysis", 0.8)
            with q.stage("generate"):
                raise TimeoutError("LLM took too long")

    with pytest.raises(TimeoutError):
        handler()
    assert capture.event_types == ["query_received", "intent_classified", "query_failed"]
    failed = capture.events[-1]
    assert isinstance(failed, QueryFailed)
    assert failed.error_type == "TimeoutError"
    assert failed.error_message == "LLM took too long"
    assert failed.stage == "generate"
    assert failed.intent == "stock_analysis"
    assert capture.flushes == 1


def test_a_failure_outside_any_stage_has_no_stage() -> None:
    capture = CapturingEmitter()
    with pytest.raises(KeyError), QueryTracker(capture).query("x"):
        raise KeyError("boom")
    failed = capture.events[-1]
    assert isinstance(failed, QueryFailed) and failed.stage is None and failed.error_type == "KeyError"


def test_a_stage_failure_the_app_handled_is_not_blamed_for_a_later_one() -> None:
    """A search that timed out and was retried made a later failure in generate, or outside any stage, read as
    `stage: search`: failure dashboards by stage pointed at the wrong component."""
    capture = CapturingEmitter()
    tracker = QueryTracker(capture)

    def handler(later_stage: str | None) -> None:
        with tracker.query("재시도") as q:
            for attempt in range(2):
                try:
                    with q.stage("search"):
                        if attempt == 0:
                            raise TimeoutError("retrying")
                        q.searched(3)
                    break
                except TimeoutError:
                    continue
            if later_stage is None:
                raise ValueError("outside any stage")
            with q.stage(later_stage), q.stage("parse"):  # the innermost stage is where it broke
                raise ValueError("LLM returned garbage")

    for later_stage in ("generate", None):
        with pytest.raises(ValueError):
            handler(later_stage)
        failed = capture.events[-1]
        assert isinstance(failed, QueryFailed)
        assert failed.stage == ("parse" if later_stage else None)


def test_an_exception_that_cannot_be_made_text_is_recorded_and_goes_on_as_it_is() -> None:
    """`str(exc)` raising (an SDK error whose __str__ reads a missing key) replaced the app's exception with a
    KeyError from inside the tracker, and no query_failed was written: the query stayed in progress for good."""

    class APIError(Exception):
        def __str__(self) -> str:
            return {}["error"]  # type: ignore[no-any-return]

    capture = CapturingEmitter()
    with pytest.raises(APIError), QueryTracker(capture).query("x"):
        raise APIError(500)
    failed = capture.events[-1]
    assert isinstance(failed, QueryFailed) and failed.error_type == "APIError"
    assert failed.error_message == "<APIError: str() raised KeyError>"


def test_a_stage_times_itself_when_another_runs_beside_it() -> None:
    """Two stages of one query open side by side (asyncio.gather) restored each other's start: the one that closed
    last was recorded as the time since the machine booted."""
    capture = CapturingEmitter()
    with QueryTracker(capture).query("x") as q:
        first, second = q.stage("search_a"), q.stage("search_b")
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # closes first, while search_b still runs
        second.__exit__(None, None, None)
    assert all(0 <= q.stage_durations_ms[name] < 60_000 for name in ("search_a", "search_b"))


def test_stage_durations_are_recorded_when_not_given() -> None:
    capture = CapturingEmitter()
    with QueryTracker(capture).query("x") as q, q.stage("search"):
        q.searched(0)
    assert "search" in q.stage_durations_ms
    searched = capture.of_type("search_completed")[0]
    assert isinstance(searched, SearchCompleted) and searched.duration_ms is not None


def test_text_is_redacted_and_normalised_before_any_event_is_built() -> None:
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, redact=lambda s: s.replace("010-1234-5678", "[PHONE]"))
    with tracker.query("제 번호는 010-1234-5678 입니다") as q:
        pass
    received = capture.events[0]
    assert isinstance(received, QueryReceived)
    assert received.query_text == "제 번호는 [PHONE] 입니다"
    assert q.text == received.query_text
    with tracker.query("질문" * MAX_TEXT_CHARS) as q:  # past the cap: the text as stored, not the one given
        pass
    (_, long) = [e for e in capture.events if isinstance(e, QueryReceived)]
    assert q.text == long.query_text and q.text.endswith(TRUNCATION_MARKER)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", "  "),
        ("session_id", "s-1\n"),
        ("user_id", "u" * 201),
        ("query_id", "has space"),
        ("query_id", ""),
        ("trace_id", "t\x00"),
    ],
)
def test_an_id_the_ingest_endpoints_refuse_is_refused_by_the_tracker_too(field: str, value: str) -> None:
    """The tracker stored ids `/v1/events` answers 422 for: a query id with a space can never get feedback."""
    capture = CapturingEmitter()
    with pytest.raises(EventValidationError) as raised, QueryTracker(capture).query("질문", **{field: value}):
        pass
    assert raised.value.field == field and capture.events == []


def test_ids_the_ingest_endpoints_take_are_taken() -> None:
    capture = CapturingEmitter()
    ids = {"session_id": "세션 1", "user_id": "u\u00a0kim", "query_id": "q-" + "x" * 198, "trace_id": "a" * 32}
    with QueryTracker(capture).query("질문", **ids):
        pass
    assert {name: getattr(capture.events[0], name) for name in ids} == ids


_NAMES_REFUSED = ["i" * 201, "buy\nsell", "a\x00", "x\x7f", "\x85", "  ", "\u200b"]


@pytest.mark.parametrize("value", _NAMES_REFUSED)
@pytest.mark.parametrize(
    ("field", "stage"),
    [
        ("intent", lambda q, v: q.classified(v, 0.9)),
        ("gen_ai_request_model", lambda q, v: q.responded(model=v)),
        ("gen_ai_system", lambda q, v: q.responded(system=v)),
        ("finish_reason", lambda q, v: q.responded(finish_reason=v)),
        ("gen_ai_response_model", lambda q, v: q.responded(response_model=v)),
        ("response_type", lambda q, v: q.responded(response_type=v)),
        ("stage", lambda q, v: q.stage(v).__enter__()),
    ],
)
def test_a_name_the_ingest_endpoints_refuse_is_refused_by_the_tracker_too(field: str, stage, value: str) -> None:
    """An intent of a page, or with a newline, became a metric label and an explorer filter from the tracker,
    while `POST /v1/events` answers 422 for it. Refused at the call naming the field; the query goes on and
    records nothing of the refused call."""
    capture = CapturingEmitter()
    with QueryTracker(capture).query("질문") as q, pytest.raises(EventValidationError) as raised:
        stage(q, value)
    assert raised.value.field == field
    assert [e.event_type for e in capture.events] == ["query_received", "query_completed"]
    assert capture.events[-1].intent is None


@pytest.mark.parametrize("value", _NAMES_REFUSED)
@pytest.mark.parametrize("field", ["release", "prompt_version", "language"])
def test_a_query_s_names_are_held_to_the_rule_where_they_are_given(field: str, value: str) -> None:
    capture = CapturingEmitter()
    with pytest.raises(EventValidationError) as raised:
        QueryTracker(capture).query("질문", **{field: value})
    assert raised.value.field == field and capture.events == []
    if field != "language":
        with pytest.raises(EventValidationError) as raised:
            QueryTracker(capture, **{field: value})
        assert raised.value.field == field


def test_an_empty_name_from_a_backend_is_left_out_not_refused() -> None:
    """A backend answering ``"finish_reason": ""`` and ``"model": ""`` made every chat request a 500 once blank names
    were refused: an empty name says nothing, and is recorded as none."""
    capture = CapturingEmitter()
    with QueryTracker(capture).query("질문", language="") as q:
        q.responded(system="", model="", finish_reason="", response_model="", response_type="", input_tokens=1)
    received, response, _ = capture.events
    assert received.language is None  # type: ignore[attr-defined]
    named = ("gen_ai_system", "gen_ai_request_model", "finish_reason", "gen_ai_response_model", "response_type")
    assert [getattr(response, f) for f in named] == [None] * 5


def test_a_name_of_an_enum_of_text_is_held_to_the_rule_too() -> None:
    import enum

    class Intent(enum.StrEnum):
        LONG = "i" * 201

    with QueryTracker(CapturingEmitter()).query("질문") as q, pytest.raises(EventValidationError) as raised:
        q.classified(Intent.LONG, 0.9)
    assert raised.value.field == "intent"


def test_a_stage_named_by_no_text_is_refused_where_it_opens_and_the_apps_exception_goes_on() -> None:
    """`q.stage(["a"])` was taken, and the query's end then raised the tracker's error in place of the app's."""
    capture = CapturingEmitter()

    def app() -> None:
        with QueryTracker(capture).query("질문") as q:
            with pytest.raises(EventValidationError) as raised:
                q.stage(["a"]).__enter__()  # type: ignore[arg-type]
            assert raised.value.field == "stage"
            raise ValueError("the app's")

    with pytest.raises(ValueError, match="the app's"):
        app()
    assert [e.event_type for e in capture.events] == ["query_received", "query_failed"]


def test_names_the_ingest_endpoints_take_are_taken_again_and_again() -> None:
    """Korean, spaces, 200 characters; a name once taken is taken from then on (the tracker remembers it)."""
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, release="릴리스 2026.12", prompt_version="v" * 200)
    for _ in range(2):
        with tracker.query("질문", language="ko-KR") as q, q.stage("검색 단계"):
            q.classified("주가 문의", 0.9)
            q.responded(system="openai", model="gpt 4o\u00a0mini", finish_reason="stop", response_model="m" * 200)
    assert [e.intent for e in capture.events if e.event_type == "query_completed"] == ["주가 문의"] * 2


def test_user_ids_can_be_pseudonymised() -> None:
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, pseudonymize_user_id=lambda u: f"h-{len(u)}")
    with tracker.query("x", user_id="alice"):
        pass
    assert {e.user_id for e in capture.events} == {"h-5"}


def test_trace_id_set_mid_query_is_carried_by_later_events() -> None:
    capture = CapturingEmitter()
    with QueryTracker(capture).query("x") as q:
        q.set_trace_id("trace-1")
        q.classified("unknown", 0.0)
    assert [e.trace_id for e in capture.events] == [None, "trace-1", "trace-1"]


def test_feedback_is_an_event_for_the_query() -> None:
    capture = CapturingEmitter()
    event = QueryTracker(capture).feedback("q-1", 1, comment="좋아요")
    assert isinstance(event, FeedbackReceived)
    assert capture.events == [event] and capture.flushes == 1


def test_capture_events_routes_a_live_trackers_events_temporarily() -> None:
    original = CapturingEmitter()
    tracker = QueryTracker(original)
    with capture_events(tracker) as events:
        _run(tracker)
    assert len(events) == 5 and original.events == []
    assert tracker.emitter is original


def test_a_tracker_refuses_an_emitter_without_append_and_flush() -> None:
    with pytest.raises(TypeError, match="append"):
        QueryTracker(object())  # type: ignore[arg-type]


# -- schema v2: the answer, its sources and the query's context ------------------------------------------------
def _phone(text: str) -> str:
    return text.replace("010-1234-5678", "[PHONE]")


def _answered(tracker: QueryTracker, **query: object) -> CapturingEmitter:
    capture = tracker.emitter
    assert isinstance(capture, CapturingEmitter)
    with tracker.query("삼성전자 전망", **query) as q:  # type: ignore[arg-type]
        q.searched(
            2,
            sources=[
                Source(doc_id="d-9", title="문의 010-1234-5678", score=3.5, rank=1),
                Source(doc_id="d-4", title=None, score=None, rank=2),
            ],
            backend_durations_ms={"opensearch": 12.5, "neo4j": 30.0},
        )
        q.responded(answer="상담은 010-1234-5678 로 주세요", finish_reason="stop", response_type="company_analysis")
    return capture


def test_the_answer_its_sources_tags_and_attribute_values_are_redacted_like_the_query() -> None:
    tracker = QueryTracker(CapturingEmitter(), redact=_phone)
    capture = _answered(tracker, attributes={"channel": "앱 010-1234-5678"}, tags=["beta", "010-1234-5678"])
    searched = capture.of_type("search_completed")[0]
    response = capture.of_type("response_generated")[0]
    assert isinstance(searched, SearchCompleted) and isinstance(response, ResponseGenerated)
    assert searched.sources is not None
    assert [(s.doc_id, s.title, s.rank) for s in searched.sources] == [("d-9", "문의 [PHONE]", 1), ("d-4", None, 2)]
    assert searched.backend_durations_ms == {"neo4j": 30.0, "opensearch": 12.5}
    assert response.answer_text == "상담은 [PHONE] 로 주세요"
    assert response.answer_chars == len("상담은 010-1234-5678 로 주세요")  # the length returned, before redaction
    assert response.finish_reason == "stop" and response.response_type == "company_analysis"
    received = capture.of_type("query_received")[0]
    assert received.attributes == {"channel": "앱 [PHONE]"} and received.tags == ("beta", "[PHONE]")
    assert "010-1234-5678" not in repr(capture.events)


def test_the_service_s_tags_are_redacted_too_and_a_tag_a_mask_lengthens_is_cut_not_refused() -> None:
    """A 64-character tag ending in a short address became 65 characters with its mask, and refused the query."""
    tracker = QueryTracker(CapturingEmitter(), redact=default_redactor().redact, tags=["svc-010-1111-2222"])
    capture = tracker.emitter
    assert isinstance(capture, CapturingEmitter)
    long = "x" * 57 + " a@b.co"
    with tracker.query("삼성전자", tags=[long]):
        pass
    assert capture.events[0].tags == ("svc-[PHONE]", ("x" * 57 + " [EMAIL]")[:64])


def test_a_backend_timing_without_a_number_is_refused_not_written_unreadable() -> None:
    # It used to pass the event's checks and be written, and then no reader could decode the line.
    with pytest.raises(EventValidationError, match=r"backend_durations_ms\.neo4j"):
        SearchCompleted(query_id="q", result_count=1, backend_durations_ms={"neo4j": None})  # type: ignore[dict-item]


def test_a_count_past_what_the_lake_holds_is_refused_and_the_query_carries_no_refused_value() -> None:
    """2**40 tokens passed the old `>= 0` check and was written; the lake's int32 column then refused every write.
    And a value a stage refused was carried on by the query's completion all the same."""
    capture = CapturingEmitter()
    with QueryTracker(capture).query("토큰") as q:
        with pytest.raises(EventValidationError, match="gen_ai_usage_output_tokens"):
            q.responded(output_tokens=2**40, quality_score=0.5)
        with pytest.raises(EventValidationError, match="result_count"):
            q.searched(2**31)
        with pytest.raises(EventValidationError, match="quality_score"):
            q.responded(quality_score=5.0)
    (completed,) = capture.of_type("query_completed")
    assert isinstance(completed, QueryCompleted)
    assert completed.result_count is None and completed.quality_score is None
    assert not capture.of_type("response_generated") and not capture.of_type("search_completed")


def test_with_capture_answers_off_only_the_answers_length_is_kept() -> None:
    capture = _answered(QueryTracker(CapturingEmitter(), capture_answers=False))
    response = capture.of_type("response_generated")[0]
    assert isinstance(response, ResponseGenerated)
    assert response.answer_text is None and response.answer_chars == len("상담은 010-1234-5678 로 주세요")


def test_an_answer_past_the_cap_is_cut_with_a_marker() -> None:
    capture = CapturingEmitter()
    with QueryTracker(capture).query("긴 답") as q:
        q.responded(answer="가" * (MAX_ANSWER_CHARS + 500))
    response = capture.of_type("response_generated")[0]
    assert isinstance(response, ResponseGenerated) and response.answer_text is not None
    assert len(response.answer_text) <= MAX_ANSWER_CHARS
    assert response.answer_text.startswith("가" * 100) and not response.answer_text.endswith("가")
    assert response.answer_chars == MAX_ANSWER_CHARS + 500


def test_release_and_prompt_version_ride_on_every_event_tags_and_attributes_on_the_first_and_last() -> None:
    tracker = QueryTracker(
        CapturingEmitter(), release="2026.12.1", prompt_version="p-3", tags=["beta"], attributes={"team": "a"}
    )
    capture = _answered(tracker, tags=["vip", "beta"], attributes={"channel": "web"}, prompt_version="p-4")
    assert {(e.release, e.prompt_version) for e in capture.events} == {("2026.12.1", "p-4")}
    first, last = capture.events[0], capture.events[-1]
    for event in (first, last):
        assert event.tags == ("beta", "vip")  # the service's defaults first, each tag once
        assert event.attributes == {"channel": "web", "team": "a"}
    assert all(e.tags is None and e.attributes is None for e in capture.events[1:-1])
    feedback = tracker.feedback("q-1", 1)
    assert (feedback.release, feedback.prompt_version) == ("2026.12.1", "p-3")


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, "tags"),
        ({"tags": [7]}, "tags"),
        ({"tags": ["t" * (MAX_TAG_CHARS + 1)]}, "tags"),
        ({"tags": ["  "]}, "tags"),
        ({"attributes": {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}}, "attributes"),
        ({"attributes": {"bad key!": "v"}}, "attributes"),
        ({"attributes": {"k": 3}}, "attributes"),
    ],
)
def test_tags_and_attributes_over_their_bounds_are_refused_where_they_are_given(
    given: dict[str, object], field: str
) -> None:
    with pytest.raises(EventValidationError, match=field):
        QueryTracker(CapturingEmitter(), **given)  # type: ignore[arg-type]
    capture = CapturingEmitter()
    with pytest.raises(EventValidationError, match=field):
        QueryTracker(capture).query("x", **given)  # type: ignore[arg-type]
    assert capture.events == []  # refused before the query began: nothing half-recorded


# -- values of the wrong type ------------------------------------------------------------------------------------
# Python callers can pass what JSON cannot hold as the schema says (a bool where a count goes, a float token count,
# a database's integer id): every event the tracker accepts must read back from the log, or the projections skip
# it (the lake, the metrics and Loki would never see the query), so it refuses here, naming the field, instead.


def _read_back(events: list) -> list:
    from querylog.logging import codec

    return [codec.decode(codec.encode(e)) for e in events]


@pytest.mark.parametrize(
    ("stage", "field"),
    [
        (lambda q: q.classified("x", True), "confidence"),
        (lambda q: q.classified(7, 0.5), "intent"),
        (lambda q: q.searched(2.5), "result_count"),
        (lambda q: q.searched(True), "result_count"),
        (lambda q: q.searched(1, cache_hit="yes"), "cache_hit"),
        (lambda q: q.responded(model="m", input_tokens=True), "gen_ai_usage_input_tokens"),
        (lambda q: q.responded(model="m", input_tokens=10.7), "gen_ai_usage_input_tokens"),
        (lambda q: q.responded(model="m", input_tokens="10"), "gen_ai_usage_input_tokens"),
        (lambda q: q.responded(model="m", cache_read_tokens=5.5), "gen_ai_usage_cache_read_input_tokens"),
        (lambda q: q.responded(model=4), "gen_ai_request_model"),
        (lambda q: q.responded(finish_reason=1), "finish_reason"),
        (lambda q: q.responded(cost_usd=1e308), "cost_usd"),
        (lambda q: q.responded(duration_ms=1e13), "duration_ms"),
    ],
)
def test_a_stage_value_of_the_wrong_type_is_refused_naming_its_field(stage, field: str) -> None:
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, service="chat", env="test")
    with pytest.raises(EventValidationError) as caught, tracker.query("q") as q:
        stage(q)
    assert caught.value.field == field
    _read_back(capture.events)  # what was written before the refusal reads back


def test_feedback_of_the_wrong_type_is_refused() -> None:
    tracker = QueryTracker(CapturingEmitter(), service="chat", env="test")
    for score in (True, 1.0, "1"):
        with pytest.raises(EventValidationError, match="score"):
            tracker.feedback("q-1", score)  # type: ignore[arg-type]


def test_integer_ids_are_kept_as_their_text_and_other_types_refused() -> None:
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, service="chat", env="test", release=3)  # type: ignore[arg-type]
    with tracker.query("q", session_id=42, user_id=7, query_id=9) as q:  # type: ignore[arg-type]
        q.set_trace_id(1234)  # type: ignore[arg-type]
        q.classified("x", 0.5)
    tracker.feedback(9, 1, user_id=7)  # type: ignore[arg-type]
    for event in _read_back(capture.events):
        assert (event.query_id, event.user_id, event.release) == ("9", "7", "3")
    assert [e.session_id for e in capture.events[:-1]] == ["42"] * 3
    assert capture.events[-2].trace_id == "1234"
    with pytest.raises(EventValidationError) as caught:
        tracker.query("q", session_id=4.5)  # type: ignore[arg-type]
    assert caught.value.field == "session_id"
    with pytest.raises(EventValidationError) as caught:
        tracker.query(b"bytes")  # type: ignore[arg-type]
    assert caught.value.field == "query_text"


def test_numbers_of_other_libraries_are_taken_as_the_numbers_they_are() -> None:
    np = pytest.importorskip("numpy")
    from fractions import Fraction

    capture = CapturingEmitter()
    tracker = QueryTracker(capture, service="chat", env="test")
    with tracker.query("q") as q:
        q.classified("x", np.float32(0.5), duration_ms=Fraction(3, 2))
        q.searched(np.int64(3), cache_hit=np.bool_(True), top_score=np.float32(2.5))  # np.bool_ is no Integral
        q.responded(model="m", input_tokens=np.int32(10), cost_usd=np.float16(0.25))
    _, classified, searched, responded, completed = _read_back(capture.events)
    assert (classified.confidence, classified.duration_ms) == (0.5, 1.5)
    assert (searched.result_count, searched.cache_hit, searched.top_score) == (3, True, 2.5)
    assert completed.cache_hit is True
    assert (responded.gen_ai_usage_input_tokens, responded.cost_usd) == (10, 0.25)


@pytest.mark.parametrize("top", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_a_top_score_that_is_no_number_is_refused_naming_it(top: float) -> None:
    """A NaN or infinite top score was taken and stored as null without a word, while a source's score, a duration
    and a cost refuse it."""
    from querylog.logging.events import EventValidationError

    with QueryTracker(CapturingEmitter()).query("x") as q, pytest.raises(EventValidationError, match="top_score"):
        q.searched(1, top_score=top)


def test_the_ids_the_docs_say_are_taken_type_check(tmp_path: Path) -> None:
    """docs/integrating.md: ids may be whole numbers (a database's); the signatures said `str`, so `mypy --strict`
    refused what the tracker takes."""
    pytest.importorskip("mypy")
    app = tmp_path / "app.py"
    app.write_text(
        "from querylog.logging.tracker import QueryTracker\n"
        "from querylog.testing import CapturingEmitter\n"
        "tracker = QueryTracker(CapturingEmitter())\n"
        "with tracker.query('x', session_id=123, user_id=42, query_id=7, trace_id='t', release=3) as q:\n"
        "    pass\n"
        "tracker.feedback(7, 1, session_id=123, user_id=42, trace_id=9)\n"
    )
    # In a process of its own: mypy raises the interpreter's recursion limit, which JSON depth tests rely on.
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(app)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with QueryTracker(CapturingEmitter()).query("x", session_id=123, query_id=7) as q:
        pass
    assert (q.session_id, q.query_id) == ("123", "7")


def test_an_error_mapped_from_a_stages_failure_is_blamed_on_that_stage() -> None:
    """`raise HTTPException(502) from e` (docs/integrating.md: map the exception to your HTTP error), a retry
    library's error raised from its last attempt, an exception group: the stage was lost."""

    class HTTPError(Exception):
        pass

    capture = CapturingEmitter()
    tracker = QueryTracker(capture)

    def mapped() -> None:
        with tracker.query("x") as q:
            try:
                with q.stage("search"):
                    raise TimeoutError("index down")
            except TimeoutError as exc:
                raise HTTPError(502) from exc

    def grouped() -> None:
        with tracker.query("y") as q:
            try:
                with q.stage("generate"):
                    raise ValueError("bad answer")
            except ValueError as exc:
                raise ExceptionGroup("steps failed", [exc]) from None

    with pytest.raises(HTTPError):
        mapped()
    with pytest.raises(ExceptionGroup):
        grouped()
    stages = [e.stage for e in capture.events if isinstance(e, QueryFailed)]
    assert stages == ["search", "generate"]


def test_stages_side_by_side_leave_the_one_still_open_current_and_none_once_all_closed() -> None:
    capture = CapturingEmitter()

    def handler() -> None:
        with QueryTracker(capture).query("x") as q:
            a, b = q.stage("search_a"), q.stage("search_b")
            a.__enter__()
            b.__enter__()
            a.__exit__(None, None, None)
            q.searched(1)  # inside search_b, still open
            b.__exit__(None, None, None)
            raise RuntimeError("after retrieval, in no stage")

    with pytest.raises(RuntimeError):
        handler()
    searched, failed = capture.events[-2], capture.events[-1]
    assert isinstance(searched, SearchCompleted) and searched.duration_ms is not None
    assert isinstance(failed, QueryFailed) and failed.stage is None  # it was blamed on search_a


def test_a_failed_query_lets_go_of_its_exception() -> None:
    """Kept after the query, the exception's traceback held the stage's frame, which holds the query: a cycle
    per failed request, its frames' locals (documents, prompts) freed only by the cyclic collector."""
    import gc
    import weakref

    made: list[weakref.ref[BaseException]] = []

    class BoomError(Exception):
        def __init__(self) -> None:
            super().__init__("boom")
            made.append(weakref.ref(self))

    def handler() -> None:
        with QueryTracker(CapturingEmitter()).query("x") as q, q.stage("generate"):
            raise BoomError()

    gc.disable()
    try:
        with contextlib.suppress(BoomError):
            handler()
        assert made[0]() is None  # freed at once, without the cyclic collector
    finally:
        gc.enable()
