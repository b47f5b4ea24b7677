"""Lake queries at scale: a generated 10M-event lake (cached), the hourly intent trend, latency percentiles by
intent, and top-50 Korean search, through the same Catalog and SearchIndex that `querylog sql/search` use."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import uuid_utils

from bench._common import GroupResult, new_result
from bench._workload import query_texts, text_intents
from querylog.analytics.catalog import Catalog
from querylog.logging.parquet import LAKE_SCHEMA

__all__ = ["PERCENTILES_SQL", "SEARCH_TEXT", "TREND_SQL", "TREND_TRUNC_SQL", "ensure_lake", "run_lake"]

#: Bump when the generator changes what it writes: a cached lake of another version is rebuilt.
GENERATOR_VERSION = 1
DAYS = 30
SEARCH_TEXT = "네이버"

#: The hourly trend, bucketed as analytics/queries.py buckets (integer arithmetic on epoch microseconds, not
#: date_trunc on a TIMESTAMPTZ, which goes through ICU's calendar for every row); same rows as TREND_TRUNC_SQL.
TREND_SQL = """
SELECT make_timestamptz(h * 3600000000) AS hour, intent, queries
FROM (
    SELECT epoch_us(ts) // 3600000000 AS h, intent, count(*) AS queries
    FROM events
    WHERE event_type = 'intent_classified'
    GROUP BY ALL
)
ORDER BY hour, intent
"""
#: The trend as first written (date_trunc on TIMESTAMPTZ), measured beside it.
TREND_TRUNC_SQL = """
SELECT date_trunc('hour', ts) AS hour, intent, count(*) AS queries
FROM events
WHERE event_type = 'intent_classified'
GROUP BY ALL
ORDER BY hour, intent
"""
PERCENTILES_SQL = """
SELECT intent,
       quantile_cont(latency_ms, 0.50) AS p50_ms,
       quantile_cont(latency_ms, 0.95) AS p95_ms,
       quantile_cont(latency_ms, 0.99) AS p99_ms,
       count(*) AS queries
