"""Emit cost on the caller's thread, and a whole tracked query's overhead, with every projection running."""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Any

from bench._common import GroupResult, new_result, percentile
from bench._workload import query_texts, text_intents
from bench.emit_peers import measure_peers
from querylog.config import Settings
from querylog.logging.segments import EventLog
from querylog.logging.tracker import QueryTracker
from querylog.runtime import Runtime
from querylog.service.intents import classify
from querylog.service.pipeline import ChatPipeline

__all__ = ["measure_emit", "run_emit", "run_lifecycle"]

#: Queries per second while measuring: a busy API (10k events/s), paced with sleep so that the caller's
#: thread is idle between queries like a request thread is, and the projections get the GIL in between.
RATE_QPS = 2000.0


def _runtime(home: Path, **overrides: Any) -> Runtime:
    # parquet_interval_s stays at its default: the projections run exactly as they do in `querylog serve`.
    settings = Settings(home=home, stdout_events=False, env="bench", service="chat-api", **overrides)
    return Runtime(settings).start()


def _pace(next_at: float, period: float) -> float:
    now = time.perf_counter()
    if next_at > now:
        time.sleep(next_at - now)
    return max(next_at, now - period) + period  # after a stall, don't burst to catch up


def measure_emit(tracker: QueryTracker, n_queries: int, *, mode: str) -> dict[str, list[float]]:
    """Per-call µs of the three stage methods (classified, searched, responded): each builds one event, checks
    its values and queues it on the log; encoding and writing are the query's flush (`lifecycle_us_p50` and the
    peers' figures count them).

    `mode` is what the thread does between events: ``pipeline`` runs the chat API's real stages (classify,
    BM25 retrieval, generation) as `querylog serve` does, ``sleep`` idles at `RATE_QPS`, ``unpaced`` does
    nothing (a tight loop: a stress case)."""
    if mode not in ("pipeline", "sleep", "unpaced"):
        raise ValueError(f"mode must be pipeline, sleep or unpaced, got {mode!r}")
    texts = query_texts(200)
    verdicts = text_intents(tuple(texts))
    pipeline = ChatPipeline() if mode == "pipeline" else None
    pc = time.perf_counter_ns
    classified: list[float] = []
    searched: list[float] = []
    responded: list[float] = []
    period = 1.0 / RATE_QPS
    next_at = time.perf_counter()
    for i in range(n_queries):
        if mode == "sleep":
            next_at = _pace(next_at, period)
        k = i % len(texts)
        intent, confidence = verdicts[k]
        with tracker.query(texts[k], session_id=f"s-{i // 4}", user_id=f"u-{i % 997}") as q:
            if pipeline is not None:
                verdict = classify(q.text)
                intent, confidence = str(verdict.intent), verdict.confidence
            t0 = pc()
            q.classified(intent, confidence, duration_ms=0.8)
            t1 = pc()
            if pipeline is not None:
                found = pipeline.retriever.search(q.text, k=3)
                count, cache_hit, top = len(found.docs), found.cache_hit, found.top_score
                answer = pipeline.generator.generate(q.text, intent, found.docs)
                system, model, tokens_in, tokens_out = (
                    answer.system,
                    answer.model,
                    answer.input_tokens,
                    answer.output_tokens,
                )
                quality, chars = answer.quality_score, len(answer.answer)
            else:
                count, cache_hit, top = 3, False, 7.5
                system, model, tokens_in, tokens_out, quality, chars = "openai", "gpt-4o-mini", 812, 230, 0.82, 640
            t2 = pc()
            q.searched(count, cache_hit=cache_hit, top_score=top, duration_ms=12.0)
            t3 = pc()
            q.responded(
                system=system,
                model=model,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                quality_score=quality,
                answer_chars=chars,
                duration_ms=900.0,
            )
            t4 = pc()
        classified.append((t1 - t0) / 1000)
        searched.append((t3 - t2) / 1000)
        responded.append((t4 - t3) / 1000)
    return {"classified": classified, "searched": searched, "responded": responded}


def _summary(per_method: dict[str, list[float]]) -> dict[str, float]:
    values = sorted(v for vs in per_method.values() for v in vs)
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "p999": percentile(values, 99.9),
        "max": values[-1],
        "mean": statistics.fmean(values),
        **{f"{name}_p50": percentile(sorted(vs), 50) for name, vs in per_method.items()},
    }


