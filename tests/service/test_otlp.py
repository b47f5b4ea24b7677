"""POST /v1/traces: spans exported by the OpenTelemetry SDK's own OTLP/HTTP exporter become tracked queries."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import math
import random
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace import use_span as trace_context

from querylog.analytics.catalog import Catalog
from querylog.analytics.queries import LakeQueries
from querylog.config import Settings
from querylog.logging.codec import decode
from querylog.logging.events import QueryReceived
from querylog.service.app import create_app
from querylog.service.otlp_mapping import NOT_CAPTURED
from querylog.testing import running_server

_T0 = time.time_ns() - 60 * 10**9


class _Keep(SpanExporter):
    """Keeps the finished spans, to export them (again) by hand."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclasses.dataclass
class _Traced:
    spans: list[ReadableSpan]
    genai_trace: str
    openinference_trace: str


def _make_spans() -> _Traced:
    """Half GenAI conventions, half OpenInference, one failure, one retrieval, one span that is not GenAI."""
    keep = _Keep()
    resource = Resource.create({"service.name": "otel-chat", "deployment.environment.name": "staging"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("test")
    messages_in = [{"role": "system", "parts": [{"type": "text", "content": "You answer about stocks."}]},
                   {"role": "user", "parts": [{"type": "text", "content": "삼성전자 실적 전망은?"}]}]  # fmt: skip
    messages_out = [{"role": "assistant", "parts": [{"type": "text", "content": "실적은 개선될 전망입니다."}],
                     "finish_reason": "stop"}]  # fmt: skip
    span = tracer.start_span("chat gpt-4o-mini", start_time=_T0)
    span.set_attributes({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 40, "gen_ai.input.messages": json.dumps(messages_in, ensure_ascii=False),
        "gen_ai.output.messages": json.dumps(messages_out, ensure_ascii=False),
        "gen_ai.response.finish_reasons": ["stop"], "session.id": "s-otel", "user.id": "u-otel",
    })  # fmt: skip
    span.end(end_time=_T0 + 850_000_000)
    genai_trace = format(span.get_span_context().trace_id, "032x")
    root = tracer.start_span("rag", start_time=_T0 + 10**9)
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=False):
        retriever = tracer.start_span("retrieve", start_time=_T0 + 10**9)
        retriever.set_attributes({
            "openinference.span.kind": "RETRIEVER", "input.value": "NVIDIA news",
            "retrieval.documents.0.document.id": "news-12", "retrieval.documents.0.document.score": 3.5,
            "retrieval.documents.1.document.id": "news-7", "retrieval.documents.1.document.score": 2.0,
        })  # fmt: skip
        retriever.end(end_time=_T0 + 10**9 + 30_000_000)
        llm = tracer.start_span("llm", start_time=_T0 + 10**9 + 30_000_000)
        llm.set_attributes({
            "openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-haiku",
            "llm.token_count.prompt": 300, "llm.token_count.completion": 60,
            "input.value": "What is the latest NVIDIA news?", "output.value": "NVIDIA beat estimates.",
            "session.id": "s-phoenix",
        })  # fmt: skip
        llm.end(end_time=_T0 + 10**9 + 530_000_000)
    root.end(end_time=_T0 + 10**9 + 540_000_000)
    openinference_trace = format(llm.get_span_context().trace_id, "032x")
    failed = tracer.start_span("chat gpt-4o", start_time=_T0 + 2 * 10**9)
    failed.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                           "error.type": "RateLimitError"})  # fmt: skip
    failed.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
    failed.end(end_time=_T0 + 2 * 10**9 + 100_000_000)
    provider.shutdown()
    return _Traced(keep.spans, genai_trace, openinference_trace)


@pytest.fixture(scope="module")
def traced() -> _Traced:
    return _make_spans()


def _queries(home: Path) -> dict[str, dict[str, Any]]:
    with Catalog(home / "lake") as catalog:
        columns, rows = catalog.query("select * from queries where query_id like 'otlp-%'")
    return {row[columns.index("trace_id")] + ":" + row[columns.index("status")]: dict(zip(columns, row, strict=True))
            for row in rows}  # fmt: skip


@pytest.mark.slow
def test_spans_from_the_sdks_exporter_become_queries_and_a_resend_or_a_restart_adds_nothing(
    tmp_path: Path, traced: _Traced
) -> None:
    home = tmp_path / "home"
    with running_server(home) as server:
        exporter = OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")
        assert exporter.export(traced.spans) == SpanExportResult.SUCCESS
        assert exporter.export(traced.spans) == SpanExportResult.SUCCESS  # a retry: nothing twice
    with running_server(home) as server:  # a restart between two exports loses and doubles nothing
        assert OTLPSpanExporter(endpoint=f"{server.url}/v1/traces").export(traced.spans) == SpanExportResult.SUCCESS
    queries = _queries(home)
    assert len(queries) == 3
    genai = queries[f"{traced.genai_trace}:completed"]
    assert (genai["query_text"], genai["answer_text"]) == ("삼성전자 실적 전망은?", "실적은 개선될 전망입니다.")
    assert (genai["model"], genai["response_model"], genai["provider"]) == (
        "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai")  # fmt: skip
    assert (genai["input_tokens"], genai["output_tokens"], genai["finish_reason"]) == (120, 40, "stop")
    assert genai["latency_ms"] == pytest.approx(850.0)
    assert (genai["session_id"], genai["service"], genai["env"]) == ("s-otel", "otel-chat", "staging")
    assert genai["user_id"] == "u-otel" and genai["cost_source"].startswith("price_table:")
    phoenix = queries[f"{traced.openinference_trace}:completed"]
    assert (phoenix["query_text"], phoenix["answer_text"]) == (
        "What is the latest NVIDIA news?",
        "NVIDIA beat estimates.",
    )
    assert (phoenix["model"], phoenix["input_tokens"], phoenix["output_tokens"]) == ("claude-3-5-haiku", 300, 60)
    assert [s["doc_id"] for s in phoenix["sources"]] == ["news-12", "news-7"] and phoenix["result_count"] == 2
    # The trace's one query lasted as long as its root span ("rag", 540 ms); the LLM step, 500 of them.
    assert phoenix["latency_ms"] == pytest.approx(540.0) and phoenix["generate_ms"] == pytest.approx(500.0)
    failed = next(q for k, q in queries.items() if k.endswith(":failed"))
    assert (failed["error_type"], failed["query_text"]) == ("RateLimitError", NOT_CAPTURED)
    with Catalog(home / "lake") as catalog:
        [(events, distinct)] = catalog.query(
            "select count(*), count(distinct event_id) from events where query_id like 'otlp-%'"
        )[1]
    assert events == distinct == 3 + 4 + 2  # received, [searched,] answered, completed | received, failed: once each


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=tmp_path / "home", stdout_events=False), environ={})) as c:
        yield c


def _protobuf(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


def _otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The OTLP/JSON encoding: protobuf's JSON mapping, with ids as hex."""
    payload = json_format.MessageToDict(encode_spans(spans))

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(payload)
    return json.dumps(payload, ensure_ascii=False).encode()


def test_json_and_gzip_are_accepted_and_skipped_spans_are_counted(client: TestClient, traced: _Traced) -> None:
    body = gzip.compress(_otlp_json(traced.spans))
    resp = client.post(
        "/v1/traces", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert resp.status_code == 200, resp.text
    # The "rag" root span is skipped (not GenAI), not rejected: an exporter has nothing to warn about.
    assert "partialSuccess" not in resp.json()
    again = client.post(
        "/v1/traces", content=_protobuf(traced.spans), headers={"content-type": "application/x-protobuf"}
    )
    assert again.status_code == 200 and again.headers["content-type"] == "application/x-protobuf"


def test_a_span_that_is_not_genai_is_skipped_never_an_error(client: TestClient) -> None:
    provider = TracerProvider()
    keep = _Keep()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    with provider.get_tracer("t").start_as_current_span("GET /health") as span:
        span.set_attribute("http.request.method", "GET")
    resp = client.post("/v1/traces", content=_otlp_json(keep.spans), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert "partialSuccess" not in resp.json()  # taken and read, as OTLP counts it: only /metrics shows the skip
    assert 'querylog_ingest_spans_left_out_total{reason="not_genai"} 1.0' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "headers", "code", "says"),
    [
        (b"\xff\x00garbage", {"content-type": "application/x-protobuf"}, 400, "malformed OTLP protobuf"),
        (b"{not json", {"content-type": "application/json"}, 400, "malformed JSON"),
        (b'{"resourceSpans": 3}', {"content-type": "application/json"}, 400, "not an OTLP trace export"),
        (b"{}", {"content-type": "text/plain"}, 415, "application/x-protobuf or application/json"),
        (b"{}", {"content-type": "application/json", "content-encoding": "br"}, 415, "gzip"),
        (b"not gzip", {"content-type": "application/json", "content-encoding": "gzip"}, 400, "inflate"),
        (b"[" * 5_000 + b"]" * 5_000, {"content-type": "application/json"}, 400, "nested too deeply"),
        # Jaeger's JSON: every field unknown to OTLP, so it was taken for an empty export (200, nothing stored).
        (b'{"data": [{"traceID": "ab", "spans": []}]}', {"content-type": "application/json"}, 400, "has: data"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    client: TestClient, body: bytes, headers: dict[str, str], code: int, says: str
) -> None:
    resp = client.post("/v1/traces", content=body, headers=headers)
    assert resp.status_code == code and says in _status(resp).message


def _status(resp: Any) -> RpcStatus:
    """An error's body as OTLP/HTTP answers it: a google.rpc.Status in the request's encoding (JSON otherwise)."""
    answer = RpcStatus()
    if resp.headers["content-type"] == "application/x-protobuf":
        answer.ParseFromString(resp.content)
    else:
        assert resp.headers["content-type"] == "application/json"
        json_format.ParseDict(resp.json(), answer)  # no other field: an exporter parses it as a Status
    return answer


def test_the_ingest_token_and_body_limit_apply(tmp_path: Path, traced: _Traced) -> None:
    settings = Settings(home=tmp_path / "home", stdout_events=False, ingest_token="t0ken", ingest_max_bytes=2048)
    headers = {"content-type": "application/x-protobuf"}
    with TestClient(create_app(settings, environ={})) as c:
        missing = c.post("/v1/traces", content=_protobuf(traced.spans), headers=headers)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert _status(missing).code == 16 and "missing bearer token" in _status(missing).message  # UNAUTHENTICATED
        wrong = {**headers, "authorization": "Bearer nope"}
        refused = c.post("/v1/traces", content=_protobuf(traced.spans), headers=wrong)
        assert refused.status_code == 403 and _status(refused).code == 7  # PERMISSION_DENIED
        right = {**headers, "authorization": "Bearer t0ken"}
        assert c.post("/v1/traces", content=_protobuf(traced.spans), headers=right).status_code == 200
        big = gzip.compress(b"{" + b" " * 10_000 + b"}")  # small on the wire, over the limit inflated
        gz = {"content-type": "application/json", "content-encoding": "gzip", "authorization": "Bearer t0ken"}
        resp = c.post("/v1/traces", content=big, headers=gz)
        assert resp.status_code == 413 and "inflates past" in _status(resp).message


def test_korean_text_is_redacted_like_every_producers(client: TestClient, tmp_path: Path) -> None:
    provider = TracerProvider()
    keep = _Keep()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    with provider.get_tracer("t").start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "제 번호 010-1234-5678 로 알려줘"})
    assert client.post("/v1/traces", content=_protobuf(keep.spans),
                       headers={"content-type": "application/x-protobuf"}).status_code == 200  # fmt: skip
    log = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))
    assert b"010-1234-5678" not in log and b"[PHONE]" in log


