"""The metrics projection: a pure fold of query-log events into Prometheus metrics, computed at scrape time."""

from __future__ import annotations

import heapq
import math
import re
import threading
import time
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from querylog.logging import reformulation
from querylog.logging.events import (
    EVENT_TYPES,
    UNCLASSIFIED,
    Event,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
)
from querylog.logging.pricing import DEFAULT_PRICES, PriceTable
from querylog.logging.telemetry import FileTelemetry, SinkTelemetry

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_QUALITY_BUCKETS",
    "DEFAULT_QUERY_BUCKETS_SECONDS",
    "DEFAULT_STAGE_BUCKETS_SECONDS",
    "DEFAULT_STALE_AFTER_SECONDS",
    "MAX_LABEL_VALUES",
    "OTHER_LABEL",
    "MetricsProjection",
    "SnapshotOutdatedError",
]

DEFAULT_NAMESPACE = "querylog"

#: Whole-query latency. A chat answer with retrieval and an LLM call takes from tens of milliseconds (cache
#: hit) to tens of seconds (long generation); 10 s is an edge because the p95 alert fires there.
DEFAULT_QUERY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip

#: One pipeline stage. Classification and cache-served search take milliseconds, so the low end is finer.
DEFAULT_STAGE_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

#: Answer quality lies in [0, 1]. Written as literals: 3 * 0.1 is not 0.3 and would misplace edge values.
DEFAULT_QUALITY_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

#: A query with no terminal event this long (in event time) after its first event is presumed lost with
#: its producer: it leaves the active gauge and its state is freed.
DEFAULT_STALE_AFTER_SECONDS = 300.0
#: How many stale queries keep their intent and quality score for a terminal event that comes after all (a backfill
#: whose parts came apart, live traffic between them): the newest ones; each is a few hundred bytes.
STALE_REMEMBERED = 10_000

# Prometheus metric names match [a-zA-Z_:][a-zA-Z0-9_:]*; colons are reserved for recording rules and
# names starting with "__" for Prometheus itself, so a namespace gets neither.
_NAMESPACE_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_STAGES = ("classify", "search", "generate")
_FEEDBACK_SCORES = ("-1", "0", "1")
_CACHE_RESULTS = ("hit", "miss")
_UNKNOWN = "unknown"
#: Distinct models, releases and intents with a series of their own; later ones share `OTHER_LABEL`, so a producer
#: that sends a new value per query cannot blow up Prometheus.
MAX_LABEL_VALUES = 50
OTHER_LABEL: Final = "other"
#: Label values that always keep their own series: never counted against `MAX_LABEL_VALUES`.
_OWN_SERIES: Final = frozenset({_UNKNOWN, UNCLASSIFIED, OTHER_LABEL})

# prometheus_client's own spelling of a bucket bound ("0.25", "1.0", "+Inf"); the alias gives it a type.
_le: Callable[[float], str] = floatToGoString


def _check_namespace(namespace: str) -> None:
    if not _NAMESPACE_RE.fullmatch(namespace) or namespace.startswith("__"):
        raise ValueError(
            f"namespace {namespace!r} is not a valid Prometheus metric name prefix: use letters, digits and "
            "underscores, starting with a letter or one underscore (for example 'querylog' or 'ontology')"
        )


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds or not all(math.isfinite(b) for b in bounds):
        raise ValueError(f"{name} must be a non-empty list of finite upper bounds; +Inf is added for you")
    if any(a >= b for a, b in pairwise(bounds)):
        raise ValueError(f"{name} must be strictly increasing, got {list(bounds)}: sort them and drop repeats")
    return bounds


class _Histogram:
    """Bucket counts, sum and count of one labelled histogram series, kept the way Prometheus exposes them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is the +Inf bucket
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket, as `le` (<=) requires.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((_le(bound), running))
        return out


@dataclass(slots=True)
class _OpenQuery:
    """What the projection remembers about a query until its terminal event (or until it goes stale)."""

    first_seen: float  # event time of its first event, epoch seconds; staleness is measured from here
    received: bool = False
    intent: str | None = None
    quality_score: float | None = None
    #: Its terminal event came first (producers' events may arrive in any order): its `query_received`, when it
    #: comes, does not make it active.
    ended: bool = False


def _fill(state: _OpenQuery, earlier: _OpenQuery) -> None:
    """What `state` does not know yet (its intent, quality score), taken from what `earlier` knew of the query."""
    if state.intent is None:
        state.intent = earlier.intent
    if state.quality_score is None:
        state.quality_score = earlier.quality_score


@dataclass(slots=True)
class _LastAsked:
    """The latest query of a session, kept `reformulation.WINDOW_S` to compare the session's next query with."""

    query_id: str
    ts: float
    said: reformulation.Asked
    intent: str | None = None


