"""Event ⇄ JSON bytes. Old schema versions are upcast on read; text stays UTF-8 (never ``\\u``-escaped)."""

from __future__ import annotations

from collections.abc import Callable
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
    "to_builtins",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: ``UPCASTERS[n]`` turns a schema-``n`` event (as a dict) into schema ``n + 1``. Schema v2 adds
#: ``UPCASTERS[1] = upcast_v1_v2``; events written long ago are then read as current ones.
UPCASTERS: Final[dict[int, Upcaster]] = {}


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


def encode_into(event: Event, buffer: bytearray) -> None:
    """`encode`, appended to the end of `buffer` (the log's write buffer) without an intermediate copy."""
    _encoder.encode_into(event, buffer, -1)


def decode(data: bytes | str) -> AnyEvent:
    """Decode one event, upcasting older schema versions. Raises `DecodeError` naming the bad field."""
    try:
        event: AnyEvent = _decoder.decode(data)
        return event
    except msgspec.ValidationError as exc:
        try:
            version = _header_decoder.decode(data).schema_version
        except msgspec.DecodeError:
            raise DecodeError(str(exc)) from exc
        if version == SCHEMA_VERSION:
            raise DecodeError(str(exc)) from exc
        return from_builtins(_dict_decoder.decode(data))
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode_many(lines: list[bytes]) -> list[AnyEvent]:
    return [decode(line) for line in lines]


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as a plain dict (datetimes as RFC 3339 strings), as it is written."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result


def from_builtins(obj: dict[str, Any]) -> AnyEvent:
    """Validate a plain dict (an ingest payload, an upcast record) into an event; upcasts old versions."""
    version = obj.get("schema_version", 1)
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
        raise DecodeError(
            f"Unsupported schema_version {version!r} (this build reads 1..{SCHEMA_VERSION}) - at `$.schema_version`"
        )
    while version < SCHEMA_VERSION:
        upcast = UPCASTERS.get(version)
        if upcast is None:
            raise DecodeError(f"no upcaster from schema_version {version} - at `$.schema_version`")
        obj = upcast(obj)
        version += 1
        obj["schema_version"] = version
    try:
        converted: AnyEvent = msgspec.convert(obj, AnyEvent)
        return converted
    except msgspec.ValidationError as exc:
        raise DecodeError(str(exc)) from exc
