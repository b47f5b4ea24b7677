"""Helpers for testing code that uses querylog: capture emitted events, an in-memory sink, a live API."""

from querylog.logging.sinks import MemorySink
from querylog.testing._capture import CapturingEmitter, capture_events
from querylog.testing._server import ServerProcess, free_port, running_server

__all__ = ["CapturingEmitter", "MemorySink", "ServerProcess", "capture_events", "free_port", "running_server"]
