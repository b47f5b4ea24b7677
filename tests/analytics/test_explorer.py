"""The Streamlit explorer under `streamlit.testing`: real data from a generated lake, filters, search, timelines."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from querylog.analytics.explorer import _ms_format, highlight_html, highlight_spans, shown_answer, trace_url
from querylog.commands.ui import explorer_path
from querylog.logging.events import IntentClassified, QueryCompleted, QueryReceived
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

TIMEOUT = 60  # seconds a script run may take on a slow machine; a run takes a few seconds


def _app(home: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    monkeypatch.delenv("LANGFUSE_HOST", raising=False)
    at = AppTest.from_file(str(explorer_path()), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _chart_data(at: AppTest, index: int) -> tuple[dict[str, Any], pa.Table]:
    proto = at.get("vega_lite_chart")[index].proto
    return json.loads(proto.spec), pa.ipc.open_stream(proto.datasets[0].data.data).read_all()


def _metric(at: AppTest, label: str) -> str:
    return next(str(m.value) for m in at.metric if m.label == label)


def _frames(at: AppTest) -> list[Any]:
    return [d.value for d in at.dataframe]


@pytest.fixture(scope="module")
def explorer(sample_lake: SampleLake) -> Iterator[AppTest]:
    with pytest.MonkeyPatch.context() as mp:
        yield _app(sample_lake.home, mp)


# -- pure helpers -----------------------------------------------------------------------------------------
def test_highlight_marks_korean_words_without_their_particles() -> None:
    spans = highlight_spans("네이버 주가 전망은?", "네이버는 주가")
    assert [s for s, on in spans if on] == ["네이버", "주가"]
    assert "".join(s for s, _ in spans) == "네이버 주가 전망은?"


def test_highlight_is_case_insensitive_for_latin_and_needs_whole_words() -> None:
    assert [s for s, on in highlight_spans("Latest news about NVIDIA", "nvidia NEWS") if on] == ["news", "NVIDIA"]
    assert not any(on for _, on in highlight_spans("Latest news", "newspaper"))


def test_highlight_marks_what_search_matched_in_the_form_search_compares() -> None:
    """Search finds ＳＫ하이닉스 for SK하이닉스, ①분기 for 1분기 and 삼성 전자 for 삼성전자; the page marked nothing of them
    (or only 삼성)."""

    def marked(text: str, query: str) -> list[str]:
        return [s for s, on in highlight_spans(text, query) if on]

    assert marked("ＳＫ하이닉스 １분기 실적", "SK하이닉스 1분기") == ["ＳＫ하이닉스", "１분기"]
    assert marked("ＮＶＩＤＩＡ earnings", "nvidia") == ["ＮＶＩＤＩＡ"]
    assert marked("①분기 실적 요약", "1분기") == ["①분기"]
    assert marked("삼성 전자 주가", "삼성전자") == ["삼성", "전자"]  # the space between stays unmarked
    assert marked("삼성\u200b전자 주가", "삼성전자의") == ["삼성\u200b전자"]
    assert "".join(s for s, _ in highlight_spans("ＳＫ하이닉스 １분기", "sk")) == "ＳＫ하이닉스 １분기"


def test_highlight_html_escapes_the_text_and_the_query() -> None:
    out = highlight_html("<b>삼성</b> & (주가)?", "(주가 <b>")
    assert out == "&lt;<mark>b</mark>&gt;삼성&lt;/<mark>b</mark>&gt; &amp; (<mark>주가</mark>)?"


def test_trace_url_needs_a_host_and_an_id() -> None:
    assert trace_url("abc", "https://lf.example/") == "https://lf.example/trace/abc"
    assert trace_url(None, "https://lf.example") is None
    # A producer's id names one path segment: no Markdown link of its own, no other page.
    assert trace_url("abc) [evil](http://evil.example/x", "https://lf.example") == (
        "https://lf.example/trace/abc%29%20%5Bevil%5D%28http%3A%2F%2Fevil.example%2Fx"
    )
    assert trace_url("abc", "") is None


# -- the app ----------------------------------------------------------------------------------------------
def test_the_page_renders_without_exceptions_and_shows_the_lake(explorer: AppTest, sample_lake: SampleLake) -> None:
    assert not explorer.exception
    assert not explorer.error
    assert _metric(explorer, "Queries") == f"{len(sample_lake.queries):,}"
    assert [t.label for t in explorer.tabs] == [
        "Trends",
        "Latency",
        "Stages & errors",
        "Search",
        "Queries",
        "Sessions & feedback",
    ]


def test_the_intent_trend_chart_holds_the_real_counts(explorer: AppTest, sample_lake: SampleLake) -> None:
    spec, data = _chart_data(explorer, 0)
    assert spec["encoding"]["x"]["field"] == "bucket"
    assert spec["encoding"]["color"]["field"] == "intent"
    rows = data.to_pylist()
    totals: Counter[str] = Counter()
    for row in rows:
        totals[row["intent"]] += row["queries"]
    assert totals == Counter(q.intent for q in sample_lake.queries)
    # The bucket is an hour or a day, by the length of the default date range (which depends on the hour the
    # sample lake was written): count the lake's queries in whichever the chart used.
    hourly = any(row["bucket"].hour for row in rows)

    def bucket(ts: datetime) -> datetime:
        return (
            ts.replace(minute=0, second=0, microsecond=0)
            if hourly
            else ts.replace(hour=0, minute=0, second=0, microsecond=0)
        )

    per_bucket = Counter((bucket(q.started_at), q.intent) for q in sample_lake.queries)
    assert all(row["queries"] == per_bucket.get((row["bucket"], row["intent"]), 0) for row in rows)


def test_tables_show_korean_text_and_the_timeline_of_a_query(explorer: AppTest) -> None:
    frames = _frames(explorer)
    top = next(f for f in frames if "no_results" in f.columns)
    assert any("주가" in t or "뉴스" in t for t in top["query_text"])
    timeline = next(f for f in frames if "event_type" in f.columns)
    assert timeline["event_type"].iloc[0] == "query_received"
    assert list(timeline["offset_ms"]) == sorted(timeline["offset_ms"])
    funnel = next(f for f in frames if "step" in f.columns)
    assert list(funnel["step"]) == ["received", "classified", "searched", "answered", "completed"]
    # Each event type has its colour in every timeline, not one by the types a query holds (which changed them).
    charts = [json.loads(c.proto.spec) for c in explorer.get("vega_lite_chart")]
    (drawn,) = [c for c in charts if c.get("layer") and "event_type" in json.dumps(c["layer"][0]["encoding"])]
    assert drawn["layer"][0]["encoding"]["color"]["scale"]["domain"][:2] == ["query_received", "intent_classified"]
    # The rows name the types; a legend of that domain listed the ones this query lacks.
    assert drawn["layer"][0]["encoding"]["color"]["legend"] is None


def test_filters_change_the_numbers(sample_lake: SampleLake, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(sample_lake.home, monkeypatch)
    everything = _metric(at, "Queries")
    at.sidebar.multiselect(key="intents").set_value(["news_inquiry"]).run()
    assert not at.exception
    news = len(sample_lake.truth(intent="news_inquiry"))
    assert _metric(at, "Queries") == f"{news:,}" != everything
    _, data = _chart_data(at, 0)
    assert set(data.column("intent").to_pylist()) == {"news_inquiry"}
    at.sidebar.multiselect(key="envs").set_value(["staging"]).run()
    assert _metric(at, "Queries") == f"{len(sample_lake.truth(intent='news_inquiry', env='staging')):,}"
    at.sidebar.multiselect(key="intents").set_value([]).run()
    at.sidebar.multiselect(key="envs").set_value([]).run()
    day = sample_lake.start.date() + timedelta(days=1)
    at.sidebar.date_input(key="dates").set_value((day, day)).run()
    assert not at.exception
    on_day = [q for q in sample_lake.queries if q.started_at.date() == day]
    assert _metric(at, "Queries") == f"{len(on_day):,}"


def test_langfuse_host_turns_trace_ids_into_links(sample_lake: SampleLake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYLOG_HOME", str(sample_lake.home))
    monkeypatch.setenv("LANGFUSE_HOST", "https://langfuse.example")
    at = AppTest.from_file(str(explorer_path()), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    recent = next(f for f in _frames(at) if "trace" in f.columns)
    links = [u for u, t in zip(recent["trace"], recent["trace_id"], strict=True) if isinstance(t, str)]
    assert links
    assert all(u.startswith("https://langfuse.example/trace/") for u in links)


@pytest.fixture
def own_lake(tmp_path: Path, make_lake: Callable[..., SampleLake]) -> SampleLake:
    """Searching writes an index under the home: not into the shared lake."""
    return make_lake(tmp_path / "home", end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0), days=2)


@pytest.mark.skipif(
    importlib.util.find_spec("querylog.analytics.search") is None,
    reason="querylog.analytics.search (the full-text index) is not in this tree yet",
)
def test_search_shows_ranked_highlighted_results(own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input("삼성전자 주가").run()
    assert not at.exception
    results = [h.proto.body for h in at.get("html")]
    assert results
    assert all("<mark>삼성전자</mark>" in r and "<mark>주가</mark>" in r for r in results)
    assert any(re.match(r"\d+ distinct questions?, best match first", c.value) for c in at.caption)
    # One row per distinct question, with how often it was asked: together, every matching query.
    matching = [q for q in own_lake.queries if "삼성전자 주가" in q.text]
    counts = [int(re.search(r"×(\d+)", r).group(1)) for r in results]  # type: ignore[union-attr]
    assert len(results) == len({q.text for q in matching}) and sum(counts) == len(matching)
    # The sidebar filters apply to search results and to the counts.
    at.sidebar.multiselect(key="envs").set_value(["staging"]).run()
    staging = [q for q in matching if q.env == "staging"]
    counts = [int(re.search(r"×(\d+)", h.proto.body).group(1)) for h in at.get("html")]  # type: ignore[union-attr]
    assert sum(counts) == len(staging)
    # One row per query, when asked for.
    at.toggle(key="search_ungrouped").set_value(True).run()
    assert len(at.get("html")) == min(len(staging), 50)
    assert any(re.search(r"results?( \(more match: narrow the search\))?, best first", c.value) for c in at.caption)


@pytest.mark.skipif(
    importlib.util.find_spec("querylog.analytics.search") is None,
    reason="querylog.analytics.search (the full-text index) is not in this tree yet",
)
def test_search_finds_a_company_by_another_name_and_says_so(
    own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input("삼전").run()  # nobody typed 삼전: the starter alias file knows it
    assert not at.exception
    results = [h.proto.body for h in at.get("html")]
    assert results and all("(alias of 삼성전자)" in r for r in results)
    assert any("삼전 → 삼성전자 (alias of 삼성전자)" in r for r in results)
    # What matched in the alias's place is highlighted: nothing was, since 삼전 is in no question.
    assert all("<mark>" in r for r in results) and any("<mark>삼성전자</mark>" in r for r in results)
    counts = [int(re.search(r"×(\d+)", r).group(1)) for r in results]  # type: ignore[union-attr]
    about = [q for q in own_lake.queries if "삼성전자" in q.text or "samsung electronics" in q.text.lower()]
    assert sum(counts) == len(about)
    # A broken alias file is named, and search still answers.
    bad = tmp_path / "aliases.csv"
    bad.write_text("canonical,aliases\n", encoding="utf-8")
    monkeypatch.setenv("QUERYLOG_ALIASES", str(bad))
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    assert not at.exception
    assert any(f"{bad}:1: the first line must be the header" in w.value for w in at.warning)
    assert at.get("html")


@pytest.mark.skipif(
    importlib.util.find_spec("querylog.analytics.search") is None,
    reason="querylog.analytics.search (the full-text index) is not in this tree yet",
)
def test_search_in_answers_finds_what_only_the_answers_say(
    own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input("요약 답변입니다").run()  # every sample answer ends so; no question does
    assert not at.exception
    assert at.get("html") == [] and any("No queries match" in i.value for i in at.info)
    at.radio(key="search_in").set_value("answers").run()  # the choices are "questions" and "answers"
    assert not at.exception
    answered = [q for q in own_lake.queries if q.status == "completed"]
    assert len(at.get("html")) == min(len({q.text for q in answered}), 50)  # the questions whose answers match
    at.toggle(key="search_ungrouped").set_value(True).run()
    assert len(at.get("html")) == min(len(answered), 50)
    assert all("<mark>" in h.proto.body and "요약" in h.proto.body for h in at.get("html"))


def test_search_degrades_to_a_message_without_the_index_module(
    own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "querylog.analytics.search", None)  # makes the import fail
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input("주가").run()
    assert not at.exception
    assert any("Search is unavailable" in w.value for w in at.warning)
    assert _metric(at, "Queries") == f"{len(own_lake.queries):,}"  # the rest of the page still works


@pytest.mark.parametrize("quotes", ['""', "' '", '" "'])
def test_a_search_of_quotes_alone_is_told_to_give_some_text(
    own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch, quotes: str
) -> None:
    """It said "No queries match this search in this selection", as if the lake held none; the CLI refuses it."""
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input(quotes).run()
    assert not at.exception and not at.get("html")
    assert [w.value for w in at.warning] == ["Give some text to look for: quotes alone match nothing."]


def test_a_query_id_typed_in_the_search_box_is_pointed_to_the_query_id_field(
    own_lake: SampleLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query id in the Search box said "No queries match" and no more: search reads what was asked, and the page
    did not say where an id goes."""
    at = _app(own_lake.home, monkeypatch)
    at.text_input(key="search").input(own_lake.queries[0].query_id).run()
    assert not at.exception
    assert any("No queries match" in i.value for i in at.info)
    assert any("**Query id** in the Queries tab" in c.value for c in at.caption)
    at.text_input(key="search").input("zzzz 없는 질문").run()  # words that match nothing: no such hint
    assert not any("Query id" in c.value for c in at.caption)