def _timer_overhead_us() -> float:
    pc = time.perf_counter_ns
    n = 100_000
    t0 = pc()
    for _ in range(n):
        pc()
    return (pc() - t0) / n / 1000


def run_emit(ctx: Any) -> GroupResult:
    result = new_result()
    n = ctx.size(4_000, 800, minimum=100)
    reps: list[dict[str, float]] = []
    variants: dict[str, list[dict[str, float]]] = {"sleep": [], "unpaced": []}
    rt = _runtime(ctx.work_dir / "emit-home")
    try:
        tracker = rt.tracker
        measure_emit(tracker, min(n, 1_000), mode="pipeline")  # warm-up: caches, allocator, retrieval cache
        for rep in range(ctx.repetitions):
            ctx.progress(f"emit: repetition {rep + 1}/{ctx.repetitions} ({n} queries through the chat pipeline)")
            reps.append(_summary(measure_emit(tracker, n, mode="pipeline")))
            # The other two shapes of "steady state", interleaved so that load on the machine hits all alike.
            for mode in variants:
                variants[mode].append(_summary(measure_emit(tracker, n, mode=mode)))
        parquet = rt.projection_snapshots()["parquet"][1]
    finally:
        rt.close()
    peers = measure_peers(
        ctx.work_dir / "emit-peers", queries=ctx.size(20_000, 2_000, minimum=200), repetitions=ctx.repetitions,
        progress=ctx.progress,
    )  # fmt: skip
    for name, ratios in peers.pop("ratios").items():
        result["samples"][f"emit_vs_{name}_ratio"] = ratios
    for name, why in peers["skipped"].items():
        result["reasons"][f"emit_vs_{name}_ratio"] = f"not installed here: {why}"
    result["samples"]["emit_us_p50"] = [r["p50"] for r in reps]
    result["samples"]["emit_us_p99"] = [r["p99"] for r in reps]
    # What the python-logging-loki comparison divides by: a whole query's cost per event, its flush included.
    ctx.shared["emit_mean_us"] = peers["us_per_step"]["querylog"]

    def medians(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}

    result["extra"] = {
        "events_per_repetition": 3 * n,
        "headline_mode": "pipeline: the chat API's real classify/retrieve/generate work between events",
        "pipeline": medians(reps),
        "per_repetition": [{k: round(v, 3) for k, v in r.items()} for r in reps],
        f"sleep_{RATE_QPS:.0f}_qps": medians(variants["sleep"]),
        "unpaced": medians(variants["unpaced"]),
        "timer_overhead_us": round(_timer_overhead_us(), 3),
        "parquet_projection_lag_events_at_end": parquet.lag_events,
        "gc_enabled": gc.isenabled(),
        "note": "µs per call, perf_counter_ns call included (timer_overhead_us); gc on; projections running",
        "peers": peers,
    }
    return result


def _lifecycle_pairs(tracker: QueryTracker, n_queries: int, rate: float) -> tuple[list[float], list[float]]:
    """Tracked and untracked runs of the same work, interleaved so that drift hits both alike."""
    texts = query_texts(200)
    pc = time.perf_counter_ns
    tracked: list[float] = []
    untracked: list[float] = []
    period = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(n_queries):
        text = texts[i % len(texts)]
        next_at = _pace(next_at, period)
        t0 = pc()
        with tracker.query(text, session_id=f"s-{i // 4}", user_id=f"u-{i % 997}") as q:
            verdict = classify(q.text)
            q.classified(str(verdict.intent), verdict.confidence)
            q.searched(3, cache_hit=False, top_score=7.5)
            q.responded(system="openai", model="gpt-4o-mini", input_tokens=812, output_tokens=230, answer_chars=640)
        t1 = pc()
        next_at = _pace(next_at, period)
        t2 = pc()
        verdict = classify(text)
        _ = (str(verdict.intent), verdict.confidence, 3, 7.5, "openai", "gpt-4o-mini", 812, 230, 640)
        t3 = pc()
        tracked.append((t1 - t0) / 1000)
        untracked.append((t3 - t2) / 1000)
    return tracked, untracked


