"""Small sinks: in memory (tests, the contract reference) and stdout (one structlog JSON line per event)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from querylog.logging.codec import to_builtins
from querylog.logging.events import AnyEvent
from querylog.logging.metrics import MetricsProjection
from querylog.logging.metrics_snapshot import SNAPSHOT_FORMAT, MetricsSnapshot, load_snapshot, write_snapshot
from querylog.logging.projection import Batch, FileCheckpointSink, Sink
from querylog.logging.segments import Checkpoint

__all__ = ["MemorySink", "MetricsSink", "StdoutSink"]

_log = structlog.get_logger("querylog.metrics")


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
    """Feeds the metrics projection. Every process folds the whole log, so any worker's /metrics shows the same
    totals (see docs/metrics.md). With a `snapshot_path`, it starts from the newest snapshot of the fold and
    writes one every `snapshot_every_s` and on close (`logging/metrics_snapshot.py`): a restart then folds only
    what came after, and no counter goes backwards."""

    name = "metrics"

    def __init__(
        self,
        projection: MetricsProjection,
        *,
        snapshot_path: Path | None = None,
        log_dir: Path | None = None,
        snapshot_every_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.projection = projection
        self.snapshot_path = snapshot_path
        self.log_dir = log_dir
        self.snapshot_every_s = snapshot_every_s
        self._position: Checkpoint = {}
        self._last_snapshot = time.monotonic()
        self._dirty = False
        #: Events the loaded snapshot had folded (0: started from nothing).
        self.restored_events = 0

    def _open(self) -> None:
        if self.snapshot_path is None:
            return
        snapshot = load_snapshot(self.snapshot_path)
        if snapshot is None:
            return
        mine = self.projection.config()
        if _without_prices(snapshot.config) != _without_prices(mine):
            self.telemetry.fell_back("snapshot_config_changed")
            _log.warning(
                "metrics_snapshot_ignored",
                reason="the namespace, buckets or staleness changed since it was written: folding the log again",
                path=str(self.snapshot_path),
            )
            return
        if snapshot.config.get("prices") != mine.get("prices"):
            # Counters never go back: the cost counted so far keeps the prices it was counted with, and new
            # responses are priced with the new table (the lake re-prices history: querylog replay parquet).
            _log.info("metrics_snapshot_prices_changed", was=snapshot.config.get("prices"), now=mine.get("prices"))
        self.projection.restore_state(snapshot.state)
        self._position = dict(snapshot.checkpoint)
        self.restored_events = sum(snapshot.state["events"].values())
        _log.info("metrics_snapshot_loaded", events=self.restored_events, written_at=snapshot.written_at)

    def _write(self, batch: Batch) -> None:
        self.projection.apply(batch.events)
        self._position = dict(batch.checkpoint)
        if batch.events:
            self.telemetry.sent(len(batch.events))
            self._dirty = True
        if self._dirty and time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
            self.snapshot()

    def _close(self) -> None:
        if self._dirty:
            self.snapshot()

    def _checkpoint(self) -> Checkpoint:
        return dict(self._position)

    def snapshot(self) -> bool:
        """Write a snapshot of the fold now (False without a path, or when a newer one is there already)."""
        if self.snapshot_path is None:
            return False
        self._last_snapshot = time.monotonic()
        snapshot = MetricsSnapshot(
            format=SNAPSHOT_FORMAT,
            config=self.projection.config(),
            checkpoint=dict(self._position),
            state=self.projection.export_state(),
            written_at=time.time(),
        )
        try:
            written = write_snapshot(self.snapshot_path, snapshot, log_dir=self.log_dir)
        except OSError as exc:  # a full disk must not stop the fold: the next snapshot tries again
            self.telemetry.error("snapshot")
            _log.error("metrics_snapshot_failed", error=str(exc))
            return False
        self._dirty = False
        return written


def _without_prices(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "prices"}
