"""Grafana dashboards as code: writes grafana/dashboards/*.json from the definitions below.

Run ``python grafana/generate.py`` after editing and commit the JSON with it; tests/deploy/test_dashboards.py
regenerates into a temporary directory and fails when the committed files differ. Plain Python and the standard
library only: no dependency to install, and what Grafana loads is the reviewed JSON itself.

Output is deterministic: sorted keys, panel ids numbered in definition order, fixed dashboard uids, a trailing
newline. Datasources are referenced by the fixed uids ``loki`` and ``prometheus`` that
grafana/provisioning/datasources/*.yml create.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["DASHBOARDS", "LOKI", "PROMETHEUS", "build_all", "main", "render", "write_all"]

Json = dict[str, Any]

LOKI: Final[Json] = {"type": "loki", "uid": "loki"}
PROMETHEUS: Final[Json] = {"type": "prometheus", "uid": "prometheus"}

SCHEMA_VERSION: Final = 39  # Grafana 11
TAGS: Final = ["querylog"]
# And `unclassified`: the metrics' name for a query without an intent (a failure before classification).
INTENTS: Final = ["stock_analysis", "news_inquiry", "market_overview", "company_info", "unknown", "unclassified"]
# `.*`, not `.+`: a query that fails before classification has no intent field, and `intent=~".+"` would drop it
# from "All" (checked against Loki 3.4.5: a missing label matches `.*` and not `.+`).
INTENT_ALL_VALUE: Final = ".*"

DEFAULT_OUT: Final = Path(__file__).resolve().parent / "dashboards"


# --- LogQL / PromQL building blocks -------------------------------------------------------------------------------


def stream(event: str | None = None, *, events: list[str] | None = None) -> str:
    """A stream selector on the three querylog labels. Ids never go here: they are structured metadata."""
    matchers = ['app="querylog"', 'env="$env"']
    if event is not None:
        matchers.append(f'event="{event}"')
    elif events is not None:
        matchers.append('event=~"' + "|".join(events) + '"')
    return "{" + ", ".join(matchers) + "}"


#: After ``| json intent``: a query without an intent (it failed before classification) is ``unclassified``, as
#: the metrics and the lake name it, so that choosing it in $intent finds its lines and legends name it.
INTENT_FILTER: Final = (
    'label_format intent=`{{ if .intent }}{{ .intent }}{{ else }}unclassified{{ end }}` | intent=~"$intent"'
)
FINISHED: Final = ["query_completed", "query_failed"]
FUNNEL: Final = [
    ("received", "query_received"),
    ("classified", "intent_classified"),
    ("searched", "search_completed"),
    ("answered", "response_generated"),
    ("completed", "query_completed"),
]
STAGE_EVENTS: Final = ["intent_classified", "search_completed", "response_generated"]


def one_fold(expr: str) -> str:
    """`expr` over one target's copy of the metrics fold. Every API process reports the same fold (each folds the
    whole log, or mirrors the child's: docs/metrics.md), so a sum across worker targets counts it once per worker:
    `max without (instance)` first, as the recording rules do. The log's series (`querylog_log_*`) are read from
    the files, the same for every target too."""
    return f"max without (instance) ({expr})"


_OWN_SINK: Final = 'sink="log"'
_SHARED_SINKS: Final = 'sink!="log"'


def fold_rate(metric: str, matchers: str = "", fn: str = "rate", window: str = "$__rate_interval") -> str:
    """`fn` of `metric` counted once across worker targets. A sink's series are one process's (the elected one,
    mirrored by every API process; each process's whole-log metrics fold), so `max` across targets, except the
    log's own (`sink="log"`): each worker writes its own events, so those add up. A count per bar takes
    ``window="$__interval"`` (with a panel interval of a few scrapes): `$__rate_interval` windows overlap from one
    step to the next, and the bars then add up to several times the events."""

    def over(extra: str) -> str:
        both = ", ".join(m for m in (matchers, extra) if m)
        return f"{fn}({metric}{{{both}}}[{window}])" if both else f"{fn}({metric}[{window}])"

    if metric.startswith("querylog_sink_"):
        return f"({one_fold(over(_SHARED_SINKS))} or {over(_OWN_SINK)})"
    return one_fold(over(""))


#: A count per step: `increase` over the step itself, at least a minute (four scrapes at 15 s) so that each window
#: holds samples enough; the steps then add up to the events counted, as Loki's `count_over_time` beside them does.
PER_STEP: Final = {"fn": "increase", "window": "$__interval"}
PER_STEP_PANEL: Final[Json] = {"interval": "1m"}


def rate_prom(metric: str, by: str, matchers: str = "") -> str:
    return f"sum by ({by}) ({fold_rate(metric, matchers)})"


def sink_count(metric: str, by: str) -> str:
    """A sink counter's value, counted once across worker targets as `fold_rate` does: a first count shows, where
    the rate of a series that appears with it shows none (a drop reason, an error stage no one could list ahead)."""
    return f"sum by ({by}) ({one_fold(f'{metric}{{{_SHARED_SINKS}}}')} or {metric}{{{_OWN_SINK}}})"


def histogram_quantile(q: float, metric: str, by: str, matchers: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({fold_rate(f'{metric}_bucket', matchers)}))"


# --- panels -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel before layout. `kind` is the Grafana panel type; `extra` is merged into the panel JSON."""

    title: str
    kind: str
    datasource: Json
    targets: tuple[Target, ...]
    width: int = 12
    description: str = ""
    unit: str = "short"
    bars: bool = False  # stacked bars instead of lines (counts per interval)
    extra: Json = field(default_factory=dict)


def loki(title: str, kind: str, *targets: Target, **kw: Any) -> Panel:
    return Panel(title, kind, LOKI, targets, **kw)


def prom(title: str, kind: str, *targets: Target, **kw: Any) -> Panel:
    return Panel(title, kind, PROMETHEUS, targets, **kw)


def _target_json(panel: Panel, target: Target, ref_id: str) -> Json:
    out: Json = {"datasource": panel.datasource, "editorMode": "code", "expr": target.expr, "refId": ref_id}
    if target.legend:
        out["legendFormat"] = target.legend
    if panel.datasource["uid"] == LOKI["uid"]:
        out["queryType"] = "instant" if target.instant else "range"
        if panel.kind == "logs":
            out["maxLines"] = 200
    else:
        out["instant"] = target.instant
        out["range"] = not target.instant
    return out


_OPTIONS: Final[dict[str, Json]] = {
    "timeseries": {
        "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "stat": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    },
    "bargauge": {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
    },
    "logs": {
        "dedupStrategy": "none",
        "enableLogDetails": True,
        "prettifyLogMessage": False,
        "showTime": True,
        "sortOrder": "Descending",
        "wrapLogMessage": True,
    },
    "table": {"cellHeight": "sm", "showHeader": True},
}


def _panel_json(panel: Panel, panel_id: int, grid: Json) -> Json:
    defaults: Json = {"unit": panel.unit}
    if panel.kind == "timeseries" and panel.bars:
        defaults["custom"] = {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"group": "A", "mode": "normal"}}
    elif panel.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 10, "lineWidth": 1, "showPoints": "never", "spanNulls": False}
    out: Json = {
        "datasource": panel.datasource,
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid,
        "id": panel_id,
        "options": _OPTIONS[panel.kind],
        "targets": [_target_json(panel, t, chr(ord("A") + i)) for i, t in enumerate(panel.targets)],
        "title": panel.title,
        "type": panel.kind,
    }
    out.update(panel.extra)
    return out


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    height: int
    panels: list[Panel]


