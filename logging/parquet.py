"""The Parquet projection: events into a hive-partitioned lake, atomically and exactly once.

Layout: ``<lake>/events/date=YYYY-MM-DD/hour=HH/part-<uuid7>.parquet`` (UTC), one flat schema for every
event type (`LAKE_SCHEMA`, derived from the event classes in `querylog.logging.schema`), plus the cost the
price table gives each answer (`querylog.logging.pricing`). Commit protocol for one batch:

1. write each partition's rows to ``<lake>/_querylog/tmp/`` and fsync (invisible to readers: outside
   ``events/``, and not named ``*.parquet``);
2. atomically replace ``<lake>/_querylog/parquet-commit.json`` with the new checkpoint *and* the list of
   (tmp, final) renames — this is the commit point;
3. rename the files into place.

On open, renames listed in the commit file are rolled forward and any other tmp file (a batch that never
committed) is deleted; the checkpoint then says exactly where to resume. No reader ever sees a half-written
file, and no event is written twice or lost across restarts.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import structlog
import uuid_utils

from querylog.logging.events import ADDITIVE_SINCE, EVENT_CLASSES, EVENT_TYPES, SCHEMA_VERSION, AnyEvent
from querylog.logging.pricing import DEFAULT_PRICES, PriceTable
from querylog.logging.projection import Batch, Prepared, Sink, SinkError, SinkSendError, atomic_write
from querylog.logging.schema import (
    DERIVED_COLUMNS,
    EVENT_FIELD_TYPES,
    LAKE_SCHEMA,
    MAP_COLUMNS,
    SchemaDefinitionError,
)
from querylog.logging.segments import Checkpoint

__all__ = [
    "LAKE_SCHEMA",
    "FastPathDeclinedError",
    "ParquetSink",
    "events_to_table",
    "lake_files",
    "rows_from_lines",
    "tables_from_lines",
]

_COLUMNS: Final = tuple(f.name for f in LAKE_SCHEMA if f.name != "event_type")
_EVENT_COLUMNS: Final = tuple(name for name in _COLUMNS if name in EVENT_FIELD_TYPES)
_NESTED: Final = frozenset(f.name for f in LAKE_SCHEMA if pa.types.is_nested(f.type))
_log = structlog.get_logger("querylog.parquet")


_META_DIR: Final = "_querylog"
_COMMIT_FILE: Final = "parquet-commit.json"


class _Commit(msgspec.Struct):
    # Required when read: a record without its position (``{}``) would project the whole log into the lake again.
    checkpoint: dict[str, Annotated[int, msgspec.Meta(ge=0)]]
    pending: list[tuple[str, str]] = []
    #: The newest schema version the committing release reads; None from releases before it was written, which
    #: read schema v1 only (`ParquetSink.committed_by_an_older_release`).
    reads_schema: int | None = None


def _read_commit(path: Path) -> _Commit:
    """The lake's commit record; `SinkError` naming it and the way out when it cannot be read."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Commit)
    except (msgspec.DecodeError, IsADirectoryError) as exc:
        raise SinkError(
            f"the lake's commit record {path} is unreadable ({exc}): `querylog replay parquet` rebuilds the lake "
            "from the log"
        ) from exc


def events_to_table(events: Sequence[AnyEvent], prices: PriceTable = DEFAULT_PRICES) -> pa.Table:
    """Events as one Arrow table of `LAKE_SCHEMA` (fields an event type lacks are null), priced."""
    arrays = [pa.array([e.event_type for e in events], pa.string())]
    for name in _COLUMNS:
        kind = LAKE_SCHEMA.field(name).type
        if name in DERIVED_COLUMNS:
            arrays.append(pa.nulls(len(events), kind))
        elif name in _NESTED:  # structs (sources) as dicts, tuples as lists, maps as pairs: what Arrow takes
            values = [getattr(e, name, None) for e in events]
            arrays.append(pa.array([None if v is None else _nested(v) for v in values], kind))
        else:
            arrays.append(pa.array([getattr(e, name, None) for e in events], kind))
    return prices.apply(pa.Table.from_arrays([arrays[0], *arrays[1:]], schema=_schema_in_order()))


def _nested(value: Any) -> Any:
    if isinstance(value, dict):
        return list(value.items())
    return msgspec.to_builtins(value)


