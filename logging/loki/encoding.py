"""Log line → Loki entry, once per event: its stream, timestamp, line and structured metadata, from the log
line's bytes; then entries → push bodies of at most a size, oldest first.

The log line is the event's JSON. Its Loki line is the same JSON less what Loki holds elsewhere (the ``event``
label, the timestamp, the ids as structured metadata, ``service`` and ``env`` when they equal the ``app`` and
``env`` labels), plus a ``level``, with defaults written out: ``| json | cache_hit="false"`` must find a cache
miss, although the log leaves defaults out. One msgspec struct per event type, derived from the event class,
reads the log line (types checked as the event's are) and writes the Loki line.
"""

from __future__ import annotations

import re
import typing
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Union

import msgspec
import orjson

from querylog.logging.events import EVENT_CLASSES, TRUNCATION_MARKER, Event, level_of

__all__ = [
    "LABEL_VALUE_RE",
    "LINE_FIELDS",
    "MAX_LINE_BYTES",
    "METADATA_FIELDS",
    "Entries",
    "LineError",
    "Push",
    "encode_lines",
    "metadata_forms",
    "plan_pushes",
]

#: High-cardinality ids: structured metadata, filterable without a parser (``| session_id="s-7"``).
METADATA_FIELDS: Final = ("user_id", "session_id", "query_id", "trace_id")
#: Loki's default ``max_line_size`` (256 KiB); Loki rejects a longer line with a 400.
MAX_LINE_BYTES: Final = 256 * 1024
#: An id longer than this is not an id; capping it keeps an entry under Loki's 64 KiB metadata limit.
MAX_METADATA_VALUE_BYTES: Final = 1024
#: Label values (app, env) name streams: a short, plain word.
LABEL_VALUE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_UNSET: Final = msgspec.UNSET
_MARKER: Final = TRUNCATION_MARKER.encode()
_HELD_ELSEWHERE: Final = frozenset({"ts", "service", "env", *METADATA_FIELDS})


def _line_type(tag: str, cls: type[Event]) -> type[msgspec.Struct]:
    """The Loki line of `cls`: ``level``, the event's own fields, the base fields Loki holds nowhere else, then
    ``service`` and ``env`` (UNSET, which msgspec leaves out, when they equal the labels); then the fields read
    from the log line but never written to the Loki line (UNSET once read). Tagged like the event, so that one
    decoder reads every type; the tag is cut off the encoded line."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    own = [name for name in cls.__struct_fields__ if name not in Event.__struct_fields__]
    base = [name for name in Event.__struct_fields__ if name not in _HELD_ELSEWHERE]
    level = level_of(tag)  # only a Loki line has a level: a log line that has one is refused unless it is this one
    spec: list[tuple[str, Any, Any]] = [("level", Literal[level], level)]
    for name in (*own, *base, "service", "env", "ts", *METADATA_FIELDS):
        f, hint = fields[name], (str if name == "ts" else hints[name])  # ts: read as the log wrote it
        if name == "schema_version":
            spec.append((name, hint, 1))  # a line without it is schema v1: those lines left it out
        elif f.required or f.default_factory is not msgspec.NODEFAULT:
            spec.append((name, hint, msgspec.NODEFAULT))  # required, or always written (event_id, ts)
        elif f.default is None:
            spec.append((name, hint | msgspec.UnsetType, _UNSET))  # None is left out of the line
        else:
            spec.append((name, hint, f.default))  # a default is written out: cache_hit=false
    return msgspec.defstruct(
        f"Loki{cls.__name__}", spec, kw_only=True, forbid_unknown_fields=True, gc=False, tag_field="event_type", tag=tag
    )


_LINE_TYPES: Final = {tag: _line_type(tag, cls) for tag, cls in EVENT_CLASSES.items()}
_DECODER: Final = msgspec.json.Decoder(Union[tuple(_LINE_TYPES.values())])  # type: ignore[valid-type]  # noqa: UP007
#: Each line type's stream (its tag) and the length of the ``{"event_type":"…",`` its encoding starts with.
_KINDS: Final = {t: (tag, len(f'{{"event_type":"{tag}",')) for tag, t in _LINE_TYPES.items()}
#: The fields of each event type's Loki line, in line order (``level`` first): the contract docs/loki.md shows.
LINE_FIELDS: Final = {tag: t.__struct_fields__[: -len(METADATA_FIELDS) - 1] for tag, t in _LINE_TYPES.items()}
_ENCODER: Final = msgspec.json.Encoder()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND: Final = timedelta(seconds=1)
#: Unix nanoseconds of each whole second seen (``2026-12-04T03:43:10``): a log's lines share their seconds.
_SECONDS: dict[str, int] = {}


class LineError(ValueError):
    """A log line that is not an event (corrupt, an unknown type or field, a bad value): the codec refuses it too."""


@dataclass(slots=True)
class Entries:
    """A batch's Loki entries, column by column: stream (event type), Unix-ns time, push value ``["<ns>","<line>",
    {ids}]``, event id; `cut`: the positions of entries whose line or ids were cut to fit Loki's limits."""

    streams: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    cut: set[int] = field(default_factory=set)


