"""Producer endpoints: ``POST /v1/events`` for events made outside this process, ``POST /v1/feedback`` for verdicts."""

from __future__ import annotations

import asyncio
import copy
import hmac
import itertools
import os
import re
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.requests import ClientDisconnect

from querylog._format import shortened
from querylog.logging.codec import DecodeError, from_builtins
from querylog.logging.events import (
    INVISIBLE_CHARS,
    MAX_AHEAD,
    MAX_ID_CHARS,
    SCHEMA_VERSION,
    AnyEvent,
    EventValidationError,
    QueryReceived,
    id_text_problem,
    name_text_problem,
    nfc,
    shows_nothing,
)
from querylog.logging.forget import ForgetList
from querylog.logging.schema import redact_fields
from querylog.logging.segments import EventLog, LogClosedError, LogReader, is_erased
from querylog.runtime import Runtime
from querylog.service.inflight import Hold, InflightBudget
from querylog.service.ingest_metrics import IngestCounts

__all__ = [
    "MAX_AHEAD",
    "NESTED_TOO_DEEPLY",
    "OLDEST_TS",
    "BatchRejectedError",
    "EventIngestor",
    "FeedbackAccepted",
    "FeedbackRequest",
    "IngestAccepted",
    "IngestRejected",
    "IngestResult",
    "IngestUnavailableError",
    "ItemError",
    "QueryRef",
    "RecentIds",
    "RecentQueries",
    "event_schema_components",
    "id_problem",
    "json_media",
    "media_type",
    "router",
    "tail_event_ids",
    "too_far_ahead",
    "too_old",
]

#: At most this many item errors are listed in a 422; `invalid_events` still counts them all.
MAX_REPORTED_ERRORS: Final = 100
#: Start-up reads at most this much of the log's tail to re-learn recent event ids.
SEED_MAX_BYTES: Final = 64 * 1024 * 1024
#: Lines of other writers that may follow a batch in the log when its write is read back (`EventIngestor._written`).
_WRITTEN_SLACK_LINES: Final = 10_000
#: How much of a segment `tail_event_ids` holds at once.
_TAIL_CHUNK: Final = 1024 * 1024

_log = structlog.get_logger("querylog.ingest")
_json: Final = msgspec.json.Decoder()
_AT_PATH: Final = re.compile(r"\s+-\s+at\s+`\$(?:\.(?P<path>[^`]*))?`\s*$")
_NAMED_FIELD: Final = re.compile(r"field `(?P<name>[^`]+)`")
#: msgspec's path of a map's key: "… - at `key` in `$.attributes`".
_AT_KEY: Final = re.compile(r"\s+-\s+at\s+`key`\s+in\s+`\$\.(?P<path>[^`]*)`\s*$")


# -- response models -------------------------------------------------------------------------------------
class IngestAccepted(BaseModel):
    accepted: int = Field(description="Events appended to the log (durable when this is returned).")
    duplicates: int = Field(description="Events skipped because their event_id was seen recently.")


class ItemError(BaseModel):
    index: int | None = Field(description="Position in `events`; null when the envelope itself is wrong.")
    field: str | None = Field(description="The field at fault (a path below the event), when known.")
    message: str


class IngestRejected(BaseModel):
    detail: list[ItemError] = Field(description=f"The first {MAX_REPORTED_ERRORS} problems, by index.")
    invalid_events: int = Field(description="How many events were invalid; none of the batch was appended.")


#: Names a producer gives (a release, a model, an error type…): metric label values, explorer filters and Loki
#: lines carry them, so they are held to the ids' length, and hold no control character.
NAME_FIELDS: Final = ("service", "env", "language", "release", "prompt_version", "intent", "stage", "error_type",
                      "gen_ai_system", "gen_ai_request_model", "gen_ai_response_model", "response_type",
                      "finish_reason")  # fmt: skip


def id_problem(event: AnyEvent) -> tuple[str, str] | None:
    """(field, why) for the first id or name of `event` a producer should not have sent, or None."""
    for name in ("event_id", "query_id", "session_id", "user_id", "trace_id"):
        value = getattr(event, name, None)
        if value is not None and (why := id_text_problem(name, value)) is not None:
            return name, why
    for name in NAME_FIELDS:
        value = getattr(event, name, None)
        if value is not None and (why := name_text_problem(value)) is not None:
            return name, why
    return None


def sources_problem(event: AnyEvent) -> tuple[str, str] | None:
    """("sources", why) when a search's sources are not best first (ranks increasing), or None. Checked where
    producers send events, not by the event class: a log written before this check still reads."""
    ranks = [source.rank for source in getattr(event, "sources", None) or ()]
    for before, after in itertools.pairwise(ranks):
        if after <= before:
            return "sources", f"must be listed best first, ranks increasing: got rank {before} then {after}"
    return None


#: Digits of a second past its microseconds (``.9999999``): an event keeps microseconds, cut, not rounded.
_PAST_MICROSECONDS: Final = re.compile(r"(\.\d{6})\d+")

#: The ids an event is found and joined by: taken in NFC at every boundary.
_ID_FIELDS: Final = ("event_id", "query_id", "session_id", "user_id", "trace_id")


def checked_id(value: str | None, info: ValidationInfo) -> str | None:
    """A request model's id field validator: `id_text_problem`'s rules, as a 422 naming the field; the id in NFC (a
    Korean id typed on macOS arrives decomposed: its feedback would find no query, its session split in two)."""
    if value is None:
        return None
    if (why := id_text_problem(info.field_name or "id", value)) is not None:
        raise ValueError(why)
    return nfc(value)