FROM events
WHERE event_type = 'query_completed'
GROUP BY intent
ORDER BY intent
"""
ILIKE_SQL = """
SELECT query_id, query_text, ts
FROM events
WHERE event_type = 'query_received' AND query_text ILIKE '%' || ? || '%'
ORDER BY ts DESC
LIMIT 50
"""
#: The same trend through the `queries` view (one row per query, built by GROUP BY query_id over all events).
TREND_QUERIES_VIEW_SQL = """
SELECT date_trunc('hour', started_at) AS hour, intent, count(*) AS queries
FROM queries
GROUP BY ALL
ORDER BY hour, intent
"""

# Diurnal shape in UTC for a Korean service (KST = UTC+9): busy 00-09 UTC, quiet 15-21 UTC.
_HOUR_WEIGHTS = np.array([8, 9, 10, 10, 10, 9, 9, 8, 7, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 2, 3, 5, 7], dtype=float)
_MODELS = np.array(["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "local-echo"])
_MODEL_P = np.array([0.55, 0.2, 0.15, 0.1])
_ERRORS = np.array(["TimeoutError", "GenerationError", "RateLimitError", "ConnectionError"])
_STAGES = np.array(["generate", "generate", "generate", "search"])


def _str_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _uuids(n: int) -> pa.Array:
    return pa.array([str(uuid_utils.uuid7()) for _ in range(n)], pa.string())


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _table(n: int, event_type: str, columns: dict[str, pa.Array]) -> pa.Table:
    arrays = []
    for field in LAKE_SCHEMA:
        if field.name == "event_type":
            arrays.append(pa.repeat(pa.scalar(event_type, pa.string()), n))
        elif field.name in columns:
            arrays.append(columns[field.name].cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=LAKE_SCHEMA)


def _day_tables(
    rng: np.random.Generator, day_start_us: int, n_q: int, texts: pa.Array, verdicts: list[tuple[str, float]], q0: int
) -> tuple[pa.Table, pa.Table]:
    """One day's events (all 7 types, realistic value distributions) and its search-index rows."""
    hours = rng.choice(24, size=n_q, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    start = day_start_us + hours * 3_600_000_000 + rng.integers(0, 3_600_000_000 - 120_000_000, size=n_q)
    start.sort()
    # Zipf-like popularity: a few questions are asked all the time, most rarely.
    k = np.minimum(rng.zipf(1.3, size=n_q) - 1, len(texts) - 1)
    text = texts.take(pa.array(k))
    intents = np.array([v[0] for v in verdicts])[k]
    base_conf = np.array([v[1] for v in verdicts])[k]
    confidence = np.clip(base_conf + rng.normal(0, 0.03, n_q), 0.05, 1.0).round(3)
    qid = _uuids(n_q)
    users = rng.zipf(1.5, size=n_q) % 50_000
    session = _str_ids("s-", (q0 + np.arange(n_q)) // 3)
    user = _str_ids("u-", users)
    language = pc.if_else(pc.match_substring_regex(text, "[가-힣]"), "ko", "en")
    classify_ms = rng.lognormal(0.0, 0.5, n_q).round(3)
    cache_hit = rng.random(n_q) < 0.3
    search_ms = np.where(cache_hit, rng.lognormal(0.5, 0.5, n_q), rng.lognormal(2.7, 0.6, n_q)).round(3)
    result_count = np.where(rng.random(n_q) < 0.05, 0, rng.integers(1, 11, n_q))
    top_score = np.where(result_count > 0, rng.uniform(0.5, 14.0, n_q), np.nan).round(3)
    generate_ms = rng.lognormal(6.6, 0.6, n_q).round(3)
    failed = rng.random(n_q) < 0.02
    latency_ms = classify_ms + search_ms + np.where(failed, generate_ms * 0.5, generate_ms) + rng.uniform(1, 5, n_q)
    latency_ms = latency_ms.round(3)
    quality = rng.beta(6, 2, n_q).round(3)
    model = _MODELS[rng.choice(len(_MODELS), size=n_q, p=_MODEL_P)]
    t_classify = start + (classify_ms * 1000).astype(np.int64)
    t_search = t_classify + (search_ms * 1000).astype(np.int64)
    t_end = start + (latency_ms * 1000).astype(np.int64)
    common = {"query_id": qid, "session_id": session, "user_id": user}
    const = {"service": pa.repeat("chat-api", n_q), "env": pa.repeat("prod", n_q)}
    parts = [
        _table(
            n_q,
            "query_received",
            {**common, **const, "event_id": _uuids(n_q), "ts": _ts(start), "query_text": text, "language": language},
        ),
        _table(
            n_q,
            "intent_classified",
            {
                **common,
                **const,
                "event_id": _uuids(n_q),
                "ts": _ts(t_classify),
                "intent": pa.array(intents),
                "confidence": pa.array(confidence),
                "duration_ms": pa.array(classify_ms),
            },
        ),
        _table(
            n_q,
            "search_completed",
            {
                **common,
                **const,
                "event_id": _uuids(n_q),
                "ts": _ts(t_search),
                "result_count": pa.array(result_count),
                "cache_hit": pa.array(cache_hit),
                "duration_ms": pa.array(search_ms),
                "top_score": pa.array(top_score, from_pandas=True),
            },
        ),
    ]
    ok = ~failed
    n_ok, n_fail = int(ok.sum()), int(failed.sum())
    sub = {k: v.filter(pa.array(ok)) for k, v in {**common, **const}.items()}
    parts.append(
        _table(
            n_ok,
            "response_generated",
            {
                **sub,
                "event_id": _uuids(n_ok),
                "ts": _ts(t_end[ok] - 2000),
                "gen_ai_system": pa.repeat("openai", n_ok),
                "gen_ai_request_model": pa.array(model[ok]),
                "gen_ai_usage_input_tokens": pa.array(rng.integers(200, 4000, n_ok)),
                "gen_ai_usage_output_tokens": pa.array(rng.integers(20, 900, n_ok)),
                "duration_ms": pa.array(generate_ms[ok]),
                "quality_score": pa.array(quality[ok]),
                "answer_chars": pa.array(rng.integers(80, 2400, n_ok)),
            },
        )
    )
    parts.append(
        _table(
            n_ok,
            "query_completed",
            {
                **sub,
                "event_id": _uuids(n_ok),
                "ts": _ts(t_end[ok]),
                "latency_ms": pa.array(latency_ms[ok]),
                "intent": pa.array(intents[ok]),
                "cache_hit": pa.array(cache_hit[ok]),
                "result_count": pa.array(result_count[ok]),
                "quality_score": pa.array(quality[ok]),
            },
        )
    )
    sub_f = {k: v.filter(pa.array(failed)) for k, v in {**common, **const}.items()}
    error = rng.choice(len(_ERRORS), size=n_fail)
    parts.append(
        _table(
            n_fail,
            "query_failed",
            {
                **sub_f,
                "event_id": _uuids(n_fail),
                "ts": _ts(t_end[failed]),
                "error_type": pa.array(_ERRORS[error]),
                "error_message": pa.repeat("upstream LLM call failed", n_fail),
                "stage": pa.array(_STAGES[error]),
                "latency_ms": pa.array(latency_ms[failed]),
                "intent": pa.array(intents[failed]),
            },
        )
    )
    # About one answered query in twenty gets a thumbs up or down, a few seconds to minutes later.
    fb = ok & (rng.random(n_q) < 0.05)
    n_fb = int(fb.sum())
    sub_fb = {k: v.filter(pa.array(fb)) for k, v in {**common, **const}.items()}
    parts.append(
        _table(
            n_fb,
            "feedback_received",
            {
                **sub_fb,
                "event_id": _uuids(n_fb),
                "ts": _ts(t_end[fb] + rng.integers(2_000_000, 110_000_000, n_fb)),
                "score": pa.array(rng.choice([-1, 0, 1], size=n_fb, p=[0.2, 0.1, 0.7])),
            },
        )
    )
    events = pa.concat_tables(parts).sort_by([("ts", "ascending")])
    index_rows = pa.table({"query_id": qid, "ts": _ts(start), "intent": pa.array(intents), "query_text": text})
    return events, index_rows


def _write_hours(events: pa.Table, events_dir: Path) -> int:
    hour = pc.divide(events.column("ts").cast(pa.int64()), pa.scalar(3_600_000_000, pa.int64())).to_numpy()
    bounds = np.flatnonzero(np.diff(hour)) + 1
    files = 0
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(hour)], strict=True):
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=int(hour[lo]))
        folder = events_dir / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(events.slice(lo, hi - lo), folder / "part-bench-0.parquet", compression="zstd")
        files += 1
    return files


