"""Event ⇄ Loki entry: the labels, structured metadata, timestamp and JSON line each event becomes."""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import orjson

from querylog.logging.codec import from_builtins
from querylog.logging.events import TRUNCATION_MARKER, AnyEvent, Event

__all__ = [
    "LABEL_NAMES",
    "LABEL_VALUE_RE",
    "MAX_LINE_BYTES",
    "METADATA_FIELDS",
    "LokiEntry",
    "Push",
    "entry_for",
    "event_from_entry",
    "line_shape",
    "plan_pushes",
    "stream_selector",
    "ts_ns",
]

#: The only stream labels: a small, fixed set (7 event types → 7 streams per app and env).
LABEL_NAMES: Final = ("app", "env", "event")
#: High-cardinality ids: structured metadata, filterable without a parser (``| session_id="s-7"``).
METADATA_FIELDS: Final = ("user_id", "session_id", "query_id", "trace_id")
#: Loki's default ``max_line_size`` (256 KiB); Loki rejects a longer line with a 400.
MAX_LINE_BYTES: Final = 256 * 1024
#: An id longer than this is not an id; capping it keeps an entry under Loki's 64 KiB metadata limit.
MAX_METADATA_VALUE_BYTES: Final = 1024
#: Label values go through this check: Loki accepts any value, but these become stream identities.
LABEL_VALUE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Fields every event has. The line keeps those Loki does not hold elsewhere (see `entry_for`): `event_id`,
#: `schema_version`, and v2's `release`, `prompt_version`, `tags` and `attributes`.
_BASE_FIELDS: Final = frozenset(Event.__struct_fields__)
_LINE_BASE_FIELDS: Final = tuple(
    name for name in Event.__struct_fields__ if name not in {"ts", "service", "env", *METADATA_FIELDS}
)
_MARKER_BYTES: Final = len(TRUNCATION_MARKER.encode())
_MICROSECOND: Final = timedelta(microseconds=1)


