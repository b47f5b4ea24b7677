"""The event model, schema v1: one frozen, typed event per step of a query's life."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

import msgspec
import uuid_utils

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AnyEvent",
    "Event",
    "EventValidationError",
    "FeedbackReceived",
    "IntentClassified",
    "QueryCompleted",
    "QueryFailed",
    "QueryReceived",
    "ResponseGenerated",
    "SearchCompleted",
    "new_event_id",
    "nfc",
    "utc_now",
]

SCHEMA_VERSION: Final = 1

#: Largest query text an event carries, in characters. Longer text is cut, with a marker, so that one
#: pasted document can never make a log line that no sink accepts (Loki's own limit is 256 KiB a line).
MAX_TEXT_CHARS: Final = 16_384
TRUNCATION_MARKER: Final = "…[truncated]"

Status: TypeAlias = Literal["completed", "failed"]


class EventValidationError(ValueError):
    """An event field holds a value the schema does not allow. `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by creation and index well."""
    return str(uuid_utils.uuid7())


def utc_now() -> datetime:
    return datetime.now(UTC)


def nfc(text: str) -> str:
    """NFC form of `text`. Hangul typed on macOS arrives decomposed (NFD) and would never match a search."""
    if unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean_text(text: str) -> str:
    text = nfc(text)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (possible from Python callers; HTTP input refuses them) is not text and cannot be
            # stored as UTF-8: it becomes U+FFFD, as any UTF-8 decoder would show it.
            text = _SURROGATE.sub("\ufffd", text)
    if len(text) > MAX_TEXT_CHARS:
        text = text[: MAX_TEXT_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise EventValidationError(field, message)


# Validation runs on every emit and on every decode by every projection: checks are plain comparisons, and an
# error message (an f-string with a repr) is only formatted once a check has failed.


def _check_duration(field: str, value: float | None) -> None:
    # `value >= 0` is False for NaN, so this also refuses NaN; isfinite then refuses +inf.
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise EventValidationError(field, f"must be a finite number >= 0, got {value!r}")


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="event_type",
    forbid_unknown_fields=True,
):
    """Fields every event carries. Subclasses add their own typed fields.

    Construction validates values (an `EventValidationError` names the field); decoding from JSON validates
    types as well (msgspec names the path, e.g. ``$.confidence``).
    """

    event_id: str = msgspec.field(default_factory=new_event_id)
    schema_version: int = SCHEMA_VERSION
    ts: datetime = msgspec.field(default_factory=utc_now)
    query_id: str
    session_id: str | None = None
    user_id: str | None = None
    service: str = "querylog"
    env: str = "dev"
    trace_id: str | None = None

    @property
    def event_type(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def __post_init__(self) -> None:
        if not (self.event_id and self.query_id and self.service and self.env and self.schema_version >= 1):
            _require(bool(self.event_id), "event_id", "must not be empty")
            _require(bool(self.query_id), "query_id", "must not be empty")
            _require(self.schema_version >= 1, "schema_version", "must be >= 1")
            _require(bool(self.service), "service", "must not be empty")
            _require(bool(self.env), "env", "must not be empty")
        ts = self.ts
        tz = ts.tzinfo
        if tz is not UTC:  # utc_now() and msgspec's decoding of "Z" both give the UTC singleton: nothing to do
            _require(tz is not None, "ts", "must be timezone-aware (UTC)")
            if ts.utcoffset():
                msgspec.structs.force_setattr(self, "ts", ts.astimezone(UTC))


class QueryReceived(Event, frozen=True, tag="query_received"):
    """A user's query arrived. The text is NFC-normalised (and redacted by the producer) before it gets here."""

    query_text: str
    language: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        cleaned = _clean_text(self.query_text)
        _require(bool(cleaned.strip()), "query_text", "must not be empty")
        if cleaned is not self.query_text:
            msgspec.structs.force_setattr(self, "query_text", cleaned)


class IntentClassified(Event, frozen=True, tag="intent_classified"):
    intent: str
    confidence: float
    duration_ms: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.intent), "intent", "must not be empty")
        if not 0.0 <= self.confidence <= 1.0:
            raise EventValidationError("confidence", f"must be within [0, 1], got {self.confidence!r}")
        _check_duration("duration_ms", self.duration_ms)


class SearchCompleted(Event, frozen=True, tag="search_completed"):
    result_count: int
    cache_hit: bool = False
    duration_ms: float | None = None
    top_score: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.result_count < 0:
            raise EventValidationError("result_count", f"must be >= 0, got {self.result_count!r}")
        _check_duration("duration_ms", self.duration_ms)


class ResponseGenerated(Event, frozen=True, tag="response_generated"):
    """The LLM step answered. Names follow the OpenTelemetry GenAI conventions (dots become underscores)."""

    gen_ai_system: str | None = None
    gen_ai_request_model: str | None = None
    gen_ai_usage_input_tokens: int | None = None
    gen_ai_usage_output_tokens: int | None = None
    duration_ms: float | None = None
    quality_score: float | None = None
    answer_chars: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_duration("duration_ms", self.duration_ms)
        for name in ("gen_ai_usage_input_tokens", "gen_ai_usage_output_tokens", "answer_chars"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise EventValidationError(name, f"must be >= 0, got {value!r}")
        if self.quality_score is not None and not 0.0 <= self.quality_score <= 1.0:
            raise EventValidationError("quality_score", f"must be within [0, 1], got {self.quality_score!r}")


class QueryCompleted(Event, frozen=True, tag="query_completed"):
    """The query was answered. Carries what LogQL panels group by, so they need no join."""

    latency_ms: float
    intent: str | None = None
    cache_hit: bool | None = None
    result_count: int | None = None
    quality_score: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_duration("latency_ms", self.latency_ms)


class QueryFailed(Event, frozen=True, tag="query_failed"):
    error_type: str
    error_message: str = ""
    stage: str | None = None
    latency_ms: float | None = None
    intent: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.error_type), "error_type", "must not be empty")
        _check_duration("latency_ms", self.latency_ms)
        cleaned = _clean_text(self.error_message)
        if cleaned is not self.error_message:
            msgspec.structs.force_setattr(self, "error_message", cleaned)


class FeedbackReceived(Event, frozen=True, tag="feedback_received"):
    """A user's verdict on an answer: -1 (bad), 0 (neutral) or 1 (good)."""

    score: int
    comment: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score not in (-1, 0, 1):
            raise EventValidationError("score", f"must be -1, 0 or 1, got {self.score!r}")
        if self.comment is not None:
            cleaned = _clean_text(self.comment)
            if cleaned is not self.comment:
                msgspec.structs.force_setattr(self, "comment", cleaned)


AnyEvent: TypeAlias = (
    QueryReceived
    | IntentClassified
    | SearchCompleted
    | ResponseGenerated
    | QueryCompleted
    | QueryFailed
    | FeedbackReceived
)

EVENT_CLASSES: Final[dict[str, type[Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        QueryReceived,
        IntentClassified,
        SearchCompleted,
        ResponseGenerated,
        QueryCompleted,
        QueryFailed,
        FeedbackReceived,
    )
}
EVENT_TYPES: Final[tuple[str, ...]] = tuple(EVENT_CLASSES)
