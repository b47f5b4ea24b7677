"""The chat API over HTTP: answers, the events behind each answer, failures, health and metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.service.app import create_app
from querylog.service.body_limit import BODY_MAX_BYTES
from querylog.testing import capture_events


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_chat_answers_and_records_the_lifecycle(client: TestClient) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": "SK하이닉스 주가 전망은?", "session_id": "s-1", "user_id": "u-1"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["intent"] == "stock_analysis"
    assert body["answer"] and body["sources"]
    assert [e.event_type for e in events] == [
        "query_received",
        "intent_classified",
        "search_completed",
        "response_generated",
        "query_completed",
    ]
    assert {e.query_id for e in events} == {body["query_id"]}


def test_each_question_is_recorded_with_the_language_it_is_answered_in(client: TestClient) -> None:
    """docs/loki.md shows ``"language":"ko"`` on a query_received line; the bundled API never filled it."""
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        for question in ("SK하이닉스 주가 전망은?", "What is the outlook for NVIDIA?"):
            assert client.post("/v1/chat", json={"query": question}).status_code == 200
    assert [e.language for e in events if e.event_type == "query_received"] == ["ko", "en"]


def test_a_failing_llm_step_is_a_502_and_a_query_failed_event(client: TestClient) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": "카카오 뉴스 #fail"})
    assert resp.status_code == 502
    assert resp.json()["error"] == "SimulatedFailure"
    failed = events[-1]
    assert failed.event_type == "query_failed"
    assert failed.query_id == resp.json()["query_id"]
    assert failed.error_type == "SimulatedFailure" and failed.stage == "generate"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"query": ""},
        {"query": 5},
        {"query": "x" * 20_000},
        {"query": " \t\n"},
        {"query": "\u001e"},
        {"query": "\u200b\u00ad"},
        {"query": "\u0000"},  # controls only: was answered, and stored as a question that shows nothing
        {"query": "\u0001\u200e\u001b "},
        # Letters and marks that draw nothing: the Hangul fillers (U+3164 is the "blank" Korean users type), a lone
        # variation selector, the blank braille pattern. Stored, they were blank rows in the explorer.
        {"query": "\u3164\u3164"},
        {"query": "\u115f\u1160"},
        {"query": "\uffa0 \ufe0f"},
        {"query": "\u2800"},
    ],
)
def test_bad_requests_are_422_and_emit_nothing(client: TestClient, payload: dict[str, object]) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        assert client.post("/v1/chat", json=payload).status_code == 422
    assert events == []


@pytest.mark.parametrize("query", ["❤\ufe0f", "ㅎㅏ", "주가\u3164전망"])
def test_a_question_with_a_mark_or_filler_beside_what_shows_is_answered(client: TestClient, query: str) -> None:
    assert client.post("/v1/chat", json={"query": query}).status_code == 200


def test_a_422_names_an_oversized_question_without_sending_it_back_whole(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"query": "삼성전자 " * 50_000})  # 650 KB: within the body limit
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["body", "query"] and error["type"] == "string_too_long"
    assert error["input"].startswith("삼성전자 삼성전자") and error["input"].endswith("… (250000 characters)")
    assert len(resp.content) < 2_000


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/feedback"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_before_the_app_holds_it(client: TestClient, path: str, chunked: bool) -> None:
    body = orjson.dumps({"query": "삼성전자 " * 150_000, "query_id": "q-1", "score": 1})  # about 2 MB
    assert len(body) > BODY_MAX_BYTES
    content = iter([body[i : i + 65_536] for i in range(0, len(body), 65_536)]) if chunked else body
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post(path, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert f"over {BODY_MAX_BYTES} bytes" in resp.json()["detail"]
    assert resp.headers["x-request-id"]
    assert events == []


def test_a_body_within_the_limit_is_answered(client: TestClient) -> None:
    question = ("삼성전자 " * 4_000)[:16_384]  # the longest question allowed: 16,384 characters, 43 KB
    assert len(question) == 16_384
    resp = client.post("/v1/chat", json={"query": question})
    assert resp.status_code == 200, resp.text


def test_a_question_typed_decomposed_is_held_to_the_limit_as_it_is_stored(client: TestClient) -> None:
    """Korean sent in NFD (three code points a syllable) was refused at under half the documented 16,384 characters,
    although the event stores it composed (NFC) and POST /v1/events took the same text."""
    import unicodedata

    question = ("하이닉스 " * 4_000)[:16_384]
    decomposed = unicodedata.normalize("NFD", question)
    assert len(decomposed) > 2 * 16_384
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": decomposed})
    assert resp.status_code == 200, resp.text[:300]
    assert events[0].query_text == question  # type: ignore[attr-defined]
    resp = client.post("/v1/chat", json={"query": unicodedata.normalize("NFD", question + "하")})
    assert resp.status_code == 422 and "16384 characters" in resp.text


def test_answered_queries_reach_the_lake(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        ids = [c.post("/v1/chat", json={"query": q}).json()["query_id"] for q in ("네이버 뉴스", "KOSPI today")]
    # shutdown drained the projections
    with Catalog(settings.lake_dir) as cat:
        _, rows = cat.query("select query_id, status from queries order by started_at")
    assert rows == [(ids[0], "completed"), (ids[1], "completed")]


def test_healthz_reports_the_log_and_projections(client: TestClient) -> None:
    client.post("/v1/chat", json={"query": "삼성전자"})
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["log"]["events_written"] == 5 and body["log"]["events_dropped"] == 0
    assert {"parquet", "metrics"} <= set(body["projections"])


def test_healthz_and_metrics_say_nobody_knows_the_lag_of_a_projection_no_process_has_run(tmp_path: Path) -> None:
    """QUERYLOG_PROJECTIONS=none and no `querylog project`: the lake's projection was shown 0 events behind while
    every event waited for it (on /healthz, then still on /metrics, whose lag panels said "0 behind")."""
    settings = Settings(home=tmp_path / "home", env="test", stdout_events=False, projections="none")
    with TestClient(create_app(settings, environ={})) as none_mode:
        none_mode.post("/v1/chat", json={"query": "삼성전자"})
        parquet = none_mode.get("/healthz").json()["projections"]["parquet"]
        metrics = none_mode.get("/metrics").text
    assert parquet["lag_events"] is None and parquet["lag_seconds"] is None and parquet["leading"] is False
    assert 'querylog_sink_report_age_seconds{sink="parquet"}' in metrics  # the projection is listed
    assert 'querylog_sink_lag_events{sink="parquet"}' not in metrics
    assert 'querylog_sink_lag_seconds{sink="parquet"}' not in metrics


def test_healthz_says_when_an_older_release_commits_the_lake(tmp_path: Path) -> None:
    """An older release's `serve` or `project` left leading the lake projection reads this release's v2 events as
    corrupt and commits past them: the lake lost them without a word on the upgraded side."""
    import json

    from querylog.logging.events import SCHEMA_VERSION
    from querylog.service.health import OLDER_RELEASE

    settings = Settings(home=tmp_path / "home", env="test", stdout_events=False, projections="none")
    commit = settings.lake_dir / "_querylog" / "parquet-commit.json"
    commit.parent.mkdir(parents=True)
    commit.write_text(json.dumps({"checkpoint": {}, "pending": []}))  # before this process: not a sign
    with TestClient(create_app(settings, environ={})) as app:
        assert OLDER_RELEASE not in app.get("/healthz").json().get("reasons", [])
        commit.write_text(json.dumps({"checkpoint": {"a.jsonl": 10}, "pending": []}))  # as releases before wrote it
        os.utime(commit, (time.time() + 1, time.time() + 1))  # committed since this process started
        body = app.get("/healthz").json()
        assert body["status"] == "degraded" and OLDER_RELEASE in body["reasons"]
        commit.write_text(json.dumps({"checkpoint": {"a.jsonl": 20}, "pending": [], "reads_schema": SCHEMA_VERSION}))
        os.utime(commit, (time.time() + 2, time.time() + 2))
        # This release committed again: the events the older one left out are still missing. It cleared here.
        assert OLDER_RELEASE in app.get("/healthz").json()["reasons"]
    with TestClient(create_app(settings, environ={})) as app:  # restarted (after `querylog replay parquet`)
        assert OLDER_RELEASE not in app.get("/healthz").json().get("reasons", [])


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_ops_endpoints_answer_head_for_uptime_probes(client: TestClient, path: str) -> None:
    resp = client.head(path)
    assert resp.status_code == 200 and resp.content == b""  # was 405, which a probe reads as down


def test_the_healthz_sample_in_the_docs_has_the_fields_served(client: TestClient) -> None:
    client.post("/v1/chat", json={"query": "삼성전자"})
    body = client.get("/healthz").json()
    text = (Path(__file__).parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    section = text[text.index("## GET /healthz") :]
    sample = orjson.loads(section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)])
    assert set(sample) - {"projector_process"} == set(body)  # this test server runs its projections in threads
    assert set(sample["log"]) == set(body["log"])
    assert all(set(p) == set(next(iter(body["projections"].values()))) for p in sample["projections"].values())


def test_metrics_are_derived_from_the_events(client: TestClient) -> None:
    for q in ("삼성전자 주가", "카카오 소식 #fail"):
        client.post("/v1/chat", json={"query": q})
    client.app.state.querylog.projectors["metrics"].catch_up()  # type: ignore[attr-defined]
    text = client.get("/metrics").text
    assert 'querylog_queries_total{intent="stock_analysis",status="completed"} 1.0' in text
    assert 'status="failed"' in text


def test_korean_is_utf8_in_the_log_files(client: TestClient, settings: Settings) -> None:
    client.post("/v1/chat", json={"query": "하이닉스 실적"})
    data = b"".join(p.read_bytes() for p in Path(settings.log_dir).glob("*.jsonl"))
    assert "하이닉스 실적".encode() in data and b"\\u" not in data


@pytest.mark.parametrize(
    ("path", "body", "shown"),
    [
        ("/v1/feedback", b'{"query_id":"q","score":NaN}', "NaN"),
        ("/v1/chat", b'{"query":Infinity}', "Infinity"),
        ("/v1/chat", b'{"query":"hi","session_id":-Infinity}', "-Infinity"),
        ("/v1/feedback", b'{"query_id":"q","score":1e400}', "Infinity"),
    ],
)
def test_a_number_json_cannot_hold_is_a_422_that_names_it(
    client: TestClient, path: str, body: bytes, shown: str
) -> None:
    """Python's JSON reader takes NaN, Infinity and 1e400; the 422 that echoed them back failed to encode (a 500)."""
    resp = client.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert shown in [error.get("input") for error in resp.json()["detail"]]