class ErrorMessage(BaseModel):
    detail: str


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query_id: str = Field(
        min_length=1, max_length=200, pattern=r"^\S+$", description="The `query_id` /v1/chat answered with."
    )
    score: Annotated[int, Field(strict=True, ge=-1, le=1, description="-1 bad, 0 neutral, 1 good.")]
    comment: str | None = Field(default=None, max_length=4000, description="Free text; redacted before storage.")
    session_id: str | None = Field(default=None, max_length=200, description="Defaults to the query's, if known.")
    user_id: str | None = Field(default=None, max_length=200, description="Defaults to the query's, if known.")

    _ids = field_validator("query_id", "session_id", "user_id")(checked_id)


class FeedbackAccepted(BaseModel):
    event_id: str = Field(description="The feedback_received event's id.")
    query_id: str
    trace_id: str | None = Field(description="The query's trace id, when this process answered it recently.")


# -- bounded memory ---------------------------------------------------------------------------------------
class RecentIds:
    """The last `capacity` ids added, as a set: a deque remembers their order so the oldest leaves first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def __contains__(self, item: str) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, item: str) -> None:
        if self.capacity == 0 or item in self._members:
            return
        if len(self._order) >= self.capacity:
            self._members.discard(self._order.popleft())
        self._order.append(item)
        self._members.add(item)

    def update(self, items: Iterable[str]) -> None:
        for item in items:
            self.add(item)


@dataclass(frozen=True, slots=True)
class QueryRef:
    """What feedback borrows from the query it judges. `user_id` is as the caller sent it (the tracker
    pseudonymizes it again when it emits the feedback event)."""

    session_id: str | None
    user_id: str | None
    trace_id: str | None


class RecentQueries:
    """The last `capacity` queries this process answered, by query_id. Thread-safe; least recent leaves first.

    With `forget` (``state/metrics-forget.jsonl``), the queries `querylog erase` removes leave too, before each
    look-up and at each `forget_erased` (the server calls it every minute): a feedback sent after the erasure would
    otherwise get the erased query's session and user ids back, into the log, the lake and Loki."""

    def __init__(self, capacity: int = 100_000, *, forget: ForgetList | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._refs: OrderedDict[str, QueryRef] = OrderedDict()
        self._lock = threading.Lock()
        self._forget = forget
        self._unreadable_said = False

    def forget_erased(self) -> int:
        """Drop the queries an erase listed since the last look; how many of them were held."""
        if self._forget is None:
            return 0
        with self._lock:
            try:
                erased = self._forget.new()
            except (OSError, ValueError) as exc:  # the state directory's disk: the next look tries again
                if not self._unreadable_said:
                    self._unreadable_said = True
                    _log.error("recent_queries_forget_unreadable", path=str(self._forget.path), error=str(exc))
                return 0
            return sum(self._refs.pop(query_id, None) is not None for query_id in erased)

    def remember(self, query_id: str, *, session_id: str | None, user_id: str | None, trace_id: str | None) -> None:
        with self._lock:
            self._refs[query_id] = QueryRef(session_id=session_id, user_id=user_id, trace_id=trace_id)
            self._refs.move_to_end(query_id)
            while len(self._refs) > self.capacity:
                self._refs.popitem(last=False)

    def get(self, query_id: str) -> QueryRef | None:
        self.forget_erased()
        with self._lock:
            return self._refs.get(query_id)


async def forget_erased_queries(recent: RecentQueries, interval_s: float = 60.0) -> None:
    """`recent.forget_erased` every `interval_s` until cancelled: an erase's list is kept an hour (`KEEP_S`), and
    a server that meanwhile answered no query and took no feedback must still have read it."""
    while True:
        await asyncio.sleep(interval_s)
        recent.forget_erased()


class _EventIdOnly(msgspec.Struct):
    event_id: str = ""


_id_decoder: Final = msgspec.json.Decoder(_EventIdOnly)


def tail_event_ids(
    reader: LogReader, limit: int, *, max_bytes: int = SEED_MAX_BYTES, chunk_bytes: int = _TAIL_CHUNK
) -> list[str]:
    """The event ids of the last `limit` whole lines of the log (oldest first), reading at most `max_bytes`.

    Segments are taken newest first by their creation-time names, across every writer, and each is read backwards
    a chunk at a time, so memory holds one chunk and the ids, whatever the size of the log.
    """
    newest_first: list[str] = []
    budget = max_bytes
    for path in reversed(reader.segments()):
        if len(newest_first) >= limit or budget <= 0:
            break
        try:
            with path.open("rb") as fh:
                end = fh.seek(0, os.SEEK_END)
                rest = b""  # the start of a line whose beginning is in the chunk before
                torn = True  # the file's last bytes may be a torn line: not an event yet
                while end > 0 and budget > 0 and len(newest_first) < limit:
                    start = max(0, end - min(chunk_bytes, budget))
                    fh.seek(start)
                    data = fh.read(end - start) + rest
                    budget -= end - start
                    end = start
                    lines = data.split(b"\n")
                    rest = lines[0] if start > 0 else b""  # maybe cut: completed by the next chunk back
                    whole = lines[1:] if start > 0 else lines
                    if torn:
                        whole = whole[:-1]  # after the last newline: empty, or a torn tail
                        torn = False
                    for line in reversed(whole):
                        if not line or is_erased(line):
                            continue
                        try:
                            event_id = _id_decoder.decode(line).event_id
                        except msgspec.DecodeError:
                            continue
                        if event_id:
                            newest_first.append(event_id)
                            if len(newest_first) >= limit:
                                break
        except FileNotFoundError:  # trimmed meanwhile
            continue
    newest_first.reverse()
    return newest_first


#: Start-up reads at most this many of the lake's newest files for ids the trimmed log no longer holds.
LAKE_SEED_MAX_FILES: Final = 256


def lake_event_ids(lake_dir: Path, limit: int, *, besides: set[str], max_files: int = LAKE_SEED_MAX_FILES) -> list[str]:
    """Up to `limit` event ids of the lake's newest files that are not in `besides` (the log's tail), oldest first:
    after the log is trimmed (`QUERYLOG_LOG_RETENTION`), the lake still holds what it had. A file it cannot read is
    passed over: the ids are a convenience, never a reason not to start."""
    import pyarrow.parquet as pq

    files = sorted((lake_dir / "events").glob("date=*/hour=*/*.parquet"), key=lambda p: p.parts[-3:], reverse=True)
    newest_first: list[str] = []
    for path in files[:max_files]:
        try:
            column = pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()
        except (OSError, ValueError):  # gone meanwhile (compaction), or damaged (pyarrow's ArrowInvalid)
            continue
        newest_first += [i for i in reversed(column) if i and i not in besides]
        if len(newest_first) >= limit:
            break
    return newest_first[:limit][::-1]


# -- ingestion --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


class BatchRejectedError(ValueError):
    """Some events of a batch are invalid; none was appended. `errors` names each by index and field."""

    def __init__(self, errors: list[ItemError], invalid: int) -> None:
        super().__init__(f"{invalid} invalid event(s) in the batch")
        self.errors = errors
        self.invalid = invalid


class IngestUnavailableError(RuntimeError):
    """The log could not take the batch (closed, or the disk refused the write); the client should retry. `written`:
    how many of its events the log holds all the same (a write the disk cut short), counted as accepted."""

    def __init__(self, message: str, *, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


#: msgspec's message for a value the schema's `Text` pattern refuses (the only pattern on a value).
_TEXT_REGEX: Final = "Expected `str` matching regex"


#: How much of a field's path and of a message an error item echoes: a producer's unknown field may be named by a
#: megabyte of text, and a 422 is no place to send it back (twice) to the producer.
MAX_ECHOED_CHARS: Final = 200


def _describe(exc: DecodeError) -> tuple[str | None, str]:
    """(field, message) from a codec error, each cut to `MAX_ECHOED_CHARS` (`querylog._format.shortened`)."""
    field, message = _described(exc)
    return (shortened(field, MAX_ECHOED_CHARS) if field is not None else None), shortened(message, MAX_ECHOED_CHARS)


def _described(exc: DecodeError) -> tuple[str | None, str]:
    """(field, message) from a codec error: msgspec puts the path in the message; our own checks raise
    `EventValidationError`, which msgspec wraps and which names the field itself."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, EventValidationError):
            return cause.field, str(cause).removeprefix(f"{cause.field}: ")
        cause = cause.__cause__
    message = str(exc)
    key = _AT_KEY.search(message)
    if key is not None:
        return key["path"], f"a key: {message[: key.start()]}"
    at = _AT_PATH.search(message)
    if at is not None:
        said = message[: at.start()]
        if said.startswith(_TEXT_REGEX):  # the schema's `Text` pattern: say what it means, not the regex
            said = "must hold a visible character (empty, blank or invisible characters only are refused)"
        return at["path"] or None, said
    named = _NAMED_FIELD.search(message)
    return (named["name"] if named else None), message


class EventIngestor:
    """Validates, redacts and appends producers' batches: all or nothing, idempotent by event_id.

    Idempotency window: the ids of the last `window` events this process ingested, seeded at start-up by
    `seed()` with the ids of the last `window` events in the log (any writer's). A batch re-sent while its
    ids are in that window adds nothing. Each process keeps its own window: behind a load balancer, route a
    producer's retries to the same process, or accept that a retry landing elsewhere may duplicate.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        service: str,
        env: str,
        redact: Callable[[str], str],
        pseudonymize_user_id: Callable[[str], str],
        window: int = 100_000,
        max_events: int = 10_000,
        max_bytes: int = 5 * 1024 * 1024,
        inflight_max_bytes: int = 64 * 1024 * 1024,
        namespace: str = "querylog",
        capture_answers: bool = True,
    ) -> None:
        """With `capture_answers` off (``QUERYLOG_CAPTURE_ANSWERS=0``), a response's answer text is left out and
        only its length kept, as the tracker does for `/v1/chat`."""
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        #: The bodies being read or ingested at once (`QUERYLOG_INGEST_INFLIGHT_MAX_BYTES`).
        self.inflight = InflightBudget(inflight_max_bytes)
        #: What the producer endpoints took and refused (`<ns>_ingest_*` on /metrics).
        self.counts = IngestCounts(namespace, inflight=lambda: self.inflight.held)
        self.log = log
        self.service = service
        self.env = env
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._redact = redact
        self._pseudonymize = pseudonymize_user_id
        self.capture_answers = capture_answers
        self._recent = RecentIds(window)
        # One batch at a time from check to flush: a concurrent retry of the same batch waits, then sees its ids.
        self._lock = threading.Lock()

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> EventIngestor:
        s = runtime.settings
        return cls(
            runtime.log,
            service=s.service,
            env=s.env,
            redact=runtime.redactor.redact,
            pseudonymize_user_id=runtime.tracker.pseudonymize_user_id,
            window=s.ingest_dedup_window,
            max_events=s.ingest_max_events,
            max_bytes=s.ingest_max_bytes,
            inflight_max_bytes=s.ingest_inflight_max_bytes,
            namespace=s.metrics_namespace,
            capture_answers=s.capture_answers,
        )

    @property
    def window(self) -> int:
        return self._recent.capacity

    def seed(self, reader: LogReader, lake_dir: Path | None = None) -> int:
        """Re-learn recent event ids from the log's tail, so a retry straddling a restart still adds nothing; and
        from the lake's newest files (`lake_dir`) when the log holds fewer than the window (trimmed)."""
        ids = tail_event_ids(reader, self.window) if self.window else []
        if lake_dir is not None and len(ids) < self.window:
            ids = lake_event_ids(lake_dir, self.window - len(ids), besides=set(ids)) + ids
        with self._lock:
            self._recent.update(ids)
        return len(ids)

    def validate(self, items: list[Any]) -> list[AnyEvent]:
        """Every item as an event, or `BatchRejectedError` listing the bad ones."""
        events: list[AnyEvent] = []
        errors: list[ItemError] = []
        invalid = 0
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                invalid += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    message = f"expected an object, got {_json_type(item)}"
                    errors.append(ItemError(index=index, field=None, message=message))
                continue
            try:
                event = from_builtins(self.prepare(item))
            except DecodeError as exc:
                invalid += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    field, message = _describe(exc)
                    errors.append(ItemError(index=index, field=field, message=message))
                continue
            problem = too_far_ahead(event) or too_old(event)
            field = "ts" if problem is not None else None
            if problem is None and isinstance(event, QueryReceived) and shows_nothing(event.query_text):
                field, problem = "query_text", "must hold a visible character, not control characters only"
            if problem is None and (bad := id_problem(event) or sources_problem(event)) is not None:
                field, problem = bad
            if problem is not None:
                invalid += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append(ItemError(index=index, field=field, message=problem))
                continue
            events.append(event)
        if invalid:
            raise BatchRejectedError(errors, invalid)
        return events

    def ingest(self, items: list[Any]) -> IngestResult:
        """Validate the batch, append its new events and flush them: durable against a process crash on return."""
        if len(items) > self.max_events:
            raise ValueError(f"{len(items)} events in one batch; at most {self.max_events}")
        return self.append(self.validate(items))

    def append(self, events: Sequence[AnyEvent], *, bounded: bool = True) -> IngestResult:
        """Append the events whose ids are not in the window and flush them (they must have been built from
        `prepare`d fields: redacted and pseudonymized). Durable against a process crash on return. Not `bounded`:
        the caller bounded the request itself (a trace export, by its spans)."""
        if bounded and len(events) > self.max_events:
            raise ValueError(f"{len(events)} events in one batch; at most {self.max_events}")
        with self._lock:
            fresh: list[AnyEvent] = []
            in_batch: set[str] = set()
            for event in events:
                if event.event_id in self._recent or event.event_id in in_batch:
                    continue
                in_batch.add(event.event_id)
                fresh.append(event)
            refused_before = self.refused_writes()
            try:
                for event in fresh:
                    self.log.append(event)
                self.log.flush()
            except LogClosedError as exc:
                raise IngestUnavailableError("the event log is closed (the server is shutting down)") from exc
            if self.refused_writes() > refused_before:
                # The log counts and drops what the disk refuses; a write cut short keeps the whole lines before the
                # cut. Those are remembered, so that the retry adds only the rest.
                written = self.written(in_batch)
                self._recent.update(written)
                if len(written) < len(in_batch):
                    raise IngestUnavailableError(
                        f"the event log could not write to disk ({len(in_batch) - len(written)} of {len(in_batch)} "
                        "events not written); retry later: those written are then counted as duplicates",
                        written=len(written),
                    )
            self._recent.update(in_batch)
        result = IngestResult(accepted=len(fresh), duplicates=len(events) - len(fresh))
        _log.info("events_ingested", accepted=result.accepted, duplicates=result.duplicates)
        return result

    def written(self, event_ids: set[str]) -> set[str]:
        """Which of `event_ids` the log holds, read back from its tail (this batch's lines and any written since)."""
        tail = tail_event_ids(LogReader(self.log.directory), len(event_ids) + _WRITTEN_SLACK_LINES)
        return event_ids.intersection(tail)

    def refused_writes(self) -> int:
        """Events the log dropped for want of a disk (a retry may succeed), by its telemetry. Not those it could
        not encode: decoded from JSON, a batch's events always encode, and another request's are not this one's."""
        dropped = self.log.telemetry.snapshot().dropped
        return dropped.get("disk_write_failed", 0) + dropped.get("buffer_full", 0)

    def prepare(self, item: dict[str, Any]) -> dict[str, Any]:
        """A producer's event fields as the log may keep them: service and env defaulted, every text NFC and
        redacted, the user id pseudonymized."""
        obj = dict(item)
        if isinstance(ts := obj.get("ts"), str):  # cut to the microsecond, not rounded into the next second (or day)
            obj["ts"] = _PAST_MICROSECONDS.sub(r"\1", ts, count=1)
        obj.setdefault("service", self.service)
        obj.setdefault("env", self.env)
        answer = obj.get("answer_text")
        if isinstance(answer, str) and obj.get("event_type") == "response_generated":
            # The answer's length as the user got it, before redaction and the cut (the tracker's rule), unless the
            # producer said; and its text only where answers may be kept.
            obj.setdefault("answer_chars", len(answer))
            if not self.capture_answers:
                del obj["answer_text"]
        # Every text a producer controls (the schema lists them: query, answer, error, comment, tags, attribute values,
        # source titles) is redacted and NFC-normalised like the tracker's, before any sink.
        redact_fields(obj, self._redact, nfc)
        for name in _ID_FIELDS:  # as the other endpoints take ids: in NFC, so that a decomposed one joins its query
            if isinstance(value := obj.get(name), str):
                obj[name] = nfc(value)
        for name in NAME_FIELDS:  # a label value and a filter: one spelling of a name (NFC, no spaces around it)
            if isinstance(value := obj.get(name), str):
                obj[name] = nfc(value).strip()
        user_id = obj.get("user_id")
        if isinstance(user_id, str) and user_id:
            obj["user_id"] = self._pseudonymize(user_id)
        return obj


#: The oldest time an event may carry: a backfill goes back years, not to year 1 (Go's zero ``time.Time``, a
#: producer's unset clock field), which no chart, report or Loki can place.
OLDEST_TS: Final = datetime(1970, 1, 1, tzinfo=UTC)


def too_old(event: AnyEvent) -> str | None:
    """Why `event` is refused for its time (before `OLDEST_TS`), or None."""
    if event.ts >= OLDEST_TS:
        return None
    return f"{event.ts.isoformat()} is before 1970-01-01: an unset time (Go's zero time is year 1)?"


def too_far_ahead(event: AnyEvent, now: datetime | None = None) -> str | None:
    """Why `event` is refused for its time (more than `MAX_AHEAD` past this server's clock), or None."""
    now = now or datetime.now(UTC)
    if event.ts <= now + MAX_AHEAD:
        return None
    return (
        f"{event.ts.isoformat()} is more than {MAX_AHEAD.seconds // 60} minutes ahead of this server's clock "
        f"({now:%Y-%m-%dT%H:%M:%SZ}): is the producer's clock right?"
    )


# -- HTTP ------------------------------------------------------------------------------------------------
def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.querylog
    return runtime


def _ingestor(request: Request) -> EventIngestor:
    ingestor: EventIngestor = request.app.state.ingestor
    return ingestor


def _recent_queries(request: Request) -> RecentQueries:
    recent: RecentQueries = request.app.state.recent_queries
    return recent


_bearer: Final = HTTPBearer(
    auto_error=False,
    scheme_name="IngestToken",
    description="The value of QUERYLOG_INGEST_TOKEN. Required only when the server sets one.",
)


def require_ingest_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 without a bearer token, 403 with a wrong one; open when QUERYLOG_INGEST_TOKEN is unset."""
    expected = _runtime(request).settings.ingest_token
    if expected is None:
        return
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <QUERYLOG_INGEST_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Constant-time comparison: the time taken must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the bearer token is not this server's ingest token")


#: A JSON escape of a UTF-16 surrogate: text only in a pair (an emoji), never alone.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: The 400 for a body nested past what the parser takes (a thousand levels; an event needs three).
NESTED_TOO_DEEPLY: Final = "malformed JSON: nested too deeply"

#: How much of an oversized body is read and thrown away before the 413 is sent. A client that sends its whole
#: body before reading the answer (Python's urllib, several SDKs) would otherwise meet a connection reset, not
#: the 413: the server closing a socket with unread data makes the kernel reset it. Past this, the server stops
#: reading (and such a client sees the reset), so a huge upload cannot keep a worker busy.
DRAIN_MAX_BYTES: Final = 64 * 1024 * 1024


async def _read_body(request: Request, limit: int, hold: Hold | None = None) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit`: by Content-Length before keeping any
    of it, or by counting streamed bytes (chunked uploads), so an oversized body is never held in memory. The
    rest of an oversized body is read and discarded (up to `DRAIN_MAX_BYTES`) so that every client sees the 413.
    A gzip body (``Content-Encoding: gzip``) is inflated, to `limit` bytes at most, and `hold` grown to its size
    (a 503 when the budget cannot take it now); any other encoding is a 415."""
    encoding = _readable_encoding(request)
    body = await _read_raw_body(request, limit)
    # Inflated on a worker thread: a few kilobytes of gzip may hold megabytes, and the event loop answers every
    # other request meanwhile.
    if encoding != "gzip":
        return body
    inflated = await run_in_threadpool(_inflate, body, limit)
    if hold is not None and not hold.grow_to(len(inflated)):  # larger than guessed, and the budget is full now
        raise _busy(hold.budget)
    return inflated


#: Charsets a JSON body may name: UTF-8 (RFC 8259), and ASCII, which is UTF-8.
_UTF8_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _readable_encoding(request: Request) -> str:
    """The body's Content-Encoding, once it is one this server reads, and a JSON body's charset UTF-8: a 415
    otherwise, before the body is read (or any of the budget taken) as it could not be understood."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Content-Encoding {encoding!r}: send gzip or none")
    kind, charset = media_type(request), _charset(request)
    json_body = kind == "application/json" or kind.endswith("+json")
    if json_body and charset is not None and charset not in _UTF8_CHARSETS:  # read as UTF-8, latin-1 is garbled
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"charset {charset!r}: send UTF-8")
    return encoding


#: A body past this is parsed on a worker thread (20 MiB of JSON takes a tenth of a second or more): the event
#: loop answers every other request meanwhile. A smaller one costs less than the hop to a thread.
OFF_LOOP_BYTES: Final = 256 * 1024


#: Gzip members a body may hold (a Collector sends one; a file appended to, a few): each is inflated on its own.
MAX_GZIP_MEMBERS: Final = 64
_INFLATE_CHUNK: Final = 64 * 1024


def _inflate(body: bytes, limit: int) -> bytes:
    """`body` inflated: every gzip member of it, in order (as gzip, Go and the Collector read it). A body cut short
    (its last member has no end) or with bytes after it that are no member is refused whole: taking the part that
    inflates would lose the rest and answer that all was taken. Fed in chunks, so that what is left after a member
    (which zlib copies) stays small whatever the body's size."""
    out, view, fed, members = bytearray(), memoryview(body), 0, 1
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    rest: bytes | memoryview = b""
    while rest or fed < len(body):
        if not rest:
            rest, fed = view[fed : fed + _INFLATE_CHUNK], fed + _INFLATE_CHUNK
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the gzip body does not inflate: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"the body inflates past {limit} bytes (QUERYLOG_INGEST_MAX_BYTES): send smaller batches",
            )
        rest = inflater.unused_data if inflater.eof else b""
        if inflater.eof and (rest or fed < len(body)):  # another member follows
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST,
                    f"the gzip body does not inflate: more than {MAX_GZIP_MEMBERS} gzip members; send one",
                )
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    if body and not inflater.eof:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the gzip body does not inflate: it ends before its gzip stream does"
        )
    return bytes(out)


