"""Reconcile the projections with the log: the same counts per event type and per intent everywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.logging.codec import DecodeError, decode
from querylog.logging.events import MAX_AHEAD, UNCLASSIFIED, AnyEvent, IntentClassified
from querylog.logging.metrics import OTHER_LABEL, MetricsProjection
from querylog.logging.segments import LogReader, is_erased, last_written, segment_paths

__all__ = [
    "ARRIVAL_ORDER",
    "LOKI_WINDOW",
    "Counts",
    "ReconcileReport",
    "count_events",
    "count_lake",
    "count_loki",
    "count_metrics",
    "history_floor",
    "loki_range_s",
    "reconcile",
]

_TERMINAL = ("query_completed", "query_failed")


@dataclass
class Counts:
    """What one store holds: events by type, and finished queries by intent."""

    events: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)


#: The column Loki is held to when Loki cannot hold what the log does: events it never took (older than it accepts,
#: or ahead of now), or a query's classification that its last event does not repeat (LogQL reads one line at a
#: time, so Loki counts such a query ``unclassified``).
LOKI_WINDOW: Final = "log_in_loki_window"
#: The column the metrics are held to when a producer sent a query's end before its classification: the metrics
#: counted it as it came (``unclassified``), the lake and the log's own count by the classification it has.
ARRIVAL_ORDER: Final = "log_in_arrival_order"


@dataclass(frozen=True)
class ReconcileReport:
    sources: dict[str, Counts]
    rows: list[tuple[str, str, dict[str, int | None]]]  # (kind, key, {source: count})
    #: The source each one is compared with, where it is not the log: Loki with `LOKI_WINDOW`, when present.
    baselines: dict[str, str] = field(default_factory=dict)
    #: The time range Loki was counted over (since, until), when it was.
    loki_window: tuple[datetime, datetime] | None = None
    #: `history_floor`, when the stores' histories differ before it; and the start of the window compared.
    floor: datetime | None = None
    since: datetime | None = None
    #: Log lines that are not events (torn, or written with values the schema refuses): no store holds them, so
    #: every count above agrees without them; each is an event written and lost.
    unreadable: int = 0
    unreadable_example: str | None = None
    #: When the log was last written (its newest segment's modification time): events arriving as the stores are
    #: read one after another make them differ by a few, and a difference means little then.
    last_write: datetime | None = None
    #: Events the running API's log refused, by reason (``<ns>_sink_events_dropped_total{sink="log"}`` on the
    #: metrics compared: a full disk, a full buffer): in no store, so the counts agree without them. Said, not
    #: failed on: a producer's batch refused so was answered 503, and is in the stores if it was sent again.
    log_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def disagreements(self) -> list[tuple[str, str, dict[str, int | None]]]:
        derived = set(self.baselines.values())  # the log's own counts over a window: not a store to check

        def differs(counts: dict[str, int | None], source: str) -> bool:
            mine, theirs = counts[source], counts.get(self.baselines.get(source, "log"))
            return mine is not None and theirs is not None and mine != theirs

        return [row for row in self.rows if any(differs(row[2], s) for s in row[2] if s != "log" and s not in derived)]

    @property
    def clean(self) -> bool:
        return not self.disagreements and not self.unreadable

    @property
    def loki_shortfall(self) -> int:
        """Events Loki counts fewer than its baseline, summed over the event types where it counts fewer: not
        shipped yet, or not sent because Loki would refuse them (counted as dropped by reason). 0 without Loki."""
        return self._gap("loki", -1)

    @property
    def loki_surplus(self) -> int:
        """Events Loki counts beyond its baseline (the log, or `LOKI_WINDOW`), summed over the event types where it
        counts more: entries stored twice (docs/loki.md, "Checkpoint and duplicates"), another data directory's
        under the same labels, or erased ones Loki has not deleted yet. 0 without Loki."""
        return self._gap("loki", 1)

    @property
    def metrics_surplus(self) -> int:
        """Events the metrics count beyond their baseline, summed over the event types where they count more:
        erased events (the counters never go down), or events counted as they came that the log no longer holds.
        0 without the metrics."""
        return self._gap("metrics", 1)

    def _gap(self, source: str, sign: int) -> int:
        baseline = self.baselines.get(source, "log")
        gap = 0
        for kind, _, counts in self.rows:
            mine, theirs = counts.get(source), counts.get(baseline)
            if kind == "events" and mine is not None and theirs is not None and (mine - theirs) * sign > 0:
                gap += (mine - theirs) * sign
        return gap


def count_events(events: Iterable[AnyEvent], *, in_arrival_order: bool = False, own_intent: bool = False) -> Counts:
    """Finished queries by intent: the terminal event's intent, else the one classified, else ``UNCLASSIFIED``;
    the classification wherever it stands in the log, as the lake's SQL finds it. `in_arrival_order`: only one
    that came before the terminal event, as the metrics projection (a fold, which cannot wait) attributes it.
    `own_intent`: the terminal event's own only, as Loki's LogQL reads it (one line at a time)."""
    events = list(events)
    counts = Counts()
    classified: dict[str, str] = {}
    if not (in_arrival_order or own_intent):
        classified = {e.query_id: e.intent for e in events if isinstance(e, IntentClassified)}
    for event in events:
        counts.events[event.event_type] += 1
        if isinstance(event, IntentClassified):
            if in_arrival_order:
                classified[event.query_id] = event.intent
        elif event.event_type in _TERMINAL:
            own = getattr(event, "intent", None)
            intent = own or (None if own_intent else classified.pop(event.query_id, None)) or UNCLASSIFIED
            counts.intents[intent] += 1
    return counts


@dataclass
class _Unreadable:
    count: int = 0
    example: str | None = None


def _log_events(settings: Settings, unreadable: _Unreadable) -> Iterable[AnyEvent]:
    for batch in LogReader(settings.log_dir).iter_all():
        for line in batch.lines:
            try:
                yield decode(line)
            except DecodeError as exc:  # skipped by every projection (`log_line_corrupt`): an event nowhere
                if is_erased(line):  # blanked by an older release's erase, which listed no segments
                    continue
                unreadable.count += 1
                unreadable.example = unreadable.example or f"{exc} in {line[:120]!r}"


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
            SELECT coalesce(nullif(t.intent, ''), cls.intent, '{UNCLASSIFIED}') AS intent, count(*)
            FROM e AS t LEFT JOIN cls USING (query_id)
            WHERE t.event_type IN ('query_completed', 'query_failed')
            GROUP BY 1
        """
        for intent, n in catalog.query(sql, params)[1]:
            counts.intents[intent] = n
    return counts


