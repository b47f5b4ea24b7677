"""``querylog report``: volumes, intents, latency, errors, cache and quality, compared with the window before."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from querylog.commands import lake_missing, since_argument, unreadable_file, until_argument, window_problem
from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="a report of the last window (default 7d) against the one before, as Markdown or HTML",
        description="Volumes, intents, latency percentiles (by intent and by stage), errors, cache hits, quality "
        "and feedback, top and no-result queries for the window, each compared with the previous window of equal "
        "length (week over week with the default 7d). HTML is one self-contained page with inline SVG charts.",
    )
    p.add_argument(
        "--since",
        type=since_argument,
        metavar="WHEN",
        help="window start: a duration back from now (30m, 12h, 7d, 2w) or an ISO date or time (2025-01-31, "
        "2025-01-31T09:00+09:00; UTC unless it says); default: 7 days before the window's end",
    )
    p.add_argument(
        "--until",
        type=until_argument,
        metavar="WHEN",
        help="window end, not included, written as --since (--since 2025-01-01 --until 2025-02-01 is January); "
        "default: now",
    )
    p.add_argument("--format", "-f", choices=("md", "html"), default="md", help="output format (default: md)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write here instead of standard output")
    p.add_argument("--intent", action="append", default=[], help="only this intent (repeatable)")
    p.add_argument("--env", action="append", default=[], help="only this env (repeatable)")
    p.add_argument(
        "--service", action="append", default=[], help="only queries from this service, the app that asked (repeatable)"
    )
    p.set_defaults(run=run, home_use="read")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.analytics.catalog import CatalogError
    from querylog.analytics.queries import LakeQueries, open_catalog
    from querylog.analytics.report import build_report, render_html, render_markdown

    now = datetime.now(UTC)
    until = args.until or now
    since = args.since or max(until - timedelta(days=7), datetime(1970, 1, 1, tzinfo=UTC))
    if since > now:  # --until a week or more ahead: a window of days to come holds no query
        print(f"querylog report: the window starts in the future ({since:%Y-%m-%d %H:%M} UTC): give --since too, "
              "or an --until less than a week ahead", file=sys.stderr)  # fmt: skip
        return 2
    if problem := window_problem(since, until):
        print(f"querylog report: {problem}: the window would be empty", file=sys.stderr)
        return 2
    lake_missing(settings.lake_dir, "report")  # a report of zeros, and why
    try:
        with open_catalog(settings.lake_dir, names=settings.company_names(strict=True)) as catalog:
            report = build_report(
                catalog, since=since, until=until, intents=args.intent, envs=args.env, services=args.service
            )
            _unknown_filters(LakeQueries(catalog), args)
    except CatalogError as exc:
        if unreadable_file(exc):  # the CLI names the damaged files, as for every command
            raise
        print(f"querylog report: {exc}", file=sys.stderr)
        return 1
    text = render_html(report) if args.format == "html" else render_markdown(report)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        # A folder on the way that is a file: mkdir says "File exists", which names no problem.
        why = f"{exc.filename} is a file, not a directory" if isinstance(exc, FileExistsError) else exc
        print(f"querylog report: cannot write {args.output}: {why}", file=sys.stderr)
        return 1
    print(
        f"querylog report: wrote {args.output} ({report.current.queries} queries, {_window(report)})", file=sys.stderr
    )
    return 0


def _unknown_filters(lq: Any, args: argparse.Namespace) -> None:
    """Say which --intent, --env and --service values no query in the lake has (a typo reads as an empty report),
    and which it has."""
    for flag, wanted, choices in (
        ("--intent", args.intent, lq.intents),
        ("--env", args.env, lq.envs),
        ("--service", args.service, lq.services),
    ):
        if not wanted:  # each list is a pass over the whole lake: only for a flag given
            continue
        known = choices()
        unknown = [w for w in wanted if w not in known]
        if unknown and known:
            print(
                f"querylog report: no query in the lake has {flag} {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(known)}",
                file=sys.stderr,
            )


def _window(report: Any) -> str:
    return f"{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC"
