"""Helpers for testing code that uses querylog: captured events, an in-memory sink, a live API, a recorded Loki."""

from querylog.logging.sinks import MemorySink
from querylog.testing._capture import CapturingEmitter, capture_events
from querylog.testing._loki import Fault, RecordedLoki, StoredEntry
from querylog.testing._server import ServerProcess, free_port, running_server

__all__ = [
    "CapturingEmitter",
    "Fault",
    "MemorySink",
    "RecordedLoki",
    "ServerProcess",
    "StoredEntry",
    "capture_events",
    "free_port",
    "running_server",
]
