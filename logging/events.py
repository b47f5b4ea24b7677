"""The event model, schema v3: one frozen, typed event per step of a query's life.

These classes are the one schema definition. The lake's Arrow schema, the SQL views' columns, the Loki line
fields and the ingest API's JSON Schema are derived from them (`querylog.logging.schema`), and tests hold every
derived form to them. Schema history (docs/schema.md):

- v1: the query's path and timings (text, intent, search counts, model and tokens, failures, feedback).
- v2: the whole answer. `answer_text`, `response_type`, `finish_reason`, `ttft_ms`, `cost_usd`, cache-read and
  reasoning token counts and the response model on `response_generated`; `sources` and per-backend timings on
  `search_completed`; `release`, `prompt_version`, `tags` and `attributes` on every event. Every v2 field is
  optional and null when absent, so a v1 event reads as a v2 one with nulls: nothing is invented.
- v3: a search's `result_count` may be null (the producer could not tell: an OpenTelemetry retrieval span that lists
  no document). A v2 event reads as a v3 one as it is. Events are written as the oldest version that holds them
  (`WRITTEN_VERSION`): such a search as v3, which a v2 reader refuses; every other event as v2, which it reads.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeAlias, TypeVar

import msgspec
import uuid_utils

__all__ = [
    "ADDITIVE_SINCE",
    "COUNT_MAX",
    "EVENT_TYPES",
    "INVISIBLE_CHARS",
    "MAX_AHEAD",
    "MAX_ANSWER_CHARS",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_ID_CHARS",
    "MAX_SOURCES",
    "MAX_TAGS",
    "SCHEMA_VERSION",
    "UNCLASSIFIED",
    "WRITTEN_VERSION",
    "AnyEvent",
    "Event",
    "EventValidationError",
    "FeedbackReceived",
    "IntentClassified",
    "Prechecked",
    "QueryCompleted",
    "QueryFailed",
    "QueryReceived",
    "ResponseGenerated",
    "SearchCompleted",
    "Source",
    "checked_attributes",
    "checked_tags",
    "clean_text",
    "id_text_problem",
    "is_blank",
    "level_of",
    "name_text_problem",
    "new_event_id",
    "nfc",
    "prechecked",
    "redacted_tag",
    "shows_nothing",
    "utc_now",
]

#: The newest schema this release reads and writes. v2 added optional fields (the answer, its sources, release,
#: prompt version, tags…); v3 lets a search's `result_count` be null (unknown, as an OpenTelemetry retrieval that
#: lists no document leaves it), which a v2 reader refuses: a lake commit says it reads v3, so a release that reads
#: only v2 is seen leading the lake (docs/schema.md).
SCHEMA_VERSION: Final = 3
#: The version an event is written as: the oldest that holds it. Every event holds in v2 but a search whose count
#: is unknown, which is v3 (`SearchCompleted`): a release that reads v2 still reads all the others.
WRITTEN_VERSION: Final = 2
#: The oldest schema version whose events read as current ones field for field: every version since only added
#: optional fields or admitted more values. A reader that skips the upcasters (the Parquet fast path) may take
#: lines from this version on.
ADDITIVE_SINCE: Final = 1
#: The intent of a query that never got one (still in flight, or failed before it was classified), in every view:
#: the lake's frames, the metrics' ``intent`` label, reconcile. The classifier's own ``unknown`` is an answer (it
#: could not tell); this is the absence of one, and the two are never counted together.
UNCLASSIFIED: Final = "unclassified"

#: Largest query text an event carries, in characters. Longer text is cut, with a marker, so that one
#: pasted document can never make a log line that no sink accepts (Loki's own limit is 256 KiB a line).
MAX_TEXT_CHARS: Final = 16_384
TRUNCATION_MARKER: Final = "…[truncated]"
#: The question of a query whose producer did not capture it (an OpenTelemetry instrumentation recording no
#: content): a text no query asked, so never the same question as another (`querylog.logging.reformulation`).
NOT_CAPTURED: Final = "[input not captured by the instrumentation]"
#: Largest answer text kept, in characters (cut with the marker, never refused).
MAX_ANSWER_CHARS: Final = 16_384
#: At most this many sources per search event; more are cut, and `sources_dropped` says how many.
MAX_SOURCES: Final = 20
#: A source title is cut (with the marker) past this many characters.
MAX_TITLE_CHARS: Final = 300
#: `tags`: at most this many, each a non-empty string of at most `MAX_TAG_CHARS` characters.
MAX_TAGS: Final = 16
MAX_TAG_CHARS: Final = 64
#: `attributes`: at most this many keys (names like ``plan`` or ``ab.bucket``), at most `MAX_ATTRIBUTE_BYTES`
#: of UTF-8 over all keys and values. Bounded so that one producer cannot make every line of the log heavy.
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_BYTES: Final = 4096
_ATTRIBUTE_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")

Status: TypeAlias = Literal["completed", "failed"]


class EventValidationError(ValueError):
    """An event field holds a value the schema does not allow. `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


#: An int stored narrower than the lake's default int32 (the `arrow` extra is read by querylog.logging.schema).
Int8: TypeAlias = Annotated[int, msgspec.Meta(extra={"arrow": "int8"})]
Int16: TypeAlias = Annotated[int, msgspec.Meta(extra={"arrow": "int16"})]
#: The largest count the lake's int32 columns hold: a token count past it is refused at ingest, never taken and
#: then refused by every Parquet write (querylog.logging.schema requires every int field to state its bounds).
COUNT_MAX: Final = 2**31 - 1
INT16_MAX: Final = 2**15 - 1
#: The longest duration an event takes (about 31 years, in ms), and the largest cost of one response: past them a
#: value is a unit mistake or garbage, and one such value would turn a counter that never goes back to +Inf.
MAX_MILLIS: Final = 1e12
MAX_COST_USD: Final = 1e9
# The value rules msgspec can state, checked in C wherever a line or a payload is decoded (the codec, the ingest
# API, the Loki line types derived from these classes) and published in the ingest API's JSON Schema. Events
# made in Python are checked by their __post_init__, which holds these rules and the ones no annotation can
# state (tests/logging/test_events.py holds the two to agreement).
NonEmpty: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]
#: Characters that draw nothing (soft hyphen, zero-width space and joiners, word joiner, BOM): a question of only
#: these and whitespace shows as nothing, and search folds them away (`analytics/_search_text.py`).
INVISIBLE_CHARS: Final = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
# Not blank: a character that shows. Checked where a line is decoded (the codec, the Loki line), as the event's
# `__post_init__` checks it when one is made.
Text: TypeAlias = Annotated[str, msgspec.Meta(pattern=f"[^\\s{INVISIBLE_CHARS}]")]
Millis: TypeAlias = Annotated[float, msgspec.Meta(ge=0, le=MAX_MILLIS)]
Count: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=COUNT_MAX)]
Fraction: TypeAlias = Annotated[float, msgspec.Meta(ge=0, le=1)]
AttributeKey: TypeAlias = Annotated[str, msgspec.Meta(pattern=f"^{_ATTRIBUTE_KEY.pattern}$")]


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


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as an event stores it: NFC, a lone surrogate made U+FFFD, cut with the marker past `limit`
    characters. Returns `text` itself when it needs nothing."""
    text = nfc(text)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (possible from Python callers; HTTP input refuses them) is not text and cannot be
            # stored as UTF-8: it becomes U+FFFD, as any UTF-8 decoder would show it.
            text = _SURROGATE.sub("\ufffd", text)
    if len(text) > limit:
        text = text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


_BLANK: Final = re.compile(f"[\\s{INVISIBLE_CHARS}]*")
_INVISIBLE: Final = frozenset(INVISIBLE_CHARS)


#: Ids (up to 200 characters, as /v1/chat and /v1/feedback take them): no control character, and not blank. The
#: ids a query is looked up by (its own, and each event's) take no whitespace at all, as /v1/feedback asks. Held at
#: the boundaries that take ids (the tracker, the ingest endpoints), not when a log line is read: lines written
#: before these rules still read.
MAX_ID_CHARS: Final = 200
#: How far ahead of the server's clock an event's `ts` may be where producers send events (the ingest endpoints).
#: Past it, a producer's clock is wrong: its events are refused with a clear error rather than kept where charts
#: would reach into the future (and, past 10 minutes, Loki's `creation_grace_period`, Loki refuses them). Kept well
#: inside the metrics' staleness (5 minutes, in event time): a skewed event ages the other producers' open queries
#: by as much as it is ahead.
MAX_AHEAD: Final = timedelta(minutes=2)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


#: The ids held to no whitespace, and why.
_WHY_NO_SPACE: Final = {"query_id": "feedback finds a query by it", "event_id": "as query_id: one token, as UUIDs are"}


def id_text_problem(name: str, value: str) -> str | None:
    """Why `value` is no id for field `name` (every boundary that takes ids holds them to this), or None."""
    if len(value) > MAX_ID_CHARS:
        return f"an id is at most {MAX_ID_CHARS} characters; got {len(value):,}"
    if is_blank(value) or _CONTROL.search(value):
        return f"an id must not be blank or hold control characters; got {value[:40]!r}"
    if name in _WHY_NO_SPACE and any(c.isspace() for c in value):
        return f"{name} must hold no whitespace ({_WHY_NO_SPACE[name]}); got {value[:40]!r}"
    return None


def name_text_problem(value: str) -> str | None:
    """Why `value` is no name (an intent, a release, a model…: metric label values, explorer filters), or None."""
    if len(value) > MAX_ID_CHARS or _CONTROL.search(value) or is_blank(value):
        return f"a name is at most {MAX_ID_CHARS} characters, not blank, with no control characters; got {value[:40]!r}"
    return None


def level_of(event_type: str) -> str:
    """The log level an event's line carries wherever one is written (Loki, the JSON echo on stdout): a failed query
    is an error. Without one, Loki guesses from words in the line: a user asking about an "error" would turn red."""
    return "error" if event_type == "query_failed" else "info"


#: Characters that draw nothing beyond `INVISIBLE_CHARS` and whitespace: controls, format characters, separators.
_DRAWS_NOTHING: Final = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
#: And the characters of other categories that draw nothing: the Hangul fillers (letters, U+3164 the "blank" Korean
#: users type), variation selectors and other default-ignorable marks, and the blank braille pattern (U+2800).
_BLANK_LETTERS_AND_MARKS: Final = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def shows_nothing(text: str) -> bool:
    """Whether `text` draws nothing on a screen: `is_blank`, or only control and format characters and the letters
    and marks that draw nothing besides (a question of ``"\x00"``, of ``"\u3164"``). Held where questions come in; a
    line already written is read by `is_blank` alone (a line the log holds stays readable)."""
    return is_blank(text) or all(
        c.isspace() or c in _BLANK_LETTERS_AND_MARKS or unicodedata.category(c) in _DRAWS_NOTHING for c in text
    )


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only whitespace and invisible characters (``"\u200b"`` is blank)."""
    shown = text.lstrip()  # on every query: a text that starts with a visible character is decided here
    return not shown or (shown[0] in _INVISIBLE and _BLANK.fullmatch(shown) is not None)


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise EventValidationError(field, message)


# Validation runs on every emit and on every decode by every projection: checks are plain comparisons, and an
# error message (an f-string with a repr) is only formatted once a check has failed. The hot event types first
# test all their rules in one expression (exact types included: what a log line decodes to) and call the checks
# that name the field only when it fails.


# Python callers can hand any object where an event wants a number; JSON cannot, so a log line always holds the
# types these accept. A bool is an int to Python but `true` in JSON, which no reader of the log takes for a number.
def _check_number(field: str, value: object) -> None:
    if type(value) is bool or not isinstance(value, int | float):
        raise EventValidationError(field, f"must be a number, got {type(value).__name__} {value!r}")


def _finite(value: float) -> bool:
    """Whether `value` is a finite float, or an int a float can hold (10**400 cannot)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_duration(field: str, value: float | None, limit: float = MAX_MILLIS) -> None:
    if value is not None:
        _check_number(field, value)
        if not 0 <= value <= limit:  # False for NaN too
            raise EventValidationError(field, f"must be a finite number >= 0 (at most {limit:g}), got {value!r}")


def _check_fraction(field: str, value: float | None) -> None:
    if value is not None:
        _check_number(field, value)
        if not 0.0 <= value <= 1.0:
            raise EventValidationError(field, f"must be within [0, 1], got {value!r}")


def _check_count(field: str, value: int | None) -> None:
    if value is not None and not (type(value) is int and 0 <= value <= COUNT_MAX):
        kind = "" if isinstance(value, int | float) and type(value) is not bool else f" ({type(value).__name__})"
        raise EventValidationError(field, f"must be a whole number 0 to {COUNT_MAX:,}, got {value!r}{kind}")


def _check_texts(struct: msgspec.Struct, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(struct, name)
        if value is not None and not isinstance(value, str):
            raise EventValidationError(prefix + name, f"must be a string, got {type(value).__name__} {value!r}")


def checked_tags(tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`tags` NFC-normalised, stripped and each kept once (first place), or `EventValidationError` naming
    ``tags`` when over the bounds."""
    cleaned: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise EventValidationError("tags", f"each tag must be a string, got {type(tag).__name__}")
        sent, tag = tag, nfc(tag).strip()
        if not tag or len(tag) > MAX_TAG_CHARS:
            said = f"{sent[:80]!r}" + (f" ({len(sent):,} characters)" if len(sent) > 80 else "")
            raise EventValidationError(
                "tags", f"each tag must be 1..{MAX_TAG_CHARS} characters besides the spaces around it, got {said}"
            )
        cleaned[tag] = None
    if len(cleaned) > MAX_TAGS:
        raise EventValidationError("tags", f"at most {MAX_TAGS} tags, got {len(cleaned)}")
    return tuple(cleaned)


def redacted_tag(tag: str, redact: Callable[[str], str]) -> str:
    """`tag` redacted like any text a user may have typed. A mask longer than what it hides is cut at the bound of a
    tag that was within it, not refused; a tag past the bound stays as long, for `checked_tags` to name."""
    return redact(tag)[: MAX_TAG_CHARS if len(tag) <= MAX_TAG_CHARS else None]


def checked_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """`attributes` with values cleaned (NFC, capped), or `EventValidationError` naming ``attributes``."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise EventValidationError("attributes", f"at most {MAX_ATTRIBUTES} keys, got {len(attributes)}")
    size = 0
    out: dict[str, str] = {}
    for key, value in sorted(attributes.items()):  # sorted: a map's order means nothing, and one order compares
        if not isinstance(key, str) or _ATTRIBUTE_KEY.fullmatch(key) is None:
            raise EventValidationError(
                "attributes", f"key {key!r} must be a name of 1..64 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(value, str):
            raise EventValidationError("attributes", f"value of {key!r} must be a string, got {type(value).__name__}")
        value = clean_text(value)
        size += len(key) + len(value.encode("utf-8"))
        out[key] = value
    if size > MAX_ATTRIBUTE_BYTES:
        raise EventValidationError("attributes", f"at most {MAX_ATTRIBUTE_BYTES} bytes of keys and values, got {size}")
    return out


class Source(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One retrieved document an answer drew on: its id in the corpus, title, retrieval score and rank (1 = best)."""

    doc_id: NonEmpty
    title: str | None = None
    score: float | None = None
    rank: Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)]

    def __post_init__(self) -> None:
        if type(self.doc_id) is not str or (self.title is not None and type(self.title) is not str):
            _check_texts(self, ("doc_id", "title"), prefix="sources.")
        _require(bool(self.doc_id), "sources.doc_id", "must not be empty")
        if not (type(self.rank) is int and 1 <= self.rank <= COUNT_MAX):
            raise EventValidationError("sources.rank", f"must be a whole number 1 to {COUNT_MAX:,}, got {self.rank!r}")
        if self.score is not None:
            _check_number("sources.score", self.score)
            if not math.isfinite(self.score):
                raise EventValidationError("sources.score", f"must be a finite number, got {self.score!r}")
        if self.title is not None:
            cleaned = clean_text(self.title, MAX_TITLE_CHARS)
            if cleaned is not self.title:
                msgspec.structs.force_setattr(self, "title", cleaned)


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="event_type",
    forbid_unknown_fields=True,
    # Not tracked by the cycle collector: an event holds strings, numbers, a datetime and small containers of
    # those, so it can never be part of a cycle; made by the thousand a second, it should not trigger collections.
    gc=False,
):
    """Fields every event carries. Subclasses add their own typed fields.

    Construction validates values (an `EventValidationError` names the field); decoding from JSON validates
    types as well (msgspec names the path, e.g. ``$.confidence``).
    """

    event_id: NonEmpty = msgspec.field(default_factory=new_event_id)
    # The version the event was written under (`WRITTEN_VERSION`, or newer where the event needs it), kept as it was
    # when an older event is read (upcast). A factory, not a plain default, so that it is always written: schema-v1
    # lines left it out, and a line without it is v1. Factories in C (partials), not Python functions: events are
    # made on the request path, a frame each costs.
    schema_version: Annotated[Int16, msgspec.Meta(ge=1, le=INT16_MAX)] = msgspec.field(
        default_factory=functools.partial(int, WRITTEN_VERSION)
    )
    ts: datetime = msgspec.field(default_factory=functools.partial(datetime.now, UTC))
    query_id: NonEmpty
    session_id: str | None = None
    user_id: str | None = None
    service: NonEmpty = "querylog"
    env: NonEmpty = "dev"
    trace_id: str | None = None
    # v2: what a team compares queries by. Given once per query to the tracker (or as the service's defaults).
    release: str | None = None
    prompt_version: str | None = None
    tags: (
        Annotated[tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], ...], msgspec.Meta(max_length=16)]
        | None
    ) = None
    attributes: Annotated[dict[AttributeKey, str], msgspec.Meta(max_length=32)] | None = None

    @property
    def event_type(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def __post_init__(self) -> None:
        if not (
            type(self.event_id) is str
            and type(self.query_id) is str
            and type(self.service) is str
            and type(self.env) is str
            and self.event_id
            and self.query_id
            and self.service
            and self.env
            and type(self.schema_version) is int
            and 1 <= self.schema_version <= INT16_MAX
            and (self.session_id is None or type(self.session_id) is str)
            and (self.user_id is None or type(self.user_id) is str)
            and (self.trace_id is None or type(self.trace_id) is str)
            and (self.release is None or type(self.release) is str)
            and (self.prompt_version is None or type(self.prompt_version) is str)
        ):
            _check_texts(self, _BASE_TEXTS)
            _require(bool(self.event_id), "event_id", "must not be empty")
            _require(bool(self.query_id), "query_id", "must not be empty")
            _require(
                type(self.schema_version) is int and 1 <= self.schema_version <= INT16_MAX,
                "schema_version",
                f"must be 1 to {INT16_MAX:,}",
            )
            _require(bool(self.service), "service", "must not be empty")
            _require(bool(self.env), "env", "must not be empty")
        ts = self.ts
        tz = ts.tzinfo
        if tz is not UTC:  # utc_now() and msgspec's decoding of "Z" both give the UTC singleton: nothing to do
            _require(tz is not None, "ts", "must carry its UTC offset (Z, or one such as +09:00)")
            if ts.utcoffset():
                try:
                    utc = ts.astimezone(UTC)
                except OverflowError:  # 0001-01-01T00:00+00:03 is before year 1 in UTC
                    raise EventValidationError("ts", f"{ts.isoformat()} is out of range in UTC") from None
                msgspec.structs.force_setattr(self, "ts", utc)
        if self.tags is not None:
            msgspec.structs.force_setattr(self, "tags", checked_tags(self.tags))
        if self.attributes is not None:
            msgspec.structs.force_setattr(self, "attributes", checked_attributes(self.attributes))


#: The base fields that hold text: each a `str` (`query_id` and friends never None, the rest None when absent).
_BASE_TEXTS: Final = ("event_id", "query_id", "service", "env", "session_id", "user_id", "trace_id", "release",
                      "prompt_version")  # fmt: skip


class QueryReceived(Event, frozen=True, tag="query_received"):
    """A user's query arrived. The text is NFC-normalised (and redacted by the producer) before it gets here."""

    query_text: Text
    language: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.query_text) is not str or (self.language is not None and type(self.language) is not str):
            _check_texts(self, ("query_text", "language"))
        cleaned = clean_text(self.query_text)
        _require(not is_blank(cleaned), "query_text", "must not be empty or invisible characters only")
        if cleaned is not self.query_text:
            msgspec.structs.force_setattr(self, "query_text", cleaned)


class IntentClassified(Event, frozen=True, tag="intent_classified"):
    intent: NonEmpty
    confidence: Fraction
    duration_ms: Millis | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        d, c = self.duration_ms, self.confidence
        if not (
            type(self.intent) is str
            and self.intent
            and type(c) is float
            and 0.0 <= c <= 1.0
            and (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
        ):
            _check_texts(self, ("intent",))
            _require(bool(self.intent), "intent", "must not be empty")
            _require(c is not None, "confidence", "must be within [0, 1], got None")
            _check_fraction("confidence", c)
            _check_duration("duration_ms", d)


class SearchCompleted(Event, frozen=True, tag="search_completed"):
    """Retrieval finished. v2 adds the documents themselves (`sources`, best first) and, for a pipeline with
    several retrievers, each backend's time (`backend_durations_ms`, e.g. ``{"opensearch": 12.5, "neo4j": 40}``).
    `result_count` is always sent, null when the producer cannot tell (an OpenTelemetry retrieval span that lists
    no document; v3): such a search is no "no result", and the no-result rate leaves it out."""

    result_count: Count | None
    cache_hit: bool = False
    duration_ms: Millis | None = None
    top_score: float | None = None
    sources: tuple[Source, ...] | None = None
    sources_dropped: Count | None = None
    backend_durations_ms: (
        Annotated[dict[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], Millis], msgspec.Meta(max_length=32)]
        | None
    ) = None

    def __post_init__(self) -> None:
        super().__post_init__()
        d, n, top = self.duration_ms, self.result_count, self.top_score
        if not (
            (n is None or (type(n) is int and 0 <= n <= COUNT_MAX))
            and (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
            and self.sources_dropped is None
            and type(self.cache_hit) is bool
            and (top is None or (type(top) is float and top - top == 0.0))  # finite: NaN and inf give NaN
        ):
            _check_count("result_count", n)
            _check_duration("duration_ms", d)
            _check_count("sources_dropped", self.sources_dropped)
            _require(type(self.cache_hit) is bool, "cache_hit", f"must be true or false, got {self.cache_hit!r}")
            if top is not None:
                _check_number("top_score", top)
                _require(_finite(top), "top_score", f"must be a finite number, got {top!r}")
        if n is None and self.schema_version < 3:  # an unknown count is v3's: a v2 reader refuses it
            msgspec.structs.force_setattr(self, "schema_version", 3)
        sources = self.sources
        if sources is not None and len(sources) > MAX_SOURCES:
            # Cut, never refused: the answer happened; the event keeps the best `MAX_SOURCES` and says how many went.
            msgspec.structs.force_setattr(self, "sources", tuple(sources[:MAX_SOURCES]))
            dropped = (self.sources_dropped or 0) + len(sources) - MAX_SOURCES
            msgspec.structs.force_setattr(self, "sources_dropped", dropped)
        if self.backend_durations_ms is not None:
            if len(self.backend_durations_ms) > MAX_ATTRIBUTES:
                raise EventValidationError("backend_durations_ms", f"at most {MAX_ATTRIBUTES} backends")
            for name, value in self.backend_durations_ms.items():
                _require(bool(name) and len(name) <= 64, "backend_durations_ms", "backend names are 1..64 characters")
                _require(value is not None, f"backend_durations_ms.{name}", "must be a finite number >= 0, got None")
                _check_duration(f"backend_durations_ms.{name}", value)
            timings = self.backend_durations_ms
            if list(timings) != sorted(timings):  # one order for a map: sorted by name, as attributes are
                msgspec.structs.force_setattr(self, "backend_durations_ms", dict(sorted(timings.items())))


class ResponseGenerated(Event, frozen=True, tag="response_generated"):
    """The LLM step answered. Names follow the OpenTelemetry GenAI conventions (dots become underscores).

    v2 keeps the answer itself (`answer_text`: NFC, redacted like the query, cut at `MAX_ANSWER_CHARS` with a
    marker; absent when the service does not capture answers, `answer_chars` then still says how long it was),
    the kind of answer (`response_type`, e.g. ``company_analysis``), why generation stopped (`finish_reason`,
    from ``gen_ai.response.finish_reasons``), time to first token of a streamed answer (`ttft_ms`), the cost the
    provider reported (`cost_usd`; otherwise the lake prices the tokens, see querylog.logging.pricing), and
    token counts the model reports beyond input and output.
    """

    gen_ai_system: str | None = None
    gen_ai_request_model: str | None = None
    gen_ai_usage_input_tokens: Count | None = None
    gen_ai_usage_output_tokens: Count | None = None
    duration_ms: Millis | None = None
    quality_score: Fraction | None = None
    answer_chars: Count | None = None
    answer_text: str | None = None
    response_type: str | None = None
    finish_reason: str | None = None
    ttft_ms: Millis | None = None
    cost_usd: Annotated[float, msgspec.Meta(ge=0, le=MAX_COST_USD)] | None = None
    gen_ai_response_model: str | None = None
    gen_ai_usage_cache_read_input_tokens: Count | None = None
    gen_ai_usage_reasoning_output_tokens: Count | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        d, q = self.duration_ms, self.quality_score
        tokens_in, tokens_out = self.gen_ai_usage_input_tokens, self.gen_ai_usage_output_tokens
        chars = self.answer_chars
        system, model = self.gen_ai_system, self.gen_ai_request_model
        if not (
            (d is None or (type(d) is float and 0 <= d <= MAX_MILLIS))
            and (tokens_in is None or (type(tokens_in) is int and 0 <= tokens_in <= COUNT_MAX))
            and (tokens_out is None or (type(tokens_out) is int and 0 <= tokens_out <= COUNT_MAX))
            and (chars is None or (type(chars) is int and 0 <= chars <= COUNT_MAX))
            and (q is None or (type(q) is float and 0.0 <= q <= 1.0))
            and (system is None or type(system) is str)
            and (model is None or type(model) is str)
        ):
            _check_texts(self, ("gen_ai_system", "gen_ai_request_model"))
            _check_duration("duration_ms", d)
            _check_count("gen_ai_usage_input_tokens", tokens_in)
            _check_count("gen_ai_usage_output_tokens", tokens_out)
            _check_count("answer_chars", chars)
            _check_fraction("quality_score", q)
        # v2's optional fields: mostly absent, so one test skips their checks on the emit path.
        answer, kind, finish = self.answer_text, self.response_type, self.finish_reason
        served = self.gen_ai_response_model
        if not (
            self.ttft_ms is None
            and self.cost_usd is None
            and self.gen_ai_usage_cache_read_input_tokens is None
            and self.gen_ai_usage_reasoning_output_tokens is None
            and (answer is None or type(answer) is str)
            and (kind is None or type(kind) is str)
            and (finish is None or type(finish) is str)
            and (served is None or type(served) is str)
        ):
            _check_texts(self, ("answer_text", "response_type", "finish_reason", "gen_ai_response_model"))
            _check_duration("ttft_ms", self.ttft_ms)
            _check_duration("cost_usd", self.cost_usd, MAX_COST_USD)
            _check_count("gen_ai_usage_cache_read_input_tokens", self.gen_ai_usage_cache_read_input_tokens)
            _check_count("gen_ai_usage_reasoning_output_tokens", self.gen_ai_usage_reasoning_output_tokens)
        if self.answer_text is not None:
            cleaned = clean_text(self.answer_text, MAX_ANSWER_CHARS)
            if cleaned is not self.answer_text:
                msgspec.structs.force_setattr(self, "answer_text", cleaned)


class QueryCompleted(Event, frozen=True, tag="query_completed"):
    """The query was answered. Carries what LogQL panels group by, so they need no join."""

    latency_ms: Millis
    intent: str | None = None
    cache_hit: bool | None = None
    # Not a Count: negative values, which this field always took, stay readable; the lake's int32 bounds it.
    result_count: Annotated[int, msgspec.Meta(ge=-COUNT_MAX - 1, le=COUNT_MAX)] | None = None
    quality_score: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        n, q, hit, intent = self.result_count, self.quality_score, self.cache_hit, self.intent
        if not (
            type(self.latency_ms) is float
            and 0 <= self.latency_ms <= MAX_MILLIS
            and (n is None or type(n) is int)
            and (q is None or type(q) is float)
            and (hit is None or type(hit) is bool)
            and (intent is None or type(intent) is str)
        ):
            _require(self.latency_ms is not None, "latency_ms", "must be a finite number >= 0, got None")
            _check_duration("latency_ms", self.latency_ms)
            _check_texts(self, ("intent",))
            _require(hit is None or type(hit) is bool, "cache_hit", f"must be true, false or absent, got {hit!r}")
            if q is not None:
                _check_number("quality_score", q)
            if n is not None and type(n) is not int:
                raise EventValidationError("result_count", f"must be a whole number, got {type(n).__name__} {n!r}")
        if n is not None and not -COUNT_MAX - 1 <= n <= COUNT_MAX:
            raise EventValidationError("result_count", f"must fit in 32 bits, got {n!r}")


class QueryFailed(Event, frozen=True, tag="query_failed"):
    error_type: NonEmpty
    error_message: str = ""
    stage: str | None = None
    latency_ms: Millis | None = None
    intent: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_texts(self, ("error_type", "error_message", "stage", "intent"))
        _require(bool(self.error_type), "error_type", "must not be empty")
        _check_duration("latency_ms", self.latency_ms)
        cleaned = clean_text(self.error_message)
        if cleaned is not self.error_message:
            msgspec.structs.force_setattr(self, "error_message", cleaned)


class FeedbackReceived(Event, frozen=True, tag="feedback_received"):
    """A user's verdict on an answer: -1 (bad), 0 (neutral) or 1 (good)."""

    score: Annotated[Int8, msgspec.Meta(ge=-1, le=1)]
    comment: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.score) is not int or self.score not in (-1, 0, 1):
            raise EventValidationError("score", f"must be -1, 0 or 1, got {self.score!r}")
        if self.comment is not None:
            _check_texts(self, ("comment",))
            cleaned = clean_text(self.comment)
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


class Prechecked:
    """A prechecked event: built by a producer that has already checked every value where it entered. Each event
    class has one (`prechecked`): a subclass with the same fields, defaults, tag and encoding, and no checks on
    construction.

    The tracker builds these on the request path: a query's ids, service, context and text are checked once, when
    the query starts, and each stage's own values when the stage reports them, by the rules of the event class
    (tests/logging/test_prechecked.py holds the two to agreement, byte for byte). As a subclass it is its event
    class for `isinstance`, `match` and attribute access; equality is by type, so compare `checked()`. Nothing
    decodes into one: a line is read back as its event class, with every check.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # what the event class beside it provides
        event_type: str

    def checked(self) -> AnyEvent:
        """The event this one stands for, built and checked by its class: what a reader of the log gets."""
        return EVENT_CLASSES[self.event_type](**msgspec.structs.asdict(self))  # type: ignore[arg-type, return-value]

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickled (a multiprocessing queue, say) as the event class's own instance: the subclass is made at import
        # and has no name pickle could look up.
        return self.checked().__reduce__()


def _prechecked(cls: type[Event]) -> type[Event]:
    # msgspec inherits the class's configuration (frozen is stated again, as msgspec asks) and its tag. Its maker
    # checked every value, so construction checks nothing: `__post_init__` is the builtin `callable`, which msgspec
    # calls with the new event and whose answer it ignores, so no Python frame runs per event.
    namespace = {"__post_init__": callable, "__module__": __name__, "__doc__": Prechecked.__doc__}
    return type(f"Prechecked{cls.__name__}", (Prechecked, cls), namespace, frozen=True)


_PRECHECKED: Final[dict[type[Event], type[Event]]] = {cls: _prechecked(cls) for cls in EVENT_CLASSES.values()}
_EventT = TypeVar("_EventT", bound=Event)


def prechecked(cls: type[_EventT]) -> type[_EventT]:
    """The prechecked subclass of event class `cls` (see `Prechecked`)."""
    return _PRECHECKED[cls]  # type: ignore[return-value]
