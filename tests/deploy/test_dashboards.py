"""The Grafana dashboards: generated JSON is committed as generated, and every query follows the project's rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
AUTO_RANGE = r"\$__auto"
EXPECTED_UIDS = {"querylog-overview", "querylog-pipeline", "querylog-search", "querylog-health"}
FIXED_DATASOURCES = {"loki": "loki", "prometheus": "prometheus"}  # uid → type


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation, enough for tests: `$name` and `${name}`, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


# --- generated files ----------------------------------------------------------------------------------------------


def test_committed_json_is_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "grafana" / "generate.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in DASHBOARD_DIR.glob("*.json")}
    assert sorted(generated) == sorted(committed), "dashboard files differ: run `python grafana/generate.py`"
    stale = [name for name in generated if generated[name] != committed[name]]
    assert not stale, f"{stale} differ from the generator's output: run `python grafana/generate.py` and commit"


def test_generator_output_is_deterministic_sorted_and_newline_terminated(generator: ModuleType) -> None:
    first, second = generator.build_all(), generator.build_all()
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        canonical = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert text == canonical, f"{name} is not in sorted-key form"
        assert "\\u" not in text, f"{name} has \\u escapes: Korean must stay readable"


def test_the_dashboards_can_be_written_for_another_app_label(generator: ModuleType) -> None:
    """Every Loki panel selected app="querylog": a service shipping as QUERYLOG_SERVICE=chat-api saw empty panels."""
    for name, text in generator.build_all("chat-api").items():
        dashboard = json.loads(text)
        loki = [
            t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t["datasource"]["uid"] == "loki"
        ]
        assert loki and all('app="chat-api"' in e and 'app="querylog"' not in e for e in loki), name
        assert 'app=\\"querylog\\"' not in json.dumps(dashboard["templating"]), name  # the env choices too
    with pytest.raises(ValueError, match="QUERYLOG_SERVICE"):
        generator.build_all("chat api")


# --- dashboard structure ------------------------------------------------------------------------------------------


def test_dashboards_have_the_fixed_uids() -> None:
    uids = {json.loads(p.read_text(encoding="utf-8"))["uid"] for p in DASHBOARD_DIR.glob("*.json")}
    assert uids == EXPECTED_UIDS


def test_panel_ids_are_unique_and_the_grid_has_no_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_every_panel_and_target_uses_a_fixed_datasource_uid(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        ds = panel["datasource"]
        assert FIXED_DATASOURCES.get(ds["uid"]) == ds["type"], f"{panel['title']}: datasource {ds}"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == ds, f"{panel['title']}: target datasource differs from the panel's"
            assert target["expr"].strip()
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


def test_template_variables_env_intent_search_are_defined() -> None:
    dashboards = {d["uid"]: variables(d) for d in (json.loads(p.read_text()) for p in DASHBOARD_DIR.glob("*.json"))}
    assert all("env" in v for v in dashboards.values())
    env = dashboards["querylog-overview"]["env"]
    assert env["type"] == "query" and env["datasource"]["uid"] == "loki"
    for uid in ("querylog-overview", "querylog-pipeline"):
        intent = dashboards[uid]["intent"]
        assert intent["includeAll"] and intent["allValue"] == ".*", "All must also match events without an intent"
    assert dashboards["querylog-search"]["search"]["type"] == "textbox"


def test_every_variable_a_query_uses_is_defined(dashboard: dict[str, Any]) -> None:
    defined = set(variables(dashboard))
    for panel in panels(dashboard):
        for text in [panel["title"]] + [t["expr"] for t in panel["targets"]]:
            used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
            builtin = {name for name in used if name.startswith("__")}
            assert used - builtin <= defined, f"{panel['title']}: undefined {sorted(used - builtin - defined)}"


def test_there_are_at_least_eight_loki_targets(checks: ModuleType) -> None:
    assert sum(t.datasource_uid == "loki" for t in checks.iter_targets()) >= 8


def test_overview_shows_logql_and_promql_quantiles_side_by_side() -> None:
    overview = json.loads((DASHBOARD_DIR / "query-overview.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in panels(overview) for t in p["targets"]]
    for q in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"quantile_over_time({q},") and "unwrap latency_ms" in e for e in exprs), q
        assert any(e.startswith(f"histogram_quantile({q},") and "querylog_query_duration_seconds" in e for e in exprs)


def test_query_search_filters_lines_with_the_search_textbox() -> None:
    search = json.loads((DASHBOARD_DIR / "query-search.json").read_text(encoding="utf-8"))
    logs = [t["expr"] for p in panels(search) if p["type"] == "logs" for t in p["targets"]]
    # A raw string: a `"` or a backslash typed in the box was Loki's parse error or an escape.
    assert any("|= `$search`" in e and 'event="query_received"' in e for e in logs)
    assert any("result_count == 0" in e and 'event="search_completed"' in e for e in logs)
    assert any('| session_id="$session"' in e for e in logs)


def test_the_logql_and_promql_stage_panels_name_the_same_stages() -> None:
    """The LogQL stage panel named its series by event type (intent_classified, ...) beside a PromQL panel naming
    the same durations by stage (classify, ...)."""
    stages = json.loads((DASHBOARD_DIR / "pipeline-stages.json").read_text(encoding="utf-8"))
    by_title = {p["title"]: p for p in panels(stages)}
    [logql] = by_title["Stage duration p95 (LogQL)"]["targets"]
    promql = by_title["Stage duration p50 / p95 (PromQL)"]["targets"]
    assert logql["legendFormat"] == "p95 {{stage}}" and "p95 {{stage}}" in {t["legendFormat"] for t in promql}
    for event, stage in (
        ("intent_classified", "classify"),
        ("search_completed", "search"),
        ("response_generated", "generate"),
    ):
        assert f'"stage", "{stage}", "event", "{event}"' in logql["expr"]


def test_drops_and_sink_errors_are_drawn_as_counts_so_a_first_one_shows() -> None:
    """6 events dropped as too_old drew "0 / s" for 40 minutes: a reason's series appears with its first drop, and
    a rate sees no increase in a series' first value."""
    health = json.loads((DASHBOARD_DIR / "querylog-health.json").read_text(encoding="utf-8"))
    by_title = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels(health)}
    for title, metric in (
        ("Dropped events by reason", "querylog_sink_events_dropped_total"),
        ("Sink errors by stage", "querylog_sink_errors_total"),
    ):
        [expr] = by_title[title]
        assert metric in expr and "rate(" not in expr and "increase(" not in expr


