"""Settings from QUERYLOG_* variables, validated with messages that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from querylog.config import ConfigError, Settings


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.home == Path(".querylog") and s.env == "dev" and s.service == "querylog"
    assert s.loki_url is None and s.fsync == "interval"


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env(
        {
            "QUERYLOG_HOME": "/tmp/x",
            "QUERYLOG_ENV": "prod",
            "QUERYLOG_SERVICE": "ontology",
            "QUERYLOG_SEGMENT_MAX_MB": "8",
            "QUERYLOG_STDOUT_EVENTS": "off",
            "LOKI_URL": "http://127.0.0.1:3100/",
            "QUERYLOG_REDACT_EXTRA": '{"ORDER": "ORD-\\\\d+"}',
        }
    )
    assert s.home == Path("/tmp/x") and s.env == "prod" and s.service == "ontology"
    assert s.segment_max_mb == 8 and s.stdout_events is False
    assert s.loki_url == "http://127.0.0.1:3100"
    assert s.redact_extra == {"ORDER": "ORD-\\d+"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:3100/", "https://logs.example.com/loki", "http://[::1]:3100"])
def test_a_loki_base_url_is_taken_without_its_trailing_slash(url: str) -> None:
    assert Settings.from_env({"LOKI_URL": url}).loki_url == url.rstrip("/")


def test_querylog_loki_url_wins_over_loki_url() -> None:
    s = Settings.from_env({"LOKI_URL": "http://a:3100", "QUERYLOG_LOKI_URL": "http://b:3100"})
    assert s.loki_url == "http://b:3100"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"QUERYLOG_ENV": "prod env"}, "QUERYLOG_ENV"),
        ({"QUERYLOG_FSYNC": "maybe"}, "QUERYLOG_FSYNC"),
        ({"QUERYLOG_SEGMENT_MAX_MB": "big"}, "QUERYLOG_SEGMENT_MAX_MB"),
        ({"QUERYLOG_SEGMENT_MAX_MB": "0"}, "QUERYLOG_SEGMENT_MAX_MB"),
        ({"QUERYLOG_STDOUT_EVENTS": "perhaps"}, "QUERYLOG_STDOUT_EVENTS"),
        ({"LOKI_URL": "localhost:3100"}, "LOKI_URL"),
        ({"QUERYLOG_METRICS_NAMESPACE": "my-app"}, "QUERYLOG_METRICS_NAMESPACE"),
        ({"QUERYLOG_REDACT_EXTRA": "[1]"}, "QUERYLOG_REDACT_EXTRA"),
        ({"QUERYLOG_REDACT_EXTRA": '{"ORDER": "ORD-(\\\\d+"}'}, "QUERYLOG_REDACT_EXTRA: .*ORDER"),
        ({"QUERYLOG_RETENTION_DAYS": "-1"}, "QUERYLOG_RETENTION_DAYS"),
        ({"QUERYLOG_RETENTION": "30 days"}, "QUERYLOG_RETENTION"),
        ({"QUERYLOG_RETENTION": "0d"}, "QUERYLOG_RETENTION"),
        ({"QUERYLOG_LOG_RETENTION": "1y"}, "QUERYLOG_LOG_RETENTION"),
        ({"QUERYLOG_LOG_RETENTION": "-1h"}, "QUERYLOG_LOG_RETENTION"),
        ({"QUERYLOG_LOG_MAX_GB": "0"}, "QUERYLOG_LOG_MAX_GB"),
        ({"QUERYLOG_HOUSEKEEPING_INTERVAL_S": "0"}, "QUERYLOG_HOUSEKEEPING_INTERVAL_S"),
        ({"QUERYLOG_CAPTURE_ANSWERS": "maybe"}, "QUERYLOG_CAPTURE_ANSWERS"),
        # Not a number, or past what a run can use: /healthz answered 500 on nan, housekeeping failed every round
        # (in a tight loop, with a nan interval) on a retention past the calendar.
        ({"QUERYLOG_LOG_MAX_GB": "nan"}, "QUERYLOG_LOG_MAX_GB"),
        ({"QUERYLOG_LOG_MAX_GB": "1e400"}, "QUERYLOG_LOG_MAX_GB"),
        ({"QUERYLOG_HOUSEKEEPING_INTERVAL_S": "nan"}, "QUERYLOG_HOUSEKEEPING_INTERVAL_S"),
        ({"QUERYLOG_HOUSEKEEPING_INTERVAL_S": "1e300"}, "QUERYLOG_HOUSEKEEPING_INTERVAL_S"),
        ({"QUERYLOG_METRICS_SNAPSHOT_INTERVAL_S": "inf"}, "QUERYLOG_METRICS_SNAPSHOT_INTERVAL_S"),
        ({"QUERYLOG_SEGMENT_MAX_AGE_S": "nan"}, "QUERYLOG_SEGMENT_MAX_AGE_S"),
        ({"QUERYLOG_RETENTION": "99999999d"}, "QUERYLOG_RETENTION must be at most 100 years"),
        ({"QUERYLOG_LOG_RETENTION": "99999999999d"}, "QUERYLOG_LOG_RETENTION"),
        ({"QUERYLOG_RETENTION_DAYS": "1000000"}, "QUERYLOG_RETENTION_DAYS"),
        ({"QUERYLOG_LOKI_TOKEN": "t", "QUERYLOG_LOKI_PASSWORD": "p"}, "QUERYLOG_LOKI_TOKEN and"),
        # Taken, then every push (and the projector child, every projection with it) failed on them.
        ({"LOKI_URL": "http://127.0.0.1:3100\r"}, "LOKI_URL .* holds '\\\\r' at position 21"),
        ({"LOKI_URL": "http://127.0.0.1:3100\t"}, "LOKI_URL"),
        ({"LOKI_URL": "http://[::1"}, "LOKI_URL .* is not a URL"),
        ({"LOKI_URL": "http://127.0.0.1:99999"}, "LOKI_URL .* is not a URL"),
        ({"LOKI_URL": "http://127.0.0.1:3100?x=1"}, "LOKI_URL .* without a query"),
        ({"LOKI_URL": "http://127.0.0.1:3100/loki/api/v1/push"}, "not its push endpoint"),
        ({"LOKI_URL": "http://:3100"}, "LOKI_URL .* names no host"),
        ({"LOKI_URL": "http://a:3100", "QUERYLOG_LOKI_TENANT": "x\ny"}, "QUERYLOG_LOKI_TENANT holds"),
        ({"LOKI_URL": "http://a:3100", "QUERYLOG_LOKI_TENANT": "a b"}, "QUERYLOG_LOKI_TENANT holds"),
        ({"LOKI_URL": "http://a:3100", "QUERYLOG_LOKI_TOKEN": "abc\r"}, "QUERYLOG_LOKI_TOKEN holds"),
        # Taken, then no client could authenticate (a header cannot carry the \r; "Bearer tok" is not "tok\r").
        ({"QUERYLOG_INGEST_TOKEN": "tok\r"}, "QUERYLOG_INGEST_TOKEN holds '.r' at position 3"),
        ({"QUERYLOG_INGEST_TOKEN": "   "}, "QUERYLOG_INGEST_TOKEN holds ' ' at position 0: .* one word"),
        # Taken, then the projector child (the lake's projection with it) crashed on it, again and again.
        ({"QUERYLOG_LOKI_CA_FILE": __file__}, "QUERYLOG_LOKI_CA_FILE .* holds no CA certificate"),
        ({"QUERYLOG_LOKI_CA_FILE": str(Path(__file__).parent)}, "QUERYLOG_LOKI_CA_FILE .* is a directory"),
    ],
)
def test_bad_values_raise_one_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_every_switch_is_read_from_its_variable() -> None:
    """QUERYLOG_AUTO_COMPACT was declared and documented, and never read: 0 left it on, and "maybe" passed."""
    import dataclasses

    switches = [f for f in dataclasses.fields(Settings) if f.type in ("bool", bool) and "env" in f.metadata]
    assert len(switches) >= 4
    for f in switches:
        variable = f.metadata["env"]
        flipped = Settings.from_env({variable: "0" if f.default else "1"})
        assert getattr(flipped, f.name) is (not f.default), variable
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: "maybe"})


def test_docs_configuration_lists_every_setting() -> None:
    from querylog.config import describe_settings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for variable, _default, meaning in describe_settings():
        assert f"`{variable}`" in doc, f"docs/configuration.md misses {variable}"
        assert meaning in doc


def test_one_retention_reaches_every_store_and_the_log_never_keeps_longer() -> None:
    s = Settings.from_env({"QUERYLOG_RETENTION": "36h", "QUERYLOG_LOG_RETENTION": "7d"})
    assert s.lake_retention_days == 2  # whole UTC days, rounded up
    assert s.log_retention_s == 36 * 3600
    s = Settings.from_env({"QUERYLOG_RETENTION": "90d", "QUERYLOG_RETENTION_DAYS": "30"})
    assert (s.lake_retention_days, s.log_retention_s) == (30, 7 * 86_400)  # the lake's own; the log's default
    assert Settings.from_env({}).lake_retention_days is None
    assert Settings.from_env({"QUERYLOG_LOG_RETENTION": "0s"}).log_retention_s == 0


def test_a_password_in_the_loki_url_is_masked_wherever_the_url_is_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.cli import main

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_LOKI_URL", "http://bob:s3cret@127.0.0.1:9")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "http://bob:***@127.0.0.1:9" in out
    # One column of values, however long a setting's name.
    assert len({len(line) - len(line.split("  ", 1)[1].lstrip()) for line in out.splitlines()}) == 1
    (tmp_path / "home" / "log").mkdir(parents=True)
    assert main(["reconcile"]) == 2  # nothing listens there: the error names the URL
    err = capsys.readouterr().err
    assert "http://bob:***@127.0.0.1:9/loki/api/v1/query" in err and "s3cret" not in err


def test_config_shows_the_llm_and_langfuse_variables_serve_reads_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.cli import main

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-public")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-hidden")
    monkeypatch.setenv("LANGFUSE_HOST", "https://team:pw@langfuse.example")
    monkeypatch.setenv("QUERYLOG_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("QUERYLOG_LLM_MODEL", "gpt-test")
    monkeypatch.setenv("QUERYLOG_LLM_API_KEY", "sk-llm-hidden")
    assert main(["config"]) == 0
    shown = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert shown["LANGFUSE_HOST"] == "https://team:***@langfuse.example"
    assert shown["LANGFUSE_PUBLIC_KEY"] == "pk-lf-public"
    assert shown["LANGFUSE_SECRET_KEY"] == shown["QUERYLOG_LLM_API_KEY"] == "***"
    assert (shown["QUERYLOG_LLM_MODEL"], shown["LANGFUSE_BASE_URL"]) == ("gpt-test", "None")


def test_config_says_when_the_log_keeps_less_than_its_own_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.cli import main

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_RETENTION", "1d")  # caps the log's default 7 days
    assert main(["config"]) == 0
    assert "7d (in force: 1d, QUERYLOG_RETENTION caps it)" in capsys.readouterr().out


def test_config_checks_the_alias_file_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`QUERYLOG_ALIASES=/nonexistent.csv querylog config` said nothing (exit 0); search then refused to run."""
    from querylog.cli import main

    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_ALIASES", str(tmp_path / "nonexistent.csv"))
    assert main(["config"]) == 2
    assert "QUERYLOG_ALIASES: the alias file cannot be used" in capsys.readouterr().err
    monkeypatch.delenv("QUERYLOG_ALIASES")
    assert main(["config"]) == 0  # the bundled starter file


