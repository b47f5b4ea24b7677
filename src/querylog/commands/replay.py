"""``querylog replay``: rebuild a projection from the log — re-ship a window to Loki, recompute the metrics, or
rebuild the Parquet lake."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from querylog.commands import HOME_OPTION, lake_missing, since_argument
from querylog.config import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from querylog.logging.events import AnyEvent
    from querylog.logging.projection import Batch, Sink


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
        "(stream, time, line) to one still in the stream's head block (the last few minutes of light traffic), "
        "but stores again those it already cut out of it: replaying a window Loki holds counts its lines twice.",
    )
    loki.add_argument(
        "--since",
        type=since_argument,
        metavar="WHEN",
        help="start of the window: a duration back from now (30m, 6h, 2d, 1w) or an ISO date or time "
        "(2026-11-20T09:00:00Z); default: the whole log",
    )
    _source_option(loki)
    loki.set_defaults(run=run_loki, home_use="read")
    metrics = targets.add_parser(
        "metrics",
        help="fold the whole log into fresh metrics and print the Prometheus exposition",
        description="Fold every event of the log, in log order, into a new metrics projection and print its "
        "exposition: the same event-derived series as a live /metrics for the same log (the querylog_sink_* "
        "series describe a running process and are empty here).",
    )
    _source_option(metrics)
    metrics.set_defaults(run=run_metrics, home_use="read")
    parquet = targets.add_parser(
        "parquet",
        help="rebuild the whole lake from the log, or from itself (new schema columns, corrected prices)",
        description="Project the whole log (or, with --from lake, the lake's own events, for history the log no "
        "longer holds) into a fresh lake beside the live one, with the current schema and "
        "price table (QUERYLOG_PRICES), check that it holds every event the live lake holds, and swap it in. "
        "Use it after an upgrade that added columns (old events then have them, null where they did not "
        "record them), after correcting a price, or when the lake was damaged. Stop querylog serve and "
        "querylog project first: the rebuild refuses to run beside a running service or Parquet projection. "
        "Run querylog compact afterwards to merge the rebuilt files.",
    )
    parquet.add_argument(
        "--from",
        dest="source",
        choices=("log", "lake"),
        default="log",
        help="project the log (default), or write the lake's own events again (after the log was trimmed: new "
        "columns and corrected prices for history the log no longer holds)",
    )
    parquet.set_defaults(run=run_parquet, home_use="write")


def _source_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        choices=("auto", "log", "lake"),
        default="auto",
        help="read the events from the log, or from the lake (which keeps every field: use it once the log has "
        "been trimmed); auto: the lake when housekeeping has trimmed the log, else the log (default)",
    )


def resolve_source(choice: str, settings: Settings) -> str:
    """``log`` or ``lake`` for ``--from`` `choice`."""
    if choice != "auto":
        return choice
    from querylog.housekeeping import load_totals

    trimmed = load_totals(settings).trimmed_segments > 0
    has_log = settings.log_dir.is_dir() and any(settings.log_dir.glob("*.jsonl"))
    return "lake" if trimmed or not has_log else "log"


def _say_if_missing(source: str, settings: Settings, command: str) -> bool:
    """A replay from a log or lake that is not there gives zeros: say so, naming it (a mistyped --home); and
    whether it is missing."""
    if source == "lake":
        return lake_missing(settings.lake_dir, command)
    if not settings.log_dir.is_dir():
        print(f"querylog {command}: no log at {settings.log_dir}: is {HOME_OPTION} right?", file=sys.stderr)
        return True
    return False


def run_loki(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.logging.projection import Batch, SinkError
    from querylog.logging.redaction import shown_url
    from querylog.runtime import loki_sink

    err = sys.stderr
    if settings.loki_url is None:
        print("querylog replay loki: no Loki configured; set QUERYLOG_LOKI_URL (or LOKI_URL)", file=err)
        return 2
    now = datetime.now(UTC)
    since: datetime | None = args.since
    window = f"since {since.isoformat()}" if since else "the whole log"
    print(
        f"querylog replay loki: pushing {window} to {shown_url(settings.loki_url)} "
        f"(env={settings.env}, app={settings.service}). "
        "Loki may already hold some of these lines: replay a window only if Loki lost it.",
        file=err,
    )
    if since is None or now - since > timedelta(days=7):
        print(
            "querylog replay loki: Loki refuses lines older than its reject_old_samples_max_age (7 days by "
            "default); they are counted as dropped (too_old), not sent.",
            file=err,
        )
    source = resolve_source(args.source, settings)
    print(f"querylog replay loki: reading the {source}", file=err)
    if _say_if_missing(source, settings, "replay loki") and not settings.home.is_dir():
        # Nothing to send, and nothing to note: the labels it would note are what an erasure's delete requests select,
        # and a mistyped --home must not be made.
        print("querylog replay loki: done. 0 lines sent.", file=err)
        return 0
    sink = loki_sink(settings, live=False)
    sink.open()
    read = skipped = 0
    done_upto: datetime | None = None  # the newest event of the batches Loki took: where a second run may start
    batches = _Batches(settings, source, time_ordered=True)
    try:
        for batch_events in batches:
            read += len(batch_events)
            events = [e for e in batch_events if since is None or e.ts >= since]
            skipped += len(batch_events) - len(events)
            _write_retrying(sink, Batch(events=events, checkpoint={}))
            snap = sink.telemetry.snapshot()
            done_upto = events[-1].ts if events else done_upto
            upto = events[-1].ts.isoformat() if events else "-"
            dropped_so_far = sum(snap.dropped.values())
            print(f"  read {read} events, sent {snap.sent}, dropped {dropped_so_far} (up to {upto})", file=err)
    except SinkError as exc:
        snap = sink.telemetry.snapshot()
        again = (  # in time order: every event before the batch that failed went (a line sent twice counts twice)
            f"run it again with --since {done_upto:%Y-%m-%dT%H:%M:%S.%fZ} once Loki answers"
            if done_upto is not None
            else "run it again once Loki answers"
        )
        print(
            f"querylog replay loki: stopped after reading {read} events, {snap.sent} of them sent to Loki: {exc}; "
            f"{again}",
            file=err,
        )
        return 1
    finally:
        sink.close()
    snap = sink.telemetry.snapshot()
    dropped = ", ".join(f"{reason}={n}" for reason, n in sorted(Counter(snap.dropped).items())) or "none"
    print(
        f"querylog replay loki: done. {snap.sent} lines sent in {snap.batches} pushes; dropped: {dropped}; "
        f"{skipped} events before the window; {batches.corrupt} corrupt log lines.",
        file=err,
    )
    return 0


#: A replay gives up on Loki after this many failed writes of one batch in a row (about 4 minutes of backoff).
_REPLAY_ATTEMPTS = 12
_sleep = time.sleep


def _write_retrying(sink: Sink, batch: Batch) -> None:
    """Write `batch`, offering it again after the projectors' backoff when it fails (what Loki stored is not
    sent twice), up to `_REPLAY_ATTEMPTS` times."""
    from querylog.logging.projection import RetryPolicy, SinkSendError

    policy, rng = RetryPolicy(), random.Random()
    for failures in range(1, _REPLAY_ATTEMPTS + 1):
        try:
            sink.write(batch)
            return
        except SinkSendError as exc:
            if failures == _REPLAY_ATTEMPTS:
                raise
            delay = policy.delay(failures, rng, exc.retry_after_s)
            print(f"  {exc}; trying again in {delay:.1f} s", file=sys.stderr)
            _sleep(delay)


def run_parquet(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.rebuild import LakeAsideError, RebuildBusyError, RebuildError, rebuild_lake

    err = sys.stderr
    source = args.source
    origin = settings.log_dir if source == "log" else settings.lake_dir
    if not origin.is_dir():
        print(f"querylog replay parquet: no {source} at {origin}: is {HOME_OPTION} right? Nothing to rebuild", file=err)
        return 2

    def started() -> None:  # said once the rebuild holds its locks: not before a refusal (a server running)
        print(f"querylog replay parquet: rebuilding {settings.lake_dir} from {origin}", file=err)

    try:
        progress = _tenths(f"of the {source} projected", source)
        report = rebuild_lake(settings, progress=progress, source=source, started=started)
    except RebuildError as exc:
        print(f"querylog replay parquet: {exc}", file=err)
        return 2 if isinstance(exc, RebuildBusyError | LakeAsideError) else 1  # it could not start
    merge = " Run `querylog compact` to merge them." if report.files_after > 1 else ""
    print(
        f"querylog replay parquet: done in {report.seconds:.1f} s. The lake holds {report.events_after} events in "
        f"{report.files_after} file{'s' if report.files_after != 1 else ''} (it held {report.events_before}).{merge}",
        file=err,
    )
    if report.unreadable:
        named = ", ".join(map(str, report.unreadable[:3])) + (", …" if len(report.unreadable) > 3 else "")
        print(
            f"querylog replay parquet: {len(report.unreadable)} damaged file(s) of the old lake could not be read to "
            f"check them ({named}); the rebuilt lake holds what the log has of their events",
            file=err,
        )
    if report.retained_from is not None:
        print(
            f"querylog replay parquet: days before {report.retained_from:%Y-%m-%d} stay out of the lake, as the "
            "retention that dropped them left it (lake/_querylog/retained-from.json)",
            file=err,
        )
    return 0


def run_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.logging.metrics import MetricsProjection

    projection = MetricsProjection(
        settings.metrics_namespace, prices=settings.prices(), names=settings.company_names(strict=True)
    )
    source = resolve_source(args.source, settings)
    _say_if_missing(source, settings, "replay metrics")  # first: "folding the lake" of no home would mislead
    print(f"querylog replay metrics: folding the {source}", file=sys.stderr)
    # The live projection folds the log through `LogReader` in this same order; the fold is order-sensitive
    # (open queries expire by event time), so the same order gives the same exposition. The lake is read in
    # event-time order, which differs from it only for queries left open across writers.
    batches = _Batches(settings, source, time_ordered=False)
    progress = _tenths(f"of the {source} folded", source)
    for events in batches:
        projection.apply(events)
        progress(batches.done, batches.total)
    sys.stdout.buffer.write(projection.exposition())
    sys.stdout.flush()
    if batches.corrupt:
        print(f"querylog replay metrics: skipped {batches.corrupt} corrupt log lines", file=sys.stderr)
    return 0


def _tenths(what: str, source: str) -> Callable[[int, int], None]:
    """A progress callback that prints a line on stderr per tenth of the work done (not per batch): ``  40% of
    the log projected (…)``, in bytes of the log or events of the lake."""
    shown = [-1]
    unit = "bytes" if source == "log" else "events"

    def progress(done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if percent // 10 != shown[0] // 10:
            shown[0] = percent
            print(f"  {percent:3d}% {what} ({done:,} of {total:,} {unit})", file=sys.stderr, flush=True)

    return progress


class _Batches:
    """The events of the log (`time_ordered`: merged across writers by event time, as the live Loki projection
    reads them) or of the lake (`querylog.lake_events`), a batch at a time; counts undecodable log lines."""

    def __init__(self, settings: Settings, source: str, *, time_ordered: bool) -> None:
        self.settings = settings
        self.source = source
        self.time_ordered = time_ordered
        self.corrupt = 0
        self.done = self.total = 0  # how far the reading is: bytes of the log, or events of the lake

    def __iter__(self) -> Iterator[list[AnyEvent]]:
        if self.source == "lake":
            from querylog.lake_events import lake_events
            from querylog.rebuild import lake_rows

            self.total = lake_rows(self.settings.lake_dir)[0]
            for events in lake_events(self.settings.lake_dir):
                self.done += len(events)
                yield events
            return
        from querylog.logging.codec import DecodeError, decode
        from querylog.logging.segments import LogReader, is_erased
        from querylog.logging.time_order import TimeOrderedReader

        reader = TimeOrderedReader(self.settings.log_dir) if self.time_ordered else LogReader(self.settings.log_dir)
        self.total = sum(_size(path) for path in reader.segments())
        for batch in reader.iter_all(batch_events=10_000):
            self.done = sum(batch.checkpoint.values())
            events = []
            for line in batch.lines:
                try:
                    events.append(decode(line))
                except DecodeError:
                    self.corrupt += 0 if is_erased(line) else 1  # an older release's erase listed no segments
            yield events


def _size(path: Path) -> int:
    """A segment's size; 0 once trimmed (housekeeping may delete one while it is listed)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
