"""The lake's schema and the other forms of the event schema, derived from the event classes (the one definition).

- `LAKE_SCHEMA`: one Arrow column per event field (the same name in several event types is one column, and must
  have one type), ``event_type`` second, then `DERIVED_COLUMNS`: what the Parquet projection computes
  (`cost_usd` priced from tokens, `cost_source`).
- `PERSONAL_TEXT_FIELDS`: the free-text fields a producer controls, which are NFC-normalised and redacted before
  any sink sees them, with the nested ones (`attributes` values, `sources[].title`).
- `MAP_COLUMNS`: columns stored as Arrow maps (``attributes``), which Arrow's JSON reader cannot parse directly.

Arrow types follow the annotations: ``str`` → string, ``int`` → int32 (or the narrower type an ``arrow`` extra
names), ``float`` → float64, ``bool`` → bool, ``datetime`` → timestamp[us, UTC], ``tuple[X, ...]`` → list,
``dict[str, X]`` → map, a Struct → struct.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec.inspect as mi
import pyarrow as pa

from querylog.logging.events import EVENT_CLASSES, Event, redacted_tag

__all__ = [
    "DERIVED_COLUMNS",
    "EVENT_FIELD_TYPES",
    "LAKE_SCHEMA",
    "MAP_COLUMNS",
    "NESTED_PERSONAL_TEXT",
    "PERSONAL_TEXT_FIELDS",
    "SchemaDefinitionError",
    "arrow_type",
    "event_field_names",
    "redact_fields",
]


class SchemaDefinitionError(TypeError):
    """The event classes define something the lake cannot hold (e.g. one field name with two types)."""


_NARROW: Final = {"int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64()}


def _check_int_bounds(info: mi.IntType, kind: pa.DataType) -> None:
    """An int field's bounds must keep it inside its column's type: a value past them would be taken at ingest and
    then refused by every Parquet write, holding up the lake behind it (a 2**40 token count did)."""
    low, high = -(1 << (kind.bit_width - 1)), (1 << (kind.bit_width - 1)) - 1
    ge = info.ge if info.ge is not None else (None if info.gt is None else info.gt + 1)
    le = info.le if info.le is not None else (None if info.lt is None else info.lt - 1)
    if ge is None or le is None or ge < low or le > high:
        raise SchemaDefinitionError(
            f"an int field stored as {kind} needs bounds within [{low}, {high}] (msgspec.Meta ge/le); got "
            f"ge={ge}, le={le}"
        )


def arrow_type(info: mi.Type) -> pa.DataType:
    """The Arrow type of one msgspec type (a field's annotation), nullability aside."""
    if isinstance(info, mi.UnionType):
        inner = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(inner) != 1:
            raise SchemaDefinitionError(f"a lake column holds one type, not a union of {inner}")
        return arrow_type(inner[0])
    if isinstance(info, mi.Metadata):
        name = (info.extra or {}).get("arrow")
        if name is None:
            return arrow_type(info.type)
        if isinstance(info.type, mi.IntType):
            _check_int_bounds(info.type, _NARROW[name])
        return _NARROW[name]
    if isinstance(info, mi.StrType):
        return pa.string()
    if isinstance(info, mi.BoolType):
        return pa.bool_()
    if isinstance(info, mi.IntType):
        _check_int_bounds(info, pa.int32())
        return pa.int32()
    if isinstance(info, mi.FloatType):
        return pa.float64()
    if isinstance(info, mi.DateTimeType):
        return pa.timestamp("us", tz="UTC")
    if isinstance(info, mi.VarTupleType | mi.ListType):
        return pa.list_(arrow_type(info.item_type))
    if isinstance(info, mi.DictType):
        return pa.map_(arrow_type(info.key_type), arrow_type(info.value_type))
    if isinstance(info, mi.StructType):
        return pa.struct([(f.name, arrow_type(f.type)) for f in info.fields])
    raise SchemaDefinitionError(f"no lake type for {info!r}")


def _field_types() -> dict[str, mi.Type]:
    """Every event field once, in lake order: the base fields, then each type's own, in `EVENT_CLASSES` order."""
    out: dict[str, mi.Type] = {}
    owners: dict[str, str] = {}
    classes: tuple[type[Event], ...] = (Event, *EVENT_CLASSES.values())
    for cls in classes:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for f in info.fields:
            if f.name in out:
                if arrow_type(out[f.name]) != arrow_type(f.type):
                    raise SchemaDefinitionError(
                        f"field {f.name!r} is {arrow_type(out[f.name])} in {owners[f.name]} but "
                        f"{arrow_type(f.type)} in {cls.__name__}: one name, one type"
                    )
                continue
            out[f.name] = f.type
            owners[f.name] = cls.__name__
    return out


#: Every event field's msgspec type, in lake order (``event_type``, the tag, is not a field).
EVENT_FIELD_TYPES: Final = _field_types()

#: Columns the Parquet projection computes from the events (not recorded in any event), with their types.
#: `cost_usd` is also an event field (the cost a provider reported); the lake's column holds that when it was
#: recorded, else the price table's figure for the tokens, and `cost_source` says which.
DERIVED_COLUMNS: Final[dict[str, pa.DataType]] = {"cost_source": pa.string()}


def _lake_schema() -> pa.Schema:
    fields = [pa.field(name, arrow_type(info)) for name, info in EVENT_FIELD_TYPES.items()]
    fields.insert(1, pa.field("event_type", pa.string()))
    fields.extend(pa.field(name, kind) for name, kind in DERIVED_COLUMNS.items())
    return pa.schema(fields)


#: The lake's one flat schema for every event type (fields an event type lacks are null).
LAKE_SCHEMA: Final = _lake_schema()

#: Columns of Arrow map type: parsed from JSON objects by hand (Arrow's JSON reader has no map conversion).
MAP_COLUMNS: Final = tuple(f.name for f in LAKE_SCHEMA if pa.types.is_map(f.type))

#: Top-level free-text fields a producer controls: redacted and NFC-normalised before any sink.
PERSONAL_TEXT_FIELDS: Final = ("query_text", "error_message", "comment", "answer_text")
#: Text inside nested fields, redacted likewise: (field, key) — every value of a map, or a key of each struct.
NESTED_PERSONAL_TEXT: Final = (("attributes", None), ("sources", "title"))


def event_field_names() -> tuple[str, ...]:
    """Every event field, plus ``event_type``: what a view over events must offer."""
    return ("event_type", *EVENT_FIELD_TYPES)


def _check_personal_fields() -> None:
    for name in PERSONAL_TEXT_FIELDS:
        if name not in EVENT_FIELD_TYPES:
            raise SchemaDefinitionError(f"personal text field {name!r} is not an event field")


_check_personal_fields()


def redact_fields(obj: dict[str, Any], redact: Callable[[str], str], normalize: Callable[[str], str]) -> dict[str, Any]:
    """`obj` (an event as a dict, e.g. an ingest payload) with every personal text field passed through
    ``redact(normalize(text))``: the top-level ones, each tag, each `attributes` value and each source's title."""
    for key in PERSONAL_TEXT_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            obj[key] = redact(normalize(value))
    tags = obj.get("tags")
    if isinstance(tags, list):
        obj["tags"] = [redacted_tag(normalize(t), redact) if isinstance(t, str) else t for t in tags]
    attributes = obj.get("attributes")
    if isinstance(attributes, dict):
        obj["attributes"] = {k: redact(normalize(v)) if isinstance(v, str) else v for k, v in attributes.items()}
    sources = obj.get("sources")
    if isinstance(sources, list):
        obj["sources"] = [
            {**s, "title": redact(normalize(s["title"]))}
            if isinstance(s, dict) and isinstance(s.get("title"), str)
            else s
            for s in sources
        ]
    return obj
