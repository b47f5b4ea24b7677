"""``querylog sql``: DuckDB SQL over the lake's views."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from querylog._format import FORMATS
from querylog.commands import HOME_OPTION, lake_missing
from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sql",
        help="run DuckDB SQL over the lake (views: events, queries, sessions)",
        description="Run one SQL statement with DuckDB over the Parquet lake. Views: `events` (one row per "
        "event), `queries` (one row per query_id: query_text, intent, status, latency_ms, classify_ms, search_ms, "
        "generate_ms, cache_hit, quality_score, session_id, user_id, started_at, ...) and `sessions`. "
        "Read-only and lock-free: works while `querylog serve` runs.",
    )
    p.add_argument("statement", help='SQL, e.g. "select intent, count(*) from queries group by 1"')
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument(
        "--lake",
        metavar="DIR_OR_URI",
        help="lake to read: a directory or s3://bucket/prefix (default: <home>/lake; S3 endpoint and "
        "credentials from QUERYLOG_S3_ENDPOINT_URL and the AWS_* variables)",
    )
    p.set_defaults(run=run, home_use="read")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog._format import format_rows
    from querylog.analytics.catalog import Catalog, CatalogError

    names = settings.company_names(strict=True)  # a ConfigError: exit 2, as every setting
    import pyarrow as pa

    try:
        catalog = Catalog(args.lake or settings.lake_dir, names=names)
    except (OSError, ValueError) as exc:  # a remote lake that cannot be listed or read, or its URI or endpoint
        print(f"querylog sql: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, OSError | pa.ArrowException) else 2
    lake_missing(args.lake or settings.lake_dir, "sql", given_as="--lake" if args.lake else HOME_OPTION)
    if catalog.lake_uri is not None:  # a mistyped prefix reads as an empty lake
        with contextlib.suppress(OSError):  # listed a moment ago; a failure now shows in the query
            if not catalog.has_data():
                print(
                    f"querylog sql: no events in the lake at {catalog.lake_uri} yet: is --lake right?", file=sys.stderr
                )
    refused = _not_read_only(args.statement)
    if refused is not None:
        print(f"querylog sql: {refused}", file=sys.stderr)
        return 1
    with catalog:
        try:
            columns, rows = catalog.query(args.statement)
        except CatalogError as exc:
            print(f"querylog sql: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write(format_rows(columns, rows, args.format))
    return 0


def _not_read_only(sql: str) -> str | None:
    """Why `sql` is not one read-only statement (a query, EXPLAIN or PRAGMA), or None. A statement DuckDB cannot
    parse is left to it: its own message says where."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return None
    if len(statements) > 1:
        return f"one statement at a time: got {len(statements)} (only the last one's rows would be shown)"
    kinds = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}
    if statements and statements[0].type not in kinds:
        kind = statements[0].type.name
        return (
            f"read-only: {kind} statements are refused (to export, use --format csv or json; to write, the "
            "catalog from Python: docs/analytics.md)"
        )
    return None
