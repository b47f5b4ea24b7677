"""A body-size limit for the endpoints that parse their body whole (`/v1/chat`, `/v1/feedback`): a body over the
limit is answered 413 before the app holds it, by its Content-Length or, for a chunked upload, by counting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from querylog.service.producers import DRAIN_MAX_BYTES

__all__ = ["BODY_MAX_BYTES", "BodyLimitMiddleware"]

#: A question is at most 16,384 characters (64 KiB of UTF-8); ids and JSON add little. A MiB leaves room.
BODY_MAX_BYTES: Final = 1024 * 1024


class BodyLimitMiddleware:
    """Pure ASGI middleware: requests to `paths` whose body exceeds `limit` bytes get a 413 with a `detail`."""

    def __init__(self, app: ASGIApp, *, paths: Iterable[str], limit: int = BODY_MAX_BYTES) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 byte, got {limit}")
        self.app = app
        self.paths = frozenset(paths)
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        message = f"request body over {self.limit} bytes, the most {scope['path']} takes"
        try:
            declared: int | None = int(Headers(scope=scope)["content-length"])
        except (KeyError, ValueError):  # chunked; or a malformed length, which the server refuses itself
            declared = None
        if declared is not None and declared > self.limit:
            if declared <= DRAIN_MAX_BYTES:  # read and thrown away, so that the client sees the 413
                while (await receive()).get("more_body", False):
                    pass
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            # A chunked upload has no Content-Length: counted as it arrives, refused (via the app's own handler
            # for HTTPException) as soon as it is over, before the app has it all.
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, message)
            return received

        await self.app(scope, counted, send)
