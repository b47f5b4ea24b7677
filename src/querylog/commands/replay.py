"""``querylog replay``: rebuild a projection from the log — re-ship a window to Loki, recompute the metrics, or
rebuild the Parquet lake."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from querylog.config import Settings

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="rebuild a projection from the log: the Parquet lake, a window of Loki, the metrics",
        description="Rebuild a projection from the event log, the source of truth. Live projections keep "
        "their checkpoints: replay never touches them.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    loki = targets.add_parser(
        "loki",
        help="push a window of the log to Loki again (after Loki lost it)",
        description="Read the log from the start and push every event at or after --since to QUERYLOG_LOKI_URL, "
        "with the live projection's batching, retries and 400 handling, but without its checkpoint. Use it "
        "for a window Loki lost. Lines are byte-identical to the first push, and Loki drops an entry equal "
        "(stream, time, line) to one it holds in memory, but lines it already flushed to storage can show twice.",
    )
    loki.add_argument(
        "--since",
        help="start of the window: a duration back from now (30m, 6h, 2d, 1w) or an ISO 8601 time "
        "(2026-11-20T09:00:00Z); default: the whole log",
    )
    loki.set_defaults(run=run_loki)
    metrics = targets.add_parser(
        "metrics",
        help="fold the whole log into fresh metrics and print the Prometheus exposition",
        description="Fold every event of the log, in log order, into a new metrics projection and print its "
        "exposition: the same event-derived series as a live /metrics for the same log (the querylog_sink_* "
        "series describe a running process and are empty here).",
    )
    metrics.set_defaults(run=run_metrics)
    parquet = targets.add_parser(
        "parquet",
        help="rebuild the whole lake from the log (new schema columns, corrected prices)",
        description="Project the whole log into a fresh lake beside the live one, with the current schema and "
        "price table (QUERYLOG_PRICES), check that it holds every event the live lake holds, and swap it in. "
        "Use it after an upgrade that added columns (old events then have them, null where they did not "
        "record them), after correcting a price, or when the lake was damaged. Stop querylog serve and "
        "querylog project first: the rebuild refuses to run beside a live Parquet projection. Run querylog "
        "compact afterwards to merge the rebuilt files.",
    )
    parquet.set_defaults(run=run_parquet)


def parse_since(raw: str, now: datetime) -> datetime:
    """``"2h"`` → two hours before `now`; an ISO 8601 time (UTC unless it says otherwise) as itself."""
    match = _DURATION_RE.match(raw.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since must be a duration like 30m, 6h, 2d, 1w or an ISO time like 2026-11-20T09:00:00Z; got {raw!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_loki(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.logging.codec import DecodeError, decode
    from querylog.logging.loki import TimeOrderedReader, loki_sink
    from querylog.logging.projection import Batch, SinkError

    err = sys.stderr
    if settings.loki_url is None:
        print("querylog replay loki: no Loki configured; set QUERYLOG_LOKI_URL (or LOKI_URL)", file=err)
        return 2
    now = datetime.now(UTC)
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        print(f"querylog replay loki: {exc}", file=err)
        return 2
    window = f"since {since.isoformat()}" if since else "the whole log"
    print(
        f"querylog replay loki: pushing {window} to {settings.loki_url} (env={settings.env}, app={settings.service}). "
        "Loki may already hold some of these lines: replay a window only if Loki lost it.",
        file=err,
    )
    if since is None or now - since > timedelta(days=7):
        print(
            "querylog replay loki: Loki refuses lines older than its reject_old_samples_max_age (7 days by "
            "default); they are counted as dropped (too_old), not sent.",
            file=err,
        )
    reader = TimeOrderedReader(settings.log_dir)
    sink = loki_sink(settings, live=False)
    sink.open()
    read = skipped = corrupt = 0
    position: dict[str, int] = {}
    try:
        while True:
            batch = reader.read(position, max_events=10_000)
            if not batch.lines:
                break
            events = []
            for line in batch.lines:
                read += 1
                try:
                    event = decode(line)
                except DecodeError:
                    corrupt += 1
                    continue
                if since is not None and event.ts < since:
                    skipped += 1
                    continue
                events.append(event)
            sink.write(Batch(events=events, checkpoint=batch.checkpoint))
            position = batch.checkpoint
            snap = sink.telemetry.snapshot()
            upto = events[-1].ts.isoformat() if events else "-"
            dropped_so_far = sum(snap.dropped.values())
            print(f"  read {read} events, sent {snap.sent}, dropped {dropped_so_far} (up to {upto})", file=err)
    except SinkError as exc:
        print(f"querylog replay loki: stopped after {read} events: {exc}", file=err)
        return 1
    finally:
        sink.close()
    snap = sink.telemetry.snapshot()
    dropped = ", ".join(f"{reason}={n}" for reason, n in sorted(Counter(snap.dropped).items())) or "none"
    print(
        f"querylog replay loki: done. {snap.sent} lines sent in {snap.batches} pushes; dropped: {dropped}; "
        f"{skipped} events before the window; {corrupt} corrupt log lines.",
        file=err,
    )
    return 0


def run_parquet(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.rebuild import RebuildError, rebuild_lake

    err = sys.stderr
    if not settings.log_dir.is_dir():
        print(f"querylog replay parquet: no log at {settings.log_dir}; nothing to rebuild from", file=err)
        return 2
    print(f"querylog replay parquet: rebuilding {settings.lake_dir} from {settings.log_dir}", file=err)
    shown = [-1]

    def progress(done: int, total: int) -> None:
        percent = done * 100 // total
        if percent // 10 != shown[0] // 10:  # a line per tenth of the log, not per batch
            shown[0] = percent
            print(f"  {percent:3d}% of the log projected ({done:,} of {total:,} bytes)", file=err, flush=True)

    try:
        report = rebuild_lake(settings, progress=progress)
    except RebuildError as exc:
        print(f"querylog replay parquet: {exc}", file=err)
        return 1
    print(
        f"querylog replay parquet: done in {report.seconds:.1f} s. The lake holds {report.events_after} events in "
        f"{report.files_after} files (it held {report.events_before}). Run `querylog compact` to merge them.",
        file=err,
    )
    return 0


def run_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.logging.codec import DecodeError, decode
    from querylog.logging.metrics import MetricsProjection
    from querylog.logging.segments import LogReader

    projection = MetricsProjection(settings.metrics_namespace)
    corrupt = 0
    # The live projection folds the log through `LogReader` in this same order; the fold is order-sensitive
    # (open queries expire by event time), so the same order gives the same exposition.
    for batch in LogReader(settings.log_dir).iter_all():
        events = []
        for line in batch.lines:
            try:
                events.append(decode(line))
            except DecodeError:
                corrupt += 1
        projection.apply(events)
    sys.stdout.buffer.write(projection.exposition())
    sys.stdout.flush()
    if corrupt:
        print(f"querylog replay metrics: skipped {corrupt} corrupt log lines", file=sys.stderr)
    return 0
