"""The FastAPI chat API: every query's steps become events through the QueryTracker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from querylog import __version__
from querylog.config import Settings
from querylog.logging.tracker import QueryTracker
from querylog.runtime import Runtime
from querylog.service.generation import GenerationError
from querylog.service.pipeline import ChatPipeline

__all__ = ["ChatRequest", "ChatResponse", "create_app", "query_tracker"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_log = structlog.get_logger("querylog.api")


class ChatRequest(BaseModel):
    query: str = Field(min_length=1, max_length=16_384, description="The user's question, Korean or English.")
    session_id: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200)


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
) -> FastAPI:
    """The chat API. Starts the runtime (log and projections) on startup; drains it on shutdown (SIGTERM)."""
    rt = runtime or Runtime(settings or Settings.from_env())
    chat_pipeline = pipeline or ChatPipeline()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start()
        try:
            yield
        finally:
            rt.close()

    app = FastAPI(
        title="querylog chat API",
        version=__version__,
        description="A small chat API over a bundled finance-news corpus; every query step is an event.",
        lifespan=lifespan,
    )
    app.state.querylog = rt

    @app.post(
        "/v1/chat",
        response_model=ChatResponse,
        tags=["chat"],
        responses={502: {"model": ChatError, "description": "The LLM step failed"}, 500: {"model": ChatError}},
    )
    def chat(
        body: ChatRequest, tracker: Annotated[QueryTracker, Depends(query_tracker)]
    ) -> ChatResponse | JSONResponse:
        """Answer a question. Its events (received → classified → searched → answered → completed, or
        query_failed) are durable in the log before this returns."""
        tracked = tracker.query(body.query, session_id=body.session_id, user_id=body.user_id)
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
        )

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness plus what the pipeline is doing: events written and dropped, each projection's lag."""
        log = rt.log.telemetry.snapshot()
        return {
            "status": "ok",
            "version": __version__,
            "env": rt.settings.env,
            "log": {"events_written": log.sent, "events_dropped": sum(log.dropped.values())},
            "projections": {
                name: {
                    "leading": p.leading,
                    "lag_events": p.telemetry.snapshot().lag_events,
                    "sent": p.telemetry.snapshot().sent,
                }
                for name, p in rt.projectors.items()
            },
        }

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics derived from the events (and the sinks' own counters)."""
        return Response(rt.metrics.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


def _error(status: int, exc: Exception, query_id: str) -> JSONResponse:
    body = ChatError(error=type(exc).__name__, message=str(exc)[:500], query_id=query_id)
    return JSONResponse(status_code=status, content=body.model_dump())
