"""`SearchIndex.search(distinct=True, until=...)`: the best distinct texts in a time window, however often the
most popular one was asked (grouped search needs every question, not the newest 2,000 askings of one)."""

from __future__ import annotations

import json
import tempfile
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.analytics.test_search import _PROPERTY, T0, Row, _engine, brute_force, corpora

from querylog.analytics.queries import Filters, open_catalog
from querylog.analytics.search import SearchIndex
from querylog.analytics.search_groups import find_questions
from querylog.analytics.upkeep import LakeSearch
from querylog.cli import main
from querylog.logging.events import IntentClassified, QueryCompleted, QueryReceived
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch


def _distinct(ranked: list[tuple[str, float]], docs: list[Row]) -> list[tuple[str, float]]:
    """The brute-force ranking with each text kept once, at its best hit: its NFC form, as the index keeps it (a text
    typed decomposed is the same question)."""
    text_of = {query_id: unicodedata.normalize("NFC", text) for query_id, _, _, text in docs}
    seen: set[str] = set()
    out = []
    for query_id, score in ranked:
        if text_of[query_id] not in seen:
            seen.add(text_of[query_id])
            out.append((query_id, score))
    return out


def _segmented(directory: Path, docs: list[Row], split: int) -> SearchIndex:
    """The corpus in two segments, a committed one and the uncommitted rest, whose times overlap: a text's best
    hit may then be walked after a worse one."""
    index = SearchIndex(directory)
    index.add(docs[:split])
    index.commit()
    index.add(docs[split:])
    return index


def _popular(index: SearchIndex) -> None:
    """2,100 askings of one question, newest; two rarer questions asked before them."""
    rows: list[Row] = [
        (f"pop-{i}", T0 + timedelta(days=10, seconds=-i), None, "삼성전자 주가 알려줘") for i in range(2100)
    ]
    rows += [(f"old-{i}", T0 + timedelta(days=5, hours=-i), None, "삼성전자 옛날 질문") for i in range(5)]
    rows += [(f"prod-{i}", T0 + timedelta(days=3, hours=-i), "stock", "삼성전자 프로드 질문") for i in range(3)]
    index.add(rows)


def test_a_popular_text_takes_one_place_among_distinct_hits(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path / "index")
    _popular(index)
    assert {h.query_text for h in index.search("삼성전자", limit=2000)} == {"삼성전자 주가 알려줘"}  # the bug
    hits = index.search("삼성전자", limit=5, distinct=True)
    assert [h.query_id for h in hits] == ["pop-0", "old-0", "prod-0"]  # each text by its newest asking
    index.commit()
    assert [h.query_id for h in SearchIndex(tmp_path / "index").search("삼성전자", limit=2, distinct=True)] == [
        "pop-0",
        "old-0",
    ]


def test_a_text_is_shown_by_its_best_hit_when_a_worse_one_is_walked_first(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path / "index")
    # The committed segment is the newest (walked first) but holds the older asking of 네이버 주가.
    index.add(
        [("x", T0 + timedelta(hours=5), None, "네이버 실적"), ("t-old", T0 + timedelta(hours=1), None, "네이버 주가")]
    )
    index.commit()
    index.add([("t-new", T0 + timedelta(hours=4), None, "네이버 주가")])
    assert [h.query_id for h in index.search("네이버", limit=2, distinct=True)] == ["x", "t-new"]


def test_until_keeps_hits_before_it_and_is_exclusive(tmp_path: Path) -> None:
    index = SearchIndex(tmp_path / "index")
    _popular(index)
    index.commit()
    index.add([("late", T0 + timedelta(days=20), None, "삼성전자 늦은 질문")])  # a second, uncommitted segment
    until = T0 + timedelta(days=5)  # old-0 was asked at exactly this instant: left out
    hits = index.search("삼성전자", limit=10, until=until, distinct=True)
    assert [h.query_id for h in hits] == ["old-1", "prod-0"]
    assert all(h.ts < until for h in index.search("삼성전자", limit=3000, until=until))
    assert [h.query_id for h in index.search("삼성전자", limit=1, until=T0 + timedelta(days=10, seconds=-5))] == [
        "pop-6"
    ]
    assert index.search("삼성전자", limit=5, since=until, until=until) == []


