"""The DuckDB catalog: views ``events``, ``queries`` and ``sessions`` over the Parquet lake.

Each `Catalog` is an in-memory DuckDB database whose views read the lake's files, so any number of
readers work while ``querylog serve`` writes: there is no database file and no lock to contend for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb
import pyarrow as pa

from querylog.analytics.lake_generation import consistent
from querylog.logging import reformulation
from querylog.logging.schema import LAKE_SCHEMA

_T = TypeVar("_T")

__all__ = [
    "NOT_IN_QUERIES",
    "QUERIES_SQL",
    "QUERY_INTENT_SQL",
    "SESSIONS_SQL",
    "Catalog",
    "CatalogError",
    "as_asked",
    "queries_select",
    "queries_sql",
]

#: Event fields the `queries` view does not show as a column of their own, and why. A test holds every other
#: event field to a `queries` column, so a new field cannot silently stay out of the per-query view.
NOT_IN_QUERIES: Final = {
    "event_type": "the view is one row per query; `status` summarises the terminal event",
    "event_id": "one per event, not per query",
    "ts": "shown as started_at and ended_at",
    "duration_ms": "shown per stage as classify_ms, search_ms and generate_ms",
    "confidence": "shown as intent_confidence",
    "gen_ai_request_model": "shown as model",
    "gen_ai_usage_input_tokens": "shown as input_tokens",
    "gen_ai_usage_output_tokens": "shown as output_tokens",
    "gen_ai_response_model": "shown as response_model",
    "gen_ai_system": "shown as provider",
    "gen_ai_usage_cache_read_input_tokens": "shown as cache_read_tokens",
    "gen_ai_usage_reasoning_output_tokens": "shown as reasoning_tokens",
    "stage": "shown as failed_stage",
    "score": "shown as feedback_score (the latest)",
    "comment": "shown as feedback_comment (the latest)",
}


class CatalogError(Exception):
    """A query the catalog could not run; the message is DuckDB's, on one line."""


_TERMINALS: Final = "'query_completed', 'query_failed'"


def _last(column: str, event_type: str) -> str:
    """SQL: `column` of the query's latest event of `event_type` that has one (arg_max skips NULLs)."""
    return _latest(column, f"event_type = '{event_type}'")


def _last_terminal(column: str) -> str:
    """SQL: `column` of the query's latest `query_completed` or `query_failed` that has one."""
    return _latest(column, f"event_type IN ({_TERMINALS})")


def _final_terminal(column: str) -> str:
    """SQL: `column` of the query's latest `query_completed` or `query_failed`, NULL included (as `_last_verdict`)."""
    return f"(arg_max({{'v': {column}}}, (ts, event_type)) FILTER (WHERE event_type IN ({_TERMINALS}))).v"


def _latest(column: str, where: str) -> str:
    return f"arg_max({column}, ts) FILTER (WHERE {where})"


def _step(event_type: str, column: str) -> str:
    """SQL: `column` of the query's latest `event_type` event, NULL included: a later step without an answer (a
    filtered one) has none, never an earlier draft's beside the later step's model (`arg_max` would skip it)."""
    return f"arg_max_null({column}, (ts, event_id)) FILTER (WHERE event_type = '{event_type}')"


def _search(column: str) -> str:
    return _step("search_completed", column)


def _response(column: str) -> str:
    return _step("response_generated", column)


#: SQL: the query's first `query_received`, as a whole: one app's, if two used one query id (on a tie in time, the
#: lower event id), never a column of one and another of the other.
_FIRST_ASKED: Final = (
    "arg_min({'query_text': query_text, 'language': language, 'env': env, 'service': service, 'release': release, "
    "'prompt_version': prompt_version}, (ts, event_id)) FILTER (WHERE event_type = 'query_received')"
)


def as_asked(column: str) -> str:
    """SQL: `column` (query_text, language, env, service, release or prompt_version) of the query's first
    `query_received`: the query as it was asked."""
    return f"({_FIRST_ASKED}).{column}"


def _own(column: str) -> str:
    """SQL: `column` of the query's first own event that has one. Not a feedback's: `/v1/feedback` stamps a verdict
    with the server's service, env and release, which are not those of a query another app asked."""
    return f"arg_min({column}, ts) FILTER (WHERE event_type <> 'feedback_received')"


#: SQL over one query's events (grouped by query_id): its intent. The terminal event's is the query's last word on
#: it (what the metrics count), else the classifier's latest. The `queries` view and search's grouping share it.
#: An empty one is none: an earlier release's ingest took ``"intent": ""``, which the log and the metrics read as none.
_TERMINAL_INTENT: Final = _last_terminal("nullif(intent, '')")
QUERY_INTENT_SQL: Final = f"coalesce({_TERMINAL_INTENT}, {_last('intent', 'intent_classified')})"


