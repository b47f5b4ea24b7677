"""`kill -9` of the API under load, five times: every acknowledged query is in the lake, no event twice."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QUERYLOG_HOME": str(home), "QUERYLOG_STDOUT_EVENTS": "0", "QUERYLOG_PARQUET_INTERVAL_S": "0.1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "querylog", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "server exited during start"
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.05)  # readiness poll, bounded by the deadline


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


def test_kill_9_five_times_under_load_loses_no_acknowledged_query(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    rng = random.Random(1234)
    for crash in range(5):
        proc = _start(home, port)
        stop = threading.Event()
        workers = [threading.Thread(target=_load, args=(url, acknowledged, stop, crash * 10 + i)) for i in range(6)]
        for w in workers:
            w.start()
        target = len(acknowledged) + rng.randint(40, 160)
        deadline = time.monotonic() + 60
        while len(acknowledged) < target and time.monotonic() < deadline:
            time.sleep(0.01)  # let load run until a random number of queries were acknowledged
        os.kill(proc.pid, signal.SIGKILL)  # mid-flight: requests, flushes and Parquet batches in progress
        proc.wait()
        stop.set()
        for w in workers:
            w.join()
    # A last, clean start lets the projections catch up with what the crashed processes logged.
    proc = _start(home, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0

    env = {**os.environ, "QUERYLOG_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-m", "querylog", "sql", "--format", "json",
         "select (select count(*) - count(distinct event_id) from events) as dup, "
         "(select list(query_id) from queries where status = 'completed') as done"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    result = json.loads(out.stdout)[0]
    assert len(acknowledged) >= 5 * 40
    assert result["dup"] == 0
    missing = set(acknowledged) - set(result["done"])
    assert not missing, f"{len(missing)} acknowledged queries missing from the lake"