def encode_lines(lines: Iterable[bytes], *, app: str, env: str, max_line_bytes: int = MAX_LINE_BYTES) -> Entries:
    """The Loki entries of `lines` (log lines), in their order. Raises `LineError` at the first line that is
    not a valid event. The Loki projection's hot path: one decode and two encodes per line."""
    out = Entries()
    streams, times, values, event_ids = out.streams, out.times, out.values, out.event_ids
    decode, encode, kinds, seconds_of, unset = _DECODER.decode, _ENCODER.encode, _KINDS, _SECONDS.get, _UNSET
    is_nfc = unicodedata.is_normalized
    for line in lines:
        try:
            row: Any = decode(line)
            ts = row.ts
            seconds = seconds_of(ts[:19])
            ns = seconds + int(ts[20:26]) * 1000 if seconds is not None and ts[26:] == "Z" else _ts_ns(ts)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:  # msgspec.ValidationError is a DecodeError
            raise LineError(f"{exc}: {line[:200]!r}") from exc
        metadata = _Ids(row.user_id, row.session_id, row.query_id, row.trace_id)
        cut = False
        if not (line.isascii() and len(line) <= MAX_METADATA_VALUE_BYTES):  # else every id is short ASCII
            metadata, cut = _metadata(metadata)
        row.ts = row.user_id = row.session_id = row.query_id = row.trace_id = unset
        if row.service == app:
            row.service = unset
        if row.env == env:
            row.env = unset
        stream, tag_bytes = kinds[type(row)]
        encoded = b"{" + encode(row)[tag_bytes:]
        if len(encoded) > max_line_bytes:
            fields = msgspec.to_builtins(row)
            del fields["event_type"]
            encoded, cut = _fit(fields, max_line_bytes), True
        text = encoded.decode()
        if not (encoded.isascii() or is_nfc("NFC", text)):
            text = unicodedata.normalize("NFC", text)
        if cut:
            out.cut.add(len(values))
        streams.append(stream)
        times.append(ns)
        values.append(encode((str(ns), text, metadata)))
        event_ids.append(row.event_id)
    return out


def _ts_ns(ts: str) -> int:
    """Unix nanoseconds of an RFC 3339 time (the log writes ``2026-12-04T03:43:10.123456Z``)."""
    moment = datetime.fromisoformat(ts)  # a time without a zone fails below (TypeError), as the codec refuses it
    whole = (moment.replace(microsecond=0) - _EPOCH) // _SECOND * 1_000_000_000
    if ts[-1] == "Z" and len(ts) == 27 and len(_SECONDS) < 100_000:
        _SECONDS[ts[:19]] = whole
    return whole + moment.microsecond * 1000


class _Ids(msgspec.Struct, omit_defaults=True, gc=False):
    """An entry's structured metadata, in `METADATA_FIELDS` order; an absent id (None or UNSET) is left out."""

    user_id: Any = None
    session_id: Any = None
    query_id: Any = None
    trace_id: Any = None


def _metadata(ids: _Ids) -> tuple[_Ids, bool]:
    """`ids` as Loki takes them: NFC, each at most `MAX_METADATA_VALUE_BYTES` (cut with a marker); and whether
    one was cut."""
    cut = False
    values = []
    for value in msgspec.structs.astuple(ids):
        if isinstance(value, str) and not (value.isascii() and len(value) <= MAX_METADATA_VALUE_BYTES):
            value = unicodedata.normalize("NFC", value)
            raw = value.encode()
            if len(raw) > MAX_METADATA_VALUE_BYTES:
                value, cut = _cut(raw, MAX_METADATA_VALUE_BYTES), True
        values.append(value)
    return _Ids(*values), cut


