"""A LogQL query engine for `querylog.testing.RecordedLoki`, for querylog's own tests only (not in the wheel).

The double answers pushes exactly as the recordings in ``../shared/loki-recordings`` show; what the tests need of
queries (the dashboards' and docs' LogQL run against pushed lines) is evaluated here by the LogQL subset in
`tests/support/loki_logql.py`. Where it matters, the live-Loki tier checks the same queries against a real Loki.

    loki = RecordedLoki(query_engine=logql_engine)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from tests.support.loki_logql import (
    LogQLError,
    LogSelector,
    Row,
    evaluate_log,
    evaluate_metric,
    format_value,
    parse,
    parse_duration,
)

from querylog.testing._loki import RecordedLoki, _parse_time

__all__ = ["logql_engine", "queryable_loki"]


def queryable_loki(**options: Any) -> RecordedLoki:
    """A `RecordedLoki` that also answers ``/query`` and ``/query_range``."""
    return RecordedLoki(query_engine=logql_engine, **options)


def logql_engine(loki: RecordedLoki, path: str, params: Mapping[str, str], tenant: str) -> dict[str, Any]:
    if path.endswith("/query_range"):
        return _query_range(loki, params, tenant)
    return _query(loki, params, tenant)


def _rows(loki: RecordedLoki, tenant: str) -> Callable[[LogSelector, int, int], Iterator[Row]]:
    def rows(selector: LogSelector, start_ns: int, end_ns: int) -> Iterator[Row]:
        for labels, metadata, ts_ns, line in loki.stored(tenant, selector.selects, start_ns, end_ns):
            yield Row(labels, metadata, ts_ns, line)

    return rows


def _query_range(loki: RecordedLoki, params: Mapping[str, str], tenant: str) -> dict[str, Any]:
    expr = parse(params.get("query", ""))
    now_ns = int(loki.clock() * 1e9)
    end = _parse_time(params.get("end"), now_ns)
    start = _parse_time(params.get("start"), end - 3600 * 1_000_000_000)
    started = time.perf_counter()
    if isinstance(expr, LogSelector):
        return _streams_answer(loki, expr, params, tenant, start, end, started)
    step = _parse_step(params.get("step"), start, end)
    step_ns = int(step * 1e9)
    series: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    # Loki aligns a range query's evaluation times to multiples of the step.
    t = start // step_ns * step_ns
    while t <= end // step_ns * step_ns:
        for key, value in evaluate_metric(expr, _rows(loki, tenant), t).items():
            series.setdefault(key, []).append([_seconds(t), format_value(value)])
        t += step_ns
    result = [{"metric": dict(key), "values": values} for key, values in sorted(series.items())]
    return {"resultType": "matrix", "result": result, "stats": _short_stats(len(result), started)}


def _streams_answer(
    loki: RecordedLoki,
    selector: LogSelector,
    params: Mapping[str, str],
    tenant: str,
    start: int,
    end: int,
    started: float,
) -> dict[str, Any]:
    limit = int(params.get("limit") or 100)
    forward = params.get("direction", "backward").lower() == "forward"
    rows = list(_rows(loki, tenant)(selector, start, end))
    samples = list(evaluate_log(selector, rows))
    samples.sort(key=lambda s: s.ts_ns, reverse=not forward)
    samples = samples[:limit]
    grouped: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for sample in samples:
        grouped.setdefault(tuple(sorted(sample.labels.items())), []).append([str(sample.ts_ns), sample.line])
    result = [{"stream": dict(key), "values": values} for key, values in sorted(grouped.items())]
    nbytes = sum(len(r.line.encode()) for r in rows)
    return {
        "resultType": "streams",
        "result": result,
        "stats": _stats(
            processed=len(rows),
            nbytes=nbytes,
            returned=len(samples),
            post_filter=len(samples),
            seconds=time.perf_counter() - started,
        ),
    }


def _query(loki: RecordedLoki, params: Mapping[str, str], tenant: str) -> dict[str, Any]:
    expr = parse(params.get("query", ""))
    if isinstance(expr, LogSelector):
        raise LogQLError(
            "log queries are not supported as an instant query type, please change your query to a range query type"
        )
    at = _parse_time(params.get("time"), int(loki.clock() * 1e9))
    started = time.perf_counter()
    vector = evaluate_metric(expr, _rows(loki, tenant), at)
    result = [{"metric": dict(k), "value": [_seconds(at), format_value(v)]} for k, v in sorted(vector.items())]
    return {"resultType": "vector", "result": result, "stats": _short_stats(len(result), started)}


def _short_stats(returned: int, started: float) -> dict[str, Any]:
    return _stats(processed=0, nbytes=0, returned=returned, post_filter=0, seconds=time.perf_counter() - started)


def _parse_step(raw: str | None, start_ns: int, end_ns: int) -> float:
    if raw is None or raw == "":
        return float(max(1, math.floor((end_ns - start_ns) / 1e9 / 250)))
    try:
        return float(raw)
    except ValueError:
        return parse_duration(raw)


def _seconds(ns: int) -> float | int:
    """A result timestamp as Loki's JSON writes it: seconds, with millisecond precision when needed."""
    ms = ns // 1_000_000
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