# --- template variables -------------------------------------------------------------------------------------------


def var_env() -> Json:
    """env: the values of the `env` stream label that Loki has seen for app="querylog"."""
    return {
        "datasource": LOKI,
        "definition": 'label_values({app="querylog"}, env)',
        "includeAll": False,
        "label": "env",
        "multi": False,
        "name": "env",
        "query": {"label": "env", "refId": "LokiVariableQuery", "stream": '{app="querylog"}', "type": 1},
        "refresh": 2,
        "sort": 1,
        "type": "query",
    }


def var_intent() -> Json:
    """intent: a fixed list (the classifier's closed set), so it works before Prometheus has scraped anything."""
    return {
        "allValue": INTENT_ALL_VALUE,
        "current": {"text": ["All"], "value": ["$__all"]},
        "includeAll": True,
        "label": "intent",
        "multi": True,
        "name": "intent",
        "options": [],
        "query": ",".join(INTENTS),
        "type": "custom",
    }


def var_textbox(name: str, description: str) -> Json:
    return {
        "current": {"text": "", "value": ""},
        "description": description,
        "label": name,
        "name": name,
        "query": "",
        "type": "textbox",
    }


def var_custom(name: str, label: str, values: list[str], default: str) -> Json:
    return {
        "current": {"text": default, "value": default},
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [],
        "query": ",".join(values),
        "type": "custom",
    }


