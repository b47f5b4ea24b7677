"""What `/healthz` says beside liveness: why the pipeline needs a look, if it does.

The API answers whatever the pipeline does (a full disk drops events, a Loki outage holds a projection back), so
`/healthz` stays 200 and says ``"status": "degraded"`` with the reasons. The limits are the alerts' own
(compose/prometheus/alerts.yml), without their ``for``: a probe sees the state now, an alert waits for it to last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from querylog.logging.telemetry import TelemetrySnapshot

__all__ = ["LAG_LIMIT_S", "OLDER_RELEASE", "SILENT_LIMIT_S", "degraded_reasons"]

#: A projection further behind the log than this is lagging (QuerylogSinkLagging's threshold).
LAG_LIMIT_S: Final = 300.0
#: A projection no process has reported on for this long is not being run (QuerylogProjectionSilent's threshold).
SILENT_LIMIT_S: Final = 120.0
OLDER_RELEASE: Final = (
    "an older release's process has committed the lake of this data directory since this server started: it reads "
    "this release's newer events as corrupt and leaves them out of the lake. Stop every process of the older release "
    "(serve, project), then this server, and run `querylog replay parquet` to restore them, which works while the "
    "log still holds every event the lake has (docs/schema.md); said until this server restarts"
)


def degraded_reasons(
    *,
    write_error: str | None,
    log: Mapping[str, Any],
    projections: Mapping[str, tuple[bool, TelemetrySnapshot]],
    now: float,
    started_at: float,
    older_release_commits: bool = False,
) -> list[str]:
    """Why the pipeline is degraded, one sentence each; empty when it is not.

    `write_error`: the log's refused write (`EventLog.write_error`); `log`: `housekeeping.log_health`'s part;
    `projections`: name → (led here, counters); `now` and `started_at` (this process), Unix seconds. Silence counts
    from `started_at` at the earliest: a projection never reported on, or last reported on by the run before this
    one, gets its first report within a second of the start. `older_release_commits`: a release that reads an older
    schema committed the lake since this process started (`ParquetSink.committed_by_an_older_release`), even if
    this release has committed since: the events it left out are still missing."""
    reasons: list[str] = []
    if older_release_commits:
        reasons.append(OLDER_RELEASE)
    if write_error is not None:
        reasons.append(f"the log cannot write ({write_error}): events are being dropped")
    if log.get("over_cap"):
        reasons.append("the log is over QUERYLOG_LOG_MAX_GB and the lake has not committed what would bring it under")
    for name in log.get("held_back_by") or ():
        reasons.append(f"projection {name} holds back a log segment past the log's retention plus a day")
    for name, (_, snap) in sorted(projections.items()):
        silent_s = now - max(snap.reported_at, started_at)
        if silent_s > SILENT_LIMIT_S:
            reasons.append(f"no process has reported on projection {name} for {silent_s:.0f} s")
        elif snap.lag_seconds > LAG_LIMIT_S:
            reasons.append(f"projection {name} is {snap.lag_seconds:.0f} s behind the log ({snap.lag_events} events)")
    return reasons
