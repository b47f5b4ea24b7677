"""The chat API as `querylog serve` runs it, plus a switch between querylog on and off, for bench/api.py.

    python bench/api_server.py --home DIR --port 8123

``POST /_bench/querylog/on|off`` swaps the tracker's emitter between the event log and a no-op emitter: the
same process, the same pipeline and code path, with or without the log, its flushes and its projections'
work. ``POST /_bench/projections/off|on`` pauses and resumes the projection threads. ``POST /_bench/reset-peak``
resets the kernel's peak-RSS mark; ``GET /_bench/stats`` reads it.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvicorn

from querylog.config import PROJECTION_MODES, Settings
from querylog.logging.events import Event
from querylog.logging.telemetry import FileTelemetry
from querylog.projector_process import telemetry_path
from querylog.runtime import Runtime
from querylog.service.app import create_app


class NoopEmitter:
    """Accepts every event and keeps none: querylog "off"."""

    def append(self, event: Event) -> None:
        pass

    def flush(self) -> None:
        pass


def _wait_for_child(runtime: Runtime, *, since: float, timeout_s: float = 120.0) -> None:
    """Until every projection the child runs has reported, after `since`, that it has caught up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snaps = [telemetry.snapshot() for telemetry in runtime.published.values()]
        if all(s.reported_at > since and s.lag_events == 0 for s in snaps):
            return
        time.sleep(0.2)  # the child publishes its counters every second: nothing to wait on but the file
    raise RuntimeError(f"the projector child did not catch up within {timeout_s:.0f} s")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--projections", choices=PROJECTION_MODES, help="QUERYLOG_PROJECTIONS for this server")
    args = parser.parse_args()
    # The environment's QUERYLOG_* settings apply, as for `querylog serve`; only the data directory is ours (and
    # bench/api.py clears the Loki URL: Loki is the loki group's to measure).
    overrides: dict[str, Any] = {"home": Path(args.home), "stdout_events": False}
    if args.projections:
        overrides["projections"] = args.projections
    settings = Settings.from_env(overrides=overrides)
    runtime = Runtime(settings)
    app = create_app(runtime=runtime)
    noop = NoopEmitter()

    @app.post("/_bench/querylog/{state}")
    def switch(state: str) -> dict[str, Any]:
        runtime.tracker.emitter = runtime.log if state == "on" else noop
        return {"querylog": state}

    intervals: dict[str, float] = {}  # the projectors exist once the app has started: read them then

    @app.post("/_bench/projections/{state}")
    def projections(state: str) -> dict[str, Any]:
        """Pause the projection threads (they finish the batch at hand, then wait) or the projector child
        (SIGSTOP), or resume them and wait until they have caught up: to split querylog's cost between the
        request path and the projections."""
        child = runtime.projector_process
        if child is not None and child.pid is not None:
            os.kill(child.pid, signal.SIGSTOP if state == "off" else signal.SIGCONT)
            if state == "on":
                _wait_for_child(runtime, since=time.time())
        for name, projector in runtime.projectors.items():
            intervals.setdefault(name, projector.interval_s)
            projector.interval_s = 3600.0 if state == "off" else intervals[name]
            projector.wake()
        if state == "on":
            for projector in runtime.projectors.values():
                projector.catch_up(timeout_s=60)
        return {"projections": state}

    @app.post("/_bench/reset-peak")
    def reset_peak() -> dict[str, Any]:
        # Writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0).
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
        return {"ok": True}

    @app.get("/_bench/stats")
    def stats() -> dict[str, Any]:
        parquet = runtime.projectors.get("parquet")
        # In process mode the Parquet projection runs in the child, which publishes its counters to a file.
        source = parquet.telemetry if parquet else FileTelemetry("parquet", telemetry_path(settings, "parquet"))
        snap = source.snapshot()
        child = runtime.projector_process
        return {
            "vmhwm_kib": _status_kib("VmHWM"),
            "vmrss_kib": _status_kib("VmRSS"),
            "events_written": runtime.log.telemetry.snapshot().sent,
            "parquet_sent": snap.sent,
            "parquet_lag_events": snap.lag_events,
            "projector_process_pid": child.pid if child else None,
            "projections": sorted(runtime.projection_snapshots()),
        }

    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    # As in `querylog serve`: SIGTERM drains (uvicorn re-raises it after shutdown; this handler absorbs that).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