def ts_ns(moment: datetime) -> int:
    """Unix epoch nanoseconds of an aware datetime, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


class LokiEntry(msgspec.Struct, frozen=True, gc=False):
    """One log line as Loki stores it: stream labels, timestamp, line, structured metadata.

    A frozen msgspec Struct rather than a dataclass: built once per event, it costs a tenth of a frozen
    dataclass's ``__init__``, and (holding only strings, ints and tuples of strings, never a cycle) it stays
    out of the garbage collector's way, which otherwise rescans every entry of a 10,000-event batch.
    """

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

    @property
    def line_bytes(self) -> int:
        return len(self.line.encode())

    def encoded(self) -> bytes:
        """The entry as it appears in a push: ``["<ns>", "<line>", {metadata}]`` (UTF-8, never ``\\u``-escaped)."""
        value: list[Any] = [str(self.ts_ns), self.line]
        if self.metadata:
            value.append(dict(self.metadata))
        return _ENCODER.encode(value)


def _level(event: Event) -> str:
    # Loki guesses a `detected_level` for every line; without a `level` key it searches the whole line for
    # words like "error" or "info", so a user asking about an "error" would turn their query red. Saying it
    # outright makes Grafana's level colours and filters mean something: a failed query is an error.
    return "error" if event.event_type == "query_failed" else "info"


def _clean(value: str) -> str:
    """NFC, valid UTF-8: lone surrogates (which no JSON encoder writes as UTF-8) become U+FFFD."""
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


def _cleaned(obj: Any) -> Any:
    if isinstance(obj, str):
        return _clean(obj)
    if isinstance(obj, dict):
        return {_clean(k): _cleaned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cleaned(v) for v in obj]
    return obj


#: msgspec's encoder, as `loki_lines` uses: both paths write numbers the same way (``1e16``, not ``1e+16``).
_ENCODER: Final = msgspec.json.Encoder()


def _dumps(fields: dict[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(fields)
    except UnicodeEncodeError:
        return _ENCODER.encode(_cleaned(fields))


def _fit(fields: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    """The line as JSON of at most `limit` bytes: the longest text fields are cut first, each with a marker."""
    line = _dumps(fields)
    if len(line) <= limit:
        return line, False
    for _ in range(16):
        texts = [(len(v.encode()), k) for k, v in fields.items() if isinstance(v, str) and k != "level"]
        if not texts:
            break
        size, key = max(texts)
        # JSON escaping can make the encoded text longer than the raw one, hence the loop.
        keep = max(0, size - (len(line) - limit) - _MARKER_BYTES - 8)
        fields[key] = fields[key].encode()[:keep].decode("utf-8", "ignore") + TRUNCATION_MARKER
        line = _dumps(fields)
        if len(line) <= limit:
            return line, True
    # Not reachable with the schema's fields; kept so that no event can ever make an unsendable line.
    cut = line[: limit - _MARKER_BYTES].decode("utf-8", "ignore").encode()
    return cut + TRUNCATION_MARKER.encode(), True


def _metadata_value(value: str) -> tuple[str, bool]:
    """An id as structured metadata: NFC, valid UTF-8, capped at `MAX_METADATA_VALUE_BYTES` (with a marker)."""
    if value.isascii() and len(value) <= MAX_METADATA_VALUE_BYTES:
        return value, False  # the common case: ASCII is valid UTF-8 and NFC already, and it fits
    value = _clean(value)
    raw = value.encode()
    if len(raw) > MAX_METADATA_VALUE_BYTES:
        return raw[: MAX_METADATA_VALUE_BYTES - _MARKER_BYTES].decode("utf-8", "ignore") + TRUNCATION_MARKER, True
    return value, False


def _metadata(event: Event) -> tuple[tuple[tuple[str, str], ...], bool]:
    pairs: list[tuple[str, str]] = []
    truncated = False
    for name in METADATA_FIELDS:
        value = getattr(event, name)
        if value is None:
            continue
        if not value.isascii() or len(value) > MAX_METADATA_VALUE_BYTES:  # else: taken as it is, see below
            value, cut = _metadata_value(value)
            truncated = truncated or cut
        pairs.append((name, value))
    return tuple(pairs), truncated


@dataclass(frozen=True, slots=True)
class _Shape:
    """What `entry_for` needs to know about an event class, worked out once per class."""

    event: str
    level: str
    names: tuple[str, ...]  # the line's fields before `service` and `env`, in line order


_SHAPES: dict[type, _Shape] = {}


def line_shape(cls: type[Event]) -> _Shape:
    """The stream name, level and line fields (in line order) of an event class; cached."""
    shape = _SHAPES.get(cls)
    if shape is None:
        own = [name for name in cls.__struct_fields__ if name not in _BASE_FIELDS]
        names = (*own, *_LINE_BASE_FIELDS)
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        level = "error" if tag == "query_failed" else "info"  # as `_level` says
        shape = _SHAPES[cls] = _Shape(tag, level, names)
    return shape


def entry_for(event: Event, *, app: str, env: str, max_line_bytes: int = MAX_LINE_BYTES) -> LokiEntry:
    """The Loki entry of `event` under the stream ``{app, env, event}``.

    The line is the event's JSON without what Loki already holds for it: the label fields (``event_type``;
    ``service`` and ``env`` unless they differ from the labels), the structured-metadata ids and ``ts`` (the
    entry's own timestamp). It gains ``level``; fields without a value (None) are left out, defaults are
    not. `event_from_entry` rebuilds the event exactly.
    """
    # Every field with a value, defaults included: `| json | cache_hit="false"` must find a cache miss, so a
    # False or 0 is written even though the log's own encoding leaves defaults out. Scalars are written as
    # msgspec writes their builtins; `tags`, `attributes`, `sources` and backend timings as JSON arrays and
    # objects (`| json` flattens them: `attributes_plan`, `sources_0_doc_id`).
    shape = _SHAPES.get(type(event)) or line_shape(type(event))
    fields: dict[str, Any] = {"level": shape.level}
    for name in shape.names:
        value = getattr(event, name)
        if value is not None:
            fields[name] = value
    if event.service != app:
        fields["service"] = event.service
    if event.env != env:
        fields["env"] = event.env
    line, truncated = _fit(fields, max_line_bytes)
    text = line.decode()
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    metadata, metadata_truncated = _metadata(event)
    return LokiEntry(
        app=app,
        env=env,
        event=shape.event,
        ts_ns=(event.ts - _EPOCH) // _MICROSECOND * 1000,
        line=text,
        metadata=metadata,
        event_id=event.event_id,
        truncated=truncated or metadata_truncated,
    )


def event_from_entry(ts: int | str, line: str, labels: Mapping[str, str]) -> AnyEvent:
    """Rebuild the event from what Loki returns for an entry: its timestamp, line, and labels (the stream's
    labels merged with the entry's structured metadata, as the query API returns them)."""
    fields: dict[str, Any] = orjson.loads(line)
    fields.pop("level", None)
    fields["event_type"] = labels["event"]
    fields.setdefault("service", labels["app"])
    fields.setdefault("env", labels["env"])
    for name in METADATA_FIELDS:
        if name in labels:
            fields[name] = labels[name]
    nanos = int(ts)
    moment = _EPOCH + timedelta(microseconds=nanos // 1000)
    fields["ts"] = moment.isoformat().replace("+00:00", "Z")
    return from_builtins(fields)


def stream_selector(app: str, env: str, event: str | None = None) -> str:
    """The LogQL stream selector of a stream (or of all streams of an app and env)."""
    parts = [f'app="{app}"', f'env="{env}"'] + ([f'event="{event}"'] if event else [])
    return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class Push:
    """One request body for ``/loki/api/v1/push`` (uncompressed JSON) and the entries in it, with what the
    sink records once Loki accepts it, worked out with the body (on the read-ahead thread, for the projection)."""

    entries: tuple[LokiEntry, ...]
    body: bytes
    event_ids: tuple[str, ...] = ()
    #: Each stream's oldest and newest timestamp in this push.
    spans: tuple[tuple[tuple[str, str, str], int, int], ...] = ()
    #: How many entries were cut to fit Loki's limits.
    truncated: int = 0

    def halves(self) -> tuple[Push, Push]:
        mid = len(self.entries) // 2
        return _push(self.entries[:mid]), _push(self.entries[mid:])


_EVENT_ID: Final = operator.attrgetter("event_id")


def _push(entries: Sequence[LokiEntry], encoded: Sequence[bytes] | None = None) -> Push:
    parts = encoded if encoded is not None else [e.encoded() for e in entries]
    streams: dict[tuple[str, str, str], list[bytes]] = {}
    spans: dict[tuple[str, str, str], list[int]] = {}
    truncated = 0
    for entry, part in zip(entries, parts, strict=True):
        key = (entry.app, entry.env, entry.event)
        ts = entry.ts_ns
        values = streams.get(key)
        if values is None:
            streams[key] = [part]
            spans[key] = [ts, ts]
        else:
            values.append(part)
            span = spans[key]
            if ts < span[0]:
                span[0] = ts
            elif ts > span[1]:
                span[1] = ts
        if entry.truncated:
            truncated += 1
    body = (
        b'{"streams":['
        + b",".join(
            b'{"stream":' + _labels_json(key) + b',"values":[' + b",".join(values) + b"]}"
            for key, values in streams.items()
        )
        + b"]}"
    )
    return Push(
        entries=tuple(entries),
        body=body,
        event_ids=tuple(map(_EVENT_ID, entries)),
        spans=tuple((key, low, high) for key, (low, high) in spans.items()),
        truncated=truncated,
    )


#: The labels of each stream seen, as JSON (a handful of streams: 7 event types per app and env).
_LABELS_JSON: dict[tuple[str, str, str], bytes] = {}


def _labels_json(stream: tuple[str, str, str]) -> bytes:
    encoded = _LABELS_JSON.get(stream)
    if encoded is None:
        if len(_LABELS_JSON) > 4096:
            _LABELS_JSON.clear()
        app, env, event = stream
        encoded = _LABELS_JSON[stream] = orjson.dumps({"app": app, "env": env, "event": event})
    return encoded


def _stream_overhead(entry: LokiEntry) -> int:
    """Bytes a stream adds to a push besides its entries: ``{"stream":{…},"values":[…]},``."""
    return len(b'{"stream":') + len(_labels_json(entry.stream)) + len(b',"values":[]},')


def plan_pushes(entries: Sequence[LokiEntry], *, max_bytes: int, encoded: Sequence[bytes] | None = None) -> list[Push]:
    """Pushes of at most `max_bytes` of JSON each (one entry alone may exceed it), oldest entries first.
    `encoded`, when given, holds each entry's `LokiEntry.encoded` bytes, worked out already.

    Entries are sorted by timestamp before they are cut into pushes, so every stream moves forward in time
    from one push to the next: Loki refuses lines more than an hour behind a stream's newest one.
    """
    if encoded is not None and len(encoded) != len(entries):
        raise ValueError(f"plan_pushes: {len(encoded)} encoded values for {len(entries)} entries")
    times = [entry.ts_ns for entry in entries]
    order = sorted(range(len(entries)), key=times.__getitem__)  # stable; nearly free on time-ordered batches
    pushes: list[Push] = []
    batch: list[LokiEntry] = []
    parts: list[bytes] = []
    streams: set[tuple[str, str, str]] = set()
    empty = len(b'{"streams":[]}')
    size = empty
    for i in order:
        entry = entries[i]
        part = entry.encoded() if encoded is None else encoded[i]
        stream = (entry.app, entry.env, entry.event)
        extra = len(part) + 1 + (0 if stream in streams else _stream_overhead(entry))
        if batch and size + extra > max_bytes:
            pushes.append(_push(batch, parts))
            batch, parts, streams = [], [], set()
            size = empty
            extra = len(part) + 1 + _stream_overhead(entry)
        batch.append(entry)
        parts.append(part)
        streams.add(stream)
        size += extra
    if batch:
        pushes.append(_push(batch, parts))
    return pushes