def count_metrics(exposition: str, namespace: str) -> Counts:
    """Counts from Prometheus text: ``<ns>_events_total{event_type}`` and ``<ns>_queries_total{intent}``.
    `ValueError` if the text is no exposition, not querylog's (neither family: another exporter's page, or another
    namespace), or querylog's before its metrics fold published them (a server just started): each would read as
    every count missing."""
    counts = Counts()
    ours, ours_elsewhere, families = False, False, {f"{namespace}_{name}" for name in ("events", "queries")}
    for family in text_string_to_metric_families(exposition):
        ours = ours or family.name.removesuffix("_total") in families
        ours_elsewhere = ours_elsewhere or family.name.startswith(f"{namespace}_")
        for sample in family.samples:
            if sample.name == f"{namespace}_events_total":
                counts.events[sample.labels["event_type"]] += int(sample.value)
            elif sample.name == f"{namespace}_queries_total":
                counts.intents[sample.labels["intent"]] += int(sample.value)
    if not ours and ours_elsewhere:  # a server that just started: its metrics fold publishes once it has read the log
        raise ValueError(f"no {namespace}_events_total on it yet: the metrics are starting; try again in a moment")
    if not ours:
        raise ValueError(f"no {namespace}_events_total on it: not querylog's metrics, or another namespace")
    counts.events = Counter({k: v for k, v in counts.events.items() if v})
    counts.intents = Counter({k: v for k, v in counts.intents.items() if v})
    return counts


