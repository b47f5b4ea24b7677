"""Chat API throughput with querylog on versus off (one server process, switched), and its peak RSS."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from bench._common import BENCH_DIR, GroupResult, free_port, new_result, serve_subprocess, status_mib
from querylog.config import Settings
from querylog.service.demo import demo_queries

__all__ = ["run_api"]

CONNECTIONS = 8
#: On/off pairs of a full run, 4 s a run. A shared 2-core machine's capacity moves by half from one 8 s window to the
#: next (643 to 1,208 requests/s in one run): shorter pairs, more of them, keep each pair within one such moment.
API_PAIRS = 10
#: The server gets CPU 0 and the load generator CPU 1, so that neither steals the other's core: the ratio
#: then compares what querylog costs the server, not how the two processes happened to share two cores.
SERVER_CPU, LOAD_CPU = 0, 1
#: The server runs with the environment's QUERYLOG_* settings, but never ships to Loki: `LOKI_URL` names the loki
#: group's target, and a Loki on this machine would spend, during the querylog-on runs, the CPU the ratio measures.
#: The figure is the service as users get it by default (no Loki).
SERVER_ENV = {"LOKI_URL": "", "QUERYLOG_LOKI_URL": ""}

_WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
"""


def _bodies(directory: Path, n: int = 2_000) -> tuple[Path, Path]:
    """Requests from the demo workload (Korean/English, sessions, repeats), without its deliberate failures."""
    rows = [
        {"query": q.query, "session_id": q.session_id, "user_id": q.user_id}
        for q in demo_queries(n, seed=7, failure_rate=0.0)
    ]
    lines = directory / "bodies.ndjson"
    lines.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    array = directory / "bodies.json"
    array.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return lines, array


