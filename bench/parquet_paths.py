"""The two ways the Parquet projection turns log lines into the lake's Arrow tables, measured side by side.

Each path takes the raw lines of one batch and returns ``{(date, hour): table}``; `equal_to_per_line` proves a
path writes the same rows as decoding each line. Both are the product's own code (`logging/parquet.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from querylog.logging.codec import decode
from querylog.logging.parquet import _partition, events_to_table, tables_from_lines

__all__ = ["PATHS", "equal_to_per_line", "per_line_tables"]

Tables = dict[tuple[str, str], pa.Table]


def per_line_tables(lines: Sequence[bytes]) -> Tables:
    """The careful path (and the fast path's fallback): decode and validate each line, then build columns."""
    return {key: events_to_table(rows) for key, rows in _partition([decode(x) for x in lines]).items()}


def _fast_or_per_line(lines: Sequence[bytes]) -> Tables:
    """What the projector runs: Arrow's JSON reader on the whole batch, per line only when that declines."""
    tables = tables_from_lines(lines)
    return per_line_tables(lines) if tables is None else tables


PATHS: dict[str, Callable[[Sequence[bytes]], Tables]] = {
    "per line (decode and validate each event)": per_line_tables,
    "pyarrow.json on the whole batch (the projection's path)": _fast_or_per_line,
}


def equal_to_per_line(lines: Sequence[bytes], tables: Tables) -> bool:
    reference = per_line_tables(lines)
    if sorted(reference) != sorted(tables):
        return False
    return all(reference[k].equals(tables[k].cast(reference[k].schema)) for k in reference)
