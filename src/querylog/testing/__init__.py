"""Helpers for testing code that uses querylog: capture emitted events, an in-memory sink."""

from querylog.logging.sinks import MemorySink
from querylog.testing._capture import CapturingEmitter, capture_events

__all__ = ["CapturingEmitter", "MemorySink", "capture_events"]
