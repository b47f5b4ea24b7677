"""structlog, configured once, the structlog way: JSON lines when the output is a file, a pipe or a container's
stdout (what a collector reads), a readable coloured console line when a person watches a terminal. Reusable by
a user's own code:

    from querylog.logging.structured import configure_structlog
    configure_structlog()
    structlog.get_logger().info("order_placed", order_id="o-1", 상품="삼성전자")

JSON lines are rendered by orjson, so Korean stays readable bytes (never ``\\uXXXX``): Loki's line filters
match raw bytes, and an escaped line would never match ``|= "네이버"``.
"""

from __future__ import annotations

import logging as std_logging
import sys
from typing import Any, BinaryIO, Final, TextIO

import orjson
import structlog
from structlog.typing import Processor

__all__ = ["bytes_out", "configure_structlog", "console_logger", "is_terminal", "json_timestamp", "render_json"]

_configured = False


def render_json(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def is_terminal(stream: TextIO) -> bool:
    """Whether a person is watching `stream` (a closed or fake stream is not a terminal)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _bytes(stream: TextIO) -> Any:
    """The binary side of a text stream (orjson renders bytes), or the stream itself when it has none."""
    return getattr(stream, "buffer", stream)


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        json_timestamp,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def bytes_out(stream: TextIO | None = None) -> BinaryIO:
    """Where JSON lines for `stream` (stdout by default) are written: its binary side."""
    out: BinaryIO = _bytes(stream or sys.stdout)
    return out


#: The ``timestamp`` every JSON line carries: when it was written, in UTC (``2026-12-07T18:59:17.093260Z``).
json_timestamp: Final = structlog.processors.TimeStamper(fmt="iso", utc=True)


def console_logger(stream: TextIO | None = None, *, timestamp: bool = True) -> Any:
    """A logger of its own writing one readable line per call to `stream`, coloured when it is a terminal."""
    out = stream or sys.stdout
    processors: list[Processor] = [structlog.processors.add_log_level]
    if timestamp:
        processors.append(structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False))
    processors.append(structlog.dev.ConsoleRenderer(colors=is_terminal(out), pad_event_to=0, sort_keys=False))
    # One write a line (not print's two): lines from threads writing to stdout and stderr of the same terminal
    # (the projector child's echo and its own diagnostics) never interleave mid-line.
    return structlog.wrap_logger(structlog.WriteLogger(out), processors=processors)


def configure_structlog(
    *,
    stream: TextIO | None = None,
    level: int = std_logging.INFO,
    force: bool = False,
    console: bool | None = None,
) -> None:
    """Configure structlog for `stream` (stdout): JSON lines, or console lines when `console` (by default, when
    `stream` is a terminal). Idempotent unless `force`."""
    global _configured
    if _configured and not force:
        return
    out = stream or sys.stdout
    if console is None:
        console = is_terminal(out)
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=is_terminal(out))
        factory: Any = structlog.WriteLoggerFactory(file=out)  # one write a line, as console_logger
    else:
        renderer = structlog.processors.JSONRenderer(serializer=render_json)
        factory = structlog.BytesLoggerFactory(file=_bytes(out))
    structlog.configure(
        processors=[*_shared(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _configured = True