def _kept_tracer(resource: Resource | None = None) -> tuple[Any, _Keep]:
    """A tracer whose finished spans are kept, to be exported by hand."""
    provider = TracerProvider(resource=resource) if resource is not None else TracerProvider()
    keep = _Keep()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    return provider.get_tracer("t"), keep


def _export(client: TestClient, tmp_path: Path, spans: Sequence[ReadableSpan]) -> tuple[dict[str, Any], bytes]:
    """`spans` posted as OTLP/JSON: the answer's partial success, and the log's bytes after it."""
    resp = client.post("/v1/traces", content=_otlp_json(spans), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    partial = resp.json().get("partialSuccess", {})  # absent when nothing was left out
    return partial, b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))


@pytest.mark.parametrize(
    ("retrieval", "reason"),
    [
        ({"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": ""}, "invalid sources.doc_id"),
        # Taken silently as a search of unknown results (walk).
        (
            {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": "[{not json"},
            "unreadable gen_ai.retrieval.documents (not JSON)",
        ),
        # One object where a list is due: taken silently as a search of unknown results (walk).
        (
            {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": '{"id": "d-1"}'},
            "unreadable gen_ai.retrieval.documents (not a JSON list)",
        ),
    ],
    ids=["empty-doc-id", "documents-not-json", "documents-not-a-list"],
)
def test_a_span_the_schema_refuses_is_left_out_and_counted_not_the_whole_export(
    client: TestClient, tmp_path: Path, retrieval: dict[str, Any], reason: str
) -> None:
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("rag"):
        with tracer.start_as_current_span("retrieve") as retriever:
            retriever.set_attributes(retrieval)
        with tracer.start_as_current_span("llm") as bad:
            bad.set_attributes({"openinference.span.kind": "LLM", "input.value": "빈 문서 id"})
    with tracer.start_as_current_span("llm") as good:
        good.set_attributes({"openinference.span.kind": "LLM", "input.value": "정상 질문"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "1", "errorMessage": f"spans rejected: 1 {reason}"}
    # The retrieval span alone is refused: its query is kept, without that search (it dropped the query too).
    assert "정상 질문".encode() in log and "빈 문서 id".encode() in log and b"search_completed" not in log


def test_a_token_count_the_lake_cannot_hold_is_left_out_and_the_lake_keeps_going(
    client: TestClient, tmp_path: Path
) -> None:
    """A valid OTLP int64 of 2**40 output tokens was taken, then refused by every Parquet write: the lake stopped
    for good at that span, across restarts, while /healthz said ok."""
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import LogReader

    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as huge:
        huge.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 2**40})
        huge.set_attribute("gen_ai.prompt.0.content", "토큰이 너무 많은 질문")
    with tracer.start_as_current_span("chat") as fine:
        fine.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 2**31 - 1})
        fine.set_attribute("gen_ai.prompt.0.content", "정상 질문")
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial["rejectedSpans"] == "1" and "gen_ai_usage_output_tokens" in partial["errorMessage"]
    assert "정상 질문".encode() in log and "토큰이 너무 많은".encode() not in log
    home = tmp_path / "home"
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
        assert sink.telemetry.snapshot().sent == log.count(b"\n")


def test_a_span_dated_past_the_servers_clock_is_left_out_and_counted(client: TestClient, tmp_path: Path) -> None:
    tracer, keep = _kept_tracer()
    tomorrow = time.time_ns() + 86_400 * 10**9
    ahead = tracer.start_span("llm", start_time=tomorrow)
    ahead.set_attributes({"openinference.span.kind": "LLM", "input.value": "내일 온 질문"})
    ahead.end(end_time=tomorrow + 10**9)
    with tracer.start_as_current_span("llm") as now:
        now.set_attributes({"openinference.span.kind": "LLM", "input.value": "지금 질문"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {
        "rejectedSpans": "1",
        "errorMessage": "spans rejected: 1 ts more than 2 minutes ahead of this server's clock",
    }
    assert "지금 질문".encode() in log and "내일 온 질문".encode() not in log


def test_a_span_without_a_start_time_is_refused_not_taken_for_a_query_of_1970(
    client: TestClient, tmp_path: Path
) -> None:
    tracer, keep = _kept_tracer()
    unset = tracer.start_span("llm", start_time=0)  # what a hand-built exporter sends when it forgets the time
    unset.set_attributes({"openinference.span.kind": "LLM", "input.value": "시간 없는 질문"})
    unset.end(end_time=0)
    with tracer.start_as_current_span("llm") as now:
        now.set_attributes({"openinference.span.kind": "LLM", "input.value": "지금 질문"})
    assert keep.spans[0].start_time == 0
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "1", "errorMessage": "spans rejected: 1 span without a start time"}
    assert "지금 질문".encode() in log and "시간 없는 질문".encode() not in log and b'"ts":"1970' not in log


def test_a_span_with_a_zero_or_non_hex_id_is_rejected_alone(client: TestClient, tmp_path: Path) -> None:
    """An all-zero span id made a query `otlp-…-0000000000000000`; a non-hex trace id, or parent id, failed the
    whole export (a 400), where api.md says a rejected span is never an error for the rest."""
    tracer, keep = _kept_tracer()
    for text in ("영 span id", "hex 아닌 trace id", "hex 아닌 parent id", "정상 질문"):
        with tracer.start_as_current_span("llm") as span:
            span.set_attributes({"openinference.span.kind": "LLM", "input.value": text})
    export = json.loads(_otlp_json(keep.spans))
    spans = export["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["spanId"] = "0" * 16
    spans[1]["traceId"] = "z" * 32
    spans[2] = {"parentSpanId": "부모", **spans[2]}  # read before its span id: that one is valid hex
    resp = client.post("/v1/traces", content=json.dumps(export), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["partialSuccess"] == {
        "rejectedSpans": "3",
        "errorMessage": "spans rejected: 3 invalid trace or span id",
    }
    log = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))
    assert "정상 질문".encode() in log
    assert not any(text.encode() in log for text in ("영 span id", "hex 아닌"))


def test_the_service_and_env_are_kept_as_the_app_names_them_and_blank_ones_are_the_servers(
    client: TestClient, tmp_path: Path
) -> None:
    """`chat api` was replaced, without a word, by the server's own service name."""
    named, keep = _kept_tracer(
        Resource.create({"service.name": "chat api/v2", "deployment.environment.name": "eu prod"})
    )
    with named.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "이름 있는 앱"})
    blank, keep_blank = _kept_tracer(Resource.create({"service.name": " ", "deployment.environment.name": ""}))
    with blank.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "이름 없는 앱"})
    # The SDK's default resource (the Langfuse SDK's own provider has one): `unknown_service:python` is no name.
    unnamed, keep_unnamed = _kept_tracer(Resource.create({}))
    assert str(Resource.create({}).attributes["service.name"]).startswith("unknown_service")
    with unnamed.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "기본 리소스 앱"})
    partial, log = _export(client, tmp_path, [*keep.spans, *keep_blank.spans, *keep_unnamed.spans])
    assert partial == {}
    settings = Settings(home=tmp_path / "home")
    events = [decode(line) for line in log.splitlines()]
    by_text = {e.query_text: (e.service, e.env) for e in events if isinstance(e, QueryReceived)}
    ours = (settings.service, settings.env)
    assert by_text == {"이름 있는 앱": ("chat api/v2", "eu prod"), "이름 없는 앱": ours, "기본 리소스 앱": ours}


def test_the_apps_intent_and_its_service_version_become_the_querys_intent_and_release(
    client: TestClient, tmp_path: Path
) -> None:
    """An app that classifies says so on its spans; before, every OTLP query was `unclassified` and had no release."""
    from structlog.testing import capture_logs

    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import LogReader

    tracer, keep = _kept_tracer(Resource.create({"service.name": "rag-app", "service.version": "2.3.1"}))
    with tracer.start_as_current_span("request") as root:
        root.set_attributes({"querylog.intent": "stock_analysis", "querylog.intent.confidence": 0.82})
        with tracer.start_as_current_span("llm") as span:
            span.set_attributes({"openinference.span.kind": "LLM", "input.value": "삼성전자 주가 어때?"})
    with tracer.start_as_current_span("llm") as plain:  # no intent given: none invented, confidence or not
        plain.set_attributes({"openinference.span.kind": "LLM", "input.value": "안녕"})
    with tracer.start_as_current_span("llm") as bare:  # an intent without a confidence: the app's own label
        bare.set_attributes({"openinference.span.kind": "LLM", "input.value": "뉴스", "querylog.intent": "news"})
    with tracer.start_as_current_span("llm") as wrong:
        wrong.set_attributes(
            {"openinference.span.kind": "LLM", "input.value": "틀린 확신", "querylog.intent": "x",
             "querylog.intent.confidence": 7}
        )  # fmt: skip
    with tracer.start_as_current_span("llm") as words:  # not a number: refused too, never read as 1.0
        words.set_attributes(
            {"openinference.span.kind": "LLM", "input.value": "높은 확신", "querylog.intent": "x",
             "querylog.intent.confidence": "high"}
        )  # fmt: skip
    with capture_logs() as logs:
        partial, _ = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "2", "errorMessage": "spans rejected: 2 invalid confidence"}
    # The server's line counts the queries that went in: it said 5, the two refused included.
    assert [e["queries"] for e in logs if e["event"] == "otlp_spans_ingested"] == [3]
    with ParquetSink(tmp_path / "home" / "lake") as sink:
        Projector(LogReader(tmp_path / "home" / "log"), sink).catch_up()
    with Catalog(tmp_path / "home" / "lake") as catalog:
        _, rows = catalog.query("select query_text, intent, intent_confidence, release from queries order by 1")
    assert rows == [
        ("뉴스", "news", 1.0, "2.3.1"),
        ("삼성전자 주가 어때?", "stock_analysis", 0.82, "2.3.1"),
        ("안녕", None, None, "2.3.1"),
    ]


