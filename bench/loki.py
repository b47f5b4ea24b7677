"""Loki figures: python-logging-loki's caller cost against ours, and Loki projection throughput against the
raw push ceiling — against LOKI_URL when set, and always against the loopback double (bench/loki_double.py)."""

from __future__ import annotations

import contextlib
import gzip
import logging as std_logging
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from bench._common import BENCH_DIR, GroupResult, free_port, new_result, serve_subprocess
from bench._workload import write_log
from querylog.config import Settings
from querylog.logging.redaction import shown_url
from querylog.logging.segments import LogReader
from querylog.projector_process import SWITCH_INTERVAL_S, projection_switch_interval

__all__ = ["run_loki", "run_python_logging_loki"]

PUSH_PATH = "/loki/api/v1/push"
APP, ENV = "chat-api", "bench"


@contextlib.contextmanager
def local_double() -> Iterator[str]:
    """The loopback Loki double in its own process (its own GIL and core share, as a real Loki would have)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_subprocess([str(BENCH_DIR / "loki_double.py"), "--port", str(port)], f"{url}/ready"):
        yield url


def _double_entries(url: str) -> int | None:
    try:
        return int(httpx.get(f"{url}/bench/stats", timeout=5).json()["entries"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None  # a real Loki has no such endpoint


def _lines(ctx: Any, n_events: int) -> tuple[Path, list[tuple[str, list[Any]]]]:
    """A real event log of `n_events`, and each event's Loki stream and push value ``[ns, line, metadata]`` as
    the sink builds them (for the raw push and python-logging-loki), in time order."""
    from querylog.logging.loki import encode_lines

    log_dir = ctx.work_dir / f"loki-log-{n_events}"
    if not log_dir.exists():
        write_log(log_dir, n_events)
    lines = [line for batch in LogReader(log_dir).iter_all() for line in batch.lines]
    entries = encode_lines(lines, app=APP, env=ENV)
    values = sorted(zip(entries.times, entries.streams, entries.values, strict=True), key=lambda x: x[0])
    return log_dir, [(stream, orjson.loads(value)) for _, stream, value in values]


# -- python-logging-loki ------------------------------------------------------------------------------------


def _their_per_record_us(url: str, lines: list[tuple[str, str]], repetitions: int) -> list[float]:
    """python-logging-loki's LokiHandler: each `logger.info` builds a push and POSTs it before returning."""
    import logging_loki  # type: ignore[import-not-found, import-untyped, unused-ignore]

    handler = logging_loki.LokiHandler(url=url + PUSH_PATH, tags={"app": APP, "env": ENV}, version="1")
    logger = std_logging.getLogger("querylog.bench.python_logging_loki")
    logger.propagate = False
    logger.setLevel(std_logging.INFO)
    logger.addHandler(handler)
    errors: list[BaseException] = []

    def on_error(record: std_logging.LogRecord) -> None:  # the default would print a traceback per record
        errors.append(RuntimeError(f"python-logging-loki failed to push record {record.msg!r:.80}"))

    handler.handleError = on_error  # type: ignore[method-assign]
    try:
        for event_type, line in lines[:20]:  # warm-up: connection, imports
            logger.info(line, extra={"tags": {"event": event_type}})
        out: list[float] = []
        for _ in range(repetitions):
            t0 = time.perf_counter()
            for event_type, line in lines:
                logger.info(line, extra={"tags": {"event": event_type}})
            out.append((time.perf_counter() - t0) / len(lines) * 1e6)
    finally:
        logger.removeHandler(handler)
        handler.close()
    if errors:
        raise errors[0]
    return out


def _our_mean_us(ctx: Any) -> float:
    """Our caller's cost per event: a whole tracked query (five events and the flush that encodes and writes them)
    over five, as the emit group's peers measure it."""
    if "emit_mean_us" in ctx.shared:
        return float(ctx.shared["emit_mean_us"])
    # The emit group did not run (--only): measure ours here, the same way.
    from bench.emit_peers import CONTENDERS, STEPS

    run, close = CONTENDERS["querylog"](ctx.work_dir / "pll-emit")
    try:
        run(300)
        return statistics.median(run(ctx.size(2_000, 500)) / len(STEPS) for _ in range(3))
    finally:
        close()


