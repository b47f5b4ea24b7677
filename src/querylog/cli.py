"""The ``querylog`` command line. Each subcommand lives in `querylog.commands.<name>`."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import os
import select
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from querylog import __version__
from querylog.commands import COMMANDS, unreadable_file, unreadable_lake
from querylog.config import ConfigError, Settings, describe_settings
from querylog.logging.projection import SinkError, SinkSendError

__all__ = ["build_parser", "main"]


def _epilog() -> str:
    rows = describe_settings()
    width = max(len(r[0]) for r in rows)
    lines = ["configuration (environment variables):"]
    lines += [f"  {var:<{width}}  {doc}" + (f" [default: {default}]" if default else "") for var, default, doc in rows]
    lines += [
        "  and, read outside these settings: LANGFUSE_PUBLIC_KEY/SECRET_KEY/HOST (tracing the LLM step),",
        "  QUERYLOG_LLM_BASE_URL/API_KEY/MODEL/TIMEOUT_S (an OpenAI-compatible answer step), QUERYLOG_S3_ENDPOINT_URL",
        '  (docs/configuration.md, "Outside Settings")',
        "",
        "Start with `querylog serve --demo 200`, then",
        '`querylog sql "select intent, count(*) from queries group by 1"`.',
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="querylog",
        description="An event-sourced query log for chat and RAG APIs: every query step is an immutable event; "
        "the Parquet lake, Loki and Prometheus metrics are projections of the log.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"querylog {__version__}")
    parser.add_argument("--home", help="data directory (overrides QUERYLOG_HOME)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"querylog.commands.{name}").add_parser(sub)
    _home_after_the_command(sub)
    return parser


def _home_after_the_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``querylog ui --home X`` as well as ``querylog --home X ui``: every command (and sub-command) takes it too."""
    for command in sub.choices.values():
        command.add_argument("--home", default=argparse.SUPPRESS, help="data directory (overrides QUERYLOG_HOME)")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _home_after_the_command(action)


def home_problem(home: Path, *, create: bool, write: bool = True) -> str | None:
    """Why data directory `home` cannot be written (or None): not a directory, not writable, cannot be made. With
    `create`, a missing one must be makeable (a server's first run makes it, once it has checked the rest: it is
    made here to know, and removed again); without, a missing one is left to the command, which says there is no
    data there. Either way a mistyped --home leaves no directory behind. Without `write`, only that it can be
    read (the commands that read a lake or a log)."""
    if os.path.islink(home) and not os.path.exists(home):
        return f"it is a symbolic link to {os.readlink(home)}, which does not exist"
    if create and not os.path.lexists(home):
        made = [p for p in (home, *home.parents) if not os.path.lexists(p)]
        try:
            home.mkdir(parents=True)
        except OSError as exc:
            return exc.strerror or str(exc)
        problem = home_problem(home, create=False, write=write)
        for directory in made:  # innermost first
            with contextlib.suppress(OSError):
                directory.rmdir()
        return problem
    try:
        if not stat.S_ISDIR(home.stat().st_mode):
            return "it exists and is not a directory"
    except FileNotFoundError:
        return None  # not made here: the command says there is no data there
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(home, (os.W_OK if write else os.R_OK) | os.X_OK):
        return f"this user cannot {'write to' if write else 'read'} it"
    return None


class _WholeWrites(io.RawIOBase):
    """A file descriptor whose every write is written whole or raises. Python's stdout takes a write that a signal
    cut short (the reader of a pipe gone mid-write: ``| head``) for done, drops the rest and exits 0, as if all
    was read; written whole, the next write raises `BrokenPipeError`, which `main` turns into 141."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:  # the stdout echo is a line per query on a terminal, JSON lines elsewhere
        return os.isatty(self._fd)

    def write(self, data: Any) -> int:
        with memoryview(data) as view, view.cast("B") as octets:
            done = 0
            while done < len(octets):
                try:
                    done += os.write(self._fd, octets[done:])
                except BlockingIOError:  # a non-blocking descriptor (set so by the reader's side): wait, go on
                    select.select([], [self._fd], [])
        return done


def _whole_stdout() -> None:
    """The process's stdout written whole (`_WholeWrites`), with its encoding and buffering."""
    out = sys.__stdout__
    if out is None or sys.stdout is not out:  # replaced already (captured, redirected by a caller)
        return
    try:
        fd = out.fileno()
    except (OSError, ValueError):
        return
    out.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_WholeWrites(fd)),
        encoding=out.encoding,
        errors=out.errors,
        line_buffering=out.line_buffering,
    )


def _not_utf8(argv: Sequence[str]) -> str | None:
    """What is wrong with the first argument that is not UTF-8 text (the shell passed bytes Python could only keep
    as lone surrogates, which no file, query or log line can hold), or None."""
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape")
            shown = raw.decode("utf-8", "replace")
            return f"the argument {shown!r} is not UTF-8 text ({raw!r}): give every argument as UTF-8"
    return None


