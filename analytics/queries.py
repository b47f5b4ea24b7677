"""The typed query layer over the lake: filtered DuckDB SQL, polars DataFrames and dataclass rows out."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from querylog.analytics.catalog import Catalog, CatalogError, queries_select
from querylog.logging.events import EVENT_TYPES, INVISIBLE_CHARS, UNCLASSIFIED
from querylog.logging.reformulation import Names

__all__ = [
    "BUCKETS",
    "FUNNEL_STEPS",
    "MAX_DURATION",
    "UNCLASSIFIED",
    "Answer",
    "Bucket",
    "Filters",
    "LakeQueries",
    "SessionStats",
    "Summary",
    "arrow_table",
    "open_catalog",
    "parse_duration",
    "parse_since",
    "sql_frame",
]

Bucket: TypeAlias = Literal["hour", "day"]
BUCKETS: Final[tuple[Bucket, ...]] = ("hour", "day")
_BUCKET_STEP: Final[Mapping[str, str]] = {"hour": "1h", "day": "1d"}
_BUCKET_US: Final[Mapping[str, int]] = {"hour": 3_600_000_000, "day": 86_400_000_000}


def _bucket_sql(column: str) -> str:
    """The start of `column`'s UTC hour or day (size in microseconds bound as ``$bucket_us``), by integer
    arithmetic on epoch microseconds. Same value and type (TIMESTAMPTZ) as ``date_trunc($bucket, column)`` in
    the catalog's UTC session, but without the ICU calendar call that date_trunc makes on every TIMESTAMPTZ row.
    The modulo form floors (DuckDB's ``//`` truncates towards zero) so that times before 1970 bucket alike."""
    us = f"epoch_us({column})"
    return f"make_timestamptz({us} - ((({us} % $bucket_us) + $bucket_us) % $bucket_us))"


#: The stages a query passes, in order, and the event that proves it got there.
FUNNEL_STEPS: Final[tuple[tuple[str, str], ...]] = (
    ("received", "query_received"),
    ("classified", "intent_classified"),
    ("searched", "search_completed"),
    ("answered", "response_generated"),
    ("completed", "query_completed"),
)
_STAGE_COLUMNS: Final = (
    ("classify", "classify_ms"),
    ("search", "search_ms"),
    ("generate", "generate_ms"),
    ("total", "latency_ms"),
)

_FULL_WIDTH: Final = "".join(map(chr, range(0xFF01, 0xFF5F)))  # ！ … ～
_AS_ASCII: Final = "".join(map(chr, range(0x21, 0x7F)))  # ! … ~
#: What `question_key` does before it folds case and spacing: full-width forms read as ASCII, the characters that
#: draw nothing (삼성\u200d전자, pasted from a chat app) dropped, as search's folding does.
KEY_FOLDS: Final = str.maketrans(_FULL_WIDTH, _AS_ASCII, INVISIBLE_CHARS)
_KEY_FOLDED_SQL: Final = "[\\x{FF01}-\\x{FF5E}" + "".join(f"\\x{{{ord(c):04X}}}" for c in INVISIBLE_CHARS) + "]"
_AS_ASCII_SQL: Final = _AS_ASCII.replace("'", "''")
# Queries that never got an intent are grouped under UNCLASSIFIED (querylog.logging.events), so that they can be
# filtered and charted like any other intent instead of vanishing as NULL.
#: `querylog.analytics.search_groups.question_key` in SQL: what makes two questions the same (case and spacing
#: aside), so that the report's and the explorer's top queries count a question as search does.
#: The class is Python's whitespace (`str.split`) in RE2: its ``\s`` is ASCII only, ``\p{Z}`` the Unicode spaces.
#: Full-width letters, digits and signs (ＳＫ하이닉스, typed with a Korean keyboard's full-width mode) are read as
#: the ASCII ones, as search's NFKC folding reads them, and the characters that draw nothing are dropped, as search
#: drops them; only texts that have one pay for the translation.
QUESTION_KEY_SQL: Final = (
    r"lower(trim(regexp_replace("
    rf"CASE WHEN regexp_matches(query_text, '{_KEY_FOLDED_SQL}') "
    rf"THEN translate(query_text, '{_FULL_WIDTH}{INVISIBLE_CHARS}', '{_AS_ASCII_SQL}') ELSE query_text END, "
    r"'[\s\x0b\x1c-\x1f\x85\p{Z}]+', ' ', 'g')))"
)
#: A sum of costs that does not depend on the order DuckDB's threads add them in: a float sum does, and a figure on
#: the edge of a cent (0.01275) printed $0.0127 or $0.0128 from one run to the next on the same lake.
_EXACT_SUM: Final = "sum(cost_usd::DECIMAL(38, 12))::DOUBLE"


def _base_sql(queries: str = "queries") -> str:
    """The queries as the reads below take them (from the view, or `queries`' SELECT): no intent is unclassified."""
    return f"SELECT * REPLACE (coalesce(intent, '{UNCLASSIFIED}') AS intent) FROM {queries}"


_BASE_SQL: Final = _base_sql()

_T = TypeVar("_T")
_MISSING: Final = object()
#: A query that lost the race with compaction is run again, with a fresh listing, up to this many times. Each
#: loss means a compactor swapped a file meanwhile, and a run swaps one file group at a time (an hour, a day):
#: on a busy machine a long compaction can win a few rounds in a row, never many.
_ATTEMPTS: Final = 20
_VANISHED: Final = "No such file or directory"

_SINCE_RE: Final = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
#: The units QUERYLOG_RETENTION and the other duration settings take too.
_UNITS: Final[Mapping[str, str]] = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


#: The longest duration a command takes.
MAX_DURATION: Final = timedelta(days=36_500)


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """``30m``, ``12h`` or ``7d`` as a timedelta. Raises `ValueError` with a message that says what is accepted."""
    m = _SINCE_RE.match(text)
    if m is None:
        raise ValueError(f"expected a duration like 90s, 30m, 12h, 7d or 2w; got {text!r}")
    amount = int(m.group(1))
    if amount == 0 and not allow_zero:
        raise ValueError(f"a duration must be more than zero; got {text!r}")
    try:
        duration = timedelta(**{_UNITS[m.group(2).lower()]: amount})
    except OverflowError:
        duration = timedelta.max
    if duration > MAX_DURATION:  # a date that far back (or ahead) is past the calendar's ends
        raise ValueError(f"a duration must be at most 100 years (36500d); got {text!r}")
    return duration


#: The earliest `parse_since` gives: events carry Unix time, and a report compares with the window before.
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def parse_since(text: str, *, now: datetime | None = None, future: bool = False) -> datetime:
    """The start of a window given as a duration back from `now` (``30m``, ``12h``, ``7d``) or an ISO date or
    time (``2025-01-31``, ``2025-01-31T09:00``; UTC unless it says otherwise), from 1970-01-01 on; after `now`
    only with `future` (a window's end). Raises `ValueError` saying what is wrong."""
    now = now or datetime.now(UTC)
    too_early = ValueError(f"{text!r} reaches back before 1970-01-01: give a shorter duration or a later date")
    if _SINCE_RE.match(text) is not None:
        since = now - parse_duration(text)  # at most a century back: within the calendar
        if since < _UNIX_EPOCH:
            raise too_early
        return since
    stripped = text.strip()
    if len(stripped) > 10 and stripped[10] not in "Tt ":  # Python reads any character there as the time's start
        raise ValueError(
            f"{text!r}: join the date and the time with T, as 2025-01-31T00:00+09:00 (a date alone is midnight UTC)"
        )
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(
            f"expected a duration like 90s, 30m, 12h, 7d or 2w, or an ISO date like 2025-01-31; got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now and not future:
        raise ValueError(f"{text!r} is in the future")
    if parsed < _UNIX_EPOCH:  # no event is older; and a window's previous one would run past year 1
        raise too_early
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    """Which queries to look at: started in [since, until), with one of `intents`, in one of `envs`, from one of
    `services` (the app that asked), of one of `releases` and one of `prompt_versions` (schema v2; a query recorded
    without one is left out when it is set).

    Empty tuples mean "all". Every value reaches DuckDB as a bound parameter, never as SQL text.
    """

    since: datetime | None = None
    until: datetime | None = None
    intents: tuple[str, ...] = ()
    envs: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    releases: tuple[str, ...] = ()
    prompt_versions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValueError(f"Filters.{name} must be a timezone-aware datetime; got {value!r}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"Filters.since ({self.since}) must be before until ({self.until})")
        for name in ("intents", "envs", "services", "releases", "prompt_versions"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"Filters.{name} must be a tuple of strings; got {value!r}")

    @classmethod
    def for_dates(cls, start: date, end: date, **rest: Any) -> Filters:
        """Whole UTC days from `start` through `end`, inclusive."""
        since = datetime(start.year, start.month, start.day, tzinfo=UTC)
        until = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
        return cls(since=since, until=until, **rest)

    def clause(self) -> tuple[str, dict[str, Any]]:
        """A WHERE condition over the `queries` columns and its named parameters."""
        parts: list[str] = ["TRUE"]
        params: dict[str, Any] = {}
        if self.since is not None:
            parts.append("started_at >= $since")
            params["since"] = self.since
        if self.until is not None:
            parts.append("started_at < $until")
            params["until"] = self.until
        if self.intents:
            parts.append("list_contains($intents, intent)")
            params["intents"] = list(self.intents)
        named = (
            ("envs", "env"),
            ("services", "service"),
            ("releases", "release"),
            ("prompt_versions", "prompt_version"),
        )
        for name, column in named:
            if values := getattr(self, name):
                parts.append(f"list_contains(${name}, {column})")  # fixed names: never user input
                params[name] = list(values)
        return " AND ".join(parts), params

    def window(self) -> timedelta | None:
        return None if self.since is None or self.until is None else self.until - self.since

    def previous(self) -> Filters:
        """The window of equal length just before this one (for week-over-week comparisons), cut at year 1."""
        if self.since is None or self.until is None:
            raise ValueError("previous() needs both since and until")
        length = self.until - self.since
        first = datetime.min.replace(tzinfo=self.since.tzinfo)  # a lake may reach back to year 1 (an unset time)
        if self.since == first:
            raise ValueError("no window comes before one that starts on the calendar's first day (year 1)")
        since = self.since - length if self.since - first > length else first
        return dataclasses.replace(self, since=since, until=self.since)


@dataclass(frozen=True, slots=True)
class Summary:
    """Headline numbers for a set of queries. Rates are None when their denominator is zero."""

    queries: int
    completed: int
    failed: int
    in_progress: int
    #: failed / (completed + failed): queries still in flight are neither.
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    #: over queries that reached search
    cache_hit_rate: float | None
    no_result_rate: float | None
    mean_quality: float | None
    #: over finished queries (completed or failed), both
    feedback_rate: float | None
    mean_feedback: float | None
    sessions: int

    @classmethod
    def empty(cls) -> Summary:
        """The headline of a window that holds no query."""
        return cls(0, 0, 0, 0, None, None, None, None, None, None, None, None, None, 0)


@dataclass(frozen=True, slots=True)
class SessionStats:
    sessions: int
    mean_queries: float | None
    median_queries: float | None
    max_queries: int | None
    sessions_with_repeats: int
    #: queries whose text was already asked earlier in the same session
    repeated_queries: int


def arrow_table(catalog: Catalog, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run parameterised SQL on the catalog's connection; DuckDB errors become `CatalogError`.

    Through a relation (``connection.sql``) rather than a cursor: DuckDB 2 copies cursor results once more,
    and says so with a warning on every call. A query that compaction or retention moved files under (a file
    it listed was swapped away, or an hour it listed was skipped) is run again (`Catalog.consistent`).
    """

    def run() -> pa.Table:
        return catalog.idle_connection().sql(sql, params=dict(params or {})).to_arrow_table()

    return _translated(lambda: catalog.consistent(run))


def open_catalog(lake_dir: Path | str, *, names: Names | None = None) -> Catalog:
    """A `Catalog`, opened again if its first listing of the lake lost a race with compaction or retention."""
    return _retrying(lambda: Catalog(lake_dir, names=names))


def _translated(run: Callable[[], _T]) -> _T:
    """`run()`, its DuckDB errors as `CatalogError` (it retries what it must itself)."""
    return _retrying(run, attempts=1)


def _retrying(run: Callable[[], _T], *, attempts: int = _ATTEMPTS) -> _T:
    for attempt in range(attempts):
        try:
            return run()
        except duckdb.IOException as exc:
            if _VANISHED not in str(exc) or attempt == attempts - 1:
                raise CatalogError(" ".join(str(exc).split())) from exc
        except duckdb.Error as exc:
            raise CatalogError(" ".join(str(exc).split())) from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def sql_frame(catalog: Catalog, sql: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """`arrow_table` as a polars DataFrame."""
    result = pl.from_arrow(arrow_table(catalog, sql, params))
    assert isinstance(result, pl.DataFrame)  # a Table always converts to a DataFrame
    return result


class LakeQueries:
    """Analytics questions over a `Catalog`, each taking `Filters`.

    With ``snapshot=True`` the `queries` view is computed once into a temporary table and every question
    reads that: what an interactive page wants (a dozen questions, one consistent picture, one lake scan). The
    answers are kept too, so that a page asking the same question again (the explorer, at each click) has it at
    once: the snapshot is one picture of the lake, and so are they.
    """

    #: Answers a snapshot keeps; past it the oldest go (each is a small frame: a chart's or a table's rows).
    MEMO_ANSWERS: Final = 512

    def __init__(self, catalog: Catalog, *, snapshot: bool = False, asked_from: datetime | None = None) -> None:
        """`asked_from` (with `snapshot`): the snapshot holds the queries asked from then on, not the whole lake's
        (a report's windows): filters that reach before it find none; `time_bounds` is still the lake's."""
        self.catalog = catalog
        self._memo: dict[tuple[Any, ...], Any] | None = {} if snapshot else None
        self._asked_from = asked_from if snapshot else None
        if snapshot:
            base = _BASE_SQL
            if asked_from is not None:
                base = _base_sql(f"({queries_select(catalog.names, asked_from=asked_from)})")
            _translated(
                lambda: catalog.consistent(
                    lambda: catalog.connection.execute(f"CREATE OR REPLACE TEMP TABLE ql_queries AS {base}")
                )
            )
            self._source = "ql_queries"
        else:
            self._source = f"({_BASE_SQL})"

    # -- plumbing ----------------------------------------------------------------------------------
    def _frame(self, f: Filters, body: str, extra: Mapping[str, Any] | None = None) -> pl.DataFrame:
        where, params = f.clause()
        sql = f"WITH q AS (SELECT * FROM {self._source} WHERE {where})\n{body}"
        return self._answer_to(sql, {**params, **(extra or {})})

    def _answer_to(self, sql: str, params: Mapping[str, Any]) -> pl.DataFrame:
        """`sql_frame`, kept by a snapshot (`MEMO_ANSWERS`)."""
        return self.kept((sql, repr(sorted(params.items()))), lambda: sql_frame(self.catalog, sql, params))

    def kept(self, key: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
        """`compute()`, kept by a snapshot with its answers (`MEMO_ANSWERS` in all) under `key`, for as long as the
        snapshot is read: what else a page reads from the lake it holds (a search's results). Without a snapshot,
        computed at each call."""
        if self._memo is None:
            return compute()
        if (found := self._memo.get(key, _MISSING)) is _MISSING:
            found = compute()
            if len(self._memo) >= self.MEMO_ANSWERS:
                del self._memo[next(iter(self._memo))]
            self._memo[key] = found
        return found  # type: ignore[no-any-return]

    # -- choices for filters -----------------------------------------------------------------------
    def intents(self) -> list[str]:
        _, rows = self.catalog.query(f"SELECT DISTINCT intent FROM {self._source} ORDER BY 1")
        return [r[0] for r in rows]

    def envs(self) -> list[str]:
        return self._distinct("env")

    def services(self) -> list[str]:
        """The services (apps) queries came from: one for a single API, several when many send to one querylog."""
        return self._distinct("service")

    def releases(self) -> list[str]:
        """The releases queries were recorded under (schema v2), for a filter; empty when none was given."""
        return self._distinct("release")

    def prompt_versions(self) -> list[str]:
        return self._distinct("prompt_version")

    def _distinct(self, column: str) -> list[str]:
        _, rows = self.catalog.query(
            f"SELECT DISTINCT {column} FROM {self._source} WHERE {column} IS NOT NULL ORDER BY 1"  # a fixed name
        )
        return [r[0] for r in rows]

    def time_bounds(self) -> tuple[datetime, datetime] | None:
        """First and last query start in the lake, or None when it is empty."""
        source = self._source
        if self._asked_from is not None:  # the lake's, not the window the snapshot holds
            source = "(SELECT min(ts) AS started_at FROM events WHERE event_type = 'query_received' GROUP BY query_id)"
        _, rows = self.catalog.query(f"SELECT min(started_at), max(started_at) FROM {source}")
        first, last = rows[0]
        return None if first is None else (first, last)

    # -- headline ----------------------------------------------------------------------------------
    def summary(self, f: Filters = Filters()) -> Summary:
        frame = self._frame(
            f,
            """
            SELECT
                count(*) AS queries,
                count(*) FILTER (WHERE status = 'completed') AS completed,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'in_progress') AS in_progress,
                (count(*) FILTER (WHERE status = 'failed'))
                    / nullif(count(*) FILTER (WHERE status <> 'in_progress'), 0) AS error_rate,
                quantile_cont(latency_ms, 0.5) AS p50_ms,
                quantile_cont(latency_ms, 0.95) AS p95_ms,
                quantile_cont(latency_ms, 0.99) AS p99_ms,
                avg(cache_hit::DOUBLE) AS cache_hit_rate,
                avg((result_count = 0)::DOUBLE) AS no_result_rate,
                avg(quality_score) AS mean_quality,
                -- Feedback over finished queries, completed or failed (users rate failures too), both figures.
                (count(feedback_score) FILTER (WHERE status <> 'in_progress'))
                    / nullif(count(*) FILTER (WHERE status <> 'in_progress'), 0) AS feedback_rate,
                avg(feedback_score) FILTER (WHERE status <> 'in_progress') AS mean_feedback,
                count(DISTINCT session_id) AS sessions
            FROM q
            """,
        )
        row: dict[str, Any] = frame.row(0, named=True)
        return Summary(**row)

    # -- intents -----------------------------------------------------------------------------------
    def intent_totals(self, f: Filters = Filters()) -> pl.DataFrame:
        """intent, queries, share — biggest first."""
        frame = self._frame(
            f, "SELECT intent, count(*) AS queries FROM q GROUP BY intent ORDER BY queries DESC, intent"
        )
        return frame.with_columns((pl.col("queries") / pl.col("queries").sum()).alias("share"))

    def intent_trend(self, f: Filters = Filters(), bucket: Bucket = "hour") -> pl.DataFrame:
        """bucket, intent, queries, share (of the bucket's queries); every bucket from the first to the last
        query, with zeros where an intent had none, so that gaps show as gaps."""
        if bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket!r}")
        frame = self._frame(
            f,
            f"SELECT {_bucket_sql('started_at')} AS bucket, intent, count(*) AS queries "
            "FROM q GROUP BY ALL ORDER BY bucket, intent",
            {"bucket_us": _BUCKET_US[bucket]},
        )
        if frame.is_empty():
            return frame.with_columns(pl.lit(None, pl.Float64).alias("share"))
        start, end = frame["bucket"].min(), frame["bucket"].max()
        grid = pl.DataFrame({"bucket": pl.datetime_range(start, end, _BUCKET_STEP[bucket], eager=True)}).join(  # type: ignore[arg-type]
            frame.select("intent").unique(), how="cross"
        )
        frame = grid.join(frame, on=["bucket", "intent"], how="left").with_columns(pl.col("queries").fill_null(0))
        total = pl.col("queries").sum().over("bucket")
        return frame.with_columns(
            pl.when(total > 0).then(pl.col("queries") / total).otherwise(None).alias("share")
        ).sort("bucket", "intent")

    # -- latency -----------------------------------------------------------------------------------
    def latency_by_intent(self, f: Filters = Filters()) -> pl.DataFrame:
        """intent, queries, p50_ms, p95_ms, p99_ms, mean_ms over finished queries — slowest p95 first."""
        return self._frame(
            f,
            """
            SELECT intent, count(latency_ms) AS queries,
                   quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
                   quantile_cont(latency_ms, 0.99) AS p99_ms, avg(latency_ms) AS mean_ms
            FROM q WHERE latency_ms IS NOT NULL GROUP BY intent ORDER BY p95_ms DESC, intent
            """,
        )

    def latency_by_stage(self, f: Filters = Filters()) -> pl.DataFrame:
        """stage (classify, search, generate, total), queries, p50_ms, p95_ms, p99_ms, mean_ms."""
        selects = [
            f"SELECT '{stage}' AS stage, {order} AS ord, {column} AS ms FROM q WHERE {column} IS NOT NULL"
            for order, (stage, column) in enumerate(_STAGE_COLUMNS)  # constants, not input
        ]
        return self._frame(
            f,
            f"""
            SELECT stage, count(*) AS queries,
                   quantile_cont(ms, 0.5) AS p50_ms, quantile_cont(ms, 0.95) AS p95_ms,
                   quantile_cont(ms, 0.99) AS p99_ms, avg(ms) AS mean_ms
            FROM ({" UNION ALL ".join(selects)}) GROUP BY stage, ord ORDER BY ord
            """,
        )

    def latency_trend(self, f: Filters = Filters(), bucket: Bucket = "hour") -> pl.DataFrame:
        """bucket, queries, p50_ms, p95_ms, p99_ms."""
        if bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket!r}")
        return self._frame(
            f,
            f"""
            SELECT {_bucket_sql("started_at")} AS bucket, count(latency_ms) AS queries,
                   quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
                   quantile_cont(latency_ms, 0.99) AS p99_ms
            FROM q WHERE latency_ms IS NOT NULL GROUP BY bucket ORDER BY bucket
            """,
            {"bucket_us": _BUCKET_US[bucket]},
        )

    # -- errors, cache, quality --------------------------------------------------------------------
    def error_trend(self, f: Filters = Filters(), bucket: Bucket = "hour") -> pl.DataFrame:
        """bucket, finished, failed, error_rate."""
        if bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket!r}")
        return self._frame(
            f,
            f"""
            SELECT {_bucket_sql("started_at")} AS bucket,
                   count(*) FILTER (WHERE status <> 'in_progress') AS finished,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   failed / nullif(finished, 0) AS error_rate
            FROM q GROUP BY bucket ORDER BY bucket
            """,
            {"bucket_us": _BUCKET_US[bucket]},
        )

    def errors(self, f: Filters = Filters()) -> pl.DataFrame:
        """error_type, failed_stage, queries, share (of failures) — most frequent first."""
        frame = self._frame(
            f,
            "SELECT error_type, failed_stage, count(*) AS queries FROM q WHERE status = 'failed' "
            "GROUP BY ALL ORDER BY queries DESC, error_type, failed_stage",
        )
        return frame.with_columns((pl.col("queries") / pl.col("queries").sum()).alias("share"))

    def cache_by_intent(self, f: Filters = Filters()) -> pl.DataFrame:
        """intent, searched, cache_hits, cache_hit_rate over queries that reached search."""
        return self._frame(
            f,
            """
            SELECT intent, count(cache_hit) AS searched, count(*) FILTER (WHERE cache_hit) AS cache_hits,
                   cache_hits / nullif(searched, 0) AS cache_hit_rate
            FROM q WHERE cache_hit IS NOT NULL GROUP BY intent ORDER BY searched DESC, intent
            """,
        )

    def quality_distribution(self, f: Filters = Filters(), bins: int = 10) -> pl.DataFrame:
        """bin_start, bin_end, queries: a histogram of quality scores in [0, 1], every bin present."""
        if not 1 <= bins <= 100:
            raise ValueError(f"bins must be 1-100; got {bins!r}")
        counts = self._frame(
            f,
            "SELECT least(floor(quality_score * $bins), $bins - 1)::INTEGER AS bin, count(*) AS queries "
            "FROM q WHERE quality_score IS NOT NULL GROUP BY bin",
            {"bins": bins},
        )
        grid = pl.DataFrame({"bin": pl.int_range(0, bins, eager=True).cast(pl.Int32)})
        return (
            grid.join(counts.with_columns(pl.col("bin").cast(pl.Int32)), on="bin", how="left")
            .with_columns(
                (pl.col("bin") / bins).alias("bin_start"),
                ((pl.col("bin") + 1) / bins).alias("bin_end"),
                pl.col("queries").fill_null(0),
            )
            .select("bin_start", "bin_end", "queries")
        )

    # -- cost and comparisons (schema v2) ---------------------------------------------------------------
    def cost_by_model(self, f: Filters = Filters()) -> pl.DataFrame:
        """model, queries, priced, cost_usd, cost_per_query (of the priced ones), input_tokens, output_tokens —
        most expensive first. Each response counts under its own model, the one requested, else the one that
        answered, as the cost counter on /metrics labels it: a query that called two models counts under both, each
        with its own responses' cost (recorded, else priced: `cost_source`) and tokens. A query whose responses of
        a model have no price counts in `queries` but not in `priced`. Sums are exact (decimal), so the same
        lake always prints the same cents."""
        return self._frame(
            f,
            f"""
            , per_model AS (
                SELECT query_id, coalesce(gen_ai_request_model, gen_ai_response_model, 'unknown') AS model,
                       CASE WHEN count(*) = count(cost_usd) THEN {_EXACT_SUM} END AS cost_usd,
                       sum(gen_ai_usage_input_tokens) AS input_tokens, sum(gen_ai_usage_output_tokens) AS output_tokens
                FROM events
                WHERE event_type = 'response_generated' AND query_id IN (SELECT query_id FROM q)
                  AND (gen_ai_request_model IS NOT NULL OR gen_ai_response_model IS NOT NULL OR cost_usd IS NOT NULL)
                GROUP BY query_id, model
            )
            SELECT model, count(*) AS queries, count(cost_usd) AS priced, {_EXACT_SUM} AS cost_usd,
                   {_EXACT_SUM} / nullif(count(cost_usd), 0) AS cost_per_query,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
            FROM per_model
            GROUP BY model ORDER BY cost_usd DESC NULLS LAST, queries DESC, model
            """,
        )

    def compare_by(self, f: Filters, column: Literal["release", "prompt_version"]) -> pl.DataFrame:
        """One row per value of `column` (``release`` or ``prompt_version``), and one of value null for the queries
        without one (an older schema's, a producer's that gives none), last: value, queries, failed, error_rate,
        p50_ms, p95_ms (over finished queries, failed ones included, as in the summary), with_feedback, mean_score,
        positive_share (over finished queries), mean_quality, cost_usd, unpriced (answered, by a model without a
        price or none named: not in `cost_usd`, which is then a part of the whole) — most queries first. Empty when
        no query in the window has the column (nothing to compare)."""
        if column not in ("release", "prompt_version"):
            raise ValueError(f"compare_by takes release or prompt_version; got {column!r}")
        return self._frame(
            f,
            f"""
            SELECT {column} AS value, count(*) AS queries, count(*) FILTER (WHERE status = 'failed') AS failed,
                   failed / nullif(count(*) FILTER (WHERE status <> 'in_progress'), 0) AS error_rate,
                   quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
                   count(feedback_score) FILTER (WHERE status <> 'in_progress') AS with_feedback,
                   avg(feedback_score) FILTER (WHERE status <> 'in_progress') AS mean_score,
                   count(*) FILTER (WHERE feedback_score > 0 AND status <> 'in_progress')
                       / nullif(with_feedback, 0) AS positive_share,
                   avg(quality_score) AS mean_quality, {_EXACT_SUM} AS cost_usd,
                   count(*) FILTER (
                       WHERE cost_usd IS NULL
                         AND query_id IN (SELECT query_id FROM events WHERE event_type = 'response_generated')
                   ) AS unpriced
            FROM q WHERE EXISTS (SELECT 1 FROM q WHERE {column} IS NOT NULL)
            GROUP BY 1 ORDER BY value IS NULL, queries DESC, value
            """,
        )

    # -- what people ask ---------------------------------------------------------------------------
    def top_queries(self, f: Filters = Filters(), limit: int = 20) -> pl.DataFrame:
        """query_text, queries, intent (the most common), no_results, p50_ms, last_seen — most asked first.
        Texts that differ only in case, spacing or full-width forms count as one, as in search (`question_key`)."""
        return self._frame(
            f,
            f"""
            SELECT mode(query_text ORDER BY query_text) AS query_text, count(*) AS queries,
                   mode(intent ORDER BY intent) AS intent,
                   count(*) FILTER (WHERE result_count = 0) AS no_results,
                   quantile_cont(latency_ms, 0.5) AS p50_ms, max(started_at) AS last_seen
            FROM q WHERE query_text IS NOT NULL GROUP BY {QUESTION_KEY_SQL}
            ORDER BY queries DESC, last_seen DESC LIMIT $limit
            """,
            {"limit": _limit(limit)},
        )

    def no_result_queries(self, f: Filters = Filters(), limit: int = 20) -> pl.DataFrame:
        """query_text, queries, intent, last_seen for queries whose search found nothing."""
        return self._frame(
            f,
            f"""
            SELECT mode(query_text ORDER BY query_text) AS query_text, count(*) AS queries,
                   mode(intent ORDER BY intent) AS intent,
                   max(started_at) AS last_seen
            FROM q WHERE result_count = 0 AND query_text IS NOT NULL GROUP BY {QUESTION_KEY_SQL}
            ORDER BY queries DESC, last_seen DESC LIMIT $limit
            """,
            {"limit": _limit(limit)},
        )

    def recent_queries(self, f: Filters = Filters(), limit: int = 50) -> pl.DataFrame:
        """The latest queries, one row each: query_id, started_at, query_text, intent, status, latency_ms,
        result_count, cache_hit, env, trace_id."""
        return self._frame(
            f,
            """
            SELECT query_id, started_at, query_text, intent, status, latency_ms, result_count, cache_hit, env,
                   trace_id
            FROM q ORDER BY started_at DESC, query_id LIMIT $limit
            """,
            {"limit": _limit(limit)},
        )

    # -- feedback and sessions ---------------------------------------------------------------------
    def feedback_by_intent(self, f: Filters = Filters()) -> pl.DataFrame:
        """intent, finished, with_feedback, feedback_rate, mean_score, positive, negative: over finished queries,
        completed or failed, as the summary's feedback figures."""
        return self._frame(
            f,
            """
            SELECT intent, count(*) AS finished, count(feedback_score) AS with_feedback,
                   with_feedback / nullif(finished, 0) AS feedback_rate, avg(feedback_score) AS mean_score,
                   count(*) FILTER (WHERE feedback_score > 0) AS positive,
                   count(*) FILTER (WHERE feedback_score < 0) AS negative
            FROM q WHERE status <> 'in_progress' GROUP BY intent ORDER BY finished DESC, intent
            """,
        )

    def reformulation_by_intent(self, f: Filters = Filters()) -> pl.DataFrame:
        """intent, queries, reformulated, reformulation_rate: how often the next query of the session asked the
        same thing again within `reformulation.WINDOW_S` (the `queries` view's `reformulated`). Highest first."""
        return self._frame(
            f,
            """
            SELECT intent, count(*) AS queries, count(*) FILTER (WHERE reformulated) AS reformulated,
                   count(*) FILTER (WHERE reformulated) / count(*) AS reformulation_rate
            FROM q GROUP BY intent ORDER BY reformulation_rate DESC NULLS LAST, queries DESC, intent
            """,
        )

    def most_reformulated(self, f: Filters = Filters(), limit: int = 10) -> pl.DataFrame:
        """query_text, reformulated, queries, reformulation_rate, intent: the questions users most often had to
        ask again, most reformulated first. Texts that differ only in case, spacing or full-width forms count as
        one, as in `top_queries`."""
        return self._frame(
            f,
            f"""
            SELECT mode(query_text ORDER BY query_text) AS query_text,
                   count(*) FILTER (WHERE reformulated) AS reformulated,
                   count(*) AS queries, count(*) FILTER (WHERE reformulated) / count(*) AS reformulation_rate,
                   mode(intent ORDER BY intent) AS intent
            FROM q WHERE query_text IS NOT NULL GROUP BY {QUESTION_KEY_SQL}
            HAVING count(*) FILTER (WHERE reformulated) > 0
            ORDER BY 2 DESC, 4 DESC, query_text LIMIT $limit
            """,
            {"limit": _limit(limit)},
        )

    def sessions(self, f: Filters = Filters(), limit: int = 100) -> pl.DataFrame:
        """session_id, queries, distinct_queries, repeats, failed, started_at, last_seen — busiest first."""
        return self._frame(
            f,
            f"""
            {_SESSIONS_SQL}
            SELECT * FROM s ORDER BY queries DESC, started_at DESC LIMIT $limit
            """,
            {"limit": _limit(limit)},
        )

    def session_stats(self, f: Filters = Filters()) -> SessionStats:
        frame = self._frame(
            f,
            f"""
            {_SESSIONS_SQL}
            SELECT count(*) AS sessions, avg(queries) AS mean_queries, median(queries) AS median_queries,
                   max(queries) AS max_queries, count(*) FILTER (WHERE repeats > 0) AS sessions_with_repeats,
                   coalesce(sum(repeats), 0)::BIGINT AS repeated_queries
            FROM s
            """,
        )
        row: dict[str, Any] = frame.row(0, named=True)
        return SessionStats(**row)

    # -- the stage funnel --------------------------------------------------------------------------
    def funnel(self, f: Filters = Filters()) -> pl.DataFrame:
        """step, queries, dropped (since the step before), drop_rate, of_received: how far queries get
        through received → classified → searched → answered → completed. A query counts at every step up to the
        furthest it reached, so a producer that skips a step (no classification) never makes a step gain queries:
        the drops are never negative. Queries still in progress are left out: they have dropped nowhere yet."""
        steps = pl.DataFrame({"step": [s for s, _ in FUNNEL_STEPS], "n": list(range(len(FUNNEL_STEPS)))})
        furthest = self._frame(
            f,
            """
            SELECT max(list_position($steps, event_type)) - 1 AS n, query_id FROM events
            WHERE query_id IN (SELECT query_id FROM q WHERE status <> 'in_progress')
              AND list_contains($steps, event_type)
            GROUP BY query_id
            """,
            {"steps": [e for _, e in FUNNEL_STEPS]},
        )
        counts = [int((furthest["n"] >= i).sum()) if furthest.height else 0 for i in range(len(FUNNEL_STEPS))]
        frame = steps.with_columns(pl.Series("queries", counts, dtype=pl.Int64)).drop("n")
        previous = pl.col("queries").shift(1)
        first = pl.col("queries").first()
        return frame.select(
            "step",
            "queries",
            (previous - pl.col("queries")).fill_null(0).alias("dropped"),
            # The first step drops nothing (as `dropped` says 0), rather than showing a blank rate.
            pl.when(previous.is_null())
            .then(0.0)
            .when(previous > 0)
            .then((previous - pl.col("queries")) / previous)
            .otherwise(None)
            .alias("drop_rate"),
            pl.when(first > 0).then(pl.col("queries") / first).otherwise(None).alias("of_received"),
        )

    def matching(self, f: Filters, query_ids: Sequence[str]) -> set[str]:
        """Which of `query_ids` the filters select (to apply them to results found elsewhere, e.g. search). With a
        snapshot, a query newer than it (search reads an index brought up to date with the lake) is judged on the
        lake as it is now, as `answer` reads it: dropped, it made the explorer ask the index for 8, 64, 512 times as
        many hits in turn while traffic kept the best ones fresh (181 s for one search)."""
        if not query_ids:
            return set()
        where, params = f.clause()
        # Every id the lake (or the snapshot) holds, and whether the filters select it: one query for both.
        held = self._answer_to(
            f"SELECT query_id, coalesce({where}, false) AS selected FROM {self._source} "
            "WHERE list_contains($ids, query_id)",
            {**params, "ids": list(query_ids)},
        )
        found = {query_id for query_id, selected in held.iter_rows() if selected}
        if self._memo is not None and (newer := sorted(set(query_ids) - set(held["query_id"].to_list()))):
            now = sql_frame(
                self.catalog,
                f"SELECT query_id FROM ({_BASE_SQL}) WHERE ({where}) AND list_contains($ids, query_id)",
                {**params, "ids": newer},
            )
            found.update(now["query_id"].to_list())
        return found

    # -- one query ---------------------------------------------------------------------------------
    def answer(self, query_id: str) -> Answer | None:
        """The answer and sources of one query; None when the lake has no such query."""
        columns = """query_id, answer_text, answer_chars, response_type, finish_reason, model, response_model,
                     cost_usd, cost_source, ttft_ms, release, prompt_version, sources"""
        at = {"query_id": query_id}
        frame = self._answer_to(f"SELECT {columns} FROM {self._source} WHERE query_id = $query_id", at)
        if frame.is_empty() and self._memo is not None:
            # A query newer than the snapshot (a search or a typed id finds it in the lake as it is now): the view
            # computed for it alone, not kept, so that an answer still to come is seen when it comes.
            frame = sql_frame(self.catalog, f"SELECT {columns} FROM queries WHERE query_id = $query_id", at)
        if frame.is_empty():
            return None
        row = frame.row(0, named=True)
        sources = pl.DataFrame(
            row.pop("sources") or [],
            schema={"doc_id": pl.String, "title": pl.String, "score": pl.Float64, "rank": pl.Int32},
        ).select("rank", "doc_id", "title", "score")
        return Answer(**row, sources=sources)

    def query_events(self, query_id: str) -> pl.DataFrame:
        """A query's events in order: ts, offset_ms (from its first event), event_type and the fields that
        matter for each step. Events at the same time (a producer that stamps a query's steps with one time, as
        an OTLP span may) come in the order of a query's life: received, classified, searched, answered, ended."""
        return self._answer_to(
            f"""
                SELECT ts, (epoch_us(ts) - epoch_us(min(ts) OVER ())) / 1000.0 AS offset_ms, event_type,
                       duration_ms, intent, confidence, result_count, cache_hit, gen_ai_request_model AS model,
                       quality_score, latency_ms, error_type, error_message, stage, score, comment, query_text,
                       trace_id, event_id
                FROM events WHERE query_id = $query_id
                ORDER BY ts, list_position({list(EVENT_TYPES)}, event_type), event_id
            """,
            {"query_id": query_id},
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """What a query was answered, as the `queries` view has it (schema v2: older queries have none)."""

    query_id: str
    answer_text: str | None
    answer_chars: int | None
    response_type: str | None
    finish_reason: str | None
    model: str | None
    response_model: str | None
    cost_usd: float | None
    cost_source: str | None
    ttft_ms: float | None
    release: str | None
    prompt_version: str | None
    #: rank, doc_id, title, score of each source, best first
    sources: pl.DataFrame


_SESSIONS_SQL: Final = f"""
, asked AS (
    SELECT session_id, status, started_at,
           row_number() OVER (PARTITION BY session_id, {QUESTION_KEY_SQL} ORDER BY started_at) > 1 AS repeat
    FROM q WHERE session_id IS NOT NULL
), s AS (
    SELECT session_id, count(*) AS queries, count(*) - count(*) FILTER (WHERE repeat) AS distinct_queries,
           count(*) FILTER (WHERE repeat) AS repeats, count(*) FILTER (WHERE status = 'failed') AS failed,
           min(started_at) AS started_at, max(started_at) AS last_seen
    FROM asked GROUP BY session_id
)
"""


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise ValueError(f"limit must be a whole number in 1-100000; got {limit!r}")
    return limit
