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