#: How a request whose client went away before sending its whole body is counted on /metrics
#: (`_ingest_requests_refused_total{status}`), as nginx logs it ("client closed request"): no answer reaches it.
CLIENT_GONE: Final = 499


class ClientGoneError(HTTPException):
    """The client went away before sending its whole body: answered 400 (to no one), counted as `CLIENT_GONE`."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_400_BAD_REQUEST, "the client went away before sending its whole body")


def counted_status(exc: HTTPException) -> int:
    """The status a refused producer request is counted under: its answer's, or `CLIENT_GONE`."""
    return CLIENT_GONE if isinstance(exc, ClientGoneError) else exc.status_code


async def _read_raw_body(request: Request, limit: int) -> bytes:
    try:
        return await _read_stream(request, limit)
    except ClientDisconnect:  # logged by Starlette as an application error, with a traceback, and not counted
        raise ClientGoneError() from None


async def _read_stream(request: Request, limit: int) -> bytes:
    too_large = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"request body over {limit} bytes (QUERYLOG_INGEST_MAX_BYTES): send smaller batches",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Content-Length is not a number") from None
        if length > limit:
            await _discard_body(request)
            raise too_large
    body = bytearray()
    seen = 0
    async for chunk in _chunks(request):
        seen += len(chunk)
        if seen <= limit:
            body += chunk
        elif seen > DRAIN_MAX_BYTES:
            break
        elif body:
            body = bytearray()  # over the limit: nothing more is kept, the rest is only read (DRAIN_MAX_BYTES)
    if seen > limit:
        raise too_large
    return bytes(body)


