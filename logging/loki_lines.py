"""Log lines → Loki entries directly, without building each event first (the Loki projection's fast path).

`entry_for` starts from an event: decoding a log line into a validated event and then walking its fields
costs most of the Loki projection's CPU. Here each line is decoded into a plain struct of its event type
(types checked by msgspec, values not re-validated: the log only holds events that were validated when they
were written), the Loki line is encoded from a second struct that leaves out what `entry_for` leaves out,
and the push value ``["<ns>", "<line>", {ids}]`` is encoded in one go.

Anything unusual — an older schema version, a line too long for Loki, text not in NFC, an id that is not
short ASCII, a line that does not decode — returns None for that line, and the caller takes `entry_for`'s
path for it. Both paths build the same bytes (tests/logging/test_loki_lines.py checks this property).
"""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Union

import msgspec

from querylog.logging.events import EVENT_CLASSES, SCHEMA_VERSION, Event
from querylog.logging.loki_entries import MAX_METADATA_VALUE_BYTES, LokiEntry

__all__ = ["fast_entries"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_BASE_FIELDS: Final = frozenset(Event.__struct_fields__)


class _Ids(msgspec.Struct, omit_defaults=True, gc=False):
    """The structured metadata, in `METADATA_FIELDS` order; an absent id is left out."""

    user_id: str | None = None
    session_id: str | None = None
    query_id: str | None = None
    trace_id: str | None = None


class _Value(msgspec.Struct, array_like=True, gc=False):
    """One entry of a push's ``values``: ``["<ns>", "<line>", {ids}]``."""

    ts: str
    line: str
    ids: _Ids


@dataclass(frozen=True, slots=True)
class _Kind:
    """What the fast path needs to know about one event type."""

    tag: str
    level: str
    line_type: type[msgspec.Struct]
    values: Callable[[Any], tuple[Any, ...]]  # the line's fields, in line order, from the decoded struct


def _kinds() -> tuple[dict[type, _Kind], msgspec.json.Decoder[Any]]:
    kinds: dict[type, _Kind] = {}
    for tag, cls in EVENT_CLASSES.items():
        fields = msgspec.structs.fields(cls)
        # Decoded as written: what the event requires or generates (event_id, ts) must be in the line.
        read = [
            (f.name, f.type)
            if f.required or f.default_factory is not msgspec.NODEFAULT
            else (f.name, f.type, f.default)
            for f in fields
        ]
        in_type = msgspec.defstruct(
            f"_Read{cls.__name__}",
            read,
            kw_only=True,
            tag_field="event_type",
            tag=tag,
            forbid_unknown_fields=True,
            gc=False,
        )
        # The line, as `entry_for` writes it: level, the event's own fields, event_id, schema_version, then
        # service and env only where they differ from the labels. A field that is None is left out.
        names = [f.name for f in fields if f.name not in _BASE_FIELDS] + ["event_id", "schema_version"]
        line_type = msgspec.defstruct(
            f"_Line{cls.__name__}",
            [("level", str), *((name, Any, None) for name in names), ("service", Any, None), ("env", Any, None)],
            omit_defaults=True,
            gc=False,
        )
        level = "error" if tag == "query_failed" else "info"  # as `loki_entries._level` says
        getter = operator.attrgetter(*names)
        kinds[in_type] = _Kind(tag, level, line_type, getter)
    return kinds, msgspec.json.Decoder(Union[tuple(kinds)])  # noqa: UP007 - built from a runtime tuple


_KINDS, _DECODER = _kinds()
_ENCODER: Final = msgspec.json.Encoder()


def fast_entries(
    lines: Sequence[bytes], *, app: str, env: str, max_line_bytes: int
) -> tuple[list[LokiEntry | None], list[bytes]]:
    """The Loki entry of each log line and its encoded push value; None (and ``b""``) where `entry_for` must
    decide. One loop over the batch, its lookups hoisted: this is the Loki projection's hot path."""
    decode, encode, kinds = _DECODER.decode, _ENCODER.encode, _KINDS
    is_nfc, epoch, microsecond, limit = unicodedata.is_normalized, _EPOCH, _MICROSECOND, MAX_METADATA_VALUE_BYTES
    entries: list[LokiEntry | None] = []
    parts: list[bytes] = []
    for line in lines:
        try:
            read = decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            read = None
        if read is None or read.schema_version != SCHEMA_VERSION:  # older versions are upcast by the codec
            entries.append(None)
            parts.append(b"")
            continue
        query_id, session_id, user_id, trace_id = read.query_id, read.session_id, read.user_id, read.trace_id
        ids = query_id + (session_id or "") + (user_id or "") + (trace_id or "")
        kind = kinds[type(read)]
        service, event_env = read.service, read.env
        encoded = encode(
            kind.line_type(
                kind.level,
                *kind.values(read),
                None if service == app else service,
                None if event_env == env else event_env,
            )
        )
        text = encoded.decode()
        # Non-ASCII or long ids are cleaned and capped, long lines cut, text put in NFC, by `entry_for`.
        if (
            not (query_id and ids.isascii() and len(ids) <= limit)
            or len(encoded) > max_line_bytes
            or not (text.isascii() or is_nfc("NFC", text))
        ):
            entries.append(None)
            parts.append(b"")
            continue
        ts_ns = (read.ts - epoch) // microsecond * 1000
        # `METADATA_FIELDS` order, spelled out: a generator here would cost as much as decoding the line.
        metadata: tuple[tuple[str, str], ...] = (("query_id", query_id),)
        if session_id is not None:
            metadata = (("session_id", session_id), *metadata)
        if user_id is not None:
            metadata = (("user_id", user_id), *metadata)
        if trace_id is not None:
            metadata = (*metadata, ("trace_id", trace_id))
        entries.append(LokiEntry(app, env, kind.tag, ts_ns, text, metadata, read.event_id, False))
        parts.append(encode(_Value(str(ts_ns), text, _Ids(user_id, session_id, query_id, trace_id))))
    return entries, parts
