"""Capturing emitted events in a user's tests, like ``structlog.testing.capture_logs``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from querylog.logging.events import Event, Prechecked
from querylog.logging.tracker import QueryTracker

__all__ = ["CapturingEmitter", "capture_events"]


class CapturingEmitter:
    """An `Emitter` that keeps events in a list: hand it to a `QueryTracker` in tests."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flushes = 0
        self._lock = threading.Lock()

    def append(self, event: Event) -> None:
        # Kept as the event a reader of the log gets: a prechecked event becomes its event class, checked again.
        kept = event.checked() if isinstance(event, Prechecked) else event
        with self._lock:
            self.events.append(kept)

    def flush(self) -> None:
        self.flushes += 1

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.event_type == event_type]

    @property
    def event_types(self) -> list[str]:
        return [e.event_type for e in self.events]


@contextmanager
def capture_events(tracker: QueryTracker) -> Iterator[list[Event]]:
    """Temporarily route `tracker`'s events into a list (also for a running app's tracker):

    with capture_events(app.state.querylog.tracker) as events:
        client.post("/v1/chat", json={"query": "네이버 주가"})
    assert [e.event_type for e in events][-1] == "query_completed"
    """
    capture = CapturingEmitter()
    original = tracker.emitter
    tracker.emitter = capture
    try:
        yield capture.events
    finally:
        tracker.emitter = original