# --- dashboards ---------------------------------------------------------------------------------------------------
# One function a dashboard: expressions first, then rows of panels laid out as they appear on screen. The panel
# lists are formatted by hand, one panel a line or two, which reads better than a formatter's expansion.
# fmt: off


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[Json]
    rows: list[Row]
    time_from: str = "now-6h"


#: Said by the panels of the Query overview whose series carry no intent (Prometheus's cost, quality and activity;
#: Loki's cache and session lines): they show every intent whatever the filter.
ALL_INTENTS: Final = " Every intent: the intent filter does not apply."


def query_overview() -> Dashboard:
    finished = f"{stream(events=FINISHED)} | json intent | {INTENT_FILTER} [$__auto]"
    failed = f"{stream('query_failed')} | json intent | {INTENT_FILTER} [$__auto]"
    # `or 0 * finished`: with no failure the ratio is 0, not "No data" (count_over_time has no zero series).
    error_ratio = (
        f"(sum(count_over_time({failed})) or 0 * sum(count_over_time({finished})))"
        f" / sum(count_over_time({finished}))"
    )
    error_ratio_by_intent = (
        f"(sum by (intent) (count_over_time({failed})) or 0 * sum by (intent) (count_over_time({finished})))"
        f" / sum by (intent) (count_over_time({finished}))"
    )
    latency = (  # every finished query, failed ones too, as the histogram beside it counts them
        f"{stream(events=FINISHED)} | json intent, latency_ms | {INTENT_FILTER}"
        ' | unwrap latency_ms | __error__="" [$__auto]'
    )
    quality = (
        f"{stream('query_completed')} | json intent, quality_score | {INTENT_FILTER}"
        ' | unwrap quality_score | __error__="" [$__auto]'
    )
    scored = (
        f'{stream("query_completed")} | json intent, quality_score | {INTENT_FILTER} | quality_score != "" [$__auto]'
    )
    # Over every scored query: a mean of per-intent means would weigh a rare intent like a common one.
    quality_mean = f"sum(sum_over_time({quality})) / sum(count_over_time({scored}))"
    searches = f"{stream('search_completed')} [$__auto]"
    hits = f'{stream("search_completed")} | json cache_hit | cache_hit="true" [$__auto]'
    hit_ratio = (  # `or 0 * searches`: with no hit the ratio is 0, as the error ratio's above
        f"(sum(count_over_time({hits})) or 0 * sum(count_over_time({searches}))) / sum(count_over_time({searches}))"
    )
    active = f"sum({one_fold('querylog_active_queries')})"
    cache_hits = fold_rate("querylog_cache_requests_total", 'result="hit"')
    rate_by_intent = (
        f"sum by (intent) (rate({stream(events=FINISHED)} | json intent | {INTENT_FILTER} [$__auto]))"
    )
    sessions = f"count(sum by (session_id) (count_over_time({stream('query_received')} [$__auto])))"
    by_intent = 'intent=~"$intent"'
    quantiles = (0.5, 0.95, 0.99)
    return Dashboard(
        uid="querylog-overview",
        title="querylog / Query overview",
        description="Traffic, errors, latency, cache and answer quality of the chat API: Loki events and "
        "Prometheus metrics side by side.",
        variables=[var_env(), var_intent()],
        rows=[
            Row("Now", 5, [
                loki("Queries / s", "stat", Target(f"sum(rate({stream('query_received')} [$__auto]))", instant=True),
                     width=5, unit="reqps", description="query_received events per second over the dashboard range "
                     "(Loki; every intent: the intent filter does not apply)."),
                loki("Error ratio", "stat", Target(error_ratio, instant=True), width=5, unit="percentunit",
                     description="query_failed / (query_completed + query_failed) over the dashboard range (Loki)."),
                prom("Active queries", "stat", Target(active), width=4,
                     description="Queries in flight now (querylog_active_queries)." + ALL_INTENTS),
                loki("Cache hit ratio", "stat", Target(hit_ratio, instant=True), width=5, unit="percentunit",
                     description='search_completed with cache_hit = true (`| json` gives the string "true").'
                     + ALL_INTENTS),
                loki("Quality score", "stat", Target(quality_mean, instant=True),
                     width=5, unit="percentunit",
                     description="Mean quality_score of completed queries, as their query_completed line carries it "
                     "(Loki reads one line at a time). The Prometheus panel and the lake take the answer's score "
                     "(response_generated) first and the completion's only without it: a producer that scores only "
                     "the answer, or both differently, shows another mean there."),
            ]),
            Row("Traffic", 8, [
                loki("Query rate by intent", "timeseries", Target(rate_by_intent, "{{intent}}"), unit="reqps",
                     description="Finished queries (completed or failed) per second, by intent; one that failed before "
                     "its intent is unclassified (Loki; querylog_queries_total counts the same)."),
                prom("Query rate by status", "timeseries",
                     Target(rate_prom("querylog_queries_total", "status", by_intent), "{{status}}"), unit="reqps",
                     description="querylog_queries_total by status (Prometheus)."),
                loki("Distinct sessions", "timeseries", Target(sessions, "sessions"),
                     description="Sessions with at least one query in each interval. session_id is structured "
                     "metadata; count() folds the per-session series into one. Exact up to Loki's max_query_series, "
                     "for lines Loki has flushed: see docs/dashboards.md for the last minutes." + ALL_INTENTS),
                loki("Error ratio by intent", "timeseries", Target(error_ratio_by_intent, "{{intent}}"),
                     unit="percentunit", description="Share of finished queries that failed (Loki)."),
            ]),
            Row("Latency", 9, [
                loki("Latency p50 / p95 / p99 by intent (LogQL)", "timeseries",
                     *(Target(f"quantile_over_time({q}, {latency}) by (intent)", f"p{q * 100:g} {{{{intent}}}}")
                       for q in quantiles),
                     unit="ms",
                     description="quantile_over_time over latency_ms of finished queries, completed or failed "
                     "(exact, from logs)"),
                prom("Latency p50 / p95 / p99 by intent (PromQL)", "timeseries",
                     *(Target(histogram_quantile(q, "querylog_query_duration_seconds", "intent", by_intent),
                              f"p{q * 100:g} {{{{intent}}}}") for q in quantiles),
                     unit="s", description="histogram_quantile over querylog_query_duration_seconds (bucketed)."),
            ]),
            Row("Cache and quality", 8, [
                loki("Cache hit ratio over time", "timeseries", Target(hit_ratio, "hit ratio"), width=8,
                     unit="percentunit", description=ALL_INTENTS.strip()),
                prom("Cache hit ratio (Prometheus)", "timeseries",
                     Target(f"sum({cache_hits}) / sum({fold_rate('querylog_cache_requests_total')})", "hit ratio"),
                     width=8, unit="percentunit", description=ALL_INTENTS.strip()),
                loki("Quality score by intent", "timeseries", Target(f"avg_over_time({quality}) by (intent)",
                                                                     "{{intent}}"),
                     width=8, unit="percentunit",
                     description="query_completed lines without a quality_score are skipped (a producer that scores "
                     "only response_generated: see the Prometheus panel)."),
            ]),
            Row("Active queries and quality (Prometheus)", 7, [
                prom("Active queries", "timeseries", Target(active, "active"), description=ALL_INTENTS.strip()),
                prom("Quality score (Prometheus)", "timeseries",
                     Target(f"sum({fold_rate('querylog_quality_score_sum')})"
                            f" / sum({fold_rate('querylog_quality_score_count')})", "mean quality"),
                     unit="percentunit", description=ALL_INTENTS.strip()),
            ]),
            Row("Cost and releases (Prometheus)", 8, [
                prom("LLM cost / hour by model", "timeseries",
                     Target(f"3600 * {rate_prom('querylog_llm_cost_usd_total', 'model')}",
                            "{{model}}"), width=8, unit="currencyUSD",
                     description="The recorded cost_usd of each response, else its tokens priced from the price "
                     "table (logging/data/prices.json or QUERYLOG_PRICES), by requested model." + ALL_INTENTS),
                prom("Unpriced responses / s", "timeseries",
                     Target(rate_prom("querylog_llm_unpriced_responses_total", "model"), "{{model}}"), width=8,
                     unit="ops", description="Responses with no recorded cost and no price for their model (or "
                     "no token counts): add the model to QUERYLOG_PRICES to count their cost." + ALL_INTENTS),
                prom("Queries / s by release", "timeseries",
                     Target(rate_prom("querylog_release_queries_total", "release, status"), "{{release}} {{status}}"),
                     width=8, unit="reqps", description="Finished queries by release (QUERYLOG_RELEASE) and status: "
                     "compare a canary with the release before it." + ALL_INTENTS),
            ]),
        ],
    )


