"""The ``querylog`` command line. Each subcommand lives in `querylog.commands.<name>`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from querylog import __version__
from querylog.commands import COMMANDS
from querylog.config import ConfigError, Settings, describe_settings

__all__ = ["build_parser", "main"]


def _epilog() -> str:
    rows = describe_settings()
    width = max(len(r[0]) for r in rows)
    lines = ["configuration (environment variables):"]
    lines += [f"  {var:<{width}}  {doc}" + (f" [default: {default}]" if default else "") for var, default, doc in rows]
    lines += [
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides: dict[str, object] = {}
        if args.home:
            from pathlib import Path

            overrides["home"] = Path(args.home).expanduser()
        settings = Settings.from_env(overrides=overrides)
    except ConfigError as exc:
        print(f"querylog: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.run(args, settings)
    except ConfigError as exc:  # a setting read where it is used (QUERYLOG_LLM_*, LANGFUSE_*)
        print(f"querylog: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): what it wanted was written; no traceback
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command cut off by a closed pipe
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