def test_an_empty_lake_shows_how_to_get_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(tmp_path / "empty", monkeypatch)
    # The command fills the home the page reads, not ./.querylog: a mistyped --home is the other way out.
    assert any(f"querylog --home {tmp_path / 'empty'} serve --demo 200" in i.value for i in at.info)
    assert any("does not exist" in i.value for i in at.info)  # a mistyped --home is no empty lake
    (tmp_path / "made").mkdir()
    assert any("is empty" in i.value for i in _app(tmp_path / "made", monkeypatch).info)


def test_a_lake_that_reaches_back_to_year_1_renders_over_its_whole_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event of year 1 (Go's zero time, which /v1/events took before it refused times before 1970): picking the
    lake's whole range failed the page with OverflowError, computing the window before it."""
    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    home = tmp_path / "home"
    now = datetime.now(UTC) - timedelta(minutes=5)
    zero = datetime(1, 1, 1, tzinfo=UTC)
    with ParquetSink(home / "lake") as sink:
        for n, at_ in enumerate((zero, now)):
            events = [QueryReceived(query_id=f"q-{n}", query_text="hello", ts=at_)]
            events.append(QueryCompleted(query_id=f"q-{n}", latency_ms=3.0, ts=at_))
            sink.write(Batch(events=events, checkpoint={"q": n + 1}))
    at = _app(home, monkeypatch)
    dates = at.sidebar.date_input(key="dates")
    dates.set_value((zero.date(), now.date())).run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metric(at, "Queries") == "2"


def test_a_bad_setting_is_shown_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path))
    monkeypatch.setenv("QUERYLOG_RETENTION_DAYS", "soon")
    at = AppTest.from_file(str(explorer_path()), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert any("QUERYLOG_RETENTION_DAYS" in e.value for e in at.error)


def test_recent_queries_are_newest_first_in_utc(explorer: AppTest) -> None:
    recent = next(f for f in _frames(explorer) if "status" in f.columns and "query_id" in f.columns)
    started = [t.to_pydatetime() for t in recent["started_at"]]
    assert all(isinstance(t, datetime) and t.tzinfo is not None for t in started)
    assert started == sorted(started, reverse=True)
    assert datetime.now(UTC) - started[0] < timedelta(days=2)


# -- `querylog ui` ----------------------------------------------------------------------------------------
class _FakeStreamlit:
    launched: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.launched.append((cmd, env))

    def wait(self) -> int:
        return 0

    def terminate(self) -> None:
        pass


def test_ui_runs_streamlit_headless_on_localhost_with_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from querylog.cli import main

    monkeypatch.setattr("querylog.commands.ui.subprocess.Popen", _FakeStreamlit)
    monkeypatch.chdir(tmp_path)
    assert main(["--home", "data", "ui", "--port", "8600"]) == 0
    cmd, env = _FakeStreamlit.launched[-1]
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert Path(cmd[4]) == explorer_path()
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert env["QUERYLOG_HOME"] == str(tmp_path / "data")
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8600" in err
    assert f"{Path('data')} does not exist: is --home" in err  # a typo was not said


def test_ui_stopped_by_ctrl_c_answers_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: 130 on Ctrl-C; `querylog ui` stopped Streamlit and said 0."""
    from querylog.cli import main

    class Interrupted(_FakeStreamlit):
        terminated = False

        def wait(self) -> int:
            if not self.terminated:
                raise KeyboardInterrupt
            return -signal.SIGTERM

        def terminate(self) -> None:
            self.terminated = True

    monkeypatch.setattr("querylog.commands.ui.subprocess.Popen", Interrupted)
    assert main(["--home", str(tmp_path), "ui", "--port", "8600"]) == 130


def test_ui_refuses_a_bad_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from querylog.cli import main

    assert main(["--home", str(tmp_path), "ui", "--port", "70000"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err


def test_the_timeline_shows_the_answer_and_its_sources(explorer: AppTest, sample_lake: SampleLake) -> None:
    from tests.analytics.conftest import sample_answer

    by_id = {q.query_id: q for q in sample_lake.queries}
    answered = next(
        q
        for q in sorted(sample_lake.queries, key=lambda q: q.started_at, reverse=True)
        if q.status == "completed" and q.result_count
    )
    explorer.selectbox(key="timeline_query").set_value(answered.query_id).run()
    assert not explorer.exception
    assert sample_answer(answered.text) in [t.value for t in explorer.text]
    sources = next(f for f in _frames(explorer) if "doc_id" in f.columns)
    assert list(sources["rank"]) == list(range(1, answered.result_count + 1))
    assert sources["title"].iloc[0] == f"{answered.text} 관련 기사 1"
    assert any("finish: stop" in c.value for c in explorer.text)  # as text, not Markdown
    failed = next(q for q in sample_lake.queries if q.status == "failed" and q.failed_stage == "generate")
    explorer.selectbox(key="timeline_query").set_value(failed.query_id).run()
    assert sample_answer(by_id[failed.query_id].text) not in [t.value for t in explorer.text]  # never answered


def _write(home: Path, events: list[Any]) -> None:
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"explorer": len(events)}))


def test_one_hour_of_data_draws_bars_a_month_draws_areas_with_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_lake: Callable[..., SampleLake]
) -> None:
    end = datetime(2026, 11, 20, 15, tzinfo=UTC)  # in the past: the default dates find the data by themselves
    hour = make_lake(tmp_path / "hour", end=end, days=0, hours=(14,), per_hour=30)
    at = _app(hour.home, monkeypatch)
    spec, data = _chart_data(at, 0)
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["x"]["type"] == "ordinal"  # a bar shows one bucket
    assert data.num_rows > 0 and _metric(at, "Queries") == f"{len(hour.queries):,}"
    errors, _ = _chart_data(at, 2)  # the error rate: it was a lone dot
    assert errors["encoding"]["y"]["field"] == "error_rate" and errors["mark"]["type"] == "bar"
    month = make_lake(tmp_path / "month", end=end, days=30, per_hour=2)
    at = _app(month.home, monkeypatch)
    spec, _ = _chart_data(at, 0)
    assert spec["mark"]["type"] == "area" and spec["mark"]["point"] is True
    errors, _ = _chart_data(at, 2)
    assert errors["mark"]["type"] == "line" and errors["mark"]["point"] is True
    assert _metric(at, "Queries") == f"{len(month.queries):,}"


def test_intent_shares_are_bars_as_wide_as_their_bucket_so_a_day_between_empty_ones_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day with data between empty ones: the share chart was areas, which cannot be drawn through such a day, and
    showed it as dots only."""
    from querylog.logging.events import QueryCompleted, QueryReceived

    end = datetime(2026, 11, 20, 15, tzinfo=UTC)
    days = (5, 2, 1, 0)
    events: list[Any] = []
    for back in days:
        for n, intent in enumerate(("stock_analysis", "news_inquiry")):
            ts, qid = end - timedelta(days=back, minutes=n), f"q-{back}-{n}"
            events += [QueryReceived(query_id=qid, query_text="네이버 주가", ts=ts)]
            events += [QueryCompleted(query_id=qid, latency_ms=5.0, intent=intent, ts=ts)]
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    at.sidebar.date_input(key="dates").set_value(((end - timedelta(days=5)).date(), end.date())).run()
    spec, data = _chart_data(at, 1)
    # Each intent a band from and to: a bar given its width as a range is not stacked (they were thin strips).
    assert (spec["encoding"]["y"]["field"], spec["encoding"]["y2"]["field"]) == ("share_from", "share_to")
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["x2"]["field"] == "bucket_end"
    assert spec["encoding"]["x"]["scale"]["type"] == "utc"  # the browser's zone otherwise
    rows = data.to_pylist()
    assert {r["bucket"].date() for r in rows if r["share"]} == {(end - timedelta(days=b)).date() for b in days}
    assert all(r["bucket_end"] - r["bucket"] == timedelta(days=1) for r in rows)
    for day in {r["bucket"] for r in rows}:  # the bands of a day fill it, one on top of the other
        bands = sorted((r["share_from"], r["share_to"]) for r in rows if r["bucket"] == day)
        assert bands[0][0] == 0 and bands[-1][1] == pytest.approx(1)
        assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(bands))
    assert {r["when"] for r in rows} >= {f"{(end - timedelta(days=b)).date()} (UTC)" for b in days}


