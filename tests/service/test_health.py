"""`/healthz`'s reasons: what makes the pipeline degraded, at the alerts' own limits."""

from __future__ import annotations

from typing import Any

from querylog.logging.telemetry import TelemetrySnapshot
from querylog.service.health import LAG_LIMIT_S, SILENT_LIMIT_S, degraded_reasons

NOW = 1_800_000_000.0
HEALTHY_LOG: dict[str, Any] = {"over_cap": False, "held_back_by": [], "degraded": False}


def _snap(sink: str, *, lag_s: float = 0.0, lag_events: int = 0, reported_at: float = NOW) -> TelemetrySnapshot:
    return TelemetrySnapshot(
        sink=sink, received=0, sent=0, dropped={}, retries=0, errors={}, lag_events=lag_events, lag_seconds=lag_s,
        batches=0, batch_events_total=0, batch_bytes_total=0, reported_at=reported_at,
    )  # fmt: skip


def _reasons(**kwargs: Any) -> list[str]:
    args: dict[str, Any] = {"write_error": None, "log": HEALTHY_LOG, "projections": {}, "now": NOW}
    args["started_at"] = NOW - 3600
    return degraded_reasons(**{**args, **kwargs})


def test_a_healthy_pipeline_has_no_reasons() -> None:
    projections = {"parquet": (True, _snap("parquet", lag_s=2.0)), "loki": (False, _snap("loki", reported_at=NOW - 1))}
    assert _reasons(projections=projections) == []


def test_a_log_that_cannot_write_is_named_with_the_disk_s_error() -> None:
    assert _reasons(write_error="No space left on device") == [
        "the log cannot write (No space left on device): events are being dropped"
    ]


def test_a_projection_past_the_lag_limit_is_named_with_how_far_behind() -> None:
    lagging = _snap("loki", lag_s=LAG_LIMIT_S + 60, lag_events=285_000)
    at_limit = _snap("parquet", lag_s=LAG_LIMIT_S)
    assert _reasons(projections={"loki": (True, lagging), "parquet": (True, at_limit)}) == [
        "projection loki is 360 s behind the log (285000 events)"
    ]


def test_a_projection_no_process_reports_on_is_silent_and_its_frozen_lag_is_not_believed() -> None:
    # Another process runs it and has stopped publishing (a full disk, a dead `querylog project`): its lag of 0 is
    # what it last said, not the state now.
    stale = _snap("parquet", reported_at=NOW - SILENT_LIMIT_S - 30)
    assert _reasons(projections={"parquet": (False, stale)}) == [
        "no process has reported on projection parquet for 150 s"
    ]


def test_a_projection_never_reported_on_is_silent_only_once_the_server_has_run_past_the_limit() -> None:
    never = {"metrics": (False, _snap("metrics", reported_at=0.0))}
    assert _reasons(projections=never, started_at=NOW - 5) == []  # the child's first report is on its way
    assert _reasons(projections=never, started_at=NOW - 600) == [
        "no process has reported on projection metrics for 600 s"
    ]
    # What the run before this one last published, read at the start: not this run's silence.
    before = {"metrics": (False, _snap("metrics", reported_at=NOW - 3600))}
    assert _reasons(projections=before, started_at=NOW - 1) == []


def test_the_log_s_own_states_are_reasons_too() -> None:
    log = {"over_cap": True, "held_back_by": ["loki"], "degraded": True}
    assert _reasons(log=log) == [
        "the log is over QUERYLOG_LOG_MAX_GB and the lake has not committed what would bring it under",
        "projection loki holds back a log segment past the log's retention plus a day",
    ]
