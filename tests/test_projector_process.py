"""Projections out of the API process: `querylog project`, and `QUERYLOG_PROJECTIONS=process` (serve starts and
watches it as a child)."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from querylog.cli import main
from querylog.config import ConfigError, Settings
from querylog.logging.metrics import MetricsProjection
from querylog.logging.projection import Batch, Projector, RetryPolicy, SinkError, SinkSendError
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.sinks import MemorySink
from querylog.logging.telemetry import FileTelemetry, SinkTelemetry, TelemetrySnapshot, write_snapshot
from querylog.logging.tracker import QueryTracker
from querylog.projector_process import (
    SWITCH_INTERVAL_S,
    ProjectorProcess,
    run_projections,
    telemetry_path,
    watch_parent,
)
from querylog.runtime import Runtime, elected_projectors


def _lake_rows(home: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (home / "lake").rglob("*.parquet"))


def _queries(log: EventLog, n: int, start: int = 0) -> None:
    tracker = QueryTracker(log, env="test")
    for i in range(start, start + n):
        with tracker.query(f"삼성전자 실적 {i}", session_id="s-1"):
            pass  # two events a query: received, completed


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # polling another process's output: there is nothing to wait on
    return True


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        env="prod",
        fsync="always",
        parquet_interval_s=0.25,
        stdout_events=False,
        loki_url="http://loki:3100",
        loki_tenant="team-a",
        redact_extra={"ORDER": r"ORD-\d{8}"},
        retention_days=30,
        projections="process",
    )
    assert Settings.from_env(settings.to_env()) == settings
    # An unset value stays unset even where the parent's environment has one (LOKI_URL here).
    plain = Settings(home=tmp_path)
    assert Settings.from_env({"LOKI_URL": "http://elsewhere:3100", **plain.to_env()}) == plain


def test_an_unknown_projections_mode_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="QUERYLOG_PROJECTIONS must be thread, process or none"):
        Settings.from_env({"QUERYLOG_PROJECTIONS": "sidecar"})


def _counters(snapshot: TelemetrySnapshot) -> TelemetrySnapshot:
    return dataclasses.replace(snapshot, reported_at=0.0)


def test_published_telemetry_reads_back_with_its_time_and_is_zero_before_the_first(tmp_path: Path) -> None:
    telemetry = SinkTelemetry("parquet")
    telemetry.sent(7, nbytes=100)
    telemetry.dropped("corrupt_line", 2)
    reader = FileTelemetry("parquet", tmp_path / "parquet.json", clock=lambda: 1_000.0)
    before = reader.snapshot()
    assert _counters(before) == dataclasses.replace(_counters(SinkTelemetry("parquet").snapshot()), lag_known=False)
    assert before.reported_at == 1_000.0  # nothing published yet: as old as the reader (the API's start)
    write_snapshot(telemetry, tmp_path / "parquet.json")
    after = reader.snapshot()
    assert _counters(after) == _counters(telemetry.snapshot()) and after.lag_known
    assert time.time() - 60 < after.reported_at <= time.time()  # when it was published


def test_an_unreadable_or_older_publication_is_dated_by_its_file(tmp_path: Path) -> None:
    path = tmp_path / "loki.json"
    reader = FileTelemetry("loki", path, clock=lambda: 1_000.0)
    path.write_bytes(b'{"sink": "loki", "sent": "many"}')  # a querylog that counts differently, or damage
    os.utime(path, (2_000.0, 2_000.0))
    unreadable = reader.snapshot()
    assert unreadable.sent == 0 and unreadable.reported_at == 2_000.0  # its publisher is alive
    assert not unreadable.lag_known  # its lag is not 0 but unknown
    older = {k: v for k, v in dataclasses.asdict(SinkTelemetry("loki").snapshot()).items() if k != "reported_at"}
    path.write_bytes(orjson.dumps({**older, "sent": 5}))  # written before counters carried their time
    os.utime(path, (3_000.0, 3_000.0))
    assert (reader.snapshot().sent, reader.snapshot().reported_at) == (5, 3_000.0)


def test_metrics_show_how_long_ago_a_projection_in_another_process_reported(tmp_path: Path) -> None:
    # The API's /metrics for QUERYLOG_PROJECTIONS=none, its sidecar gone for 10 minutes (or never started).
    projection = MetricsProjection()
    projection.add_sink(FileTelemetry("loki", tmp_path / "loki.json", clock=lambda: time.time() - 600))
    projection.add_sink(SinkTelemetry("parquet"))  # runs in this process: reported now, at every scrape
    ages = _report_ages(projection)
    assert ages["loki"] >= 600 and ages["parquet"] == 0
    write_snapshot(SinkTelemetry("loki"), tmp_path / "loki.json")  # a sidecar publishes again
    assert _report_ages(projection)["loki"] < 60


def _report_ages(projection: MetricsProjection) -> dict[str, float]:
    families = text_string_to_metric_families(projection.exposition().decode())
    family = next(f for f in families if f.name == "querylog_sink_report_age_seconds")
    return {sample.labels["sink"]: sample.value for sample in family.samples}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory the CLI uses (QUERYLOG_HOME), with the stdout echo off."""
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path))
    monkeypatch.setenv("QUERYLOG_STDOUT_EVENTS", "false")
    return tmp_path