def log_dropped(exposition: str, namespace: str) -> dict[str, int]:
    """Events the log refused since the server started, by reason, from its ``/metrics`` text."""
    dropped: Counter[str] = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == f"{namespace}_sink_events_dropped_total" and sample.labels.get("sink") == "log":
                dropped[sample.labels.get("reason", "")] += int(sample.value)
    return {reason: n for reason, n in sorted(dropped.items()) if n}


def loki_range_s(since: datetime, now: datetime) -> int:
    """The whole seconds of the LogQL range that covers [since, now] (the range is (now - seconds, now])."""
    return max(1, int((now - since).total_seconds()) + 1)


def count_loki(client: httpx.Client, settings: Settings, since: datetime, now: datetime) -> Counts:
    """Counts from Loki's query API over [since, now], over every app and env this data directory shipped under
    (`state/loki-labels.json`; these settings' own when it shipped nothing yet): a reconcile run with another
    `QUERYLOG_ENV` than the server's counts what the server shipped. LogQL ranges are whole seconds
    (`loki_range_s`)."""
    from querylog.erase import logql_string, shipped_loki_labels

    seconds = loki_range_s(since, now)
    counts = Counts()
    for app, env in shipped_loki_labels(settings) or [(settings.service, settings.env)]:
        selector = f"app={logql_string(app)}, env={logql_string(env)}"
        for sample in _loki_vector(client, f"sum by (event) (count_over_time({{{selector}}}[{seconds}s]))", now):
            counts.events[sample["metric"]["event"]] += int(float(sample["value"][1]))
        terminal = f'{{{selector}, event=~"query_completed|query_failed"}} | json intent'
        for sample in _loki_vector(client, f"sum by (intent) (count_over_time({terminal} [{seconds}s]))", now):
            counts.intents[sample["metric"].get("intent") or UNCLASSIFIED] += int(float(sample["value"][1]))
    return counts


def _loki_vector(client: httpx.Client, query: str, now: datetime) -> list[dict[str, Any]]:
    resp = client.get("/loki/api/v1/query", params={"query": query, "time": str(int(now.timestamp() * 1e9))})
    if resp.is_error:  # Loki says why (a range over its max_query_length, a tenant it does not know): keep it
        raise httpx.HTTPStatusError(
            f"Loki answered {resp.status_code} to {resp.request.url.path}: {resp.text.strip()[:300]}",
            request=resp.request,
            response=resp,
        )
    result: list[dict[str, Any]] = resp.json()["data"]["result"]
    return result