def _schema_in_order() -> pa.Schema:
    return pa.schema([LAKE_SCHEMA.field("event_type"), *(LAKE_SCHEMA.field(n) for n in _COLUMNS)])


# -- the fast path: raw log lines straight to Arrow ------------------------------------------------------------
# Decoding each line into an event and reading its attributes back out of it is ~90% of this projection's CPU
# (docs/benchmarks.md). The log's lines are already the lake's rows as JSON: Arrow's C++ reader parses a whole
# batch in one call, and each column is then conformed to the lake's type. It declines (FastPathDeclinedError)
# anything the careful path must see.
#
# Only the fields every line has are given to the reader; it infers the others from what the batch holds. An
# explicit field costs the reader a null per line that lacks it, and most of the 40-odd event fields are absent
# from most lines: inferring them parses a batch about 30% faster than naming them all.

_ROW_SCHEMA: Final = _schema_in_order()
#: The fields every line carries, parsed as the lake types them (the time as a timestamp, not a string).
_PARSE_SCHEMA: Final = pa.schema([_ROW_SCHEMA.field(n) for n in ("event_type", "event_id", "ts", "query_id")])
#: Arrow's JSON reader parses blocks of this size at once on its CPU pool (as many as it has threads: the cores, or
#: ``OMP_NUM_THREADS``). A batch of a second's events is one block; a catch-up batch is parsed on every core.
_BLOCK_BYTES: Final = 1 << 20
_PARSE_OPTIONS: Final = pa_json.ParseOptions(explicit_schema=_PARSE_SCHEMA, unexpected_field_behavior="infer")
#: Columns whose values come from a small set: dictionary-encoded in the files. The others (ids, texts,
#: numbers) are written plain: trying a dictionary on them costs a fifth of the write and makes files bigger.
DICTIONARY_COLUMNS: Final = (
    "event_type", "service", "env", "intent", "stage", "language", "gen_ai_system", "gen_ai_request_model",
    "gen_ai_response_model", "response_type", "finish_reason", "error_type", "release", "prompt_version",
    "cost_source",
)  # fmt: skip
if not set(DICTIONARY_COLUMNS) <= set(_ROW_SCHEMA.names):  # one schema: a renamed field must be renamed here too
    raise SchemaDefinitionError(f"not lake columns: {sorted(set(DICTIONARY_COLUMNS) - set(_ROW_SCHEMA.names))}")
_HOUR_US: Final = 3_600_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _defaults() -> dict[str, dict[Any, list[str]]]:
    """Non-null defaults per column and the event types they belong to: the codec leaves default values out of
    each line (``omit_defaults``), so a raw-JSON path puts them back, type by type."""
    out: dict[str, dict[Any, list[str]]] = {}
    for tag, cls in EVENT_CLASSES.items():
        for f in msgspec.structs.fields(cls):
            if f.default is not msgspec.NODEFAULT and f.default is not None and f.name in _ROW_SCHEMA.names:
                out.setdefault(f.name, {}).setdefault(f.default, []).append(tag)
    return out


_DEFAULTS: Final = _defaults()