def test_project_once_fills_the_lake_and_publishes_its_counters(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EventLog(home / "log") as log:
        _queries(log, 10)
    assert main(["project", "--once"]) == 0
    assert _lake_rows(home) == 20
    assert FileTelemetry("parquet", home / "state" / "telemetry" / "parquet.json").snapshot().sent == 20
    assert "parquet: 20 log lines projected" in capsys.readouterr().err


def test_project_once_leaves_a_projection_another_process_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EventLog(home / "log") as log:
        _queries(log, 3)
    leader = Projector(LogReader(home / "log"), MemorySink().open(), lock_path=home / "state/locks/parquet.lock")
    assert leader.try_lead()
    try:
        assert main(["project", "--once"]) == 0
    finally:
        leader.stop(drain_timeout_s=None)
    assert _lake_rows(home) == 0
    # A process that stands by publishes nothing: the leader's counters are the ones /metrics shows.
    assert not (home / "state" / "telemetry" / "parquet.json").exists()
    assert "parquet: another process runs it" in capsys.readouterr().err


def test_project_hands_the_gil_over_often_while_its_projections_run(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loki's writing thread needs the GIL after each push; at Python's 5 ms it would wait for it much of the time."""
    before, seen = sys.getswitchinterval(), []
    real = sys.setswitchinterval
    monkeypatch.setattr(sys, "setswitchinterval", lambda s: (seen.append(s), real(s)))
    monkeypatch.setattr(
        "querylog.projector_process.run_projections",
        lambda *a, **k: seen.append(("running at", sys.getswitchinterval())) or {},
    )
    (home / "log").mkdir()
    assert main(["project", "--once"]) == 0
    assert seen == [SWITCH_INTERVAL_S, ("running at", pytest.approx(SWITCH_INTERVAL_S)), before]
    assert sys.getswitchinterval() == pytest.approx(before)  # restored: a command run in-process leaves no trace


def test_bad_project_arguments_exit_2_with_a_sentence(home: Path) -> None:
    assert main(["project", "--nice", "40"]) == 2
    assert main(["project", "--drain-timeout", "0"]) == 2
    assert main(["project", "--drain-timeout", "nan"]) == 2  # passed the `<= 0` check, and drained for no time


def _sent(runtime: Runtime) -> dict[str, tuple[bool, int]]:
    return {name: (leading, snap.sent) for name, (leading, snap) in runtime.projection_snapshots().items()}


def _sample(runtime: Runtime, family: str, **labels: str) -> float | None:
    """One sample of the API's /metrics exposition, parsed (None when absent); a family must appear once."""
    families = list(text_string_to_metric_families(runtime.metrics.exposition().decode()))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"a family appears twice: {sorted(names)}"
    for f in families:
        for sample in f.samples:
            if f.name == family and sample.name.endswith("_total") and sample.labels == labels:
                return sample.value
    return None


@pytest.mark.slow
def test_serve_with_projections_in_a_child_process(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, env="test", stdout_events=False, parquet_interval_s=0.1, projections="process")
    parquet = FileTelemetry("parquet", telemetry_path(settings, "parquet"))
    with Runtime(settings) as runtime:
        # The API process runs no projection: Parquet and the metrics fold run in the child.
        assert runtime.projectors == {}
        child = runtime.projector_process
        assert child is not None and child.running and child.pid != os.getpid()
        _queries(runtime.log, 5)
        runtime.log.flush()
        assert _wait_for(lambda: parquet.snapshot().sent == 10), parquet.snapshot()
        assert _lake_rows(tmp_path) == 10
        # /metrics shows the fold the child publishes, beside the counters of every projection, once each.
        assert _wait_for(lambda: _sample(runtime, "querylog_queries", intent="unclassified", status="completed") == 5)
        assert _sample(runtime, "querylog_sink_events_sent", sink="parquet") == 10
        assert _sample(runtime, "querylog_sink_events_sent", sink="metrics") == 10
        # /healthz's view: every projection, none led by the API process, as the child last published them.
        assert _wait_for(lambda: _sent(runtime) == {"parquet": (False, 10), "metrics": (False, 10)}), _sent(runtime)

        # A child that dies is started again, and carries on from its checkpoint.
        first = child.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: child.restarts == 1 and child.running and child.pid != first)
        _queries(runtime.log, 5, start=5)
        runtime.log.flush()
        assert _wait_for(lambda: _lake_rows(tmp_path) == 20)
        # The new child folded again what its killed parent had not saved: each query counted once.
        assert _wait_for(lambda: _sample(runtime, "querylog_queries", intent="unclassified", status="completed") == 10)
    # Closing the runtime drains the child and waits for it: it exited cleanly.
    assert not child.running and child._proc is not None and child._proc.returncode == 0


@pytest.mark.slow
def test_a_child_stopped_while_it_starts_still_drains_the_log(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, env="test", stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 4)
    child = ProjectorProcess(settings, drain_timeout_s=30).start()
    assert os.getsid(child.pid or 0) != os.getsid(0)  # its own session: a terminal's Ctrl-C reaches the API only
    # At once: the child is still importing. The stop waits for its handlers instead of killing it.
    assert child.stop() == 0
    assert _lake_rows(tmp_path) == 8
    assert FileTelemetry("parquet", telemetry_path(settings, "parquet")).snapshot().sent == 8


def test_a_one_off_run_asked_to_stop_stops_before_projecting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 3)
    stop = threading.Event()
    stop.set()  # Ctrl-C before the first batch
    sent = run_projections(elected_projectors(settings, LogReader(tmp_path / "log")), settings, stop=stop, once=True)
    assert sent and set(sent.values()) == {0}
    assert _lake_rows(tmp_path) == 0