#: A body that stops arriving (a stalled client, a half-open connection) would hold its share of the budget, and a
#: worker, for good: refused (408) after this long without a byte, or this long in all.
BODY_IDLE_S: Final = 15.0
BODY_TOTAL_S: Final = 120.0


class BodyStalledError(HTTPException):
    """The body stopped arriving: answered 408."""

    def __init__(self, why: str) -> None:
        super().__init__(status.HTTP_408_REQUEST_TIMEOUT, f"the request body {why}: send it again")


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    """`request.stream()`, refused (`BodyStalledError`) when it stalls past `BODY_IDLE_S` or `BODY_TOTAL_S`."""
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + BODY_TOTAL_S
    while True:
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(0.0, min(BODY_IDLE_S, left)))
        except StopAsyncIteration:
            return
        except TimeoutError:
            why = f"took over {BODY_TOTAL_S:.0f} s" if left <= BODY_IDLE_S else f"stopped for {BODY_IDLE_S:.0f} s"
            raise BodyStalledError(why) from None
        yield chunk


async def _discard_body(request: Request) -> None:
    """Read the body and throw it away, if its Content-Length is within `DRAIN_MAX_BYTES` (see there). Not a client
    that waits for ``100 Continue`` before it sends one: it sends nothing, and reads the answer."""
    try:
        declared = int(request.headers.get("content-length", ""))
    except ValueError:
        return
    if declared > DRAIN_MAX_BYTES or request.headers.get("expect", "").lower() == "100-continue":
        return
    try:
        async for _chunk in _chunks(request):
            pass
    except ClientDisconnect:
        raise ClientGoneError() from None
    except BodyStalledError:
        return  # the answer meant goes out all the same


