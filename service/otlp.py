"""``POST /v1/traces``: OTLP/HTTP trace export, so that any OpenTelemetry-instrumented app feeds querylog.

Protobuf (``application/x-protobuf``) and JSON (``application/json``, ids as hex as the OTLP/JSON encoding says),
gzip accepted, decoded with the official ``opentelemetry-proto`` messages. Spans become events
(`service.otlp_mapping`) that go through `EventIngestor`: the same token, body limit, validation, redaction and
durability as ``POST /v1/events`` (durable when answered; idempotent by span id). The answer is OTLP's
``ExportTraceServiceResponse`` in the request's encoding, with ``partial_success`` counting the spans rejected
(a value the schema or the id rules refuse) and why; spans skipped by design (not GenAI, a step inside another
GenAI span) are counted on /metrics only.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from querylog._format import shortened
from querylog.logging.events import EVENT_CLASSES, AnyEvent, EventValidationError, Source
from querylog.service.inflight import Hold
from querylog.service.otlp_mapping import REFUSED, Mapped, map_export
from querylog.service.producers import (
    MAX_AHEAD,
    NESTED_TOO_DEEPLY,
    EventIngestor,
    IngestResult,
    IngestUnavailableError,
    _ingestor,
    _read_body,
    counted_status,
    holding_body,
    id_problem,
    media_type,
    require_ingest_token,
    too_far_ahead,
)

__all__ = ["router"]

_log = structlog.get_logger("querylog.otlp")

_PROTOBUF: Final = "application/x-protobuf"
#: What some exporters send for protobuf: the same body.
_PROTOBUF_ALIASES: Final = frozenset({_PROTOBUF, "application/protobuf"})
_JSON: Final = "application/json"
#: The gRPC code an error's `google.rpc.Status` carries, by HTTP status (INTERNAL for any other).
_GRPC_CODES: Final = {400: 3, 401: 16, 403: 7, 413: 3, 415: 3, 503: 14}  # INVALID_ARGUMENT, UNAUTHENTICATED, ...


def _content_type(request: Request) -> str:
    """The request's media type, protobuf's aliases as one."""
    content_type = media_type(request)
    return _PROTOBUF if content_type in _PROTOBUF_ALIASES else content_type


def _protobuf_reply(request: Request) -> str | None:
    """The media type a protobuf answer carries: the request's own, as OTLP/HTTP wants; None for a JSON answer."""
    content_type = media_type(request)
    return content_type if content_type in _PROTOBUF_ALIASES else None


def _status_answer(exc: HTTPException, request: Request) -> Response:
    """An error as OTLP/HTTP answers one: a `google.rpc.Status` (code, message) in the request's encoding, JSON
    when that is neither, with the HTTP status and headers (Retry-After, WWW-Authenticate) as they were."""
    answer = Status(code=_GRPC_CODES.get(exc.status_code, 13), message=str(exc.detail))
    headers = dict(exc.headers or {})
    if (protobuf := _protobuf_reply(request)) is not None:
        return Response(answer.SerializeToString(), exc.status_code, headers, media_type=protobuf)
    body = json.dumps(json_format.MessageToDict(answer), ensure_ascii=False)
    return Response(body, exc.status_code, headers, media_type=_JSON)