def pipeline_stages() -> Dashboard:
    failed = stream("query_failed")
    stage_p95 = (
        f"quantile_over_time(0.95, {stream(events=STAGE_EVENTS)} | json duration_ms"
        ' | unwrap duration_ms | __error__="" [$__auto]) by (event)'
    )
    # Named by stage, as the PromQL panel beside it names them, not by event type.
    for event, stage in zip(STAGE_EVENTS, ("classify", "search", "generate"), strict=True):
        stage_p95 = f'label_replace({stage_p95}, "stage", "{stage}", "event", "{event}")'
    by_error_type = (
        f"sum by (error_type) (count_over_time({failed} | json error_type, intent | {INTENT_FILTER} [$__auto]))"
    )
    by_stage = f"sum by (stage) (count_over_time({failed} | json stage, intent | {INTENT_FILTER} [$__auto]))"
    slow = f"{stream(events=FINISHED)} | json latency_ms, intent | {INTENT_FILTER} | latency_ms > $slow_ms"
    failed_prom = rate_prom("querylog_queries_total", "intent", 'status="failed", intent=~"$intent"')
    return Dashboard(
        uid="querylog-pipeline",
        title="querylog / Pipeline stages",
        description="Where the time goes and where queries drop out: classify → search → generate.",
        variables=[
            var_env(),
            var_intent(),
            var_custom("slow_ms", "slow above (ms)", ["500", "1000", "2000", "5000", "10000"], "2000"),
        ],
        rows=[
            Row("Stage durations", 9, [
                loki("Stage duration p95 (LogQL)", "timeseries", Target(stage_p95, "p95 {{stage}}"), unit="ms",
                     description="duration_ms of intent_classified (classify), search_completed (search) and "
                     "response_generated (generate)."),
                prom("Stage duration p50 / p95 (PromQL)", "timeseries",
                     *(Target(histogram_quantile(q, "querylog_stage_duration_seconds", "stage"),
                              f"p{q * 100:g} {{{{stage}}}}") for q in (0.5, 0.95)),
                     unit="s"),
            ]),
            Row("Funnel", 9, [
                loki("Funnel: received → classified → searched → answered → completed", "bargauge",
                     *(Target(f"sum(count_over_time({stream(event)} [$__auto]))", step, instant=True)
                       for step, event in FUNNEL),
                     description="Events of each stage over the dashboard range. A drop between two bars is "
                     "queries that stopped there (see the failures next to it)."),
                loki("Failures by error type", "timeseries", Target(by_error_type, "{{error_type}}"), bars=True),
            ]),
            Row("Failures", 8, [
                loki("Failures by stage", "timeseries", Target(by_stage, "{{stage}}"), bars=True),
                prom("Failed queries / s by intent (Prometheus)", "timeseries", Target(failed_prom, "{{intent}}"),
                     unit="reqps"),
            ]),
            Row("Slowest queries", 10, [
                loki("Slowest queries (latency_ms above $slow_ms)", "logs", Target(slow),
                     description="Finished queries, completed or failed, slower than the threshold chosen above. "
                     "Open a line and follow its query_id to see all its events."),
                loki("Recent failures", "logs", Target(f"{failed} | json intent | {INTENT_FILTER}")),
            ]),
        ],
    )


