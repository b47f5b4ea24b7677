"""Subcommands of the ``querylog`` CLI: each module has ``add_parser(subparsers)`` and sets ``run``."""

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

#: In `--help` order. Heavy imports (DuckDB, uvicorn, Streamlit) happen inside each command's `run`.
COMMANDS: tuple[str, ...] = (
    "serve", "project", "sql", "search", "aliases", "ui", "report", "upkeep", "erase", "lake", "demo", "reconcile",
    "replay", "config", "bench",
)  # fmt: skip


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (a count of queries, say)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    return parse


#: What DuckDB and Arrow raise for a file that is not what it says (a Parquet file cut short, or not Parquet).
_UNREADABLE_FILE_ERRORS = {
    ("_duckdb", "InvalidInputException"),
    ("_duckdb", "IOException"),
    ("pyarrow.lib", "ArrowInvalid"),
}


def unreadable_file(exc: BaseException | None) -> bool:
    """Whether `exc` (or the DuckDB error a `CatalogError` carries) says a lake file cannot be read: the CLI then
    names the damaged files and how to rebuild, for every command alike (a command that reports the catalog's
    errors itself lets these through)."""
    while exc is not None:
        if (type(exc).__module__, type(exc).__name__) in _UNREADABLE_FILE_ERRORS:
            return True
        exc = exc.__cause__
    return False


def unreadable_lake(exc: BaseException, lake_dir: Path) -> str:
    """What to tell a user whose lake has a file that cannot be read (`unreadable_file`): which files (those that do
    not end as Parquet does), the reader's first line, and how to mend it."""
    # DuckDB's first line, without the SQL it quotes after it (``LINE 1: …``, on the same line once wrapped).
    said = re.split(r"\n|\s+LINE \d+:", str(exc).strip())[0].rstrip(".")
    first = said or type(exc).__name__
    damaged = _damaged_parquet(lake_dir)
    named = f" ({', '.join(map(str, damaged[:3]))}{', …' if len(damaged) > 3 else ''})" if damaged else ""
    return (
        f"a lake file cannot be read{named}: {first}; a damaged one is left by a disk or a copy gone wrong: move it "
        "away, or rebuild the lake from the log with `querylog replay parquet`"
    )


def _damaged_parquet(lake_dir: Path) -> list[Path]:
    """The lake's Parquet files that do not end as Parquet does (``PAR1``): cut short, or something else."""
    from querylog.logging.parquet import lake_files

    damaged = []
    for path in lake_files(lake_dir):
        try:
            with path.open("rb") as fh:
                fh.seek(-4, os.SEEK_END)
                ok = fh.read(4) == b"PAR1"
        except OSError:  # shorter than 4 bytes, or unreadable
            ok = False
        if not ok:
            damaged.append(path)
    return damaged


#: How a command's data directory is given, for messages that ask whether it is right.
HOME_OPTION = "--home (QUERYLOG_HOME)"


def lake_missing(lake: object, command: str, *, given_as: str = HOME_OPTION) -> bool:
    """Whether `lake` (a local directory) holds no event yet; if so, say so on stderr, naming the directory: a
    mistyped --home or QUERYLOG_HOME would otherwise read as "no data" without a word."""
    if not isinstance(lake, Path) and not (isinstance(lake, str) and "://" not in lake):
        return False
    events = Path(lake) / "events"
    if events.is_dir() and _holds_parquet(events):
        return False
    lake = Path(lake)
    where = lake.parent if given_as == HOME_OPTION else lake  # the data directory, or the lake given on its own
    if not where.exists():
        print(f"querylog {command}: {where} does not exist: is {given_as} right?", file=sys.stderr)
    else:
        print(
            f"querylog {command}: no events in the lake at {lake} yet: is {given_as} right? "
            "`querylog serve` or `querylog project` fill it",
            file=sys.stderr,
        )
    return True


def since_argument(text: str) -> datetime:
    """``--since``, as every command takes it: a duration back from now or an ISO date or time, not in the future
    (`querylog.analytics.queries.parse_since`); argparse's own error when it is none of these."""
    return _when_argument(text, future=False)


def _when_argument(text: str, *, future: bool) -> datetime:
    from querylog.analytics.queries import parse_since

    try:
        return parse_since(text, future=future)
    except ValueError as exc:
        error = str(exc)
    if text.startswith("-"):  # `--since -7d`, as `date -d -7days` takes it
        with contextlib.suppress(ValueError):
            parse_since(text[1:])
            error = f"write {text[1:]}, not {text}: a duration counts back from now already"
    raise argparse.ArgumentTypeError(error)


def until_argument(text: str) -> datetime:
    """``--until``, the end of a window (not in it), written as ``--since`` is: a duration back from now or an ISO
    date or time; it may be ahead of now (``--until 2026-12-31`` for "this month")."""
    return _when_argument(text, future=True)


def window_problem(since: datetime | None, until: datetime | None) -> str | None:
    """What is wrong with --since and --until together, if anything: an empty window reads as a quiet one."""
    if since is not None and until is not None and since >= until:
        return f"--since ({since:%Y-%m-%d %H:%M:%S} UTC) is not before --until ({until:%Y-%m-%d %H:%M:%S} UTC)"
    return None


def _holds_parquet(events: Path) -> bool:
    """Whether `events` holds a Parquet file. Every directory is listed: one this user may not read raises
    PermissionError (the CLI names it), where a glob (DuckDB's too) would skip it and read as fewer events."""

    def refuse(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):  # gone meanwhile (a compaction's swap, retention): not a refusal
            raise exc

    found = False
    for _root, _dirs, files in os.walk(events, onerror=refuse):
        found = found or any(name.endswith(".parquet") for name in files)
    return found


#: A server command's exit code when its port is taken (`make run` says how to choose another); any other reason it
#: cannot listen (no such address) is a usage error, exit 2.
EXIT_PORT_TAKEN = 3


def port_unavailable(host: str, port: int) -> tuple[str, int] | None:
    """Why `host:port` cannot be listened on now, and the exit code to give (`EXIT_PORT_TAKEN` when it is taken, 2
    for an address that is not this machine's), or None: for a server command to say before anything starts (a
    child process, a "serving on" line), rather than by its server after."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"no such address ({exc.strerror or exc})", 2
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return exc.strerror or str(exc), EXIT_PORT_TAKEN
            if exc.errno == errno.EACCES:  # a port under 1024 without the right to it
                return f"{exc.strerror or exc} (ports under 1024 need root)", 2
            return exc.strerror or str(exc), 2
    return None


def next_free_port(host: str, port: int) -> int | None:
    """The first port after `port` (within a hundred) that `host` can listen on now, to suggest when `port` is
    taken; None when none is."""
    return next((p for p in range(port + 1, min(port + 101, 65536)) if port_unavailable(host, p) is None), None)


def port_hint(host: str, port: int, code: int) -> str:
    """What to do about a port `port_unavailable` refused with `code`."""
    if code != EXIT_PORT_TAKEN:
        return "check --host and --port"
    free = next_free_port(host, port)
    return "choose another --port" + (f": {free} is free" if free is not None else "")