#: How much larger than its bytes a gzip body is held to be until it is inflated: JSON of events compresses about
#: five to ten times. A guess too small is mended once inflated (`Hold.grow_to`); the byte limit caps it.
GZIP_GUESS: Final = 10


@asynccontextmanager
async def holding_body(request: Request, ingestor: EventIngestor) -> AsyncIterator[Hold]:
    """Hold the request's share of the ingestor's `InflightBudget` while the block reads and ingests its body: its
    Content-Length (a gzip body's times `GZIP_GUESS`, grown to its size once inflated), or the byte limit for a
    chunked body. A 503 (retry after a second) when it does not fit now."""
    gzipped = _readable_encoding(request) == "gzip"  # a 415 takes none of the budget
    declared = request.headers.get("content-length", "")
    wanted = int(declared) * (GZIP_GUESS if gzipped else 1) if declared.isdigit() else ingestor.max_bytes
    if declared.isdigit() and int(declared) > ingestor.max_bytes:
        wanted = 0  # refused (413) unread: nothing of it is kept
    hold = ingestor.inflight.hold(min(wanted, ingestor.max_bytes))
    if hold is None:
        await _discard_body(request)
        raise _busy(ingestor.inflight)
    try:
        yield hold
    finally:
        hold.release()


def _busy(budget: InflightBudget) -> HTTPException:
    detail = (
        f"the server is busy reading {budget.held:,} bytes of other batches "
        f"(QUERYLOG_INGEST_INFLIGHT_MAX_BYTES {budget.cap:,}): retry in a moment"
    )
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "1"})