def test_a_share_of_two_loki_counts_is_zero_when_nothing_is_counted_above_it(checks: ModuleType) -> None:
    """The cache hit ratio showed "No data" while searches ran and none hit the cache: count_over_time has no zero
    series, so a share of two counts needs `or 0 * <denominator>` above the line."""
    shares = [
        t
        for t in checks.iter_targets()
        if re.search(r"count_over_time\(.*\)\)\s*/\s*sum[^(]*\(count_over_time", t.expr)
    ]
    assert {t.panel["title"] for t in shares} >= {"Error ratio", "Cache hit ratio", "Cache hit ratio over time"}
    for target in shares:
        above = target.expr[: target.expr.rindex(" / ")]
        assert " or 0 * " in above, f"{target.panel['title']}: {target.expr}"


# --- every query --------------------------------------------------------------------------------------------------


def test_loki_target_follows_the_logql_rules(loki_target: Any, checks: ModuleType) -> None:
    assert checks.logql_problems(loki_target.expr, range_pattern=AUTO_RANGE) == []
    if loki_target.panel["type"] == "logs":
        assert not checks.is_metric_query(loki_target.expr), "a logs panel needs a log query, not a metric query"
    else:
        assert checks.is_metric_query(loki_target.expr), f"a {loki_target.panel['type']} panel needs a metric query"


def test_prometheus_target_follows_the_promql_rules(prom_target: Any, checks: ModuleType) -> None:
    assert checks.promql_problems(prom_target.expr) == []


