"""OTLP spans to querylog events: a GenAI span becomes one tracked query (received → [searched] → generated →
completed or failed).

Two conventions are read, with the older names common instrumentations still emit:

- OpenTelemetry GenAI: ``gen_ai.operation.name``, ``gen_ai.provider.name`` / ``gen_ai.system``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens`` (and
  ``prompt_tokens`` / ``completion_tokens``), ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON), or
  OpenLLMetry's ``gen_ai.prompt.N.content`` / ``gen_ai.completion.N.content``, ``gen_ai.response.finish_reasons``,
  ``error.type``; a retrieval span is ``gen_ai.operation.name = retrieval``.
- OpenInference (Phoenix): ``openinference.span.kind`` (``LLM``, ``RETRIEVER``), ``llm.model_name``,
  ``llm.token_count.prompt`` / ``completion``, ``input.value``, ``output.value``,
  ``llm.input_messages.N.message.role|content``, ``retrieval.documents.N.document.id|content|score``.

Session and user: ``session.id`` / ``user.id`` (also ``langfuse.session.id`` / ``langfuse.user.id``). The span's
trace id is the events' ``trace_id``; its duration is the latency; the resource's ``service.name`` and
``deployment.environment(.name)`` are the events' service and env. A retrieval span fills the search step of the
GenAI span of the same trace exported with it. Other spans are skipped and counted by reason, never an error.

Event ids are derived from the span id, so an export sent twice adds nothing the second time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = ["NOT_CAPTURED", "Mapped", "map_export"]

#: The query text of a GenAI span whose instrumentation did not record the prompt (content capture is opt-in in
#: most of them): the query still counts, with its model, tokens, cost and latency.
NOT_CAPTURED: Final = "[input not captured by the instrumentation]"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RETRIEVAL_OPERATIONS: Final = frozenset({"retrieval", "retrieve", "search"})
_SKIPPED_GENAI_OPERATIONS: Final = frozenset({"embeddings", "execute_tool", "create_agent"})


@dataclass
class Mapped:
    """The events of an export, one group per GenAI span, and what was left out of it (reason → spans)."""

    groups: list[list[dict[str, Any]]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for group in self.groups for event in group]

    @property
    def queries(self) -> int:
        return len(self.groups)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def _str(attrs: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = attrs.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _int(attrs: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = attrs.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _ts(nanos: int) -> datetime:
    # A datetime, not text: the ingest path takes it as it is (no format here, no parse there).
    return datetime.fromtimestamp(nanos / 1e9, UTC)


def _indexed(attrs: dict[str, Any], prefix: str, suffix: str) -> list[tuple[int, Any]]:
    """(N, value) of attributes named ``{prefix}N{suffix}``, by N."""
    found = []
    for key, value in attrs.items():
        if key.startswith(prefix) and key.endswith(suffix):
            middle = key[len(prefix) : len(key) - len(suffix)]
            if middle.isdigit():
                found.append((int(middle), value))
    return sorted(found)


def _message_text(message: Any) -> str | None:
    """The text of one message in the GenAI conventions' JSON shape (``parts`` with text) or the older flat one."""
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("content"), str):
        return str(message["content"])
    texts = [p.get("content") for p in message.get("parts", []) if isinstance(p, dict) and p.get("type") == "text"]
    joined = "\n".join(t for t in texts if isinstance(t, str))
    return joined or None


def _messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def _last_user_text(attrs: dict[str, Any]) -> str | None:
    for message in reversed(_messages(attrs.get("gen_ai.input.messages"))):
        if message.get("role") == "user" and (text := _message_text(message)):
            return text
    roles = dict(_indexed(attrs, "gen_ai.prompt.", ".role"))
    for n, content in reversed(_indexed(attrs, "gen_ai.prompt.", ".content")):
        if roles.get(n, "user") == "user" and isinstance(content, str) and content.strip():
            return content
    oi_roles = dict(_indexed(attrs, "llm.input_messages.", ".message.role"))
    for n, content in reversed(_indexed(attrs, "llm.input_messages.", ".message.content")):
        if oi_roles.get(n, "user") == "user" and isinstance(content, str) and content.strip():
            return content
    return _str(attrs, "input.value", "gen_ai.prompt")


