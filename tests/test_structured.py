"""structlog, configured once: one UTF-8 JSON line per call, reusable by a user's own code."""

from __future__ import annotations

import io
import json

import structlog

from querylog.logging.structured import configure_structlog


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.buffer = io.BytesIO()


def test_one_json_line_per_call_with_korean_unescaped() -> None:
    out = _Stream()
    configure_structlog(stream=out, force=True)
    structlog.get_logger().info("order_placed", 상품="삼성전자", qty=3)
    raw = out.buffer.getvalue()
    assert raw.count(b"\n") == 1
    assert "삼성전자".encode() in raw and b"\\u" not in raw
    line = json.loads(raw)
    assert line["event"] == "order_placed" and line["qty"] == 3 and line["level"] == "info" and "timestamp" in line


def test_configure_is_idempotent_unless_forced() -> None:
    first, second = _Stream(), _Stream()
    configure_structlog(stream=first, force=True)
    configure_structlog(stream=second)
    structlog.get_logger().info("x")
    assert first.buffer.getvalue() and not second.buffer.getvalue()
