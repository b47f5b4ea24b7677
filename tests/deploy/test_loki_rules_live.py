"""Every Loki ruler rule and every dashboard LogQL target, run against a real Loki (set LOKI_URL).

Fixture events are pushed under unique env labels, shaped like the Loki projection writes them (UTF-8 JSON lines
without the label fields, ids as structured metadata):
- `<run>`: a troubled env, built so that every rule has data and every alert's condition holds now;
- `<run>-healthy`: normal traffic, for which no alert's condition may hold;
- `<run>-quiet`: traffic an hour ago and none since, for QuerylogNoTrafficInLoki;
- `<run>-sparse`: a few very slow queries, too few for a p95 to mean something (QuerylogLatencyP95High holds still).
Lines are queryable as soon as the push answers 204 (LOKI.md), so nothing waits. Start a Loki with
loki/run-local.sh or the dev compose stack, then: LOKI_URL=http://127.0.0.1:3100 pytest tests/deploy.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest

LOKI_URL = os.environ.get("LOKI_URL", "").rstrip("/")

pytestmark = [
    pytest.mark.loki,
    pytest.mark.skipif(not LOKI_URL, reason="LOKI_URL is not set: these tests need a live Loki (loki/run-local.sh)"),
]

NS = 1_000_000_000
SPAN_S = 480  # every fixture line of the current traffic falls within the last 8 minutes
INTENTS = ("stock_analysis", "news_inquiry")
QUERIES = 80  # 40 per intent in 8 minutes: above the latency alert's floor of 30 in 10 minutes


@dataclass(frozen=True, slots=True)
class Fixture:
    env: str
    healthy: str
    quiet: str
    sparse: str
    session: str
    now_ns: int


def _line(fields: dict[str, Any]) -> str:
    # As the Loki projection writes it: UTF-8, not \u-escaped, so that line filters match Korean.
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


class Batch:
    """Streams keyed by (env, event), each a list of [ns, line, structured metadata]."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, str], list[list[Any]]] = {}

    def add(self, env: str, event: str, ts_ns: int, query: int, fields: dict[str, Any]) -> None:
        ids = {
            "query_id": f"q-{env}-{query}",
            "session_id": f"s-{env}-{query % 6}",
            "user_id": f"u-{query % 4}",
            "trace_id": uuid.uuid4().hex,
        }
        line = {"event_id": uuid.uuid4().hex, "schema_version": 1, "ts": _rfc3339(ts_ns), **ids, **fields}
        self.streams.setdefault((env, event), []).append([str(ts_ns), _line(line), ids])

    def body(self) -> bytes:
        streams = [
            {"stream": {"app": "querylog", "env": env, "event": event}, "values": sorted(values)}
            for (env, event), values in sorted(self.streams.items())
        ]
        return json.dumps({"streams": streams}, ensure_ascii=False).encode("utf-8")


