"""The FastAPI chat API: every query's steps become events through the QueryTracker."""

from __future__ import annotations

import asyncio
import math
import os
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

from querylog import __version__
from querylog.config import ConfigError, Settings
from querylog.housekeeping import LogCollector, log_health
from querylog.logging.events import shows_nothing
from querylog.logging.forget import ForgetList
from querylog.logging.parquet import ParquetSink
from querylog.logging.tracker import QueryTracker
from querylog.runtime import Runtime
from querylog.service import otlp, producers
from querylog.service.body_limit import BodyLimitMiddleware
from querylog.service.generation import GenerationError, generator_from_env, language_of
from querylog.service.health import OLDER_RELEASE, degraded_reasons
from querylog.service.middleware import RequestIdMiddleware
from querylog.service.pipeline import ChatPipeline
from querylog.service.tracing import LangfuseTracing

__all__ = ["ChatRequest", "ChatResponse", "create_app", "query_tracker"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_log = structlog.get_logger("querylog.api")


_PROJECTOR_REFUSED: Final = (
    "the projections' process (querylog project) cannot start and is not restarted: a setting, checkpoint or "
    "commit record it cannot use; its error is in this server's log (`querylog project --once` shows it too)"
)
#: A 422 echoes what it refused, each string cut to this many characters: an oversized question is named, not
#: sent back whole.
ECHO_MAX_CHARS: Final = 200


def _printable(obj: Any) -> Any:
    """The same structure with every string made encodable (and cut past `ECHO_MAX_CHARS`, with a marker saying
    how long it was) and every number JSON can hold, so an error can echo any input back."""
    if isinstance(obj, bytes):
        obj = obj.decode("utf-8", "replace")
    if isinstance(obj, str):
        if len(obj) > ECHO_MAX_CHARS:
            obj = f"{obj[:ECHO_MAX_CHARS]}… ({len(obj)} characters)"
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(obj, float) and not math.isfinite(obj):  # NaN, Infinity, 1e400: not JSON, said as JavaScript does
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {_printable(k): _printable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_printable(v) for v in obj]
    return obj


class ChatRequest(BaseModel):
    query: str = Field(min_length=1, max_length=16_384, description="The user's question, Korean or English.")
    session_id: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200)

    _ids = field_validator("session_id", "user_id")(producers.checked_id)  # the rules every endpoint holds ids to

    @field_validator("query", mode="before")
    @classmethod
    def _composed(cls, value: object) -> object:
        # Its length is counted as the event stores it (NFC): Korean typed decomposed (NFD, as macOS may send it)
        # has three code points a syllable, and was refused at a third of the documented length.
        return unicodedata.normalize("NFC", value) if isinstance(value, str) else value

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # The query_received event's test (control separators like U+001E and zero-width characters count as
        # blank), and no question of control characters only ("\x00"): the caller's 422, not a 500 or an empty row.
        if shows_nothing(value):
            raise ValueError("must contain more than whitespace, control and invisible characters")
        return value


class Source(BaseModel):
    doc_id: str
    title: str
    score: float


class ChatError(BaseModel):
    error: str = Field(description="The error type, as recorded in the query_failed event.")
    message: str
    query_id: str


class ChatResponse(BaseModel):
    query_id: str
    intent: str
    confidence: float
    answer: str
    sources: list[Source]
    cache_hit: bool
    model: str | None
    session_id: str | None
    trace_id: str | None = Field(
        default=None, description="The Langfuse trace id when tracing is on: {LANGFUSE_HOST}/trace/{trace_id}."
    )


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.querylog
    return runtime


