"""Subcommands of the ``querylog`` CLI: each module has ``add_parser(subparsers)`` and sets ``run``."""

import sys

#: In `--help` order. Heavy imports (DuckDB, uvicorn, Streamlit) happen inside each command's `run`.
COMMANDS: tuple[str, ...] = (
    "serve", "project", "sql", "search", "aliases", "ui", "report", "upkeep", "erase", "lake", "demo", "reconcile",
    "replay", "config", "bench",
)  # fmt: skip


def lake_missing(lake: object, command: str) -> bool:
    """Whether `lake` (a local directory) holds no event yet; if so, say so on stderr, naming the directory: a
    mistyped --home or QUERYLOG_HOME would otherwise read as "no data" without a word."""
    from pathlib import Path

    if not isinstance(lake, Path) and not (isinstance(lake, str) and "://" not in lake):
        return False
    events = Path(lake) / "events"
    if events.is_dir() and next(events.rglob("*.parquet"), None) is not None:
        return False
    print(
        f"querylog {command}: no events in the lake at {lake} yet: is --home (QUERYLOG_HOME) right? "
        "`querylog serve` or `querylog project` fill it",
        file=sys.stderr,
    )
    return True