def _batch_items(payload: object) -> list[Any]:
    """The `events` array of a batch, or `BatchRejectedError` (index null) when the envelope is wrong."""
    if not isinstance(payload, dict):
        message = f'expected an object {{"events": [...]}}, got {_json_type(payload)}'
        raise BatchRejectedError([ItemError(index=None, field=None, message=message)], invalid=0)
    unknown = sorted(set(payload) - {"events"})
    if unknown:
        field = shortened(unknown[0], MAX_ECHOED_CHARS)
        message = f'unknown field `{field}`; a batch is {{"events": [...]}}'
        raise BatchRejectedError([ItemError(index=None, field=field, message=message)], invalid=0)
    items = payload.get("events")
    if not isinstance(items, list):
        message = f"expected an array of events, got {_json_type(items)}"
        raise BatchRejectedError([ItemError(index=None, field="events", message=message)], invalid=0)
    return items


def event_schema_components() -> dict[str, Any]:
    """JSON Schemas of every event type, for the OpenAPI document's ``components/schemas``."""
    _, components = msgspec.json.schema_components((AnyEvent,), ref_template="#/components/schemas/{name}")
    components = copy.deepcopy(components)
    for schema in components.values():
        props = schema.get("properties", {})
        for name, what in (("service", "QUERYLOG_SERVICE"), ("env", "QUERYLOG_ENV")):
            if name in props:  # the server fills in its own, not the struct's default
                props[name].pop("default", None)
                props[name]["description"] = f"Defaults to the server's {what}."
        if "ts" in props:
            props["ts"].update(format="date-time", description="RFC 3339 with a UTC offset; defaults to now.")
        if "event_id" in props:
            props["event_id"]["description"] = "Makes retries idempotent; a new UUIDv7 when absent."
        if "schema_version" in props:  # the classes read any version a log may hold; a producer writes these
            props["schema_version"].update(maximum=SCHEMA_VERSION, description=f"1 to {SCHEMA_VERSION}")
        for name in ("event_id", "query_id", "session_id", "user_id", "trace_id"):  # `id_problem`'s rules
            if name not in props:
                continue
            branches = props[name].get("anyOf", [props[name]])
            text = next(branch for branch in branches if branch.get("type") == "string")
            text.update(maxLength=MAX_ID_CHARS, pattern=_ID_PATTERNS[name in ("event_id", "query_id")])
        for name in NAME_FIELDS:  # and its rules for names
            if name not in props:
                continue
            branches = props[name].get("anyOf", [props[name]])
            text = next(branch for branch in branches if branch.get("type") == "string")
            text.update(maxLength=MAX_ID_CHARS, pattern=_NAME_PATTERN)
    return components