def reconcile(
    settings: Settings,
    *,
    since: datetime | None = None,
    metrics_text: str | None = None,
    loki: httpx.Client | None = None,
    loki_max_age_s: float | None = None,
) -> ReconcileReport:
    """Compare the log with the lake, the metrics (live text if given, else a replay of the log) and Loki.

    With `since`, the metrics are left out: Prometheus counters are totals since a process started, not a
    window of event time. Once the log was trimmed or the lake dropped days (`history_floor`), the comparison
    starts there, as with `since`.

    Loki is counted over the window it can hold: from `since` (else the oldest event), but no further back than
    `loki_max_age_s` (what the Loki projection admits; older events are counted as dropped there, never pushed),
    up to now. When the log holds events outside that window (a backfill, a producer's clock ahead), Loki is
    compared with the log's counts over the same window, shown as `LOKI_WINDOW`.
    """
    floor = history_floor(settings)
    if floor is not None and (since is None or since < floor):
        since = floor  # before it, the log (trimmed) or the lake (retention) no longer holds everything
    unreadable = _Unreadable()
    every = list(_log_events(settings, unreadable))
    log_events = every if since is None else [e for e in every if e.ts >= since]
    sources: dict[str, Counts] = {"log": count_events(log_events), "lake": count_lake(settings, since)}
    baselines: dict[str, str] = {}
    if since is None:
        if metrics_text is None:
            projection = MetricsProjection(
                settings.metrics_namespace, prices=settings.prices(), names=settings.company_names(strict=True)
            )
            projection.apply(log_events)
            metrics_text = projection.exposition().decode()
        sources["metrics"] = count_metrics(metrics_text, settings.metrics_namespace)
        if (as_folded := count_events(log_events, in_arrival_order=True)) != sources["log"]:
            sources[ARRIVAL_ORDER] = as_folded
            baselines["metrics"] = ARRIVAL_ORDER
    window: tuple[datetime, datetime] | None = None
    if loki is not None:
        now = datetime.now(UTC)
        start = since or min((e.ts for e in log_events), default=now)
        if loki_max_age_s is not None:
            start = max(start, now - timedelta(seconds=loki_max_age_s))
        covered = now - timedelta(seconds=loki_range_s(start, now))  # LogQL's range: (covered, now], whole seconds
        held = [e for e in every if covered < e.ts <= now]  # `since`'s fraction of a second too, as Loki has it
        if (in_window := count_events(held, own_intent=True)) != sources["log"]:
            sources[LOKI_WINDOW] = in_window
            baselines["loki"] = LOKI_WINDOW
        sources["loki"] = count_loki(loki, settings, start, now)
        window = (covered, now)
    metrics = sources.get("metrics")
    if metrics is not None and OTHER_LABEL in metrics.intents:
        # Past MAX_LABEL_VALUES intents the metrics share one series: the other stores are compared likewise.
        named = set(metrics.intents)
        for name, counts in sources.items():
            if name != "metrics":
                folded: Counter[str] = Counter()
                for intent, n in counts.intents.items():
                    folded[intent if intent in named else OTHER_LABEL] += n
                counts.intents = folded
    return ReconcileReport(
        sources=sources,
        rows=_rows(sources),
        baselines=baselines,
        loki_window=window,
        floor=floor,
        since=since,
        unreadable=unreadable.count,
        unreadable_example=unreadable.example,
        last_write=last_written(settings.log_dir),
        log_dropped=log_dropped(metrics_text, settings.metrics_namespace) if metrics_text is not None else {},
    )


#: Slack past a trimmed segment's last write: an event may be dated ahead of when it was written, by as much as the
#: ingest endpoints take.
_AHEAD_S: Final = MAX_AHEAD.total_seconds()


def history_floor(settings: Settings, now: datetime | None = None) -> datetime | None:
    """The time before which the stores no longer hold the same history: the log was trimmed (every event
    written after its newest trimmed segment is still in it), or the lake dropped days past its retention. None
    when neither happened: the log holds everything."""
    from querylog.analytics.upkeep import retained_from, retention_boundary
    from querylog.housekeeping import load_totals

    floors = []
    totals = load_totals(settings)
    trimmed_through = totals.trimmed_through
    if not trimmed_through and totals.trimmed_segments:
        trimmed_through = _unnoted_trim(settings, totals.last_run)
    if trimmed_through:
        floors.append(datetime.fromtimestamp(trimmed_through + _AHEAD_S, UTC))
    if settings.lake_retention_days is not None:
        floors.append(retention_boundary(settings.lake_retention_days, now))
    dropped = retained_from(settings.lake_dir)  # days a one-off `compact --retention-days` dropped count too
    if dropped is not None:
        floors.append(dropped)
    return max(floors, default=None)


def _unnoted_trim(settings: Settings, last_run: float) -> float:
    """How far the log was trimmed by a release that did not note it (``trimmed_through`` is this one's): up to the
    oldest segment left, which its writer began when it had finished the one before (writers that ran side by side
    may leave a few events of a trimmed segment after it); when none is left, up to the last housekeeping run."""
    from querylog.logging.trim import segment_created

    created = [c for path in segment_paths(settings.log_dir) if (c := segment_created(path.name))]
    return min(created) if created else last_run


def _rows(sources: Mapping[str, Counts]) -> list[tuple[str, str, dict[str, int | None]]]:
    rows: list[tuple[str, str, dict[str, int | None]]] = []
    for kind in ("events", "intents"):
        keys = sorted(set().union(*(getattr(c, kind).keys() for c in sources.values())))
        for key in keys:
            rows.append((kind, key, {name: getattr(c, kind).get(key, 0) for name, c in sources.items()}))
    return rows