def test_filters_that_select_nothing_say_so_instead_of_drawing_empty_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = datetime(2026, 11, 20, 14, tzinfo=UTC)
    events: list[Any] = []
    for i, (env, intent) in enumerate([("prod", "stock_analysis"), ("staging", "news_inquiry")]):
        events += [
            QueryReceived(query_id=f"q{i}", query_text="네이버 주가", env=env, ts=ts),
            IntentClassified(query_id=f"q{i}", intent=intent, confidence=0.9, env=env, ts=ts),
            QueryCompleted(query_id=f"q{i}", latency_ms=10.0, intent=intent, env=env, ts=ts),
        ]
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    charts = len(at.get("vega_lite_chart"))
    at.sidebar.multiselect(key="intents").set_value(["news_inquiry"])
    at.sidebar.multiselect(key="envs").set_value(["prod"]).run()  # news_inquiry was only asked in staging
    assert not at.exception
    assert len(at.get("vega_lite_chart")) < charts
    assert any("No data for these filters" in i.value for i in at.info)


def test_releases_and_prompt_versions_filter_every_tab_when_the_lake_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = datetime(2026, 11, 20, 14, tzinfo=UTC)
    events: list[Any] = []
    for i, (release, prompt) in enumerate([("v1", "p1"), ("v1", "p2"), ("v2", "p2"), ("v2", "p2"), ("v2", None)]):
        kw: dict[str, Any] = {"query_id": f"r{i}", "ts": ts + timedelta(minutes=i), "release": release}
        if prompt:
            kw["prompt_version"] = prompt
        events += [
            QueryReceived(query_text="네이버 주가 전망은?", **kw),
            IntentClassified(intent="stock_analysis", confidence=0.9, **kw),
            QueryCompleted(latency_ms=10.0 + i, intent="stock_analysis", **kw),
        ]
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    assert at.sidebar.multiselect(key="releases").options == ["v1", "v2"]
    assert at.sidebar.multiselect(key="prompts").options == ["p1", "p2"]
    at.sidebar.multiselect(key="releases").set_value(["v2"]).run()
    assert not at.exception and _metric(at, "Queries") == "3"
    at.sidebar.multiselect(key="prompts").set_value(["p2"]).run()
    assert _metric(at, "Queries") == "2"  # v2 with p2; the query recorded without a prompt version is left out
    # Search counts keep to the same selection.
    at.text_input(key="search").input("네이버 주가").run()
    assert [int(m) for h in at.get("html") for m in re.findall(r"×(\d+)", h.proto.body)] == [2]


