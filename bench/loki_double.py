"""A minimal Loki push endpoint on loopback, for throughput benchmarks when no real Loki is at hand.

    python bench/loki_double.py --port 3199

It answers like Loki 3.4.5 where a pusher can tell (shared/LOKI.md): ``POST /loki/api/v1/push`` takes plain or
gzip JSON, refuses a timestamp that is not a string with 400, answers 204; ``GET /ready`` says ready. It parses
every body (so it costs what parsing costs) and counts entries, readable at ``GET /bench/stats``. It stores
nothing and runs no queries: figures measured against it are loopback HTTP + JSON figures, never Loki's.
"""

from __future__ import annotations

import argparse
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

_lock = threading.Lock()
_stats = {"requests": 0, "entries": 0, "bytes": 0, "rejected": 0}


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as Loki does: a pusher's connection pool is part of what is measured.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than the request

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ready":
            self._reply(200, b"ready\n")
        elif self.path == "/bench/stats":
            with _lock:
                self._reply(200, orjson.dumps(_stats), "application/json")
        else:
            self._reply(404, b"404 page not found\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/bench/reset":
            with _lock:
                for key in _stats:
                    _stats[key] = 0
            self._reply(204)
            return
        if self.path != "/loki/api/v1/push":
            self._reply(404, b"404 page not found\n")
            return
        try:
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            payload = orjson.loads(body)
            entries = 0
            for stream in payload["streams"]:
                if not isinstance(stream["stream"], dict):
                    raise ValueError("stream labels must be an object")
                for value in stream["values"]:
                    if not isinstance(value[0], str):
                        # What Loki says to a JSON number as timestamp (shared/LOKI.md).
                        raise ValueError("loghttp.PushRequest.Streams: timestamp must be a string")
                    entries += 1
        except (ValueError, KeyError, TypeError, IndexError, OSError, EOFError) as exc:
            with _lock:
                _stats["rejected"] += 1
            self._reply(400, f"{exc}\n".encode())
            return
        if entries == 0:
            self._reply(422, b"no streams\n")
            return
        with _lock:
            _stats["requests"] += 1
            _stats["entries"] += entries
            _stats["bytes"] += len(raw)
        self._reply(204)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