def _retrieved(client: TestClient, tmp_path: Path, documents: list[dict[str, Any]], question: str) -> tuple[Any, Any]:
    """A request whose OpenInference retriever found `documents` (their ``document.*`` fields), then an LLM call:
    the export's partial success, and the search event it made."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("rag"):
        with tracer.start_as_current_span("retrieve") as retriever:
            retriever.set_attribute("openinference.span.kind", "RETRIEVER")
            for n, fields in enumerate(documents):
                retriever.set_attributes({f"retrieval.documents.{n}.document.{k}": v for k, v in fields.items()})
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attributes({"openinference.span.kind": "LLM", "input.value": question})
    partial, log = _export(client, tmp_path, keep.spans)
    (search,) = [e for e in _logged(log) if e.event_type == "search_completed"]
    return partial, search


def test_a_retrieval_of_more_documents_than_an_event_keeps_counts_them_all_and_its_best_score(
    client: TestClient, tmp_path: Path
) -> None:
    """25 documents: the event keeps the first 20 (MAX_SOURCES) and counts the 5 it left out, as /v1/events does."""
    documents = [{"id": f"doc-{n}", "score": 10.0 - n / 10} for n in range(25)]
    partial, search = _retrieved(client, tmp_path, documents, "문서 25개")
    assert partial == {}  # the root span is skipped, not rejected
    assert (search.result_count, search.sources_dropped, search.top_score) == (25, 5, 10.0)
    metrics = client.get("/metrics").text  # what partial_success answered, on /metrics too
    assert 'querylog_ingest_spans_left_out_total{reason="not_genai"} 1.0' in metrics
    assert 'querylog_ingest_events_total{endpoint="traces",outcome="accepted"} 4.0' in metrics
    assert search.sources is not None and [s.doc_id for s in search.sources] == [f"doc-{n}" for n in range(20)]


def test_two_traces_whose_spans_share_an_id_are_two_queries(client: TestClient, tmp_path: Path) -> None:
    """Span ids are unique only within a trace: the second of two such spans was taken for the first, and lost."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class SameSpanIds(IdGenerator):
        def generate_span_id(self) -> int:
            return 6

        def generate_trace_id(self) -> int:
            return random.getrandbits(128)

    keep = _Keep()
    provider = TracerProvider(id_generator=SameSpanIds())
    provider.add_span_processor(SimpleSpanProcessor(keep))
    for text in ("첫 번째 질문", "두 번째 질문"):
        with provider.get_tracer("t").start_as_current_span("llm") as span:
            span.set_attributes({"openinference.span.kind": "LLM", "input.value": text})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}  # nothing left out
    assert "첫 번째 질문".encode() in log and "두 번째 질문".encode() in log


def _logged(log: bytes) -> list[Any]:
    return [decode(line) for line in log.splitlines()]


def test_a_genai_span_inside_another_is_a_step_of_its_query_not_a_second_query(
    client: TestClient, tmp_path: Path
) -> None:
    """A framework's span (LangChain's, an agent's) around the SDK's made two queries of one request, the tokens
    counted twice; an agent's two calls made three."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as agent:
        agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "session.id": "s-agent"})
        with tracer.start_as_current_span("rewrite") as rewrite:
            rewrite.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                    "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 10})  # fmt: skip
            rewrite.set_attribute("gen_ai.prompt.0.content", "하이닉스 실적 어때?")
        with tracer.start_as_current_span("answer") as answer:
            answer.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                   "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 80})  # fmt: skip
            answer.set_attribute("gen_ai.prompt.0.content", "SK하이닉스 4분기 실적 요약")
            answer.set_attribute("gen_ai.completion.0.content", "사상 최대 실적입니다.")
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    assert [e.event_type for e in events].count("query_received") == 1
    (received,) = [e for e in events if e.event_type == "query_received"]
    (response,) = [e for e in events if e.event_type == "response_generated"]
    assert received.query_text == "하이닉스 실적 어때?" and received.session_id == "s-agent"  # the first step's ask
    assert (response.gen_ai_usage_input_tokens, response.gen_ai_usage_output_tokens) == (250, 90)  # once each
    assert (response.gen_ai_request_model, response.answer_text) == ("gpt-4o", "사상 최대 실적입니다.")  # the last
    assert 'querylog_ingest_spans_left_out_total{reason="genai_span_inside_another"} 2.0' in client.get("/metrics").text


def test_cached_tokens_are_summed_over_an_agents_steps_and_read_from_openinference_too(
    client: TestClient, tmp_path: Path
) -> None:
    """Input and output tokens were summed over the steps, the cache reads not: the query was priced uncached."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as agent:
        agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.prompt.0.content": "에이전트 질문"})
        for input_tokens, cached in ((100, 80), (200, 150)):
            with tracer.start_as_current_span("step") as step:
                step.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": input_tokens,
                                     "gen_ai.usage.cache_read.input_tokens": cached})  # fmt: skip
    with tracer.start_as_current_span("ChatCompletion") as llm:
        llm.set_attributes({"openinference.span.kind": "LLM", "llm.token_count.prompt": 40,
                            "llm.token_count.prompt_details.cache_read": 32, "input.value": "오픈인퍼런스 질문"})  # fmt: skip
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    texts = {e.query_id: e.query_text for e in events if e.event_type == "query_received"}
    cached = {
        texts[e.query_id]: (e.gen_ai_usage_input_tokens, e.gen_ai_usage_cache_read_input_tokens)
        for e in events
        if e.event_type == "response_generated"
    }
    assert cached == {"에이전트 질문": (300, 230), "오픈인퍼런스 질문": (40, 32)}


def test_an_openinference_message_of_text_and_image_parts_gives_its_text_not_the_raw_request(
    client: TestClient, tmp_path: Path
) -> None:
    """openinference-instrumentation-openai flattens a message of parts to `…message.contents.M.message_content.*`:
    the question was the whole request JSON (`input.value`), the image's base64 included."""
    raw = (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": '
        '{"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}'
    )
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("ChatCompletion") as llm:
        llm.set_attributes({
            "openinference.span.kind": "LLM", "input.value": raw,
            "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "주식 도우미",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "이 차트의 종목은?",
            "llm.input_messages.1.message.contents.1.message_content.type": "image",
            "llm.input_messages.1.message.contents.1.message_content.image.image.url": "data:image/png;base64,iVBO",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.0.message_content.type": "text",
            "llm.output_messages.0.message.contents.0.message_content.text": "삼성전자입니다.",
        })  # fmt: skip
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    (received,) = [e for e in events if e.event_type == "query_received"]
    (response,) = [e for e in events if e.event_type == "response_generated"]
    assert (received.query_text, response.answer_text) == ("이 차트의 종목은?", "삼성전자입니다.")


def test_a_span_repeated_in_one_export_is_read_once_and_a_late_retrieval_goes_to_the_latest_query(
    client: TestClient, tmp_path: Path
) -> None:
    """A Collector batching an SDK's retry with the original doubled the step's tokens and the search; a retrieval
    after every query of its trace went to the last query in export order, not the latest in time."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("request"):  # one trace
        with tracer.start_as_current_span("agent") as agent:
            agent.set_attribute("gen_ai.operation.name", "invoke_agent")
            with tracer.start_as_current_span("step") as step:
                step.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10,
                                     "gen_ai.usage.output_tokens": 1, "gen_ai.prompt.0.content": "첫 질문"})  # fmt: skip
        with tracer.start_as_current_span("second") as second:
            second.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "둘째 질문"})
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attributes({"gen_ai.operation.name": "retrieval", "gen_ai.request.model": "bm25"})
    by_name = {span.name: span for span in keep.spans}
    step_span, retrieval = by_name["step"], by_name["retrieve"]
    # The later query first, the step and the retrieval twice (each a retry batched with its original).
    spans = [by_name["request"], by_name["second"], by_name["agent"], step_span, step_span, retrieval, retrieval]
    partial, log = _export(client, tmp_path, spans)
    assert partial == {}
    events = _logged(log)
    tokens = {e.query_id: e.gen_ai_usage_input_tokens for e in events if e.event_type == "response_generated"}
    texts = {e.query_id: e.query_text for e in events if e.event_type == "query_received"}
    (searched,) = [e for e in events if e.event_type == "search_completed"]
    assert sorted(tokens.values(), key=str) == [10, None]  # not 20
    assert texts[searched.query_id] == "둘째 질문"
    assert 'querylog_ingest_spans_left_out_total{reason="span_repeated_in_export"} 2.0' in client.get("/metrics").text


def test_the_question_and_the_session_come_from_the_request_around_the_llm_span(
    client: TestClient, tmp_path: Path
) -> None:
    """An OpenInference RAG chain: the LLM span's input is the prompt template around the question, which is the
    chain's input; the session is on the request's root span; the query lasts as long as the root."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("POST /ask") as root:
        root.set_attributes({"session.id": "s-root", "user.id": "u-root"})
        with tracer.start_as_current_span("chain") as chain:
            chain.set_attributes({"openinference.span.kind": "CHAIN", "input.value": "네이버 목표주가는?"})
            with tracer.start_as_current_span("llm") as llm:
                llm.set_attributes({"openinference.span.kind": "LLM",
                                    "input.value": "Context: …\nQuestion: 네이버 목표주가는?\nAnswer:"})  # fmt: skip
    _, log = _export(client, tmp_path, keep.spans)
    events = _logged(log)
    (received,) = [e for e in events if e.event_type == "query_received"]
    (completed,) = [e for e in events if e.event_type == "query_completed"]
    assert received.query_text == "네이버 목표주가는?"
    assert (received.session_id, completed.session_id) == ("s-root", "s-root") and received.user_id is not None
    root_span = next(s for s in keep.spans if s.name == "POST /ask")
    assert root_span.start_time is not None and root_span.end_time is not None
    assert completed.latency_ms == pytest.approx((root_span.end_time - root_span.start_time) / 1e6)


def test_prompts_answers_and_exceptions_recorded_as_span_events_are_read(client: TestClient, tmp_path: Path) -> None:
    """The GenAI conventions 1.28-1.36 record messages as span events; `record_exception` records the error's type
    as one: the query read "[input not captured …]" and failed with "Error"."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as ok:
        ok.set_attribute("gen_ai.operation.name", "chat")
        ok.add_event("gen_ai.user.message", {"content": "테슬라 인도량은?"})
        ok.add_event("gen_ai.choice", {"message": json.dumps({"role": "assistant", "content": "48만 대입니다."})})
    broken = tracer.start_span("chat")
    broken.set_attribute("gen_ai.operation.name", "chat")
    broken.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "애플 실적은?"})
    broken.record_exception(TimeoutError("the model did not answer in 30 s"))
    broken.set_status(Status(StatusCode.ERROR))
    broken.end()
    _, log = _export(client, tmp_path, keep.spans)
    events = _logged(log)
    texts = {e.query_text for e in events if e.event_type == "query_received"}
    assert texts == {"테슬라 인도량은?", "애플 실적은?"}
    (response,) = [e for e in events if e.event_type == "response_generated"]
    assert response.answer_text == "48만 대입니다."
    (failed,) = [e for e in events if e.event_type == "query_failed"]
    assert (failed.error_type, failed.error_message) == ("TimeoutError", "the model did not answer in 30 s")


def test_an_openinference_kind_of_a_clients_own_is_counted_as_other_not_as_a_series_of_its_own(
    client: TestClient, tmp_path: Path
) -> None:
    tracer, keep = _kept_tracer()
    for kind in ("TOOL", "made-up-1", "made-up-2", "x" * 10_000):
        with tracer.start_as_current_span("step") as span:
            span.set_attribute("openinference.span.kind", kind)
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {} and log == b""
    metrics = client.get("/metrics").text
    assert 'querylog_ingest_spans_left_out_total{reason="openinference_tool"} 1.0' in metrics
    assert 'querylog_ingest_spans_left_out_total{reason="openinference_other"} 3.0' in metrics
    assert "made-up" not in metrics and "xxxx" not in metrics


def test_an_openllmetry_embedding_span_is_not_a_query(client: TestClient, tmp_path: Path) -> None:
    """An indexing job made one "query" per embedded document."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("openai.embeddings") as span:
        span.set_attributes(
            {"gen_ai.system": "openai", "llm.request.type": "embedding", "gen_ai.usage.prompt_tokens": 8}
        )
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {} and log == b""
    assert 'querylog_ingest_spans_left_out_total{reason="gen_ai_embeddings"} 1.0' in client.get("/metrics").text


