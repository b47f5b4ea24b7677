"""Request ids: take a valid ``X-Request-ID`` or make one, echo it back, and bind it to structlog for the request."""

from __future__ import annotations

import re
from typing import Final

import structlog
import uuid_utils
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "valid_request_id"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
_HEADER_KEY: Final = REQUEST_ID_HEADER.lower().encode("latin-1")
# Ids end up in log lines and response headers: a strict alphabet keeps both free of injected text.
_VALID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: What Starlette's own outermost handler answers to an unhandled exception (when not in debug mode).
_INTERNAL_ERROR: Final = PlainTextResponse("Internal Server Error", status_code=500)


def valid_request_id(value: str) -> bool:
    """Whether a caller's request id is acceptable: 1 to 128 characters of ``[A-Za-z0-9._-]``."""
    return _VALID.fullmatch(value) is not None


class RequestIdMiddleware:
    """Pure ASGI middleware (no `BaseHTTPMiddleware`: that one buffers streaming bodies and runs the app in
    another task, where context variables bound here would not be seen).

    An invalid incoming id is replaced, not rejected: a request id is for correlation, never a reason to fail.
    The id is in ``scope["state"]["request_id"]`` (``request.state.request_id``) and in every structlog line
    logged while the request runs, including from sync endpoints (Starlette copies the context into its
    threadpool).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or uuid_utils.uuid7().hex
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode("ascii")

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER_KEY]
                headers.append((_HEADER_KEY, encoded))
                message = {**message, "headers": headers}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette's outermost error handler would answer 500 without our header: answer it here, with the
            # id the caller can quote, then re-raise so that the server still logs the traceback.
            if not started:
                await _INTERNAL_ERROR(scope, receive, send_with_id)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


def _incoming(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == _HEADER_KEY:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if valid_request_id(text) else None
    return None
