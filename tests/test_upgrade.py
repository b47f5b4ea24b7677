"""An upgrade as a user lives it: a data directory written by querylog 0.1.0 (schema v1, `tests/data/v1-home`)
served by this release, which adds schema v2 queries beside the old ones; the lake reads both, every reader agrees,
`querylog replay parquet` rebuilds it (and refuses while the service runs) and compaction merges the generations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl
import pyarrow.dataset as ds
import pytest

from querylog.analytics.catalog import Catalog
from querylog.analytics.lake_frames import scan_lake
from querylog.logging.events import WRITTEN_VERSION
from querylog.testing import running_server

pytestmark = pytest.mark.slow

_V1_HOME = Path(__file__).parent / "data" / "v1-home"
_V1_EVENTS = 217  # tests/data/v1-home/README.md
_V1_QUERIES = 40
_QUESTIONS = ["삼성전자 실적 전망 알려줘", "What is the outlook for NVIDIA stock?"]


def _querylog(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUERYLOG_HOME": str(home), "QUERYLOG_STDOUT_EVENTS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "querylog", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _rows(home: Path, sql: str) -> list[dict[str, Any]]:
    with Catalog(home / "lake") as catalog:
        columns, rows = catalog.query(sql)
    return [dict(zip(columns, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    """The v1 home after this release served two chat questions and two ingested batches (one v1, one v2).
    Yields the home, the chat answers as returned, and what `replay parquet` said while the service ran."""
    home = tmp_path_factory.mktemp("upgrade") / "home"
    shutil.copytree(_V1_HOME, home, ignore=shutil.ignore_patterns("README.md"))
    env = {"QUERYLOG_ENV": "upgraded", "QUERYLOG_RELEASE": "2.0.0-test", "QUERYLOG_PROMPT_VERSION": "p-2"}
    with running_server(home, env) as server:
        answers = []
        for question in _QUESTIONS:
            resp = httpx.post(f"{server.url}/v1/chat", json={"query": question, "session_id": "s-up"}, timeout=30)
            assert resp.status_code == 200, resp.text
            answers.append(resp.json())
        ingested = [
            {
                "event_type": "query_received",
                "event_id": "in-v1",
                "query_id": "q-in-1",
                "query_text": "카카오 뉴스",
                "schema_version": 1,
            },
            {
                "event_type": "query_received",
                "event_id": "in-v2",
                "query_id": "q-in-2",
                "query_text": "현대차 배당",
                "tags": ["ingested"],
                "attributes": {"channel": "batch"},
            },
            {
                "event_type": "response_generated",
                "event_id": "in-v2-r",
                "query_id": "q-in-2",
                "answer_text": "배당은 분기마다 지급됩니다",
                "gen_ai_request_model": "gpt-4o-mini",
                "gen_ai_usage_input_tokens": 1000,
                "gen_ai_usage_output_tokens": 200,
            },
        ]
        assert httpx.post(f"{server.url}/v1/events", json={"events": ingested}, timeout=30).status_code == 202
        refused = _querylog(home, "replay", "parquet")
    return home, answers, f"{refused.returncode}\n{refused.stderr}"


def test_old_and_new_queries_read_side_by_side(upgraded: tuple[Path, list[dict[str, Any]], str]) -> None:
    home, answers, _ = upgraded
    rows = _rows(home, "select query_id, env, schema_version, answer_text, release from queries")
    old = [r for r in rows if r["env"] == "legacy"]
    assert len(old) == _V1_QUERIES
    assert all(r["schema_version"] == 1 and r["answer_text"] is None and r["release"] is None for r in old)
    new = {r["query_id"]: r for r in rows if r["env"] == "upgraded"}
    assert {a["query_id"] for a in answers} <= set(new)
    assert all(new[a["query_id"]]["release"] == "2.0.0-test" for a in answers)
    with duckdb.connect() as con:  # no event twice: the old lake files were not re-projected
        [(events, distinct)] = con.execute(
            f"select count(*), count(distinct event_id) from read_parquet('{home}/lake/events/*/*/*.parquet')"
        ).fetchall()
    assert events == distinct > _V1_EVENTS


def test_the_lake_holds_the_answer_and_the_sources_the_user_got(
    upgraded: tuple[Path, list[dict[str, Any]], str],
) -> None:
    home, answers, _ = upgraded
    for answer in answers:
        [row] = _rows(
            home,
            "select answer_text, answer_chars, sources, prompt_version, response_type, finish_reason, schema_version "
            f"from queries where query_id = '{answer['query_id']}'",
        )
        assert row["answer_text"] == answer["answer"] and row["answer_chars"] == len(answer["answer"])
        assert [s["doc_id"] for s in row["sources"]] == [s["doc_id"] for s in answer["sources"]]
        assert [s["rank"] for s in row["sources"]] == list(range(1, len(answer["sources"]) + 1))
        assert row["prompt_version"] == "p-2" and row["finish_reason"] == "stop" and row["response_type"]
        assert row["schema_version"] == WRITTEN_VERSION


def test_ingested_v1_and_v2_bodies_keep_their_versions_and_v2_cost_is_priced(
    upgraded: tuple[Path, list[dict[str, Any]], str],
) -> None:
    home, _, _ = upgraded
    rows = {
        r["event_id"]: r
        for r in _rows(
            home,
            "select event_id, schema_version, tags, attributes, cost_usd, cost_source from events "
            "where event_id like 'in-%'",
        )
    }
    # A body without a version is written as the oldest version that holds it.
    assert rows["in-v1"]["schema_version"] == 1 and rows["in-v2"]["schema_version"] == WRITTEN_VERSION
    assert rows["in-v2"]["tags"] == ["ingested"]
    assert dict(rows["in-v2"]["attributes"]) == {"channel": "batch"}
    from querylog.logging.pricing import DEFAULT_PRICES

    price = DEFAULT_PRICES.rows("gpt-4o-mini")[-1]
    assert rows["in-v2-r"]["cost_usd"] == pytest.approx((1000 * price.input + 200 * price.output) / 1e6)
    assert rows["in-v2-r"]["cost_source"] == DEFAULT_PRICES.source


def test_duckdb_polars_and_pyarrow_count_the_same_rows_over_both_generations(
    upgraded: tuple[Path, list[dict[str, Any]], str],
) -> None:
    home, _, _ = upgraded
    files = sorted(str(p) for p in (home / "lake" / "events").glob("date=*/hour=*/*.parquet"))
    with duckdb.connect() as con:
        [(by_duckdb,)] = con.execute(f"select count(*) from read_parquet({files}, union_by_name = true)").fetchall()
    by_polars = scan_lake(home / "lake").select(pl.len()).collect()
    by_arrow = ds.dataset(files, format="parquet").count_rows()
    by_catalog = _rows(home, "select count(*) as n from events")[0]["n"]
    assert by_duckdb == by_polars.item() == by_arrow == by_catalog


def test_replay_parquet_refuses_while_the_service_runs_then_rebuilds_the_same_lake(
    upgraded: tuple[Path, list[dict[str, Any]], str],
) -> None:
    home, _, refused = upgraded
    code, message = refused.split("\n", 1)
    assert code == "2" and "running" in message, message  # it could not start
    before = _rows(home, "select event_id, schema_version, answer_text from events order by event_id")
    done = _querylog(home, "replay", "parquet")
    assert done.returncode == 0, done.stderr
    assert "100% of the log" in done.stderr
    after = _rows(home, "select event_id, schema_version, answer_text from events order by event_id")
    assert after == before  # every event once, old ones still v1, answers as they were
    compacted = _querylog(home, "compact")
    assert compacted.returncode == 0, compacted.stderr
    assert _rows(home, "select event_id, schema_version, answer_text from events order by event_id") == before
