"""The Prometheus and Alertmanager configs: valid for the real tools, every alert tested, documented, secret-free."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dependency

from querylog.logging.events import QueryCompleted, QueryFailed
from querylog.logging.metrics import MetricsProjection
from querylog.logging.telemetry import SinkTelemetry

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "compose" / "prometheus"
ALERTMANAGER_CONFIG = REPO / "compose" / "alertmanager" / "alertmanager.yml"
RULE_FILES = [PROMETHEUS_DIR / "recording.yml", PROMETHEUS_DIR / "alerts.yml"]
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS_DOC = REPO / "docs" / "alerts.md"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus prometheus-alertmanager, "
                    "or run scripts/ensure-prometheus.sh)")  # fmt: skip
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict[str, Any]]:
    groups = load(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# -- the real tools ----------------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config() -> None:
    run(tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))


def test_promtool_accepts_the_rule_files() -> None:
    run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool test files under compose/prometheus/tests"
    run(tool("promtool"), "test", "rules", *map(str, RULE_TESTS))


def test_amtool_accepts_the_alertmanager_config() -> None:
    run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=QuerylogHighErrorRatio"], "slack-and-email"),
        (["severity=warning", "alertname=QuerylogSinkLagging"], "slack"),
        (["alertname=SomethingElse"], "slack"),
    ],
)
def test_alertmanager_routes_critical_alerts_to_email_too(labels: list[str], receiver: str) -> None:
    amtool = tool("amtool")
    run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}",
        *labels)  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "QuerylogSinkDroppingEvents", "sink": "parquet", "reason": "corrupt_line"},
         "[FIRING] QuerylogSinkDroppingEvents (sink parquet) (reason corrupt_line)"),
        # The Loki ruler's alerts are per env; staging's and prod's were grouped into one message, titled alike.
        ({"alertname": "QuerylogRefundWordSpike", "env": "prod", "source": "loki"},
         "[FIRING] QuerylogRefundWordSpike (env prod)"),
    ],
)  # fmt: skip
def test_the_slack_title_names_what_tells_two_alerts_of_a_kind_apart(
    tmp_path: Path, labels: dict[str, str], expected: str
) -> None:
    """Two `QuerylogProjectionSilent` messages (parquet, stdout) had one title: only an intent was named in it."""
    import json

    amtool = tool("amtool")
    (title,) = {c["title"] for r in load(ALERTMANAGER_CONFIG)["receivers"] for c in r.get("slack_configs", [])}
    (tmp_path / "none.tmpl").write_text("")
    (tmp_path / "data.json").write_text(json.dumps({"status": "firing", "commonLabels": labels, "alerts": []}))
    rendered = run(amtool, "template", "render", f"--template.glob={tmp_path / 'none.tmpl'}",
                   f"--template.data={tmp_path / 'data.json'}", f"--template.text={title}")  # fmt: skip
    assert rendered.stdout.strip() == expected
    # What the title tells apart, Alertmanager keeps apart: one notification each.
    assert set(labels) - {"alertname", "source", "reason"} <= set(load(ALERTMANAGER_CONFIG)["route"]["group_by"])


# -- consistency, read from the YAML ----------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_quiet_promtool_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts, "alerts.yml defines no alert"
    assert alerts - firing == set(), "alerts without a test that expects them to fire"
    assert alerts - quiet == set(), "alerts without a test that expects them to stay quiet"
    assert (firing | quiet) - alerts == set(), "tests for alerts that alerts.yml does not define"


def test_every_alert_says_what_happened_and_links_its_runbook_section() -> None:
    text = ALERTS_DOC.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9_-]", "", heading.strip().lower().replace(" ", "-"))
        for heading in re.findall(r"^#{2,3} (.+)$", text, flags=re.MULTILINE)
    }
    for rule in alert_rules():
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook"} <= annotations.keys(), rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/alerts.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: docs/alerts.md has no section #{anchor}"
        assert f"| [{rule['alert']}](#{anchor}) |" in text, f"{rule['alert']}: not in docs/alerts.md's table"


def test_rules_only_read_metrics_the_projection_exposes(tmp_path: Path) -> None:
    from querylog.config import Settings
    from querylog.housekeeping import LogCollector

    projection = MetricsProjection()
    projection.add_collector(LogCollector(Settings(home=tmp_path), "querylog"))  # as the API's /metrics has it
    projection.apply(
        [
            QueryCompleted(query_id="q1", latency_ms=800.0, intent="news", quality_score=0.9),
            QueryFailed(query_id="q2", error_type="Timeout", latency_ms=30_000.0, intent="news"),
        ]
    )
    projection.add_sink(SinkTelemetry("loki"))
    telemetry = SinkTelemetry("parquet")
    telemetry.dropped("too_old")
    telemetry.error("send")
    projection.add_sink(telemetry)
    exposed = set(re.findall(r"^(querylog_[a-z_]+)", projection.exposition().decode(), flags=re.MULTILINE))
    for path in RULE_FILES:
        used = set(re.findall(r"\bquerylog_[a-z_]+", path.read_text(encoding="utf-8")))
        assert used, path
        assert used - exposed == set(), f"{path.name} reads series the metrics projection never exposes"


def test_the_alertmanager_config_holds_no_secret() -> None:
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    config = load(ALERTMANAGER_CONFIG)
    assert "hooks.slack.com" not in text
    assert config["global"]["slack_api_url_file"].startswith("/run/secrets/")
    assert config["global"]["smtp_auth_password_file"].startswith("/run/secrets/")
    secret_keys = r"^\s*(api_url|slack_api_url|smtp_auth_password|auth_password|auth_secret):"
    inline = re.findall(secret_keys, text, flags=re.MULTILINE)
    assert inline == [], "put secrets in files under /run/secrets and point a *_file setting at them"
