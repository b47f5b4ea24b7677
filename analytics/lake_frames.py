"""The lake as a polars LazyFrame, every generation of file read with the current schema.

DuckDB's views (`querylog.analytics.catalog`) already union old and new files by name. polars, left to itself,
takes the first file's columns as the schema and refuses a later file that has more (a v1 file next to a v2
one); given `LAKE_SCHEMA` it fills what an older file lacks with nulls instead.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from querylog.logging.schema import LAKE_SCHEMA

__all__ = ["lake_polars_schema", "scan_lake"]


def lake_polars_schema() -> pl.Schema:
    """`LAKE_SCHEMA` in polars' types (the lake's columns, without the date/hour partition keys)."""
    frame = pl.from_arrow(LAKE_SCHEMA.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


def scan_lake(lake_dir: Path | str) -> pl.LazyFrame:
    """Every event of the lake at `lake_dir` (a local directory): ``scan_lake(".querylog/lake").filter(...)``.
    A file that is compacted away between planning and reading makes the collect fail: run it again."""
    pattern = str(Path(lake_dir) / "events" / "date=*" / "hour=*" / "*.parquet")
    return pl.scan_parquet(pattern, schema=lake_polars_schema(), missing_columns="insert", hive_partitioning=False)