def metadata_forms(value: str) -> tuple[str, ...]:
    """What Loki holds for id `value`: as `_metadata` sends it (NFC, cut), and, where JSON escapes it, escaped too:
    Loki 3.4 keeps the JSON escapes of structured metadata pushed as JSON (``o"brien`` is held as ``o\\"brien``)."""
    sent = _metadata(_Ids(value))[0].user_id
    escaped = _ENCODER.encode(sent)[1:-1].decode()
    return (sent,) if escaped == sent else (sent, escaped)


def _fit(fields: dict[str, Any], limit: int) -> bytes:
    """The line as JSON of at most `limit` bytes: the longest text fields are cut first, each with a marker."""
    line = _ENCODER.encode(fields)
    for _ in range(16):
        texts = [(len(v.encode()), k) for k, v in fields.items() if isinstance(v, str) and k != "level"]
        if len(line) <= limit or not texts:
            break
        size, key = max(texts)
        # JSON escaping can make the encoded text longer than the raw one, hence the loop.
        keep = max(0, size - (len(line) - limit) - len(_MARKER) - 8)
        fields[key] = _cut(fields[key].encode(), keep + len(_MARKER))
        line = _ENCODER.encode(fields)
    # The last resort is not reachable with the schema's fields; it is there so that no line is ever unsendable.
    return line if len(line) <= limit else _cut(line, limit).encode()


def _cut(raw: bytes, limit: int) -> str:
    """UTF-8 `raw` cut to at most `limit` bytes, on a character boundary, ending in the truncation marker."""
    return raw[: limit - len(_MARKER)].decode("utf-8", "ignore") + TRUNCATION_MARKER


@dataclass(frozen=True, slots=True)
class Push:
    """One request body for ``/loki/api/v1/push`` (uncompressed JSON) and what the sink records once Loki
    accepts it: its entries' positions in the batch's `Entries` (in time order), each stream's oldest and
    newest timestamp, and how many of its lines were cut."""

    body: bytes
    positions: Sequence[int]
    spans: tuple[tuple[str, int, int], ...]
    cut: int = 0


def plan_pushes(
    entries: Entries,
    *,
    app: str,
    env: str,
    max_bytes: int,
    keep: Sequence[int] | None = None,
    by_stream: bool = False,
) -> list[Push]:
    """Pushes of at most `max_bytes` of JSON each (one entry alone may exceed it), oldest entries first, of the
    entries at positions `keep` (all by default). Sorted by time (stable, and nearly free: the reader hands
    lines over in time order), every stream moves forward from one push to the next, as Loki wants.

    `by_stream`: one stream a push. Loki answers a push for its last stream only (``pkg/ingester/instance.go``):
    refusals in another would go unsaid, so the sink asks for this when a line may trail its stream."""
    times, streams, values = entries.times, entries.streams, entries.values
    order = sorted(range(len(times)) if keep is None else keep, key=times.__getitem__)
    if by_stream:
        order.sort(key=streams.__getitem__)  # stable: each stream's entries stay in time order
    labels = {s: orjson.dumps({"app": app, "env": env, "event": s}) for s in set(streams)}
    overhead = {s: len(b'{"stream":,"values":[]},') + len(j) for s, j in labels.items()}
    pushes: list[Push] = []
    start, size, empty = 0, len(b'{"streams":[]}'), len(b'{"streams":[]}')
    groups: dict[str, list[int]] = {}
    for n, i in enumerate(order):
        stream, value = streams[i], values[i]
        group = groups.get(stream)
        extra = len(value) + 1 + (0 if group is not None else overhead[stream])  # a new stream adds its overhead
        if (size + extra > max_bytes or (by_stream and group is None)) and groups:
            pushes.append(_push(entries, order[start:n], groups, labels))
            start, groups, size, group, extra = n, {}, empty, None, len(value) + 1 + overhead[stream]
        if group is None:
            groups[stream] = [i]
        else:
            group.append(i)
        size += extra
    if groups:
        pushes.append(_push(entries, order[start:], groups, labels))
    return pushes


def _push(entries: Entries, positions: list[int], groups: dict[str, list[int]], labels: dict[str, bytes]) -> Push:
    times, values, cut = entries.times, entries.values, entries.cut
    body = b'{"streams":[%b]}' % b",".join(
        b'{"stream":%b,"values":[%b]}' % (labels[stream], b",".join([values[i] for i in group]))
        for stream, group in groups.items()
    )
    spans = tuple((stream, times[group[0]], times[group[-1]]) for stream, group in groups.items())
    return Push(body, positions, spans, sum(1 for i in positions if i in cut) if cut else 0)