def _last_verdict(column: str) -> str:
    """SQL: `column` of the query's latest feedback, NULL included: a later verdict without a comment has none (a
    NULL argument would make arg_max take an older verdict's); ties broken by event id. Few rows: the struct is
    cheap here, where on every event it cost the view a fifth of its time."""
    return f"(arg_max({{'v': {column}}}, (ts, event_id)) FILTER (WHERE event_type = 'feedback_received')).v"


def queries_sql(names: reformulation.Names | None = None) -> str:
    """The `queries` view (`queries_select`)."""
    return f"CREATE OR REPLACE VIEW queries AS {queries_select(names)}"


def queries_select(names: reformulation.Names | None = None, *, asked_from: datetime | None = None) -> str:
    """The `queries` view's SELECT. `reformulated`: the next query of the session came soon and asked the same thing
    again (the rule is logging/reformulation.py's, which the metrics fold applies too; docs/analytics.md); `names`
    (the alias file's companies) lets it see the same company asked about in other words. `asked_from`: only the
    queries asked from then on, each whole (its late feedback too), and each one's `reformulated` as the view has it
    (the session's next query comes later, so it is among them); what a window of the lake costs, not all of it."""
    asked = (
        ""
        if asked_from is None
        else "WHERE query_id IN (SELECT query_id FROM events WHERE event_type = 'query_received' AND ts >= "
        f"'{asked_from.astimezone(UTC).isoformat()}'::TIMESTAMPTZ)\n"
    )
    stages = reformulation.sql_columns("query_text", names)
    hidden = ", ".join(name for stage in stages for name, _ in stage)
    compared, source = "", "per_query"
    for n, stage in enumerate(stages):  # each stage reads the columns of the one before
        columns = ", ".join(f"{expr} AS {name}" for name, expr in stage)
        compared += f"\n, compared{n} AS (\nSELECT {source}.*, {columns}\nFROM {source}\n)"
        source = f"compared{n}"
    said_again = reformulation.sql_reformulated("lead({}) OVER next_in_session", names)
    return f"""
WITH per_query AS (
SELECT
    query_id,
    {as_asked("query_text")} AS query_text,
    {QUERY_INTENT_SQL} AS intent,
    {_last("confidence", "intent_classified")} AS intent_confidence,
    -- Status and latency are the latest terminal event's (a failure a producer retried to an answer under the same
    -- query id is completed), both from that one event; on a tie in time, the failure.
    CASE
        WHEN max(ts) FILTER (WHERE event_type = 'query_failed')
            >= coalesce(max(ts) FILTER (WHERE event_type = 'query_completed'), '-infinity'::TIMESTAMPTZ) THEN 'failed'
        WHEN bool_or(event_type = 'query_completed') THEN 'completed'
        ELSE 'in_progress'
    END AS status,
    {_final_terminal("latency_ms")} AS latency_ms,
    -- A query may search or call its model more than once (an agent's steps): the time is their sum, what the user
    -- got is the last one's (each step's values from one event), the tokens and the cost are all of them.
    sum(duration_ms) FILTER (WHERE event_type = 'intent_classified') AS classify_ms,
    sum(duration_ms) FILTER (WHERE event_type = 'search_completed') AS search_ms,
    sum(duration_ms) FILTER (WHERE event_type = 'response_generated') AS generate_ms,
    coalesce({_search("result_count")}, {_last_terminal("result_count")}) AS result_count,
    coalesce({_search("cache_hit")}, {_last_terminal("cache_hit")}) AS cache_hit,
    coalesce({_response("quality_score")}, {_last_terminal("quality_score")}) AS quality_score,
    {_response("gen_ai_request_model")} AS model,
    sum(gen_ai_usage_input_tokens) FILTER (WHERE event_type = 'response_generated') AS input_tokens,
    sum(gen_ai_usage_output_tokens) FILTER (WHERE event_type = 'response_generated') AS output_tokens,
    {_response("gen_ai_response_model")} AS response_model,
    {_response("gen_ai_system")} AS provider,
    sum(gen_ai_usage_cache_read_input_tokens) FILTER (WHERE event_type = 'response_generated') AS cache_read_tokens,
    sum(gen_ai_usage_reasoning_output_tokens) FILTER (WHERE event_type = 'response_generated') AS reasoning_tokens,
    {_response("answer_text")} AS answer_text,
    {_response("answer_chars")} AS answer_chars,
    {_response("response_type")} AS response_type,
    {_response("finish_reason")} AS finish_reason,
    {_response("ttft_ms")} AS ttft_ms,
    -- The cost of every response, or none when one of them has no price: a part is not the cost.
    CASE WHEN count(*) FILTER (WHERE event_type = 'response_generated') = count(cost_usd)
        THEN sum(cost_usd) END AS cost_usd,
    -- Its source: one, or 'mixed'; none for a query without a response (a failure, one in progress).
    CASE WHEN count(*) FILTER (WHERE event_type = 'response_generated') = count(cost_usd) AND count(cost_usd) > 0
        THEN CASE WHEN min(cost_source) = max(cost_source) THEN min(cost_source) ELSE 'mixed' END
    END AS cost_source,
    {_search("sources")} AS sources,
    {_search("sources_dropped")} AS sources_dropped,
    {_search("backend_durations_ms")} AS backend_durations_ms,
    {_search("top_score")} AS top_score,
    {as_asked("language")} AS language,
    {_last("error_type", "query_failed")} AS error_type,
    {_last("error_message", "query_failed")} AS error_message,
    {_last("stage", "query_failed")} AS failed_stage,
    -- The latest verdict, its score and its comment from the same event (a verdict without a comment has none).
    {_last_verdict("score")} AS feedback_score,
    {_last_verdict("comment")} AS feedback_comment,
    {_own("release")} AS release,
    {_own("prompt_version")} AS prompt_version,
    {_own("tags")} AS tags,
    {_own("attributes")} AS attributes,
    min(schema_version) AS schema_version,
    -- The query's own, as asked: never a feedback's, which whoever gave it names (`/v1/feedback` takes any ids).
    {_own("session_id")} AS session_id,
    {_own("user_id")} AS user_id,
    {_own("trace_id")} AS trace_id,
    {as_asked("env")} AS env,
    {as_asked("service")} AS service,
    min(ts) FILTER (WHERE event_type = 'query_received') AS started_at,
    max(ts) FILTER (WHERE event_type IN ('query_completed', 'query_failed')) AS ended_at
FROM events
{asked}GROUP BY query_id
HAVING bool_or(event_type = 'query_received')
){compared}
SELECT
    * EXCLUDE ({hidden}),
    coalesce(
        session_id IS NOT NULL
        AND lead(started_at) OVER next_in_session - started_at <= INTERVAL {reformulation.WINDOW_S} SECOND
        AND {said_again},
        false
    ) AS reformulated
FROM {source}
WINDOW next_in_session AS (PARTITION BY session_id ORDER BY started_at, query_id)
"""


