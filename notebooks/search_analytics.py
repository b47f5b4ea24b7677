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
# # Search analytics
#
# What users look for, what retrieval fails to find, and how they rephrase — DuckDB SQL over the lake, then
# the full-text index (`querylog search`) on the same data. Set `QUERYLOG_HOME` to your data directory.

# %%
import polars as pl

from querylog.analytics.catalog import Catalog
from querylog.analytics.queries import QUESTION_KEY_SQL
from querylog.config import Settings

pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_width_chars(140)
pl.Config.set_fmt_str_lengths(50)

settings = Settings.from_env()
if not settings.lake_dir.is_dir():  # a mistyped home would show empty tables, as if nothing had happened
    raise SystemExit(f"No lake at {settings.lake_dir}: set QUERYLOG_HOME to your data directory (make run writes .querylog)")
catalog = Catalog(settings.lake_dir)
# One question whatever its case, spacing and full-width forms, as search and the report count questions.
catalog.connection.execute(f"CREATE TEMP MACRO question_key(query_text) AS {QUESTION_KEY_SQL}")


def sql(query: str, **params: object) -> pl.DataFrame:
    """DuckDB SQL over the lake as a polars DataFrame; values go in as $named parameters, never spliced."""
    return catalog.connection.sql(query, params=params).pl()


# %% [markdown]
# ## Languages
# A query with any Hangul syllable counts as Korean; mixed questions ("NVIDIA 주가") are Korean too.

# %%
languages = sql("""
    SELECT CASE WHEN regexp_matches(query_text, '[가-힣]') THEN 'korean' ELSE 'other' END AS language,
           count(*) AS queries, round(avg(length(query_text)), 1) AS mean_chars,
           round(avg((result_count = 0)::DOUBLE), 3) AS no_result_rate
    FROM queries WHERE query_text IS NOT NULL GROUP BY 1 ORDER BY queries DESC
""")
print(languages)

# %% [markdown]
# ## The most asked questions
# Grouped as search and the report group questions (`question_key`: case, spacing and full-width forms
# aside); `no_results` counts the times retrieval came back empty.

# %%
print(sql("""
    SELECT mode(query_text ORDER BY query_text) AS query, count(*) AS asked, count(DISTINCT session_id) AS sessions,
           count(*) FILTER (WHERE result_count = 0) AS no_results, mode(intent ORDER BY intent) AS intent
    FROM queries WHERE query_text IS NOT NULL GROUP BY question_key(query_text)
    ORDER BY asked DESC LIMIT $n
""", n=15))

# %% [markdown]
# ## What retrieval could not find
# Candidates for new documents or better indexing, by intent and by question.

# %%
print(sql("""
    SELECT coalesce(intent, 'unclassified') AS intent, count(result_count) AS searched,
           count(*) FILTER (WHERE result_count = 0) AS no_results,
           round(count(*) FILTER (WHERE result_count = 0) / nullif(count(result_count), 0), 3) AS no_result_rate
    FROM queries GROUP BY 1 ORDER BY no_result_rate DESC NULLS LAST
"""))
no_results = sql("""
    SELECT mode(query_text ORDER BY query_text) AS query, count(*) AS times, max(started_at) AS last_seen
    FROM queries WHERE result_count = 0 GROUP BY question_key(query_text) ORDER BY times DESC, last_seen DESC LIMIT 15
""")
print(no_results)

# %% [markdown]
# ## Reformulations
# What a user asked next, in the same session, right after retrieval found nothing.

# %%
print(sql("""
    WITH ordered AS (
        SELECT session_id, started_at, query_text, result_count,
               lead(query_text) OVER (PARTITION BY session_id ORDER BY started_at) AS next_query
        FROM queries WHERE session_id IS NOT NULL
    )
    SELECT query_text AS found_nothing, next_query AS then_asked, count(*) AS times
    FROM ordered WHERE result_count = 0 AND next_query IS NOT NULL
    GROUP BY ALL ORDER BY times DESC LIMIT 10
"""))

# %% [markdown]
# ## Result counts and search time
# How many documents retrieval returns, and how long it takes for each count.

# %%
print(sql("""
    SELECT result_count, count(*) AS searches, round(quantile_cont(search_ms, 0.5), 1) AS p50_search_ms,
           round(avg(cache_hit::DOUBLE), 3) AS cache_hit_rate
    FROM queries WHERE result_count IS NOT NULL GROUP BY result_count ORDER BY result_count
"""))

# %% [markdown]
# ## Full-text search over the same questions
# The index behind `querylog search` and the explorer's search box (under `QUERYLOG_HOME/index`); it is
# brought up to date from the lake first. Korean particles and missing spaces are fine: 네이버 finds 네이버는.
# With the alias file (QUERYLOG_ALIASES, the bundled listing by default) a company's other names find it too
# (NVDA finds 엔비디아), 초성 works (ㄴㅇㅂ) and a typo is tried when nothing else matches; `match` and `why` say how.

# %%
try:
    from querylog.analytics.aliases import load_aliases
    from querylog.analytics.upkeep import LakeSearch, UpkeepError

    aliases = None if settings.aliases_path is None else load_aliases(settings.aliases_path)
    search = LakeSearch(settings.home)
    added = search.sync(catalog)
    print(f"indexed {added} new queries")
    for term in ("네이버", "NVDA", "ㄴㅇㅂ"):
        hits = search.search(term, limit=5, aliases=aliases)
        print(f"{len(hits)} hits for {term!r}")
        print(pl.DataFrame(
            [{"score": h.score, "match": h.match, "why": h.why, "ts": h.ts, "query": h.query_text} for h in hits],
            schema={"score": pl.Float64, "match": pl.String, "why": pl.String, "ts": pl.Datetime("us", "UTC"),
                    "query": pl.String},
        ))
except UpkeepError as exc:  # the search module is optional
    print(f"full-text search skipped: {exc}")
