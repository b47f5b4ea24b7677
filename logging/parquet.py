"""The Parquet projection: events into a hive-partitioned lake, atomically and exactly once.

Layout: ``<lake>/events/date=YYYY-MM-DD/hour=HH/part-<uuid7>.parquet`` (UTC), one flat schema for every
event type (`LAKE_SCHEMA`). Commit protocol for one batch:

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

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import uuid_utils

from querylog.logging.events import AnyEvent
from querylog.logging.projection import Batch, Sink, SinkSendError, atomic_write
from querylog.logging.segments import Checkpoint

__all__ = ["LAKE_SCHEMA", "ParquetSink", "events_to_table"]

LAKE_SCHEMA: Final = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("schema_version", pa.int16()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("query_id", pa.string()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("service", pa.string()),
        ("env", pa.string()),
        ("trace_id", pa.string()),
        ("query_text", pa.string()),
        ("language", pa.string()),
        ("intent", pa.string()),
        ("confidence", pa.float64()),
        ("duration_ms", pa.float64()),
        ("result_count", pa.int32()),
        ("cache_hit", pa.bool_()),
        ("top_score", pa.float64()),
        ("gen_ai_system", pa.string()),
        ("gen_ai_request_model", pa.string()),
        ("gen_ai_usage_input_tokens", pa.int32()),
        ("gen_ai_usage_output_tokens", pa.int32()),
        ("quality_score", pa.float64()),
        ("answer_chars", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("stage", pa.string()),
        ("score", pa.int8()),
        ("comment", pa.string()),
    ]
)
_COLUMNS: Final = tuple(f.name for f in LAKE_SCHEMA if f.name != "event_type")


class _Commit(msgspec.Struct):
    checkpoint: dict[str, int] = {}
    pending: list[tuple[str, str]] = []


def events_to_table(events: Sequence[AnyEvent]) -> pa.Table:
    """Events as one Arrow table of `LAKE_SCHEMA` (fields an event type lacks are null)."""
    arrays = [pa.array([e.event_type for e in events], pa.string())]
    for name in _COLUMNS:
        arrays.append(pa.array([getattr(e, name, None) for e in events], LAKE_SCHEMA.field(name).type))
    return pa.Table.from_arrays([arrays[0], *arrays[1:]], schema=_schema_in_order())


def _schema_in_order() -> pa.Schema:
    return pa.schema([LAKE_SCHEMA.field("event_type"), *(LAKE_SCHEMA.field(n) for n in _COLUMNS)])


class ParquetSink(Sink):
    """Writes batches of events into the lake. See the module docstring for the commit protocol."""

    name = "parquet"

    def __init__(self, lake_dir: Path | str, *, compression: str = "zstd") -> None:
        super().__init__()
        self.lake_dir = Path(lake_dir)
        self.events_dir = self.lake_dir / "events"
        self._meta_dir = self.lake_dir / "_querylog"
        self._tmp_dir = self._meta_dir / "tmp"
        self._commit_path = self._meta_dir / "parquet-commit.json"
        self.compression = compression
        self._commit = _Commit()

    # -- lifecycle -------------------------------------------------------------------------------
    def _open(self) -> None:
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(parents=True, exist_ok=True)
        if self._commit_path.exists():
            self._commit = msgspec.json.decode(self._commit_path.read_bytes(), type=_Commit)
        self._roll_forward()

    def _roll_forward(self) -> None:
        committed = set()
        for tmp_name, final_rel in self._commit.pending:
            committed.add(tmp_name)
            tmp = self._tmp_dir / tmp_name
            if tmp.exists():
                final = self.events_dir / final_rel
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        for stray in self._tmp_dir.iterdir():
            if stray.name not in committed:
                stray.unlink()  # a batch that crashed before its commit: it will be projected again

    def _checkpoint(self) -> Checkpoint:
        return dict(self._commit.checkpoint)

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, batch: Batch) -> None:
        pending: list[tuple[str, str]] = []
        nbytes = 0
        try:
            for (date, hour), rows in _partition(batch.events).items():
                table = events_to_table(rows)
                part = f"part-{uuid_utils.uuid7()}.parquet"
                tmp_name = f"{part}.tmp"
                tmp = self._tmp_dir / tmp_name
                pq.write_table(table, tmp, compression=self.compression)
                with tmp.open("rb+") as fh:
                    os.fsync(fh.fileno())
                nbytes += tmp.stat().st_size
                pending.append((tmp_name, f"date={date}/hour={hour}/{part}"))
            commit = _Commit(checkpoint=dict(batch.checkpoint), pending=pending)
            atomic_write(self._commit_path, msgspec.json.encode(commit))  # the commit point
        except OSError as exc:
            for tmp_name, _ in pending:
                (self._tmp_dir / tmp_name).unlink(missing_ok=True)
            self.telemetry.error("write")
            raise SinkSendError(f"could not write Parquet batch of {len(batch.events)} events: {exc}") from exc
        self._commit = commit
        self._roll_forward()
        if batch.events:
            self.telemetry.sent(len(batch.events), nbytes=nbytes)

    def files(self) -> list[Path]:
        """The lake's committed data files."""
        return sorted(self.events_dir.glob("date=*/hour=*/*.parquet"))


def _partition(events: Sequence[AnyEvent]) -> dict[tuple[str, str], list[AnyEvent]]:
    groups: dict[tuple[str, str], list[AnyEvent]] = defaultdict(list)
    for event in events:
        ts = event.ts
        groups[(f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}", f"{ts.hour:02d}")].append(event)
    return groups
