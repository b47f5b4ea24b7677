"""``querylog project``: run the log's elected projections (Parquet, stdout, Loki; the metrics fold with
``--metrics``) in this process."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from querylog.config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "project",
        help="run the Parquet, stdout and Loki projections in a process of their own",
        description="Tail the event log under QUERYLOG_HOME and run its elected projections: the Parquet lake, "
        "the stdout echo (QUERYLOG_STDOUT_EVENTS) and Loki (LOKI_URL). Use it beside `querylog serve` with "
        "QUERYLOG_PROJECTIONS=none (a sidecar, a systemd unit), or let serve start it with "
        "QUERYLOG_PROJECTIONS=process (which adds --metrics). Each projection is elected by its lock file, so a "
        "second copy stands by. Counters go to state/telemetry/ for the API's /metrics. SIGTERM or Ctrl-C drains "
        "and exits.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="catch each projection up with the log, then exit (a failed write is offered again after the backoff; "
        "after 12 failures of one batch in a row, exit 1: the log keeps the events)",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="also fold the Prometheus metrics and publish them (state/metrics-fold.prom) for the API's /metrics: "
        "what the child of QUERYLOG_PROJECTIONS=process does; an API in another mode folds them itself",
    )
    p.add_argument(
        "--nice", type=int, default=0, metavar="N", help="lower this process's CPU priority by N (0-19; default 0)"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, metavar="S", help="seconds to drain when stopping (default 30)"
    )
    p.set_defaults(run=run, home_use="create")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from querylog.housekeeping import Housekeeper
    from querylog.logging.projection import SinkError
    from querylog.logging.segments import LogReader
    from querylog.logging.sinks import stdout_style
    from querylog.logging.structured import configure_structlog
    from querylog.projector_process import (
        PARENT_PID_ENV,
        STOP_SIGNALS,
        projection_switch_interval,
        run_projections,
        watch_parent,
    )
    from querylog.runtime import elected_projectors, metrics_projection, metrics_projector, snapshot_hook

    err = sys.stderr
    if not 0 <= args.nice <= 19:
        print(f"querylog project: --nice must be 0-19, got {args.nice}", file=err)
        return 2
    if not args.drain_timeout > 0:  # NaN too (inf: drain for as long as it takes)
        print(f"querylog project: --drain-timeout must be a number of seconds > 0, got {args.drain_timeout}", file=err)
        return 2
    if args.once and not settings.log_dir.is_dir():  # nothing to catch up with: a mistyped --home, made for nothing
        print(f"querylog project: no event log under {settings.home}: is --home (QUERYLOG_HOME) right?", file=err)
        return 2
    if args.nice:
        os.nice(args.nice)
    # Its own diagnostics on stderr, beside its progress lines: stdout carries the event echo alone (a child of
    # `querylog serve` shares the API's stdout, whose reader may expect nothing else there, as `bench --json` does).
    configure_structlog(stream=sys.stderr, console=stdout_style(settings.stdout_format) == "console")
    settings.home.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_stop(signum: int, frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop)
    # Started by `querylog serve`, this process begins with them blocked; a stop sent meanwhile arrives now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    # A child of `querylog serve` leaves the talking to its parent (projector_process_started/stopped): its banner
    # would tell the user to Ctrl-C a process they never started.
    child = (parent := os.environ.get(PARENT_PID_ENV, "")).isdigit()
    if child:
        watch_parent(int(parent), stop)
    reader = LogReader(settings.log_dir)
    projectors = elected_projectors(settings, reader)  # a record it cannot read: SinkError, exit 2 (querylog.cli)
    if args.metrics:
        projection = metrics_projection(settings)
        projectors["metrics"] = metrics_projector(settings, reader, projection, elected=True, publish="batch")
    if not child:
        print(
            f"querylog project: {', '.join(projectors)} from {settings.log_dir}"
            + (" (catching up, then exiting)" if args.once else " (SIGTERM or Ctrl-C to stop)"),
            file=err,
        )
    # Log trimming and retention, the metrics fold's snapshot brought up to date before each round.
    housekeeper = None if args.once else Housekeeper(settings, before_trim=snapshot_hook(projectors)).start()
    try:
        with projection_switch_interval():  # while the projections run (their threads take turns often)
            sent = run_projections(
                projectors,
                settings,
                stop=stop,
                once=args.once,
                drain_timeout_s=args.drain_timeout,
                progress=lambda line: print(f"  {line}", file=err),
            )
    except SinkError as exc:
        print(f"querylog project: a projection failed: {exc}; the log keeps its events, run it again", file=err)
        return 1
    finally:
        if housekeeper is not None:
            housekeeper.stop()
    if args.once:
        Housekeeper(settings).run_once()  # everything is projected now: trim what retention allows
    if not child:
        each = ", ".join(f"{name} {n:,}" for name, n in sent.items()) or "none"
        print(f"querylog project: stopped; events projected: {each}", file=err)
        if stopped_by[:1] == [signal.SIGINT]:
            return 130  # Ctrl-C, drained: as `serve` answers it (SIGTERM, a service manager's stop, is a clean 0)
    return 0
