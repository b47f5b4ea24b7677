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

from querylog.analytics.search_groups import question_key
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


def _search(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], *args: str, group: bool = False
) -> tuple[list[dict[str, Any]], str]:
    """`querylog search --format json`, one row per query (`--no-group`) unless `group`."""
    flags = [] if group else ["--no-group"]
    assert main(["--home", str(lake.home), "search", *args, *flags, "--format", "json"]) == 0
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
    until = lake.end - timedelta(days=2)  # a window in the past: --until, as the report takes it
    start = lake.end - timedelta(days=5)
    hits, _ = _search(
        lake, capsys, "news", "--since", start.isoformat(), "--until", until.isoformat(), "--limit", "500"
    )
    window = [q for q in lake.queries if "news" in q.text.lower() and start <= q.started_at]
    assert hits and all(datetime.fromisoformat(h["ts"]) < until for h in hits)
    assert len(hits) == len([q for q in window if q.started_at < until])


@needs_search
@pytest.mark.parametrize("group", [True, False])
def test_an_intent_no_query_has_is_said_with_the_intents_there_are(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], group: bool
) -> None:
    flags = [] if group else ["--no-group"]
    assert main(["--home", str(lake.home), "search", "news", "--intent", "news_inqiury", *flags]) == 0
    err = capsys.readouterr().err
    intents = sorted({q.intent for q in lake.queries if q.intent})
    assert "news_inquiry" in intents
    assert f"no query has intent 'news_inqiury'; the index holds {', '.join(intents)}" in err
    assert err.count("unclassified") == 1  # listed, or named once as the intent of queries without one
    # An intent some query has, and `unclassified`, are not called unknown when nothing matches.
    for intent in ("news_inquiry", "unclassified"):
        assert main(["--home", str(lake.home), "search", "zzzz-nothing", "--intent", intent, *flags]) == 0
        assert "no query has intent" not in capsys.readouterr().err


@needs_search
def test_table_output_shows_korean_text(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(lake.home), "search", "삼성전자"]) == 0
    out = capsys.readouterr().out
    assert "삼성전자" in out
    assert "query_text" in out
    assert "rank" in out