def _manifest(lake: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((lake / "_bench_lake.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def ensure_lake(lake: Path, n_events: int, *, progress: Any, days: int = DAYS, seed: int = 2024) -> dict[str, Any]:
    """A lake of about `n_events` events over `days` days, hive-partitioned by hour (one file an hour, as after
    compaction); reused if already built."""
    wanted = {"generator": GENERATOR_VERSION, "target_events": n_events, "days": days, "seed": seed}
    found = _manifest(lake)
    if found is not None and all(found.get(k) == v for k, v in wanted.items()):
        progress(f"lake: reusing {lake} ({found['events']} events, built in {found['build_s']}s)")
        return found | {"cached": True}
    shutil.rmtree(lake, ignore_errors=True)
    events_dir = lake / "events"
    events_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    pool = query_texts(20_000, seed=seed)
    verdicts = list(text_intents(tuple(pool)))
    texts = pa.array(pool, pa.string())
    # About 5.05 events per query (4 for a failed one, plus feedback on some).
    n_queries = max(days, round(n_events / 5.05))
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = end - timedelta(days=days)
    t0 = time.monotonic()
    total = files = 0
    index_parts: list[pa.Table] = []
    for day in range(days):
        n_q = n_queries // days + (1 if day < n_queries % days else 0)
        day_start = int((first_day + timedelta(days=day)).timestamp() * 1_000_000)
        events, index_rows = _day_tables(rng, day_start, n_q, texts, verdicts, day * (n_queries // days))
        files += _write_hours(events, events_dir)
        total += events.num_rows
        index_parts.append(index_rows)
        elapsed = time.monotonic() - t0
        progress(f"lake: day {day + 1}/{days} written, {total:,} events, {elapsed:.0f}s")
    pq.write_table(pa.concat_tables(index_parts), lake / "_bench_search_rows.parquet", compression="zstd")
    info = wanted | {"events": total, "queries": n_queries, "files": files, "build_s": round(time.monotonic() - t0, 1)}
    (lake / "_bench_lake.json").write_text(json.dumps(info))
    return info | {"cached": False}


def _compact_days(lake: Path, progress: Any) -> dict[str, Any]:
    """Day-compact the generated lake as `querylog compact` does a real one: every generated day is closed
    (they end at today's midnight, UTC), so a real 30-day lake would hold one file per day, sorted by
    (event_type, ts) in row groups of 64k rows. Done once; a cached lake is compacted already."""
    from querylog.analytics.upkeep import LakeCompactor

    t0 = time.perf_counter()
    report = LakeCompactor(lake).run_days()
    if report.partitions:
        progress(f"lake: compacted {report.partitions} days, {report.files_before} files → {report.files_after}")
    files = sorted((lake / "events").glob("date=*/hour=*/*.parquet"))
    return {
        "days_compacted_now": report.partitions,
        "compact_s": round(time.perf_counter() - t0, 1),
        "files": len(files),
        "row_groups": sum(pq.ParquetFile(f).metadata.num_row_groups for f in files),
    }


def _search_index(lake: Path, progress: Any) -> tuple[Any, dict[str, Any]]:
    """The SearchIndex over the lake's queries, built once and kept beside the lake."""
    from querylog.analytics.search import SearchIndex

    directory = lake.parent / f"{lake.name}-search"
    marker = directory / "_bench_index.json"
    source = lake / "_bench_search_rows.parquet"
    stamp = {"lake": (_manifest(lake) or {}).get("build_s"), "rows_file_bytes": source.stat().st_size}
    info: dict[str, Any] = {}
    # A missing, stale or unreadable cached index is rebuilt, whatever the cause.
    with contextlib.suppress(Exception):
        if json.loads(marker.read_text()) == stamp:
            t0 = time.perf_counter()
            index = SearchIndex(directory)
            info = {"cached": True, "open_ms": round((time.perf_counter() - t0) * 1000, 1), "rows": len(index)}
            return index, info
    shutil.rmtree(directory, ignore_errors=True)
    progress(f"lake: building the search index in {directory}")
    t0 = time.perf_counter()
    index = SearchIndex(directory)
    rows = pq.read_table(source)
    for lo in range(0, rows.num_rows, 1_000_000):
        index.add_arrow(rows.slice(lo, 1_000_000))
    index.commit()
    info = {"cached": False, "build_s": round(time.perf_counter() - t0, 1), "rows": len(index)}
    marker.write_text(json.dumps(stamp))
    t0 = time.perf_counter()
    index = SearchIndex(directory)
    info["open_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return index, info


def _time_ms(fn: Any, reps: int) -> tuple[list[float], float, Any]:
    """(warm timings, the first — cold — timing, the result). The first run pays file opening and caches."""
    t0 = time.perf_counter()
    out = fn()
    cold = (time.perf_counter() - t0) * 1000
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, cold, out


def _product_path(catalog: Catalog, ctx: Any) -> dict[str, Any]:
    """What `querylog report` and the explorer run: LakeQueries over the `queries` view (one row per query)."""
    try:
        from querylog.analytics.queries import LakeQueries
    except ImportError as exc:
        return {"skipped": f"analytics/queries.py not importable: {exc}"}
    out: dict[str, Any] = {}
    questions = LakeQueries(catalog)
    for name in ("intent_trend", "latency_by_intent"):
        ctx.progress(f"lake: LakeQueries.{name} (the product's own query)")
        samples, cold, _ = _time_ms(getattr(questions, name), 2)
        out[f"{name}_ms"] = {"median": round(statistics.median(samples), 1), "cold": round(cold, 1)}
    t0 = time.perf_counter()
    LakeQueries(catalog, snapshot=True)
    out["snapshot_build_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return out


def run_lake(ctx: Any) -> GroupResult:
    result = new_result()
    if ctx.quick:
        n, suffix = ctx.size(10_000_000, 100_000, minimum=5_000), "100k"
        for key in ("trend_ms_10m", "percentiles_ms_10m", "search_ms_10m", "search_ms_10m_ilike_baseline"):
            result["reasons"][key] = "--quick: measured on a 100k-event lake instead (the *_100k figures)"
        lake = ctx.home / "bench" / ("lake100k" if ctx.scale == 1.0 else f"lake-{n}")
    else:
        n, suffix = ctx.size(10_000_000, 100_000, minimum=5_000), "10m"
        lake = ctx.home / "bench" / ("lake10m" if ctx.scale == 1.0 else f"lake-{n}")
    # --quick: 3 days (72 hour files) so that it stays under a minute; the full run spreads 10M over 30 days.
    info = ensure_lake(lake, n, progress=ctx.progress, days=3 if ctx.quick else DAYS)
    extra: dict[str, Any] = {"lake": str(lake), "lake_info": info, "compaction": _compact_days(lake, ctx.progress)}
    reps = ctx.repetitions
    with Catalog(lake) as catalog:
        for key, sql in (("trend", TREND_SQL), ("percentiles", PERCENTILES_SQL)):
            ctx.progress(f"lake: {key} query x {reps + 1}")
            samples, cold, rows = _time_ms(lambda sql=sql: catalog.query(sql)[1], reps)
            result["samples"][f"{key}_ms_{suffix}"] = samples
            extra[f"{key}_cold_ms"] = round(cold, 1)
            extra[f"{key}_rows"] = len(rows)
        ctx.progress("lake: ILIKE search baseline")
        samples, cold, rows = _time_ms(lambda: catalog.query(ILIKE_SQL, [SEARCH_TEXT])[1], reps)
        result["samples"][f"search_ms_{suffix}_ilike_baseline"] = samples
        extra["ilike_cold_ms"] = round(cold, 1)
        extra["ilike_hits"] = len(rows)
        ctx.progress("lake: the trend through the `queries` view (one row per query: a GROUP BY over all events)")
        samples, cold, _ = _time_ms(lambda: catalog.query(TREND_QUERIES_VIEW_SQL)[1], min(reps, 3))
        extra["trend_via_queries_view_ms"] = {"median": round(statistics.median(samples), 1), "cold": round(cold, 1)}
        samples, cold, rows = _time_ms(lambda: catalog.query(TREND_TRUNC_SQL)[1], reps)
        extra["trend_date_trunc_ms"] = {"median": round(statistics.median(samples), 1), "cold": round(cold, 1)}
        extra["trend_date_trunc_rows"] = len(rows)
        extra["product_path"] = _product_path(catalog, ctx)
    try:
        index, index_info = _search_index(lake, ctx.progress)
    except ImportError as exc:
        result["reasons"][f"search_ms_{suffix}"] = f"analytics/search.py (SearchIndex) is not importable: {exc}"
    else:
        from querylog.analytics.aliases import STARTER, load_aliases

        aliases = load_aliases(STARTER)  # as `querylog search` runs: the bundled alias file in force
        extra["search_index"] = index_info
        ctx.progress(f"lake: SearchIndex top-50 for {SEARCH_TEXT!r}, aliases on")
        samples, cold, hits = _time_ms(lambda: index.search(SEARCH_TEXT, limit=50, aliases=aliases), reps)
        result["samples"][f"search_ms_{suffix}"] = samples
        extra["search_cold_ms"] = round(cold, 1)
        extra["search_hits"] = len(hits)
        others = {}
        # Each tier: exact, alias (nobody in the corpus typed 삼전 or a ticker), 초성, typo, and the worst case: a
        # typo-eligible word that matches nothing, so that every typo variant is crossed.
        texts = ("삼성전자 실적", "nvidia", "카카오는", "zzqqxx", "삼전", "NVDA 실적", "ㄴㅇㅂ", "하이닉수")
        texts += ("블록체인펀드",)
        for text in texts:
            s, _, h = _time_ms(lambda text=text: index.search(text, limit=50, aliases=aliases), reps)
            tiers = sorted({hit.match for hit in h})
            others[text] = {"median_ms": round(statistics.median(s), 2), "max_ms": round(max(s), 2), "hits": len(h)}
            others[text]["tiers"] = tiers
        extra["search_other_queries"] = others
    extra["queries"] = {
        "trend": TREND_SQL.strip(),
        "trend_date_trunc": TREND_TRUNC_SQL.strip(),
        "percentiles": PERCENTILES_SQL.strip(),
        "ilike": ILIKE_SQL.strip(),
    }
    extra["search_text"] = SEARCH_TEXT
    result["extra"] = extra
    return result
