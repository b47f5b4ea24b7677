"""What a stage event costs the caller against what a team would write instead, side by side in one process.

Each contender records the same chat query, step by step, as it would in a service: querylog's tracked query
(five events: received, classified, searched, responded, completed; one flush per query, as `querylog serve`
runs it), one structlog JSON line per step (the configuration of `querylog.logging.structured`, which the
original service used: orjson, one write per line), one stdlib `logging` JSON line per step (a JSON formatter
on a FileHandler), one OpenTelemetry span per step (the SDK's BatchSpanProcessor with an exporter that does
nothing), and one Langfuse observation per step (the Langfuse SDK, its exporter replaced by one that does
nothing; a root span per query and one per stage, four in all). The ratios compare the cost of recording the
same query, ours / theirs per repetition, medians over repetitions in which the contenders take twenty turns each,
so that a busy moment of the machine hits all of them alike; µs per step (event, line or span) are reported
beside them.

The projections (Parquet, metrics, Loki) are not running in this process here: they read the log
afterwards, as a log shipper reads a structlog file. `emit_us_p50` (bench/emit.py) is the cost with them on.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from querylog.logging.segments import EventLog
from querylog.logging.tracker import QueryTracker

__all__ = ["CONTENDERS", "measure_peers"]

#: One query's steps as every contender records them: (name, fields).
QUESTION = "네이버 주가 전망은?"
STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("query_received", {"query_text": QUESTION}),
    ("intent_classified", {"intent": "stock_analysis", "confidence": 0.92, "duration_ms": 0.8}),
    ("search_completed", {"result_count": 3, "cache_hit": False, "top_score": 7.5, "duration_ms": 12.0}),
    (
        "response_generated",
        {
            "gen_ai_system": "openai",
            "gen_ai_request_model": "gpt-4o-mini",
            "gen_ai_usage_input_tokens": 812,
            "gen_ai_usage_output_tokens": 230,
            "quality_score": 0.82,
            "answer_chars": 640,
            "duration_ms": 900.0,
        },
    ),
    ("query_completed", {"latency_ms": 913.0, "intent": "stock_analysis"}),
)
Runner = Callable[[int], float]  # n queries -> µs per query
#: Turns each contender takes within a round (see `measure_peers`).
ROUND_SLICES = 20


def _querylog(work: Path) -> tuple[Runner, Callable[[], None]]:
    log = EventLog(work / "querylog-log", fsync="interval").open()
    tracker = QueryTracker(log, service="chat-api", env="bench")
    pc = time.perf_counter_ns

    def run(n: int) -> float:
        t0 = pc()
        for i in range(n):
            with tracker.query(QUESTION, session_id=f"s-{i // 4}", user_id="u-42") as q:
                q.classified("stock_analysis", 0.92, duration_ms=0.8)
                q.searched(3, cache_hit=False, top_score=7.5, duration_ms=12.0)
                q.responded(
                    system="openai",
                    model="gpt-4o-mini",
                    input_tokens=812,
                    output_tokens=230,
                    quality_score=0.82,
                    answer_chars=640,
                    duration_ms=900.0,
                )
        return (pc() - t0) / 1000 / n

    return run, log.close


def _lines(emit: Callable[[str, dict[str, Any]], None]) -> Runner:
    pc = time.perf_counter_ns

    def run(n: int) -> float:
        t0 = pc()
        for i in range(n):
            ids = {"query_id": f"q-{i}", "session_id": f"s-{i // 4}", "user_id": "u-42"}
            for name, fields in STEPS:
                emit(name, {**ids, **fields})
        return (pc() - t0) / 1000 / n

    return run


def _structlog(work: Path) -> tuple[Runner, Callable[[], None]]:
    out = (work / "structlog.jsonl").open("wb")
    log = structlog.wrap_logger(
        structlog.BytesLogger(out),  # writes and flushes each line, as configure_structlog's factory does
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        # Its own level filter: the bench configures structlog at WARNING, which would drop these info lines.
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return _lines(lambda name, fields: log.info(name, **fields)), out.close


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"timestamp": self.formatTime(record), "level": record.levelname, "event": record.getMessage()}
        return json.dumps({**body, **getattr(record, "fields", {})}, ensure_ascii=False)


def _stdlib(work: Path) -> tuple[Runner, Callable[[], None]]:
    logger = logging.getLogger("querylog.bench.peer")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(work / "stdlib.jsonl", encoding="utf-8")
    handler.setFormatter(_JsonFormatter())
    logger.addHandler(handler)

    def close() -> None:
        logger.removeHandler(handler)
        handler.close()

    return _lines(lambda name, fields: logger.info(name, extra={"fields": fields})), close


def _otel_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    return Discard()


SPANS_PER_QUERY = 4


def _spans(start: Callable[[str, dict[str, Any]], Any], settle: Callable[[], Any]) -> Runner:
    """One root span per query with a child per stage: how a traced pipeline records the same steps. A turn ends
    once the batch processor has exported its spans (`settle`): its worker thread's share of the cost, which would
    otherwise run during the next contender's turn."""
    pc = time.perf_counter_ns
    stages = STEPS[1:4]

    def run(n: int) -> float:
        t0 = pc()
        for i in range(n):
            with start("chat", {"session.id": f"s-{i // 4}", "user.id": "u-42", "input.value": QUESTION}):
                for name, fields in stages:
                    with start(name, fields):
                        pass
        settle()
        return (pc() - t0) / 1000 / n

    return run


