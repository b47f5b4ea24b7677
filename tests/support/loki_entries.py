"""One event's Loki entry as the sink builds it (through its log line, as in production), and the event back from
what Loki returns: helpers for querylog's own tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from querylog.logging.codec import encode, from_builtins
from querylog.logging.events import AnyEvent, Event
from querylog.logging.loki import METADATA_FIELDS, encode_lines
from querylog.logging.loki.encoding import MAX_LINE_BYTES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    """A pushed entry: its labels, timestamp, line, structured metadata, and whether a line or id was cut."""

    labels: dict[str, str]
    ts_ns: int
    line: str
    metadata: dict[str, str]
    cut: bool


def entry_of(event: Event, *, app: str, env: str, max_line_bytes: int = MAX_LINE_BYTES) -> Entry:
    """The entry `event` becomes: its log line, through the Loki encoder."""
    entries = encode_lines([encode(event)], app=app, env=env, max_line_bytes=max_line_bytes)
    ns, line, *metadata = orjson.loads(entries.values[0])
    assert int(ns) == entries.times[0]
    labels = {"app": app, "env": env, "event": entries.streams[0]}
    return Entry(labels, entries.times[0], line, metadata[0] if metadata else {}, 0 in entries.cut)


def event_from_entry(ts: int | str, line: str, labels: Mapping[str, str]) -> AnyEvent:
    """The event rebuilt from what Loki's query API returns for an entry: its timestamp, line, and labels (the
    stream's merged with the entry's structured metadata)."""
    fields: dict[str, Any] = orjson.loads(line)
    fields.pop("level", None)
    fields["event_type"] = labels["event"]
    fields.setdefault("service", labels["app"])
    fields.setdefault("env", labels["env"])
    for name in METADATA_FIELDS:
        if name in labels:
            fields[name] = labels[name]
    moment = _EPOCH + timedelta(microseconds=int(ts) // 1000)
    fields["ts"] = moment.isoformat().replace("+00:00", "Z")
    return from_builtins(fields)
