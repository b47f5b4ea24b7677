"""``querylog search``: ranked full-text search over what users asked, brought up to date from the lake first."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from querylog.config import Settings

FORMATS = ("table", "json")


def _since(text: str) -> datetime:
    from querylog.analytics.queries import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1-10000; got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="full-text search over the queries users asked (Korean, English, mixed)",
        description="Ranked full-text search over query texts. Works for Korean (particles, no spaces), English "
        "and mixed text. Queries that reached the lake since the last search are indexed first (the index lives "
        "under QUERYLOG_HOME/index).",
    )
    p.add_argument("text", help='what to look for, e.g. "네이버 주가"')
    p.add_argument("--limit", "-n", type=_limit, default=10, help="most results (default: 10)")
    p.add_argument("--intent", help="only queries with this intent, e.g. stock_analysis")
    p.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only queries since: a duration back from now (30m, 12h, 7d) or an ISO date (2025-01-31)",
    )
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog._format import format_rows
    from querylog.analytics.catalog import CatalogError
    from querylog.analytics.queries import open_catalog
    from querylog.analytics.upkeep import LakeSearch, UpkeepError

    if not args.text.strip():
        print("querylog search: give some text to look for", file=sys.stderr)
        return 2
    try:
        search = LakeSearch(settings.home)
        with open_catalog(settings.lake_dir) as catalog:
            added = search.sync(catalog, progress=_progress if sys.stderr.isatty() else None)
        if added:
            print(f"querylog search: indexed {added} new quer{'y' if added == 1 else 'ies'}", file=sys.stderr)
        hits = search.search(args.text, limit=args.limit, intent=args.intent, since=args.since)
    except (UpkeepError, CatalogError) as exc:
        print(f"querylog search: {exc}", file=sys.stderr)
        return 1
    columns = ["rank", "score", "ts", "intent", "query_text", "query_id"]
    rows = [(i, round(float(h.score), 4), h.ts, h.intent, h.query_text, h.query_id) for i, h in enumerate(hits, 1)]
    if args.format == "json":
        sys.stdout.write(format_rows(columns, rows, "json"))
    elif rows:
        sys.stdout.write(format_rows(columns, rows, "table"))
    else:
        print(f"no queries match {args.text!r}", file=sys.stderr)
    return 0


def _progress(done: int, total: int, what: str) -> None:
    print(f"\rindexing: {done}/{total} {what}", end="" if done < total else "\n", file=sys.stderr, flush=True)