@dataclass(frozen=True, slots=True)
class _Families:
    """Every metric this projection exposes, defined once: name, help text and labels."""

    queries: CounterMetricFamily
    query_duration: HistogramMetricFamily
    stage_duration: HistogramMetricFamily
    quality: HistogramMetricFamily
    active: GaugeMetricFamily
    cache: CounterMetricFamily
    feedback: CounterMetricFamily
    events: CounterMetricFamily
    sink_received: CounterMetricFamily
    sink_sent: CounterMetricFamily
    sink_dropped: CounterMetricFamily
    sink_retries: CounterMetricFamily
    sink_errors: CounterMetricFamily
    sink_lag_events: GaugeMetricFamily
    sink_lag_seconds: GaugeMetricFamily
    sink_batches: CounterMetricFamily
    sink_batch_events: CounterMetricFamily
    sink_batch_bytes: CounterMetricFamily
    sink_report_age: GaugeMetricFamily
    sink_fallbacks: CounterMetricFamily
    llm_cost: CounterMetricFamily
    llm_unpriced: CounterMetricFamily
    release_queries: CounterMetricFamily
    reformulated: CounterMetricFamily

    @classmethod
    def empty(cls, ns: str) -> _Families:
        return cls(
            queries=CounterMetricFamily(
                f"{ns}_queries_total", "Queries that ended, by intent and status (completed|failed).",
                labels=["intent", "status"],
            ),
            query_duration=HistogramMetricFamily(
                f"{ns}_query_duration_seconds", "Whole-query latency from query_completed/query_failed latency_ms.",
                labels=["intent", "status"],
            ),
            stage_duration=HistogramMetricFamily(
                f"{ns}_stage_duration_seconds", "Pipeline stage duration (classify, search, generate).",
                labels=["stage"],
            ),
            quality=HistogramMetricFamily(
                f"{ns}_quality_score", "Answer quality score in [0, 1], one observation per completed query.",
            ),
            active=GaugeMetricFamily(
                f"{ns}_active_queries", "Queries received but not yet completed or failed (stale ones excluded).",
            ),
            cache=CounterMetricFamily(
                f"{ns}_cache_requests_total", "Retrieval cache lookups from search_completed, by result (hit|miss).",
                labels=["result"],
            ),
            feedback=CounterMetricFamily(
                f"{ns}_feedback_total", "User feedback on answers, by score (-1, 0, 1).", labels=["score"],
            ),
            events=CounterMetricFamily(
                f"{ns}_events_total", "Events folded into this projection, by event type.", labels=["event_type"],
            ),
            sink_received=CounterMetricFamily(
                f"{ns}_sink_events_received_total",
                "Events offered to a sink for the first time (a batch offered again is not counted again).",
                labels=["sink"],
            ),
            sink_sent=CounterMetricFamily(
                f"{ns}_sink_events_sent_total", "Events a sink delivered.", labels=["sink"],
            ),
            sink_dropped=CounterMetricFamily(
                f"{ns}_sink_events_dropped_total", "Events a sink gave up on, by reason.", labels=["sink", "reason"],
            ),
            sink_retries=CounterMetricFamily(
                f"{ns}_sink_retries_total",
                "Batches the projector offered a sink again after a failed write.",
                labels=["sink"],
            ),
            sink_errors=CounterMetricFamily(
                f"{ns}_sink_errors_total", "Errors a sink met, by stage.", labels=["sink", "stage"],
            ),
            sink_lag_events=GaugeMetricFamily(
                f"{ns}_sink_lag_events", "Events in the log a sink has not delivered yet.", labels=["sink"],
            ),
            sink_lag_seconds=GaugeMetricFamily(
                f"{ns}_sink_lag_seconds", "Age of the oldest event a sink has not delivered yet.", labels=["sink"],
            ),
            sink_batches=CounterMetricFamily(
                f"{ns}_sink_batches_total", "Batches a sink delivered.", labels=["sink"],
            ),
            sink_batch_events=CounterMetricFamily(
                f"{ns}_sink_batch_events_total", "Events in the batches a sink delivered.", labels=["sink"],
            ),
            sink_batch_bytes=CounterMetricFamily(
                f"{ns}_sink_batch_bytes_total", "Bytes in the batches a sink delivered.", labels=["sink"],
            ),
            sink_report_age=GaugeMetricFamily(
                f"{ns}_sink_report_age_seconds",
                "Seconds since a sink's counters were last reported: 0 for a projection in this process; for one "
                "another process runs (querylog project), since it last published them. Its other series stand "
                "still while this grows.",
                labels=["sink"],
            ),
            sink_fallbacks=CounterMetricFamily(
                f"{ns}_sink_fallbacks", "Batches a sink took down a slower path (a fast path declined), by reason.",
                labels=["sink", "reason"],
            ),
            llm_cost=CounterMetricFamily(
                f"{ns}_llm_cost_usd", "Cost of LLM responses in USD by requested model: the recorded cost_usd, "
                "else priced from the price table (logging/pricing.py).",
                labels=["model"],
            ),
            llm_unpriced=CounterMetricFamily(
                f"{ns}_llm_unpriced_responses", "LLM responses with no recorded cost and no price for their model.",
                labels=["model"],
            ),
            release_queries=CounterMetricFamily(
                f"{ns}_release_queries", "Queries that ended, by release and status (completed|failed).",
                labels=["release", "status"],
            ),
            reformulated=CounterMetricFamily(
                f"{ns}_reformulated_queries", "Queries the user asked again in other words: the next query of the "
                "session came within 300 s with a similar text (logging/reformulation.py), by the intent of the "
                "first. Divide by queries_total for the reformulation rate.",
                labels=["intent"],
            ),
        )  # fmt: skip

    def all(self) -> list[Metric]:
        return [getattr(self, field.name) for field in fields(self)]

    def fold(self) -> list[Metric]:
        """The families the events give (not the sinks' own counters)."""
        return [getattr(self, field.name) for field in fields(self) if not field.name.startswith("sink_")]

    def sinks(self) -> list[Metric]:
        return [getattr(self, field.name) for field in fields(self) if field.name.startswith("sink_")]


