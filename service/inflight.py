"""A budget for the producer bodies a server holds at once (`/v1/events`, `/v1/traces`): a batch is parsed into
objects that weigh several times its bytes, so two dozen 20 MiB batches at once take gigabytes. A request that
would take the budget past its cap is refused (the endpoints answer 503, retry in a second) before its body is
read; one request alone is always let in, so a cap below the largest body only makes large batches take turns."""

from __future__ import annotations

import threading

import structlog

__all__ = ["InflightBudget"]

_log = structlog.get_logger("querylog.ingest")


class InflightBudget:
    """Bytes held by producer requests in flight: at most `cap`, except that one request alone always fits."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1 byte, got {cap}")
        self.cap = cap
        self._held = 0
        self._lock = threading.Lock()
        self._refusing = False  # a streak of refusals is logged once

    @property
    def held(self) -> int:
        return self._held

    def take(self, nbytes: int) -> bool:
        """Hold `nbytes` (give them back with `give`), or False if they do not fit now."""
        with self._lock:
            if self._held and self._held + nbytes > self.cap:
                if not self._refusing:
                    _log.warning("ingest_inflight_full", held=self._held, wanted=nbytes, cap=self.cap)
                self._refusing = True
                return False
            self._held += nbytes
            self._refusing = False
            return True

    def give(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes
