"""Handlers for `querylog.testing`'s `serving` (a throwaway HTTP server on a free loopback port), for tests that
need a real socket to talk to."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from querylog.testing._server import serving

__all__ = ["answering", "serving"]


def answering(body: bytes, content_type: str = "text/plain") -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with 200 and `body`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