class _OtlpRoute(APIRoute):
    """Errors as `google.rpc.Status` (the OTLP/HTTP spec), the token check's included, not FastAPI's `detail`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return _status_answer(exc, request)

        return route


router = APIRouter(prefix="/v1", tags=["producers"], route_class=_OtlpRoute)
#: Ids the OTLP/JSON encoding writes as hex, where protobuf's JSON mapping expects base64; by their lowerCamelCase
#: names (the spec's) or their field names, which protobuf's parser takes as well.
_HEX_IDS: Final = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_PARENT_IDS: Final = frozenset({"parentSpanId", "parent_span_id"})
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _as_protobuf_json(node: Any) -> Any:
    """`node` (parsed OTLP/JSON) as protobuf's JSON parser takes it, changed in place: trace and span ids from hex
    (OTLP/JSON's) to base64 (protobuf's); a lone surrogate in a text (OTel JS cuts a value by UTF-16 code unit, so an
    emoji at the limit leaves one) made U+FFFD, as the events store it, where the parser would refuse the export."""
    if isinstance(node, dict):
        unplaced = False
        for key, value in node.items():
            if key in _HEX_IDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    node[key] = ""  # that span is rejected (an invalid id), counted in partial_success; not the rest
                    unplaced = unplaced or key in _PARENT_IDS
            else:
                node[key] = _as_protobuf_json(value)
        if unplaced:  # the span's place in its trace is not one to guess: it is rejected as with a bad id of its own
            node["span_id" if "span_id" in node else "spanId"] = ""
    elif isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _as_protobuf_json(item)
    elif isinstance(node, str) and not node.isascii():
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", node)
    return node


def _decode(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if content_type == _PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed OTLP protobuf: {exc}") from None
        return request
    if content_type == _JSON:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}") from None
        except RecursionError:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, NESTED_TOO_DEEPLY) from None
        if not isinstance(payload, dict) or (payload and not {"resourceSpans", "resource_spans"} & payload.keys()):
            # Unknown fields are ignored (the spec's rule): a Jaeger or Zipkin body would be taken as an empty export.
            keys = sorted(shortened(str(key), 40) for key in payload)[:5] if isinstance(payload, dict) else []
            found = f" (this one has: {', '.join(keys)})" if keys else ""
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"an OTLP trace export is a JSON object with resourceSpans{found}"
            )
        try:
            _as_protobuf_json(payload)
            json_format.ParseDict(payload, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"not an OTLP trace export: {exc}") from None
        except RecursionError:  # json.loads took it with a frame or two to spare: one level deeper than it could
            raise HTTPException(status.HTTP_400_BAD_REQUEST, NESTED_TOO_DEEPLY) from None
        return request
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {content_type or '(none)'!r}: send application/x-protobuf or application/json",
    )


def _answer(response: ExportTraceServiceResponse, request: Request) -> Response:
    if (protobuf := _protobuf_reply(request)) is not None:
        return Response(response.SerializeToString(), media_type=protobuf)
    return Response(json.dumps(json_format.MessageToDict(response), ensure_ascii=False), media_type=_JSON)


def _ingest(ingestor: EventIngestor, mapped: Mapped) -> tuple[IngestResult, int]:
    """Build each span's events from their prepared (redacted) fields and append them. The events are built by
    their classes, which validate every value, rather than converted from the dicts: a span's fields are typed
    by the mapping already, and this is the export's hot path. A span with a value the schema refuses is left out
    and counted (`partial_success`), never the whole export: a retrieval span alone (its query keeps the rest), a
    query with every span it was read from (its own, its steps, its retrievals). Returns the append's result and
    how many queries went in."""
    events: list[AnyEvent] = []
    queries = 0
    for group in mapped.groups:
        built: list[AnyEvent] = []
        retrievals = sum(1 for fields in group.events if fields["event_type"] == "search_completed")
        for fields in group.events:
            retrieval = fields["event_type"] == "search_completed"
            checked = _checked(ingestor, fields)
            if not isinstance(checked, str):
                built.append(checked)
            elif retrieval:  # a retrieval span's value: that span alone
                mapped.rejected[checked] += 1
                retrievals -= 1
            else:  # the query's: the query, with every span it was read from
                mapped.refuse_query(checked, steps=group.steps, retrievals=retrievals)
                break
        else:
            events.extend(built)
            queries += 1
    return ingestor.append(events, bounded=False), queries  # bounded by its spans (`_export_traces`)


def _checked(ingestor: EventIngestor, fields: dict[str, Any]) -> AnyEvent | str:
    """The event of `fields` (prepared: redacted, defaulted), or why it is refused: a value the schema refuses, an
    id /v1/events refuses (blank, control characters, past 200 characters), a time past this server's clock, or
    what the mapping found no event can hold (`REFUSED`)."""
    if (refused := fields.pop(REFUSED, None)) is not None:
        return str(refused)
    try:
        event = _event(ingestor.prepare(fields))
    except EventValidationError as exc:
        return f"invalid {exc.field}"
    if (bad_id := id_problem(event)) is not None:
        return f"invalid {bad_id[0]}"
    if too_far_ahead(event):
        return f"ts more than {MAX_AHEAD.seconds // 60} minutes ahead of this server's clock"
    return event


def _event(fields: dict[str, Any]) -> AnyEvent:
    cls = EVENT_CLASSES[fields.pop("event_type")]
    if "sources" in fields:
        fields["sources"] = tuple(Source(**source) for source in fields["sources"])
    event: AnyEvent = cls(**fields)  # type: ignore[assignment]
    return event


@router.post(
    "/traces",
    summary="OTLP/HTTP trace export: GenAI spans become tracked queries",
    response_class=Response,
    responses={
        200: {"description": "Accepted (ExportTraceServiceResponse; partial_success counts the spans rejected)"},
        400: {"description": "Malformed protobuf or JSON"},
        401: {"description": "No bearer token, and the server requires one"},
        403: {"description": "The bearer token is wrong"},
        413: {"description": "Body over QUERYLOG_INGEST_MAX_BYTES, or more spans than QUERYLOG_INGEST_MAX_EVENTS"},
        415: {
            "description": "Neither application/x-protobuf (or application/protobuf) nor application/json, or an "
            "encoding other than gzip"
        },
        503: {"description": "The log cannot take events now; retry"},
    },
)
async def export_traces(request: Request, _auth: Annotated[None, Depends(require_ingest_token)]) -> Response:
    """Map each GenAI span (OpenTelemetry GenAI or OpenInference conventions) to one query's events and append
    them, durable when answered. Spans that are not GenAI are skipped and counted in `partial_success`."""
    ingestor = _ingestor(request)
    try:
        async with holding_body(request, ingestor) as hold:
            return await _export_traces(request, ingestor, hold)
    except HTTPException as exc:
        ingestor.counts.request_refused("traces", counted_status(exc))
        raise


async def _export_traces(request: Request, ingestor: EventIngestor, hold: Hold) -> Response:
    content_type = _content_type(request)
    body = await _read_body(request, ingestor.max_bytes, hold)
    # On a worker thread: OTLP/JSON is parsed twice (JSON, then into the protobuf classes), a second or more for
    # 20 MiB, and the event loop serves every other request.
    export = await run_in_threadpool(_decode, body, content_type)
    spans = sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
    if spans > ingestor.max_events:  # spans, not the events they make: a Collector's batch is counted in spans
        detail = (
            f"{spans:,} spans in one export; at most {ingestor.max_events:,} (QUERYLOG_INGEST_MAX_EVENTS): "
            "export fewer spans per request"
        )
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)
    # On a worker thread: a large export takes a while to map, and the event loop serves every other request.
    mapped = await run_in_threadpool(map_export, export, service=ingestor.service, env=ingestor.env)
    accepted = duplicates = queries = 0
    if mapped.groups:
        try:
            result, queries = await run_in_threadpool(_ingest, ingestor, mapped)
        except IngestUnavailableError as exc:
            ingestor.counts.events("traces", "accepted", exc.written)  # in the log: a retry finds them duplicates
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}) from None
        accepted, duplicates = result.accepted, result.duplicates
    response = ExportTraceServiceResponse()
    left_out = {**mapped.skipped, **mapped.rejected}
    ingestor.counts.events("traces", "accepted", accepted)
    ingestor.counts.events("traces", "duplicate", duplicates)
    ingestor.counts.spans_left_out(Counter(left_out))
    # partial_success names the spans refused (a value the schema or the id rules refuse): what an exporter should
    # warn about. Spans skipped by design (not GenAI, a step inside another GenAI span) were taken and read, as the
    # OTLP spec counts them: they are on /metrics (querylog_ingest_spans_left_out_total) and in the log line below.
    if mapped.rejected:
        response.partial_success.rejected_spans = sum(mapped.rejected.values())
        response.partial_success.error_message = "spans rejected: " + ", ".join(
            f"{n} {reason}" for reason, n in sorted(mapped.rejected.items())
        )
    _log.info(
        "otlp_spans_ingested",
        queries=queries,  # those whose events went in (new or sent before): not those refused
        events=accepted,
        duplicates=duplicates,
        skipped=dict(left_out) or None,
    )
    return _answer(response, request)
