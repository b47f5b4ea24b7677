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

import numbers
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final, Protocol, SupportsIndex, TypeAlias, runtime_checkable

import msgspec
import uuid_utils

from querylog.logging.events import (
    COUNT_MAX,
    MAX_ANSWER_CHARS,
    MAX_COST_USD,
    MAX_ID_CHARS,
    MAX_MILLIS,
    MAX_SOURCES,
    Event,
    EventValidationError,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
    checked_attributes,
    checked_tags,
    clean_text,
    id_text_problem,
    is_blank,
    name_text_problem,
    nfc,
    prechecked,
    redacted_tag,
)

__all__ = ["Emitter", "QueryTracker", "SourceLike", "TrackedQuery"]

#: How much of an exception's message a query_failed event keeps.
MAX_ERROR_MESSAGE_CHARS = 500

# The request path builds each event as its class's prechecked subclass (querylog.logging.events.Prechecked): the
# values common to a query's events are checked once, when the query starts (the tracker's service and env, the
# query's id, context and text); each stage checks its own values by the schema's rules in one expression. A value
# that fails the expression goes to the event class itself, which raises the schema's error naming the field (or,
# where the expression is only stricter than the schema, builds the event, checked): the class is chosen, the
# call is one.
_QueryReceived: Final = prechecked(QueryReceived)
_IntentClassified: Final = prechecked(IntentClassified)
_SearchCompleted: Final = prechecked(SearchCompleted)
_ResponseGenerated: Final = prechecked(ResponseGenerated)
_QueryCompleted: Final = prechecked(QueryCompleted)


def _plain(value: object) -> Any:
    """A number of another library (numpy's ``float32``, ``int64``) as Python's own, which JSON can hold; any other
    value as it is: the event class then names what is wrong with it."""
    kind = type(value)
    if value is None or kind is float or kind is int or kind is bool:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "shape", None) == () and callable(item := getattr(value, "item", None)):
        return item()  # a numpy scalar of another kind (``np.bool_``) as Python's own
    return value


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= COUNT_MAX


#: An id as the tracker takes it: text, or a whole number (an int, a numpy integer: a database's id), stored as its
#: decimal text.
Id: TypeAlias = str | SupportsIndex


def _check_ids(**ids: str | None) -> None:
    for name, value in ids.items():
        if value is not None and (why := id_text_problem(name, value)) is not None:
            raise EventValidationError(name, why)


#: Names that passed the ingest endpoints' rule (`name_text_problem`), and None (no name given). Intents, models and
#: stages repeat, so a stage tests each of its names with one set lookup; past the bound, a new name is checked anew.
_GOOD_NAMES: set[str | None] = {None}
_MAX_GOOD_NAMES: Final = 4096


def _check_name(field: str, value: object) -> None:
    """Raise `EventValidationError` naming `field` when `value`, a name (an intent, a model, a release, a stage: a
    metric label value and an explorer filter), breaks the ingest endpoints' rule: at most 200 characters, no
    control character, not blank. A value that is not text is the event class's to name."""
    if not isinstance(value, str) or value in _GOOD_NAMES:  # an enum's member too (``class Intent(str, Enum)``)
        return
    if (why := name_text_problem(value)) is not None:
        raise EventValidationError(field, why)
    if len(_GOOD_NAMES) < _MAX_GOOD_NAMES:
        _GOOD_NAMES.add(value)


