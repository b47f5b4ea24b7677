"""What the producer endpoints (`/v1/events`, `/v1/traces`) took and refused, as `<ns>_ingest_*` series on
`/metrics`: per API process, like the sinks' own counters. Without them a producer whose batches are all refused
shows only in log lines."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ENDPOINTS", "OUTCOMES", "IngestCounts"]

ENDPOINTS: Final = ("events", "traces")
#: An event appended; one skipped as already taken (a retry); one in a batch refused whole (422, 413).
OUTCOMES: Final = ("accepted", "duplicate", "refused")


class IngestCounts:
    """Counters of the producer endpoints, one owner: the endpoints count, `/metrics` reads. Thread-safe."""

    def __init__(self, namespace: str, *, inflight: Callable[[], int] = lambda: 0) -> None:
        """`inflight`: the bytes of producer bodies held now (`InflightBudget.held`), read at each scrape."""
        self.namespace = namespace
        self._inflight = inflight
        self._lock = threading.Lock()
        self._events: Counter[tuple[str, str]] = Counter()
        self._requests_refused: Counter[tuple[str, str]] = Counter()
        self._spans_left_out: Counter[str] = Counter()

    def events(self, endpoint: str, outcome: str, n: int) -> None:
        with self._lock:
            self._events[(endpoint, outcome)] += n

    def request_refused(self, endpoint: str, status: int) -> None:
        """A request answered 4xx/5xx (malformed, too large, invalid, unavailable): no event taken, but for a 503 of a
        write the disk cut short, whose events before the cut are counted accepted."""
        with self._lock:
            self._requests_refused[(endpoint, str(status))] += 1

    def spans_left_out(self, reasons: Counter[str]) -> None:
        with self._lock:
            self._spans_left_out.update(reasons)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        ns = self.namespace
        events = CounterMetricFamily(
            f"{ns}_ingest_events",
            "Events producers sent, by endpoint and what became of them.",
            labels=["endpoint", "outcome"],
        )
        refused = CounterMetricFamily(
            f"{ns}_ingest_requests_refused",
            "Producer requests refused whole, by endpoint and status.",
            labels=["endpoint", "status"],
        )
        held = GaugeMetricFamily(
            f"{ns}_ingest_inflight_bytes",
            "Bytes of producer bodies being read or ingested now (QUERYLOG_INGEST_INFLIGHT_MAX_BYTES caps them).",
            value=self._inflight(),
        )
        left_out = CounterMetricFamily(
            f"{ns}_ingest_spans_left_out",
            "OTLP spans /v1/traces left out of an export it took, by reason.",
            labels=["reason"],
        )
        with self._lock:
            for endpoint in ENDPOINTS:  # at zero from the first scrape: rate() sees the first refusal
                for outcome in OUTCOMES:
                    events.add_metric([endpoint, outcome], self._events[(endpoint, outcome)])
            for (endpoint, status), n in sorted(self._requests_refused.items()):
                refused.add_metric([endpoint, status], n)
            for reason, n in sorted(self._spans_left_out.items()):
                left_out.add_metric([reason], n)
        yield from (events, refused, left_out, held)
