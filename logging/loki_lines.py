"""Events → Loki entries and their encoded push values, fast (the Loki projection's hot path).

`entry_for` builds each line as a dict, field by field, and `LokiEntry.encoded` encodes the push value from
the entry again. Here the line is encoded from a struct per event type that holds exactly the fields
`entry_for` writes (msgspec leaves out the ones that are None), and the push value ``["<ns>", "<line>",
{ids}]`` is encoded in one go. The events are the codec's, decoded and validated as every projection's are.

Whatever `entry_for` would change — a line too long for Loki, text not in NFC, an id that is not short ASCII —
comes back as None, and the caller takes `entry_for`'s path for that event. Both paths build the same bytes
(tests/logging/test_loki_lines.py holds them to it).
"""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from querylog.logging.events import EVENT_CLASSES, Event
from querylog.logging.loki_entries import MAX_METADATA_VALUE_BYTES, LokiEntry, line_shape

__all__ = ["fast_entries"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


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
    values: Callable[[Any], tuple[Any, ...]]  # the line's fields, in line order, from the event


def _kind(cls: type[Event]) -> _Kind:
    # The line as `entry_for` writes it (`line_shape`: level, the event's own fields, event_id, schema_version),
    # then service and env only where they differ from the labels. None is left out (msgspec's omit_defaults).
    shape = line_shape(cls)
    line_type = msgspec.defstruct(
        f"_Line{cls.__name__}",
        [("level", str), *((name, Any, None) for name in shape.names), ("service", Any, None), ("env", Any, None)],
        omit_defaults=True,
        gc=False,
    )
    return _Kind(shape.event, shape.level, line_type, operator.attrgetter(*shape.names))


_KINDS: Final[dict[type, _Kind]] = {cls: _kind(cls) for cls in EVENT_CLASSES.values()}
_ENCODER: Final = msgspec.json.Encoder()


def fast_entries(
    events: Sequence[Event], *, app: str, env: str, max_line_bytes: int
) -> tuple[list[LokiEntry | None], list[bytes]]:
    """The Loki entry of each event and its encoded push value; None (and ``b""``) where `entry_for` must
    decide. One loop over the batch, its lookups hoisted."""
    encode, kinds = _ENCODER.encode, _KINDS
    is_nfc, epoch, microsecond, limit = unicodedata.is_normalized, _EPOCH, _MICROSECOND, MAX_METADATA_VALUE_BYTES
    entries: list[LokiEntry | None] = []
    parts: list[bytes] = []
    seen: dict[tuple[str | None, ...], tuple[tuple[str, str], ...]] = {}
    for event in events:
        kind = kinds.get(type(event))
        query_id, session_id, user_id, trace_id = event.query_id, event.session_id, event.user_id, event.trace_id
        ids = query_id + (session_id or "") + (user_id or "") + (trace_id or "")
        if kind is None or not (ids.isascii() and len(ids) <= limit):
            entries.append(None)  # not one of ours; or ids `entry_for` cleans and caps
            parts.append(b"")
            continue
        service, event_env = event.service, event.env
        encoded = encode(
            kind.line_type(
                kind.level,
                *kind.values(event),
                None if service == app else service,
                None if event_env == env else event_env,
            )
        )
        text = encoded.decode()
        if len(encoded) > max_line_bytes or not (text.isascii() or is_nfc("NFC", text)):
            entries.append(None)  # cut to fit, or put in NFC, by `entry_for`
            parts.append(b"")
            continue
        ts_ns = (event.ts - epoch) // microsecond * 1000
        # A query's events share their ids: one metadata tuple for them all costs less to build, and leaves
        # fewer objects for the garbage collector to track while the batch waits its turn.
        key = (user_id, session_id, query_id, trace_id)
        metadata = seen.get(key)
        if metadata is None:
            # `METADATA_FIELDS` order, spelled out: a generator here costs as much as the rest of the loop.
            metadata = (("query_id", query_id),)
            if session_id is not None:
                metadata = (("session_id", session_id), *metadata)
            if user_id is not None:
                metadata = (("user_id", user_id), *metadata)
            if trace_id is not None:
                metadata = (*metadata, ("trace_id", trace_id))
            seen[key] = metadata
        entries.append(LokiEntry(app, env, kind.tag, ts_ns, text, metadata, event.event_id, False))
        parts.append(encode(_Value(str(ts_ns), text, _Ids(user_id, session_id, query_id, trace_id))))
    return entries, parts
