"""QueryTracker: what a chat service calls to turn each step of a query into an event.

    with tracker.query("네이버 주가 전망은?", session_id="s-7", user_id="u-42") as q:
        with q.stage("classify"):
            q.classified("stock_analysis", 0.92)
        ...
    # leaving the block emits query_completed (or query_failed with the error type, and re-raises),
    # then flushes the log: the query's events are durable before its answer is returned.

Emitting costs microseconds on the caller's thread and never touches the network: events go to an
`Emitter` (the event log, or a capture in tests); projections ship them elsewhere in the background.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import uuid_utils

from querylog.logging.events import (
    Event,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    nfc,
)

__all__ = ["Emitter", "QueryTracker", "TrackedQuery"]

#: How much of an exception's message a query_failed event keeps.
MAX_ERROR_MESSAGE_CHARS = 500


@runtime_checkable
class Emitter(Protocol):
    """Where events go on the request thread: a cheap local append, and a flush at acknowledgement."""

    def append(self, event: Event) -> None: ...

    def flush(self) -> None: ...


def _identity(text: str) -> str:
    return text


class QueryTracker:
    """Creates `TrackedQuery` contexts that emit the query lifecycle. Thread-safe; one per service."""

    def __init__(
        self,
        emitter: Emitter,
        *,
        service: str = "querylog",
        env: str = "dev",
        redact: Callable[[str], str] | None = None,
        pseudonymize_user_id: Callable[[str], str] | None = None,
        durable: bool = True,
    ) -> None:
        if not isinstance(emitter, Emitter):
            raise TypeError(f"emitter must have append(event) and flush(); got {type(emitter).__name__}")
        if not service or not env:
            raise ValueError("service and env must be non-empty (they become Loki labels)")
        self.emitter = emitter
        self.service = service
        self.env = env
        self.redact = redact or _identity
        self.pseudonymize_user_id = pseudonymize_user_id or _identity
        self.durable = durable

    def query(
        self,
        query_text: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        query_id: str | None = None,
        trace_id: str | None = None,
        language: str | None = None,
    ) -> TrackedQuery:
        return TrackedQuery(
            self,
            query_text,
            session_id=session_id,
            user_id=user_id,
            query_id=query_id,
            trace_id=trace_id,
            language=language,
        )

    def feedback(
        self,
        query_id: str,
        score: int,
        *,
        comment: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        trace_id: str | None = None,
    ) -> FeedbackReceived:
        """Emit (and flush) a feedback_received event for an answered query."""
        event = FeedbackReceived(
            query_id=query_id,
            score=score,
            comment=self.redact(nfc(comment)) if comment is not None else None,
            session_id=session_id,
            user_id=self.pseudonymize_user_id(user_id) if user_id else None,
            trace_id=trace_id,
            service=self.service,
            env=self.env,
        )
        self.emitter.append(event)
        if self.durable:
            self.emitter.flush()
        return event


class TrackedQuery:
    """One query's lifecycle. Use as a context manager; stage methods emit one event each."""

    __slots__ = (
        "_current_stage",
        "_failed_stage",
        "_language",
        "_raw_text",
        "_stage_started",
        "_started",
        "_tracker",
        "cache_hit",
        "intent",
        "quality_score",
        "query_id",
        "result_count",
        "session_id",
        "stage_durations_ms",
        "text",
        "trace_id",
        "user_id",
    )

    def __init__(
        self,
        tracker: QueryTracker,
        query_text: str,
        *,
        session_id: str | None,
        user_id: str | None,
        query_id: str | None,
        trace_id: str | None,
        language: str | None,
    ) -> None:
        self._tracker = tracker
        self._raw_text = query_text
        self.query_id = query_id or str(uuid_utils.uuid7())
        self.session_id = session_id
        self.user_id = tracker.pseudonymize_user_id(user_id) if user_id else None
        self.trace_id = trace_id
        self._language = language
        self.text = ""
        self.intent: str | None = None
        self.cache_hit: bool | None = None
        self.result_count: int | None = None
        self.quality_score: float | None = None
        self.stage_durations_ms: dict[str, float] = {}
        self._current_stage: str | None = None
        self._failed_stage: str | None = None
        self._stage_started = 0.0
        self._started = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> TrackedQuery:
        self._started = time.perf_counter()
        # The text is normalised and redacted before any event — and so any sink — sees it.
        self.text = self._tracker.redact(nfc(self._raw_text))
        self._emit(QueryReceived, query_text=self.text, language=self._language)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        latency_ms = (time.perf_counter() - self._started) * 1000.0
        try:
            if exc is None:
                self._emit(
                    QueryCompleted,
                    latency_ms=latency_ms,
                    intent=self.intent,
                    cache_hit=self.cache_hit,
                    result_count=self.result_count,
                    quality_score=self.quality_score,
                )
            else:
                message = self._tracker.redact(str(exc))[:MAX_ERROR_MESSAGE_CHARS]
                self._emit(
                    QueryFailed,
                    error_type=type(exc).__name__,
                    error_message=message,
                    stage=self._failed_stage or self._current_stage,
                    latency_ms=latency_ms,
                    intent=self.intent,
                )
        finally:
            if self._tracker.durable:
                self._tracker.emitter.flush()
        # Returning None re-raises the handler's exception: the tracker records failures, never hides them.

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; events emitted inside without a duration get the stage's elapsed time,
        and a failure inside is attributed to it."""
        previous, started = self._current_stage, self._stage_started
        self._current_stage = name
        self._stage_started = time.perf_counter()
        try:
            yield
        except BaseException:
            if self._failed_stage is None:  # the innermost stage is where it broke
                self._failed_stage = name
            raise
        finally:
            self.stage_durations_ms[name] = (time.perf_counter() - self._stage_started) * 1000.0
            self._current_stage, self._stage_started = previous, started

    def set_trace_id(self, trace_id: str | None) -> None:
        """Attach a trace id (e.g. Langfuse's) once known; later events of the query carry it."""
        self.trace_id = trace_id

    # -- stage events ----------------------------------------------------------------------------
    def classified(self, intent: str, confidence: float, *, duration_ms: float | None = None) -> None:
        self.intent = intent
        self._emit(IntentClassified, intent=intent, confidence=confidence, duration_ms=self._duration(duration_ms))

    def searched(
        self,
        result_count: int,
        *,
        cache_hit: bool = False,
        top_score: float | None = None,
        duration_ms: float | None = None,
    ) -> None:
        self.result_count = result_count
        self.cache_hit = cache_hit
        self._emit(
            SearchCompleted,
            result_count=result_count,
            cache_hit=cache_hit,
            top_score=top_score,
            duration_ms=self._duration(duration_ms),
        )

    def responded(
        self,
        *,
        system: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        quality_score: float | None = None,
        answer_chars: int | None = None,
        duration_ms: float | None = None,
    ) -> None:
        self.quality_score = quality_score
        self._emit(
            ResponseGenerated,
            gen_ai_system=system,
            gen_ai_request_model=model,
            gen_ai_usage_input_tokens=input_tokens,
            gen_ai_usage_output_tokens=output_tokens,
            quality_score=quality_score,
            answer_chars=answer_chars,
            duration_ms=self._duration(duration_ms),
        )

    # -- internals --------------------------------------------------------------------------------
    def _duration(self, given: float | None) -> float | None:
        if given is not None:
            return given
        if self._current_stage is not None:
            return (time.perf_counter() - self._stage_started) * 1000.0
        return None

    def _emit(self, cls: type[Event], **fields: Any) -> None:
        tracker = self._tracker
        event = cls(
            query_id=self.query_id,
            session_id=self.session_id,
            user_id=self.user_id,
            trace_id=self.trace_id,
            service=tracker.service,
            env=tracker.env,
            **fields,
        )
        tracker.emitter.append(event)
