"""A real Prometheus scrapes the metrics projection and evaluates the project's rules against it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from querylog.logging.events import Event, IntentClassified, QueryCompleted, QueryFailed, QueryReceived
from querylog.logging.metrics import MetricsProjection
from querylog.logging.telemetry import SinkTelemetry

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = [REPO / "compose" / "prometheus" / "recording.yml", REPO / "compose" / "prometheus" / "alerts.yml"]
COMPLETED, FAILED = 20, 5
DEADLINE_SECONDS = 60.0

T = TypeVar("T")


def query_events() -> list[Event]:
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    events: list[Event] = []
    for i in range(COMPLETED + FAILED):
        qid, ts = f"q{i}", t0 + timedelta(seconds=i)
        intent = "news" if i % 2 else "stock_price"
        events += [
            QueryReceived(query_id=qid, ts=ts, query_text="코스피 오늘 어때?"),
            IntentClassified(query_id=qid, ts=ts, intent=intent, confidence=0.9, duration_ms=12.0),
        ]
        if i < COMPLETED:
            events.append(QueryCompleted(query_id=qid, ts=ts, latency_ms=1500.0, intent=intent, quality_score=0.7))
        else:
            events.append(QueryFailed(query_id=qid, ts=ts, error_type="TimeoutError", latency_ms=30_000.0))
    return events


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[str]:
    """A tiny HTTP server on loopback serving the projection after it folded the events above."""
    projection = MetricsProjection()
    projection.apply(query_events())
    projection.add_sink(SinkTelemetry("loki"))
    registry = CollectorRegistry()
    projection.register(registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, metrics_target: str
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A real Prometheus on a free loopback port with temporary storage, scraping `metrics_target` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus, or scripts/ensure-prometheus.sh)")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML; this spares the test a YAML writer
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in RULE_FILES],
                "scrape_configs": [{"job_name": "querylog", "static_configs": [{"targets": [metrics_target]}]}],
            }
        ),
        encoding="utf-8",
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def poll(what: str, attempt: Callable[[], T | None], process: subprocess.Popen[bytes], log_path: Path) -> T:
    """Retry `attempt` until it returns a value, Prometheus exits, or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {DEADLINE_SECONDS}s; log:\n{log_path.read_text()[-3000:]}")
        try:
            # Waiting on the process is the pause between attempts, and notices at once if Prometheus died.
            code = process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"prometheus exited with {code} while waiting for {what}; log:\n{log_path.read_text()[-3000:]}")


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError):
        return None


def is_ready(base: str) -> bool | None:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as response:
            return True if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet, or 503 while starting


def instant(base: str, promql: str) -> list[dict[str, Any]] | None:
    """The samples of an instant query, or None while Prometheus does not answer it."""
    body = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    if body is None or body.get("status") != "success":
        return None
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scraped(base: str, promql: str) -> Callable[[], list[dict[str, Any]] | None]:
    """An attempt for `poll`: the samples of `promql` once a scrape has produced some."""
    return lambda: instant(base, promql) or None


def test_prometheus_scrapes_the_projection_and_sums_every_query(
    prometheus: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log_path = prometheus
    poll("/-/ready", lambda: is_ready(base), process, log_path)

    total = poll("a scrape of the projection", scraped(base, "sum(querylog_queries_total)"), process, log_path)
    assert float(total[0]["value"][1]) == COMPLETED + FAILED

    by_status = instant(base, "sum by (status) (querylog_queries_total)")
    assert by_status is not None
    assert {s["metric"]["status"]: float(s["value"][1]) for s in by_status} == {
        "completed": COMPLETED,
        "failed": FAILED,
    }
    # The failed events carry no intent: it came from intent_classified, as the projection promises.
    assert instant(base, 'querylog_queries_total{intent="unclassified"}') == []
    up = instant(base, 'up{job="querylog"}')
    assert up is not None
    assert float(up[0]["value"][1]) == 1


def test_the_project_rules_evaluate_without_error_on_real_scrapes(
    prometheus: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log_path = prometheus
    poll("/-/ready", lambda: is_ready(base), process, log_path)
    poll("a scrape of the projection", scraped(base, "querylog_events_total"), process, log_path)

    def evaluated_rules() -> list[dict[str, Any]] | None:
        body = get_json(f"{base}/api/v1/rules")
        if body is None:
            return None
        rules: list[dict[str, Any]] = [rule for group in body["data"]["groups"] for rule in group["rules"]]
        # "unknown" until a rule's first evaluation; wait for one that ran after the first scrape landed.
        if not rules or any(rule["health"] == "unknown" for rule in rules):
            return None
        return rules

    rules = poll("every rule's first evaluation", evaluated_rules, process, log_path)
    failing = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert failing == {}
    assert len(rules) == sum(
        path.read_text(encoding="utf-8").count(marker) for path in RULE_FILES for marker in ("- record:", "- alert:")
    )