#: The fold's rules, numbered, as a snapshot records them: one folded under older rules is not loaded (the log, or
#: the lake, is folded again), so that the counters served after an upgrade are those `querylog replay metrics`
#: gives. A release from before the rules were numbered ignores the number and loads the snapshot (a rollback keeps
#: its counters). 2: a query's quality is its answer's score when it has one, then its completion's (as the lake).
FOLD_RULES: Final = 2


class SnapshotOutdatedError(ValueError):
    """A snapshot's state without what this release folds: an older release wrote it."""


#: What a snapshot's state must hold to be restored; `intents`, `reformulated` and `asked` came later and have defaults.
_RESTORED: Final = frozenset(
    {
        *("queries", "query_duration", "stage_duration", "quality", "cache", "feedback", "events", "open", "active"),
        *("cost", "unpriced", "release_queries", "models", "releases"),
    }
)


#: The statuses a query ends with: each intent's and release's series exist for both from its first query on.
_STATUSES: Final = ("completed", "failed")


def _every_status(counts: Counter[tuple[str, str]]) -> list[tuple[tuple[str, str], int]]:
    """`counts` by (label, status), sorted, with every label at every status (0 where none). A series that appears
    with its first count shows no increase to `rate()`: an intent's first failure went unseen on the dashboards."""
    labels = {label for label, _ in counts}
    return [((label, status), counts[(label, status)]) for label in sorted(labels) for status in _STATUSES]


