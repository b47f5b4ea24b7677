"""``querylog reconcile``: prove the projections agree with the log."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from querylog.commands import since_argument
from querylog.config import Settings
from querylog.logging.redaction import shown_url


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reconcile",
        help="compare counts in the log, the lake, the metrics and Loki; exit 1 on any disagreement",
        description="Count events per type and finished queries per intent in the log (the truth), the Parquet "
        "lake, the Prometheus metrics (a running API's /metrics with --metrics-url, else a replay of the log) "
        "and Loki (when LOKI_URL is set). Prints a table; exits 1 if any count differs, or if log lines could not "
        "be read as events (with --metrics-url, it also says how many events the API's log refused: a full disk). "
        "Loki is counted over the window it can hold (7 days back at most, up to now); when "
        "the log holds events outside it, Loki is compared with the log's counts over that window, in their own "
        "column. Let the projections catch up first (a running API lags by about a second); under traffic the stores, "
        "read one after another, differ by the events that arrived meanwhile: compare when it is quiet.",
    )
    p.add_argument(
        "--since",
        type=since_argument,
        metavar="WHEN",
        help="only events since this time (90s, 30m, 12h, 7d, 2w, or an ISO date); leaves out metrics",
    )
    p.add_argument("--metrics-url", help="a running API's metrics endpoint, e.g. http://127.0.0.1:8000/metrics")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(run=run, home_use="read")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from querylog._format import format_rows
    from querylog.reconcile import ARRIVAL_ORDER, LOKI_WINDOW, count_metrics, reconcile

    since = args.since
    if not settings.log_dir.exists() and not settings.lake_dir.exists():  # a mistyped home agrees with itself
        print(
            f"querylog reconcile: no event log and no lake under {settings.home}: is --home (QUERYLOG_HOME) right?",
            file=sys.stderr,
        )
        return 2
    if since is not None and args.metrics_url:
        print(
            "querylog reconcile: --since leaves out the metrics: their counters are totals since the start, not counts "
            "of a window; compare them without --since",
            file=sys.stderr,
        )
    metrics_url = None if since is not None else args.metrics_url  # left out: not read either
    metrics_text = None
    loki = None
    max_age_s = None
    if args.metrics_url and not args.metrics_url.startswith(("http://", "https://")):
        print(f"querylog reconcile: --metrics-url must be an http(s) URL; got {args.metrics_url!r}", file=sys.stderr)
        return 2
    try:
        if metrics_url:
            metrics_text = httpx.get(metrics_url, timeout=10).raise_for_status().text
            try:
                count_metrics(metrics_text, settings.metrics_namespace)
            except ValueError as exc:
                shown = shown_url(metrics_url)
                said = (  # a JSON answer (/healthz, an API) is no metrics page: its parse error says nothing more
                    "it answered JSON, not Prometheus metrics: is the path querylog's /metrics?"
                    if metrics_text.lstrip().startswith(("{", "["))
                    else str(exc)[:200]
                )
                print(f"querylog reconcile: {shown} cannot be compared: {said}", file=sys.stderr)
                return 2
        if settings.loki_url:
            from querylog.runtime import loki_options

            options = loki_options(settings)
            loki = options.client(settings.loki_url)  # tenant, auth and TLS as the shipper uses
            max_age_s = options.max_age_s - options.clock_margin_s  # what the Loki projection pushes at all
        report = reconcile(settings, since=since, metrics_text=metrics_text, loki=loki, loki_max_age_s=max_age_s)
    except httpx.HTTPError as exc:
        print(f"querylog reconcile: {_where(exc)}{exc}", file=sys.stderr)
        return 2
    finally:
        if loki is not None:
            loki.close()
    names = list(report.sources)
    bad = {(kind, key) for kind, key, _ in report.disagreements}
    rows = [
        [kind, key, *(counts[n] for n in names), "DIFFERS" if (kind, key) in bad else "ok"]
        for kind, key, counts in report.rows
    ]
    sys.stdout.write(format_rows(["kind", "key", *names, "status"], rows, args.format))
    if not report.rows:
        start = report.since
        window = f" from {start:%Y-%m-%d %H:%M:%S} UTC on" if start is not None else ""
        trimmed = report.floor is not None and report.since == report.floor
        print(
            f"querylog reconcile: no events to compare{window}: nothing was checked"
            + (
                " (the log was trimmed: it holds only what was written since, and the comparison starts past its "
                "last trimmed write, for producers whose clocks run ahead; compare again once newer events came, "
                "and keep the log longer, QUERYLOG_LOG_RETENTION, if it is trimmed faster than reconcile can follow)"
                if trimmed
                else ""
            ),
            file=sys.stderr,
        )
        if trimmed:
            return 2  # the stores may or may not agree: nothing the log still holds could tell, which is no pass
    elif report.floor is not None and report.since == report.floor:
        print(
            f"querylog reconcile: compared from {report.floor:%Y-%m-%d %H:%M:%S} UTC on: before it the log was trimmed "
            "or the lake dropped days past its retention, so the stores no longer hold the same events; the metrics' "
            "counters (totals since the start) are left out, as with --since",
            file=sys.stderr,
        )
    if LOKI_WINDOW in report.sources and report.loki_window is not None:
        since_loki, until = report.loki_window
        if report.sources[LOKI_WINDOW].events != report.sources["log"].events:
            print(
                f"querylog reconcile: Loki is held to the log's events from {since_loki:%Y-%m-%d %H:%M:%S} to "
                f"{until:%Y-%m-%d %H:%M:%S} UTC ({LOKI_WINDOW}): the Loki projection never pushes the others (older "
                "than Loki accepts, or ahead of now) and counts them as dropped",
                file=sys.stderr,
            )
        # Only when the window holds every event is a difference in intents LogQL's reading alone.
        held, log = report.sources[LOKI_WINDOW], report.sources["log"]
        if held.events == log.events and held.intents != log.intents:
            print(
                f"querylog reconcile: Loki's intents are held to the log's as LogQL reads them ({LOKI_WINDOW}): each "
                "query under its last event's own intent, unclassified without one (it cannot join a query's "
                "classification to its end)",
                file=sys.stderr,
            )
    if ARRIVAL_ORDER in report.sources:
        print(
            f"querylog reconcile: the metrics are held to the log's counts in arrival order ({ARRIVAL_ORDER}): a "
            "producer sent some queries' end before their classification, and the metrics counted each as it came "
            "(unclassified); the lake and the log's own counts attribute it to its classification",
            file=sys.stderr,
        )
    if report.unreadable:
        print(
            f"querylog reconcile: {report.unreadable:,} log line(s) could not be read as events (torn, or written "
            "with values the schema refuses): no store holds them and the counts above leave them out (the "
            f"projections log each as log_line_corrupt); the first: {report.unreadable_example}",
            file=sys.stderr,
        )
    if report.log_dropped:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in report.log_dropped.items())
        print(
            f"querylog reconcile: the API's log refused {sum(report.log_dropped.values()):,} event(s) since it "
            f'started ({reasons}; querylog_sink_events_dropped_total{{sink="log"}}, the QuerylogEventsLost '
            "alert): they reached no store, so the counts above agree without them. The API's own queries among "
            "them are lost; a producer's batch refused so was answered 503 and is stored if it was sent again",
            file=sys.stderr,
        )
    if bad:
        print(f"querylog reconcile: {len(bad)} count(s) disagree", file=sys.stderr)
    if not report.clean:
        extra = report.loki_surplus
        if extra:
            from querylog.erase import AUDIT

            erased = (settings.state_dir / AUDIT).exists()
            print(
                f"querylog reconcile: Loki counts {extra:,} more than the log where it differs: "
                + (
                    "erased events whose delete requests Loki has not applied yet (it waits out its cancellation "
                    "period; state/erasures.jsonl), or "
                    if erased
                    else ""
                )
                + "another data directory shipping under the same app and env labels (each host's own, sharing "
                "this Loki: reconcile counts Loki by those labels), or entries sent again after a projector crash "
                "or a retry, which Loki no longer held in memory, stored twice and counted twice by "
                "count_over_time (a log query shows each once where Loki's stream sharding is off, as "
                "loki/*-config.yaml have it; docs/loki.md, 'Checkpoint and duplicates')",
                file=sys.stderr,
            )
        short = report.loki_shortfall
        if short:
            print(
                f"querylog reconcile: Loki counts {short:,} fewer than the log (or the log's events within Loki's "
                'window) where it differs: events not shipped yet (querylog_sink_lag_events{sink="loki"} on '
                "/metrics), or not sent or refused because Loki would not take them, counted by reason in "
                'querylog_sink_events_dropped_total{sink="loki"} (too_far_behind: a late event more than an hour '
                "behind its stream, such as a backfill; line_too_long, rate_limited, metadata_*, ...: docs/loki.md); "
                "those stay missing from Loki, and this comparison differs until they leave the window compared "
                "(--since)",
                file=sys.stderr,
            )
        from querylog.erase import erased_from_log, written_before

        said_erased = False
        if report.metrics_surplus:
            erasures, blanked, last = erased_from_log(settings)
            if blanked:
                said_erased = True
                print(
                    f"querylog reconcile: the metrics count {report.metrics_surplus:,} more events than the log where "
                    f"they differ: {erasures:,} erasure(s) blanked {blanked:,} event(s) in the log ("
                    + (f"the last at {last[:19].replace('T', ' ')} UTC; " if last else "")
                    + "state/erasures.jsonl), and the metrics' counters still count them: they "
                    "count events, not people, and never go down (docs/privacy.md), so a difference up to that many "
                    "stays",
                    file=sys.stderr,
                )
        now = datetime.now(UTC)
        # The erasure that last changed the log (it blanks lines, and leaves the segments' times as they were), and
        # when traffic wrote it last: the erasure's record says so, else the segments' times.
        erasure = _erasure_wrote_last(settings)
        try:
            since_erasure = (now - datetime.fromisoformat(erasure["ts"])).total_seconds() if erasure else None
        except (KeyError, TypeError, ValueError):  # an audit entry written by hand, or damaged
            since_erasure = None
        traffic = written_before(erasure) if erasure is not None else report.last_write
        age = (now - traffic).total_seconds() if traffic is not None else None
        if since_erasure is not None and since_erasure < LIVE_S and (age is None or age >= LIVE_S):
            print(
                f"querylog reconcile: the log was last changed {max(since_erasure, 0):.0f} s ago by an erasure "
                "(state/erasures.jsonl), not by traffic: "
                + (
                    ""
                    if said_erased
                    else "the metrics' counters still count the erased events (they count events, "
                    "not people, and never go down: docs/privacy.md), and "
                )
                + "Loki counts them until it applies the delete requests",
                file=sys.stderr,
            )
            return 1
        if age is not None and age < LIVE_S:  # traffic (or traffic just before an erasure): the stores may lag
            print(
                f"querylog reconcile: events were still arriving (the log was written {max(age, 0):.0f} s ago): the "
                "log, the lake, the metrics and Loki are read one after another, so a few events more in those read "
                "later is expected, whatever the explanations above; compare again once traffic is quiet",
                file=sys.stderr,
            )
        return 1
    return 0


#: The log written more recently than this when the counts differ: the service was busy as they were read.
LIVE_S = 60.0


def _erasure_wrote_last(settings: Settings) -> dict[str, Any] | None:
    """The audit entry of the erasure whose blanking was the log's last write (the log ends where it left it)."""
    from querylog.erase import last_blanking
    from querylog.logging.segments import LogReader

    entry = last_blanking(settings)
    return entry if entry is not None and entry["log_end"] == LogReader(settings.log_dir).end_checkpoint() else None


def _where(exc: Exception) -> str:
    """``<url>: `` of the request that failed, when the error knows it."""
    try:
        request = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when the error has no request
        return ""
    return f"{shown_url(str(request.url.copy_with(query=None)))}: "