def _pinned(command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > LOAD_CPU:
        return ["taskset", "-c", str(LOAD_CPU), *command]
    return command


def _wrk(url: str, script: Path, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        _pinned(
            ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    return {"rps": rps, "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors is not None, **latency}


def _python_load(url: str, bodies: Path, seconds: float) -> dict[str, Any]:
    command = [sys.executable, str(BENCH_DIR / "api_load.py"), "--url", url, "--bodies", str(bodies)]
    command += ["--seconds", str(seconds), "--threads", str(CONNECTIONS)]
    out = json.loads(subprocess.run(_pinned(command), capture_output=True, text=True, timeout=seconds + 60).stdout)
    return {"rps": out["requests"] / out["elapsed_s"], "non_2xx": out["errors"]}


def _unpin_child(client: httpx.Client) -> int | None:
    """Give the projector child (``QUERYLOG_PROJECTIONS=process``) back every core. It inherits the server's
    pinning; a deployment pins nothing, so the kernel runs the child wherever a core is free, as here."""
    pid: int | None = client.get("/_bench/stats").json()["projector_process_pid"]
    if pid is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, range(os.cpu_count() or 1))
    return pid


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` has used so far; 0 for none."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_api(ctx: Any) -> GroupResult:
    result = new_result()
    seconds = max(1.0, (4.0 if not ctx.quick else 1.0) * min(1.0, ctx.scale * 2))
    pairs = ctx.repetitions if ctx.quick else max(ctx.repetitions, API_PAIRS)
    work = ctx.work_dir / "api"
    work.mkdir(parents=True, exist_ok=True)
    lines, array = _bodies(work)
    # wrk (C) drives the load from the other core; Python threads would need more CPU than that core has and
    # understate what querylog leaves of the server's. Installed when this runs as root with apt.
    subprocess.run(["sh", str(BENCH_DIR.parent / "scripts" / "ensure-wrk.sh")], check=False, timeout=600)
    use_wrk = shutil.which("wrk") is not None
    script = work / "chat.lua"
    script.write_text(_WRK_SCRIPT % lines)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = [str(BENCH_DIR / "api_server.py"), "--home", str(work / "home"), "--port", str(port)]

    def load(secs: float) -> dict[str, Any]:
        return _wrk(f"{base}/v1/chat", script, secs) if use_wrk else _python_load(f"{base}/v1/chat", array, secs)

    on: list[float] = []
    off: list[float] = []
    ratios: list[float] = []
    peaks: list[float] = []
    runs: list[dict[str, Any]] = []
    child_cpu_ms_per_request: list[float] = []
    child_peaks: list[float] = []
    with (
        serve_subprocess(server, f"{base}/healthz", env=SERVER_ENV, cpu=SERVER_CPU) as proc,
        httpx.Client(base_url=base) as client,
    ):
        child = _unpin_child(client)
        for state in ("on", "off"):  # warm-up: imports, retrieval cache, first segment and Parquet files
            client.post(f"/_bench/querylog/{state}").raise_for_status()
            load(min(2.0, seconds))
        for rep in range(pairs):
            ctx.progress(f"api: repetition {rep + 1}/{pairs} ({seconds:.0f}s on, {seconds:.0f}s off)")
            order = ("on", "off") if rep % 2 == 0 else ("off", "on")  # ABBA: drift hits both alike
            rates: dict[str, float] = {}
            for state in order:
                client.post(f"/_bench/querylog/{state}").raise_for_status()
                if state == "on":
                    client.post("/_bench/reset-peak").raise_for_status()
                    if child is not None:
                        Path(f"/proc/{child}/clear_refs").write_text("5")  # its peak RSS too (Linux >= 4.0)
                cpu_before = _cpu_s(child)
                run = load(seconds)
                if state == "on":
                    peaks.append(client.get("/_bench/stats").json()["vmhwm_kib"] / 1024)
                    if child is not None:
                        child_cpu_ms_per_request.append(1000 * (_cpu_s(child) - cpu_before) / (run["rps"] * seconds))
                        child_peaks.append(status_mib(child, "VmHWM") or float("nan"))
                if run["non_2xx"]:
                    raise RuntimeError(f"{run['non_2xx']} failed requests with querylog {state}: {run}")
                rates[state] = run["rps"]
                runs.append({"rep": rep + 1, "querylog": state, **run})
            on.append(rates["on"])
            off.append(rates["off"])
            ratios.append(rates["on"] / rates["off"])
        # Where the cost lies: the log on but the projections paused (request path only), against off.
        split: list[dict[str, float]] = []
        for rep in range(0 if ctx.quick else 3):  # full runs only: --quick stays under a minute
            ctx.progress(f"api: split {rep + 1}/3 (log on, projections paused; then off)")
            client.post("/_bench/projections/off").raise_for_status()
            client.post("/_bench/querylog/on").raise_for_status()
            log_only = load(seconds)["rps"]
            client.post("/_bench/querylog/off").raise_for_status()
            bare = load(seconds)["rps"]
            client.post("/_bench/projections/on", timeout=120).raise_for_status()  # catch up, untimed
            split.append({"log_only_rps": log_only, "off_rps": bare, "ratio": log_only / bare})
        stats = client.get("/_bench/stats").json()
        pid = proc.pid
    mode = Settings.from_env().projections
    other = "thread" if mode == "process" else "process"
    other_mode = [] if ctx.quick else _mode_runs(other, ctx, server, base, load, seconds)
    result["samples"]["api_throughput_ratio_instrumented"] = ratios
    result["samples"]["rss_mb_api"] = peaks
    result["extra"] = {
        "load_generator": f"wrk -t1 -c{CONNECTIONS}" if use_wrk else f"bench/api_load.py ({CONNECTIONS} threads)",
        "wrk": use_wrk,
        "projections_mode": f"{mode} (QUERYLOG_PROJECTIONS as users get it)",
        "loki": "not shipped (LOKI_URL and QUERYLOG_LOKI_URL cleared for the server: the loki group measures Loki)",
        "projector_child_cpu_ms_per_request": (
            round(statistics.median(child_cpu_ms_per_request), 4) if child_cpu_ms_per_request else None
        ),
        "projector_child_rss_mib": round(statistics.median(child_peaks), 1) if child_peaks else None,
        "pinning": (
            f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}, the projector child (process mode) on any"
            if shutil.which("taskset")
            else "none"
        ),
        "seconds_per_run": seconds,
        "rps_on_median": round(statistics.median(on), 1),
        "rps_off_median": round(statistics.median(off), 1),
        "runs": runs,
        "log_on_projections_paused": {
            "ratio_median": round(statistics.median(r["ratio"] for r in split), 4) if split else None,
            "runs": [{k: round(v, 4) for k, v in r.items()} for r in split],
            "means": "request-path cost alone (events, append, flush): the projections paused (threads waiting, "
            "or the projector child stopped with SIGSTOP); the rest of the on/off gap is what the projections "
            "take from the server",
        },
        f"projections_{other}": {
            "ratio_median": round(statistics.median(r["ratio"] for r in other_mode), 4) if other_mode else None,
            "runs": other_mode,
            "means": f"the same on/off runs with QUERYLOG_PROJECTIONS={other} (process: a child at nice 10, on any "
            "core, runs the metrics fold and Parquet; thread: both run as threads of the server, on its core and "
            "GIL); parquet_behind is the Parquet projection's lag in events when each querylog-on run ended; "
            "child_cpu_ms_per_request is the CPU a projector child spent per request served",
        },
        "server_pid": pid,
        "server_at_end": stats,
        "rss": "VmHWM of the server process during each querylog-on run (peak reset before it), MiB; the projector "
        "child's, measured alike, is projector_child_rss_mib: the service's memory is the two added",
        "off_means": "the same process and pipeline, the tracker's emitter swapped for a no-op one",
    }
    return result


def _mode_runs(mode: str, ctx: Any, server: list[str], base: str, load: Any, seconds: float) -> list[dict[str, float]]:
    """On/off pairs (3, alternating order) against a server whose projections run as `mode` says."""
    runs: list[dict[str, float]] = []
    with (
        serve_subprocess([*server, "--projections", mode], f"{base}/healthz", env=SERVER_ENV, cpu=SERVER_CPU),
        httpx.Client(base_url=base) as client,
    ):
        child = _unpin_child(client)
        for state in ("on", "off"):
            client.post(f"/_bench/querylog/{state}").raise_for_status()
            load(min(2.0, seconds))
        for rep in range(3):
            ctx.progress(f"api: QUERYLOG_PROJECTIONS={mode} {rep + 1}/3 ({seconds:.0f}s on, {seconds:.0f}s off)")
            rates: dict[str, float] = {}
            behind, child_cpu_s = 0, 0.0
            for state in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                client.post(f"/_bench/querylog/{state}").raise_for_status()
                cpu_before = _cpu_s(child)
                rates[state] = load(seconds)["rps"]
                if state == "on":
                    child_cpu_s = _cpu_s(child) - cpu_before
                    stats = client.get("/_bench/stats").json()
                    behind = stats["parquet_lag_events"]
            runs.append(
                {
                    "on_rps": rates["on"],
                    "off_rps": rates["off"],
                    "ratio": rates["on"] / rates["off"],
                    "parquet_behind": behind,
                    "child_cpu_ms_per_request": 1000 * child_cpu_s / (rates["on"] * seconds),
                }
            )
    return [{k: round(v, 4) for k, v in r.items()} for r in runs]