def _answer_text(attrs: dict[str, Any], output: list[dict[str, Any]]) -> str | None:
    texts = [t for m in output if (t := _message_text(m))]
    if texts:
        return "\n".join(texts)
    completions = [c for _, c in _indexed(attrs, "gen_ai.completion.", ".content") if isinstance(c, str)]
    if completions:
        return "\n".join(completions)
    oi = [c for _, c in _indexed(attrs, "llm.output_messages.", ".message.content") if isinstance(c, str)]
    if oi:
        return "\n".join(oi)
    return _str(attrs, "output.value", "gen_ai.completion")


def _finish_reason(attrs: dict[str, Any], output: list[dict[str, Any]]) -> str | None:
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], str):
        return str(reasons[0])
    for message in output:
        if isinstance(message.get("finish_reason"), str):
            return str(message["finish_reason"])
    return _str(attrs, "gen_ai.response.finish_reason")


def _sources(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    ids = dict(_indexed(attrs, "retrieval.documents.", ".document.id"))
    scores = dict(_indexed(attrs, "retrieval.documents.", ".document.score"))
    titles = dict(_indexed(attrs, "retrieval.documents.", ".document.metadata"))
    found = []
    for rank, n in enumerate(sorted(ids), start=1):
        source: dict[str, Any] = {"doc_id": str(ids[n]), "rank": rank}
        if isinstance(scores.get(n), int | float):
            source["score"] = float(scores[n])
        title = titles.get(n)
        if isinstance(title, str):
            try:
                meta = json.loads(title)
                if isinstance(meta, dict) and isinstance(meta.get("title"), str):
                    source["title"] = meta["title"]
            except ValueError:
                pass
        found.append(source)
    return found  # all: past MAX_SOURCES the event keeps the first and counts the rest (sources_dropped)


def _kind(attrs: dict[str, Any]) -> str | None:
    """``llm``, ``retrieval``, a reason to skip (``skip:…``), or None for a span that is not GenAI at all."""
    operation = _str(attrs, "gen_ai.operation.name")
    oi_kind = _str(attrs, "openinference.span.kind")
    if operation is not None:
        if operation in _RETRIEVAL_OPERATIONS:
            return "retrieval"
        if operation in _SKIPPED_GENAI_OPERATIONS:
            return f"skip:gen_ai_{operation}"
        return "llm"
    if oi_kind is not None:
        upper = oi_kind.upper()
        if upper == "LLM":
            return "llm"
        if upper == "RETRIEVER":
            return "retrieval"
        return f"skip:openinference_{upper.lower()}"
    if _str(attrs, "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model") is not None:
        return "llm"
    return None


def _name(value: str | None, fallback: str) -> str:
    return value if value is not None and _NAME_RE.match(value) else fallback


def map_export(request: ExportTraceServiceRequest, *, service: str, env: str) -> Mapped:
    """The events of every GenAI span of `request` (see the module docstring)."""
    mapped = Mapped()
    retrievals: dict[bytes, list[tuple[Span, dict[str, Any]]]] = {}
    llm_spans: list[tuple[Span, dict[str, Any], dict[str, Any]]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    mapped.rejected["invalid trace or span id"] += 1
                    continue
                attrs = _attributes(span.attributes)
                kind = _kind(attrs)
                if kind is None:
                    mapped.skipped["not_genai"] += 1
                elif kind.startswith("skip:"):
                    mapped.skipped[kind.removeprefix("skip:")] += 1
                elif kind == "retrieval":
                    retrievals.setdefault(span.trace_id, []).append((span, attrs))
                else:
                    llm_spans.append((span, attrs, resource))
    used_retrievals: set[bytes] = set()
    for span, attrs, resource in llm_spans:
        found = retrievals.get(span.trace_id, [])
        if found:
            used_retrievals.add(span.trace_id)
        mapped.groups.append(_query_events(span, attrs, resource, found, service=service, env=env))
    for trace_id, spans in retrievals.items():
        if trace_id not in used_retrievals:
            mapped.skipped["retrieval_without_genai_span"] += len(spans)
    return mapped


def _query_events(
    span: Span,
    attrs: dict[str, Any],
    resource: dict[str, Any],
    retrievals: list[tuple[Span, dict[str, Any]]],
    *,
    service: str,
    env: str,
) -> list[dict[str, Any]]:
    # Span ids are unique only within a trace: the ids carry both (an export sent again maps to the same ids).
    span_id = f"{span.trace_id.hex()}-{span.span_id.hex()}"
    common: dict[str, Any] = {
        "query_id": f"otlp-{span_id}",
        "trace_id": span.trace_id.hex(),
        "service": _name(_str(resource, "service.name"), service),
        "env": _name(_str(resource, "deployment.environment.name", "deployment.environment"), env),
    }
    session = _str(attrs, "session.id", "langfuse.session.id", "gen_ai.conversation.id")
    user = _str(attrs, "user.id", "langfuse.user.id", "enduser.id")
    if session:
        common["session_id"] = session
    if user:
        common["user_id"] = user
    start, end = span.start_time_unix_nano, max(span.end_time_unix_nano, span.start_time_unix_nano)
    latency_ms = (end - start) / 1e6
    events: list[dict[str, Any]] = [
        {
            **common,
            "event_type": "query_received",
            "event_id": f"otlp-{span_id}-received",
            "ts": _ts(start),
            "query_text": _last_user_text(attrs) or NOT_CAPTURED,
        }
    ]
    for n, (retrieval, r_attrs) in enumerate(retrievals):
        sources = _sources(r_attrs)
        event: dict[str, Any] = {
            **common,
            "event_type": "search_completed",
            "event_id": f"otlp-{span_id}-search-{n}",
            "ts": _ts(max(retrieval.end_time_unix_nano, retrieval.start_time_unix_nano)),
            "result_count": len(sources),
            "duration_ms": max(0, retrieval.end_time_unix_nano - retrieval.start_time_unix_nano) / 1e6,
        }
        if sources:
            event["sources"] = sources
        scores = [source["score"] for source in sources if "score" in source]
        if scores:
            event["top_score"] = max(scores)
        events.append(event)
    output = _messages(attrs.get("gen_ai.output.messages"))  # parsed once: the answer and the finish reason
    response: dict[str, Any] = {
        **common,
        "event_type": "response_generated",
        "event_id": f"otlp-{span_id}-response",
        "ts": _ts(end),
        "duration_ms": latency_ms,
    }
    for key, value in (
        ("gen_ai_system", _str(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")),
        ("gen_ai_request_model", _str(attrs, "gen_ai.request.model", "llm.model_name")),
        ("gen_ai_response_model", _str(attrs, "gen_ai.response.model")),
        ("gen_ai_usage_input_tokens",
         _int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")),
        ("gen_ai_usage_output_tokens",
         _int(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")),
        ("gen_ai_usage_cache_read_input_tokens", _int(attrs, "gen_ai.usage.cache_read.input_tokens")),
        ("finish_reason", _finish_reason(attrs, output)),
        ("answer_text", _answer_text(attrs, output)),
    ):  # fmt: skip
        if value is not None:
            response[key] = value
    if "answer_text" in response:
        response["answer_chars"] = len(response["answer_text"])
    failed = span.status.code == Status.STATUS_CODE_ERROR or _str(attrs, "error.type") is not None
    if not failed:
        events.append(response)
        events.append(
            {**common, "event_type": "query_completed", "event_id": f"otlp-{span_id}-completed", "ts": _ts(end),
             "latency_ms": latency_ms}
        )  # fmt: skip
    else:
        error_type = _str(attrs, "error.type", "exception.type") or "Error"
        failure: dict[str, Any] = {
            **common,
            "event_type": "query_failed",
            "event_id": f"otlp-{span_id}-failed",
            "ts": _ts(end),
            "error_type": error_type[:200],
            "stage": "generate",
            "latency_ms": latency_ms,
        }
        if span.status.message:
            failure["error_message"] = span.status.message[:2000]
        events.append(failure)
    return events