def _joined_since(argv: Sequence[str]) -> list[str]:
    """`argv` with ``--since -7d`` given as ``--since=-7d`` (``--until`` too): argparse reads a value starting with
    a dash as an option and says only "expected one argument"; joined, `since_argument` says what to write instead."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--since", "--until") and arg[1:2].isdigit() and arg.startswith("-"):
            out[-1] = f"--since={arg}"
        else:
            out.append(arg)
    return out


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command `args` chose: `querylog lake push`'s for ``querylog lake push --x``."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or getattr(args, sub.dest, None) not in sub.choices:
            return parser
        parser = sub.choices[getattr(args, sub.dest)]


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command itself, not a caller's in-process use
        _whole_stdout()
    parser = build_parser()
    argv = _joined_since(sys.argv[1:] if argv is None else argv)
    not_text = _not_utf8(argv)
    if not_text is not None:
        print(f"querylog: {not_text}", file=sys.stderr)
        return 2
    if not argv:  # `querylog` alone: what it does, not "the following arguments are required: COMMAND"
        parser.print_help(sys.stderr)
        return 2
    command = next((a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1 : i] != ["--home"]), None)
    names = [n for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices]
    if command is not None and command not in names:
        near = difflib.get_close_matches(command, names, n=1)
        hint = f"; did you mean `querylog {near[0]}`?" if near else ""
        print(f"querylog: no command {command!r}{hint} (`querylog --help` lists them)", file=sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser: its usage line and its name, not only `querylog`'s
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.home is not None and not args.home.strip():
        print(
            "querylog: --home is empty: give the data directory's path (or leave --home out for QUERYLOG_HOME)",
            file=sys.stderr,
        )
        return 2
    try:
        overrides: dict[str, object] = {}
        if args.home:
            overrides["home"] = Path(args.home).expanduser()
        settings = Settings.from_env(overrides=overrides)
    except ConfigError as exc:
        print(f"querylog: configuration error: {exc}", file=sys.stderr)
        return 2
    # "create" or "write": set by the commands that write to it (a dry run only reads); "read" by those that read.
    home_use = getattr(args, "home_use", None)
    if home_use is not None and getattr(args, "dry_run", False):
        home_use = "read"
    problem = home_problem(settings.home, create=home_use == "create", write=home_use != "read") if home_use else None
    if problem is not None:
        print(
            f"querylog {args.command}: the data directory {settings.home} cannot be used: {problem} "
            "(choose another with --home or QUERYLOG_HOME)",
            file=sys.stderr,
        )
        return 2
    lake = Path(args.lake) if isinstance(getattr(args, "lake", None), str) and "://" not in args.lake else None
    for path, given_as in ((settings.lake_dir, "the lake"), (lake, "--lake")):
        if home_use is not None and path is not None and path.exists() and not path.is_dir():
            print(
                f"querylog {args.command}: {given_as} {path} is not a directory: a lake is the directory that holds "
                "events/ (choose another with --home or QUERYLOG_HOME, or --lake)",
                file=sys.stderr,
            )
            return 2
    try:
        code: int = args.run(args, settings)
        sys.stdout.flush()  # here, where a reader gone is caught, not in the interpreter's last flush
    except ConfigError as exc:  # a setting read where it is used (QUERYLOG_LLM_*, LANGFUSE_*)
        print(f"querylog: configuration error: {exc}", file=sys.stderr)
        return 2
    except SinkError as exc:  # a checkpoint or commit record it cannot read (a server out of reach: SinkSendError)
        print(f"querylog {args.command}: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, SinkSendError) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): what it wanted was written; no traceback
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command cut off by a closed pipe
    except PermissionError as exc:  # a file or directory of the data directory this user may not read or write
        print(
            f"querylog {args.command}: this user cannot use "
            + (f"{exc.filename} ({exc.strerror})" if exc.filename else str(exc))  # pyarrow's carry no filename
            + ": run as the user that owns the data directory, or give this one access",
            file=sys.stderr,
        )
        return 2
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:  # a file where a directory belongs
        print(
            f"querylog {args.command}: {exc.filename} is not what querylog keeps there ({exc.strerror}): move it "
            "away (querylog makes it again), or choose another data directory with --home or QUERYLOG_HOME",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        upkeep = sys.modules.get("querylog.analytics.upkeep")  # loaded if it raised: not imported to ask
        if upkeep is not None and isinstance(exc, upkeep.UpkeepError):  # a lake's record it cannot read
            print(f"querylog {args.command}: {exc}", file=sys.stderr)
            return 2
        if not unreadable_file(exc):
            raise
        print(f"querylog {args.command}: {unreadable_lake(exc, settings.lake_dir)}", file=sys.stderr)
        return 2
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of a closed pipe raises nothing."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real descriptor (captured in tests): nothing to flush there either
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
