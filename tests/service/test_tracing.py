"""Langfuse tracing without a network: spans go to an in-memory exporter; the app wires tracing and the LLM step."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support.http_server import serving

from querylog.config import Settings
from querylog.logging.redaction import default_redactor
from querylog.service.app import create_app
from querylog.service.generation import Generation, LocalGenerator
from querylog.service.pipeline import ChatPipeline
from querylog.service.retrieval import Hit
from querylog.service.tracing import LangfuseTracing, trace_url
from querylog.testing import capture_events

HOST = "http://127.0.0.1:9"  # nothing listens there; with an in-memory exporter nothing is sent anyway


def _tracing(exporter: SpanExporter) -> LangfuseTracing:
    # A fresh public key per test: the SDK keeps one client per key for the whole process.
    return LangfuseTracing(
        public_key=f"pk-lf-test-{uuid.uuid4().hex}",
        secret_key="sk-lf-test",
        host=HOST,
        environment="test",
        span_exporter=exporter,
        redact=default_redactor().redact,
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[LangfuseTracing]:
    t = _tracing(exporter)
    yield t
    t.close()


@pytest.fixture
def client(settings: Settings, tracing: LangfuseTracing) -> Iterator[TestClient]:
    with TestClient(create_app(settings, pipeline=ChatPipeline(tracing=tracing))) as c:
        yield c


def _spans(tracing: LangfuseTracing, exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    assert tracing.flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def test_every_event_of_a_traced_query_carries_its_trace_id(client: TestClient) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": "네이버 주가 전망은?", "session_id": "s-1", "user_id": "u-1"})
    trace_id = resp.json()["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    assert events[0].event_type == "query_received"
    assert len(events) == 5 and {e.trace_id for e in events} == {trace_id}


def test_each_query_is_its_own_trace(client: TestClient) -> None:
    ids = {client.post("/v1/chat", json={"query": q}).json()["trace_id"] for q in ("카카오", "NAVER news", "카카오")}
    assert len(ids) == 3


def test_the_answer_step_is_a_generation_with_model_usage_and_io(
    client: TestClient, tracing: LangfuseTracing, exporter: InMemorySpanExporter
) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        body = client.post("/v1/chat", json={"query": "삼성전자 실적", "session_id": "s-7", "user_id": "u-7"}).json()
    responded = next(e for e in events if e.event_type == "response_generated")
    spans = _spans(tracing, exporter)
    root, generation = spans["chat"], spans["generate"]
    assert _hex(root.context.trace_id) == _hex(generation.context.trace_id) == body["trace_id"]
    assert generation.parent is not None and generation.parent.span_id == root.context.span_id
    attrs = generation.attributes or {}
    assert attrs["langfuse.observation.type"] == "generation"
    assert attrs["langfuse.observation.model.name"] == body["model"] == "querylog-template-v1"
    assert json.loads(str(attrs["langfuse.observation.usage_details"])) == {
        "input": responded.gen_ai_usage_input_tokens,  # type: ignore[attr-defined]
        "output": responded.gen_ai_usage_output_tokens,  # type: ignore[attr-defined]
    }
    assert json.loads(str(attrs["langfuse.observation.input"]))["query"] == "삼성전자 실적"
    assert attrs["langfuse.observation.output"] == body["answer"]
    assert generation.end_time is not None and generation.start_time is not None
    assert generation.end_time >= generation.start_time
    root_attrs = root.attributes or {}
    assert (root_attrs["session.id"], root_attrs["user.id"], root_attrs["langfuse.trace.name"]) == (
        "s-7",
        "u-7",
        "chat",
    )
    assert json.loads(str(root_attrs["langfuse.observation.metadata.query_id"])) == body["query_id"]


def test_a_failed_answer_is_an_error_observation_and_a_traced_query_failed(
    client: TestClient, tracing: LangfuseTracing, exporter: InMemorySpanExporter
) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": "카카오 뉴스 #fail"})
    assert resp.status_code == 502
    failed = events[-1]
    assert failed.event_type == "query_failed"
    spans = _spans(tracing, exporter)
    generation = spans["generate"]
    assert failed.trace_id == _hex(generation.context.trace_id)
    attrs = generation.attributes or {}
    assert attrs["langfuse.observation.level"] == "ERROR"
    assert str(attrs["langfuse.observation.status_message"]).startswith("SimulatedFailure")
    assert (spans["chat"].attributes or {})["langfuse.observation.level"] == "ERROR"


class _EchoingGenerator:
    """An LLM that repeats personal data back: what reaches Langfuse must still be redacted."""

    def generate(self, query: str, intent: str, hits: Sequence[Hit]) -> Generation:
        return Generation(
            answer="연락처 010-2222-3333 로 문의하세요",
            system="test",
            model="echo-1",
            input_tokens=3,
            output_tokens=4,
            quality_score=None,
        )


def test_text_sent_to_langfuse_is_redacted(
    settings: Settings, tracing: LangfuseTracing, exporter: InMemorySpanExporter
) -> None:
    pipeline = ChatPipeline(generator=_EchoingGenerator(), tracing=tracing)
    with TestClient(create_app(settings, pipeline=pipeline)) as c:
        resp = c.post("/v1/chat", json={"query": "내 메일 kim@example.com 으로 삼성전자 소식"})
    assert resp.status_code == 200
    exported = json.dumps([dict(s.attributes or {}) for s in _spans(tracing, exporter).values()], ensure_ascii=False)
    assert "kim@example.com" not in exported and "010-2222-3333" not in exported
    assert "삼성전자" in exported


class _BrokenExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("langfuse is down")

    def shutdown(self) -> None:
        pass


def test_a_langfuse_outage_does_not_fail_the_chat(settings: Settings) -> None:
    tracing = _tracing(_BrokenExporter())
    try:
        with TestClient(create_app(settings, pipeline=ChatPipeline(tracing=tracing))) as c:
            resp = c.post("/v1/chat", json={"query": "현대차 뉴스"})
            assert resp.status_code == 200 and resp.json()["trace_id"]
        tracing.flush()
    finally:
        tracing.close()


def test_an_sdk_error_on_the_request_path_does_not_fail_the_chat(
    client: TestClient, tracing: LangfuseTracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("sdk bug")

    monkeypatch.setattr(tracing._client, "start_observation", broken)
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": "엔비디아 전망"})
    assert resp.status_code == 200
    assert {e.trace_id for e in events} == {resp.json()["trace_id"]}


def test_the_pipeline_makes_a_trace_id_when_the_caller_did_not(
    settings: Settings, tracing: LangfuseTracing, exporter: InMemorySpanExporter
) -> None:
    from querylog.runtime import Runtime

    with (
        Runtime(settings, projections=False) as rt,
        capture_events(rt.tracker) as events,
        rt.tracker.query("테슬라") as q,
    ):
        ChatPipeline(tracing=tracing).answer(q)
    assert q.trace_id is not None
    # query_received was emitted before the pipeline ran; every later event has the id
    assert [e.trace_id for e in events] == [None] + [q.trace_id] * 4
    assert _hex(_spans(tracing, exporter)["generate"].context.trace_id) == q.trace_id


def test_a_second_client_with_the_same_key_traces_after_the_first_closed() -> None:
    key = f"pk-lf-test-{uuid.uuid4().hex}"
    for _ in range(2):
        exporter = InMemorySpanExporter()
        tracing = LangfuseTracing(public_key=key, secret_key="sk", host=HOST, span_exporter=exporter)
        with tracing.trace(tracing.new_trace_id(), name="chat") as trace, trace.generation() as generation:
            generation.record(model="m", output="o", input_tokens=1, output_tokens=1)
        tracing.flush()
        assert {s.name for s in exporter.get_finished_spans()} == {"chat", "generate"}
        tracing.close()


def test_trace_url_links_to_the_langfuse_trace() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    assert trace_url("https://cloud.langfuse.com/", trace_id) == f"https://cloud.langfuse.com/trace/{trace_id}"
    assert trace_url("http://langfuse:3000", trace_id) == f"http://langfuse:3000/trace/{trace_id}"
    with pytest.raises(ValueError, match="32 lowercase hex"):
        trace_url("https://cloud.langfuse.com", "not-a-trace")


def test_from_env_is_off_without_keys_and_refuses_a_partial_configuration() -> None:
    assert LangfuseTracing.from_env({}) is None
    with pytest.raises(ValueError, match="LANGFUSE_SECRET_KEY, LANGFUSE_HOST not set"):
        LangfuseTracing.from_env({"LANGFUSE_PUBLIC_KEY": "pk-lf-1"})
    with pytest.raises(ValueError, match="http"):
        LangfuseTracing.from_env(
            {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "langfuse"}
        )


def test_from_env_accepts_the_sdks_base_url_name() -> None:
    key = f"pk-lf-test-{uuid.uuid4().hex}"
    tracing = LangfuseTracing.from_env(
        {"LANGFUSE_PUBLIC_KEY": key, "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_BASE_URL": "http://lf.internal:3000/"}
    )
    assert tracing is not None
    try:
        assert tracing.host == "http://lf.internal:3000"
    finally:
        tracing.close()


# -- the app wires tracing and the LLM step from its environment ---------------------------------------------
class _OtlpRecorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str | None, int]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, self.headers.get("authorization"), len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_langfuse() -> Iterator[tuple[str, list[tuple[str, str | None, int]]]]:
    received: list[tuple[str, str | None, int]] = []
    with serving(type("Handler", (_OtlpRecorder,), {"received": received})) as url:
        yield url, received


def test_the_app_traces_to_the_langfuse_host_in_its_environment(
    settings: Settings, fake_langfuse: tuple[str, list[tuple[str, str | None, int]]]
) -> None:
    host, received = fake_langfuse
    key = f"pk-lf-test-{uuid.uuid4().hex}"
    environ = {"LANGFUSE_PUBLIC_KEY": key, "LANGFUSE_SECRET_KEY": "sk-lf-secret", "LANGFUSE_HOST": host}
    with TestClient(create_app(settings, environ=environ)) as c:
        trace_id = c.post("/v1/chat", json={"query": "LG에너지솔루션 뉴스"}).json()["trace_id"]
    # shutdown flushed the spans to the host, authenticated with the key pair
    assert trace_id
    auth = "Basic " + base64.b64encode(f"{key}:sk-lf-secret".encode()).decode()
    assert ("/api/public/otel/v1/traces", auth) in {(path, a) for path, a, _ in received}


class _BodyRecorder(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.bodies.append(gzip.decompress(body) if self.headers.get("content-encoding") == "gzip" else body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("capture", [True, False])
def test_an_answer_the_log_does_not_keep_is_not_sent_to_langfuse(settings: Settings, capture: bool) -> None:
    bodies: list[bytes] = []
    settings = dataclasses.replace(settings, capture_answers=capture)
    with serving(type("Handler", (_BodyRecorder,), {"bodies": bodies})) as host:
        environ = {
            "LANGFUSE_PUBLIC_KEY": f"pk-lf-test-{uuid.uuid4().hex}",
            "LANGFUSE_SECRET_KEY": "sk",
            "LANGFUSE_HOST": host,
        }
        with TestClient(create_app(settings, environ=environ)) as c:
            answer = c.post("/v1/chat", json={"query": "카카오 실적 발표"}).json()["answer"]
    sent = b"".join(bodies)
    assert "카카오 실적 발표".encode() in sent  # the trace went out, with the question
    assert (answer.encode() in sent) is capture  # QUERYLOG_CAPTURE_ANSWERS=0: no answer in Langfuse either


def test_without_langfuse_variables_the_app_does_not_trace(client: TestClient, settings: Settings) -> None:
    with TestClient(create_app(settings, environ={})) as c:
        assert c.post("/v1/chat", json={"query": "애플 뉴스"}).json()["trace_id"] is None


def test_a_partial_langfuse_configuration_fails_at_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="LANGFUSE_HOST"):
        create_app(settings, environ={"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk"})


def test_the_app_uses_the_llm_server_in_its_environment_and_records_its_failure(settings: Settings) -> None:
    environ = {"QUERYLOG_LLM_BASE_URL": "http://127.0.0.1:9/v1", "QUERYLOG_LLM_MODEL": "gpt-test"}
    with TestClient(create_app(settings, environ=environ)) as c:
        tracker = c.app.state.querylog.tracker  # type: ignore[attr-defined]
        with capture_events(tracker) as events:
            resp = c.post("/v1/chat", json={"query": "SK하이닉스 전망"})
    assert resp.status_code == 502
    assert resp.json()["error"] == "GenerationConnectionError"
    failed = events[-1]
    assert failed.event_type == "query_failed"
    assert failed.error_type == "GenerationConnectionError" and failed.stage == "generate"  # type: ignore[attr-defined]


def test_the_local_generator_answers_without_llm_variables(settings: Settings) -> None:
    with TestClient(create_app(settings, environ={})) as c:
        assert c.post("/v1/chat", json={"query": "카카오 실적"}).json()["model"] == LocalGenerator().model
