"""`Runtime`: the writer and the projections one service process runs."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest

from querylog.config import Settings
from querylog.housekeeping import Housekeeper
from querylog.logging.events import QueryReceived
from querylog.logging.segments import LogClosedError
from querylog.runtime import Runtime


def _querylog_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("querylog-")}


def test_a_start_that_fails_leaves_nothing_running_and_the_service_lock_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last step of a start in thread mode fails, after the log and every projection have started.
    def refuse(self: Housekeeper) -> Housekeeper:
        raise OSError("no space left on device")

    monkeypatch.setattr(Housekeeper, "start", refuse)
    settings = Settings(home=tmp_path, env="test", stdout_events=False, projections="thread")
    before = _querylog_threads()
    runtime = Runtime(settings)
    with pytest.raises(OSError, match="no space left"):
        runtime.start()

    assert _querylog_threads() == before  # the log's flusher and the projectors' threads are stopped
    with pytest.raises(LogClosedError):  # the log is closed, not left open with nothing to flush it
        runtime.log.append(QueryReceived(query_id="q-1", service="querylog", env="test", query_text="삼성전자"))
    # The service lock is released: a lake rebuild (`querylog replay parquet`, which takes it exclusively) can run.
    with settings.service_lock_path.open("ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    runtime.close()  # and closing it after all does nothing


@pytest.mark.parametrize("mode", ["thread", "none"])
def test_the_metrics_fold_of_this_process_reports_its_own_sink_series(tmp_path: Path, mode: str) -> None:
    """In thread and none modes the fold's own counters were missing from /metrics: a corrupt line it skipped
    showed in the server's log only, while docs/alerts.md says QuerylogSinkDroppingEvents covers any projection."""
    settings = Settings(home=tmp_path, env="test", stdout_events=False, projections=mode)
    with Runtime(settings) as runtime:
        with runtime.tracker.query("삼성전자 주가") as q:
            q.classified("stock_analysis", 0.9)
        runtime.projectors["metrics"].catch_up()
        text = runtime.metrics.exposition().decode()
    assert 'querylog_sink_events_sent_total{sink="metrics"} 3.0' in text  # received, classified, completed


@pytest.mark.parametrize("mode", ["thread", "none"])
def test_a_restart_into_process_mode_shows_the_totals_this_mode_reached(tmp_path: Path, mode: str) -> None:
    """/metrics went back (6,099 completed queries, then 2,177) when a thread-mode run was restarted in process mode:
    the API served the fold a process-mode run had published long before, until the child published again."""
    from querylog.logging.metrics import MetricsProjection
    from querylog.logging.metrics_snapshot import read_published_fold

    settings = Settings(home=tmp_path, env="test", stdout_events=False, projections=mode)
    with Runtime(settings) as runtime:
        for _ in range(3):
            with runtime.tracker.query("삼성전자 주가") as q:
                q.classified("stock_analysis", 0.9)
        runtime.projectors["metrics"].catch_up()
    served = MetricsProjection()  # as the process-mode API shows the published fold
    served.mirror(lambda: read_published_fold(settings.metrics_exposition_path))
    assert 'querylog_queries_total{intent="stock_analysis",status="completed"} 3.0' in served.exposition().decode()


def test_the_service_refuses_to_start_during_a_lake_rebuild_instead_of_hanging(tmp_path: Path) -> None:
    """`serve` during `replay parquet` said it was serving, refused connections, and ignored SIGTERM and SIGINT
    until the rebuild ended: start-up waited on the rebuild's lock without a word."""
    import socket
    import subprocess
    import sys

    from querylog.rebuild import _exclusive
    from querylog.runtime import REBUILD_RUNNING

    settings = Settings(home=tmp_path / "home", stdout_events=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _exclusive(settings.service_lock_path, "a rebuild"):  # as `querylog replay parquet` holds it
        served = subprocess.run(
            [sys.executable, "-m", "querylog", "--home", str(settings.home), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert served.returncode == 2, served.stderr
        assert REBUILD_RUNNING in served.stderr and "serving on" not in served.stderr
        outcome: list[BaseException | None] = []

        def start() -> None:  # the rebuild began after serve's check: start-up refuses too, it does not wait
            try:
                Runtime(settings, projections=False).start().close()
                outcome.append(None)
            except RuntimeError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert outcome and str(outcome[0]) == REBUILD_RUNNING
    Runtime(settings, projections=False).start().close()  # once the rebuild ends, it starts