_STAT_CHUNK: Final = (
    "headChunkBytes", "headChunkLines", "decompressedBytes", "decompressedLines", "compressedBytes",
    "totalDuplicates", "postFilterLines", "headChunkStructuredMetadataBytes", "decompressedStructuredMetadataBytes",
)  # fmt: skip
_STAT_CACHE: Final = (
    "entriesFound", "entriesRequested", "entriesStored", "bytesReceived", "bytesSent", "requests", "downloadTime",
    "queryLengthServed",
)  # fmt: skip
_CACHES: Final = (
    "chunk", "index", "result", "statsResult", "volumeResult", "seriesResult", "labelResult", "instantMetricResult",
)  # fmt: skip


def _store_stats(lines: int = 0, nbytes: int = 0, post_filter: int = 0) -> dict[str, Any]:
    chunk: dict[str, Any] = dict.fromkeys(_STAT_CHUNK, 0)
    chunk.update(headChunkBytes=nbytes, headChunkLines=lines, postFilterLines=post_filter)
    return {
        "totalChunksRef": 0,
        "totalChunksDownloaded": 0,
        "chunksDownloadTime": 0,
        "queryReferencedStructuredMetadata": False,
        "chunk": chunk,
        "chunkRefsFetchTime": 0,
        "congestionControlLatency": 0,
        "pipelineWrapperFilteredLines": 0,
    }


def _stats(*, processed: int, nbytes: int, returned: int, post_filter: int, seconds: float) -> dict[str, Any]:
    """The ``stats`` object of a query answer, with Loki's keys (the runtime figures are this double's)."""
    return {
        "summary": {
            "bytesProcessedPerSecond": int(nbytes / seconds) if seconds else 0,
            "linesProcessedPerSecond": int(processed / seconds) if seconds else 0,
            "totalBytesProcessed": nbytes,
            "totalLinesProcessed": processed,
            "execTime": seconds,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": returned,
            "splits": 0,
            "shards": 1,
            "totalPostFilterLines": post_filter,
            "totalStructuredMetadataBytesProcessed": 0,
        },
        "querier": {"store": _store_stats()},
        "ingester": {
            "totalReached": 1,
            "totalChunksMatched": 0,
            "totalBatches": 0,
            "totalLinesSent": returned,
            "store": _store_stats(processed, nbytes, post_filter),
        },
        "cache": {name: dict.fromkeys(_STAT_CACHE, 0) for name in _CACHES},
        "index": {"totalChunks": 0, "postFilterChunks": 0, "shardsDuration": 0, "usedBloomFilters": False},
    }


