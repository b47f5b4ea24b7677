# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Latency investigation
#
# Where does the time go? From the overall percentiles down to the stage that makes the slowest queries slow,
# with DuckDB SQL over the lake. Set `QUERYLOG_HOME` to your data directory (default `.querylog`).

# %%
import polars as pl

from querylog.analytics.catalog import Catalog
from querylog.config import Settings

pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_fmt_str_lengths(50)

settings = Settings.from_env()
if not settings.lake_dir.is_dir():  # a mistyped home would show empty tables, as if nothing had happened
    raise SystemExit(f"No lake at {settings.lake_dir}: set QUERYLOG_HOME to your data directory (make run writes .querylog)")
catalog = Catalog(settings.lake_dir)


def sql(query: str, **params: object) -> pl.DataFrame:
    """DuckDB SQL over the lake as a polars DataFrame; values go in as $named parameters, never spliced."""
    return catalog.connection.sql(query, params=params).pl()


# %% [markdown]
# ## Percentiles, overall and per day
# `latency_ms` is measured by the tracker from `query_received` to `query_completed`/`query_failed`.

# %%
overall = sql("""
    SELECT count(latency_ms) AS finished,
           quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
           quantile_cont(latency_ms, 0.99) AS p99_ms, max(latency_ms) AS max_ms
    FROM queries
""")
print(overall)
print(sql("""
    SELECT date_trunc('day', started_at) AS day, count(latency_ms) AS finished,
           round(quantile_cont(latency_ms, 0.5), 1) AS p50_ms, round(quantile_cont(latency_ms, 0.95), 1) AS p95_ms,
           round(quantile_cont(latency_ms, 0.99), 1) AS p99_ms
    FROM queries GROUP BY day ORDER BY day
"""))

# %% [markdown]
# ## By intent: which kind of question is slow?

# %%
by_intent = sql("""
    SELECT coalesce(intent, 'unclassified') AS intent, count(latency_ms) AS finished,
           round(quantile_cont(latency_ms, 0.5), 1) AS p50_ms, round(quantile_cont(latency_ms, 0.95), 1) AS p95_ms,
           round(quantile_cont(latency_ms, 0.99), 1) AS p99_ms
    FROM queries WHERE latency_ms IS NOT NULL GROUP BY 1
    ORDER BY quantile_cont(latency_ms, 0.95) DESC  -- the exact p95, not the rounded one shown
""")
print(by_intent)
slowest_intent = by_intent["intent"][0] if by_intent.height else None
print("slowest intent at p95:", slowest_intent)

# %% [markdown]
# ## By stage
# Stage durations come from `intent_classified`, `search_completed` and `response_generated`.

# %%
stages = sql("""
    UNPIVOT (SELECT classify_ms, search_ms, generate_ms FROM queries)
    ON classify_ms, search_ms, generate_ms INTO NAME stage VALUE ms
""").group_by("stage").agg(
    pl.len().alias("queries"),
    pl.col("ms").quantile(0.5, "linear").round(1).alias("p50_ms"),
    pl.col("ms").quantile(0.95, "linear").round(1).alias("p95_ms"),
    pl.col("ms").mean().round(1).alias("mean_ms"),
).sort("mean_ms", descending=True)
print(stages)

# %% [markdown]
# ## What makes the slowest 5% slow?
# For queries above the overall p95: each stage's share of their latency, against the same for the rest.

# %%
tail = sql("""
    WITH q AS (SELECT * FROM queries WHERE status = 'completed'),
    cut AS (SELECT quantile_cont(latency_ms, 0.95) AS p95 FROM q)
    SELECT latency_ms > cut.p95 AS slowest_5pct, count(*) AS queries,
           round(avg(classify_ms / latency_ms), 3) AS classify_share,
           round(avg(search_ms / latency_ms), 3) AS search_share,
           round(avg(generate_ms / latency_ms), 3) AS generate_share,
           round(avg(latency_ms)) AS mean_ms
    FROM q, cut GROUP BY 1 ORDER BY 1
""")
print(tail)

# %% [markdown]
# ## The ten slowest queries, with their stages
# The `query_id` opens the query's timeline in the explorer (`querylog ui`, Queries tab).

# %%
print(sql("""
    SELECT query_id, query_text, coalesce(intent, 'unclassified') AS intent, status,
           round(latency_ms) AS latency_ms, round(classify_ms, 1) AS classify_ms, round(search_ms, 1) AS search_ms,
           round(generate_ms) AS generate_ms, cache_hit, model
    FROM queries WHERE latency_ms IS NOT NULL ORDER BY latency_ms DESC LIMIT $n
""", n=10))

# %% [markdown]
# ## Does the cache help?
# Search time with and without a cache hit.

# %%
print(sql("""
    SELECT cache_hit, count(*) AS searches, round(quantile_cont(search_ms, 0.5), 1) AS p50_search_ms,
           round(quantile_cont(search_ms, 0.95), 1) AS p95_search_ms
    FROM queries WHERE cache_hit IS NOT NULL GROUP BY cache_hit ORDER BY cache_hit
"""))

# %% [markdown]
# ## Failures and where they happen
# A timeout in `generate` and an error in `search` call for different fixes.

# %%
print(sql("""
    SELECT error_type, failed_stage, count(*) AS queries, round(quantile_cont(latency_ms, 0.5)) AS p50_ms_to_fail
    FROM queries WHERE status = 'failed' GROUP BY ALL ORDER BY queries DESC
"""))
