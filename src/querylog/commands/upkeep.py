"""``querylog compact``: merge the lake's small files per closed hour and drop days past retention."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from querylog.commands import lake_missing
from querylog.config import Settings


def _duration(text: str) -> Any:
    from querylog.analytics.queries import parse_duration

    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError(f"must be a whole number of days from 1 to 36500 (100 years); got {text!r}")
    return days


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compact",
        help="merge small Parquet files per closed hour and per closed day; drop days past retention",
        description="Lake upkeep. Merges the files of each hour partition that closed more than --older-than ago "
        "into one file, then each closed UTC day into one file sorted by (event_type, ts), which is what makes "
        "month-long trend and percentile queries fast (atomically: readers never see an event twice or miss "
        "one; an interrupted run is repaired by the next). With --retention-days or QUERYLOG_RETENTION_DAYS, "
        "first drops whole days that ended more than that many days ago, from the lake and from the search index. "
        "Safe while `querylog serve` runs.",
    )
    p.add_argument(
        "--older-than",
        type=_duration,
        default="1h",
        metavar="AGE",
        help="compact hours that closed at least this long ago: 30m, 12h, 7d, 2w (default: 1h)",
    )
    p.add_argument(
        "--retention-days",
        type=_days,
        default=None,
        metavar="N",
        help="drop days older than N days (default: QUERYLOG_RETENTION_DAYS, else QUERYLOG_RETENTION in whole "
        "days; unset keeps everything). The lake notes the day it now starts at (lake/_querylog/retained-from.json), "
        "which `querylog replay parquet` keeps to; set QUERYLOG_RETENTION for housekeeping to keep dropping them",
    )
    p.add_argument("--no-days", action="store_true", help="compact hours only; leave closed days as hour files")
    p.add_argument("--dry-run", action="store_true", help="show what would be done, change nothing")
    p.set_defaults(run=run, home_use="write")


def _progress(label: str) -> Any:
    def show(done: int, total: int, what: str) -> None:
        print(f"{label} [{done}/{total}] {what}", file=sys.stderr, flush=True)

    return show


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.analytics.upkeep import (
        LakeCompactor,
        LakeSearch,
        SearchUnavailableError,
        UpkeepError,
        apply_retention,
        built_search_fields,
        expired_days,
        retention_boundary,
        when_the_lake_is_free,
    )

    lake = settings.lake_dir
    if not lake.exists():  # not made here: a mistyped --home would leave an empty lake behind, and say nothing
        lake_missing(lake, "compact")
        return 0
    days = args.retention_days if args.retention_days is not None else settings.lake_retention_days
    compactor = LakeCompactor(lake, progress=_progress("compact"))

    def waiting(line: str) -> None:  # the running service merging an hour, an erasure: seconds, usually
        print(f"querylog compact: {line}", file=sys.stderr, flush=True)

    if args.dry_run:
        dropped: set[str] = set()  # what retention would drop is not compacted after it
        if days is not None:
            boundary = retention_boundary(days)
            expired = [p.name for p in expired_days(lake, boundary)]
            dropped = set(expired)
            kept = f"retention ({days} day{'s' if days != 1 else ''})"
            if expired:
                print(f"{kept}: would drop {len(expired)} day(s) before {boundary.date()}: {', '.join(expired)}")
            else:
                print(f"{kept}: no day before {boundary.date()} to drop")
        plan = [p for p in compactor.plan(older_than=args.older_than) if p.path.parent.name not in dropped]
        for partition in plan:
            print(f"would compact {partition.name}: {len(partition.files())} files")
        print(f"{len(plan)} partition(s) to compact")
        if not args.no_days:
            day_plan = [d for d in compactor.plan_days() if d.path.name not in dropped]
            for day in day_plan:
                print(f"would compact day {day.name}")
            print(f"{len(day_plan)} day(s) to compact")
        return 0
    try:
        if days is not None:
            retained = when_the_lake_is_free(
                lambda: apply_retention(lake, days=days, progress=_progress("retention")), waiting
            )
            print(
                f"retention: dropped {len(retained.dates_removed)} day(s) ({retained.files_removed} files) "
                f"before {retained.boundary.date()}"
            )
            for field in built_search_fields(settings.home):
                try:
                    LakeSearch(settings.home, field=field).remove_older_than(retained.boundary)
                    print(f"retention: search index pruned before {retained.boundary.date()} ({field})")
                except SearchUnavailableError as exc:
                    print(f"querylog compact: search index not pruned: {exc}", file=sys.stderr)
        report = when_the_lake_is_free(lambda: compactor.run(older_than=args.older_than), waiting)
        days_report = None if args.no_days else when_the_lake_is_free(compactor.run_days, waiting)
    except UpkeepError as exc:
        print(f"querylog compact: {exc}", file=sys.stderr)
        return 1
    if report.recovered:
        print(f"compact: repaired {report.recovered} interrupted compaction(s)")
    print(
        f"compact: {report.partitions} partition(s), {report.files_before} files → {report.files_after} "
        f"({report.events} events)"
    )
    if report.skipped:
        print(f"compact: skipped (new files arrived meanwhile; run again): {', '.join(report.skipped)}")
    if days_report is not None:
        print(
            f"compact: {days_report.partitions} day(s), {days_report.files_before} files → "
            f"{days_report.files_after} ({days_report.events} events)"
        )
        if days_report.skipped:
            print(f"compact: days skipped (new files arrived meanwhile; run again): {', '.join(days_report.skipped)}")
    return 0