def _rfc3339(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ns // NS)) + f".{ts_ns % NS // 1000:06d}Z"


def add_query(batch: Batch, env: str, i: int, start_ns: int, *, troubled: bool) -> None:
    """One query's events. In the troubled env: 1 in 5 fails, latencies climb past 10 s, every 4th query mentions
    오류 and the next one 환불, 1 in 3 searches finds nothing."""
    t = start_ns + i * (SPAN_S * NS // QUERIES)
    intent = INTENTS[i % 2]
    if troubled:
        text = ["주문 오류가 났어요 왜죠", "환불 받을 수 있나요", "네이버 주가 전망은?", "삼성전자 실적 요약"][i % 4]
        fails, latency, results = i % 5 == 0, 1_000 + 150 * i, 0 if i % 3 == 0 else 4
    else:
        text = ["네이버 주가 전망은?", "삼성전자 실적 요약", "market overview please"][i % 3]
        fails, latency, results = False, 150 + i, 5
    batch.add(env, "query_received", t, i, {"query_text": text, "language": "ko"})
    if troubled and i == QUERIES - 3:
        # Failed before classification: no intent field at all ("All" must still count it). Late in the span, so
        # that the 5-minute rules see it too.
        batch.add(env, "query_failed", t + 1_000_000, i, {"error_type": "ClassifierError", "error_message":
                  "model unavailable", "stage": "classify", "latency_ms": 40})  # fmt: skip
        return
    batch.add(env, "intent_classified", t + 1_000_000, i, {"intent": intent, "confidence": 0.9, "duration_ms": 12.5})
    # A producer that cannot tell how many it found sends null (an OpenTelemetry retrieval span): a numeric filter
    # on that empty label failed the whole no-result query ("pipeline error: LabelFilterErr").
    unknown = i % 7 == 4
    search: dict[str, Any] = {"result_count": None if unknown else results, "duration_ms": 35.0, "top_score": 0.7}
    if i % 3 == 1:
        search["cache_hit"] = True  # cache_hit=false is a default, which the projection leaves out
    batch.add(env, "search_completed", t + 2_000_000, i, search)
    if fails:
        batch.add(env, "query_failed", t + 3_000_000, i, {"error_type": ["LLMTimeout", "SearchUnavailable"][i % 2],
                  "error_message": "timed out", "stage": "generate", "latency_ms": latency, "intent": intent})  # fmt: skip
        return
    batch.add(env, "response_generated", t + 3_000_000, i, {
        "gen_ai_system": "openai", "gen_ai_request_model": "gpt-4o-mini", "gen_ai_usage_input_tokens": 320,
        "gen_ai_usage_output_tokens": 180, "duration_ms": latency * 0.8, "quality_score": 0.8, "answer_chars": 420})  # fmt: skip
    batch.add(env, "query_completed", t + 4_000_000, i, {"latency_ms": latency, "intent": intent, "result_count":
              results, "quality_score": 0.8, **({"cache_hit": True} if i % 3 == 1 else {})})  # fmt: skip
    if i % 4 == 2:
        score = -1 if troubled else 1
        batch.add(
            env,
            "feedback_received",
            t + 5_000_000,
            i,
            {"score": score, "comment": "별로예요" if score < 0 else "좋아요"},
        )


def push(client: httpx.Client, batch: Batch) -> None:
    response = client.post("/loki/api/v1/push", content=batch.body(), headers={"Content-Type": "application/json"})
    assert response.status_code == 204, f"push answered {response.status_code}: {response.text}"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=LOKI_URL, timeout=30.0) as c:
        ready = c.get("/ready")
        assert ready.status_code == 200, f"Loki at {LOKI_URL} is not ready: {ready.status_code} {ready.text.strip()}"
        yield c


@pytest.fixture(scope="module")
def fixture(client: httpx.Client) -> Fixture:
    run = f"deploytest-{uuid.uuid4().hex[:10]}"
    now = time.time_ns()
    start = now - SPAN_S * NS
    old = Batch()  # pushed first: a stream takes lines up to ~1 h older than its newest, never older
    for i in range(6):
        old.add(f"{run}-quiet", "query_received", now - 65 * 60 * NS + i * NS, i, {"query_text": "예전 질문"})
    push(client, old)
    batch = Batch()
    for i in range(QUERIES):
        add_query(batch, run, i, start, troubled=True)
        add_query(batch, f"{run}-healthy", i, start, troubled=False)
    for i in range(6):
        add_query(batch, f"{run}-sparse", QUERIES - 1 - i, start, troubled=True)  # the slowest of the troubled
    push(client, batch)
    return Fixture(
        env=run,
        healthy=f"{run}-healthy",
        quiet=f"{run}-quiet",
        sparse=f"{run}-sparse",
        session=f"s-{run}-2",
        now_ns=now,
    )


def query(client: httpx.Client, expr: str, **params: str) -> dict[str, Any]:
    path = "/loki/api/v1/query_range" if "start" in params else "/loki/api/v1/query"
    response = client.get(path, params={"query": expr, **params})
    assert response.status_code == 200, f"{response.status_code} {response.text.strip()}\n{expr}"
    body = response.json()
    assert body["status"] == "success", body
    data: dict[str, Any] = body["data"]
    return data


def envs_in(result: list[dict[str, Any]]) -> set[str]:
    return {series.get("metric", series.get("stream", {})).get("env", "") for series in result}


# --- rules --------------------------------------------------------------------------------------------------------

# Where each rule must have data. Rules not named here: the troubled env.
RULE_ENV = {"QuerylogNoTrafficInLoki": "quiet"}


def test_every_rule_has_data_for_its_fixture_env(client: httpx.Client, fixture: Fixture, loki_rule: Any) -> None:
    expected = getattr(fixture, RULE_ENV.get(loki_rule.name, "env"))
    data = query(client, loki_rule.body["expr"], time=str(time.time_ns()))
    assert data["resultType"] == "vector"
    assert expected in envs_in(data["result"]), f"{loki_rule.id}: no series for env {expected}: {data['result']}"


def test_no_alert_fires_for_healthy_traffic(client: httpx.Client, fixture: Fixture, loki_alert: Any) -> None:
    data = query(client, loki_alert.body["expr"], time=str(time.time_ns()))
    assert fixture.healthy not in envs_in(data["result"]), f"{loki_alert.name} fires for normal traffic"


def test_the_latency_alert_waits_for_enough_traffic(client: httpx.Client, fixture: Fixture, checks: ModuleType) -> None:
    """Six queries of 11-13 s in ten minutes: the p95 of three per intent says little. The Prometheus rule asks for
    0.05 queries/s of the intent; the Loki rule fired on any p95 above its threshold."""
    (rule,) = [
        r for g in checks.load_rules_file()["groups"] for r in g["rules"] if r.get("alert") == "QuerylogLatencyP95High"
    ]
    data = query(client, rule["expr"], time=str(time.time_ns()))
    assert fixture.env in envs_in(data["result"])
    assert fixture.sparse not in envs_in(data["result"])


def test_an_error_ratio_without_failures_is_zero_not_missing(
    client: httpx.Client, fixture: Fixture, checks: ModuleType
) -> None:
    """count_over_time has no zero series: with no failure, the ratio panels said "No data" and the recording rule
    recorded nothing for the intent, where the Prometheus twin records 0."""
    (rule,) = [r.body["expr"] for r in checks.iter_rules() if r.name == "querylog:loki_query_errors:ratio5m"]
    healthy = [
        s for s in query(client, rule, time=str(time.time_ns()))["result"] if s["metric"]["env"] == fixture.healthy
    ]
    assert {s["metric"]["intent"] for s in healthy} == set(INTENTS)
    assert all(float(s["value"][1]) == 0 for s in healthy), healthy
    panels = [
        t for t in checks.iter_targets() if t.datasource_uid == "loki" and t.panel["title"].startswith("Error ratio")
    ]
    assert len(panels) >= 2
    for target in panels:
        expr = substituted(target.expr, dashboard_values(target, fixture, instant=True) | {"env": fixture.healthy})
        result = query(client, expr, time=str(time.time_ns()))["result"]
        assert result and all(float(s["value"][1]) == 0 for s in result), (target.id, result)


def test_a_query_that_failed_before_its_intent_is_unclassified_in_every_rule_by_intent(
    client: httpx.Client, fixture: Fixture, loki_rule: Any
) -> None:
    """The error ratio and the query rate grouped an intent-less failure under no intent at all (a series without
    the label; an alert's summary with an empty intent), where the metrics, the lake and the latency rule say
    unclassified."""
    if "intent" not in loki_rule.body["expr"]:
        pytest.skip(f"{loki_rule.id} is not by intent")
    data = query(client, loki_rule.body["expr"], time=str(time.time_ns()))
    ours = [s["metric"] for s in data["result"] if s["metric"].get("env") == fixture.env]
    assert all(m.get("intent") for m in ours), f"{loki_rule.id}: a series without an intent: {ours}"
    if loki_rule.name in ("querylog:loki_queries:rate5m", "querylog:loki_query_errors:ratio5m"):
        assert "unclassified" in {m["intent"] for m in ours}, ours


def test_ruler_loaded_the_repository_rules(client: httpx.Client, checks: ModuleType) -> None:
    if os.environ.get("LOKI_RULES_FROM_REPO") != "1":
        pytest.skip("set LOKI_RULES_FROM_REPO=1 when this Loki's ruler reads loki/rules (run-local.sh, compose)")
    response = client.get("/prometheus/api/v1/rules")
    assert response.status_code == 200, response.text
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in response.json()["data"]["groups"]}
    in_repo = {
        g["name"]: [r.get("alert") or r["record"] for r in g["rules"]] for g in checks.load_rules_file()["groups"]
    }
    assert loaded == in_repo