def test_a_long_one_off_run_publishes_its_counters_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `querylog project --once` over a big backlog must not look like a projection no process runs.
    monkeypatch.setattr("querylog.projector_process.PUBLISH_INTERVAL_S", 0.0)  # publish after every batch
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 15)
    published_during: list[int] = []

    class Watched(MemorySink):
        def _write(self, batch: Batch) -> None:
            published_during.append(FileTelemetry("memory", telemetry_path(settings, "memory")).snapshot().sent)
            super()._write(batch)

    projector = Projector(LogReader(tmp_path / "log"), Watched().open(), batch_max_events=10)
    assert run_projections({"memory": projector}, settings, stop=threading.Event(), once=True) == {"memory": 30}
    assert published_during == [0, 10, 20]  # each batch finds the one before it published


class _Refusing(MemorySink):
    """A sink whose first `failures` writes fail as a Loki answering 429 would."""

    def __init__(self, failures: int, on_failure: Callable[[], object] = lambda: None) -> None:
        super().__init__()
        self.failures_left, self.on_failure = failures, on_failure

    def _write(self, batch: Batch) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            self.on_failure()
            raise SinkSendError("Loki answered 429 to a push", stage="http_429")
        super()._write(batch)


def test_a_one_off_run_offers_a_failed_batch_again_after_its_backoff(tmp_path: Path) -> None:
    # `querylog project --once` against a Loki that is busy for a moment: it waits and goes on, as `serve` would.
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 5)
    sink = _Refusing(2).open()
    projector = Projector(
        LogReader(tmp_path / "log"), sink, retry=RetryPolicy(min_backoff_s=0.001, max_backoff_s=0.002)
    )
    assert run_projections({"memory": projector}, settings, stop=threading.Event(), once=True) == {"memory": 10}
    assert len(sink.events) == 10 and sink.telemetry.snapshot().retries == 2


def test_a_one_off_run_gives_up_after_its_attempts_and_keeps_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("querylog.projector_process.ONCE_ATTEMPTS", 3)
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 5)
    sink = _Refusing(10).open()
    projector = Projector(
        LogReader(tmp_path / "log"), sink, retry=RetryPolicy(min_backoff_s=0.001, max_backoff_s=0.002)
    )
    with pytest.raises(SinkError, match="3 failed writes of one batch in a row"):
        run_projections({"memory": projector}, settings, stop=threading.Event(), once=True)
    assert sink.events == [] and sink.failures_left == 7


