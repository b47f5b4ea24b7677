"""Reconcile the projections with the log: the same counts per event type and per intent everywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.logging.codec import DecodeError, decode
from querylog.logging.events import AnyEvent, IntentClassified
from querylog.logging.metrics import MetricsProjection
from querylog.logging.segments import LogReader

__all__ = ["Counts", "ReconcileReport", "count_events", "count_lake", "count_loki", "count_metrics", "reconcile"]

_TERMINAL = ("query_completed", "query_failed")


@dataclass
class Counts:
    """What one store holds: events by type, and finished queries by intent."""

    events: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ReconcileReport:
    sources: dict[str, Counts]
    rows: list[tuple[str, str, dict[str, int | None]]]  # (kind, key, {source: count})

    @property
    def disagreements(self) -> list[tuple[str, str, dict[str, int | None]]]:
        return [row for row in self.rows if len({v for v in row[2].values() if v is not None}) > 1]

    @property
    def clean(self) -> bool:
        return not self.disagreements


def count_events(events: Iterable[AnyEvent]) -> Counts:
    """Counts the way the metrics projection attributes intents: the terminal event's intent, else the one
    classified, else ``unknown``."""
    counts = Counts()
    classified: dict[str, str] = {}
    for event in events:
        counts.events[event.event_type] += 1
        if isinstance(event, IntentClassified):
            classified[event.query_id] = event.intent
        elif event.event_type in _TERMINAL:
            intent = getattr(event, "intent", None) or classified.pop(event.query_id, None) or "unknown"
            counts.intents[intent] += 1
    return counts


def _log_events(settings: Settings, since: datetime | None) -> Iterable[AnyEvent]:
    for batch in LogReader(settings.log_dir).iter_all():
        for line in batch.lines:
            try:
                event = decode(line)
            except DecodeError:
                continue  # counted as corrupt by the projections; not an event anywhere
            if since is None or event.ts >= since:
                yield event


def count_lake(settings: Settings, since: datetime | None) -> Counts:
    counts = Counts()
    with Catalog(settings.lake_dir) as catalog:
        where, params = ("WHERE ts >= ?", [since]) if since else ("", [])
        for event_type, n in catalog.query(f"SELECT event_type, count(*) FROM events {where} GROUP BY 1", params)[1]:
            counts.events[event_type] = n
        # The same attribution as count_events, in SQL.
        sql = f"""
            WITH e AS (SELECT * FROM events {where}),
            cls AS (
                SELECT query_id, any_value(intent) AS intent FROM e
                WHERE event_type = 'intent_classified' GROUP BY 1
            )
            SELECT coalesce(t.intent, cls.intent, 'unknown') AS intent, count(*)
            FROM e AS t LEFT JOIN cls USING (query_id)
            WHERE t.event_type IN ('query_completed', 'query_failed')
            GROUP BY 1
        """
        for intent, n in catalog.query(sql, params)[1]:
            counts.intents[intent] = n
    return counts


def count_metrics(exposition: str, namespace: str) -> Counts:
    """Counts from Prometheus text: ``<ns>_events_total{event_type}`` and ``<ns>_queries_total{intent}``."""
    counts = Counts()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == f"{namespace}_events_total":
                counts.events[sample.labels["event_type"]] += int(sample.value)
            elif sample.name == f"{namespace}_queries_total":
                counts.intents[sample.labels["intent"]] += int(sample.value)
    counts.events = Counter({k: v for k, v in counts.events.items() if v})
    counts.intents = Counter({k: v for k, v in counts.intents.items() if v})
    return counts


def count_loki(client: httpx.Client, settings: Settings, since: datetime, now: datetime) -> Counts:
    """Counts from Loki's query API over [since, now]. LogQL ranges are whole seconds."""
    selector = f'app="{settings.service}", env="{settings.env}"'
    seconds = max(1, int((now - since).total_seconds()) + 1)
    counts = Counts()
    for sample in _loki_vector(client, f"sum by (event) (count_over_time({{{selector}}}[{seconds}s]))", now):
        counts.events[sample["metric"]["event"]] = int(float(sample["value"][1]))
    terminal = f'{{{selector}, event=~"query_completed|query_failed"}} | json intent'
    for sample in _loki_vector(client, f"sum by (intent) (count_over_time({terminal} [{seconds}s]))", now):
        counts.intents[sample["metric"].get("intent") or "unknown"] = int(float(sample["value"][1]))
    return counts


def _loki_vector(client: httpx.Client, query: str, now: datetime) -> list[dict[str, Any]]:
    resp = client.get("/loki/api/v1/query", params={"query": query, "time": str(int(now.timestamp() * 1e9))})
    resp.raise_for_status()
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


def reconcile(
    settings: Settings,
    *,
    since: datetime | None = None,
    metrics_text: str | None = None,
    loki: httpx.Client | None = None,
) -> ReconcileReport:
    """Compare the log with the lake, the metrics (live text if given, else a replay of the log) and Loki.

    With `since`, the metrics are left out: Prometheus counters are totals since a process started, not a
    window of event time.
    """
    log_events = list(_log_events(settings, since))
    sources: dict[str, Counts] = {"log": count_events(log_events), "lake": count_lake(settings, since)}
    if since is None:
        if metrics_text is None:
            projection = MetricsProjection(
                settings.metrics_namespace, prices=settings.prices(), names=settings.company_names()
            )
            projection.apply(log_events)
            metrics_text = projection.exposition().decode()
        sources["metrics"] = count_metrics(metrics_text, settings.metrics_namespace)
    if loki is not None:
        now = datetime.now(UTC)
        start = since or min((e.ts for e in log_events), default=now)
        sources["loki"] = count_loki(loki, settings, start, now)
    return ReconcileReport(sources=sources, rows=_rows(sources))


def _rows(sources: Mapping[str, Counts]) -> list[tuple[str, str, dict[str, int | None]]]:
    rows: list[tuple[str, str, dict[str, int | None]]] = []
    for kind in ("events", "intents"):
        keys = sorted(set().union(*(getattr(c, kind).keys() for c in sources.values())))
        for key in keys:
            rows.append((kind, key, {name: getattr(c, kind).get(key, 0) for name, c in sources.items()}))
    return rows