def _series_querylog_serves() -> set[str]:
    """Every series name /metrics exposes (histogram parts and counter totals included), and every recording
    rule's name: what a dashboard's PromQL can read."""
    import tempfile

    from prometheus_client.parser import text_string_to_metric_families

    from querylog.config import Settings
    from querylog.housekeeping import LogCollector
    from querylog.logging.events import (
        IntentClassified,
        QueryCompleted,
        QueryFailed,
        QueryReceived,
        ResponseGenerated,
    )
    from querylog.logging.metrics import MetricsProjection
    from querylog.logging.telemetry import SinkTelemetry

    projection = MetricsProjection()
    telemetry = SinkTelemetry("loki")
    telemetry.dropped("too_old")
    telemetry.error("send")
    telemetry.fell_back("unknown_field")
    projection.add_sink(telemetry)
    # The log's series, as the API's /metrics serves them beside the fold's.
    home = tempfile.TemporaryDirectory()
    projection.add_collector(LogCollector(Settings(home=Path(home.name)), "querylog"))
    # One answered (priced and unpriced) and one failed query, so that every labelled family has its series; the
    # session asks q-1 again in other words (q-3), a reformulation.
    projection.apply(
        [
            QueryReceived(query_id="q-1", query_text="삼성전자 주가", session_id="s-1"),
            IntentClassified(query_id="q-1", intent="stock_price", confidence=0.9),
            ResponseGenerated(query_id="q-1", gen_ai_request_model="gpt-4o", cost_usd=0.01),
            ResponseGenerated(query_id="q-1", gen_ai_request_model="no-such-model"),
            QueryCompleted(query_id="q-1", intent="stock_price", latency_ms=120.0, release="r1"),
            QueryFailed(query_id="q-2", error_type="timeout", intent="news", latency_ms=30_000.0),
            QueryReceived(query_id="q-3", query_text="삼성전자 주가 전망은", session_id="s-1"),
        ]
    )
    with home:
        families = text_string_to_metric_families(projection.exposition().decode())
        names = {sample.name for family in families for sample in family.samples}
    recording = yaml.safe_load((REPO_ROOT / "compose" / "prometheus" / "recording.yml").read_text())
    return names | {rule["record"] for group in recording["groups"] for rule in group["rules"] if "record" in rule}


def test_every_series_a_prometheus_panel_reads_is_one_querylog_serves(prom_target: Any, checks: ModuleType) -> None:
    used = set(re.findall(r"\bquerylog[_:][a-z0-9_:]*", checks.mask_strings(prom_target.expr)))
    assert used - _series_querylog_serves() == set(), f"{prom_target.panel['title']}: no such series"


# --- the checks themselves catch what they must -------------------------------------------------------------------

GOOD_LOGQL = [
    'sum by (intent) (count_over_time({app="querylog", event="intent_classified"} | json intent [$__auto]))',
    'quantile_over_time(0.95, {app="querylog", event="query_completed"} | json | unwrap latency_ms'
    ' | __error__="" [$__auto]) by (intent)',
    '{app="querylog", event="query_received"} |= "네이버"',
    '{app="querylog"} | session_id="s-7"',
    '{app="querylog"} |= "{not a selector}" | line_format "{{.user_id}}"',
    'count(sum by (session_id) (count_over_time({app="querylog"} [$__auto])))',
]
BAD_LOGQL = [
    ('{app="querylog", session_id="s-7"}', "uses label 'session_id'"),
    ('{env="dev"} |= "x"', "no app matcher"),
    ('sum by (user_id) (count_over_time({app="querylog"} [$__auto]))', "user_id used outside"),
    ('sum(count_over_time({app="querylog"} | json | query_id != "" [$__auto]))', ""),
    ('count_over_time({app="querylog"} [$__auto])', "is not aggregated"),
    ('quantile_over_time(0.9, {app="querylog"} | unwrap latency_ms [$__auto])', "without by"),
    ('sum(count_over_time({app="querylog"} [5m]))', "range [5m]"),
    ('sum(count_over_time({app="querylog"} [$__auto])', "unclosed"),
    ('{app="querylog"} |= "unterminated', "unterminated"),
]


