"""Every LogQL query in docs/loki.md runs against what the projection ships, and finds something."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from tests.support.loki_query import queryable_loki

from querylog.logging.events import QueryFailed
from querylog.logging.loki import LokiSink
from querylog.logging.projection import Batch
from querylog.logging.tracker import QueryTracker
from querylog.testing import CapturingEmitter, RecordedLoki

DOC = Path(__file__).resolve().parents[2] / "docs" / "loki.md"


def _documented_queries() -> list[str]:
    block = re.search(r"```logql\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "docs/loki.md has no ```logql block"
    queries: list[str] = []
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(" ") and queries:
            queries[-1] += " " + line.strip()  # a continued query
        else:
            queries.append(line.strip())
    return queries


@pytest.fixture(scope="module")
def loki() -> RecordedLoki:
    loki = queryable_loki()
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, env="prod")
    for i, text in enumerate(["SK하이닉스 주가 전망은?", "네이버 뉴스", "하이닉스 실적"]):
        with tracker.query(
            text, session_id="s-7", user_id="u-42", query_id=f"01a20b67-6af4-73e7-8305-d347968a117{'cde'[i]}"
        ) as q:
            q.classified("stock_analysis", 0.9, duration_ms=2.0)
            q.searched(3, cache_hit=i == 0, duration_ms=5.0)
    capture.append(QueryFailed(query_id="q-f", error_type="Timeout", env="prod"))
    with LokiSink("http://loki", env="prod", transport=loki.transport()) as sink:
        sink.write(Batch(events=capture.events, checkpoint={}))  # type: ignore[arg-type]
    return loki


@pytest.mark.parametrize("query", _documented_queries())
def test_a_documented_query_works(loki: RecordedLoki, query: str) -> None:
    now = str(time.time_ns())
    with httpx.Client(transport=loki.transport(), base_url="http://loki") as client:
        if query.startswith("{"):
            response = client.get("/loki/api/v1/query_range", params={"query": query, "end": now})
        else:
            response = client.get("/loki/api/v1/query", params={"query": query, "time": now})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["result"], f"{query} found nothing"
