"""structlog, configured once: one UTF-8 JSON line per log call on stdout, reusable by a user's own code.

    from querylog.logging.structured import configure_structlog
    configure_structlog()
    structlog.get_logger().info("order_placed", order_id="o-1", 상품="삼성전자")

Lines are rendered by orjson, so Korean stays readable bytes (never ``\\uXXXX``): Loki's line filters
match raw bytes, and an escaped line would never match ``|= "네이버"``.
"""

from __future__ import annotations

import logging as std_logging
import sys
from typing import Any, TextIO

import orjson
import structlog

__all__ = ["configure_structlog", "render_json"]

_configured = False


def render_json(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def configure_structlog(*, stream: TextIO | None = None, level: int = std_logging.INFO, force: bool = False) -> None:
    """Configure structlog for JSON lines on `stream` (stdout). Idempotent unless `force`."""
    global _configured
    if _configured and not force:
        return
    out = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=render_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(file=getattr(out, "buffer", out)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _configured = True