def query_search() -> Dashboard:
    received = stream("query_received")
    # `!= ""` first: a null count (unknown) is an empty label, which a numeric filter fails the whole query on.
    no_results = f'{stream("search_completed")} | json result_count | result_count != "" | result_count == 0'
    feedback = stream("feedback_received")
    top = (
        f'sort_desc(topk(20, sum by (query_text) (count_over_time({received} |= `$search`'
        " | json query_text [$__auto]))))"
    )
    top_table = {
        "transformations": [
            {"id": "reduce", "options": {"mode": "seriesToRows", "reducers": ["lastNotNull"]}},
            {"id": "sortBy", "options": {"sort": [{"desc": True, "field": "Last *"}]}},
            {"id": "organize", "options": {"renameByName": {"Field": "query", "Last *": "count"}}},
        ]
    }
    return Dashboard(
        uid="querylog-search",
        title="querylog / Query search",
        description="What users asked: full-text search over query text, top queries, no-result queries, feedback.",
        variables=[
            var_env(),
            var_textbox("search", "Text the query must contain, as typed (e.g. 네이버 or 환불). Empty: all."),
            var_textbox("session", "A session_id: the last panel shows every event of that session."),
        ],
        time_from="now-24h",
        rows=[
            Row("Search", 11, [
                loki('Queries containing "$search"', "logs", Target(f"{received} |= `$search`"), width=16,
                     description="Line filter on the raw UTF-8 line: Korean matches as typed (text is NFC)."),
                loki('Top queries containing "$search"', "table", Target(top, "{{query_text}}", instant=True),
                     width=8, description="The 20 most frequent query texts in the dashboard range.",
                     extra=top_table),
            ]),
            Row("No results", 9, [
                loki("Searches with no result", "timeseries",
                     Target(f"sum(count_over_time({no_results} [$__auto]))", "no result"),
                     Target(f"sum(count_over_time({stream('search_completed')} [$__auto]))", "all searches"),
                     width=8,
                     description="All searches, those whose result count is unknown (an OTLP retrieval that did not "
                     "list its documents) included; QuerylogEmptySearchesHigh divides by the searches whose count "
                     "is known."),
                loki("No-result searches (result_count = 0)", "logs", Target(no_results), width=16,
                     description="search_completed events that found nothing. Their query_id (in the line and as "
                     "structured metadata) leads to the query text."),
            ]),
            Row("Feedback", 9, [
                loki("Feedback by score", "timeseries",
                     Target(f"sum by (score) (count_over_time({feedback} | json score [$__auto]))", "score {{score}}"),
                     width=8, extra=PER_STEP_PANEL),  # the steps of its Prometheus twin: the same counts per bar
                prom("Feedback by score (Prometheus)", "timeseries",
                     Target(f"sum by (score) ({fold_rate('querylog_feedback_total', **PER_STEP)})",
                            "score {{score}}"),
                     width=8, extra=PER_STEP_PANEL),
                loki("Negative feedback", "logs", Target(f"{feedback} | json score | score < 0"), width=8,
                     description="feedback_received with score -1, with the user's comment."),
            ]),
            Row("Reformulations", 9, [
                prom("Reformulation rate by intent", "timeseries",
                     Target(f"sum by (intent) ({fold_rate('querylog_reformulated_queries_total', fn='increase')})"
                            f" / sum by (intent) ({fold_rate('querylog_queries_total', fn='increase')})", "{{intent}}"),
                     width=12, unit="percentunit",
                     description="Share of the queries that ended, by intent, that the user asked again in other "
                     "words: the next query of the session came within 5 minutes with a similar text "
                     "(logging/reformulation.py). A rising line is the classic sign of unsatisfying answers."),
                prom("Reformulated queries", "timeseries",
                     Target(f"sum by (intent) ({fold_rate('querylog_reformulated_queries_total', **PER_STEP)})",
                            "{{intent}}"),
                     width=12, bars=True, extra=PER_STEP_PANEL,
                     description="The questions behind these: `querylog report` (most reformulated) and the explorer's "
                     "Sessions tab."),
            ]),
            Row("Session", 10, [
                loki("Session $session: every event", "logs",
                     Target('{app="querylog", env="$env"} | session_id="$session"'), width=24,
                     description="A structured-metadata filter (no parser, no label): set the session variable."),
            ]),
        ],
    )


