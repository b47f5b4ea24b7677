"""Loki ruler rules (loki/rules/fake/querylog.yml): structure, LogQL that follows the project's rules, runbooks.
Their behaviour against a real Loki is in test_loki_rules_live.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "loki" / "rules" / "fake" / "querylog.yml"
RULE_RANGE = r"\d+[smhd]"
SEVERITIES = {"critical", "warning", "info"}


def github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_rules_file_has_groups_evaluated_every_minute(checks: ModuleType) -> None:
    data = checks.load_rules_file()
    assert set(data) == {"groups"}
    names = [g["name"] for g in data["groups"]]
    assert len(names) == len(set(names))
    for group in data["groups"]:
        assert group["interval"] == "1m" and group["rules"], group["name"]


def test_rule_has_expr_labels_and_the_fields_of_its_kind(loki_rule: Any) -> None:
    body = loki_rule.body
    assert ("alert" in body) != ("record" in body), "a rule is an alert or a recording rule, not both"
    assert isinstance(body["expr"], str) and body["expr"].strip()
    assert body["labels"]["source"] == "loki"
    if loki_rule.is_alert:
        assert re.fullmatch(r"Querylog[A-Z][A-Za-z0-9]+", body["alert"])
        assert body["labels"]["severity"] in SEVERITIES
        assert set(body["annotations"]) >= {"summary", "description", "runbook_url"}
        assert re.fullmatch(r"\d+[smh]", body["for"])
    else:
        assert re.fullmatch(r"querylog:[a-z0-9_]+:[a-z0-9_]+", body["record"])
        # Prometheus' rule format rejects annotations (and `for`) on recording rules.
        assert "annotations" not in body and "for" not in body


def test_rule_expr_is_plausible_logql(loki_rule: Any, checks: ModuleType) -> None:
    expr = loki_rule.body["expr"]
    assert checks.logql_problems(expr, range_pattern=RULE_RANGE) == []
    assert "$" not in expr, "rules have no template variables"
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", checks.mask_strings(expr)):
        assert "env" in [g.strip() for g in grouping.split(",")], "every rule aggregates by env, to name it"


def test_alert_names_are_unique(checks: ModuleType) -> None:
    alerts = [r.name for r in checks.iter_rules() if r.is_alert]
    assert len(alerts) == len(set(alerts))


@pytest.mark.parametrize("word", ["오류", "환불"])
def test_word_spike_alerts_filter_query_received_lines(word: str, checks: ModuleType) -> None:
    spikes = [r for r in checks.iter_rules() if r.is_alert and word in r.body["expr"]]
    assert spikes, f"no alert watches queries mentioning {word}"
    for rule in spikes:
        expr = rule.body["expr"]
        for selector in checks.stream_selectors(expr):
            assert 'event="query_received"' in selector, f"{rule.name}: {word} is looked for in query text only"
        assert re.search(r'\|[=~]\s*"[^"]*' + word, expr), f"{rule.name}: {word} must be in a line filter"


def test_there_are_error_ratio_and_no_traffic_alerts(checks: ModuleType) -> None:
    exprs = {r.name: r.body["expr"] for r in checks.iter_rules() if r.is_alert}
    assert 'event="query_failed"' in exprs["QuerylogErrorRatioHigh"]
    assert "by (env, intent)" in exprs["QuerylogErrorRatioHigh"]
    assert "offset" in exprs["QuerylogNoTrafficInLoki"] and "unless" in exprs["QuerylogNoTrafficInLoki"]


def test_runbook_urls_point_at_existing_sections(checks: ModuleType) -> None:
    for rule in checks.iter_rules():
        if not rule.is_alert:
            continue
        path, _, anchor = rule.body["annotations"]["runbook_url"].partition("#")
        doc = REPO_ROOT / path
        assert doc.is_file(), f"{rule.name}: {path} does not exist"
        assert anchor in github_anchors(doc.read_text(encoding="utf-8")), f"{rule.name}: no section #{anchor}"


def test_rules_parse_with_lokitool() -> None:
    lokitool = os.environ.get("LOKITOOL") or shutil.which("lokitool")
    if not lokitool:
        pytest.skip("lokitool not found (set LOKITOOL): rules checked by the tests above and the live tests only")
    for command in (["rules", "check"], ["rules", "lint", "--dry-run"]):
        result = subprocess.run([lokitool, *command, str(RULES)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_no_rule_shares_a_name_with_the_prometheus_rules(checks: ModuleType) -> None:
    """Loki's ruler remote-writes to the Prometheus that loads compose/prometheus/*.yml: a recording rule of the
    same name would mix series folded from /metrics with series counted from Loki lines, and Alertmanager groups
    by alertname."""
    import yaml

    def names(data: dict[str, Any]) -> set[str]:
        return {r.get("record") or r["alert"] for g in data["groups"] for r in g["rules"]}

    prometheus: set[str] = set()
    for path in (REPO_ROOT / "compose" / "prometheus").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "groups" in data:
            prometheus |= names(data)
    loki = names(checks.load_rules_file())
    assert "querylog:queries:rate5m" in prometheus and "QuerylogNoTraffic" in prometheus  # both files were read
    assert not loki & prometheus
