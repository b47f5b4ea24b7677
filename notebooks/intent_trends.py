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
# # Intent trends
#
# What do users ask about, and how does that change? DuckDB SQL over the Parquet lake's `queries` view
# (one row per query). Point it at your data with `QUERYLOG_HOME` (default `.querylog`), e.g.
# `QUERYLOG_HOME=~/.querylog jupyter lab notebooks/`; open this file as a notebook with Jupytext, run it
# top to bottom in VS Code, or simply `python notebooks/intent_trends.py`.

# %%
import altair as alt
import polars as pl

from querylog.analytics.catalog import Catalog
from querylog.config import Settings

pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_fmt_str_lengths(60)

settings = Settings.from_env()
if not settings.lake_dir.is_dir():  # a mistyped home would show empty tables, as if nothing had happened
    raise SystemExit(
        f"No lake at {settings.lake_dir}: set QUERYLOG_HOME to your data directory (make run writes .querylog)"
    )
catalog = Catalog(settings.lake_dir)


def sql(query: str, **params: object) -> pl.DataFrame:
    """DuckDB SQL over the lake as a polars DataFrame; values go in as $named parameters, never spliced."""
    return catalog.connection.sql(query, params=params).pl()


print(f"lake: {settings.lake_dir}")

# %% [markdown]
# ## The whole lake at a glance

# %%
overview = sql("""
    SELECT count(*) AS queries, min(started_at) AS first, max(started_at) AS last,
           count(DISTINCT coalesce(intent, 'unclassified')) AS intents, count(DISTINCT session_id) AS sessions
    FROM queries
""")
print(overview)

# %% [markdown]
# ## Share of each intent per day
# `unclassified` collects queries that never got an intent (in flight, or failed while classifying).

# %%
daily = sql("""
    SELECT date_trunc('day', started_at) AS day, coalesce(intent, 'unclassified') AS intent, count(*) AS queries
    FROM queries GROUP BY ALL ORDER BY day, intent
""").with_columns((pl.col("queries") / pl.col("queries").sum().over("day")).alias("share"))
print(daily.pivot(on="intent", index="day", values="share").fill_null(0.0).sort("day"))

# %% [markdown]
# ## Which intents are growing?
# The slope of each intent's daily share (least squares, in percentage points per day). A day without
# any query of an intent counts as a share of 0, not as a missing day. One day has no slope: a trend needs two.

# %%
growth = sql("""
    WITH days AS (SELECT DISTINCT date_trunc('day', started_at) AS day FROM queries),
    intents AS (SELECT DISTINCT coalesce(intent, 'unclassified') AS intent FROM queries),
    d AS (
        SELECT date_trunc('day', started_at) AS day, coalesce(intent, 'unclassified') AS intent, count(*) AS n
        FROM queries GROUP BY ALL
    ), s AS (
        SELECT day, intent, coalesce(n, 0) / sum(coalesce(n, 0)) OVER (PARTITION BY day) AS share
        FROM days CROSS JOIN intents LEFT JOIN d USING (day, intent)
    )
    SELECT intent, CASE WHEN count(*) > 1 THEN regr_slope(share * 100, epoch(day) / 86400) END AS pp_per_day,
           count(*) AS days
    FROM s GROUP BY intent ORDER BY pp_per_day DESC NULLS LAST
""")
print(growth)
if growth.height and growth["days"].max() < 2:
    print("rising: no trend from a single day")
else:
    rising = growth.filter(pl.col("pp_per_day").is_not_nan() & (pl.col("pp_per_day") > 0))["intent"].to_list()
    print("rising:", ", ".join(rising) or "none")

# %% [markdown]
# ## Hour of day (UTC)
# When each intent is asked; useful for capacity and for reading the dashboards.

# %%
hourly = sql("""
    SELECT hour(started_at) AS hour, coalesce(intent, 'unclassified') AS intent, count(*) AS queries
    FROM queries GROUP BY ALL ORDER BY hour, intent
""")
print(hourly.pivot(on="intent", index="hour", values="queries").fill_null(0).sort("hour"))

# %% [markdown]
# ## Examples per intent
# The most asked question of each intent, and how confident the classifier was on average.

# %%
examples = sql("""
    SELECT coalesce(intent, 'unclassified') AS intent, mode(query_text ORDER BY query_text) AS typical_question,
           count(*) AS queries, round(avg(intent_confidence), 3) AS mean_confidence
    FROM queries GROUP BY 1 ORDER BY queries DESC
""")
print(examples)

# %% [markdown]
# ## The trend as a chart
# In Jupyter the chart below renders inline (Korean included, with a CJK font installed). As in the explorer, the
# nine intents asked most each get a colour and the rest are summed as one "other" series.

# %%
totals = daily.group_by("intent").agg(pl.col("queries").sum()).sort(["queries", "intent"], descending=[True, False])
kept = totals["intent"] if totals.height <= 10 else totals["intent"].head(9)
other = f"other ({totals.height - kept.len()} intents)"
shown = (
    daily.with_columns(pl.when(pl.col("intent").is_in(kept.implode())).then("intent").otherwise(pl.lit(other)))
    .group_by("day", "intent")
    .agg(pl.col("queries").sum())
    .with_columns((pl.col("queries") / pl.col("queries").sum().over("day")).alias("share"))
    .sort("day", "intent")
)
alt.data_transformers.disable_max_rows()  # a long history is drawn whole: Altair refuses 5,000 rows and more
chart = (
    alt.Chart(shown)
    .mark_area()
    .encode(
        x=alt.X("day:T", title=None),
        y=alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%")),
        color="intent:N",
        tooltip=["day:T", "intent:N", "queries:Q", alt.Tooltip("share:Q", format=".1%")],
    )
    .properties(title="Intent share per day", width=640, height=260)
)
print(
    f"chart: {len(chart.to_dict()['encoding'])} encodings over {shown.height} rows, {shown['intent'].n_unique()} series"
)
chart