def query_tracker(request: Request) -> QueryTracker:
    """FastAPI dependency: the app's QueryTracker. ``tracker: QueryTracker = Depends(query_tracker)``."""
    return _runtime(request).tracker


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    pipeline: ChatPipeline | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """The chat API. Starts the runtime (log and projections) on startup; drains it on shutdown (SIGTERM).

    Without a `pipeline`, the LLM step and Langfuse tracing come from `environ` (default: the process
    environment; see `generator_from_env` and `LangfuseTracing.from_env`), and are closed at shutdown.
    """
    rt = runtime or Runtime(settings or Settings.from_env())
    release = rt.tracker.release  # QUERYLOG_RELEASE, else querylog's version: what queries and traces carry
    closers: list[Callable[[], None]] = []
    if pipeline is None:
        env = os.environ if environ is None else environ
        try:
            generator = generator_from_env(env)
            tracing = LangfuseTracing.from_env(
                env,
                environment=rt.settings.env,
                release=release,
                service=rt.settings.service,
                redact=rt.redactor.redact,
                capture_outputs=rt.settings.capture_answers,  # an answer not kept in the log is not sent either
            )
        except ValueError as exc:  # a QUERYLOG_LLM_* or LANGFUSE_* value: said as any setting is (exit 2)
            raise ConfigError(str(exc)) from None
        close_generator = getattr(generator, "close", None)
        if callable(close_generator):
            closers.append(close_generator)
        if tracing is not None:
            closers.append(tracing.close)
        pipeline = ChatPipeline(generator=generator, tracing=tracing)
    chat_pipeline = pipeline
    ingestor = producers.EventIngestor.from_runtime(rt)
    rt.metrics.add_collector(ingestor.counts)  # the producer endpoints' own series, beside the sinks'
    recent_queries = producers.RecentQueries(forget=ForgetList(rt.settings.metrics_forget_path))
    started_at = time.time()  # a projection never reported on is silent from here (/healthz)
    older_release_said: list[bool] = []  # logged once per process: /healthz says it at every probe

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start()
        forgetting = asyncio.create_task(producers.forget_erased_queries(recent_queries))
        try:
            ingestor.seed(rt.reader, rt.settings.lake_dir)
            yield
        finally:
            forgetting.cancel()
            try:
                rt.close()
            finally:
                for close in closers:
                    try:
                        close()
                    except Exception as exc:  # one failing closer must not keep the others from running
                        _log.warning("shutdown_close_failed", closer=repr(close), error_type=type(exc).__name__)

    app = FastAPI(
        title="querylog chat API",
        version=__version__,
        description="A small chat API over a bundled finance-news corpus; every query step is an event.",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "chat", "description": "Questions answered by the demo pipeline, each one a tracked query."},
            {"name": "producers", "description": "Events and feedback from outside the chat pipeline."},
            {"name": "ops", "description": "Health and Prometheus metrics."},
        ],
    )
    app.state.querylog = rt
    app.state.ingestor = ingestor
    app.state.recent_queries = recent_queries
    app.add_middleware(BodyLimitMiddleware, paths=("/v1/chat", "/v1/feedback"))
    app.add_middleware(RequestIdMiddleware)  # the outermost: a 413 carries the request id too
    app.include_router(producers.router)
    app.include_router(otlp.router)

    def openapi() -> dict[str, Any]:
        # The event schemas come from the msgspec structs themselves, so producers see the real contract.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(producers.event_schema_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _printable(jsonable_encoder(exc.errors()))})

    @app.post(
        "/v1/chat",
        response_model=ChatResponse,
        tags=["chat"],
        summary="Answer a question",
        dependencies=[Depends(producers.json_media)],
        responses={
            413: {"model": producers.ErrorMessage, "description": "Body over 1 MiB"},
            415: {"model": producers.ErrorMessage, "description": "A Content-Type other than JSON"},
            502: {"model": ChatError, "description": "The LLM step failed"},
            500: {"model": ChatError},
        },
    )
    def chat(
        body: ChatRequest, tracker: Annotated[QueryTracker, Depends(query_tracker)]
    ) -> ChatResponse | JSONResponse:
        """Answer a question. Its events (received → classified → searched → answered → completed, or
        query_failed) are durable in the log before this returns."""
        # Made before the query starts so that query_received carries it too, like every later event.
        trace_id = chat_pipeline.tracing.new_trace_id() if chat_pipeline.tracing is not None else None
        tracked = tracker.query(
            body.query,
            session_id=body.session_id,
            user_id=body.user_id,
            trace_id=trace_id,
            language=language_of(body.query),  # the language it is answered in
        )
        recent_queries.remember(tracked.query_id, session_id=body.session_id, user_id=body.user_id, trace_id=trace_id)
        try:
            with tracked as q:
                result = chat_pipeline.answer(q)
        except GenerationError as exc:
            return _error(502, exc, tracked.query_id)
        except Exception as exc:  # recorded as query_failed by the tracker; answered, never a dropped connection
            _log.exception("chat_failed", query_id=tracked.query_id, error_type=type(exc).__name__)
            return _error(500, exc, tracked.query_id)
        return ChatResponse(
            query_id=q.query_id,
            intent=result.intent,
            confidence=result.confidence,
            answer=result.answer,
            sources=[Source(doc_id=h.doc_id, title=h.title, score=h.score) for h in result.sources],
            cache_hit=result.cache_hit,
            model=result.model,
            session_id=body.session_id,
            trace_id=q.trace_id,
        )

    @app.head("/healthz", include_in_schema=False)  # uptime probes that ask for the status line alone (405: down)
    def healthz_head() -> Response:
        return Response(status_code=200)

    @app.get("/healthz", tags=["ops"], summary="Liveness, log and projection status")
    def healthz() -> dict[str, Any]:
        """Liveness plus what the pipeline is doing: events written and dropped, each projection's lag."""
        log = rt.log.telemetry.snapshot()
        now = time.time()
        snapshots = rt.projection_snapshots()
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "env": rt.settings.env,
            "log": {"events_written": log.sent, "events_dropped": sum(log.dropped.values())},
            "projections": {
                name: {
                    "leading": leading,
                    # Run by another process that has published nothing readable: nobody has said (null, not 0).
                    "lag_events": snap.lag_events if snap.lag_known else None,
                    "sent": snap.sent,
                    # 0 for one this process runs; else since the process running it published its counters
                    "reported_s_ago": round(max(0.0, now - snap.reported_at), 1),
                    "lag_seconds": round(snap.lag_seconds, 1) if snap.lag_known else None,
                }
                for name, (leading, snap) in sorted(snapshots.items())
            },
        }
        retention = log_health(rt.settings, LogCollector(rt.settings, rt.settings.metrics_namespace).status())
        body["log"].update(retention)
        if rt.log.write_error is not None:  # the log degraded too, as `reasons` says first
            body["log"].update(degraded=True, write_error=rt.log.write_error)
        # Once seen, said until this server restarts: the lake lacks the events that release left out even after this
        # one commits again, and the way back (`querylog replay parquet`) needs this server stopped.
        older = bool(older_release_said) or ParquetSink.committed_by_an_older_release(
            rt.settings.lake_dir, since=started_at
        )
        if older and not older_release_said:
            older_release_said.append(True)
            _log.error("lake_committed_by_an_older_release", lake=str(rt.settings.lake_dir), note=OLDER_RELEASE)
        reasons = degraded_reasons(
            write_error=rt.log.write_error,
            log=retention,
            projections=snapshots,
            now=now,
            started_at=started_at,
            older_release_commits=older,
        )
        child = rt.projector_process
        if child is not None:  # QUERYLOG_PROJECTIONS=process: the elected projections run in this child
            body["projector_process"] = {"pid": child.pid, "running": child.running, "restarts": child.restarts}
            if child.refused:
                reasons.insert(0, _PROJECTOR_REFUSED)
            elif child.crash_looping:
                now_said = (
                    "another has just started (this clears once one runs a minute)"
                    if child.running
                    else "the projections are not running"
                )
                reasons.insert(
                    0,
                    f"the projections' process (querylog project) exited {child.quick_exits} times in a row within a "
                    f"minute of starting (last exit code {child.last_exit}): {now_said}; its error is in this "
                    "server's log (projector_process_exited)",
                )
        if reasons:  # still 200: the API answers; the pipeline needs a look (docs/api.md, docs/reliability.md)
            body["status"] = "degraded"
            body["reasons"] = reasons
        return body

    @app.head("/metrics", include_in_schema=False)  # a probe that the endpoint answers; no fold is rendered
    def metrics_head() -> Response:
        return Response(status_code=200, media_type=PROMETHEUS_CONTENT_TYPE)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        summary="Prometheus metrics",
        responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "Prometheus text exposition"}},
    )
    def metrics() -> Response:
        """Prometheus metrics derived from the events (and the sinks' own counters)."""
        return Response(rt.metrics.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


def _error(status: int, exc: Exception, query_id: str) -> JSONResponse:
    body = ChatError(error=type(exc).__name__, message=str(exc)[:500], query_id=query_id)
    return JSONResponse(status_code=status, content=body.model_dump())
