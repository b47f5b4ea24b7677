"""The Loki projection in the running pipeline, its settings, and `querylog replay loki|metrics`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from tests.support.loki_entries import entry_of

from querylog.cli import main
from querylog.config import ConfigError, Settings
from querylog.logging.events import QueryCompleted, QueryReceived
from querylog.logging.segments import EventLog
from querylog.runtime import Runtime
from querylog.testing import RecordedLoki


@pytest.fixture
def loki_url() -> Iterator[tuple[RecordedLoki, str]]:
    loki = RecordedLoki()
    with loki.serve() as url:
        yield loki, url


def _ids(loki: RecordedLoki) -> list[str]:
    return [orjson.loads(e.line)["event_id"] for e in loki.entries()]


def test_the_runtime_ships_to_loki_when_a_url_is_set(tmp_path: Path, loki_url: tuple[RecordedLoki, str]) -> None:
    loki, url = loki_url
    settings = Settings(home=tmp_path / "home", env="unit", stdout_events=False, loki_url=url, projections="thread")
    with Runtime(settings) as runtime:
        assert "loki" in runtime.projectors
        for i in range(3):
            with runtime.tracker.query(f"카카오 뉴스 {i}", session_id="s-1"):
                pass
    assert len(loki.entries('{app="querylog", env="unit", event="query_received"}')) == 3
    exposition = runtime.metrics.exposition().decode()
    assert 'querylog_sink_events_sent_total{sink="loki"} 6.0' in exposition
    assert (settings.state_dir / "checkpoints" / "loki.json").exists()


def test_no_url_no_loki_projection(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", stdout_events=False)
    with Runtime(settings) as runtime:
        assert "loki" not in runtime.projectors


def test_loki_options_are_read_from_the_environment(tmp_path: Path) -> None:
    import certifi  # httpx's CA bundle: a file of real certificates, as QUERYLOG_LOKI_CA_FILE must name

    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    s = Settings.from_env(
        {
            "QUERYLOG_LOKI_URL": "https://loki.example:3100",
            "QUERYLOG_LOKI_TENANT": "team-a",
            "QUERYLOG_LOKI_USERNAME": "u",
            "QUERYLOG_LOKI_PASSWORD": "p",
            "QUERYLOG_LOKI_CA_FILE": str(ca),
            "QUERYLOG_LOKI_BATCH_KB": "512",
            "QUERYLOG_LOKI_BATCH_WAIT_S": "0.5",
        }
    )
    assert (s.loki_tenant, s.loki_username, s.loki_password, s.loki_ca_file) == ("team-a", "u", "p", ca)
    assert s.loki_batch_kb == 512 and s.loki_batch_wait_s == 0.5 and s.loki_insecure_skip_verify is False
    assert (
        Settings.from_env({"QUERYLOG_LOKI_TOKEN": "t", "QUERYLOG_LOKI_INSECURE_SKIP_VERIFY": "yes"}).loki_token == "t"
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"QUERYLOG_LOKI_USERNAME": "u"}, "QUERYLOG_LOKI_PASSWORD"),
        (
            {"QUERYLOG_LOKI_TOKEN": "t", "QUERYLOG_LOKI_USERNAME": "u", "QUERYLOG_LOKI_PASSWORD": "p"},
            "QUERYLOG_LOKI_TOKEN",
        ),
        ({"QUERYLOG_LOKI_CA_FILE": "/nonexistent.pem"}, "QUERYLOG_LOKI_CA_FILE"),
        ({"QUERYLOG_LOKI_INSECURE_SKIP_VERIFY": "maybe"}, "QUERYLOG_LOKI_INSECURE_SKIP_VERIFY"),
        ({"QUERYLOG_LOKI_BATCH_KB": "100"}, "QUERYLOG_LOKI_BATCH_KB"),
    ],
)
def test_bad_loki_options_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_querylog_config_masks_the_loki_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYLOG_LOKI_PASSWORD", "hunter2")
    monkeypatch.setenv("QUERYLOG_LOKI_USERNAME", "u")
    assert main(["config"]) == 0
    assert "hunter2" not in capsys.readouterr().out


# -- replay ---------------------------------------------------------------------------------------------------


def _write_log(home: Path, ages: list[timedelta]) -> list[str]:
    now = datetime.now(UTC)
    ids = []
    with EventLog(home / "log") as log:
        for i, age in enumerate(ages):
            event = QueryReceived(query_id=f"q-{i}", query_text=f"네이버 {i}", env="replay", ts=now - age)
            log.append(event)
            ids.append(event.event_id)
        log.flush()
    return ids


def test_replay_loki_ships_the_window_without_touching_the_live_checkpoint(
    tmp_path: Path,
    loki_url: tuple[RecordedLoki, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loki, url = loki_url
    home = tmp_path / "home"
    ids = _write_log(home, [timedelta(hours=3), timedelta(minutes=30), timedelta(minutes=5)])
    monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
    monkeypatch.setenv("QUERYLOG_ENV", "replay")
    assert main(["--home", str(home), "replay", "loki", "--since", "1h"]) == 0
    assert sorted(_ids(loki)) == sorted(ids[1:])
    assert not (home / "state" / "checkpoints" / "loki.json").exists()
    err = capsys.readouterr().err
    assert "Loki may already hold some of these lines" in err
    assert "read 3 events, sent 2" in err and "1 events before the window" in err


def test_replay_loki_without_a_url_or_with_a_bad_since_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QUERYLOG_LOKI_URL", raising=False)
    monkeypatch.delenv("LOKI_URL", raising=False)
    assert main(["--home", str(tmp_path), "replay", "loki"]) == 2
    assert "set QUERYLOG_LOKI_URL" in capsys.readouterr().err
    monkeypatch.setenv("QUERYLOG_LOKI_URL", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as refused:
        main(["--home", str(tmp_path), "replay", "loki", "--since", "yesterday"])
    assert refused.value.code == 2 and "argument --since: expected a duration" in capsys.readouterr().err


def test_replay_loki_reports_an_unreachable_loki(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loki = RecordedLoki()
    with loki.serve() as url:
        pass  # the server is gone: connections are refused
    _write_log(tmp_path, [timedelta(minutes=1)])
    monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
    import querylog.commands.replay as replay_module

    waits: list[float] = []
    monkeypatch.setattr(replay_module, "_REPLAY_ATTEMPTS", 3)
    monkeypatch.setattr(replay_module, "_sleep", waits.append)  # the backoff, recorded instead of waited
    assert main(["--home", str(tmp_path), "replay", "loki"]) == 1
    err = capsys.readouterr().err
    assert len(waits) == 2 and err.count("trying again in") == 2
    assert "stopped after reading 1 events, 0 of them sent to Loki" in err and "unreachable" in err
    assert err.rstrip().endswith("; run it again once Loki answers")  # how to go on, as every stopped command says


def test_replay_loki_takes_since_as_the_other_commands_do(
    loki_url: tuple[RecordedLoki, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It parsed --since its own way: a time in the future was taken (exit 0, "0 lines sent"), where report, search
    and reconcile refuse it."""
    monkeypatch.setenv("QUERYLOG_LOKI_URL", loki_url[1])
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "log").mkdir(parents=True)
    with pytest.raises(SystemExit) as refused:
        main(["replay", "loki", "--since", "2999-01-01"])
    assert refused.value.code == 2 and "'2999-01-01' is in the future" in capsys.readouterr().err
    for since in ("90m", "2d", "2026-11-20T09:00:00Z", "2026-11-20"):
        assert main(["replay", "loki", "--since", since]) == 0, since