def _hot_queries(tracker: QueryTracker, n: int) -> float:
    """p50 µs of a whole tracked query (5 events and the flush), back to back."""
    pc = time.perf_counter_ns
    out = []
    for i in range(n):
        t0 = pc()
        with tracker.query("네이버 주가 전망은?", session_id=f"s-{i // 4}", user_id="u-42") as q:
            q.classified("stock_analysis", 0.92)
            q.searched(3, cache_hit=False, top_score=7.5)
            q.responded(system="openai", model="gpt-4o-mini", input_tokens=812, output_tokens=230, answer_chars=640)
        out.append((pc() - t0) / 1000)
    return percentile(sorted(out), 50)


def run_lifecycle(ctx: Any) -> GroupResult:
    result = new_result()
    n = ctx.size(5_000, 800, minimum=100)
    reps: list[dict[str, float]] = []
    rt = _runtime(ctx.work_dir / "lifecycle-home")
    try:
        _lifecycle_pairs(rt.tracker, min(n, 1_000), RATE_QPS)  # warm-up
        for rep in range(ctx.repetitions):
            ctx.progress(f"lifecycle: repetition {rep + 1}/{ctx.repetitions} ({n} tracked + {n} untracked)")
            tracked, untracked = _lifecycle_pairs(rt.tracker, n, RATE_QPS)
            tracked.sort()
            untracked.sort()
            reps.append(
                {
                    "tracked_p50": percentile(tracked, 50),
                    "untracked_p50": percentile(untracked, 50),
                    "tracked_p99": percentile(tracked, 99),
                    "untracked_p99": percentile(untracked, 99),
                }
            )
    finally:
        rt.close()
    # Where a tracked query's time goes beyond its five events: redaction of the text at query start.
    probe = _runtime(ctx.work_dir / "lifecycle-parts-home")
    try:
        texts = query_texts(200)
        redact = probe.tracker.redact
        t0 = time.perf_counter_ns()
        for _ in range(5):
            for text in texts:
                redact(text)
        redact_us = (time.perf_counter_ns() - t0) / 1000 / (5 * len(texts))
        bare = QueryTracker(probe.log, service="chat-api", env="bench")  # no redaction, same log
        _lifecycle_pairs(bare, min(n, 1_000), RATE_QPS)
        tracked, untracked = _lifecycle_pairs(bare, n, RATE_QPS)
        bare_us = percentile(sorted(tracked), 50) - percentile(sorted(untracked), 50)
    finally:
        probe.close()
    # The same tracked query in a hot loop on a bare log: no sleeps, no projection threads. What the code costs
    # with warm caches and the GIL to itself; the headline adds a real request thread's conditions.
    bare_log = EventLog(ctx.work_dir / "lifecycle-hot-log", fsync="never").open()
    try:
        hot_tracker = QueryTracker(bare_log, service="chat-api", env="bench")
        hot = _hot_queries(hot_tracker, 2_000)
        hot = statistics.median(_hot_queries(hot_tracker, max(200, n)) for _ in range(3))
    finally:
        bare_log.close()
    # The machine-crash-safe variant: fsync on every flush (QUERYLOG_FSYNC=always). Fewer queries: it is slow.
    always_n = max(50, n // 10)
    rt = _runtime(ctx.work_dir / "lifecycle-fsync-home", fsync="always")
    try:
        ctx.progress(f"lifecycle: fsync=always variant ({always_n} queries)")
        tracked, untracked = _lifecycle_pairs(rt.tracker, always_n, RATE_QPS)
    finally:
        rt.close()
    result["samples"]["lifecycle_us_p50"] = [r["tracked_p50"] - r["untracked_p50"] for r in reps]
    result["extra"] = {
        "queries_per_repetition": n,
        "per_repetition": [{k: round(v, 3) for k, v in r.items()} for r in reps],
        "durability": "flush = one write() to the kernel per query; fsync every 1 s in the background (default)",
        "redact_us_per_query_text": round(redact_us, 2),
        "hot_loop_tracked_query_us_p50": round(hot, 1),
        "lifecycle_us_p50_without_redaction": round(bare_us, 1),
        "fsync_always_lifecycle_us_p50": round(percentile(sorted(tracked), 50) - percentile(sorted(untracked), 50), 1),
    }
    return result