@pytest.mark.parametrize("command", [["report"], ["sql", "SELECT 1"], ["replay", "metrics"], ["reconcile"]])
def test_commands_whose_numbers_read_the_alias_file_stop_at_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """They went on with reformulations counted without company names (other numbers, exit 0)."""
    from querylog.cli import main
    from querylog.logging.events import QueryReceived
    from querylog.logging.segments import EventLog

    with EventLog(tmp_path / "home" / "log") as log:
        log.append(QueryReceived(query_id="q-1", query_text="삼성전자 주가"))
    bad = tmp_path / "aliases.csv"
    bad.write_text("not,the,header\n", encoding="utf-8")
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_ALIASES", str(bad))
    assert main(command) == 2
    assert "QUERYLOG_ALIASES: the alias file cannot be used" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["OFF", " Off ", "STARTER"])
def test_the_alias_keywords_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("QUERYLOG_ALIASES", value)
    assert Settings.from_env().aliases == value.strip().lower()


@pytest.mark.parametrize("namespace", ["querylog", "_x", "a1", "__x", "__", "1abc", "a:b", "my-app"])
def test_a_metrics_namespace_the_settings_take_is_one_the_metrics_take(namespace: str) -> None:
    """`__x` passed the settings and then stopped `serve` with a traceback where the metrics were made (exit 1)."""
    from querylog.logging.metrics import MetricsProjection

    try:
        Settings.from_env({"QUERYLOG_METRICS_NAMESPACE": namespace})
    except ConfigError as exc:
        said = str(exc)
        taken = False
    else:
        said, taken = "QUERYLOG_METRICS_NAMESPACE", True
    assert "QUERYLOG_METRICS_NAMESPACE" in said
    try:
        MetricsProjection(namespace=namespace)
    except ValueError:
        assert not taken, namespace
    else:
        assert taken, namespace


@pytest.mark.parametrize("variable", ["QUERYLOG_RELEASE", "QUERYLOG_PROMPT_VERSION"])
@pytest.mark.parametrize("value", ["v1\tb", "\u200b", "r" * 201])
def test_a_release_every_event_would_refuse_is_refused_with_the_settings(variable: str, value: str) -> None:
    """`QUERYLOG_RELEASE=$'v1\\tb'` passed `querylog config`, then `serve` stopped with a traceback (exit 1)."""
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.parametrize("url", ["https://user:s3cretpw@logs.example.net\r", "http://user:s3cret/pw@loki:3100"])
def test_a_refused_loki_url_is_echoed_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError, match=r"user:\*\*\*@") as refused:
        Settings.from_env({"LOKI_URL": url})
    assert "s3cret" not in str(refused.value)