def test_replay_metrics_equals_the_live_metrics_of_the_same_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUERYLOG_LOKI_URL", raising=False)
    monkeypatch.delenv("LOKI_URL", raising=False)
    settings = Settings(home=tmp_path / "home", stdout_events=False)
    with Runtime(settings) as runtime:
        for i in range(12):
            with runtime.tracker.query(f"삼성전자 {i}", session_id=f"s-{i % 4}") as q:
                q.classified("stock_analysis" if i % 3 else "news", 0.8, duration_ms=3.0)
                q.searched(i % 5, cache_hit=i % 2 == 0, duration_ms=12.0)
        runtime.log.append(QueryCompleted(query_id="orphan", latency_ms=5.0))
    live = runtime.metrics.exposition().decode()
    capsys.readouterr()  # the runtime's own log lines
    assert main(["--home", str(settings.home), "replay", "metrics"]) == 0
    replayed = capsys.readouterr().out

    def events_only(text: str) -> list[str]:
        # Sink series describe a running process (its sinks' counters) and log series the data directory
        # (its size, its trims), not the events.
        return [line for line in text.splitlines() if "_sink_" not in line and "querylog_log_" not in line]

    assert events_only(replayed) == events_only(live)
    assert 'querylog_queries_total{intent="news",status="completed"} 4.0' in replayed


def test_once_the_log_is_trimmed_the_replays_read_the_lake_and_give_the_same_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from querylog.housekeeping import run_housekeeping
    from querylog.logging.segments import LogReader

    settings = Settings(home=tmp_path / "home", stdout_events=False, log_retention="0s")
    with Runtime(settings) as runtime:  # closing it commits the lake and the metrics snapshot
        for i in range(9):
            with runtime.tracker.query(f"하이닉스 {i}", session_id="s") as q:
                q.classified("stock_analysis" if i % 2 else "news", 0.7, duration_ms=2.0)
                q.responded(model="gpt-4o", input_tokens=100, output_tokens=20, answer=f"답 {i}")
    capsys.readouterr()
    assert main(["--home", str(settings.home), "replay", "metrics", "--from", "log"]) == 0
    from_log = capsys.readouterr().out
    logged = [line for batch in LogReader(settings.log_dir).iter_all() for line in batch.lines]
    assert len(run_housekeeping(settings, now=time.time() + 3_600).trim.delete) >= 1
    assert LogReader(settings.log_dir).segments() == []
    capsys.readouterr()  # housekeeping's own log line
    assert main(["--home", str(settings.home), "replay", "metrics"]) == 0  # auto: the log is gone, the lake
    replayed = capsys.readouterr()
    assert "folding the lake" in replayed.err and replayed.out == from_log
    assert f"100% of the lake folded ({len(logged):,} of {len(logged):,} events)" in replayed.err

    loki = RecordedLoki()
    with loki.serve() as url:
        monkeypatch.setenv("QUERYLOG_LOKI_URL", url)
        assert main(["--home", str(settings.home), "replay", "loki"]) == 0
    assert "reading the lake" in capsys.readouterr().err
    expected = [_loki_line(line, settings) for line in logged]
    assert sorted(e.line for e in loki.entries()) == sorted(expected)  # the very lines the log gave Loki


def _loki_line(log_line: bytes, settings: Settings) -> str:
    """The line Loki stores for a log line: the event without the fields it holds as labels and metadata."""
    from querylog.logging.codec import decode

    return entry_of(decode(log_line), app=settings.service, env=settings.env).line
