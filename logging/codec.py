"""Event ⇄ JSON bytes. Old schema versions are upcast on read; text stays UTF-8 (never ``\\u``-escaped).

An event keeps the `schema_version` it was written under: upcasting brings an old event's *shape* to the
current classes, and the version says which generation the row came from. Log lines of schema v1 leave the
field out (it was their default); every line since writes it, so a log line without it is v1.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec

from querylog.logging.events import SCHEMA_VERSION, AnyEvent, Event

__all__ = [
    "UPCASTERS",
    "DecodeError",
    "decode",
    "decode_many",
    "encode",
    "encode_into",
    "from_builtins",
    "line_time",
    "raw_encode_into",
    "raw_encode_lines",
    "to_builtins",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def upcast_v1_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """Schema v1 → v2. v2 only added optional fields, so a v1 event is a valid v2 shape as it is: its new fields
    stay null (never invented, e.g. no `answer_text` from `answer_chars`), and its old fields are untouched."""
    return obj


def upcast_v2_v3(obj: dict[str, Any]) -> dict[str, Any]:
    """Schema v2 → v3. v3 only admits a null `result_count` (such a search is written as v3): a v2 event is a valid
    v3 shape as it is."""
    return obj


#: ``UPCASTERS[n]`` turns a schema-``n`` event (as a dict) into schema ``n + 1``; events written long ago are
#: then read as current ones.
UPCASTERS: Final[dict[int, Upcaster]] = {1: upcast_v1_v2, 2: upcast_v2_v3}
_VERSION_KEY: Final = b'"schema_version"'
_VERSION_TEXT: Final = '"schema_version"'


class DecodeError(ValueError):
    """Bytes that are not a valid event of any known schema version. The message names the field."""


class _Header(msgspec.Struct):
    schema_version: int = 1


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AnyEvent)
_header_decoder: Final = msgspec.json.Decoder(_Header)
_dict_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def encode(event: Event) -> bytes:
    """Compact UTF-8 JSON, fields with default values left out."""
    return _encoder.encode(event)


#: `encode_into` without the wrapper call, ``(event, buffer, offset)``: the log's append calls it per event.
raw_encode_into: Final = _encoder.encode_into
#: Events as newline-terminated lines, in one call: the log's flush encodes what was appended since the last.
raw_encode_lines: Final = _encoder.encode_lines


def encode_into(event: Event, buffer: bytearray) -> None:
    """`encode`, appended to the end of `buffer` (the log's write buffer) without an intermediate copy."""
    _encoder.encode_into(event, buffer, -1)


def decode(data: bytes | str) -> AnyEvent:
    """Decode one event, upcasting older schema versions. Raises `DecodeError` naming the bad field."""
    try:
        event: AnyEvent = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            version = _header_decoder.decode(data).schema_version
        except msgspec.DecodeError:
            raise DecodeError(str(exc)) from exc
        if version == SCHEMA_VERSION:
            raise DecodeError(str(exc)) from exc
        obj = _dict_decoder.decode(data)
        obj.setdefault("schema_version", version)
        return from_builtins(obj)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
    if (_VERSION_KEY not in data) if isinstance(data, bytes) else (_VERSION_TEXT not in data):
        # A v1 line: it decoded as a current event (v2 only added optional fields); keep the version it was written as.
        msgspec.structs.force_setattr(event, "schema_version", 1)
    return event


class _Stamp(msgspec.Struct):
    ts: datetime | None = None


_stamp_decoder: Final = msgspec.json.Decoder(_Stamp)


def line_time(line: bytes) -> float | None:
    """Unix seconds of a log line's `ts`, read without decoding the event; None for a line without a readable one."""
    try:
        ts = _stamp_decoder.decode(line).ts
    except msgspec.DecodeError:  # ValidationError included
        return None
    return None if ts is None else ts.timestamp()


def decode_many(lines: list[bytes]) -> list[AnyEvent]:
    return [decode(line) for line in lines]


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as a plain dict (datetimes as RFC 3339 strings), as it is written."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result


def from_builtins(obj: dict[str, Any]) -> AnyEvent:
    """Validate a plain dict (an ingest payload, an upcast record) into an event; upcasts old versions."""
    # A producer's dict without a version is of the current one (an old v1 body validates as v2 all the same).
    version = obj.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):  # "2", null: the JSON type is what is wrong
        said = "null" if version is None else type(version).__name__
        raise DecodeError(f"Expected `int` (1..{SCHEMA_VERSION}), got `{said}` - at `$.schema_version`")
    if version < 1 or version > SCHEMA_VERSION:
        raise DecodeError(
            f"Unsupported schema_version {version!r} (this build reads 1..{SCHEMA_VERSION}) - at `$.schema_version`"
        )
    while version < SCHEMA_VERSION:
        upcast = UPCASTERS.get(version)
        if upcast is None:
            raise DecodeError(f"no upcaster from schema_version {version} - at `$.schema_version`")
        obj = upcast(obj)
        version += 1
    try:
        converted: AnyEvent = msgspec.convert(obj, AnyEvent)
        return converted
    except msgspec.ValidationError as exc:
        raise DecodeError(str(exc)) from exc