def querylog_health() -> Dashboard:
    batch_mean = (
        "sum by (sink) (rate(querylog_sink_batch_events_total[$__rate_interval]))"
        " / sum by (sink) (rate(querylog_sink_batches_total[$__rate_interval]))"
    )
    return Dashboard(
        uid="querylog-health",
        title="querylog / querylog health",
        description="The event log and its projections: events emitted, sink lag, drops, retries, batch sizes.",
        variables=[var_env()],
        time_from="now-3h",
        rows=[
            Row("Events", 8, [
                prom("Events emitted / s by type", "timeseries",
                     Target(rate_prom("querylog_events_total", "event_type"), "{{event_type}}"), unit="ops"),
                loki("Events arriving in Loki / s by type", "timeseries",
                     Target(f"sum by (event) (rate({stream()} [$__auto]))", "{{event}}"), unit="ops",
                     description="Compare with the panel on the left: a gap that does not close is events the "
                     "Loki projection has not delivered (yet)."),
            ]),
            Row("Sinks", 8, [
                prom("Events sent / s by sink", "timeseries",
                     Target(rate_prom("querylog_sink_events_sent_total", "sink"), "{{sink}}"), width=8, unit="ops"),
                prom("Sink lag (events)", "timeseries", Target("max by (sink) (querylog_sink_lag_events)", "{{sink}}"),
                     width=8, description="Events written to the log and not yet delivered by each projection."),
                prom("Sink lag (seconds)", "timeseries",
                     Target("max by (sink) (querylog_sink_lag_seconds)", "{{sink}}"), width=8, unit="s"),
            ]),
            Row("Trouble", 8, [
                prom("Dropped events by reason", "timeseries",
                     Target(sink_count("querylog_sink_events_dropped_total", "sink, reason"), "{{sink}} {{reason}}"),
                     width=8, description="Events each projection dropped, counted since the process running it "
                     "started: a step is new drops (QuerylogSinkDroppingEvents pages on it). Counts, not a rate: the "
                     "series of a reason appears with its first drop, which a rate does not show."),
                prom("Retries / s", "timeseries",
                     Target(rate_prom("querylog_sink_retries_total", "sink"), "{{sink}}"), width=8, unit="ops"),
                prom("Sink errors by stage", "timeseries",
                     Target(sink_count("querylog_sink_errors_total", "sink, stage"), "{{sink}} {{stage}}"),
                     width=8, description="Failed deliveries (retried) and other errors of each projection, counted "
                     "since the process running it started: a step is new errors. Counts, not a rate: the series of a "
                     "stage appears with its first error, which a rate does not show."),
            ]),
            Row("Event log", 8, [
                prom("Log size", "timeseries", Target("max(querylog_log_bytes)", "bytes"), width=8, unit="bytes",
                     description="Bytes in the event log's segments. Housekeeping trims what every durable "
                     "projection has, once older than QUERYLOG_LOG_RETENTION."),
                prom("What holds the log back", "timeseries",
                     Target("max by (projection) (querylog_log_behind_seconds)", "{{projection}}"), width=8,
                     unit="s", description="Age of the oldest finished segment each durable projection has not "
                     "committed (alert QuerylogLogHeldBack past a day)."),
                prom("Log trimmed / hour", "timeseries",
                     Target("3600 * max(rate(querylog_log_trimmed_bytes_total[$__rate_interval]))", "bytes"),
                     width=8, unit="bytes"),
            ]),
            Row("Batches", 8, [
                prom("Mean batch size (events)", "timeseries", Target(batch_mean, "{{sink}}"), width=8,
                     description="Events per delivered batch: a Loki push, a Parquet commit."),
                prom("Batches / s", "timeseries",
                     Target(rate_prom("querylog_sink_batches_total", "sink"), "{{sink}}"), width=8, unit="ops"),
                prom("Fallbacks by reason", "timeseries",
                     Target(sink_count("querylog_sink_fallbacks_total", "sink, reason"), "{{sink}} {{reason}}"),
                     width=8, description="Batches a projection took down its slower path for (the Parquet fast "
                     "path declined them), counted since the process running it started: the same rows, more CPU. "
                     "Logged once per reason. Counts, not a rate: the series of a reason appears with its first "
                     "fallback, which a rate does not show."),
                prom("Since each projection last reported", "timeseries",
                     Target("max by (sink) (querylog_sink_report_age_seconds)", "{{sink}}"), width=8, unit="s",
                     description="0 for projections in the API's own process. With QUERYLOG_PROJECTIONS=process "
                     "or none, how long ago querylog project last published the counters; while it grows, the "
                     "other sink panels stand still (alert: QuerylogProjectionSilent)."),
            ]),
        ],
    )