def run_python_logging_loki(ctx: Any) -> GroupResult:
    result = new_result()
    keys = ("speedup_vs_python_logging_loki", "speedup_vs_python_logging_loki_local_double")
    try:
        import logging_loki  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        for key in keys:
            result["reasons"][key] = (
                "python-logging-loki is not installed (bench-only dependency: pip install -e '.[bench]')"
            )
        return result
    _, entries = _lines(ctx, ctx.size(2_000, 500))
    lines = [(stream, value[1]) for stream, value in entries]
    n = ctx.size(2_000, 300, minimum=50)
    lines = (lines * (n // max(1, len(lines)) + 1))[:n]
    ours = _our_mean_us(ctx)
    extra: dict[str, Any] = {
        "records_per_repetition": n,
        "ours_mean_us_per_event": round(ours, 3),
        "ours_is": "a tracked query's mean caller cost (five events and their flush) per event; theirs is a mean too",
    }
    targets: list[tuple[str, str]] = []
    if ctx.loki_url:
        targets.append((keys[0], ctx.loki_url))
    else:
        result["reasons"][keys[0]] = "LOKI_URL is not set: no real Loki to push to (see the _local_double figure)"
    with contextlib.ExitStack() as stack:
        targets.append((keys[1], stack.enter_context(local_double())))
        for key, url in targets:
            ctx.progress(f"python-logging-loki: {n} records x {ctx.repetitions} against {url}")
            theirs = _their_per_record_us(url, lines, ctx.repetitions)
            result["samples"][key] = [t / ours for t in theirs]
            extra[f"{key}_theirs_us_per_record"] = [round(t, 1) for t in theirs]
    result["extra"] = extra
    return result


# -- Loki projection throughput ---------------------------------------------------------------------------


def _raw_pushes(
    entries: list[tuple[str, list[Any]]], max_bytes: int
) -> list[list[tuple[tuple[str, str, str], list[Any]]]]:
    """The same entries the sink sends, as plain values, cut into batches of about `max_bytes` (untimed)."""
    batches: list[list[tuple[tuple[str, str, str], list[Any]]]] = []
    batch: list[tuple[tuple[str, str, str], list[Any]]] = []
    size = 0
    for stream, value in entries:
        cost = len(value[1].encode()) + 120
        if batch and size + cost > max_bytes:
            batches.append(batch)
            batch, size = [], 0
        batch.append(((APP, ENV, stream), value))
        size += cost
    if batch:
        batches.append(batch)
    return batches


def _raw_push_rate(
    url: str, batches: list[list[tuple[tuple[str, str, str], list[Any]]]], n_events: int
) -> tuple[float, float]:
    """One thread: group each batch by stream, JSON-encode, gzip, POST, wait for 204. Events per second, and this
    process's CPU time per event (µs)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for batch in batches:
            streams: dict[tuple[str, str, str], list[Any]] = {}
            for stream, value in batch:
                streams.setdefault(stream, []).append(value)
            body = orjson.dumps(
                {
                    "streams": [
                        {"stream": {"app": a, "env": e, "event": ev}, "values": values}
                        for (a, e, ev), values in streams.items()
                    ]
                }
            )
            response = client.post(PUSH_PATH, content=gzip.compress(body, compresslevel=1))
            if response.status_code != 204:
                raise RuntimeError(f"raw push answered {response.status_code}: {response.text[:200]}")
        return n_events / (time.perf_counter() - t0), (time.process_time() - cpu0) / n_events * 1e6


def _projection_rate(ctx: Any, url: str, log_dir: Path, rep: int) -> tuple[float, dict[str, Any]]:
    """The real Loki projection (as `querylog serve` builds it) catching up on the whole log from scratch, with the
    GIL's switch interval of the process that runs it (`querylog project`, the default QUERYLOG_PROJECTIONS)."""
    from querylog.runtime import loki_projector

    home = ctx.work_dir / f"loki-proj-{rep}-{abs(hash(url))}"
    settings = Settings(home=home, loki_url=url, env=ENV, service=APP, stdout_events=False)
    home.mkdir(parents=True, exist_ok=True)
    (home / "log").symlink_to(log_dir, target_is_directory=True)
    projector = loki_projector(settings)
    try:
        with projection_switch_interval():
            t0, cpu0 = time.perf_counter(), time.process_time()
            n = projector.catch_up()
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        snap = projector.telemetry.snapshot()
    finally:
        projector.stop(drain_timeout_s=None)
        projector.sink.close()
    if snap.sent != n:
        raise RuntimeError(f"Loki projection sent {snap.sent} of {n} events (dropped: {snap.dropped})")
    return n / elapsed, {"batches": snap.batches, "bytes": snap.batch_bytes_total, "cpu_us_per_event": cpu / n * 1e6}


#: Pairs (projection, raw push) measured against a real Loki. One pair's ratio swings by ±25% on a 2-core
#: machine (Loki's own time for the same 100,000 lines varies that much from run to run: a tenth of its pushes
#: take 3-5x the median), so the median of five would move by about ±0.1 between runs; nine narrow that.
REAL_LOKI_PAIRS: Final = 9


def _throughput(
    ctx: Any, url: str, suffix: str, log_dir: Path, events: list[Any], result: GroupResult, *, pairs: int
) -> None:
    from querylog.logging.loki import DEFAULT_MAX_PUSH_BYTES

    n = len(events)
    batches = _raw_pushes(events, DEFAULT_MAX_PUSH_BYTES)
    projection: list[float] = []
    raw: list[float] = []
    share: list[float] = []
    cpu: list[float] = []  # the projection's CPU time (every thread of this process) per event
    raw_cpu: list[float] = []  # the raw push's, likewise
    # Warm-up, untimed: the first push into a Loki (new streams, cold caches, a Go heap still growing) is slower
    # than the rest, and would count against whichever side happened to go first.
    ctx.progress(f"loki{suffix}: warm-up push ({n} events, untimed)")
    _raw_push_rate(url, batches, n)
    before = _double_entries(url)
    for rep in range(pairs):
        # Which of the two goes first alternates: the second meets a Loki still digesting the first's lines
        # (its Go heap, its chunks), and that must not always count against the same side.
        order = "projection then raw push" if rep % 2 == 0 else "raw push then projection"
        ctx.progress(f"loki{suffix}: repetition {rep + 1}/{pairs} ({n} events, {order})")
        if rep % 2 == 0:
            rate, stats = _projection_rate(ctx, url, log_dir, rep)
            ceiling, raw_cpu_us = _raw_push_rate(url, batches, n)
        else:
            ceiling, raw_cpu_us = _raw_push_rate(url, batches, n)
            rate, stats = _projection_rate(ctx, url, log_dir, rep)
        cpu.append(round(stats["cpu_us_per_event"], 2))
        raw_cpu.append(round(raw_cpu_us, 2))
        projection.append(rate)
        raw.append(ceiling)
        share.append(rate / ceiling)
    after = _double_entries(url)
    result["samples"][f"loki_events_per_s{suffix}"] = projection
    result["samples"][f"loki_raw_push_ceiling_events_per_s{suffix}"] = raw
    result["samples"][f"loki_share_of_raw_push_ceiling{suffix}"] = share
    result["extra"][f"target{suffix}"] = url
    result["extra"][f"raw_pushes_per_repetition{suffix}"] = len(batches)
    result["extra"][f"projection_cpu_us_per_event{suffix}"] = cpu
    result["extra"][f"raw_push_cpu_us_per_event{suffix}"] = raw_cpu
    if before is not None and after is not None:
        # The double counts what it parsed: every event of every repetition, twice (projection and raw).
        result["extra"][f"double_entries_received{suffix}"] = after - before
        result["extra"][f"double_entries_expected{suffix}"] = 2 * n * pairs


def run_loki(ctx: Any) -> GroupResult:
    result = new_result()
    try:
        import querylog.logging.loki  # noqa: F401
    except ImportError as exc:
        for key in ("loki_events_per_s", "loki_events_per_s_local_double"):
            result["reasons"][key] = f"the Loki projection (logging/loki.py) is not importable: {exc}"
    n = ctx.size(100_000, 10_000, minimum=500)
    ctx.progress(f"loki: writing a {n}-event log")
    log_dir, events = _lines(ctx, n)
    target: dict[str, Any] = {"LOKI_URL": shown_url(ctx.loki_url) if ctx.loki_url else None}
    if ctx.loki_url:
        target["real"] = shown_url(ctx.loki_url)
        pairs = ctx.repetitions if ctx.quick else max(ctx.repetitions, REAL_LOKI_PAIRS)
        _throughput(ctx, ctx.loki_url, "", log_dir, events, result, pairs=pairs)
    else:
        for key in ("loki_events_per_s", "loki_raw_push_ceiling_events_per_s", "loki_share_of_raw_push_ceiling"):
            result["reasons"][key] = "LOKI_URL is not set: measured against the loopback double (*_local_double)"
    with local_double() as url:
        target["local_double"] = f"{url} (bench/loki_double.py: parses and counts, stores nothing; not Loki)"
        _throughput(ctx, url, "_local_double", log_dir, events, result, pairs=ctx.repetitions)
    ctx.shared["loki_target"] = target
    result["extra"]["events_per_repetition"] = n
    result["extra"]["projection_switch_interval_s"] = SWITCH_INTERVAL_S  # as `querylog project` runs it
    return result