@pytest.mark.parametrize("dense_min", [1 << 30, 3])
@_PROPERTY
@given(case=corpora(), data=st.data())
def test_distinct_results_in_a_window_equal_a_brute_force_scan(
    dense_min: int, case: tuple[list[Row], str], data: st.DataObject
) -> None:
    docs, query = case
    for j, (_, _, intent_of, text) in enumerate(data.draw(st.lists(st.sampled_from(docs), max_size=12))):
        hour = data.draw(st.integers(0, 5))  # the same text asked again, at another time, maybe another intent
        docs = [*docs, (f"c{j:02d}", T0 + timedelta(hours=hour), data.draw(st.sampled_from([intent_of, "a"])), text)]
    intent = data.draw(st.sampled_from([None, "a"]))
    since = data.draw(st.sampled_from([None, T0 + timedelta(hours=1)]))
    until: datetime | None = data.draw(st.sampled_from([None, T0 + timedelta(hours=3), T0 + timedelta(hours=5)]))
    distinct = data.draw(st.booleans())
    limit = data.draw(st.sampled_from([1, 2, 3, 1000]))
    split = data.draw(st.integers(0, len(docs)))
    with _engine(dense_min), tempfile.TemporaryDirectory() as tmp:
        index = _segmented(Path(tmp), docs, split)
        found = index.search(query, limit=limit, intent=intent, since=since, until=until, distinct=distinct)
        got = [(h.query_id, h.score) for h in found]
    window = [d for d in docs if until is None or d[1] < until]
    expected = brute_force(window, query, intent, since)
    assert got == (_distinct(expected, docs) if distinct else expected)[:limit]


# -- grouped search over a lake: `find_questions` and `querylog search` -------------------------------------
def _lake_with(home: Path, asked: list[tuple[str, str, datetime, str]]) -> None:
    """(query_id, text, ts, env) queries, each received and completed, in the lake under `home`."""
    events: list[Any] = []
    for query_id, text, ts, env in asked:
        events.append(QueryReceived(query_id=query_id, query_text=text, ts=ts, env=env))
        events.append(QueryCompleted(query_id=query_id, latency_ms=9.0, intent="stock", ts=ts, env=env))
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"asked": len(asked)}))


NOW = datetime.now(UTC).replace(microsecond=0)


