"""Small sinks: in memory (tests, the contract reference) and stdout (one structlog JSON line per event)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from querylog.logging.codec import to_builtins
from querylog.logging.events import AnyEvent
from querylog.logging.metrics import MetricsProjection
from querylog.logging.projection import Batch, FileCheckpointSink, Sink
from querylog.logging.segments import Checkpoint

__all__ = ["MemorySink", "MetricsSink", "StdoutSink"]


class MemorySink(Sink):
    """Keeps every event in a list. Idempotent by event_id, like a real store should be."""

    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[AnyEvent] = []
        self._seen: set[str] = set()
        self._position: Checkpoint = {}

    def _write(self, batch: Batch) -> None:
        for event in batch.events:
            if event.event_id not in self._seen:
                self._seen.add(event.event_id)
                self.events.append(event)
        self._position = dict(batch.checkpoint)
        if batch.events:
            self.telemetry.sent(len(batch.events))

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)


class StdoutSink(FileCheckpointSink):
    """One JSON line per event through structlog (``"event"`` holds the event type)."""

    name = "stdout"

    def __init__(self, checkpoint_path: Path) -> None:
        super().__init__(checkpoint_path)
        self._logger = structlog.get_logger("querylog.events")

    def _send(self, events: Sequence[AnyEvent]) -> None:
        for event in events:
            fields: dict[str, Any] = to_builtins(event)
            fields.pop("event_type", None)
            self._logger.info(event.event_type, **fields)
        self.telemetry.sent(len(events))


class MetricsSink(Sink):
    """Feeds the metrics projection. Its checkpoint lives in memory: every process folds the whole log
    at start, so any worker's /metrics shows the same totals (see docs/metrics.md)."""

    name = "metrics"

    def __init__(self, projection: MetricsProjection) -> None:
        super().__init__()
        self.projection = projection
        self._position: Checkpoint = {}

    def _write(self, batch: Batch) -> None:
        self.projection.apply(batch.events)
        self._position = dict(batch.checkpoint)
        if batch.events:
            self.telemetry.sent(len(batch.events))

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)
