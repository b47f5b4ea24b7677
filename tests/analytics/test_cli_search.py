"""`querylog search`: brings the index up to date from the lake, then ranks; JSON and table output; clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from querylog.cli import main
from querylog.logging.events import QueryCompleted, QueryReceived
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

needs_search = pytest.mark.skipif(
    importlib.util.find_spec("querylog.analytics.search") is None,
    reason="querylog.analytics.search (the full-text index) is not in this tree yet",
)


@pytest.fixture
def lake(tmp_path: Path, make_lake: Callable[..., SampleLake]) -> SampleLake:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return make_lake(tmp_path / "home", end=end, days=3, per_hour=8)


def _search(lake: SampleLake, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[dict[str, Any]], str]:
    assert main(["--home", str(lake.home), "search", *args, "--format", "json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def _add_query(lake: SampleLake, query_id: str, text: str) -> None:
    ts = datetime.now(UTC) - timedelta(minutes=30)
    with ParquetSink(lake.lake) as sink:
        sink.write(
            Batch(
                events=[
                    QueryReceived(query_id=query_id, query_text=text, ts=ts),
                    QueryCompleted(
                        query_id=query_id, latency_ms=12.0, intent="news_inquiry", ts=ts + timedelta(seconds=1)
                    ),
                ],
                checkpoint={query_id: 1},
            )
        )


@needs_search
def test_json_results_are_ranked_objects_with_the_documented_fields(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    hits, err = _search(lake, capsys, "주가", "--limit", "5")
    assert f"indexed {len(lake.queries)} new queries" in err
    assert 0 < len(hits) <= 5
    for hit in hits:
        assert {"query_id", "query_text", "ts", "intent", "score"} <= set(hit)
        assert "주가" in hit["query_text"]
        datetime.fromisoformat(hit["ts"])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert (lake.home / "index").is_dir()
    assert any((lake.home / "index").iterdir())


@needs_search
def test_the_index_is_updated_incrementally_from_the_lake(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    _search(lake, capsys, "NVIDIA")
    hits, err = _search(lake, capsys, "NVIDIA")
    assert "indexed" not in err  # nothing new
    _add_query(lake, "new-1", "하이브 신곡 뉴스 알려줘")
    hits, err = _search(lake, capsys, "하이브")
    assert "indexed 1 new query" in err
    assert [h["query_id"] for h in hits] == ["new-1"]


@needs_search
def test_filters_by_intent_and_since(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    hits, _ = _search(lake, capsys, "news", "--intent", "news_inquiry", "--limit", "50")
    assert hits
    assert {h["intent"] for h in hits} == {"news_inquiry"}
    since = lake.end - timedelta(days=1)
    hits, _ = _search(lake, capsys, "news", "--since", since.isoformat(), "--limit", "50")
    assert all(datetime.fromisoformat(h["ts"]) >= since for h in hits)
    expected = [q for q in lake.queries if "news" in q.text.lower() and q.started_at >= since]
    assert len(hits) == len(expected)


@needs_search
def test_table_output_shows_korean_text(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(lake.home), "search", "삼성전자"]) == 0
    out = capsys.readouterr().out
    assert "삼성전자" in out
    assert "query_text" in out
    assert "rank" in out


@needs_search
def test_text_is_data_not_code(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    hits, _ = _search(lake, capsys, "' OR 1=1; DROP TABLE queries; --")
    assert hits == []
    hits, _ = _search(lake, capsys, "주가")
    assert hits  # nothing was dropped


@needs_search
def test_retention_prunes_the_index_too(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    before, _ = _search(lake, capsys, "주가", "--limit", "1000")
    assert main(["--home", str(lake.home), "compact", "--retention-days", "1"]) == 0
    assert "search index pruned" in capsys.readouterr().out
    after, _ = _search(lake, capsys, "주가", "--limit", "1000")
    boundary = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    assert 0 < len(after) < len(before)
    assert all(datetime.fromisoformat(h["ts"]) >= boundary for h in after)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--limit", "0"], "1-10000"),
        (["x", "--since", "last week"], "duration like 30m"),
        (["x", "--format", "xml"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path), "search", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_blank_text_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "search", "   "]) == 2
    assert "give some text" in capsys.readouterr().err


def test_without_the_search_module_it_says_so(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "querylog.analytics.search", None)  # makes the import fail
    assert main(["--home", str(lake.home), "search", "주가"]) == 1
    assert "full-text search is not available" in capsys.readouterr().err


@needs_search
def test_a_word_only_in_an_answer_is_found_in_answers_not_in_queries(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.logging.events import ResponseGenerated

    ts = datetime.now(UTC) - timedelta(minutes=20)
    with ParquetSink(lake.lake) as sink:
        sink.write(
            Batch(
                events=[
                    QueryReceived(query_id="ans-1", query_text="배당 일정 알려줘", ts=ts),
                    ResponseGenerated(query_id="ans-1", answer_text="현대모비스는 분기배당을 지급합니다", ts=ts),
                    QueryCompleted(query_id="ans-1", latency_ms=5.0, intent="news_inquiry", ts=ts),
                ],
                checkpoint={"answers": 1},
            )
        )
    rows, _ = _search(lake, capsys, "현대모비스")
    assert rows == []  # the questions never said it
    rows, err = _search(lake, capsys, "현대모비스", "--in", "answers")
    assert [(r["query_id"], r["query_text"], r["found_in"]) for r in rows] == [("ans-1", "배당 일정 알려줘", "answers")]
    assert "분기배당" in rows[0]["answer"] and "indexed" in err
    rows, _ = _search(lake, capsys, "배당", "--in", "both")
    assert [r["query_id"] for r in rows].count("ans-1") == 1  # in both indexes, listed once


@needs_search
def test_erasure_reaches_the_answers_index(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    from querylog.config import Settings
    from querylog.erase import erase
    from querylog.logging.events import ResponseGenerated

    ts = datetime.now(UTC) - timedelta(minutes=20)
    with ParquetSink(lake.lake) as sink:
        sink.write(
            Batch(
                events=[
                    QueryReceived(query_id="gone-1", query_text="내 질문", user_id="erin", ts=ts),
                    ResponseGenerated(query_id="gone-1", answer_text="에린에게만 한 답변", ts=ts),
                    QueryCompleted(query_id="gone-1", latency_ms=5.0, ts=ts),
                ],
                checkpoint={"erase": 1},
            )
        )
    assert len(_search(lake, capsys, "에린에게만", "--in", "answers")[0]) == 1
    erase(Settings(home=lake.home), user_ids=["erin"])
    capsys.readouterr()  # the erasure's own log lines
    assert _search(lake, capsys, "에린에게만", "--in", "answers")[0] == []