def test_a_one_off_run_asked_to_stop_ends_its_backoff_at_once(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 5)
    stop = threading.Event()
    sink = _Refusing(10, on_failure=stop.set).open()  # Ctrl-C while the batch fails: no hour-long wait follows
    projector = Projector(
        LogReader(tmp_path / "log"), sink, retry=RetryPolicy(min_backoff_s=3600.0, max_backoff_s=3600.0)
    )
    assert run_projections({"memory": projector}, settings, stop=stop, once=True, drain_timeout_s=0.1) == {"memory": 0}
    assert sink.failures_left == 9


def test_a_disk_that_refuses_the_counters_is_said_once_and_its_recovery_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk refuses the published counters every second: one warning until a publication goes through again,
    # then one line saying so; the projection goes on meanwhile.
    monkeypatch.setattr("querylog.projector_process.PUBLISH_INTERVAL_S", 0.0)  # publish after every batch
    settings = Settings(home=tmp_path, stdout_events=False)
    with EventLog(tmp_path / "log") as log:
        _queries(log, 20)
    refusals = iter([True, True, True])

    def full_disk_then_not(telemetry: SinkTelemetry, path: Path) -> None:
        if next(refusals, False):
            raise OSError(28, "No space left on device")
        write_snapshot(telemetry, path)

    monkeypatch.setattr("querylog.projector_process.write_snapshot", full_disk_then_not)
    projector = Projector(LogReader(tmp_path / "log"), MemorySink().open(), batch_max_events=10)
    with capture_logs() as logs:
        assert run_projections({"memory": projector}, settings, stop=threading.Event(), once=True) == {"memory": 40}
    said = [(e["event"], e.get("error")) for e in logs if e["event"].startswith("telemetry_publish")]
    assert said == [
        ("telemetry_publish_failed", "[Errno 28] No space left on device"),
        ("telemetry_publish_recovered", None),
    ]
    assert FileTelemetry("memory", telemetry_path(settings, "memory")).snapshot().sent == 40


def test_a_child_whose_parent_is_gone_is_told_to_stop() -> None:
    stop = threading.Event()
    watch_parent(0, stop)  # pid 0 is nobody's parent: as if the API process had been killed
    assert stop.wait(10)