@pytest.mark.parametrize("expr", GOOD_LOGQL)
def test_logql_checks_accept_documented_queries(expr: str, checks: ModuleType) -> None:
    assert checks.logql_problems(expr, range_pattern=AUTO_RANGE) == []


@pytest.mark.parametrize(("expr", "message"), BAD_LOGQL)
def test_logql_checks_reject_bad_queries(expr: str, message: str, checks: ModuleType) -> None:
    problems = checks.logql_problems(expr, range_pattern=AUTO_RANGE)
    if message == "":
        # `query_id != ""` is a structured-metadata filter: allowed, so this one must pass.
        assert problems == []
    else:
        assert any(message in p for p in problems), problems


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("histogram_quantile(0.9, sum by (intent) (rate(querylog_query_duration_seconds_bucket[$__rate_interval])))",
         "sum by (le"),
        ("histogram_quantile(0.9, sum by (le) (rate(querylog_query_duration_seconds_bucket[$__rate_interval])))",
         "series dimension"),
        ("sum(rate(querylog_queries_total[5m]))", "$__rate_interval"),
        ("sum(rate(querylog_queries_total[$__interval]))", "$__rate_interval"),  # only a count per step takes it
        ('sum(rate(querylog_queries_total{session_id="x"}[$__rate_interval]))', "session_id"),
    ],
)  # fmt: skip
def test_promql_checks_reject_bad_queries(expr: str, message: str, checks: ModuleType) -> None:
    assert any(message in p for p in checks.promql_problems(expr))


# --- real parsers, where installed --------------------------------------------------------------------------------


def _substituted(target: Any, fallback: dict[str, str]) -> str:
    values = dict(fallback)
    for name, var in variables(target.dashboard).items():
        if name not in values:
            values[name] = str(var["allValue"] if var.get("includeAll") else var.get("current", {}).get("value"))
    return substitute(target.expr, values)


def test_promql_parses_with_promtool(tmp_path: Path, checks: ModuleType) -> None:
    """Every PromQL target, with variables filled in, parsed by Prometheus' own promtool (Debian's prometheus)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus): PromQL checked by the rules above only")
    exprs = [_substituted(t, {"__rate_interval": "5m", "__interval": "1m", "env": "dev"}) for t in checks.iter_targets()
             if t.datasource_uid == "prometheus"]  # fmt: skip
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "dashboard-promql.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_logql_parses_with_lokitool(tmp_path: Path, checks: ModuleType) -> None:
    """Every LogQL target, with variables filled in, parsed by Loki's own parser (lokitool, from Loki's release)."""
    lokitool = os.environ.get("LOKITOOL") or shutil.which("lokitool")
    if not lokitool:
        pytest.skip("lokitool not found (set LOKITOOL): LogQL checked by the rules above and the live tests only")
    exprs = [_substituted(t, {"__auto": "1m", "env": "dev", "search": "환불", "session": "s-1"})
             for t in checks.iter_targets() if t.datasource_uid == "loki"]  # fmt: skip
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "dashboard-logql.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    result = subprocess.run([lokitool, "rules", "lint", "--dry-run", str(path)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_count_per_step_adds_up_to_the_events_it_counts(checks: ModuleType) -> None:
    """ "Feedback by score (Prometheus)" and "Reformulated queries" summed to 3x the events (377 for 127 votes): an
    `increase` over `$__rate_interval` (60 s) per 20 s step counts each event in three bars."""
    counts = [
        t for t in checks.iter_targets()
        if t.datasource_uid == "prometheus" and "increase(" in t.expr and "/" not in t.expr
    ]  # fmt: skip
    assert len(counts) >= 2
    for t in counts:
        assert "[$__interval]" in t.expr and "$__rate_interval" not in t.expr, (t.panel["title"], t.expr)
        assert t.panel.get("interval") == "1m", t.panel["title"]  # windows of a few scrapes, never overlapping
