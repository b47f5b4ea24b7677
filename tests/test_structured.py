"""structlog, configured once: one UTF-8 JSON line per call, reusable by a user's own code."""

from __future__ import annotations

import io
import json

import structlog

from querylog.logging.structured import configure_structlog, console_logger


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


def test_a_terminal_gets_console_lines_and_a_pipe_json() -> None:
    class _Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = _Terminal()
    configure_structlog(stream=tty, force=True)
    structlog.get_logger().info("order_placed", 상품="삼성전자")
    line = tty.getvalue()
    assert "order_placed" in line and "상품" in line and "삼성전자" in line and not line.lstrip().startswith("{")
    piped = _Stream()
    configure_structlog(stream=piped, force=True)
    structlog.get_logger().info("order_placed")
    assert json.loads(piped.buffer.getvalue())["event"] == "order_placed"
    forced = _Terminal()
    forced.buffer = io.BytesIO()  # type: ignore[attr-defined]
    configure_structlog(stream=forced, force=True, console=False)  # QUERYLOG_STDOUT_FORMAT=json on a terminal
    structlog.get_logger().info("order_placed")
    assert json.loads(forced.buffer.getvalue())["event"] == "order_placed"  # type: ignore[attr-defined]


class _Writes(io.StringIO):
    """A terminal-like stream that records each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)

    def isatty(self) -> bool:
        return True


def test_a_console_line_is_one_write_so_two_streams_on_one_terminal_never_split_it() -> None:
    # The projector child writes its echo to stdout and its own diagnostics to stderr, from different threads: a
    # line written in two calls (text, then newline) let the other stream's line land in the middle of it.
    out = _Writes()
    console_logger(out).info("삼성전자 주가", ms=3)
    configure_structlog(stream=out, force=True, console=True)
    structlog.get_logger().info("projector_leading", sink="metrics")
    assert len(out.writes) == 2 and all(w.endswith("\n") and w.count("\n") == 1 for w in out.writes), out.writes
