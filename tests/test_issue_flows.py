"""The flows users check first, end to end over real processes: 200 chats → metrics, replay and reconcile agree
(and Loki too, when LOKI_URL is set)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from querylog.testing import running_server

pytestmark = pytest.mark.slow


def _queries_total(exposition: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == "querylog_queries_total"
    )


def test_200_chats_agree_in_live_metrics_replay_and_reconcile(
    tmp_path: Path, live_loki_environment: dict[str, str]
) -> None:
    home = tmp_path / "home"
    env = {"QUERYLOG_ENV": f"flow-{uuid.uuid4().hex[:8]}", "QUERYLOG_PARQUET_INTERVAL_S": "0.2"}
    cli_env = {**os.environ, "QUERYLOG_HOME": str(home), **env}
    with running_server(home, env) as server:
        demo = subprocess.run(
            [sys.executable, "-m", "querylog", "demo", "--queries", "200", "--url", server.url],
            env=cli_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        deadline = time.monotonic() + 30
        while (live := _queries_total(httpx.get(f"{server.url}/metrics").text)) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the metrics projection follows the log within its interval
        assert live == 200

        replay = subprocess.run(
            [sys.executable, "-m", "querylog", "replay", "metrics"], env=cli_env, capture_output=True, text=True, timeout=300
        )
        assert replay.returncode == 0, replay.stderr
        assert _queries_total(replay.stdout) == 200
        assert "100% of the log folded" in replay.stderr  # progress, a line per tenth: minutes on a big log

        deadline = time.monotonic() + 60
        while True:  # the lake (and Loki) follow within a few seconds
            done = subprocess.run(
                [sys.executable, "-m", "querylog", "reconcile", "--metrics-url", f"{server.url}/metrics"],
                env=cli_env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "DIFFERS" not in done.stdout
        if "LOKI_URL" in live_loki_environment or "QUERYLOG_LOKI_URL" in live_loki_environment:
            assert "loki" in done.stdout.splitlines()[1]  # Loki was one of the sources compared