#: `id_problem`'s rules as JSON Schema patterns: no control character and not blank (something shown: not only
#: whitespace and characters that draw nothing); an event's and a query's id, no whitespace at all. A name, as an id.
_SHOWN: Final = f"(?=[\\s\\S]*[^\\s{INVISIBLE_CHARS}])"
_NAME_PATTERN: Final = f"^{_SHOWN}[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_ID_PATTERNS: Final = {
    False: _NAME_PATTERN,
    True: f"^{_SHOWN}[^\\s\\u0000-\\u001f\\u007f-\\u009f]+$",
}


def _events_request_schema() -> dict[str, Any]:
    (event,), _ = msgspec.json.schema_components((AnyEvent,), ref_template="#/components/schemas/{name}")
    example = {
        "events": [
            {
                "event_type": "query_received",
                "event_id": "0190d6a4-6f1e-7c3a-9b1e-1a2b3c4d5e6f",
                "ts": "2025-01-31T09:00:00Z",
                "query_id": "q-1",
                "session_id": "s-1",
                "query_text": "네이버 주가 전망은?",
            },
            {
                "event_type": "feedback_received",
                "event_id": "0190d6a4-7a02-7c3a-9b1e-1a2b3c4d5e70",
                "query_id": "q-1",
                "score": 1,
                "comment": "정확해요",
            },
        ]
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["events"],
                        "additionalProperties": False,
                        "properties": {"events": {"type": "array", "items": event}},
                    },
                    "example": example,
                }
            },
        }
    }