def _text(field: str, value: object) -> Any:
    """An id or a label as events hold it: text, None, or a whole number (a database's id) as its decimal text."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)  # a subclass (an enum's member) as its plain text
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise EventValidationError(field, f"must be a string, got {type(value).__name__} {value!r}")


@runtime_checkable
class Emitter(Protocol):
    """Where events go on the request thread: a cheap local append, and a flush at acknowledgement.

    On its hot path the tracker appends prechecked events (`querylog.logging.events.Prechecked`): instances of
    the event classes whose values the tracker checked; `checked()` gives the class's own instance."""

    def append(self, event: Event) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class SourceLike(Protocol):
    """A retrieved document as a pipeline holds it (e.g. a search hit): an id, and maybe a title and a score."""

    @property
    def doc_id(self) -> str: ...


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
        release: str | None = None,
        prompt_version: str | None = None,
        tags: Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        capture_answers: bool = True,
    ) -> None:
        """`release`, `prompt_version`, `tags` and `attributes` are the service's defaults for every query
        (``QUERYLOG_RELEASE`` and friends); a query's own add to them. With `capture_answers` off (a policy that
        forbids storing answers), `response_generated` keeps the answer's length only, never its text."""
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
        self.release = _text("release", release) or None
        self.prompt_version = _text("prompt_version", prompt_version) or None
        for name, value in (("service", service), ("env", env), ("release", self.release)):
            _check_name(name, value)
        _check_name("prompt_version", self.prompt_version)
        self.tags = self._tags(tags) if tags else None
        self.attributes = self._attributes(attributes) if attributes else None
        self.capture_answers = capture_answers
        #: What every query carries unless it says otherwise, built once.
        self._context = _Context(
            release=self.release, prompt_version=self.prompt_version, tags=self.tags, attributes=self.attributes
        )

    def _tags(self, tags: Sequence[str]) -> tuple[str, ...]:
        # Checked first, then each redacted, then checked again as the events will carry them.
        return checked_tags([redacted_tag(tag, self.redact) for tag in checked_tags(tuple(tags))])

    def _attributes(self, attributes: Mapping[str, str]) -> dict[str, str]:
        # Checked first (bounds, key names), then each value redacted like any text a user may have typed, then
        # checked again as the events will carry them: a redactor may lengthen a value, or return NFD text.
        return checked_attributes({k: self.redact(v) for k, v in checked_attributes(attributes).items()})

    def query(
        self,
        query_text: str,
        *,
        session_id: Id | None = None,
        user_id: Id | None = None,
        query_id: Id | None = None,
        trace_id: Id | None = None,
        language: str | None = None,
        release: Id | None = None,
        prompt_version: str | None = None,
        tags: Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> TrackedQuery:
        """A query's context. `release` and `prompt_version` override the service's; `tags` and `attributes`
        add to its defaults. Over their bounds they raise `EventValidationError` naming the field, here."""
        if type(query_text) is not str:
            raise EventValidationError("query_text", f"must be a string, got {type(query_text).__name__}")
        if not (
            (session_id is None or type(session_id) is str)
            and (user_id is None or type(user_id) is str)
            and (query_id is None or type(query_id) is str)
            and (trace_id is None or type(trace_id) is str)
            and (language is None or type(language) is str)
        ):
            session_id, user_id = _text("session_id", session_id), _text("user_id", user_id)
            query_id, trace_id = _text("query_id", query_id), _text("trace_id", trace_id)
            language = _text("language", language)
        # Each id is text by now (`_text` above, when one was not): no cast, which would cost a call per query. They
        # are held to the ingest endpoints' rules (`id_text_problem`): printable, not blank, at most 200 characters,
        # a query id without spaces (feedback finds the query by it). One test per id when they are.
        sid: str | None = session_id  # type: ignore[assignment]
        uid: str | None = user_id  # type: ignore[assignment]
        qid: str | None = query_id  # type: ignore[assignment]
        tid: str | None = trace_id  # type: ignore[assignment]
        if not (
            (sid is None or (sid.isprintable() and 0 < len(sid) <= MAX_ID_CHARS and not sid.isspace()))
            and (uid is None or (uid.isprintable() and 0 < len(uid) <= MAX_ID_CHARS and not uid.isspace()))
            and (tid is None or (tid.isprintable() and 0 < len(tid) <= MAX_ID_CHARS and not tid.isspace()))
            and (qid is None or (qid.isprintable() and 0 < len(qid) <= MAX_ID_CHARS and " " not in qid))
        ):
            _check_ids(session_id=sid, user_id=uid, query_id=qid, trace_id=tid)
        if language not in _GOOD_NAMES:
            language = language or None  # empty: none given
            _check_name("language", language)
        context = self._context
        if release or prompt_version or tags or attributes:  # the query's own: a context of its own
            own_release, prompt_version = _text("release", release), _text("prompt_version", prompt_version)
            _check_name("release", own_release or None)  # empty: the service's
            _check_name("prompt_version", prompt_version or None)
            merged_tags = self.tags
            if tags:
                merged_tags = checked_tags((*(self.tags or ()), *self._tags(tags)))
            merged_attributes = self.attributes
            if attributes:
                merged_attributes = checked_attributes({**(self.attributes or {}), **self._attributes(attributes)})
            context = _Context(
                release=own_release or self.release,
                prompt_version=prompt_version or self.prompt_version,
                tags=merged_tags,
                attributes=merged_attributes,
            )
        return TrackedQuery(self, query_text, sid, uid, qid, tid, language, context)

    def feedback(
        self,
        query_id: Id,
        score: int,
        *,
        comment: str | None = None,
        session_id: Id | None = None,
        user_id: Id | None = None,
        trace_id: Id | None = None,
    ) -> FeedbackReceived:
        """Emit (and flush) a feedback_received event for an answered query."""
        if comment is not None and not isinstance(comment, str):
            raise EventValidationError("comment", f"must be a string, got {type(comment).__name__}")
        uid = _text("user_id", user_id)
        event = FeedbackReceived(
            query_id=_text("query_id", query_id),
            score=_plain(score),
            comment=self.redact(nfc(comment)) if comment is not None else None,
            session_id=_text("session_id", session_id),
            user_id=self.pseudonymize_user_id(uid) if uid else None,
            trace_id=_text("trace_id", trace_id),
            service=self.service,
            env=self.env,
            release=self.release,
            prompt_version=self.prompt_version,
        )
        self.emitter.append(event)
        if self.durable:
            self.emitter.flush()
        return event


class _Context:
    """What a team compares queries by, fixed for a query: carried by its events (release and prompt version by
    every one; tags and attributes by the first and the last, which is where views and LogQL look)."""

    __slots__ = ("attributes", "prompt_version", "release", "tags")

    def __init__(
        self,
        *,
        release: str | None,
        prompt_version: str | None,
        tags: tuple[str, ...] | None,
        attributes: dict[str, str] | None,
    ) -> None:
        self.release = release
        self.prompt_version = prompt_version
        self.tags = tags
        self.attributes = attributes


def _message(exc: BaseException) -> str:
    """`str(exc)`, or what says so when the app's exception cannot be made text: the failure is still recorded
    and the app's exception, not this one, is what goes on."""
    try:
        return str(exc)
    except Exception as unprintable:
        return f"<{type(exc).__name__}: str() raised {type(unprintable).__name__}>"


class TrackedQuery:
    """One query's lifecycle. Use as a context manager; stage methods emit one event each."""

    __slots__ = (
        "_context",
        "_current_stage",
        "_failed",
        "_language",
        "_open_stages",
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

    def __init__(  # made by `QueryTracker.query`, once per request: positional, which costs less
        self,
        tracker: QueryTracker,
        query_text: str,
        session_id: str | None,
        user_id: str | None,
        query_id: str | None,
        trace_id: str | None,
        language: str | None,
        context: _Context,
        /,
    ) -> None:
        self._tracker = tracker
        self._context = context
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
        #: The exception a stage saw first, and that stage: where it broke, if the query fails with it (or with an
        #: exception raised from it). Let go when the query ends: its traceback holds the stage's frame.
        self._failed: tuple[BaseException, str] | None = None
        #: The stages open now, in the order they opened (`stage`): the last is the current one.
        self._open_stages: list[tuple[str, float]] | None = None
        self._stage_started = 0.0
        self._started = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> TrackedQuery:
        self._started = time.perf_counter()
        t, c = self._tracker, self._context
        # The text is normalised and redacted before any event — and so any sink — sees it; then stored as the
        # event stores text (capped, no lone surrogate), and never blank.
        self.text = stored = clean_text(t.redact(nfc(self._raw_text)))
        t.emitter.append(
            (QueryReceived if is_blank(stored) else _QueryReceived)(
                query_id=self.query_id,
                session_id=self.session_id,
                user_id=self.user_id,
                trace_id=self.trace_id,
                service=t.service,
                env=t.env,
                release=c.release,
                prompt_version=c.prompt_version,
                tags=c.tags,
                attributes=c.attributes,
                query_text=stored,
                language=self._language,
            )
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        latency_ms = (time.perf_counter() - self._started) * 1000.0
        t, c = self._tracker, self._context
        try:
            if exc is None:
                event: Event = (_QueryCompleted if 0 <= latency_ms <= MAX_MILLIS else QueryCompleted)(
                    query_id=self.query_id,
                    session_id=self.session_id,
                    user_id=self.user_id,
                    trace_id=self.trace_id,
                    service=t.service,
                    env=t.env,
                    release=c.release,
                    prompt_version=c.prompt_version,
                    tags=c.tags,
                    attributes=c.attributes,
                    latency_ms=latency_ms,
                    intent=self.intent,
                    cache_hit=self.cache_hit,
                    result_count=self.result_count,
                    quality_score=self.quality_score,
                )
            else:
                event = QueryFailed(
                    query_id=self.query_id,
                    session_id=self.session_id,
                    user_id=self.user_id,
                    trace_id=self.trace_id,
                    service=t.service,
                    env=t.env,
                    release=c.release,
                    prompt_version=c.prompt_version,
                    tags=c.tags,
                    attributes=c.attributes,
                    error_type=type(exc).__name__,
                    error_message=t.redact(_message(exc))[:MAX_ERROR_MESSAGE_CHARS],
                    stage=self._broke_in(exc),
                    latency_ms=latency_ms,
                    intent=self.intent,
                )
            t.emitter.append(event)
        finally:
            self._failed = None
            if t.durable:
                t.emitter.flush()
        # Returning None re-raises the handler's exception: the tracker records failures, never hides them.

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; events emitted inside without a duration get the stage's elapsed time,
        and a failure inside is attributed to it."""
        if type(name) is not str or name not in _GOOD_NAMES:
            if not isinstance(name, str):  # here, not when the query ends: the app's own exception must go on
                raise EventValidationError("stage", f"must be a string, got {type(name).__name__} {name!r}")
            _check_name("stage", name)
        entry = (name, time.perf_counter())
        if self._open_stages is None:
            self._open_stages = []
        opened = self._open_stages
        opened.append(entry)
        self._current_stage, self._stage_started = entry
        try:
            yield
        except BaseException as exc:
            if self._failed is None or self._failed[0] is not exc:  # the innermost stage is where it broke
                self._failed = (exc, name)
            raise
        finally:
            self.stage_durations_ms[name] = (time.perf_counter() - entry[1]) * 1000.0
            # Side by side (asyncio.gather), stages need not close in the reverse order they opened.
            del opened[next(i for i in range(len(opened) - 1, -1, -1) if opened[i] is entry)]
            self._current_stage, self._stage_started = opened[-1] if opened else (None, 0.0)

    def _broke_in(self, exc: BaseException) -> str | None:
        """The stage `exc` broke in: the one that saw it, or the exception it was raised from or while handling
        (an HTTP error mapped from a search's, a retry library's last attempt, an exception group's member);
        else the stage open now. Not one whose failure the app handled (a retry) before this one."""
        failed = self._failed
        if failed is not None:
            seen: set[int] = set()
            todo: list[BaseException] = [exc]
            while todo and len(seen) < 64:
                cause = todo.pop()
                if cause is failed[0]:
                    return failed[1]
                if id(cause) in seen:
                    continue
                seen.add(id(cause))
                todo += [e for e in (cause.__cause__, cause.__context__) if e is not None]
                if isinstance(cause, BaseExceptionGroup):
                    todo += cause.exceptions
        return self._current_stage

    def set_trace_id(self, trace_id: Id | None) -> None:
        """Attach a trace id (e.g. Langfuse's) once known; later events of the query carry it."""
        text: str | None = _text("trace_id", trace_id)
        _check_ids(trace_id=text)
        self.trace_id = text

    # -- stage events ----------------------------------------------------------------------------
    # Each event is built in place with every field named, the query's own fields first, the same in each method:
    # this is the request path, and a helper that merged them would cost a dict (and a call) per event. A call
    # keeps to 15 keywords at most: past that, Python passes them in a dict, which doubles the event's cost.
    def classified(self, intent: str, confidence: float, *, duration_ms: float | None = None) -> None:
        t, c = self._tracker, self._context
        d = duration_ms if duration_ms is not None else self._stage_elapsed_ms()
        valid = (
            type(intent) is str
            and intent
            and type(confidence) is float
            and 0.0 <= confidence <= 1.0
            and (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
        )
        if not valid:  # the event class checks them and names what is wrong
            confidence, d = _plain(confidence), _plain(d)
        event = (_IntentClassified if valid else IntentClassified)(
            query_id=self.query_id,
            session_id=self.session_id,
            user_id=self.user_id,
            trace_id=self.trace_id,
            service=t.service,
            env=t.env,
            release=c.release,
            prompt_version=c.prompt_version,
            intent=intent,
            confidence=confidence,
            duration_ms=d,
        )
        if intent not in _GOOD_NAMES:  # text by now: the event was built
            _check_name("intent", intent)
        t.emitter.append(event)
        # Kept for the query's last event once this one was accepted: a value the event refused is not carried on.
        self.intent = intent

    def searched(
        self,
        result_count: int,
        *,
        cache_hit: bool = False,
        top_score: float | None = None,
        duration_ms: float | None = None,
        sources: Iterable[Source | SourceLike] | None = None,
        backend_durations_ms: Mapping[str, float] | None = None,
    ) -> None:
        """`sources`: the documents retrieved, best first — `Source` values (each with its rank), or any objects
        with `doc_id` and optionally `title` and `score` (ranked in their order). Titles are redacted; past
        `MAX_SOURCES` the rest are cut and counted in `sources_dropped`."""
        t, c = self._tracker, self._context
        d = duration_ms if duration_ms is not None else self._stage_elapsed_ms()
        hits = tuple(self._sources(sources)) if sources is not None else None
        # Sources were checked as they were made (`Source`); past MAX_SOURCES, and per-backend timings (checked,
        # sorted), are the event class's work.
        valid = (
            type(result_count) is int
            and 0 <= result_count <= COUNT_MAX
            and (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
            and (hits is None or len(hits) <= MAX_SOURCES)
            and backend_durations_ms is None
            and type(cache_hit) is bool
            and (top_score is None or (type(top_score) is float and top_score - top_score == 0.0))  # finite
        )
        if not valid:
            result_count, d, top_score, cache_hit = (
                _plain(result_count),
                _plain(d),
                _plain(top_score),
                _plain(cache_hit),
            )
        t.emitter.append(
            (_SearchCompleted if valid else SearchCompleted)(
                query_id=self.query_id,
                session_id=self.session_id,
                user_id=self.user_id,
                trace_id=self.trace_id,
                service=t.service,
                env=t.env,
                release=c.release,
                prompt_version=c.prompt_version,
                result_count=result_count,
                cache_hit=cache_hit,
                top_score=top_score,
                duration_ms=d,
                sources=hits,
                backend_durations_ms=dict(backend_durations_ms) if backend_durations_ms is not None else None,
            )
        )
        self.result_count = result_count
        self.cache_hit = cache_hit

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
        answer: str | None = None,
        response_type: str | None = None,
        finish_reason: str | None = None,
        ttft_ms: float | None = None,
        cost_usd: float | None = None,
        response_model: str | None = None,
        cache_read_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """The LLM step's outcome. `answer` is the text returned to the user: stored NFC and redacted (cut past
        `MAX_ANSWER_CHARS`), unless the tracker was made with ``capture_answers=False``; its length is kept
        either way. `cost_usd` only when the provider reported what it billed: otherwise the lake prices the
        tokens (querylog.logging.pricing)."""
        t, c = self._tracker, self._context
        # An empty name says nothing (a backend's "finish_reason": ""): left out, as an absent one is.
        if system == "" or model == "" or finish_reason == "" or response_model == "" or response_type == "":
            system, model, finish_reason = system or None, model or None, finish_reason or None
            response_model, response_type = response_model or None, response_type or None
        answer_text = None
        if answer is not None:
            if answer_chars is None:
                answer_chars = len(answer)
            if t.capture_answers:
                answer_text = clean_text(t.redact(nfc(answer)), MAX_ANSWER_CHARS)
        d = duration_ms if duration_ms is not None else self._stage_elapsed_ms()
        valid = (
            (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
            and (input_tokens is None or (type(input_tokens) is int and 0 <= input_tokens <= COUNT_MAX))
            and (output_tokens is None or (type(output_tokens) is int and 0 <= output_tokens <= COUNT_MAX))
            and (answer_chars is None or (type(answer_chars) is int and 0 <= answer_chars <= COUNT_MAX))
            and (quality_score is None or (type(quality_score) is float and 0.0 <= quality_score <= 1.0))
            and (system is None or type(system) is str)
            and (model is None or type(model) is str)
        )
        if not valid:
            d, quality_score = _plain(d), _plain(quality_score)
            input_tokens, output_tokens = _plain(input_tokens), _plain(output_tokens)
            answer_chars = _plain(answer_chars)
        # The v2 fields, mostly absent, are added only when given (15 keywords at most a call: see above).
        event: ResponseGenerated = (_ResponseGenerated if valid else ResponseGenerated)(
            query_id=self.query_id,
            session_id=self.session_id,
            user_id=self.user_id,
            trace_id=self.trace_id,
            service=t.service,
            env=t.env,
            release=c.release,
            prompt_version=c.prompt_version,
            gen_ai_system=system,
            gen_ai_request_model=model,
            gen_ai_usage_input_tokens=input_tokens,
            gen_ai_usage_output_tokens=output_tokens,
            quality_score=quality_score,
            answer_chars=answer_chars,
            duration_ms=d,
        )
        if not (
            answer_text is None
            and response_type is None
            and finish_reason is None
            and ttft_ms is None
            and cost_usd is None
            and response_model is None
            and cache_read_tokens is None
            and reasoning_tokens is None
        ):
            v2 = {
                "answer_text": answer_text,
                "response_type": response_type,
                "finish_reason": finish_reason,
                "ttft_ms": ttft_ms,
                "cost_usd": cost_usd,
                "gen_ai_response_model": response_model,
                "gen_ai_usage_cache_read_input_tokens": cache_read_tokens,
                "gen_ai_usage_reasoning_output_tokens": reasoning_tokens,
            }
            if (
                valid
                and (ttft_ms is None or (type(ttft_ms) is float and 0 <= ttft_ms <= MAX_MILLIS))
                and (cost_usd is None or (type(cost_usd) is float and 0 <= cost_usd <= MAX_COST_USD))
                and (cache_read_tokens is None or _is_count(cache_read_tokens))
                and (reasoning_tokens is None or _is_count(reasoning_tokens))
                and (response_type is None or type(response_type) is str)
                and (finish_reason is None or type(finish_reason) is str)
                and (response_model is None or type(response_model) is str)
            ):
                event = msgspec.structs.replace(event, **v2)
            else:  # the event class checks the whole, and names the field
                v2 = {k: _plain(v) for k, v in v2.items()}
                event = ResponseGenerated(**{**msgspec.structs.asdict(event), **v2})
        if not (system in _GOOD_NAMES and model in _GOOD_NAMES and finish_reason in _GOOD_NAMES):
            _check_name("gen_ai_system", system)
            _check_name("gen_ai_request_model", model)
            _check_name("finish_reason", finish_reason)
        if not (response_model in _GOOD_NAMES and response_type in _GOOD_NAMES):
            _check_name("gen_ai_response_model", response_model)
            _check_name("response_type", response_type)
        t.emitter.append(event)
        self.quality_score = quality_score

    # -- internals --------------------------------------------------------------------------------
    def _sources(self, sources: Iterable[Source | SourceLike]) -> Iterator[Source]:
        redact = self._tracker.redact
        for rank, hit in enumerate(sources, start=1):
            title = getattr(hit, "title", None)
            score = getattr(hit, "score", None)
            yield Source(
                doc_id=str(hit.doc_id),
                title=redact(nfc(title)) if isinstance(title, str) else None,
                score=float(score) if score is not None else None,
                rank=hit.rank if isinstance(hit, Source) else rank,
            )

    def _stage_elapsed_ms(self) -> float | None:
        """The current stage's elapsed time: the duration of an event emitted inside it without one of its own."""
        if self._current_stage is not None:
            return (time.perf_counter() - self._stage_started) * 1000.0
        return None