def test_querylog_search_lists_each_question_however_often_another_was_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With 2,100 askings of one question, `--limit 5` listed 1 of the 3 questions (it looked at 200 hits)."""
    asked = [(f"pop-{i}", "삼성전자 주가 알려줘", NOW - timedelta(minutes=1, seconds=i), "prod") for i in range(2100)]
    asked += [(f"old-{i}", "삼성전자 옛날 질문", NOW - timedelta(days=1, hours=i), "prod") for i in range(5)]
    asked += [(f"prod-{i}", "삼성전자 프로드 질문", NOW - timedelta(days=2, hours=i), "prod") for i in range(3)]
    _lake_with(tmp_path / "home", asked)
    assert main(["--home", str(tmp_path / "home"), "search", "삼성전자", "--limit", "5", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["query_text"], r["times_asked"]) for r in rows] == [
        ("삼성전자 주가 알려줘", 2100),
        ("삼성전자 옛날 질문", 5),
        ("삼성전자 프로드 질문", 3),
    ]


def test_every_spelling_of_a_question_is_counted_however_few_questions_are_asked_for(tmp_path: Path) -> None:
    """The question asked 3 times lately as SK하이닉스 and twice, hours before, as ＳＫ하이닉스 (full width), with eight
    other questions asked in between: with a limit of 1 it said 3 times, first asked half an hour ago; with 10, 5."""
    asked = [(f"new-{i}", "재현둘 SK하이닉스 실적", NOW - timedelta(minutes=30, seconds=i), "prod") for i in range(3)]
    asked += [(f"old-{i}", "재현둘 ＳＫ하이닉스 실적", NOW - timedelta(hours=5, seconds=i), "prod") for i in range(2)]
    asked += [(f"x-{i}", f"재현둘 다른 질문 {i}", NOW - timedelta(hours=2, minutes=i), "prod") for i in range(8)]
    home = tmp_path / "home"
    _lake_with(home, asked)
    with open_catalog(home / "lake") as catalog:
        search = LakeSearch(home)
        search.sync(catalog)
        for limit in (1, 10):
            best = find_questions(catalog, [search], "재현둘", limit=limit)[0]  # every question matches alike
            assert (best.times_asked, best.first_asked) == (5, NOW - timedelta(hours=5, seconds=1)), limit
            assert sorted(best.query_ids) == sorted(qid for qid, text, *_ in asked if "하이닉스" in text)


def test_questions_outside_the_env_are_passed_over_until_enough_are_found(tmp_path: Path) -> None:
    """30 questions asked in staging, newest; the two asked in prod are found below them, in their order."""
    asked = [(f"s-{i}", f"카카오 질문 {i}번", NOW - timedelta(hours=1, minutes=i), "staging") for i in range(30)]
    asked += [("p-1", "카카오 프로드 하나", NOW - timedelta(days=1), "prod")]
    asked += [("p-2", "카카오 프로드 둘", NOW - timedelta(days=2), "prod"), ("p-3", "카카오 프로드 둘", NOW, "staging")]
    home = tmp_path / "home"
    _lake_with(home, asked)
    with open_catalog(home / "lake") as catalog:
        search = LakeSearch(home)
        search.sync(catalog)
        found = find_questions(catalog, [search], "카카오", limit=5, filters=Filters(envs=("prod",)))
        assert [(q.query_text, q.times_asked, q.query_ids) for q in found] == [
            ("카카오 프로드 하나", 1, ("p-1",)),
            ("카카오 프로드 둘", 1, ("p-2",)),  # its staging asking, newer, neither counted nor shown
        ]
        staging = find_questions(catalog, [search], "카카오", limit=3, filters=Filters(envs=("staging",)))
        assert [q.query_text for q in staging] == ["카카오 프로드 둘", "카카오 질문 0번", "카카오 질문 1번"]


def test_a_question_is_not_listed_for_an_answer_only_its_queries_outside_the_env_got(tmp_path: Path) -> None:
    """The canned answer went to a staging query; the same question asked in prod got a real answer. Searching the
    answers in prod listed the question by the staging query's answer."""
    from querylog.logging.events import ResponseGenerated

    canned = "죄송합니다, 답변할 수 없습니다."
    home = tmp_path / "home"
    events: list[Any] = []
    for qid, env, answer in (("st-1", "staging", canned), ("pr-1", "prod", "비트코인은 올랐습니다.")):
        events.append(QueryReceived(query_id=qid, query_text="비트코인 시세 알려줘", ts=NOW, env=env))
        events.append(ResponseGenerated(query_id=qid, answer_text=answer, ts=NOW, env=env))
        events.append(QueryCompleted(query_id=qid, latency_ms=9.0, intent="stock", ts=NOW, env=env))
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"asked": len(events)}))
    with open_catalog(home / "lake") as catalog:
        search = LakeSearch(home, field="answers")
        search.sync(catalog)
        assert find_questions(catalog, [search], "죄송합니다", limit=5, filters=Filters(envs=("prod",))) == []
        (staging,) = find_questions(catalog, [search], "죄송합니다", limit=5, filters=Filters(envs=("staging",)))
        assert (staging.query_text, staging.query_ids, staging.answer) == ("비트코인 시세 알려줘", ("st-1",), canned)


def test_a_grouped_question_has_the_intent_its_query_ended_with_as_the_queries_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Classified news_inquiry, completed as stock_analysis (the final word): the grouped search listed it under
    the classifier's intent, and `--intent stock_analysis` did not find it, while `--no-group` and `sql` did."""
    home = tmp_path / "home"
    common: dict[str, Any] = {"query_id": "x-1", "ts": NOW - timedelta(minutes=5)}
    events = [
        QueryReceived(query_text="환율 전망 알려줘", **common),
        IntentClassified(intent="news_inquiry", confidence=0.6, **common),
        QueryCompleted(latency_ms=9.0, intent="stock_analysis", **common),
    ]
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"asked": 1}))
    base = ["--home", str(home), "search", "환율", "--format", "json"]
    assert main([*base, "--intent", "stock_analysis"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["intents"] == ["stock_analysis"]
    assert main([*base, "--intent", "news_inquiry"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # not under the classifier's first guess