def _otel(work: Path) -> tuple[Runner, Callable[[], None]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_otel_exporter()))
    tracer = provider.get_tracer("querylog.bench")
    run = _spans(lambda name, attrs: tracer.start_as_current_span(name, attributes=attrs), provider.force_flush)
    return run, provider.shutdown


def _langfuse(work: Path) -> tuple[Runner, Callable[[], None]]:
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    client = Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",  # noqa: S106 - a placeholder: nothing is sent
        host="http://127.0.0.1:9",  # never reached: the exporter below discards
        span_exporter=_otel_exporter(),
        tracer_provider=TracerProvider(),
    )
    run = _spans(lambda name, attrs: client.start_as_current_observation(name=name, metadata=attrs), client.flush)
    return run, client.shutdown


#: figure suffix -> how to set the contender up (in a work directory) and tear it down.
CONTENDERS: dict[str, Callable[[Path], tuple[Runner, Callable[[], None]]]] = {
    "querylog": _querylog,
    "structlog": _structlog,
    "stdlib_logging": _stdlib,
    "otel_span": _otel,
    "langfuse": _langfuse,
}


def measure_peers(work: Path, *, queries: int, repetitions: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """µs per step for each contender, `repetitions` interleaved rounds of `queries` queries each."""
    work.mkdir(parents=True, exist_ok=True)
    runners: dict[str, Runner] = {}
    closers: list[Callable[[], None]] = []
    skipped: dict[str, str] = {}
    try:
        for name, setup in CONTENDERS.items():
            try:
                runner, close = setup(work)
            except ImportError as exc:  # an SDK that is not installed: its ratio is null, with the reason
                skipped[name] = f"{type(exc).__name__}: {exc}"
                continue
            runners[name] = runner
            closers.append(close)
            runner(min(queries, 500))  # warm-up: imports, caches, files opened
        rounds: dict[str, list[float]] = {name: [] for name in runners}
        # Each round is cut into slices, the contenders taking turns within it: a busy moment of a shared machine
        # (a tenth of a second of stolen CPU) then lands on every contender's share of the round, not on the one
        # whose whole turn it hit. Ours takes a tenth of the OpenTelemetry span's time per round.
        slices = max(1, min(ROUND_SLICES, queries // 100))
        for rep in range(repetitions):
            progress(f"emit: peers, round {rep + 1}/{repetitions} ({queries} queries each, in {slices} turns)")
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            spent = dict.fromkeys(order, 0.0)
            for turn in range(slices):
                n = queries // slices + (1 if turn < queries % slices else 0)
                for name in order if turn % 2 == 0 else reversed(order):
                    spent[name] += runners[name](n) * n
            for name in order:
                rounds[name].append(spent[name] / queries)
    finally:
        for close in closers:
            close()
    ours = rounds.pop("querylog")
    ratios = {name: [a / b for a, b in zip(ours, theirs, strict=True)] for name, theirs in rounds.items()}
    steps = {name: SPANS_PER_QUERY if name in ("otel_span", "langfuse") else len(STEPS) for name in runners}
    return {
        "ratios": ratios,
        "skipped": skipped,
        "us_per_query": {name: round(statistics.median(v), 3) for name, v in {"querylog": ours, **rounds}.items()},
        "us_per_step": {
            name: round(statistics.median(v) / steps[name], 3) for name, v in {"querylog": ours, **rounds}.items()
        },
        "steps_per_query": steps,
    }
