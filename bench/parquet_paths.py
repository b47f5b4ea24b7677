"""Faster ways from log lines to the lake's Arrow tables, measured against the Parquet projection's own.

Each path takes the raw lines of one batch and returns ``{(date, hour): table}`` with `LAKE_SCHEMA`'s columns
in the order `events_to_table` writes them; `equal_to_current` proves a path writes the same rows. The
``arrow_json`` path is the prototype of the patch proposed in docs/benchmarks.md: `ProtoParquetProjector`
runs it end to end (read → parse → partition → the sink's own atomic commit), to measure what it would give.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
import uuid_utils

from querylog.logging.codec import decode
from querylog.logging.events import EVENT_CLASSES, EVENT_TYPES, SCHEMA_VERSION, AnyEvent, Event
from querylog.logging.parquet import LAKE_SCHEMA, ParquetSink, _Commit, _partition, events_to_table
from querylog.logging.projection import Batch, Projector, atomic_write

__all__ = ["PATHS", "ProtoParquetProjector", "arrow_json_tables", "equal_to_current"]

Tables = dict[tuple[str, str], pa.Table]

#: The column order `events_to_table` writes (event_type first).
SCHEMA: pa.Schema = pa.schema([LAKE_SCHEMA.field("event_type"), *(f for f in LAKE_SCHEMA if f.name != "event_type")])


def _defaults() -> dict[str, dict[Any, list[str]]]:
    """Non-null defaults per column and the event types they belong to: the encoder leaves default values out
    of each line (``omit_defaults``), so a raw-JSON path must put them back, type by type."""
    out: dict[str, dict[Any, list[str]]] = {}
    for tag, cls in EVENT_CLASSES.items():
        for f in msgspec.structs.fields(cls):
            if f.default is not msgspec.NODEFAULT and f.default is not None and f.name in SCHEMA.names:
                out.setdefault(f.name, {}).setdefault(f.default, []).append(tag)
    return out


DEFAULTS = _defaults()


def fill_defaults(table: pa.Table) -> pa.Table:
    event_type = table.column("event_type")
    for name, by_value in DEFAULTS.items():
        index = table.schema.get_field_index(name)
        column = table.column(index)
        if column.null_count == 0:
            continue
        for value, tags in by_value.items():
            mask = pc.and_(pc.is_null(column), pc.is_in(event_type, pa.array(tags)))
            column = pc.if_else(mask, pa.scalar(value, column.type), column)
        table = table.set_column(index, SCHEMA.field(name), column)
    return table


def partition_table(table: pa.Table) -> Tables:
    """Split by UTC date and hour with Arrow compute (no Python loop over rows)."""
    if table.num_rows == 0:
        return {}
    hours = pc.divide(table.column("ts").cast(pa.int64()), pa.scalar(3_600_000_000, pa.int64()))
    out: Tables = {}
    unique = pc.unique(hours).to_pylist()
    for hour in unique:
        part = table if len(unique) == 1 else table.filter(pc.equal(hours, hour))
        start = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=hour)
        out[(f"{start:%Y-%m-%d}", f"{start:%H}")] = part
    return out


# -- the paths -------------------------------------------------------------------------------------------


def current_tables(lines: Sequence[bytes]) -> Tables:
    """What the projection does today: msgspec decode per line, `_partition`, `events_to_table` per partition."""
    events = [decode(line) for line in lines]
    return {key: events_to_table(rows) for key, rows in _partition(events).items()}


_LIST_DECODER = msgspec.json.Decoder(list[AnyEvent])


def msgspec_list_tables(lines: Sequence[bytes]) -> Tables:
    """One msgspec call for the whole batch (a JSON array), then the same partition and table building."""
    events = _LIST_DECODER.decode(b"[" + b",".join(lines) + b"]")
    return {key: events_to_table(rows) for key, rows in _partition(events).items()}


def _astuple_table(events: Sequence[AnyEvent]) -> pa.Table:
    """Columns by `msgspec.structs.astuple` per event type (one C call per event instead of 30 getattr)."""
    by_type: dict[type[Event], list[AnyEvent]] = defaultdict(list)
    for event in events:
        by_type[type(event)].append(event)
    tables = []
    for cls, rows in by_type.items():
        names = [f.name for f in msgspec.structs.fields(cls)]
        columns = dict(zip(names, zip(*map(msgspec.structs.astuple, rows), strict=True), strict=True))
        tag = cls.__struct_config__.tag  # the event_type value
        arrays = [
            pa.array([tag] * len(rows), pa.string())
            if f.name == "event_type"
            else (pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(len(rows), f.type))
            for f in SCHEMA
        ]
        tables.append(pa.Table.from_arrays(arrays, schema=SCHEMA))
    table = pa.concat_tables(tables)
    # Back to log order (by time) when several types were stacked.
    return table.sort_by([("ts", "ascending")]) if len(tables) > 1 else table


def astuple_tables(lines: Sequence[bytes]) -> Tables:
    events = _LIST_DECODER.decode(b"[" + b",".join(lines) + b"]")
    return {key: _astuple_table(rows) for key, rows in _partition(events).items()}


def _flat_row_type() -> type:
    def annotation(t: pa.DataType) -> Any:
        if pa.types.is_timestamp(t):
            return dt.datetime
        if pa.types.is_string(t):
            return str | None
        if pa.types.is_integer(t):
            return int | None
        if pa.types.is_floating(t):
            return float | None
        return bool | None

    return msgspec.defstruct(
        "FlatRow",
        [(f.name, annotation(f.type), None) for f in SCHEMA],
        forbid_unknown_fields=True,
        gc=False,  # plain data, no cycles: the collector never needs to scan a batch of them
    )


_ROW_DECODER = msgspec.json.Decoder(list[_flat_row_type()])  # type: ignore[valid-type, misc]


def flat_struct_tables(lines: Sequence[bytes]) -> Tables:
    """msgspec straight into one flat, validation-free row type, then columns by astuple."""
    rows = _ROW_DECODER.decode(b"[" + b",".join(lines) + b"]")
    columns = list(zip(*map(msgspec.structs.astuple, rows), strict=True))
    arrays = [pa.array(columns[i], f.type) for i, f in enumerate(SCHEMA)]
    return partition_table(fill_defaults(pa.Table.from_arrays(arrays, schema=SCHEMA)))


def _arrow_json(use_threads: bool) -> Callable[[Sequence[bytes]], Tables | None]:
    parse = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="error")
    read = pj.ReadOptions(use_threads=use_threads, block_size=16 << 20)
    known = pa.array(EVENT_TYPES)

    def tables(lines: Sequence[bytes]) -> Tables | None:
        """Arrow's C++ JSON reader with the lake schema; None when the batch needs the careful path (a line
        that does not parse or has an unknown field, an unknown event type, a missing id or time, or an older
        schema version that needs upcasting)."""
        try:
            table = pj.read_json(io.BytesIO(b"\n".join(lines)), read_options=read, parse_options=parse)
        except pa.ArrowInvalid:
            return None
        if table.num_rows != len(lines):
            return None
        for required in ("event_id", "event_type", "ts", "query_id"):
            if table.column(required).null_count:
                return None
        if not pc.all(pc.is_in(table.column("event_type"), known)).as_py():
            return None
        versions = table.column("schema_version")
        if (
            versions.null_count < len(versions)
            and not pc.all(pc.equal(versions.fill_null(SCHEMA_VERSION), SCHEMA_VERSION)).as_py()
        ):
            return None
        return partition_table(fill_defaults(table.select(SCHEMA.names)))

    return tables


arrow_json_tables = _arrow_json(use_threads=False)
arrow_json_threaded_tables = _arrow_json(use_threads=True)


def _or_current(path: Callable[[Sequence[bytes]], Tables | None]) -> Callable[[Sequence[bytes]], Tables]:
    def tables(lines: Sequence[bytes]) -> Tables:
        out = path(lines)
        return current_tables(lines) if out is None else out

    return tables


PATHS: dict[str, Callable[[Sequence[bytes]], Tables]] = {
    "current (decode per line + getattr columns)": current_tables,
    "msgspec list decode (one call)": msgspec_list_tables,
    "msgspec list decode + astuple columns": astuple_tables,
    "msgspec flat row struct (no validation) + astuple": flat_struct_tables,
    "pyarrow.json read_json, 1 thread": _or_current(arrow_json_tables),
    "pyarrow.json read_json, threads": _or_current(arrow_json_threaded_tables),
}


def equal_to_current(lines: Sequence[bytes], tables: Tables) -> bool:
    reference = current_tables(lines)
    if sorted(reference) != sorted(tables):
        return False
    return all(reference[k].cast(SCHEMA).equals(tables[k].cast(SCHEMA)) for k in reference)


# -- the prototype, end to end -----------------------------------------------------------------------------


class ProtoParquetSink(ParquetSink):
    """ParquetSink whose batch arrives as Arrow tables already. `_write` repeats `ParquetSink._write`'s commit
    protocol (tmp file, fsync, commit file, rename) step for step; only the way rows are built differs."""

    def __init__(self, lake_dir: Path) -> None:
        super().__init__(lake_dir)
        self._tables: Tables = {}

    def write_tables(self, tables: Tables, checkpoint: dict[str, int]) -> None:
        self._tables = tables
        try:
            self.write(Batch(events=(), checkpoint=checkpoint))
        finally:
            self._tables = {}

    def _write(self, batch: Batch) -> None:
        pending: list[tuple[str, str]] = []
        for (date, hour), table in self._tables.items():
            part = f"part-{uuid_utils.uuid7()}.parquet"
            tmp = self._tmp_dir / f"{part}.tmp"
            pq.write_table(table, tmp, compression=self.compression)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            pending.append((tmp.name, f"date={date}/hour={hour}/{part}"))
        commit = _Commit(checkpoint=dict(batch.checkpoint), pending=pending)
        atomic_write(self._commit_path, msgspec.json.encode(commit))  # the commit point
        self._commit = commit
        self._roll_forward()


class ProtoParquetProjector(Projector):
    """A Projector that hands raw lines to `arrow_json_tables`, falling back to the current path for a batch
    the fast path declines (see `_arrow_json`)."""

    fallbacks = 0

    def run_once(self) -> int:
        sink = self.sink
        assert isinstance(sink, ProtoParquetSink)
        batch = self.reader.read(sink.checkpoint(), max_events=self.batch_max_events, max_bytes=self.batch_max_bytes)
        if not batch.lines and batch.checkpoint == sink.checkpoint():
            return 0
        tables = arrow_json_tables(batch.lines)
        if tables is None:
            self.fallbacks += 1
            tables = current_tables(batch.lines)
        sink.write_tables(tables, batch.checkpoint)
        return len(batch.lines)