class MetricsProjection:
    """Prometheus metrics derived from events only, so that replaying the log rebuilds them exactly.

    ``apply`` folds events into plain counters (thread-safe; a background projector calls it while tailing the
    log); ``collect`` turns them into metric families when Prometheus scrapes, as a custom collector does.
    Staleness of open queries and the reformulation window are judged in event time (the ``ts`` of the event
    folded), never by the wall clock, so the same events always give the same exposition.
    """

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        query_buckets: Sequence[float] = DEFAULT_QUERY_BUCKETS_SECONDS,
        stage_buckets: Sequence[float] = DEFAULT_STAGE_BUCKETS_SECONDS,
        quality_buckets: Sequence[float] = DEFAULT_QUALITY_BUCKETS,
        stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
        prices: PriceTable = DEFAULT_PRICES,
        names: reformulation.Names | None = None,
    ) -> None:
        """`names`: the companies of the alias file, so that a session asking about the same company in other
        words counts as a reformulation (logging/reformulation.py)."""
        _check_namespace(namespace)
        if not (math.isfinite(stale_after_seconds) and stale_after_seconds > 0):
            raise ValueError(
                f"stale_after_seconds must be a finite number of seconds > 0, got {stale_after_seconds!r}: "
                "pick a span longer than your slowest query (the default is 300)"
            )
        self.namespace = namespace
        self._query_bounds = _check_buckets("query_buckets", query_buckets)
        self._stage_bounds = _check_buckets("stage_buckets", stage_buckets)
        self._quality_bounds = _check_buckets("quality_buckets", quality_buckets)
        self._stale_after = float(stale_after_seconds)
        self.prices = prices
        self.names = names

        self._lock = threading.Lock()
        self._queries: Counter[tuple[str, str]] = Counter()
        self._query_duration: dict[tuple[str, str], _Histogram] = {}
        # Known label values start at zero so that rate() and ratios see a series before its first increment.
        self._stage_duration = {stage: _Histogram(self._stage_bounds) for stage in _STAGES}
        self._quality = _Histogram(self._quality_bounds)
        self._cache: Counter[str] = Counter(dict.fromkeys(_CACHE_RESULTS, 0))
        self._feedback: Counter[str] = Counter(dict.fromkeys(_FEEDBACK_SCORES, 0))
        self._events: Counter[str] = Counter(dict.fromkeys(EVENT_TYPES, 0))
        self._cost: dict[str, float] = {}  # model → USD
        self._unpriced: Counter[str] = Counter()  # model → responses
        self._release_queries: Counter[tuple[str, str]] = Counter()
        self._reformulated: Counter[str] = Counter()
        # The latest query of each session seen in the last reformulation.WINDOW_S (oldest first), and which
        # session each of those queries is the latest of.
        self._sessions: OrderedDict[str, _LastAsked] = OrderedDict()
        self._latest_of: dict[str, str] = {}
        self._models: set[str] = set()  # the label values given a series, first come first served
        self._releases: set[str] = set()
        self._intents: set[str] = set()  # producers' intents too (/v1/events, querylog.intent on OTLP spans)
        self._open: dict[str, _OpenQuery] = {}
        # Stale queries that had an intent or a quality score, oldest first (at most `STALE_REMEMBERED`).
        self._stale: OrderedDict[str, _OpenQuery] = OrderedDict()
        # (first_seen, query_id) of every open query, oldest first; entries of queries that have since ended
        # are skipped when popped, which is cheaper than removing them from the middle of the heap.
        self._expiry: list[tuple[float, str]] = []
        self._active = 0
        self._sinks: dict[str, SinkTelemetry | FileTelemetry] = {}
        #: Set by `mirror`: the fold another process runs, as it published it.
        self._published: Callable[[], bytes | None] | None = None

        self._registry = CollectorRegistry()
        self._registry.register(self)

    # -- feeding ---------------------------------------------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> None:
        """Fold `events`, in log order, into the projection."""
        with self._lock:
            for event in events:
                self._apply_one(event)

    def add_sink(self, telemetry: SinkTelemetry | FileTelemetry) -> None:
        """Expose `telemetry` as ``<ns>_sink_*`` series; it is read afresh at every scrape."""
        with self._lock:
            if telemetry.sink in self._sinks:
                raise ValueError(
                    f"a sink named {telemetry.sink!r} is already added: give each SinkTelemetry its own name, "
                    "or its series would collide"
                )
            self._sinks[telemetry.sink] = telemetry

    def _apply_one(self, event: Event) -> None:
        ts = event.ts.timestamp()
        self._events[event.event_type] += 1

        match event:
            case QueryReceived():
                opened = self._open_query(event.query_id, ts)
                if not opened.received:
                    opened.received = True
                    if opened.ended:
                        del self._open[event.query_id]
                    else:
                        self._active += 1
                    if event.session_id is not None:
                        self._asked(event.session_id, event.query_id, ts, event.query_text)
            case IntentClassified():
                self._observe_stage("classify", event.duration_ms)
                self._open_query(event.query_id, ts).intent = event.intent
                self._note_intent(event.query_id, event.intent)
            case SearchCompleted():
                self._observe_stage("search", event.duration_ms)
                self._cache["hit" if event.cache_hit else "miss"] += 1
            case ResponseGenerated():
                self._observe_stage("generate", event.duration_ms)
                self._count_cost(event)
                if event.quality_score is not None:
                    self._open_query(event.query_id, ts).quality_score = event.quality_score
            case QueryCompleted():
                ended = self._end_query(event.query_id, ts)
                intent = self._intent(event.intent, ended)
                self._note_intent(event.query_id, intent)
                self._queries[(intent, "completed")] += 1
                self._release_queries[(self._release(event.release), "completed")] += 1
                self._observe_latency(intent, "completed", event.latency_ms)
                # One quality observation per answered query: the score the (last) generate step reported, else
                # the completion's own, as the lake's `queries.quality_score` has it, so that a producer that sets
                # both is counted once and the report and the Grafana panel read the same score.
                quality = ended.quality_score if ended is not None else None
                if quality is None:
                    quality = event.quality_score
                if quality is not None:
                    self._quality.observe(quality)
            case QueryFailed():
                ended = self._end_query(event.query_id, ts)
                intent = self._intent(event.intent, ended)
                self._note_intent(event.query_id, intent)
                self._queries[(intent, "failed")] += 1
                self._release_queries[(self._release(event.release), "failed")] += 1
                self._observe_latency(intent, "failed", event.latency_ms)
            case FeedbackReceived():
                self._feedback[str(event.score)] += 1
            case _:
                pass
        # Pruning after every event (not every batch) keeps the result independent of how the log was batched.
        self._prune(ts)

    def _asked(self, session_id: str, query_id: str, ts: float, text: str) -> None:
        """A session's next query: the one before it was reformulated if this one came soon and says the same."""
        now = _LastAsked(query_id, ts, reformulation.asked(text, self.names))
        before = self._sessions.pop(session_id, None)
        if before is not None:
            self._latest_of.pop(before.query_id, None)
            if 0 <= ts - before.ts <= reformulation.WINDOW_S and reformulation.reformulates(before.said, now.said):
                self._reformulated[self._bounded(self._intents, before.intent) if before.intent else UNCLASSIFIED] += 1
        self._sessions[session_id] = now
        self._latest_of[query_id] = session_id

    def _note_intent(self, query_id: str, intent: str) -> None:
        session_id = self._latest_of.get(query_id)
        if session_id is not None:
            self._sessions[session_id].intent = intent

    def _count_cost(self, event: ResponseGenerated) -> None:
        model = event.gen_ai_request_model or event.gen_ai_response_model
        cost = event.cost_usd
        if cost is None:  # priced as the lake prices it: by the model that answered, when the response said
            cost = self.prices.cost(
                event.gen_ai_response_model or model,
                event.ts,
                event.gen_ai_usage_input_tokens,
                event.gen_ai_usage_output_tokens,
                event.gen_ai_usage_cache_read_input_tokens,
            )
        label = self._bounded(self._models, model or _UNKNOWN)
        if cost is None:
            self._unpriced[label] += 1
        else:
            self._cost[label] = self._cost.get(label, 0.0) + cost

    def _release(self, release: str | None) -> str:
        return self._bounded(self._releases, release or _UNKNOWN)

    @staticmethod
    def _bounded(seen: set[str], value: str) -> str:
        # "unknown", "unclassified" and "other" are series of their own and take no slot (a reformulated query's
        # intent is the label it was counted under, which may be one of them).
        if value in seen or value in _OWN_SERIES:
            return value
        if len(seen) < MAX_LABEL_VALUES:
            seen.add(value)
            return value
        return OTHER_LABEL

    def _open_query(self, query_id: str, ts: float) -> _OpenQuery:
        state = self._open.get(query_id)
        if state is None:
            state = self._open[query_id] = _OpenQuery(first_seen=ts)
            heapq.heappush(self._expiry, (ts, query_id))
        return state

    def _close_query(self, query_id: str, ts: float | None = None) -> _OpenQuery | None:
        """The query's state, gone; with `ts` (a terminal event's), a query not seen yet is remembered as ended
        until it goes stale, so that its `query_received`, arriving later, leaves the active gauge alone."""
        state = self._open.pop(query_id, None)
        if state is not None and state.received and not state.ended:
            self._active -= 1
        elif state is None and ts is not None:
            self._open_query(query_id, ts).ended = True
        return state

    def _end_query(self, query_id: str, ts: float) -> _OpenQuery | None:
        """`_close_query` for a terminal event: a query that went stale meanwhile is answered from `_stale`."""
        stale = self._stale.pop(query_id, None)
        ended = self._close_query(query_id, ts if stale is None or not stale.received else None)
        if stale is None or ended is None:
            return ended if ended is not None else stale
        _fill(ended, stale)  # reopened since it went stale (its answer, say): what it had before still counts
        return ended

    def _prune(self, ts: float) -> None:
        """Forget the sessions whose last query is out of the reformulation window, and the open queries first seen
        more than the staleness, before `ts`, the time of the event just folded: not the newest seen, so that a
        backfill (a session of last week, its events folded one after the other after today's) keeps its state
        until its own end."""
        window_start = ts - reformulation.WINDOW_S
        while self._sessions and next(iter(self._sessions.values())).ts < window_start:
            _, latest = self._sessions.popitem(last=False)
            self._latest_of.pop(latest.query_id, None)
        cutoff = ts - self._stale_after
        while self._expiry and self._expiry[0][0] < cutoff:
            first_seen, query_id = heapq.heappop(self._expiry)
            state = self._open.get(query_id)
            if state is not None and state.first_seen == first_seen:
                self._close_query(query_id)
                earlier = self._stale.pop(query_id, None)  # stale before, reopened, stale again: kept the newest
                if earlier is not None:
                    _fill(state, earlier)
                if state.intent is not None or state.quality_score is not None:
                    self._stale[query_id] = state
                    if len(self._stale) > STALE_REMEMBERED:
                        self._stale.popitem(last=False)

    def _intent(self, own: str | None, state: _OpenQuery | None) -> str:
        intent = own or (state.intent if state is not None else None)
        return self._bounded(self._intents, intent) if intent else UNCLASSIFIED

    def _observe_stage(self, stage: str, duration_ms: float | None) -> None:
        if duration_ms is not None:
            self._stage_duration[stage].observe(duration_ms / 1000.0)

    def _observe_latency(self, intent: str, status: str, latency_ms: float | None) -> None:
        if latency_ms is None:
            return
        key = (intent, status)
        histogram = self._query_duration.get(key)
        if histogram is None:
            histogram = self._query_duration[key] = _Histogram(self._query_bounds)
        histogram.observe(latency_ms / 1000.0)

    # -- snapshots (logging/metrics_snapshot.py) ---------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """What the state means besides the events: a snapshot is loaded only into a projection with the same."""
        return {
            "namespace": self.namespace,
            "query_buckets": list(self._query_bounds),
            "stage_buckets": list(self._stage_bounds),
            "quality_buckets": list(self._quality_bounds),
            "stale_after_seconds": self._stale_after,
            # Which prices the cost counter was counted with (a snapshot of other prices is still loaded:
            # counters never go back; see MetricsSink).
            "prices": self.prices.version,
        }

    def export_state(self) -> dict[str, Any]:
        """The fold's whole state as plain values (JSON-ready). Holds query ids of open (and remembered stale)
        queries, and the characters of each session's latest query of the last five minutes (to tell a
        reformulation), no user ids; erasure removes a query's entries (`forget_queries`)."""
        with self._lock:
            return {
                "queries": [[i, s, n] for (i, s), n in sorted(self._queries.items())],
                "query_duration": [[i, s, h.counts, h.total] for (i, s), h in sorted(self._query_duration.items())],
                "stage_duration": {k: [h.counts, h.total] for k, h in sorted(self._stage_duration.items())},
                "quality": [self._quality.counts, self._quality.total],
                "cache": dict(self._cache),
                "feedback": dict(self._feedback),
                "events": dict(self._events),
                "open": {
                    q: [o.first_seen, o.received, o.intent, o.quality_score, *([True] if o.ended else [])]
                    for q, o in sorted(self._open.items())
                },
                "stale": [[q, o.first_seen, o.received, o.intent, o.quality_score] for q, o in self._stale.items()],
                "active": self._active,
                "watermark": None,  # judged by nothing now; an older release reads None as "nothing folded yet"
                "cost": dict(self._cost),
                "unpriced": dict(self._unpriced),
                "release_queries": [[r, s, n] for (r, s), n in sorted(self._release_queries.items())],
                "models": sorted(self._models),
                "releases": sorted(self._releases),
                "intents": sorted(self._intents),
                "reformulated": dict(self._reformulated),
                # "asked": each session's last query as the rule compares it (tokens, companies, names found);
                # "sessions", in snapshots from before, held other sets: not read back (those start afresh).
                "asked": [
                    [
                        sid,
                        a.query_id,
                        a.ts,
                        a.intent,
                        *(sorted(x) for x in (a.said.tokens, a.said.companies, a.said.found)),
                    ]
                    for sid, a in self._sessions.items()
                ],
            }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Replace the state with one `export_state` gave (of a projection with the same `config`).
        `SnapshotOutdatedError`, with nothing replaced, for a state that lacks what this release folds (an older
        release's snapshot)."""
        missing = sorted(_RESTORED - state.keys())
        if missing:
            raise SnapshotOutdatedError(f"the snapshot holds no {', '.join(missing)}: an older release wrote it")

        def histogram(bounds: tuple[float, ...], counts: list[int], total: float) -> _Histogram:
            if len(counts) != len(bounds) + 1:
                raise ValueError("a histogram of the snapshot has other buckets than this projection")
            h = _Histogram(bounds)
            h.counts = list(counts)
            h.total = float(total)
            return h

        with self._lock:
            self._queries = Counter({(i, s): n for i, s, n in state["queries"]})
            self._query_duration = {
                (i, s): histogram(self._query_bounds, c, t) for i, s, c, t in state["query_duration"]
            }
            self._stage_duration = {
                k: histogram(self._stage_bounds, c, t) for k, (c, t) in state["stage_duration"].items()
            }
            self._quality = histogram(self._quality_bounds, *state["quality"])
            self._cache = Counter(state["cache"])
            self._feedback = Counter(state["feedback"])
            self._events = Counter(state["events"])
            self._open = {
                q: _OpenQuery(first_seen=f, received=r, intent=i, quality_score=qs, ended=bool(ended))
                for q, (f, r, i, qs, *ended) in state["open"].items()
            }
            self._expiry = sorted((o.first_seen, q) for q, o in self._open.items())  # a sorted list is a heap
            # Absent from snapshots written before stale queries were remembered: those start with none.
            self._stale = OrderedDict(
                (q, _OpenQuery(first_seen=f, received=r, intent=i, quality_score=qs))
                for q, f, r, i, qs in state.get("stale", [])
            )
            self._active = int(state["active"])
            self._cost = {k: float(v) for k, v in state["cost"].items()}
            self._unpriced = Counter(state["unpriced"])
            self._release_queries = Counter({(r, s): n for r, s, n in state["release_queries"]})
            self._models = set(state["models"])
            self._releases = set(state["releases"])
            # Snapshots from before intents were bounded: those that have series keep them.
            self._intents = set(state.get("intents", {i for i, _ in self._queries})) - _OWN_SERIES
            # Absent from snapshots written before reformulations were counted: those start from zero.
            self._reformulated = Counter(state.get("reformulated", {}))
            self._sessions = OrderedDict(
                (sid, _LastAsked(q, float(t), reformulation.Asked(*(frozenset(x) for x in said)), i))
                for sid, q, t, i, *said in state.get("asked", [])
            )
            self._latest_of = {a.query_id: sid for sid, a in self._sessions.items()}

    @staticmethod
    def forget_in_state(state: dict[str, Any], query_ids: Iterable[str]) -> int:
        """`forget_queries` on an exported state (a snapshot on disk, for erasure): the open queries among
        `query_ids` leave it and the active gauge, and so does any session whose latest query is one of them (with
        that query's characters). Returns how many open queries were forgotten."""
        erased = set(query_ids)
        open_queries: dict[str, Any] = state.get("open", {})
        gone = [q for q in erased if q in open_queries]
        for query_id in gone:
            if open_queries.pop(query_id)[1]:  # received: it was counted as active
                state["active"] = max(0, int(state["active"]) - 1)
        for key in ("asked", "sessions"):
            if key in state:
                state[key] = [entry for entry in state[key] if entry[1] not in erased]
        if "stale" in state:  # [query_id, first_seen, received, intent, quality_score]
            state["stale"] = [entry for entry in state["stale"] if entry[0] not in erased]
        return len(gone)

    @staticmethod
    def latest_queries_of(state: dict[str, Any], session_ids: Collection[str]) -> set[str]:
        """The ids of the latest queries an exported state holds of `session_ids` (their characters are in it): an
        erasure forgets them even when the log and the lake no longer hold the session (retention took it)."""
        return {entry[1] for key in ("asked", "sessions") for entry in state.get(key, ()) if entry[0] in session_ids}

    def forget_queries(self, query_ids: Iterable[str]) -> int:
        """Drop open queries from the state (erasure): they leave the active gauge as a stale query does."""
        with self._lock:
            n = 0
            for query_id in query_ids:
                if query_id in self._open:
                    self._close_query(query_id)
                    n += 1
                self._stale.pop(query_id, None)
                session_id = self._latest_of.pop(query_id, None)
                if session_id is not None:
                    del self._sessions[session_id]
            return n

    # -- exposing --------------------------------------------------------------------------------------------

    def add_collector(self, collector: Any) -> None:
        """Serve another collector's series (e.g. the log's, `querylog.housekeeping.LogCollector`) in this
        projection's exposition, beside its own."""
        self._registry.register(collector)

    def register(self, registry: CollectorRegistry) -> None:
        """Add this projection to `registry` (e.g. the one the API's /metrics serves)."""
        registry.register(self)

    def exposition(self) -> bytes:
        """The Prometheus text format of this projection alone (and of the fold it mirrors, if any)."""
        own = generate_latest(self._registry)
        if self._published is None:
            return own
        return (self._published() or b"") + own  # the fold's families first, as when folded here

    def fold_exposition(self) -> bytes:
        """The fold's families alone in the Prometheus text format, without any sink's: what a projector process
        publishes for the API's /metrics (see `mirror`)."""
        return generate_latest(_FoldOnly(self))

    def mirror(self, published: Callable[[], bytes | None]) -> None:
        """Show the fold another process runs instead of folding here: `exposition` then carries what
        `published()` returns (that process's `fold_exposition`, None before its first) beside this projection's
        sinks and collectors. Its families are text by then, so only `exposition` serves them, not `collect`."""
        self._published = published

    def describe(self) -> list[Metric]:
        # Lets a registry refuse a second projection with the same namespace instead of exposing duplicates.
        return _Families.empty(self.namespace).all()

    def collect(self) -> list[Metric]:
        f = _Families.empty(self.namespace)
        self._collect_sinks(f)
        if self._published is not None:  # the fold's families come as the text another process published
            return f.sinks()
        self._collect_fold(f)
        return f.all()

    def _collect_fold(self, f: _Families) -> None:
        with self._lock:
            # Label values are sorted so the exposition depends on the events alone, not on dict history.
            for (intent, status), n in _every_status(self._queries):
                f.queries.add_metric([intent, status], n)
            for (intent, status), histogram in sorted(self._query_duration.items()):
                f.query_duration.add_metric([intent, status], histogram.buckets(), histogram.total)
            for stage, histogram in sorted(self._stage_duration.items()):
                f.stage_duration.add_metric([stage], histogram.buckets(), histogram.total)
            f.quality.add_metric([], self._quality.buckets(), self._quality.total)
            f.active.add_metric([], self._active)
            for result, n in sorted(self._cache.items()):
                f.cache.add_metric([result], n)
            for score, n in sorted(self._feedback.items()):
                f.feedback.add_metric([score], n)
            for event_type, n in sorted(self._events.items()):
                f.events.add_metric([event_type], n)
            for model, usd in sorted(self._cost.items()):
                f.llm_cost.add_metric([model], usd)
            for model, n in sorted(self._unpriced.items()):
                f.llm_unpriced.add_metric([model], n)
            for (release, status), n in _every_status(self._release_queries):
                f.release_queries.add_metric([release, status], n)
            for intent, n in sorted(self._reformulated.items()):
                f.reformulated.add_metric([intent], n)

    def _collect_sinks(self, f: _Families) -> None:
        with self._lock:
            sinks = [self._sinks[name] for name in sorted(self._sinks)]
        for telemetry in sinks:
            now = time.time()  # before the snapshot: one read in this process is reported 0 seconds ago
            s = telemetry.snapshot()
            f.sink_received.add_metric([s.sink], s.received)
            f.sink_sent.add_metric([s.sink], s.sent)
            for reason, n in sorted(s.dropped.items()):
                f.sink_dropped.add_metric([s.sink, reason], n)
            f.sink_retries.add_metric([s.sink], s.retries)
            for stage, n in sorted(s.errors.items()):
                f.sink_errors.add_metric([s.sink, stage], n)
            if s.lag_known:  # else unknown, which 0 would misstate ("0 behind")
                f.sink_lag_events.add_metric([s.sink], s.lag_events)
                f.sink_lag_seconds.add_metric([s.sink], s.lag_seconds)
            f.sink_batches.add_metric([s.sink], s.batches)
            f.sink_batch_events.add_metric([s.sink], s.batch_events_total)
            f.sink_batch_bytes.add_metric([s.sink], s.batch_bytes_total)
            f.sink_report_age.add_metric([s.sink], max(0.0, now - s.reported_at))
            for reason, n in sorted(s.fallbacks.items()):
                f.sink_fallbacks.add_metric([s.sink, reason], n)


class _FoldOnly:
    """A collector of a projection's fold families alone (`MetricsProjection.fold_exposition`)."""

    def __init__(self, projection: MetricsProjection) -> None:
        self.projection = projection

    def collect(self) -> list[Metric]:
        f = _Families.empty(self.projection.namespace)
        self.projection._collect_fold(f)
        return f.fold()