class FastPathDeclinedError(Exception):
    """The fast path cannot take this batch whole; `reason` is counted as a fallback (see `ParquetSink.prepare`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def tables_from_lines(
    lines: Sequence[bytes], prices: PriceTable = DEFAULT_PRICES
) -> dict[tuple[str, str], pa.Table] | None:
    """The lake's rows for these log lines, by (date, hour) — exactly what `events_to_table` builds from the
    decoded events — or None when the per-line path must see them (`rows_from_lines` says why)."""
    try:
        return rows_from_lines(lines, prices)
    except FastPathDeclinedError:
        return None


def rows_from_lines(lines: Sequence[bytes], prices: PriceTable = DEFAULT_PRICES) -> dict[tuple[str, str], pa.Table]:
    """`tables_from_lines`, raising `FastPathDeclinedError` with the reason when a line does not parse, has an
    unknown field or event type, lacks an id or a time, or is of a schema version that needs its upcaster."""
    body = b"\n".join(lines)
    # A line longer than a block would straddle two: the reader refuses that, so a block holds the longest line.
    block = max(_BLOCK_BYTES, max(map(len, lines), default=0) + 1)
    try:
        try:
            table = _read_json(body, block)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            # Blocks whose inferred types Arrow cannot merge: one block with only empty or null `sources`, or
            # none, and another with some. Read as one block, types are inferred from every line at once.
            table = _read_json(body, len(body) + 1)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise FastPathDeclinedError("unparsable_line") from None
    if table.num_rows != len(lines) or any(
        table.column(c).null_count for c in ("event_id", "event_type", "ts", "query_id")
    ):
        raise FastPathDeclinedError("missing_required_field")
    unknown = set(table.column_names) - set(_ROW_SCHEMA.names)
    if unknown:
        raise FastPathDeclinedError("unknown_field")
    if not pc.all(pc.is_in(table.column("event_type"), pa.array(EVENT_TYPES, pa.string()))).as_py():
        raise FastPathDeclinedError("unknown_event_type")
    # A line without `schema_version` is v1 (v1 left its default out); versions from ADDITIVE_SINCE on read as
    # current ones field for field, so they take this path with their version kept.
    versions = (
        _conform(table.column("schema_version"), _ROW_SCHEMA.field("schema_version").type).fill_null(1)
        if "schema_version" in table.column_names
        else pa.array([1] * table.num_rows, _ROW_SCHEMA.field("schema_version").type)
    )
    if not pc.all(pc.and_(pc.greater_equal(versions, ADDITIVE_SINCE), pc.less_equal(versions, SCHEMA_VERSION))).as_py():
        raise FastPathDeclinedError("schema_version")
    columns = []
    for field in _ROW_SCHEMA:
        if field.name == "schema_version":
            columns.append(versions)
        elif field.name in MAP_COLUMNS:
            columns.append(_map_column(table, field))
        elif field.name in DERIVED_COLUMNS or field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            columns.append(_conform(table.column(field.name), field.type))
    table = pa.Table.from_arrays(columns, schema=_ROW_SCHEMA)
    event_type = table.column("event_type")
    for name, by_value in _DEFAULTS.items():
        index = table.schema.get_field_index(name)
        column = table.column(index)
        if column.null_count == 0:
            continue
        for value, tags in by_value.items():
            missing = pc.and_(pc.is_null(column), pc.is_in(event_type, pa.array(tags)))
            column = pc.if_else(missing, pa.scalar(value, column.type), column)
        table = table.set_column(index, _ROW_SCHEMA.field(name), column)
    table = prices.apply(table)
    # Each event's hour since the epoch, floored: an integer divide rounds toward zero, which put an event of
    # 1969-12-31T23:59Z in 1970-01-01's hour 00.
    micros = table.column("ts").cast(pa.int64())
    one_hour = pa.scalar(_HOUR_US, pa.int64())  # made here: an Arrow value at import imports pandas (0.3 s)
    quotient = pc.divide(micros, one_hour)
    hours = pc.subtract(quotient, pc.cast(pc.less(micros, pc.multiply(quotient, one_hour)), pa.int64()))
    unique = pc.unique(hours).to_pylist()
    out: dict[tuple[str, str], pa.Table] = {}
    for hour in unique:
        start = _EPOCH + timedelta(hours=hour)
        # The same names as `_partition`'s: `%Y` does not pad years before 1000 on Linux.
        day = f"{start.year:04d}-{start.month:02d}-{start.day:02d}"
        out[(day, f"{start.hour:02d}")] = table if len(unique) == 1 else table.filter(pc.equal(hours, hour))
    return out


def _read_json(body: bytes, block_size: int) -> pa.Table:
    options = pa_json.ReadOptions(use_threads=True, block_size=block_size)
    return pa_json.read_json(io.BytesIO(body), read_options=options, parse_options=_PARSE_OPTIONS)


def _conform(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """An inferred column as the lake types it: integers widened or narrowed (safely), integers as floats where the
    field is a float, structs matched by field name (a field no line had is null), a column of nulls typed.
    Anything else declines the batch ("nested_shape")."""
    if column.type == target:
        return column
    try:
        return pa.chunked_array([_conform_array(chunk, target) for chunk in column.chunks], target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise FastPathDeclinedError("nested_shape") from None


def _conform_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    kind = array.type
    if kind == target:
        return array
    if pa.types.is_null(kind):
        return pa.nulls(len(array), target)
    if pa.types.is_list(target) and pa.types.is_list(kind):
        array = array if array.offset == 0 else pa.concat_arrays([array])
        values = _conform_array(array.values, target.value_type)
        return pa.ListArray.from_arrays(array.offsets, values, type=target, mask=array.is_null())
    if pa.types.is_struct(target) and pa.types.is_struct(kind):
        names = {kind.field(i).name for i in range(kind.num_fields)}
        if not names <= {f.name for f in target}:
            raise FastPathDeclinedError("nested_shape")  # e.g. a source with a field the schema does not know
        children = [
            _conform_array(array.field(f.name), f.type) if f.name in names else pa.nulls(len(array), f.type)
            for f in target
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if pa.types.is_integer(kind) and (pa.types.is_integer(target) or pa.types.is_floating(target)):
        return array.cast(target)  # safe: an integer out of the target's range raises, and the batch falls back
    raise FastPathDeclinedError("nested_shape")


def _map_column(table: pa.Table, field: pa.Field) -> pa.ChunkedArray | pa.Array:
    """A JSON-object column (inferred by Arrow as a struct of every key seen) as the lake's map type."""
    if field.name not in table.column_names:
        return pa.nulls(table.num_rows, field.type)
    column = table.column(field.name)
    value_type = field.type.item_type
    if not pa.types.is_struct(column.type) or any(
        not (
            child.type == value_type
            or pa.types.is_null(child.type)
            or (pa.types.is_floating(value_type) and pa.types.is_integer(child.type))
        )
        for child in column.type
    ):
        raise FastPathDeclinedError("nested_shape")
    # Keys sorted, as the events keep them: the struct's field order is the batch's, not each line's.
    rows = [
        None if row is None else sorted((k, v) for k, v in row.items() if v is not None) for row in column.to_pylist()
    ]
    return pa.array(rows, field.type)