router = APIRouter(prefix="/v1", tags=["producers"])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    summary="Append a batch of events from an outside producer",
    responses={
        400: {"model": ErrorMessage, "description": "The body is not JSON"},
        401: {"model": ErrorMessage, "description": "No bearer token, and the server requires one"},
        403: {"model": ErrorMessage, "description": "The bearer token is wrong"},
        413: {"model": ErrorMessage, "description": "Body over QUERYLOG_INGEST_MAX_BYTES or too many events"},
        415: {
            "model": ErrorMessage,
            "description": "A Content-Type other than JSON, or a Content-Encoding other than gzip",
        },
        422: {"model": IngestRejected, "description": "Invalid events: each listed by index and field"},
        503: {"model": ErrorMessage, "description": "The log cannot take events now; retry"},
    },
    openapi_extra=_events_request_schema(),
)
async def ingest_events(
    request: Request, _auth: Annotated[None, Depends(require_ingest_token)]
) -> IngestAccepted | JSONResponse:
    """Validate every event against the schema, redact its text, and append the batch to the log, all or
    nothing. Events whose `event_id` was ingested recently are skipped and counted as duplicates, so a batch
    can be retried safely. `service` and `env` default to the server's. Durable when 202 is returned."""
    ingestor = _ingestor(request)
    try:
        json_media(request)
        async with holding_body(request, ingestor) as hold:
            answer = await _ingest_events(request, ingestor, hold)
    except HTTPException as exc:
        ingestor.counts.request_refused("events", counted_status(exc))
        raise
    if isinstance(answer, JSONResponse):
        ingestor.counts.request_refused("events", answer.status_code)
    else:
        ingestor.counts.events("events", "accepted", answer.accepted)
        ingestor.counts.events("events", "duplicate", answer.duplicates)
    return answer


def _charset(request: Request) -> str | None:
    """The ``charset`` parameter of the request's Content-Type, lower case; None when it names none."""
    for parameter in request.headers.get("content-type", "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'").lower()
    return None


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (``charset``); empty when it names none."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def json_media(request: Request) -> None:
    """A 415 unless the body is sent as JSON (a batch, a question, a verdict): said as such, not as a 422 about a body
    read as a string. A web page may send a form or text/plain to 127.0.0.1 without asking first (no CORS
    preflight); JSON it cannot. Refused before the body is read, as the server could not read it."""
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {kind or '(none)'!r}: send the body as application/json",
        )


async def _ingest_events(request: Request, ingestor: EventIngestor, hold: Hold) -> IngestAccepted | JSONResponse:
    body = await _read_body(request, ingestor.max_bytes, hold)
    items: list[Any] = []
    body = body.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, which JSON readers may ignore (RFC 8259)
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:  # UTF-16 or UTF-32, which msgspec misreads
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "malformed JSON: the body is UTF-16 or UTF-32; send UTF-8")
    try:
        payload = _json.decode(body) if len(body) <= OFF_LOOP_BYTES else await run_in_threadpool(_json.decode, body)
    except msgspec.DecodeError as exc:
        detail = f"malformed JSON: {str(exc).removeprefix('JSON is malformed: ')}"
        if (surrogate := _SURROGATE_ESCAPE.search(body)) is not None:  # msgspec says "truncated" for a lone one
            detail = f"malformed JSON: {surrogate.group().decode()} is half of a surrogate pair, not text: send UTF-8"
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail) from None
    except RecursionError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, NESTED_TOO_DEEPLY) from None
    try:
        items = _batch_items(payload)
        if len(items) > ingestor.max_events:
            ingestor.counts.events("events", "refused", len(items))  # counted, as a 422's are: the batch was read
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{len(items)} events in one batch; at most {ingestor.max_events} (QUERYLOG_INGEST_MAX_EVENTS): "
                "split it",
            )
        # Validation and redaction of thousands of events is CPU work: keep it off the event loop.
        result = await run_in_threadpool(ingestor.ingest, items)
    except BatchRejectedError as exc:
        _log.warning("events_rejected", invalid=exc.invalid)
        ingestor.counts.events("events", "refused", len(items))  # all or nothing: the valid ones too
        rejected = IngestRejected(detail=exc.errors, invalid_events=exc.invalid)
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content=rejected.model_dump())
    except IngestUnavailableError as exc:
        ingestor.counts.events("events", "accepted", exc.written)  # in the log: a retry finds them duplicates
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}) from None
    return IngestAccepted(accepted=result.accepted, duplicates=result.duplicates)


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FeedbackAccepted,
    summary="Record a user's verdict on an answer",
    dependencies=[Depends(json_media)],
    responses={
        413: {"model": ErrorMessage, "description": "Body over 1 MiB"},
        415: {"model": ErrorMessage, "description": "A Content-Type other than JSON"},
        422: {"description": "The body does not match FeedbackRequest"},
        503: {"model": ErrorMessage, "description": "The log could not write the verdict (a full disk); retry"},
    },
)
def feedback(body: FeedbackRequest, request: Request) -> FeedbackAccepted:
    """Emit a `feedback_received` event for `query_id` (durable on return). Any query id is accepted: the
    lake joins feedback to its query by id, and feedback on a query this process did not answer recently (an
    earlier run, another worker) is as real as any. For queries this process answered recently, the
    session, user and trace ids are filled in from the query when not given."""
    known = _recent_queries(request).get(body.query_id)
    ingestor = _ingestor(request)
    refused_before = ingestor.refused_writes()
    event = _runtime(request).tracker.feedback(
        body.query_id,
        body.score,
        comment=body.comment,
        session_id=body.session_id or (known.session_id if known else None),
        user_id=body.user_id or (known.user_id if known else None),
        trace_id=known.trace_id if known else None,
    )
    # The log drops what the disk refuses (and counts it): a verdict not written is no 202, but a retry's 503.
    if ingestor.refused_writes() > refused_before and not ingestor.written({event.event_id}):
        detail = "the event log could not write the feedback to disk; retry later"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "5"})
    return FeedbackAccepted(event_id=event.event_id, query_id=event.query_id, trace_id=event.trace_id)