def test_ids_the_events_endpoint_refuses_are_refused_here_too(client: TestClient, tmp_path: Path) -> None:
    tracer, keep = _kept_tracer()
    for session in ("s" * 1000, "line\nbreak", "s-fine"):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "session.id": session})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "2", "errorMessage": "spans rejected: 2 invalid session_id"}
    assert [e.session_id for e in _logged(log) if e.event_type == "query_received"] == ["s-fine"]


def test_an_export_is_bounded_by_its_spans_and_takes_the_protobuf_media_type_without_x(tmp_path: Path) -> None:
    """A Collector batches by spans (8,192 by default): 3,500 spans, 10,500 events, were refused whole with a 413,
    under a limit of 10,000 events."""
    settings = Settings(home=tmp_path / "home", stdout_events=False, ingest_max_events=4_000)
    tracer, keep = _kept_tracer()
    for _ in range(3_500):
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
    with TestClient(create_app(settings)) as c:
        resp = c.post("/v1/traces", content=_protobuf(keep.spans), headers={"content-type": "application/protobuf"})
        # Answered in the request's own media type, as OTLP/HTTP wants (it was always application/x-protobuf).
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/protobuf"
        assert 'querylog_ingest_events_total{endpoint="traces",outcome="accepted"} 10500.0' in c.get("/metrics").text
        more = keep.spans * 2
        resp = c.post("/v1/traces", content=_protobuf(more), headers={"content-type": "application/x-protobuf"})
        assert resp.status_code == 413 and "7,000 spans in one export; at most 4,000" in resp.text


def _hand_built(*spans: tuple[bytes, bytes, bytes, dict[str, Any]]) -> bytes:
    """An export of (trace id, span id, parent id, attributes) spans, as no SDK would make them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for trace_id, span_id, parent_id, attrs in spans:
        span = scope.spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent_id, name="chat")
        span.start_time_unix_nano, span.end_time_unix_nano = _T0, _T0 + 10**9
        span.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items())
    return bytes(request.SerializeToString())


_LLM = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.prompt.0.content": "질문"}


def test_spans_whose_parents_loop_or_nest_deep_are_read_or_refused_alone_never_the_export(
    client: TestClient, tmp_path: Path
) -> None:
    """A span its own parent, two spans each other's, or a GenAI span 70 deep ended the export in a 500 (a KeyError)
    and lost every span in it; a document's metadata nested 100,000 deep, in a RecursionError."""
    good = (b"\x01" * 16, b"\x01" * 8, b"", {**_LLM, "gen_ai.prompt.0.content": "정상 질문"})
    own_parent = (b"\x02" * 16, b"\x02" * 8, b"\x02" * 8, _LLM)
    each_other = [(b"\x03" * 16, b"\x03" * 8, b"\x04" * 8, _LLM), (b"\x03" * 16, b"\x04" * 8, b"\x03" * 8, _LLM)]
    deep = [
        (b"\x05" * 16, i.to_bytes(8, "big"), (i - 1).to_bytes(8, "big") if i > 1 else b"", _LLM) for i in range(1, 71)
    ]
    retrieval = (
        b"\x01" * 16,
        b"\x06" * 8,
        b"",
        {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "doc-1",
         "retrieval.documents.0.document.metadata": "[" * 100_000},
    )  # fmt: skip
    body = _hand_built(good, own_parent, *each_other, *deep, retrieval)
    resp = client.post("/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
    assert resp.status_code == 200
    log = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))
    received = [e for e in _logged(log) if e.event_type == "query_received"]
    assert sorted(e.query_text for e in received) == ["정상 질문", "질문"]  # the deep chain: one query, 69 steps
    (search,) = [e for e in _logged(log) if e.event_type == "search_completed"]
    assert search.result_count == 1 and search.sources[0].title is None  # unreadable metadata: no title
    metrics = client.get("/metrics").text
    assert 'querylog_ingest_spans_left_out_total{reason="parent spans that loop back"} 3.0' in metrics
    assert 'querylog_ingest_spans_left_out_total{reason="genai_span_inside_another"} 69.0' in metrics


def test_a_span_the_mapping_fails_on_is_refused_counted_and_logged_once(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    import querylog.service.otlp_mapping as mapping

    real = mapping._query_events

    def fails_on_one(query: Any, **kw: Any) -> Any:
        if query.span.trace_id == b"\x02" * 16:
            raise ZeroDivisionError("a shape no rule foresaw")
        return real(query, **kw)

    monkeypatch.setattr(mapping, "_query_events", fails_on_one)
    step = (b"\x02" * 16, b"\x05" * 8, b"\x02" * 8, _LLM)  # a step of the query that fails: refused with it
    body = _hand_built((b"\x01" * 16, b"\x01" * 8, b"", _LLM), (b"\x02" * 16, b"\x02" * 8, b"", _LLM), step)
    with capture_logs() as logs:
        for _ in range(2):
            resp = client.post("/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
            assert resp.status_code == 200
    partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (2, "spans rejected: 2 span querylog could not read")
    assert [e["event"] for e in logs if e["event"] == "otlp_span_unreadable"] == ["otlp_span_unreadable"]
    assert "genai_span_inside_another" not in client.get("/metrics").text  # not also counted as a step read


def test_prompts_and_answers_written_as_json_lists_are_read_as_their_text(client: TestClient, tmp_path: Path) -> None:
    """OpenLLMetry writes a message with an image as a JSON list of parts; conventions 1.26 put the whole message
    list in `gen_ai.prompt`/`gen_ai.completion` events; operation-details events hold lists of messages. Each was
    stored as raw JSON (escaped: Korean search missed it), or as "input not captured"."""
    parts = [{"type": "text", "text": "삼성전자 주가 전망 알려줘"}, {"type": "image_url", "image_url": {"url": "x"}}]
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as a:
        a.set_attributes({**_LLM, "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps(parts)})
    with tracer.start_as_current_span("chat") as b:
        b.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                          "gen_ai.input.messages": json.dumps([{"role": "user", "content": parts[:1]}])})  # fmt: skip
    with tracer.start_as_current_span("chat") as c:
        c.set_attribute("gen_ai.operation.name", "chat")
        c.add_event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(
            [{"role": "system", "content": "stocks"}, {"role": "user", "content": "이벤트 질문 A"}])})  # fmt: skip
        c.add_event("gen_ai.content.completion", {"gen_ai.completion": json.dumps(
            [{"role": "assistant", "content": "이벤트 답변 A"}])})  # fmt: skip
    with tracer.start_as_current_span("chat") as d:
        d.set_attribute("gen_ai.operation.name", "chat")
        d.add_event("gen_ai.client.inference.operation.details", {
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "질문 D"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "stop",
                                                   "parts": [{"type": "text", "content": "답변 D"}]}]),
        })  # fmt: skip
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    assert sorted(e.query_text for e in events if e.event_type == "query_received") == sorted(
        ["삼성전자 주가 전망 알려줘", "삼성전자 주가 전망 알려줘", "이벤트 질문 A", "질문 D"]
    )
    answers = {(e.answer_text, e.finish_reason) for e in events if e.event_type == "response_generated"}
    assert {("이벤트 답변 A", None), ("답변 D", "stop")} <= answers


def test_a_retrieval_of_documents_without_ids_counts_them_and_their_best_score(
    client: TestClient, tmp_path: Path
) -> None:
    """LangChain's documents often carry no id: the retrieval was recorded as finding 0 documents."""
    documents = [{"content": f"문서 {n}", "score": score} for n, score in enumerate((0.4, 0.9, 0.7))]
    partial, search = _retrieved(client, tmp_path, documents, "문서 질문")
    assert partial == {}
    assert (search.result_count, search.top_score, search.sources) == (3, 0.9, None)


