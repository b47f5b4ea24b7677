"""`kill -9` of the API under load, five times: every acknowledged query is in the lake, no event twice."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from querylog.testing import free_port, running_server

pytestmark = pytest.mark.slow


def _locks_free(locks: Path, *, timeout_s: float) -> bool:
    """Whether every lock under `locks` can be taken within `timeout_s` (a child notices its parent is gone within
    a second, then drains)."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = []
        for path in sorted(locks.glob("*.lock")):
            with path.open("ab") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append(path.name)
        if not held or time.monotonic() > deadline:
            return not held
        time.sleep(0.2)  # other processes let go of their locks: nothing to wait on but the lock


def _load_then_kill(
    proc: subprocess.Popen[bytes], url: str, acknowledged: list[str], rng: random.Random, crash: int, span: range
) -> None:
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(url, acknowledged, stop, crash * 10 + i)) for i in range(6)]
    for w in workers:
        w.start()
    target = len(acknowledged) + rng.choice(span)
    deadline = time.monotonic() + 120
    while len(acknowledged) < target and time.monotonic() < deadline:
        time.sleep(0.01)  # let load run until a random number of queries were acknowledged
    os.kill(proc.pid, signal.SIGKILL)  # mid-flight: requests, flushes and Parquet batches in progress
    proc.wait()
    stop.set()
    for w in workers:
        w.join()


def _load(url: str, acknowledged: list[str], stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    texts = ["네이버 주가 전망은?", "SK하이닉스 실적", "Tesla news today", "코스피 지수", "카카오 대표"]
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                r = client.post(f"{url}/v1/chat", json={"query": f"{rng.choice(texts)} {rng.randint(0, 10**6)}"})
            except httpx.TransportError:
                continue  # the server is being killed or restarted: not acknowledged
            if r.status_code == 200:
                acknowledged.append(r.json()["query_id"])


#: The log trimmed as fast as it can be: segments roll every second, a projected one goes at once.
_TRIMMING = {
    "QUERYLOG_SEGMENT_MAX_AGE_S": "1",
    "QUERYLOG_LOG_RETENTION": "0s",
    "QUERYLOG_HOUSEKEEPING_INTERVAL_S": "0.5",
    "QUERYLOG_METRICS_SNAPSHOT_INTERVAL_S": "0.5",
}


@pytest.mark.parametrize("trimming", [False, True], ids=["log-kept", "log-trimmed"])
def test_kill_9_five_times_under_load_loses_no_acknowledged_query(tmp_path: Path, trimming: bool) -> None:
    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    rng = random.Random(1234)
    env = {"QUERYLOG_PARQUET_INTERVAL_S": "0.1", **(_TRIMMING if trimming else {})}
    for crash in range(5):
        with running_server(home, env, port=port) as server:
            # With trimming, each life lasts seconds (segments roll every second; snapshots, commits and trims
            # every 0.5 s), so that the log is trimmed between the crashes and under load, not only after them.
            span = range(600, 1201) if trimming else range(40, 161)
            _load_then_kill(server.process, url, acknowledged, rng, crash, span)
    # The log really was trimmed while the crashed processes ran, or this proves nothing about trimming.
    totals_path = home / "state" / "housekeeping.json"
    trimmed_under_crashes = json.loads(totals_path.read_text())["trimmed_segments"] if totals_path.exists() else 0
    # A last, clean start lets the projections catch up with what the crashed processes logged; leaving the
    # block SIGTERMs it, and it drains before exiting.
    with running_server(home, env, port=port) as server:
        pass
    assert server.process.returncode == 0
    # Each killed API's projector child stopped once its parent was gone: none is left holding a projection.
    assert _locks_free(home / "state" / "locks", timeout_s=15.0), "a projector child outlived its API"

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "querylog",
            "sql",
            "--format",
            "json",
            "select (select count(*) - count(distinct event_id) from events) as dup, "
            "(select list(query_id) from queries where status = 'completed') as done",
        ],
        env={**os.environ, "QUERYLOG_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)[0]
    assert len(acknowledged) >= 5 * 40
    assert result["dup"] == 0
    missing = set(acknowledged) - set(result["done"])
    assert not missing, f"{len(missing)} acknowledged queries missing from the lake"
    if trimming:
        assert trimmed_under_crashes > 0