QUERIES_SQL: Final = queries_sql()


SESSIONS_SQL: Final = """
CREATE OR REPLACE VIEW sessions AS
SELECT
    session_id,
    any_value(user_id) AS user_id,
    count(*) AS queries,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(DISTINCT query_text) AS distinct_queries,
    min(started_at) AS started_at,
    max(coalesce(ended_at, started_at)) AS last_seen_at,
    avg(latency_ms) AS avg_latency_ms
FROM queries
WHERE session_id IS NOT NULL
GROUP BY session_id
"""


class Catalog:
    """An in-memory DuckDB with the lake's views. Cheap to create; use one per thread or command."""

    def __init__(
        self,
        lake_dir: Path | str,
        *,
        threads: int | None = None,
        filesystem: Any = None,
        names: reformulation.Names | None = None,
    ) -> None:
        """`names`: the alias file's companies, for the `queries` view's `reformulated` (`Settings.company_names`)."""
        self.names = names
        # An ``s3://bucket/prefix`` lake is read through pyarrow (see lake_remote); `filesystem` overrides the
        # S3FileSystem built from the environment. `lake_dir` stays a Path for local lakes.
        self.lake_uri: str | None = lake_dir if isinstance(lake_dir, str) and lake_dir.startswith("s3://") else None
        if self.lake_uri is not None and filesystem is None:
            from querylog.analytics.lake_remote import s3_filesystem

            filesystem = s3_filesystem()
        self.filesystem = filesystem
        self.lake_dir = Path(lake_dir)
        config: dict[str, Any] = {}
        if threads is not None:
            config["threads"] = threads
        self.connection = duckdb.connect(":memory:", config=config)
        self.connection.execute("SET TimeZone = 'UTC'")
        self.refresh()

    @property
    def glob(self) -> str:
        if self.lake_uri is not None:
            return self.lake_uri.rstrip("/") + "/events/date=*/hour=*/*.parquet"
        return str(self.lake_dir / "events" / "date=*" / "hour=*" / "*.parquet")

    def has_data(self) -> bool:
        if self.lake_uri is not None:
            from querylog.analytics.lake_remote import parse_lake_uri, remote_lake_files

            return bool(remote_lake_files(parse_lake_uri(self.lake_uri), self.filesystem))
        return any((self.lake_dir / "events").glob("date=*/hour=*/*.parquet"))

    def idle_connection(self) -> duckdb.DuckDBPyConnection:
        """The connection, with no result of `execute` left part-read. DuckDB 2 refuses a relation (``sql``,
        ``register``) on a connection whose last cursor was not read to its end; as with DuckDB 1, the catalog's
        next query ends that cursor."""
        self.connection.abort()
        return self.connection

    def refresh(self) -> None:
        """(Re)create the views. DuckDB expands the file glob at each query, so new files are seen without
        this; it is needed only when the lake went from empty to non-empty."""
        con = self.idle_connection()
        dataset = None
        if self.lake_uri is not None:  # a remote lake: its file list as of now, so refresh() to see new files
            from querylog.analytics.lake_remote import lake_dataset

            dataset = lake_dataset(self.lake_uri, filesystem=self.filesystem)
        # Every column of the current schema, whichever generations of files the lake holds: a lake of v1 files
        # only still has `answer_text` (null), so the views and any query written for v2 work on it.
        con.register("_empty_events", pa.Table.from_batches([], schema=LAKE_SCHEMA))

        def create() -> None:
            if dataset is not None:
                con.register("_lake_events", dataset)
                con.execute(
                    "CREATE OR REPLACE VIEW events AS SELECT * FROM _empty_events "
                    "UNION ALL BY NAME SELECT * EXCLUDE (date, hour) FROM _lake_events"
                )
            elif self.lake_uri is None and self.has_data():
                path = self.glob.replace("'", "''")
                con.execute(
                    "CREATE OR REPLACE VIEW events AS SELECT * FROM _empty_events UNION ALL BY NAME "
                    f"SELECT * EXCLUDE (date, hour) FROM read_parquet('{path}', "
                    "hive_partitioning = true, union_by_name = true)"
                )
            else:
                con.execute("CREATE OR REPLACE VIEW events AS SELECT * FROM _empty_events")
            con.execute(queries_sql(self.names))
            con.execute(SESSIONS_SQL)

        # The views read every file's schema as they are made: a compaction swapping files meanwhile is waited out.
        self.consistent(create)

    def consistent(self, run: Callable[[], _T]) -> _T:
        """`run()` (a query on this catalog's connection, its result fetched) from a lake that no compaction or
        retention changed while it ran: run again if one did (`lake_generation`)."""
        if self.lake_uri is not None:  # a remote lake's file list is fixed when the catalog is opened
            try:
                return run()
            except CatalogError as exc:
                if "does not exist" not in str(exc):
                    raise
            # Another host's `lake push --delete` removed a file the list holds (an hour it compacted): the list
            # as the bucket holds it now, once; what replaced the file was uploaded before it went.
            self.refresh()
            return run()
        return consistent(self.lake_dir, run)

    def execute(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
        """Start SQL and return its cursor. The rows are read as it is fetched, so a compaction meanwhile can
        make the fetch fail; `query` and `arrow` read everything first and are safe from it. The cursor is good
        until the catalog's next query."""
        try:
            cursor = self.connection.execute(sql, params)
        except duckdb.Error as exc:
            raise CatalogError(_one_line(exc)) from exc
        return _statement_ran(cursor, sql)

    def query(
        self, sql: str, params: list[Any] | dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL; return (column names, rows)."""

        def run() -> tuple[list[str], list[tuple[Any, ...]]]:
            try:
                cursor = _statement_ran(self.connection.execute(sql, params), sql)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                return columns, cursor.fetchall()
            except duckdb.Error as exc:
                raise CatalogError(_one_line(exc)) from exc

        return self.consistent(run)

    def arrow(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pa.Table:
        def run() -> pa.Table:
            try:
                # .sql(): an Arrow result straight from the relation (execute() would copy the rows once more)
                return _statement_ran(self.idle_connection().sql(sql, params=params), sql).to_arrow_table()
            except duckdb.Error as exc:
                raise CatalogError(_one_line(exc)) from exc

        return self.consistent(run)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _statement_ran(result: _T | None, sql: str) -> _T:
    """DuckDB's answer to `sql`, which is None when `sql` held no statement (blank, or only a comment)."""
    if result is None:
        what = f"in {sql.strip()[:80]!r}" if sql.strip() else "given"
        raise CatalogError(f"no SQL statement {what}: give a query, e.g. select * from queries limit 10")
    return result


#: The tables a user queries: the lake's views.
LAKE_TABLES: Final = ("queries", "events", "sessions")
#: DuckDB's guess at a table a user mistyped, which may be one of its own catalog's (``"pg_enum"``).
_DID_YOU_MEAN: Final = re.compile(r'Did you mean "(?P<name>[^"]+)"\?')


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "Table with name" in text:  # name the lake's tables, not DuckDB's system catalog
        guess = _DID_YOU_MEAN.search(text)
        if guess is not None and guess["name"] not in LAKE_TABLES:
            text = text.replace(guess.group(), f"The lake's tables: {', '.join(LAKE_TABLES)}.")
    return text if len(text) <= 500 else text[:497] + "..."