def test_a_child_whose_parent_is_gone_stops_even_when_it_cannot_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # A killed API leaves its child a stderr pipe nobody reads: writing the warning fails (EPIPE). The child must
    # stop all the same, or it keeps the projections' locks and the next API's child stands by for ever.
    def broken_pipe(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("querylog.projector_process._log.warning", broken_pipe)
    stop = threading.Event()
    watcher = watch_parent(0, stop)
    assert stop.wait(10)
    watcher.join(timeout=10)
    assert not watcher.is_alive()


@pytest.mark.slow
def test_a_hung_child_is_killed_and_started_again(tmp_path: Path) -> None:
    """A child stopped (SIGSTOP) or deadlocked was never restarted: `running` stayed true, and its projections' locks
    held for good. It beats on a pipe every second; silent past `hung_after_s`, it is killed and started again."""
    child = ProjectorProcess(Settings(home=tmp_path, env="test", stdout_events=False), hung_after_s=3.0).start()
    try:
        assert _wait_for(lambda: child.beats >= 5), child.beats  # alive past the limit, beating: left alone
        first = child.pid
        assert first is not None and child.restarts == 0
        os.kill(first, signal.SIGSTOP)
        assert _wait_for(lambda: child.restarts == 1 and child.running and child.pid != first)
        beats = child.beats
        assert _wait_for(lambda: child.beats > beats)  # the new one beats
    finally:
        assert child.stop() == 0


#: A child that takes `delay` seconds to start (its imports, opening a long history), then beats five times a second.
_SLOW_STARTER = """
import os, signal, sys, time
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(float(sys.argv[1]))
fd = int(os.environ["QUERYLOG_PROJECTOR_HEARTBEAT_FD"])
while True:
    os.write(fd, b".")
    time.sleep(0.2)
"""


def test_a_child_slow_to_start_is_not_taken_for_hung(tmp_path: Path) -> None:
    """The hang limit ran from the spawn: a child whose start (imports on a busy machine, a long history to open)
    outlasted it was killed before its first beat, and every restart started as slowly again."""
    slow = [sys.executable, "-c", _SLOW_STARTER, "2.5"]
    child = ProjectorProcess(Settings(home=tmp_path), command=slow, hung_after_s=1.0).start()
    try:
        first = child.pid
        assert _wait_for(lambda: child.beats >= 3), child.beats
        assert child.restarts == 0 and child.pid == first and child.running
    finally:
        assert child.stop() == 0


def test_a_child_that_never_beats_is_killed_after_its_start_grace(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", _SLOW_STARTER, "3600"]
    child = ProjectorProcess(Settings(home=tmp_path), command=silent, hung_after_s=1.0, start_grace_s=2.0).start()
    try:
        first = child.pid
        assert _wait_for(lambda: child.restarts >= 1 and child.pid != first)
        assert child.beats == 0
    finally:
        child.stop()


def test_a_child_that_refuses_its_settings_is_not_restarted(tmp_path: Path) -> None:
    exits_2 = [sys.executable, "-c", "raise SystemExit(2)"]
    child = ProjectorProcess(Settings(home=tmp_path), command=exits_2).start()
    assert child._watcher is not None
    child._watcher.join(timeout=30)
    assert not child._watcher.is_alive() and child.restarts == 0 and not child.running
    child.stop()


def test_a_child_that_dies_at_once_again_and_again_is_said_to_be_in_a_loop(tmp_path: Path) -> None:
    """A projector child that crashed on start (a lake it could not read) was restarted at 2, 4, 8, 16 s while
    `/healthz` said "ok" until the projections had been silent two minutes."""
    from fastapi.testclient import TestClient

    from querylog.service.app import create_app

    crashes = [sys.executable, "-c", "raise SystemExit(1)"]
    child = ProjectorProcess(Settings(home=tmp_path), command=crashes).start()
    try:
        assert _wait_for(lambda: child.quick_exits >= 2, timeout_s=30)
        assert child.last_exit == 1 and not child.refused
    finally:
        child.stop()
    settings = Settings(home=tmp_path / "home", stdout_events=False, projections="process")
    with TestClient(create_app(settings, environ={})) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        served = client.app.state.querylog.projector_process  # type: ignore[attr-defined]
        served.quick_exits, served.last_exit = child.quick_exits, child.last_exit  # as that child's watcher left them
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert "exited 2 times in a row within a minute of starting (last exit code 1)" in health["reasons"][0]
        # The served child runs: the reason says another has started, not that none runs (a walk saw "the
        # projections are not running" beside `"running": true`).
        assert health["projector_process"]["running"] and "another has just started" in health["reasons"][0]
        served._spawned_at -= 120  # the child started after them has run two minutes: the loop is over
        assert client.get("/healthz").json()["status"] == "ok"


def test_an_unreadable_lake_commit_record_is_named_and_the_api_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged `lake/_querylog/parquet-commit.json`: `project --once` and `erase` ended in a traceback, the child of
    `serve` exited with one, /healthz said ok and /metrics answered 500 (the log's trimming read the record too)."""
    from fastapi.testclient import TestClient

    from querylog.service.app import create_app

    home = tmp_path / "home"
    with EventLog(home / "log") as log:
        _queries(log, 2)
    commit = home / "lake" / "_querylog" / "parquet-commit.json"
    commit.parent.mkdir(parents=True)
    commit.write_text("xx")
    named = f"the lake's commit record {commit} is unreadable"
    logged = b"".join(p.read_bytes() for p in sorted((home / "log").glob("*.jsonl")))
    for command in (["project", "--once"], ["erase", "--session-id", "s-1", "--skip-loki", "--wait", "0"]):
        assert main(["--home", str(home), *command]) == 2
        err = capsys.readouterr().err
        assert named in err and "querylog replay parquet" in err and "Traceback" not in err
        # Said before anything changed: the erase had blanked the log, then stopped (its receipt and audit lost).
        assert b"".join(p.read_bytes() for p in sorted((home / "log").glob("*.jsonl"))) == logged
    settings = Settings(home=home, stdout_events=False, projections="process")
    with TestClient(create_app(settings, environ={})) as client:
        child = client.app.state.querylog.projector_process  # type: ignore[attr-defined]
        assert _wait_for(lambda: child.refused)
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and "cannot start and is not restarted" in health["reasons"][0]
        assert client.get("/metrics").status_code == 200
        assert client.post("/v1/chat", json={"query": "네이버 주가 전망은?"}).status_code == 200
