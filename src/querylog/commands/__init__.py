"""Subcommands of the ``querylog`` CLI: each module has ``add_parser(subparsers)`` and sets ``run``."""

#: In `--help` order. Heavy imports (DuckDB, uvicorn, Streamlit) happen inside each command's `run`.
COMMANDS: tuple[str, ...] = (
    "serve", "project", "sql", "search", "aliases", "ui", "report", "upkeep", "erase", "lake", "demo", "reconcile",
    "replay", "config", "bench",
)  # fmt: skip