# fmt: on


DASHBOARDS: Final = {
    "query-overview": query_overview,
    "pipeline-stages": pipeline_stages,
    "query-search": query_search,
    "querylog-health": querylog_health,
}


# --- rendering ----------------------------------------------------------------------------------------------------


def _layout(rows: list[Row]) -> list[Json]:
    """Rows become collapsible-row headers; panels fill 24 columns left to right. Ids follow definition order."""
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        next_id += 1
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += row.height
            panels.append(_panel_json(panel, next_id, {"h": row.height, "w": panel.width, "x": x, "y": y}))
            next_id += 1
            x += panel.width
        y += row.height
    return panels


def render(dashboard: Dashboard) -> Json:
    return {
        "annotations": {"list": []},
        "description": dashboard.description,
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "tags": TAGS,
                "title": "querylog",
                "type": "dashboards",
            }
        ],
        "panels": _layout(dashboard.rows),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": dashboard.variables},
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
    }


def to_json(obj: Json) -> str:
    """The one serialisation the committed files use: sorted keys, UTF-8 (not \\u escapes), trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


#: The Loki `app` label the dashboards select: QUERYLOG_SERVICE's default. `--app` writes them for another.
DEFAULT_APP: Final = "querylog"
_APP_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # a Loki label value querylog accepts


def build_all(app: str = DEFAULT_APP) -> dict[str, str]:
    """File name → JSON text, for every dashboard, selecting the streams of Loki's `app` label `app`."""
    if not _APP_RE.match(app):
        raise ValueError(f"--app {app!r}: 1-63 letters, digits, '_', '.' or '-', as QUERYLOG_SERVICE takes")
    selector = f'app=\\"{DEFAULT_APP}\\"'  # as it reads inside a JSON string
    return {
        f"{name}.json": to_json(render(make())).replace(selector, f'app=\\"{app}\\"')
        for name, make in DASHBOARDS.items()
    }


def write_all(out_dir: Path, app: str = DEFAULT_APP) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_all(app).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory to write into (default: %(default)s)")
    parser.add_argument(
        "--app",
        default=DEFAULT_APP,
        help="the Loki app label to select: your QUERYLOG_SERVICE, when it is not querylog (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        paths = write_all(args.out, args.app)
    except ValueError as exc:
        parser.error(str(exc))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