#: Tries to move a committed batch file into its hour directory while `compact` may swap that directory's day.
_MOVE_ATTEMPTS: Final = 5


class ParquetSink(Sink):
    """Writes batches of events into the lake. See the module docstring for the commit protocol."""

    name = "parquet"

    def __init__(self, lake_dir: Path | str, *, compression: str = "zstd", prices: PriceTable = DEFAULT_PRICES) -> None:
        super().__init__()
        self.prices = prices
        self.lake_dir = Path(lake_dir)
        self.events_dir = self.lake_dir / "events"
        self._meta_dir = self.lake_dir / _META_DIR
        self._tmp_dir = self._meta_dir / "tmp"
        self._commit_path = self._meta_dir / _COMMIT_FILE
        self.compression = compression
        self._commit = _Commit(checkpoint={})

    @staticmethod
    def committed_checkpoint(lake_dir: Path) -> Checkpoint:
        """The log position the lake's committed files reach, read without opening a sink (no roll-forward, so
        safe while another process writes the lake)."""
        path = lake_dir / _META_DIR / _COMMIT_FILE
        return dict(_read_commit(path).checkpoint) if path.exists() else {}

    @staticmethod
    def committed_by_an_older_release(lake_dir: Path, since: float) -> bool:
        """Whether a release that reads an older schema committed the lake after `since` (Unix seconds): one that
        leads the projection of a data directory this release writes to skips the newer events as corrupt."""
        path = lake_dir / _META_DIR / _COMMIT_FILE
        try:
            if path.stat().st_mtime <= since:
                return False
            reads = _read_commit(path).reads_schema
        except (OSError, SinkError):  # none yet, or unreadable: the lake's own errors say so where it is read
            return False
        return reads is None or reads < SCHEMA_VERSION

    # -- lifecycle -------------------------------------------------------------------------------
    def _open(self) -> None:
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(parents=True, exist_ok=True)
        self._resume(strays=False)

    def _resume(self, *, strays: bool = True) -> None:
        """The last commit, rolled forward. `strays`: also delete the files no commit names (a batch that crashed
        before its commit: it will be projected again), which only the leader may do: opened beside a leader
        (a standby, `project --once`), they are the leader's batch being written."""
        if self._commit_path.exists():
            self._commit = _read_commit(self._commit_path)
        elif next(self.events_dir.glob("date=*/hour=*/*.parquet"), None) is not None:
            raise SinkError(
                f"the lake {self.lake_dir} holds files but no commit record ({self._commit_path}) to say which log "
                "events they are: projecting the log into it again would write every event twice; `querylog replay "
                "parquet` rebuilds the lake from the log"
            )
        self._roll_forward()
        if strays:
            committed = {tmp_name for tmp_name, _ in self._commit.pending}
            for stray in self._tmp_dir.iterdir():
                if stray.name not in committed:
                    stray.unlink(missing_ok=True)

    def _roll_forward(self) -> None:
        for tmp_name, final_rel in self._commit.pending:
            tmp, final = self._tmp_dir / tmp_name, self.events_dir / final_rel
            for _ in range(_MOVE_ATTEMPTS):
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp, final)
                    break
                except FileNotFoundError:
                    if not tmp.exists():
                        break  # moved already (by the writer, or another roll-forward)
                    # The hour directory went between the mkdir and the move: `compact` exchanged its day for
                    # one made before this hour had files. Make it again in the new day.
            else:  # still in tmp/, and named by the commit: the next batch's commit carries it and moves it again
                _log.warning("parquet_file_move_deferred", file=final_rel, attempts=_MOVE_ATTEMPTS)

    def _checkpoint(self) -> Checkpoint:
        return dict(self._commit.checkpoint)

    # -- writing ---------------------------------------------------------------------------------
    def prepare(self, lines: Sequence[bytes]) -> Prepared | None:
        try:
            tables = rows_from_lines(lines, self.prices)
        except FastPathDeclinedError as declined:
            # Counted (querylog_sink_fallbacks_total) and logged once per reason: a schema change that made every
            # batch take the slow path must never go unnoticed.
            if self.telemetry.fell_back(declined.reason):
                _log.warning("parquet_fast_path_declined", reason=declined.reason, lines=len(lines))
            return None
        last = max((pc.max(t.column("ts")).as_py() for t in tables.values()), default=None)
        return Prepared(rows=tables, count=len(lines), last_ts=last)

    def _write(self, batch: Batch) -> None:
        # A committed file not moved into its hour yet (`_roll_forward`) stays named by every commit until it is.
        carried = [(t, f) for t, f in self._commit.pending if (self._tmp_dir / t).exists()]
        pending: list[tuple[str, str]] = []
        nbytes = 0
        groups: Mapping[tuple[str, str], pa.Table]
        if batch.prepared is not None:
            groups = batch.prepared.rows  # type: ignore[assignment]  # what prepare() built
        else:
            groups = {key: events_to_table(rows, self.prices) for key, rows in _partition(batch.events).items()}
        try:
            for (date, hour), table in groups.items():
                part = f"part-{uuid_utils.uuid7()}.parquet"
                tmp_name = f"{part}.tmp"
                tmp = self._tmp_dir / tmp_name
                pq.write_table(table, tmp, compression=self.compression, use_dictionary=list(DICTIONARY_COLUMNS))
                with tmp.open("rb+") as fh:
                    os.fsync(fh.fileno())
                nbytes += tmp.stat().st_size
                pending.append((tmp_name, f"date={date}/hour={hour}/{part}"))
            commit = _Commit(checkpoint=dict(batch.checkpoint), pending=carried + pending, reads_schema=SCHEMA_VERSION)
            atomic_write(self._commit_path, msgspec.json.encode(commit))  # the commit point
        except OSError as exc:
            for tmp_name, _ in pending:
                (self._tmp_dir / tmp_name).unlink(missing_ok=True)
            # Not counted here: whoever catches the failure counts it once (the projector, as for every sink).
            # A batch of no event still moves the lake's checkpoint past lines no event came of (blanked, corrupt).
            what = (
                f"Parquet batch of {batch.count} events" if batch.count else "lake's checkpoint (a batch of no event)"
            )
            raise SinkSendError(f"could not write the {what}: {exc}") from exc
        self._commit = commit
        self._roll_forward()
        if batch.count:
            self.telemetry.sent(batch.count, nbytes=nbytes)

    def files(self) -> list[Path]:
        """The lake's committed data files."""
        return lake_files(self.lake_dir)


def lake_files(lake_dir: Path) -> list[Path]:
    """The data files of the lake at `lake_dir` (``events/date=*/hour=*/*.parquet``), in path order."""
    return sorted((lake_dir / "events").glob("date=*/hour=*/*.parquet"))


def _partition(events: Sequence[AnyEvent]) -> dict[tuple[str, str], list[AnyEvent]]:
    groups: dict[tuple[str, str], list[AnyEvent]] = defaultdict(list)
    for event in events:
        ts = event.ts
        groups[(f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}", f"{ts.hour:02d}")].append(event)
    return groups