@pytest.mark.parametrize(
    ("root_start", "latency_ms"),
    # unset: to the request's end; 1990 and 2000: the LLM span's own
    [(0, 2000.0), (631_152_000_000_000_000, 1000.0), (946_684_800_000_000_000, 1000.0)],
)
def test_a_request_span_with_a_bad_start_leaves_the_query_its_own_bounds(
    client: TestClient, tmp_path: Path, root_start: int, latency_ms: float
) -> None:
    """The query lasts as long as the request around it, but a request span without a start time (or one of 1990)
    made the query's latency decades long: the query was refused as "invalid latency_ms" and lost (1990), or kept
    as a query of 2000 that lasted 27 years."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(
        _hand_built(
            (b"\x07" * 16, b"\x01" * 8, b"", {"http.route": "/ask"}),
            (b"\x07" * 16, b"\x02" * 8, b"\x01" * 8, {**_LLM, "gen_ai.prompt.0.content": "부모가 이상한 질문"}),
        )
    )
    root = request.resource_spans[0].scope_spans[0].spans[0]
    root.start_time_unix_nano, root.end_time_unix_nano = root_start, _T0 + 2 * 10**9
    resp = client.post(
        "/v1/traces", content=request.SerializeToString(), headers={"content-type": "application/x-protobuf"}
    )
    assert resp.status_code == 200
    assert ExportTraceServiceResponse.FromString(resp.content).partial_success.rejected_spans == 0
    log = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))
    (completed,) = [e for e in _logged(log) if e.event_type == "query_completed"]
    assert completed.latency_ms == pytest.approx(latency_ms)
    assert "부모가 이상한 질문".encode() in log and b'"ts":"1970' not in log and b'"ts":"1990' not in log


def test_a_session_or_user_id_sent_as_a_number_is_kept(client: TestClient, tmp_path: Path) -> None:
    """`session.id = 12345` (an app's database key) was dropped: the query had no session and no user."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as span:
        span.set_attributes({**_LLM, "session.id": 12345, "user.id": 42})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    (received,) = [e for e in _logged(log) if e.event_type == "query_received"]
    assert (received.session_id, received.user_id) == ("12345", "42")


def test_a_name_sent_as_a_number_is_its_digits_and_true_or_false_is_not_given(
    client: TestClient, tmp_path: Path
) -> None:
    """`querylog.intent = 7` was read as no intent, `gen_ai.request.model = 7` as no model and `session.id = 1.5` as no
    session, silently, while the same fields sent as bytes were kept or refused."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as span:
        span.set_attributes({**_LLM, "querylog.intent": 7, "gen_ai.request.model": 4.0, "session.id": 1.5})
        span.set_attributes({"user.id": True, "gen_ai.response.model": False})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    (received,) = [e for e in events if e.event_type == "query_received"]
    (classified,) = [e for e in events if e.event_type == "intent_classified"]
    (generated,) = [e for e in events if e.event_type == "response_generated"]
    assert (classified.intent, generated.gen_ai_request_model, received.session_id) == ("7", "4", "1.5")
    assert received.user_id is None and generated.gen_ai_response_model is None  # no text: not given


def test_a_question_of_control_characters_only_is_told_not_captured(client: TestClient, tmp_path: Path) -> None:
    """/v1/chat and /v1/events refuse a question that shows nothing; a span's was stored as it came."""
    from querylog.service.otlp_mapping import NOT_CAPTURED

    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as span:
        span.set_attributes({**_LLM, "gen_ai.prompt.0.content": "\x00\x01 \u200e"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    (received,) = [e for e in _logged(log) if e.event_type == "query_received"]
    assert received.query_text == NOT_CAPTURED


def test_a_chain_input_that_shows_nothing_does_not_hide_the_llm_spans_question(
    client: TestClient, tmp_path: Path
) -> None:
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chain") as chain:
        chain.set_attributes({"openinference.span.kind": "CHAIN", "input.value": "\u200b"})
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes({**_LLM, "gen_ai.prompt.0.content": "삼성전자 주가 알려줘"})
    _, log = _export(client, tmp_path, keep.spans)
    (received,) = [e for e in _logged(log) if e.event_type == "query_received"]
    assert received.query_text == "삼성전자 주가 알려줘"


def test_a_request_that_failed_after_its_answer_is_a_failed_query(client: TestClient, tmp_path: Path) -> None:
    """The request span ERROR (a 500 after the LLM answered) with its LLM span OK was recorded as completed."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("POST /ask") as request:
        with tracer.start_as_current_span("chat") as llm:
            llm.set_attributes({**_LLM, "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 5})
        request.record_exception(ValueError("template rendering failed"))
        request.set_status(Status(StatusCode.ERROR, "template rendering failed"))
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    assert [e.event_type for e in events] == ["query_received", "response_generated", "query_failed"]
    failed = events[-1]
    assert (failed.stage, failed.error_type, failed.error_message) == (
        "request",
        "ValueError",
        "template rendering failed",
    )
    assert events[1].gen_ai_usage_input_tokens == 30  # the answer was made, and paid for


def test_with_answers_not_captured_a_spans_answer_keeps_only_its_length(tmp_path: Path) -> None:
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "질문", "output.value": "SECRET ANSWER"})
    settings = Settings(home=tmp_path / "home", stdout_events=False, capture_answers=False)
    with TestClient(create_app(settings, environ={})) as c:
        _, log = _export(c, tmp_path, keep.spans)
    assert b"SECRET" not in log and b'"answer_chars":13' in log


@pytest.mark.parametrize("count", ["²", "①", -3, 2.5, math.inf, "many", True])
def test_a_token_count_that_is_no_count_refuses_its_span_naming_the_field(
    client: TestClient, tmp_path: Path, count: Any
) -> None:
    """A token count of -3, 2.5, inf or "many" was left out without a word (the tokens then went unpriced), and
    "²" too, while 2**40 refused the span: each refuses it now, named in `partial_success`, as a confidence of 7
    does. "²" and "①" pass str.isdigit() and fail int(): they once refused it as "span querylog could not read"."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as llm:
        llm.set_attributes({**_LLM, "gen_ai.usage.input_tokens": count, "gen_ai.usage.output_tokens": 5})
    with tracer.start_as_current_span("chat") as fine:
        fine.set_attributes({**_LLM, "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": 5.0})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "1", "errorMessage": "spans rejected: 1 invalid gen_ai_usage_input_tokens"}
    (response,) = [e for e in _logged(log) if e.event_type == "response_generated"]
    assert (response.gen_ai_usage_input_tokens, response.gen_ai_usage_output_tokens) == (12, 5)


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _langfuse_client(tracer_provider: TracerProvider) -> Any:
    """The Langfuse SDK on `tracer_provider`, its own export to Langfuse discarded (no server is reached)."""
    from langfuse import Langfuse

    return Langfuse(
        public_key="pk-lf-test",
        secret_key="sk-lf-test",  # a placeholder: nothing is sent
        host="http://127.0.0.1:9",
        tracer_provider=tracer_provider,
        span_exporter=_Discard(),
    )


def _exported_queries(
    client: TestClient, tmp_path: Path, spans: Sequence[ReadableSpan], *, left_out: int = 0
) -> list[dict[str, Any]]:
    """`spans` posted, `left_out` of them refused; then the `queries` view of a lake built from the log, oldest
    first."""
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Projector
    from querylog.logging.segments import LogReader

    partial, _ = _export(client, tmp_path, spans)
    assert int(partial.get("rejectedSpans", 0)) == left_out, partial
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "home" / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as catalog:
        columns, rows = catalog.query("select * from queries order by started_at")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_an_openinference_request_model_groups_with_openais_and_the_dated_name_is_the_response_model(
    client: TestClient, tmp_path: Path
) -> None:
    """OpenInference's OpenAI instrumentation writes the answering model (``gpt-4o-mini-2024-07-18``) as
    ``llm.model_name`` and the requested one in ``llm.invocation_parameters``: the query's model was the dated name,
    so cost by model split one model in two beside an openai-v2 service."""
    tracer, keep = _kept_tracer()
    for question, params in (
        ("모델 질문", '{"model": "gpt-4o-mini", "temperature": 0}'),
        ("파라미터 없는 질문", None),
        ("깨진 파라미터", "{not json"),
    ):
        with tracer.start_as_current_span("llm") as span:
            attributes = {"openinference.span.kind": "LLM", "input.value": question,
                          "llm.model_name": "gpt-4o-mini-2024-07-18"}  # fmt: skip
            if params is not None:
                attributes["llm.invocation_parameters"] = params
            span.set_attributes(attributes)
    rows = _exported_queries(client, tmp_path, keep.spans)
    assert [(r["query_text"], r["model"], r["response_model"]) for r in rows] == [
        ("모델 질문", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("파라미터 없는 질문", "gpt-4o-mini-2024-07-18", None),  # the only name there is
        ("깨진 파라미터", "gpt-4o-mini-2024-07-18", None),
    ]


def test_the_langfuse_sdks_generations_are_queries_with_their_usage_cost_and_first_token(
    client: TestClient, tmp_path: Path
) -> None:
    """The Langfuse SDK (v3+) writes a generation as ``langfuse.observation.*`` attributes, no GenAI ones: every span
    was skipped as not GenAI, although docs/integrating.md names the SDK among those that need no code."""
    from datetime import UTC, datetime

    from langfuse import propagate_attributes

    provider = TracerProvider()
    keep = _Keep()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    langfuse = _langfuse_client(provider)
    with langfuse.start_as_current_observation(as_type="span", name="chat-request"):
        before = datetime.now(UTC)
        with (
            propagate_attributes(user_id="lf-user", session_id="lf-session"),
            langfuse.start_as_current_observation(
                as_type="generation",
                name="llm",
                model="gpt-4o-mini",
                input=[{"role": "user", "content": "랭퓨즈 질문"}],
            ) as generation,
        ):
            first_token = datetime.now(UTC)  # the call started after `before`, and ends after its first token
            generation.update(
                output={"role": "assistant", "content": "랭퓨즈 답변"},
                usage_details={"input": 12, "output": 5},
                cost_details={"input": 0.001, "output": 0.002},
                completion_start_time=first_token,
                metadata={"finish_reason": "length"},  # where its OpenAI integration puts a streamed answer's
            )
        with langfuse.start_as_current_observation(as_type="generation", name="bad", model="gpt-4o-mini") as failed:
            failed.update(input="실패한 질문", level="ERROR", status_message="quota exceeded")
        with langfuse.start_as_current_observation(as_type="embedding", name="embed", model="text-embedding-3-small"):
            pass
    langfuse.shutdown()
    rows = _exported_queries(client, tmp_path, keep.spans)
    assert [r["query_text"] for r in rows] == ["랭퓨즈 질문", "실패한 질문"]  # the embedding is no query
    answered, failed_row = rows
    assert answered["answer_text"] == "랭퓨즈 답변" and answered["status"] == "completed"
    assert (answered["session_id"], answered["model"]) == ("lf-session", "gpt-4o-mini")
    assert (answered["input_tokens"], answered["output_tokens"], answered["finish_reason"]) == (12, 5, "length")
    assert answered["cost_usd"] == pytest.approx(0.003) and answered["cost_source"] == "recorded"
    assert 0 <= answered["ttft_ms"] <= (first_token - before).total_seconds() * 1000
    assert failed_row["status"] == "failed" and failed_row["error_message"] == "quota exceeded"


def test_a_cost_and_a_first_token_time_on_a_genai_span_are_recorded(client: TestClient, tmp_path: Path) -> None:
    """`gen_ai.usage.cost` (OpenLIT) and `gen_ai.server.time_to_first_token` (seconds), which docs/schema.md names
    as the fields' sources, were not read: the cost came from the price table, the first token's time was lost."""
    tracer, keep = _kept_tracer()
    now = time.time_ns()
    span = tracer.start_span("llm", start_time=now - 10**9)  # a 500 ms call, its first token at 125 ms
    span.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.prompt.0.content": "비용 질문",
            "gen_ai.usage.cost": 0.5,
            "gen_ai.server.time_to_first_token": 0.125,
        }
    )
    span.end(end_time=now - 500_000_000)
    (row,) = _exported_queries(client, tmp_path, keep.spans)
    assert (row["cost_usd"], row["cost_source"], row["ttft_ms"]) == (0.5, "recorded", 125.0)


def test_a_document_score_written_as_text_is_the_top_score_as_it_is_the_sources(
    client: TestClient, tmp_path: Path
) -> None:
    """``"score": "0.5"`` gave the source a score of 0.5 and the search no top score (walk)."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attributes(
                {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": '[{"id": "d1", "score": "0.5"}]'}
            )
        with tracer.start_as_current_span("answer") as answer:
            answer.set_attributes(_LLM)
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    (searched,) = [e for e in _logged(log) if e.event_type == "search_completed"]
    assert searched.top_score == 0.5 and [s.score for s in searched.sources or ()] == [0.5]


@pytest.mark.parametrize("scores", [(math.nan, 0.9), (0.9, math.nan)])
def test_a_document_score_that_is_no_number_is_left_out_of_the_top_score_whatever_its_place(
    client: TestClient, tmp_path: Path, scores: tuple[float, float]
) -> None:
    """Documents without ids (LangChain's) give only the top score: max() of [nan, 0.9] is nan, of [0.9, nan] 0.9,
    so the query was refused or kept by the order of its documents."""
    from opentelemetry import trace

    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("rag") as root, trace.use_span(root, end_on_exit=False):
        with tracer.start_as_current_span("retrieve") as retriever:
            retriever.set_attributes({
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.score": scores[0],
                "retrieval.documents.1.document.score": scores[1],
            })  # fmt: skip
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attributes({"openinference.span.kind": "LLM", "input.value": "문서 점수"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    (searched,) = [e for e in _logged(log) if e.event_type == "search_completed"]
    assert searched.top_score == 0.9


def _export_with(client: TestClient, tmp_path: Path, spans: Sequence[ReadableSpan], key: str, value: Any) -> Any:
    """`spans` posted as OTLP/JSON with attribute `key`'s AnyValue replaced by `value` (what the SDK cannot set)."""
    export = json.loads(_otlp_json(spans))
    for resource in export["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for attribute in span.get("attributes", []):
                    if attribute["key"] == key:
                        attribute["value"] = value
    resp = client.post("/v1/traces", content=json.dumps(export), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    return resp.json().get("partialSuccess", {}), b"".join(
        p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl")
    )


def test_a_bytes_token_count_refuses_its_span_not_read_as_its_hex_digits(client: TestClient, tmp_path: Path) -> None:
    """``bytesValue`` AAEC (bytes 00 01 02) was stored as 102 input tokens, and priced: its hex digits are decimal."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as llm:
        llm.set_attributes({**_LLM, "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 5})
    partial, log = _export_with(client, tmp_path, keep.spans, "gen_ai.usage.input_tokens", {"bytesValue": "AAEC"})
    assert partial == {"rejectedSpans": "1", "errorMessage": "spans rejected: 1 invalid gen_ai_usage_input_tokens"}
    assert b"response_generated" not in log


@pytest.mark.parametrize(
    "doc_id", [{}, {"boolValue": True}, {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}]
)
def test_a_document_id_that_is_no_text_refuses_its_span_not_stored_as_pythons_repr(
    client: TestClient, tmp_path: Path, doc_id: Any
) -> None:
    """An empty AnyValue, true and ["a", "b"] were stored as the ids "None", "True" and "['a', 'b']"."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("rag"):
        with tracer.start_as_current_span("retrieve") as retriever:
            retriever.set_attributes(
                {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "placeholder"}
            )
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attributes({"openinference.span.kind": "LLM", "input.value": "문서 id"})
    partial, log = _export_with(client, tmp_path, keep.spans, "retrieval.documents.0.document.id", doc_id)
    assert partial == {"rejectedSpans": "1", "errorMessage": "spans rejected: 1 invalid sources.doc_id"}
    assert "문서 id".encode() in log and b"search_completed" not in log  # the query stays, without that search


def test_a_document_score_of_true_refuses_its_span_and_one_of_digits_is_read(
    client: TestClient, tmp_path: Path
) -> None:
    tracer, keep = _kept_tracer()
    for score in (True, "0.75"):
        with tracer.start_as_current_span("rag"):
            with tracer.start_as_current_span("retrieve") as retriever:
                retriever.set_attributes(
                    {
                        "openinference.span.kind": "RETRIEVER",
                        "retrieval.documents.0.document.id": f"doc-{score}",
                        "retrieval.documents.0.document.score": score,
                    }
                )
            with tracer.start_as_current_span("llm") as llm:
                llm.set_attributes({"openinference.span.kind": "LLM", "input.value": f"점수 {score}"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {"rejectedSpans": "1", "errorMessage": "spans rejected: 1 invalid sources.score"}
    (searched,) = [e for e in _logged(log) if e.event_type == "search_completed"]
    assert [(s.doc_id, s.score) for s in searched.sources] == [("doc-0.75", 0.75)]


def test_a_lone_surrogate_in_a_message_attribute_keeps_the_question_as_the_event_stores_it(
    client: TestClient, tmp_path: Path
) -> None:
    """`gen_ai.input.messages` holding ``\\ud800`` (JSON text inside the attribute) lost the whole question and the
    answer without a word: the query read "[input not captured by the instrumentation]"."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as llm:
        llm.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "gen_ai.input.messages": '[{"role": "user", "content": "SURR \\ud800 tail"}]',
                "gen_ai.output.messages": '[{"role": "assistant", "content": "답 \\udfff 끝"}]',
            }
        )
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    (received,) = [e for e in events if e.event_type == "query_received"]
    (response,) = [e for e in events if e.event_type == "response_generated"]
    assert (received.query_text, response.answer_text) == ("SURR \ufffd tail", "답 \ufffd 끝")


def test_a_service_version_given_as_a_whole_number_is_the_release(client: TestClient, tmp_path: Path) -> None:
    """`Resource.create({"service.version": 42})` gave no release at all, without a word; the tracker takes 42."""
    tracer, keep = _kept_tracer(Resource.create({"service.name": "rag-app", "service.version": 42}))
    with tracer.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "버전 42"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {} and {e.release for e in _logged(log)} == {"42"}


def test_an_id_or_a_name_sent_as_bytes_is_kept_as_its_hex_digits(client: TestClient, tmp_path: Path) -> None:
    """A first fix for bytes counts made every bytes attribute a text that the log could not write: a session id or
    a model sent as bytes lost the query's events, while the export was answered 200 and counted accepted."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as llm:
        llm.set_attributes({**_LLM, "session.id": "placeholder", "gen_ai.usage.input_tokens": 3})
    partial, log = _export_with(client, tmp_path, keep.spans, "session.id", {"bytesValue": "AAEC"})
    assert partial == {}
    events = _logged(log)
    assert {e.event_type for e in events} >= {"query_received", "response_generated"}
    assert {e.session_id for e in events} == {"000102"}


def test_a_question_sent_as_bytes_is_its_text_and_redacted_as_any(client: TestClient, tmp_path: Path) -> None:
    """Bytes were kept as their hex digits wherever text was read: a question sent as bytes was stored as hex that
    no redaction reads, its phone number in it for anyone to decode."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "placeholder"})
    question = base64.b64encode("제 번호는 010-1234-5678 입니다".encode()).decode()
    partial, log = _export_with(client, tmp_path, keep.spans, "input.value", {"bytesValue": question})
    assert partial == {}
    (received,) = [e for e in _logged(log) if e.event_type == "query_received"]
    assert received.query_text == "제 번호는 [PHONE] 입니다"


def test_a_query_refused_for_a_steps_value_counts_every_span_it_was_read_from(
    client: TestClient, tmp_path: Path
) -> None:
    """An agent span whose step said "lots" of tokens lost three spans (the agent's and its two steps) and
    partial_success said 1; a retrieval dated past the clock refused its query too, not the retrieval alone."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as agent:
        agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.prompt.0.content": "에이전트 질문"})
        for tokens in (3, "lots"):
            with tracer.start_as_current_span("chat") as step:
                step.set_attributes({**_LLM, "gen_ai.usage.input_tokens": tokens})
    with tracer.start_as_current_span("rag"):
        late = tracer.start_span("retrieve", start_time=time.time_ns() + 86_400 * 10**9)
        late.set_attributes({"gen_ai.operation.name": "retrieval", "retrieval.documents.0.document.id": "d-1"})
        late.end(end_time=time.time_ns() + 86_401 * 10**9)
        with tracer.start_as_current_span("chat") as llm:
            llm.set_attributes({**_LLM, "gen_ai.prompt.0.content": "검색이 미래인 질문"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {
        "rejectedSpans": "4",
        "errorMessage": "spans rejected: 3 invalid gen_ai_usage_input_tokens, "
        "1 ts more than 2 minutes ahead of this server's clock",
    }
    assert (
        "에이전트 질문".encode() not in log and "검색이 미래인 질문".encode() in log and b"search_completed" not in log
    )
    metrics = client.get("/metrics").text
    assert 'reason="genai_span_inside_another"' not in metrics  # the steps were refused, not read as steps
    assert 'querylog_ingest_spans_left_out_total{reason="invalid gen_ai_usage_input_tokens"} 3.0' in metrics


def test_a_failed_call_that_reports_its_usage_keeps_its_tokens_and_cost(client: TestClient, tmp_path: Path) -> None:
    """A content-filtered call is billed: its tokens and cost were dropped with its response, so the cost counter and
    the lake said less than the provider's bill."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as llm:
        llm.set_attributes({**_LLM, "error.type": "ContentFilterError", "gen_ai.usage.input_tokens": 5000,
                            "gen_ai.usage.output_tokens": 800, "gen_ai.usage.cost": 0.5})  # fmt: skip
        llm.set_status(Status(StatusCode.ERROR, "content filtered"))
    with tracer.start_as_current_span("chat") as timeout:  # no usage: nothing was billed, no response
        timeout.set_attributes({**_LLM, "error.type": "TimeoutError"})
        timeout.set_status(Status(StatusCode.ERROR, "timed out"))
    for tokens in (0, -1, "many"):  # nothing billed, or a count the event refuses: the failure alone, as before
        with tracer.start_as_current_span("chat") as odd:
            odd.set_attributes({**_LLM, "error.type": "ContentFilterError", "gen_ai.usage.input_tokens": tokens})
            odd.set_status(Status(StatusCode.ERROR, f"filtered {tokens}"))
    rows = _exported_queries(client, tmp_path, keep.spans)
    assert [(r["status"], r["input_tokens"], r["output_tokens"], r["cost_usd"]) for r in rows] == [
        ("failed", 5000, 800, 0.5),
        *[("failed", None, None, None)] * 4,
    ]
    assert [r["error_message"] for r in rows[2:]] == ["filtered 0", "filtered -1", "filtered many"]


def test_questions_and_answers_wrapped_in_json_objects_are_read_as_their_text(
    client: TestClient, tmp_path: Path
) -> None:
    """Langfuse's input when tools are passed ({"tools", "messages"}), an OpenInference chain's JSON inputs
    ({"question", "chat_history"}) and an OpenAI response as an LLM span's output were stored as raw JSON."""
    tracer, keep = _kept_tracer()
    messages = [{"role": "system", "content": "주식 도우미"}, {"role": "user", "content": "삼성 주가 알려줘"}]
    with tracer.start_as_current_span("generation") as lf:
        lf.set_attributes({"langfuse.observation.type": "generation", "langfuse.observation.model.name": "m",
                           "langfuse.observation.input": json.dumps({"tools": [{"type": "function"}],
                                                                     "messages": messages}, ensure_ascii=False)})  # fmt: skip
    with tracer.start_as_current_span("chain") as chain:
        chain.set_attributes({"openinference.span.kind": "CHAIN", "input.mime_type": "application/json",
                              "input.value": json.dumps({"question": "네이버 실적은?", "chat_history": []},
                                                        ensure_ascii=False)})  # fmt: skip
        with tracer.start_as_current_span("llm") as llm:
            response = {"choices": [{"message": {"role": "assistant", "content": "개선됐습니다"}}]}
            llm.set_attributes({"openinference.span.kind": "LLM", "input.value": "템플릿: 네이버 실적은?",
                                "output.mime_type": "application/json",
                                "output.value": json.dumps(response, ensure_ascii=False)})  # fmt: skip
    with tracer.start_as_current_span("chain") as other:
        other.set_attributes({"openinference.span.kind": "CHAIN", "input.mime_type": "application/json",
                              "input.value": json.dumps({"docs": [1, 2]})})  # fmt: skip
        with tracer.start_as_current_span("llm") as own:
            own.set_attributes({"openinference.span.kind": "LLM", "input.value": "LLM 스팬의 질문"})
    rows = _exported_queries(client, tmp_path, keep.spans)
    assert [(r["query_text"], r["answer_text"]) for r in rows] == [
        ("삼성 주가 알려줘", None),
        ("네이버 실적은?", "개선됐습니다"),
        ("LLM 스팬의 질문", None),  # a chain's JSON without a question is passed over, not taken for one
    ]


def test_times_in_milliseconds_are_refused_not_filed_under_1970(client: TestClient, tmp_path: Path) -> None:
    tracer, keep = _kept_tracer()
    ms = time.time_ns() // 10**6
    wrong = tracer.start_span("chat", start_time=ms - 1500)
    wrong.set_attributes({**_LLM, "gen_ai.prompt.0.content": "밀리초 질문"})
    wrong.end(end_time=ms)
    with tracer.start_as_current_span("chat") as right:
        right.set_attributes({**_LLM, "gen_ai.prompt.0.content": "나노초 질문"})
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {
        "rejectedSpans": "1",
        "errorMessage": "spans rejected: 1 span starting before 2000: OTLP times are Unix nanoseconds",
    }
    assert "나노초 질문".encode() in log and "밀리초 질문".encode() not in log and b'"ts":"1970' not in log


def test_a_lone_surrogate_in_otlp_json_or_a_prompt_sent_as_bytes_is_read_not_the_export_refused(
    client: TestClient, tmp_path: Path
) -> None:
    """OTel JS cuts a value by UTF-16 code unit: an emoji at the limit leaves a lone surrogate, and the whole export
    was refused (400), every other span with it. A prompt sent as bytes was told "not captured"."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as cut:
        cut.set_attributes({**_LLM, "gen_ai.prompt.0.content": "placeholder"})
    export = _otlp_json(keep.spans).replace(b'"placeholder"', b'"\\ud83d cut"')
    assert b'"\\ud83d cut"' in export
    resp = client.post("/v1/traces", content=export, headers={"content-type": "application/json"})
    assert resp.status_code == 200 and "partialSuccess" not in resp.json()
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("chat") as raw:
        raw.set_attributes({**_LLM, "gen_ai.prompt.0.content": "placeholder"})
    question = base64.b64encode("바이트 질문".encode()).decode()
    partial, log = _export_with(client, tmp_path, keep.spans, "gen_ai.prompt.0.content", {"bytesValue": question})
    assert partial == {}
    assert [e.query_text for e in _logged(log) if e.event_type == "query_received"] == ["\ufffd cut", "바이트 질문"]


@pytest.mark.parametrize(
    ("retrieval", "found"),
    [
        ({"gen_ai.operation.name": "retrieval", "gen_ai.request.model": "bm25"}, None),  # lists no document
        ({"openinference.span.kind": "RETRIEVER"}, 0),  # OpenInference lists what it found: nothing
        ({"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "d-1"}, 1),
        # The newer GenAI conventions list them (opentelemetry-util-genai): as a JSON list, empty when none.
        ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": "[]"}, 0),
        ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": '[{"id": "d-1", "score": 0.5}]'}, 1),
        # Documents as their text alone, or as objects that say nothing: listed, so found (was 0: none found).
        ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": '["삼성전자 실적", "배당 일정"]'}, 2),
        ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": "[{}, {}, {}]"}, 3),
        ({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": ("a", "b")}, 2),  # an OTel array
    ],
)
def test_a_retrieval_span_that_lists_no_document_is_no_search_that_found_nothing(
    client: TestClient, tmp_path: Path, retrieval: dict[str, Any], found: int | None
) -> None:
    """Every GenAI retrieval span was recorded as finding 0 documents (no GenAI attribute lists them): a service
    sending such spans read a 100% no-result rate in the report. How many it found is unknown: left out."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attributes(retrieval)
        with tracer.start_as_current_span("answer") as answer:
            answer.set_attributes(_LLM)
    [query] = _exported_queries(client, tmp_path, keep.spans)
    assert query["result_count"] == found and query["search_ms"] is not None
    with Catalog(tmp_path / "lake") as catalog:
        summary = LakeQueries(catalog).summary()
    assert summary.no_result_rate == (None if found is None else float(found == 0))


def test_a_model_response_without_text_is_no_answer_not_its_json(client: TestClient, tmp_path: Path) -> None:
    """An OpenInference LLM span of a step that calls a tool (OpenAI's content null beside tool_calls, LangChain's
    generation of empty text) had its whole response JSON stored as the answer, and found by an answer search."""
    tool_call = {"id": "chatcmpl-1", "choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                              "function": {"name": "quote", "arguments": "{}"}}]}}]}  # fmt: skip
    empty_generation = {"generations": [[{"text": "", "message": {"content": ""}}]], "llm_output": {}}
    generation = {"generations": [[{"text": "삼성전자는 7만 원입니다", "generation_info": {}}]]}
    tracer, keep = _kept_tracer()
    for question, response in (("도구 질문", tool_call), ("빈 질문", empty_generation), ("답 질문", generation)):
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attributes({"openinference.span.kind": "LLM", "input.value": question,
                                "output.mime_type": "application/json",
                                "output.value": json.dumps(response, ensure_ascii=False)})  # fmt: skip
    rows = _exported_queries(client, tmp_path, keep.spans)
    assert [(r["query_text"], r["answer_text"]) for r in rows] == [
        ("도구 질문", None),
        ("빈 질문", None),
        ("답 질문", "삼성전자는 7만 원입니다"),
    ]


def test_documents_listed_as_the_genai_conventions_and_openinference_langchain_write_them_are_sources(
    client: TestClient, tmp_path: Path
) -> None:
    """`gen_ai.retrieval.documents` (opentelemetry-util-genai) was not read: no source, no count, no score; and
    OpenInference's LangChain instrumentation writes a document's id in its metadata only, so no source either."""
    genai = [{"id": "naver-01", "score": 3.0, "title": "네이버 실적"}, {"id": "naver-02", "score": 2.5}]
    langchain = {f"retrieval.documents.{n}.document.{key}": value for n, doc in enumerate(genai)
                 for key, value in (("content", "본문"), ("metadata", json.dumps({"id": doc["id"], "title": "제목"},
                                                                                  ensure_ascii=False)))}  # fmt: skip
    tracer, keep = _kept_tracer()
    for question, retrieval in (
        ("GenAI 질문", {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": json.dumps(genai)}),
        ("랭체인 질문", {"openinference.span.kind": "RETRIEVER", **langchain}),
    ):
        with tracer.start_as_current_span("request"):
            with tracer.start_as_current_span("retrieve") as retrieve:
                retrieve.set_attributes(retrieval)
            with tracer.start_as_current_span("answer") as answer:
                answer.set_attributes({**_LLM, "gen_ai.prompt.0.content": question})
    rows = {r["query_text"]: r for r in _exported_queries(client, tmp_path, keep.spans)}
    found = {q: ([s["doc_id"] for s in r["sources"]], r["result_count"], r["top_score"]) for q, r in rows.items()}
    assert found == {
        "GenAI 질문": (["naver-01", "naver-02"], 2, 3.0),
        "랭체인 질문": (["naver-01", "naver-02"], 2, None),
    }
    assert rows["GenAI 질문"]["sources"][0]["title"] == "네이버 실적"


@pytest.mark.parametrize(
    "agent",
    [
        {"openinference.span.kind": "AGENT", "input.value": "삼성전자 현재가?", "output.value": "7만 원입니다"},
        {"traceloop.span.kind": "agent", "traceloop.entity.name": "stock_agent"},
    ],
    ids=["openinference", "openllmetry"],
)
def test_an_agent_run_is_one_query_whatever_the_convention_names_it(
    client: TestClient, tmp_path: Path, agent: dict[str, Any]
) -> None:
    """Under an OpenInference AGENT span or OpenLLMetry's @agent, each LLM call was a query of its own: the tool
    call and the answer were two queries asking the same thing (the second counted as a reformulation), their
    tokens apart; under GenAI's `invoke_agent` it was one."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as run:
        run.set_attributes(agent)
        for n, text in enumerate(("", "7만 원입니다")):
            with tracer.start_as_current_span(f"llm-{n}") as llm:
                llm.set_attributes({**_LLM, "gen_ai.prompt.0.content": "삼성전자 현재가?", "gen_ai.usage.input_tokens": 20 + n,
                                    "gen_ai.usage.output_tokens": 5, **({"gen_ai.completion.0.content": text} if text else {})})  # fmt: skip
    [query] = _exported_queries(client, tmp_path, keep.spans)
    assert (query["query_text"], query["answer_text"]) == ("삼성전자 현재가?", "7만 원입니다")
    assert (query["input_tokens"], query["output_tokens"], query["reformulated"]) == (41, 10, False)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (  # OpenInference's LangChain instrumentation: the exception, then its traceback
            "OpenAIAPIError('Error code: 500 - internal fake error')Traceback (most recent call last):\n"
            '  File "/home/me/app/.venv/lib/python3.11/site-packages/langchain_core/x.py", line 9, in invoke\n'
            "openai.InternalServerError: Error code: 500",
            "OpenAIAPIError('Error code: 500 - internal fake error')",
        ),
        (  # a traceback alone: its last line, the exception
            'Traceback (most recent call last):\n  File "/srv/app.py", line 3, in <module>\nValueError: bad prompt',
            "ValueError: bad prompt",
        ),
        ("quota exceeded", "quota exceeded"),
    ],
)
def test_a_failures_message_is_kept_without_the_traceback_and_its_paths(
    client: TestClient, tmp_path: Path, status: str, message: str
) -> None:
    """A LangChain failure's message was its whole traceback, 2,000 characters of the app's files and paths."""
    tracer, keep = _kept_tracer()
    span = tracer.start_span("llm")
    span.set_attributes({"openinference.span.kind": "LLM", "input.value": "실패할 질문"})
    span.set_status(Status(StatusCode.ERROR, status))
    span.end()
    _, log = _export(client, tmp_path, keep.spans)
    (failed,) = [e for e in _logged(log) if e.event_type == "query_failed"]
    assert failed.error_message == message


def test_a_langfuse_retriever_is_the_querys_search_and_a_langfuse_agent_one_query(
    client: TestClient, tmp_path: Path
) -> None:
    """Langfuse's `retriever` observations (`@observe(as_type="retriever")`, its LangChain callback's retrievers)
    were left out as not GenAI: no search step, no sources; and an `agent` observation's generations were a query
    each."""
    documents = [{"page_content": "네이버 실적 기사", "metadata": {"id": "naver-01", "title": "네이버 실적"}}]
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as agent:
        agent.set_attributes({"langfuse.observation.type": "agent", "langfuse.observation.input": "네이버 실적은?"})
        with tracer.start_as_current_span("retriever") as retriever:
            retriever.set_attributes({"langfuse.observation.type": "retriever",
                                      "langfuse.observation.output": json.dumps(documents, ensure_ascii=False)})  # fmt: skip
        for n in range(2):
            with tracer.start_as_current_span(f"generation-{n}") as generation:
                generation.set_attributes({"langfuse.observation.type": "generation",
                                           "langfuse.observation.model.name": "gpt-4o-mini",
                                           "langfuse.observation.input": "네이버 실적은?",
                                           "langfuse.observation.output": "개선됐습니다" if n else "",
                                           "langfuse.observation.usage_details": json.dumps({"input": 10, "output": 2})})  # fmt: skip
    [query] = _exported_queries(client, tmp_path, keep.spans)
    assert (query["query_text"], query["answer_text"], query["input_tokens"]) == ("네이버 실적은?", "개선됐습니다", 20)
    assert (query["result_count"], [(s["doc_id"], s["title"]) for s in query["sources"]]) == (
        1,
        [("naver-01", "네이버 실적")],
    )


@pytest.mark.parametrize(
    ("end_offset_ns", "reason"),
    [(None, "span without an end time"), (-1_000_000, "span ending before it started")],
)
def test_a_span_without_an_end_or_ending_before_its_start_is_refused_not_a_query_of_no_time(
    client: TestClient, tmp_path: Path, end_offset_ns: int | None, reason: str
) -> None:
    """A hand-built exporter's span with no end (0), or one before its start, was a completed query of 0 ms."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("llm") as span:
        span.set_attributes({"openinference.span.kind": "LLM", "input.value": "끝이 없는 질문"})
    export = json.loads(_otlp_json(keep.spans))
    (sent,) = export["resourceSpans"][0]["scopeSpans"][0]["spans"]
    start = int(sent["startTimeUnixNano"])
    sent["endTimeUnixNano"] = "0" if end_offset_ns is None else str(start + end_offset_ns)
    resp = client.post("/v1/traces", content=json.dumps(export), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["partialSuccess"] == {"rejectedSpans": "1", "errorMessage": f"spans rejected: 1 {reason}"}
    log = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl"))
    assert "끝이 없는 질문".encode() not in log


def test_finish_reasons_sent_as_one_string_are_read(client: TestClient, tmp_path: Path) -> None:
    """`gen_ai.response.finish_reasons` is a list by the conventions; sent as one string it was dropped unsaid."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("llm") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.prompt.0.content": "잘린 답",
                "gen_ai.response.finish_reasons": "length",
            }
        )
    (row,) = _exported_queries(client, tmp_path, keep.spans)
    assert row["finish_reason"] == "length"


def test_an_agents_cost_is_a_total_only_when_each_billed_step_reports_one(client: TestClient, tmp_path: Path) -> None:
    """One step's cost was taken as the agent's, `recorded`, while its other step's was left out (walk)."""
    tracer, keep = _kept_tracer()
    for question, second_cost in (("일부 비용", None), ("전체 비용", 0.25)):
        with tracer.start_as_current_span("agent") as agent:
            agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.prompt.0.content": question})
            for model, cost in (("gpt-4o", 0.5), ("gpt-4o-mini", second_cost)):
                with tracer.start_as_current_span("step") as step:
                    step.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                         "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10})  # fmt: skip
                    if cost is not None:
                        step.set_attribute("gen_ai.usage.cost", cost)
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    events = _logged(log)
    texts = {e.query_id: e.query_text for e in events if e.event_type == "query_received"}
    costs = {texts[e.query_id]: e.cost_usd for e in events if e.event_type == "response_generated"}
    assert costs == {"일부 비용": None, "전체 비용": 0.75}


def test_a_search_before_its_query_span_is_within_the_querys_latency(client: TestClient, tmp_path: Path) -> None:
    """A request span exported by another service (a remote parent) gave no bounds: the query kept its LLM span's,
    and its search, given to it, lay before it: search_ms above latency_ms, the search before the question (walk)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tracer, keep = _kept_tracer()
    upstream = SpanContext(0x5EED << 64 | 1, 0xABC, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    context = trace.set_span_in_context(NonRecordingSpan(upstream))
    t0 = time.time_ns() - 10**9
    retrieve = tracer.start_span("retrieve", context=context, start_time=t0)
    retrieve.set_attributes({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": '[{"id": "d1"}]'})
    retrieve.end(end_time=t0 + 300_000_000)
    llm = tracer.start_span("chat", context=context, start_time=t0 + 310_000_000)
    llm.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "원격 부모 질문"})
    llm.end(end_time=t0 + 510_000_000)
    (row,) = _exported_queries(client, tmp_path, keep.spans)
    assert row["latency_ms"] == pytest.approx(510.0)
    assert row["search_ms"] + row["generate_ms"] <= row["latency_ms"]


def test_a_request_span_ending_ahead_of_this_servers_clock_is_no_bound_of_its_query(
    client: TestClient, tmp_path: Path
) -> None:
    """The request around a valid LLM span ended three minutes ahead of the server's clock: the query took its
    bounds and was refused whole, `ts more than 2 minutes ahead` (walk)."""
    tracer, keep = _kept_tracer()
    now = time.time_ns()
    request = tracer.start_span("POST /chat", start_time=now - 10**9)
    with trace_context(request):
        llm = tracer.start_span("chat", start_time=now - 900_000_000)
        llm.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "시계가 빠른 요청"})
        llm.end(end_time=now - 700_000_000)
    request.end(end_time=now + 180 * 10**9)
    (row,) = _exported_queries(client, tmp_path, keep.spans)
    assert row["query_text"] == "시계가 빠른 요청" and row["status"] == "completed"
    assert row["latency_ms"] == pytest.approx(200.0)  # the LLM span's own bounds


@pytest.mark.parametrize(
    ("documents", "ends_ahead_s"),
    [('[{"id": "d1"}]', 3600), ("nope", 0), ('[{"id": "d1"}]', 0)],
    ids=["ending-ahead-of-the-clock", "refused", "kept"],
)
def test_a_search_ending_ahead_of_the_clock_or_refused_is_no_bound_of_its_query(
    client: TestClient, tmp_path: Path, documents: str, ends_ahead_s: int
) -> None:
    """A retrieval span ending an hour ahead of the server's clock gave its query that end: the query was refused
    whole ("2 ts more than 2 minutes ahead"), where a retrieval refused is left out alone; one refused for its
    documents still stretched the query's latency (walk)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    tracer, keep = _kept_tracer()
    upstream = SpanContext(0xF00D << 64 | 1, 0xABC, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    context = trace.set_span_in_context(NonRecordingSpan(upstream))  # the request, exported by another service
    now = time.time_ns()
    retrieve = tracer.start_span("retrieve", context=context, start_time=now - 6 * 10**9)
    retrieve.set_attributes({"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": documents})
    retrieve.end(end_time=now - 5 * 10**9 + ends_ahead_s * 10**9)
    llm = tracer.start_span("chat", context=context, start_time=now - 5 * 10**9)
    llm.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "미래에서 온 검색"})
    llm.end(end_time=now - 4 * 10**9)
    kept = documents != "nope" and not ends_ahead_s
    (row,) = _exported_queries(client, tmp_path, keep.spans, left_out=0 if kept else 1)  # the search alone
    assert row["query_text"] == "미래에서 온 검색" and row["status"] == "completed"
    # With its search: from the search's start to the answer's end; without: the LLM span's own.
    assert row["latency_ms"] == pytest.approx(2000.0 if kept else 1000.0)
    assert (row["search_ms"] is not None) == kept


def test_a_span_ending_within_a_microsecond_of_midnight_stays_on_its_day(client: TestClient, tmp_path: Path) -> None:
    """Nanoseconds went through a float and were rounded: a span ending 400 ns before midnight was the next day's."""
    tracer, keep = _kept_tracer()
    midnight = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * 10**9
    llm = tracer.start_span("chat", start_time=midnight - 10**9)
    llm.set_attributes({**_LLM, "gen_ai.prompt.0.content": "자정 직전"})
    llm.end(end_time=midnight - 400)
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {}
    ends = {e.ts for e in _logged(log) if e.event_type in ("response_generated", "query_completed")}
    assert ends == {datetime.fromtimestamp(midnight // 10**9, UTC) - timedelta(microseconds=1)}


def test_a_first_token_after_the_call_ended_refuses_the_span_and_says_why(client: TestClient, tmp_path: Path) -> None:
    """`time_to_first_token` in milliseconds where the conventions want seconds was stored as 9,999,000 ms on a
    500 ms call (walk)."""
    tracer, keep = _kept_tracer()
    now = time.time_ns()
    llm = tracer.start_span("chat", start_time=now - 10**9)
    llm.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "첫 토큰",
                        "gen_ai.server.time_to_first_token": 9999.0})  # fmt: skip
    llm.end(end_time=now - 500_000_000)
    partial, log = _export(client, tmp_path, keep.spans)
    assert partial == {
        "rejectedSpans": "1",
        "errorMessage": "spans rejected: 1 ttft_ms longer than the call (gen_ai.server.time_to_first_token is in seconds)",
    }
    assert log == b""


def test_an_export_keyed_by_protobuf_field_names_is_read_as_its_camel_case_twin(
    client: TestClient, tmp_path: Path
) -> None:
    """Protobuf's JSON parsers take a message's field names as well as their lowerCamelCase, and some hand-written
    exporters send them: ``trace_id`` went in as base64, and the query was filed under ids its app never had."""
    tracer, keep = _kept_tracer()
    with tracer.start_as_current_span("agent") as root:
        root.set_attributes({"openinference.span.kind": "AGENT", "input.value": "스네이크 질문"})
        with tracer.start_as_current_span("chat") as step:
            step.set_attributes({**_LLM, "gen_ai.prompt.0.content": "스네이크 질문"})

    def snake(node: Any) -> Any:
        if isinstance(node, dict):
            return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): snake(v) for k, v in node.items()}
        return [snake(item) for item in node] if isinstance(node, list) else node

    export = snake(json.loads(_otlp_json(keep.spans)))
    assert "resource_spans" in export and "trace_id" in json.dumps(export)
    resp = client.post("/v1/traces", content=json.dumps(export), headers={"content-type": "application/json"})
    assert resp.status_code == 200 and "partialSuccess" not in resp.json(), resp.text
    events = _logged(b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl")))
    trace_id = format(root.get_span_context().trace_id, "032x")
    queries = [e for e in events if e.event_type == "query_received"]
    assert [(e.query_text, e.trace_id) for e in queries] == [("스네이크 질문", trace_id)]
    assert {e.query_id for e in events} == {queries[0].query_id}  # the step is the agent's, as in camelCase