@needs_search
def test_a_full_page_of_results_says_how_to_see_more(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    """ "(2 rows)" looked like everything there was."""
    assert main(["--home", str(lake.home), "search", "삼성전자", "--no-group", "--limit", "2"]) == 0
    assert "the best 2 shown; --limit N shows more" in capsys.readouterr().err
    assert main(["--home", str(lake.home), "search", "삼성전자", "--no-group", "--limit", "10000"]) == 0
    assert "--limit N shows more" not in capsys.readouterr().err
    for grouping in (["--no-group"], []):  # exactly as many as match: nothing more to see
        assert main(["--home", str(lake.home), "search", "삼성전자", *grouping, "-f", "json", "-n", "10000"]) == 0
        n = len(json.loads(capsys.readouterr().out))
        assert main(["--home", str(lake.home), "search", "삼성전자", *grouping, "--limit", str(n)]) == 0
        assert "--limit N shows more" not in capsys.readouterr().err
        assert main(["--home", str(lake.home), "search", "삼성전자", *grouping, "--limit", str(n - 1)]) == 0
        assert f"the best {n - 1} shown; --limit N shows more" in capsys.readouterr().err
        # JSON too (on stderr): a script reading it was not told its rows were cut.
        assert main(["--home", str(lake.home), "search", "삼성전자", *grouping, "-f", "json", "-n", str(n - 1)]) == 0
        assert f"the best {n - 1} shown; --limit N shows more" in capsys.readouterr().err


@needs_search
def test_a_page_cut_at_the_most_limit_takes_says_to_narrow_the_search(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At --limit 10000, the most it takes, it said "--limit N shows more"."""
    import querylog.commands.search as command

    monkeypatch.setattr(command, "MAX_LIMIT", 2)
    assert main(["--home", str(lake.home), "search", "삼성전자", "--no-group", "--limit", "2"]) == 0
    err = capsys.readouterr().err
    assert "the best 2 shown; the most --limit takes: narrow the search" in err and "shows more" not in err


@needs_search
def test_no_match_names_every_filter_it_was_looked_for_within(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--env nope` and `--since 1m` said only "no queries match '1분기'", as if the text were the reason."""
    argv = ["search", "삼성전자", "--env", "nope", "--service", "a", "--service", "b", "--since", "2026-01-02"]
    assert main(["--home", str(lake.home), *argv, "--until", "2026-01-03T06:00:00+00:00"]) == 0
    said = capsys.readouterr().err
    assert (
        "no queries match '삼성전자' with env 'nope', service 'a' or 'b', since 2026-01-02 00:00 UTC, "
        "before 2026-01-03 06:00 UTC"
    ) in said


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
        (["x", "--since", "last week"], "duration like 90s, 30m"),
        (["x", "--since", "-7d"], "write 7d, not -7d"),  # not argparse's "expected one argument"
        (["x", "--since=-2w"], "write 2w, not -2w"),
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


def test_words_typed_without_quotes_are_one_text(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    """`querylog search 네이버 주가` stopped at "unrecognized arguments: 주가": a user types what they look for."""
    unquoted, _ = _search(lake, capsys, "네이버", "주가")
    quoted, _ = _search(lake, capsys, "네이버 주가")
    assert unquoted == quoted and unquoted


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
    (row,) = _search(lake, capsys, "현대모비스", "--in", "answers", group=True)[0]  # grouped: the answer too
    assert (row["query_text"], row["answer"]) == ("배당 일정 알려줘", "현대모비스는 분기배당을 지급합니다")


@needs_search
def test_every_question_that_got_the_same_answer_is_listed_when_grouped(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    """The answers' index returns each answer text once: three questions that got one canned answer were one row."""
    from querylog.logging.events import ResponseGenerated

    canned = "죄송합니다, 그 질문에는 답변할 수 없습니다."
    asked = ("비트코인 시세 알려줘", "오늘 날씨 어때?", "로또 번호 추천해줘")
    ts = datetime.now(UTC) - timedelta(minutes=20)
    with ParquetSink(lake.lake) as sink:
        for n, question in enumerate(asked):
            at = ts + timedelta(seconds=n)
            sink.write(
                Batch(
                    events=[
                        QueryReceived(query_id=f"canned-{n}", query_text=question, ts=at),
                        ResponseGenerated(query_id=f"canned-{n}", answer_text=canned, ts=at),
                        QueryCompleted(query_id=f"canned-{n}", latency_ms=5.0, intent="off_topic", ts=at),
                    ],
                    checkpoint={"canned": n + 1},
                )
            )
    for where in ("answers", "both"):
        rows, _ = _search(lake, capsys, "죄송합니다", "--in", where, group=True)
        assert sorted((r["query_text"], r["times_asked"], r["answer"]) for r in rows) == sorted(
            (q, 1, canned) for q in asked
        ), where


@needs_search
def test_a_question_listed_for_an_answer_it_got_is_listed_only_where_that_query_is_in_the_filters(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    """The expansion to every question that got an answer applied the dates only: a question that got the canned
    answer under another intent was listed for `--intent stock_analysis`, by a query that got a real answer."""
    from querylog.logging.events import ResponseGenerated

    canned = "죄송합니다, 그 질문에는 답변할 수 없습니다."
    asked = [
        ("c-1", "비트코인 시세 알려줘", canned, "off_topic"),
        ("c-2", "비트코인 시세 알려줘", "비트코인은 오늘 올랐습니다.", "stock_analysis"),
        ("c-3", "로또 번호 추천해줘", canned, "stock_analysis"),
        ("c-4", "비트코인 시세 알려줘", "비트코인은 내렸습니다.", None),  # unclassified
    ]
    ts = datetime.now(UTC) - timedelta(minutes=20)
    with ParquetSink(lake.lake) as sink:
        for n, (qid, question, answer, intent) in enumerate(asked):
            at = ts + timedelta(seconds=n)
            events = [QueryReceived(query_id=qid, query_text=question, ts=at)]
            events.append(ResponseGenerated(query_id=qid, answer_text=answer, ts=at))
            events.append(QueryCompleted(query_id=qid, latency_ms=5.0, intent=intent, ts=at))
            sink.write(Batch(events=events, checkpoint={"filtered": n + 1}))
    rows, _ = _search(lake, capsys, "죄송합니다", "--in", "answers", "--intent", "stock_analysis", group=True)
    assert [r["query_text"] for r in rows] == ["로또 번호 추천해줘"]
    rows, _ = _search(lake, capsys, "죄송합니다", "--in", "answers", group=True)
    assert sorted(r["query_text"] for r in rows) == ["로또 번호 추천해줘", "비트코인 시세 알려줘"]
    # A filter the lake applies (the index cannot: unclassified), and the hit's own query is outside it.
    assert _search(lake, capsys, "죄송합니다", "--in", "answers", "--intent", "unclassified", group=True)[0] == []


@needs_search
def test_an_answer_search_that_finds_nothing_says_when_answers_are_not_recorded(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--home", str(lake.home), "search", "없는단어", "--in", "answers"]) == 0
    assert "QUERYLOG_CAPTURE_ANSWERS" not in capsys.readouterr().err
    monkeypatch.setenv("QUERYLOG_CAPTURE_ANSWERS", "0")
    assert main(["--home", str(lake.home), "search", "없는단어", "--in", "answers"]) == 0
    assert "answers are not recorded here (QUERYLOG_CAPTURE_ANSWERS=0)" in capsys.readouterr().err


@needs_search
def test_an_answer_search_over_a_lake_without_answers_says_none_was_recorded(
    lake: SampleLake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lake an older release wrote (schema v1: no answers) said only "no answers match"."""
    assert main(["--home", str(lake.home), "search", "없는단어", "--in", "answers"]) == 0
    assert "has its answer recorded" not in capsys.readouterr().err  # this one has answers
    ts = datetime.now(UTC) - timedelta(hours=1)
    with ParquetSink(tmp_path / "old" / "lake") as sink:
        events = [QueryReceived(query_id="q-1", query_text="삼성전자 주가", ts=ts)]
        sink.write(Batch(events=[*events, QueryCompleted(query_id="q-1", latency_ms=5.0, ts=ts)], checkpoint={"a": 2}))
    assert main(["--home", str(tmp_path / "old"), "search", "삼성전자", "--in", "answers"]) == 0
    assert "no query in the lake has its answer recorded" in capsys.readouterr().err


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


def _ask(lake: SampleLake, asked: list[tuple[str, str, str, datetime]]) -> None:
    """(query_id, text, intent, when) for each query, written to the lake as a user's would be."""
    events: list[Any] = []
    for query_id, text, intent, ts in asked:
        events.append(QueryReceived(query_id=query_id, query_text=text, ts=ts))
        events.append(QueryCompleted(query_id=query_id, latency_ms=9.0, intent=intent, ts=ts + timedelta(seconds=1)))
    with ParquetSink(lake.lake) as sink:
        sink.write(Batch(events=events, checkpoint={"asked": len(asked)}))


@needs_search
def test_a_repeated_question_is_one_row_with_how_often_and_when(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    repeated = [
        (
            f"hynix-{i}",
            "SK하이닉스 사업 구조 설명해줘",
            "company_info" if i % 3 else "unknown",
            now - timedelta(hours=i),
        )
        for i in range(1, 31)
    ]
    spaced = [("hynix-spaced", "sk하이닉스  사업 구조   설명해줘", "company_info", now - timedelta(minutes=5))]
    other = [("hynix-other", "SK하이닉스 실적 발표 언제야", "stock_analysis", now - timedelta(minutes=2))]
    _ask(lake, repeated + spaced + other)
    rows, _ = _search(lake, capsys, "하이닉스", "--limit", "5", group=True)
    by_text = {question_key(r["query_text"]): r for r in rows}
    assert len(rows) == len(by_text)  # each question once
    structure = by_text[question_key("SK하이닉스 사업 구조 설명해줘")]
    assert structure["times_asked"] == 31  # more than --limit: counted over the lake, not over the page
    assert structure["query_text"] == "sk하이닉스  사업 구조   설명해줘"  # as most recently asked
    assert datetime.fromisoformat(structure["last_asked"]) == now - timedelta(minutes=5)
    assert datetime.fromisoformat(structure["first_asked"]) == now - timedelta(hours=30)
    assert structure["intents"] == ["company_info", "unknown"]
    assert structure["query_ids"][0] == "hynix-spaced" and set(structure["query_ids"]) == {
        q for q, *_ in repeated + spaced
    }
    assert by_text[question_key("SK하이닉스 실적 발표 언제야")]["times_asked"] == 1
    # --no-group: the queries one by one, newest first among equal scores
    rows, _ = _search(lake, capsys, "하이닉스 사업", "--limit", "3")
    assert [r["query_id"] for r in rows] == ["hynix-spaced", "hynix-1", "hynix-2"]


@needs_search
def test_grouped_counts_keep_to_the_intent_and_since_filters(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    _ask(
        lake,
        [("dup-1", "카카오뱅크 금리 알려줘", "news_inquiry", now - timedelta(days=2))]
        + [(f"dup-{i}", "카카오뱅크 금리 알려줘", "stock_analysis", now - timedelta(minutes=i)) for i in range(2, 5)],
    )
    rows, _ = _search(lake, capsys, "카카오뱅크", "--since", "1d", group=True)
    assert [(r["times_asked"], r["intents"]) for r in rows] == [(3, ["stock_analysis"])]
    rows, _ = _search(lake, capsys, "카카오뱅크", "--intent", "news_inquiry", group=True)
    assert [(r["times_asked"], r["query_ids"]) for r in rows] == [(1, ["dup-1"])]


@needs_search
def test_the_grouped_table_shows_times_asked(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    _ask(lake, [(f"t-{i}", "테슬라 주가 전망은?", "stock_analysis", now - timedelta(minutes=i)) for i in range(4)])
    assert main(["--home", str(lake.home), "search", "테슬라 전망"]) == 0
    out = capsys.readouterr().out
    assert "times_asked" in out and "테슬라 주가 전망은?" in out
    header = [cell.strip() for cell in out.splitlines()[1].split("|")]
    row = next(line for line in out.splitlines() if "테슬라 주가 전망은?" in line)
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[header.index("times_asked")] == "4" and cells[header.index("match")] == "exact"


@needs_search
def test_an_index_an_older_version_wrote_is_rebuilt_from_the_lake(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    _ask(lake, [("spaced-1", "삼성 전자 배당 일정", "news_inquiry", datetime.now(UTC) - timedelta(minutes=3))])
    first, err = _search(lake, capsys, "주가")
    assert f"indexed {len(lake.queries) + 1} new queries" in err
    for meta in (lake.home / "index").glob("*/meta.json"):  # as the previous release wrote them
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 2}))
    again, err = _search(lake, capsys, "주가")
    assert again == first
    assert f"indexed {len(lake.queries) + 1} new queries" in err  # all of them again, once
    assert "search_index_rebuilt" in err
    rows, err = _search(lake, capsys, "삼성전자 배당")
    assert [r["query_id"] for r in rows] == ["spaced-1"] and "indexed" not in err


@needs_search
def test_explain_says_why_each_row_matched(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    _ask(
        lake,
        [
            ("why-1", "삼성 전자 배당 일정", "news_inquiry", now - timedelta(minutes=3)),
            ("why-2", "삼성전자 배당금 얼마야", "news_inquiry", now - timedelta(minutes=2)),
        ],
    )
    rows, _ = _search(lake, capsys, "삼성전자 배당", "--explain")
    why = {r["query_id"]: r["why"] for r in rows}
    assert why["why-2"] == "삼성전자: starts a word; 배당: starts a word"  # 배당금 starts with 배당
    assert why["why-1"] == "삼성전자: across spacing; 배당: starts a word"
    order = [r["query_id"] for r in rows]
    assert order.index("why-2") < order.index("why-1")  # two word starts rank above one
    grouped, _ = _search(lake, capsys, "삼성전자 배당", "--explain", group=True)
    assert all(r["why"] for r in grouped)


@needs_search
def test_explain_says_a_name_typed_with_its_particle_was_found_as_the_name(
    lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    _ask(lake, [("np-1", "네이버 최근 뉴스 알려줘", "news_inquiry", datetime.now(UTC) - timedelta(minutes=1))])
    rows, _ = _search(lake, capsys, "네이버는 뉴스", "--explain")
    why = {r["query_id"]: r["why"] for r in rows}
    assert why["np-1"] == "네이버는: starts a word (as 네이버, its particle left off); 뉴스: starts a word"


@needs_search
def test_names_find_each_other_and_explain_says_how(lake: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    _ask(
        lake,
        [
            ("hm-1", "Hyundai Motor 전기차 판매", "news_inquiry", now - timedelta(minutes=5)),
            ("hm-2", "005380 목표주가", "stock_analysis", now - timedelta(minutes=4)),
            ("hm-3", "현대차증권 리포트", "news_inquiry", now - timedelta(minutes=3)),
            ("nv-1", "엔비디아 실적 발표", "news_inquiry", now - timedelta(minutes=2)),
        ],
    )
    rows, _ = _search(lake, capsys, "현대차", "--explain")
    why = {r["query_id"]: r["why"] for r in rows}
    assert why["hm-1"] == "현대차 → hyundai motor (alias of 현대자동차)"
    assert why["hm-2"] == "현대차 → 005380 (alias of 현대자동차)"
    assert "hm-3" not in why  # 현대차증권 is another company
    rows, _ = _search(lake, capsys, "엔비디야", "--explain")
    assert rows[0]["query_id"] == "nv-1"  # newest first within the tier
    # 엔비디아 is a company's name: its English name finds it too.
    assert {(r["why"], r["score"]) for r in rows} == {
        ("엔비디야 → 엔비디아 (typo)", -3),
        ("엔비디야 → nvidia (typo of NVIDIA)", -3),
    }
    assert {r["match"] for r in rows} == {"typo"}
    rows, _ = _search(lake, capsys, "ㅇㅂㄷㅇ", "--explain")
    assert ("nv-1", "ㅇㅂㄷㅇ → 엔비디아 (초성)", "initials") in [(r["query_id"], r["why"], r["match"]) for r in rows]
    # Grouped, each question says its tier too; in the table, beside the score.
    rows, _ = _search(lake, capsys, "현대차", group=True)
    tiers = {r["query_text"]: r["match"] for r in rows}
    assert tiers["Hyundai Motor 전기차 판매"] == "alias" and tiers["005380 목표주가"] == "alias"
    assert main(["--home", str(lake.home), "search", "ㅇㅂㄷㅇ"]) == 0
    table = capsys.readouterr().out
    header = [cell.strip() for cell in table.splitlines()[1].split("|")]
    row = next(line for line in table.splitlines() if "엔비디아 실적 발표" in line)
    assert [cell.strip() for cell in row.split("|")][header.index("match")] == "initials"
    for off in ("off", "OFF"):  # in any case, as QUERYLOG_ALIASES takes it: OFF was read as a file named OFF
        rows, _ = _search(lake, capsys, "현대차", "--aliases", off)
        assert {r["query_id"] for r in rows} >= {"hm-3"} and not {"hm-1", "hm-2"} & {r["query_id"] for r in rows}


@needs_search
def test_a_bad_alias_file_stops_the_search_with_its_line(
    lake: SampleLake, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "aliases.csv"
    bad.write_text('canonical,aliases,codes\n현대자동차,현대차,005380\n기아,"기아차,000270\n', encoding="utf-8")
    assert main(["--home", str(lake.home), "search", "현대차", "--aliases", str(bad)]) == 2
    assert f"{bad}:3: not a CSV line" in capsys.readouterr().err
    shared = tmp_path / "shared.csv"
    shared.write_text("canonical,aliases,codes\n삼성전자,삼성,005930\n삼성SDI,삼성,006400\n", encoding="utf-8")
    assert main(["--home", str(lake.home), "search", "삼성", "--aliases", str(shared)]) == 0
    assert "'삼성' names two companies (line 2: 삼성전자; line 3: 삼성SDI)" in capsys.readouterr().err


@needs_search
def test_search_counts_a_question_within_a_service_or_an_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two apps asking one question: `times_asked` added both, with no way to see one app's (report and the explorer
    filter by service)."""
    ts = datetime.now(UTC) - timedelta(hours=1)
    events = []
    for n, (service, env) in enumerate([("shop", "prod"), ("shop", "prod"), ("billing", "prod"), ("billing", "dev")]):
        common = {"query_id": f"q-{n}", "service": service, "env": env, "ts": ts}
        events += [QueryReceived(query_text="배송 언제 와요?", **common), QueryCompleted(latency_ms=5.0, **common)]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"a": len(events)}))
    for flags, asked in (([], 4), (["--service", "billing"], 2), (["--service", "billing", "--env", "prod"], 1)):
        assert main(["--home", str(tmp_path), "search", "배송", *flags, "--format", "json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["times_asked"] == asked, flags
    assert main(["--home", str(tmp_path), "search", "배송", "--service", "billing", "--no-group"]) == 2
    assert "not --no-group" in capsys.readouterr().err