def test_a_lake_without_releases_shows_no_release_filter(sample_lake: SampleLake, explorer: AppTest) -> None:
    assert not [w for w in explorer.sidebar.multiselect if w.key in ("releases", "prompts")]


def test_the_sessions_tab_shows_reformulations(explorer: AppTest, sample_lake: SampleLake) -> None:
    by_intent = next(f for f in _frames(explorer) if "reformulation_rate" in f.columns and "intent" in f.columns)
    assert set(by_intent["intent"].to_list()) == {q.intent for q in sample_lake.queries}
    assert sum(by_intent["queries"].to_list()) == len(sample_lake.queries)


def test_a_question_is_shown_as_asked_never_as_markup_and_cannot_reverse_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A question's `$x^2$`, `:red[…]` or link was drawn as math, colour or a link in the timeline's title, and a
    U+202E in a search row drew the rest of the page backwards."""
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    asked = "$5 and $x^2$ :red[colored] [x](javascript:alert(1)) 삼성전자 gnp.\u202eexe"
    home = tmp_path / "home"
    with EventLog(home / "log") as log, QueryTracker(log, release=":red[v2]").query(asked) as q:
        q.classified("stock_analysis", 0.9)
        q.responded(model="**gpt**", answer="네", finish_reason="$stop$")
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    at = _app(home, monkeypatch)
    shown = [t.value for t in at.text]
    assert "$5 and $x^2$ :red[colored] [x](javascript:alert(1)) 삼성전자 gnp.\\u202eexe" in shown  # the title, as text
    assert not [m.value for m in at.markdown if "삼성전자" in m.value]  # never as Markdown
    # The answer's facts come from the producer: as text too.
    assert "finish: $stop$  ·  model: **gpt**  ·  release: :red[v2]" in shown
    assert not [c.value for c in [*at.markdown, *at.caption] if "gpt" in c.value]
    at.text_input(key="search").input("삼성전자").run()
    rows = [h.proto.body for h in at.get("html") if "<mark>" in h.proto.body]
    assert rows and all("\u202e" not in r and "\\u202e" in r for r in rows)
    assert at.session_state["search_hits"]
    at.text_input(key="search").input("").run()  # cleared: the timeline no longer offers the old hits first
    assert at.session_state["search_hits"] == {}


def test_hours_over_more_than_a_month_are_drawn_by_day_and_many_buckets_without_a_dot_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_lake: Callable[..., SampleLake]
) -> None:
    """A year by the hour was 8,760 buckets per intent, each with a dot: the page took minutes to draw."""
    end = datetime(2026, 11, 20, 15, tzinfo=UTC)
    lake = make_lake(tmp_path / "long", end=end, days=40, per_hour=1)
    at = _app(lake.home, monkeypatch)
    at.sidebar.radio(key="bucket").set_value("hour").run()
    assert not at.exception
    assert any("would be 984 buckets: the trends are drawn by day" in c.value for c in at.sidebar.caption)
    _, data = _chart_data(at, 0)
    assert {b.hour for b in data.column("bucket").to_pylist()} == {0}  # days
    assert len({b.date() for b in data.column("bucket").to_pylist()}) == 41
    days = (end.date() - timedelta(days=19), end.date())  # 20 days: hours, 480 of them, drawn as a line
    at.sidebar.date_input(key="dates").set_value(days).run()
    assert not any("drawn by day" in c.value for c in at.sidebar.caption)
    spec, data = _chart_data(at, 0)
    assert len({b.hour for b in data.column("bucket").to_pylist()}) == 24
    assert spec["mark"]["type"] == "area" and spec["mark"]["point"] is False


def test_one_stray_old_event_does_not_spread_the_charts_over_years(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_lake: Callable[..., SampleLake]
) -> None:
    """The /v1/events example in docs/integrating.md dates its event 2025-01-31: the dates then defaulted to two
    years, the charts drawn by day with the data in a sliver at the right edge and the intent share empty."""
    end = datetime(2026, 11, 20, 15, tzinfo=UTC)
    lake = make_lake(tmp_path / "home", end=end, days=2, per_hour=2)
    stray = end - timedelta(days=660)
    _write(
        lake.home,
        [
            QueryReceived(query_id="q-stray", query_text="환율 전망", session_id="s-stray", ts=stray),
            QueryCompleted(query_id="q-stray", latency_ms=412.0, ts=stray + timedelta(seconds=1)),
        ],
    )
    at = _app(lake.home, monkeypatch)
    assert _metric(at, "Queries") == f"{len(lake.queries):,}"  # the last 90 days: the stray query is not in them
    assert any(f"The lake goes back to {stray.date():%Y-%m-%d}" in c.value for c in at.sidebar.caption)
    at.sidebar.date_input(key="dates").set_value((stray.date(), end.date())).run()  # and it can be picked
    assert _metric(at, "Queries") == f"{len(lake.queries) + 1:,}"


def test_milliseconds_show_the_decimals_their_size_needs_and_a_row_reads_alike() -> None:
    """Stage latencies of a cached step read 0.0 ms at one decimal; a row's p50 and p95 of the same 0.138 ms read
    0.14 and 0.1, each column choosing its own decimals."""
    import polars as pl

    assert _ms_format(pl.DataFrame({"a_ms": [0.04, 0.5]})) == "%.3f"
    assert _ms_format(pl.DataFrame({"a_ms": [1.5, 3.0]})) == "%.2f"
    assert _ms_format(pl.DataFrame({"a_ms": [12.0, None]})) == "%.1f"
    assert _ms_format(pl.DataFrame({"a_ms": [None, 0.0]}, schema={"a_ms": pl.Float64})) == "%.1f"
    assert _ms_format(pl.DataFrame({"p50_ms": [0.138, 0.5], "p95_ms": [0.138, 19_620.0]})) == "%.3f"
    assert _ms_format(pl.DataFrame({"p50_ms": [0.04, 900.0]})) == "%.3f"  # a cache hit among slow steps


def test_an_answer_keeps_its_lines_and_shows_bidirectional_controls_escaped() -> None:
    assert shown_answer("첫 줄\nanswer with \u202e reversed") == "첫 줄\nanswer with \\u202e reversed"
