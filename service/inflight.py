"""A budget for the producer bodies a server holds at once (`/v1/events`, `/v1/traces`): a batch is parsed into
objects that weigh several times its bytes, so two dozen 20 MiB batches at once take gigabytes. A request that
would take the budget past its cap is refused (the endpoints answer 503, retry in a second) before its body is
read; one request alone is always let in, so a cap below the largest body only makes large batches take turns."""

from __future__ import annotations

import threading

import structlog

__all__ = ["Hold", "InflightBudget"]

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

    def hold(self, nbytes: int) -> Hold | None:
        """A hold of `nbytes` (give it back with `Hold.release`), or None if they do not fit now."""
        return Hold(self, nbytes) if self._take(nbytes, own=0) else None

    def _take(self, nbytes: int, *, own: int) -> bool:
        """Take `nbytes` more for a request holding `own` already: they fit when nothing else is held (and nothing
        always fits: a body refused unread holds none)."""
        with self._lock:
            if nbytes and self._held > own and self._held + nbytes > self.cap:
                if not self._refusing:
                    _log.warning("ingest_inflight_full", held=self._held, wanted=nbytes, cap=self.cap)
                self._refusing = True
                return False
            self._held += nbytes
            self._refusing = False
            return True

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes


class Hold:
    """One request's share of an `InflightBudget`."""

    def __init__(self, budget: InflightBudget, nbytes: int) -> None:
        self.budget = budget
        self.nbytes = nbytes

    def grow_to(self, nbytes: int) -> bool:
        """Hold `nbytes` in all (a gzip body, once inflated), or False if the more does not fit now."""
        if nbytes <= self.nbytes:
            return True
        if not self.budget._take(nbytes - self.nbytes, own=self.nbytes):
            return False
        self.nbytes = nbytes
        return True

    def release(self) -> None:
        self.budget._give(self.nbytes)
        self.nbytes = 0
