"""End to end with a real server process: 300 concurrent chats, all visible to `querylog sql` while it runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from querylog.testing import _server, running_server

pytestmark = pytest.mark.slow


def _querylog(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUERYLOG_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "querylog", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    home = tmp_path / "home"
    with running_server(home, env={"QUERYLOG_ENV": "e2e"}) as live:
        yield live.url, home, live.process


def _sql(home: Path, statement: str) -> list[dict[str, object]]:
    done = _querylog("sql", statement, "--format", "json", home=home)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def test_300_concurrent_chats_are_300_queries_with_their_lifecycles(
    server: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, home, proc = server
    questions = [
        "네이버 주가 전망은?",
        "SK하이닉스 실적 발표",
        "latest Tesla news",
        "코스피 시장 어때",
        "What does Kakao do?",
    ]

    def ask(i: int) -> str:
        r = httpx.post(
            f"{url}/v1/chat", json={"query": f"{questions[i % 5]} {i}", "session_id": f"s-{i % 30}"}, timeout=60
        )
        assert r.status_code == 200, r.text
        return str(r.json()["query_id"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = set(pool.map(ask, range(300)))
    assert len(ids) == 300

    # The lake follows within its freshness interval; poll `querylog sql` while the server keeps running.
    deadline = time.monotonic() + 30
    while True:
        rows = _sql(home, "select count(*) as n from queries")
        if rows[0]["n"] == 300 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert proc.poll() is None  # still serving: the CLI needed no lock
    assert rows[0]["n"] == 300
    assert {r["query_id"] for r in _sql(home, "select query_id from queries")} == ids
    per_query = _sql(home, "select query_id, count(distinct event_type) as types from events group by 1")
    assert all(int(r["types"]) >= 5 for r in per_query)  # type: ignore[call-overload]
    dup = _sql(home, "select count(*) - count(distinct event_id) as d from events")
    assert dup[0]["d"] == 0


def test_sigterm_drains_and_exits_cleanly(server: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    url, home, proc = server
    for i in range(20):
        assert httpx.post(f"{url}/v1/chat", json={"query": f"삼성전자 {i}"}, timeout=30).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert _sql(home, "select count(*) as n from queries")[0]["n"] == 20


def test_running_server_tries_another_port_when_the_one_it_picked_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run in parallel (`make test`): another worker may bind the free port picked for a server before it
    does. The helper then starts it on another, instead of failing with "exited during start"."""

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # answers connections: a server that took the port first
        picks = iter([taken.getsockname()[1], _server.free_port()])
        monkeypatch.setattr(_server, "free_port", lambda: next(picks))
        with running_server(tmp_path / "home") as srv:
            assert int(srv.url.rsplit(":", 1)[1]) != taken.getsockname()[1]
            assert httpx.get(f"{srv.url}/healthz", timeout=5).json()["status"] == "ok"


def _http_answer(sock: socket.socket) -> str:
    """One HTTP/1.1 answer read whole from `sock`: its head, then as many bytes as its Content-Length says (a single
    recv may return the head alone)."""

    def more() -> bytes:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection before its whole answer"
        return chunk

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = next(int(value) for name, value in fields if name.strip().lower() == b"content-length")
    while len(body) < length:
        body += more()
    return (head + b"\r\n\r\n" + body).decode()


def test_a_batch_that_would_pass_the_inflight_budget_is_503_while_another_is_read(tmp_path: Path) -> None:
    """A producer's body still arriving holds its bytes of QUERYLOG_INGEST_INFLIGHT_MAX_BYTES: a batch that would
    take the server past it is refused 503 (retry) before its body is kept, and taken once the first is done."""

    def body(prefix: str, n: int, pad: int) -> bytes:
        events = [
            {"event_type": "query_received", "event_id": f"{prefix}-{i}", "query_id": f"q-{prefix}-{i}",
             "query_text": "삼성전자 " + "x" * pad, "ts": "2025-01-31T09:00:00Z"}
            for i in range(n)
        ]  # fmt: skip
        return json.dumps({"events": events}).encode()

    slow, second = body("slow", 60, 14_000), body("next", 40, 14_000)  # about 840 kB and 560 kB
    env = {"QUERYLOG_INGEST_MAX_BYTES": str(1 << 20), "QUERYLOG_INGEST_INFLIGHT_MAX_BYTES": "1200000"}
    with running_server(tmp_path / "home", env=env) as live:
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(slow)}\r\n\r\n"
            sock.sendall(head.encode() + slow[:1000])  # the rest is held back: the server is reading it
            # Until the server holds the slow body's bytes, a probe that is not JSON is a harmless 400.
            probe = b"x" * len(second)
            deadline = time.monotonic() + 30
            while (
                r := httpx.post(f"{live.url}/v1/events", content=probe, headers={"content-type": "application/json"})
            ).status_code == 400:
                assert time.monotonic() < deadline, "the slow body never held its bytes"
            assert r.status_code == 503, r.text
            refused = httpx.post(f"{live.url}/v1/events", content=second, headers={"content-type": "application/json"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "QUERYLOG_INGEST_INFLIGHT_MAX_BYTES" in refused.json()["detail"]
            small = httpx.post(f"{live.url}/v1/events", json={"events": []})
            assert small.status_code == 202  # a small batch still fits beside the slow one
            sock.sendall(slow[1000:])
            answer = _http_answer(sock)
        assert answer.startswith("HTTP/1.1 202"), answer
        assert json.loads(answer.split("\r\n\r\n", 1)[1]) == {"accepted": 60, "duplicates": 0}
        retried = httpx.post(f"{live.url}/v1/events", content=second, headers={"content-type": "application/json"})
        assert retried.json() == {"accepted": 40, "duplicates": 0}  # the budget was given back
        metrics = httpx.get(f"{live.url}/metrics").text
        assert 'querylog_ingest_requests_refused_total{endpoint="events",status="503"} 2.0' in metrics