# --- dashboard targets --------------------------------------------------------------------------------------------


def dashboard_values(target: Any, fixture: Fixture, instant: bool) -> dict[str, str]:
    """What Grafana would put in place of each variable: `$__auto` is the step (1m) for range queries and the
    dashboard range for instant ones; All of intent is its allValue; the others their defaults."""
    values = {"__auto": "10m" if instant else "1m", "env": fixture.env, "search": "환불", "session": fixture.session}
    for var in target.dashboard["templating"]["list"]:
        if var["name"] not in values:
            values[var["name"]] = var["allValue"] if var.get("includeAll") else str(var["current"]["value"])
    return values


def substituted(expr: str, values: dict[str, str]) -> str:
    """`expr` with each Grafana variable replaced by its value (longest names first: `$env` is in `$environment`)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("$" + name, values[name])
    return expr


def test_dashboard_target_runs_and_has_data(
    client: httpx.Client, fixture: Fixture, loki_target: Any, checks: ModuleType
) -> None:
    expr = substituted(loki_target.expr, dashboard_values(loki_target, fixture, loki_target.instant))
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    now = time.time_ns()
    if loki_target.instant:
        data = query(client, expr, time=str(now))
    else:
        data = query(client, expr, start=str(now - 10 * 60 * NS), end=str(now), step="60", limit="50")
    assert data["result"], f"{loki_target.id} ({loki_target.panel['title']}) returned nothing:\n{expr}"
    assert envs_in(data["result"]) <= {fixture.env, ""}, "a dashboard query leaked another env's data"


def test_the_query_rate_by_intent_counts_a_query_that_failed_before_its_intent(
    client: httpx.Client, fixture: Fixture, checks: ModuleType
) -> None:
    """The panel counted intent_classified lines: a query that failed before classification was in no series, while
    the panels beside it (and querylog_queries_total) call it unclassified."""
    (target,) = [t for t in checks.iter_targets() if t.panel["title"] == "Query rate by intent"]
    expr = substituted(target.expr, dashboard_values(target, fixture, instant=True))
    result = query(client, expr, time=str(time.time_ns()))["result"]
    assert {s["metric"]["intent"] for s in result} == {*INTENTS, "unclassified"}
