"""The explorer after a tester's walk through it: search finds every question in the selection, producers' text
is shown as written everywhere, charts say when there is nothing to draw, numbers keep their precision."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from querylog.analytics.explorer import SHOWN_CHARS, _delta, markdown_code, shown_answer, snippet
from querylog.commands.ui import explorer_path
from querylog.logging.events import (
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
)
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch

TIMEOUT = 60  # seconds a script run may take on a slow machine
END = datetime(2026, 11, 20, 15, tzinfo=UTC)  # in the past: the default dates find the data by themselves


def _app(home: Path, monkeypatch: pytest.MonkeyPatch, langfuse: str | None = None) -> AppTest:
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    if langfuse is None:
        monkeypatch.delenv("LANGFUSE_HOST", raising=False)
    else:
        monkeypatch.setenv("LANGFUSE_HOST", langfuse)
    at = AppTest.from_file(str(explorer_path()), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _asked(
    query_id: str,
    text: str,
    ts: datetime,
    *,
    env: str = "prod",
    service: str = "chat-api",
    intent: str = "stock_analysis",
    failed: bool = False,
    quality: float | None = None,
    answer: str | None = None,
    trace_id: str | None = None,
) -> list[Any]:
    """The events of one query: received, classified, answered (when `answer`), then completed or failed."""
    common: dict[str, Any] = {"query_id": query_id, "env": env, "service": service, "trace_id": trace_id}
    events: list[Any] = [
        QueryReceived(query_text=text, ts=ts, **common),
        IntentClassified(intent=intent, confidence=0.9, ts=ts, **common),
    ]
    done = ts + timedelta(seconds=1)
    if answer is not None:
        events.append(ResponseGenerated(answer_text=answer, answer_chars=len(answer), ts=done, **common))
    if failed:
        events.append(QueryFailed(error_type="TimeoutError", stage="search", latency_ms=900.0, ts=done, **common))
    else:
        events.append(QueryCompleted(latency_ms=120.0, intent=intent, quality_score=quality, ts=done, **common))
    return events


def _write(home: Path, events: list[Any]) -> None:
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"walk": len(events)}))


def _rows(at: AppTest) -> list[str]:
    """The search results as their HTML."""
    return [h.proto.body for h in at.get("html")]


def _counts(at: AppTest) -> list[int]:
    return [int(m) for body in _rows(at) for m in re.findall(r"×(\d+)", body)]


def _chart_fields(at: AppTest) -> list[set[str]]:
    """For each chart on the page, the fields its encoding names."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return [
        {v["field"] for v in spec.get("encoding", {}).values() if isinstance(v, dict) and "field" in v}
        for spec in specs
    ]


def _chart(at: AppTest, field: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The spec and rows of the first chart over time whose y axis is `field`."""
    import json

    import pyarrow as pa

    for chart in at.get("vega_lite_chart"):
        encoding = json.loads(chart.proto.spec).get("encoding", {})
        if encoding.get("y", {}).get("field") == field and encoding.get("x", {}).get("field") == "bucket":
            spec = json.loads(chart.proto.spec)
            return spec, pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()
    raise AssertionError(f"no chart of {field}")


# -- 1. search finds every question in the selection ------------------------------------------------------
@pytest.fixture(scope="module")
def popular_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,100 askings of one question (staging, the last day), and two rarer ones asked before it (prod)."""
    home = tmp_path_factory.mktemp("popular") / "home"
    events: list[Any] = []
    for i in range(2100):
        events += _asked(f"pop-{i}", "삼성전자 주가 알려줘", END - timedelta(seconds=10 + i), env="staging")
    for i in range(5):
        events += _asked(f"old-{i}", "삼성전자 옛날 질문", END - timedelta(days=3, hours=i))
    for i in range(3):
        events += _asked(f"prod-{i}", "삼성전자 프로드 질문", END - timedelta(days=2, hours=i))
    _write(home, events)
    return home


@pytest.fixture
def popular(popular_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The explorer over a copy of that lake (a search writes its index under the home)."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(popular_home, home)
    at = _app(home, monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    assert not at.exception
    return at


def test_a_click_elsewhere_does_not_search_again(
    popular_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tab runs at every click: with a search in its box, each click elsewhere on the page searched again
    (7 s a click on 400k queries, against 1 s without one)."""
    import shutil

    import querylog.analytics.search_groups as search_groups

    home = tmp_path / "home"
    shutil.copytree(popular_home, home)
    calls: list[str] = []
    find = search_groups.find_questions

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return find(*args, **kwargs)

    monkeypatch.setattr(search_groups, "find_questions", counted)
    at = _app(home, monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    before = _counts(at)
    at.run()  # a click elsewhere: the script runs again, the lake unchanged
    assert calls == ["삼성전자"] and _counts(at) == before
    at.text_input(key="search").input("프로드").run()  # another search is searched
    assert calls == ["삼성전자", "프로드"]


def test_search_lists_every_question_however_often_one_was_asked(popular: AppTest) -> None:
    """The 2,000 newest hits were all the popular question: the caption said 1 distinct question of 3."""
    assert any("3 distinct questions" in c.value for c in popular.caption)
    assert _counts(popular) == [2100, 3, 5]  # best match (all score 1), then most recently asked


@pytest.mark.parametrize("matching", [50, 79])
def test_a_search_with_more_matches_than_it_lists_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, matching: int
) -> None:
    """79 questions matched and the caption said "50 distinct question(s)": the list's length, not the matches'."""
    ts = END - timedelta(hours=1)
    _write(tmp_path / "home", [e for n in range(matching) for e in _asked(f"q-{n}", f"삼성전자 {n}호 주가", ts)])
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    said = "The best 50 distinct questions (more match" if matching > 50 else "50 distinct questions, best match"
    assert any(c.value.startswith(said) for c in at.caption)
    assert len(at.get("html")) == 50
    at.toggle(key="search_ungrouped").set_value(True).run()
    said = "The best 50 results (more match" if matching > 50 else "50 results, best first"
    assert any(c.value.startswith(said) for c in at.caption)
    assert len(at.get("html")) == 50


def test_an_answer_search_over_a_lake_without_answers_says_none_was_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "home", _asked("q-1", "삼성전자 주가", END - timedelta(hours=1)))  # no answer, as schema v1
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    at.radio(key="search_in").set_value("answers").run()
    assert any("No answers match" in i.value for i in at.info)
    assert any("No query in the lake has its answer recorded" in c.value for c in at.caption)


def test_search_keeps_to_the_end_date(popular: AppTest) -> None:
    """The index was asked for hits since the first date only: newer ones filled the page, then were dropped."""
    popular.sidebar.date_input(key="dates").set_value(
        ((END - timedelta(days=3)).date(), (END - timedelta(days=1)).date())
    )
    popular.run()
    assert not any("No queries match" in i.value for i in popular.info)
    assert _counts(popular) == [3, 5]  # the newer question first


def test_search_keeps_to_the_env_in_both_views(popular: AppTest) -> None:
    popular.sidebar.multiselect(key="envs").set_value(["prod"]).run()
    assert _counts(popular) == [3, 5]
    popular.toggle(key="search_ungrouped").set_value(True).run()
    assert len(_rows(popular)) == 8 and all("주가 알려줘" not in body for body in _rows(popular))


# -- 2. a trace id cannot shape a link ----------------------------------------------------------------------
def test_a_trace_id_is_quoted_in_the_table_and_the_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = "abc) [evil](http://evil.example/x"
    _write(tmp_path / "home", _asked("q-1", "네이버 주가", END - timedelta(hours=1), trace_id=evil))
    at = _app(tmp_path / "home", monkeypatch, langfuse="https://lf.example")
    quoted = "https://lf.example/trace/abc%29%20%5Bevil%5D%28http%3A%2F%2Fevil.example%2Fx"
    recent = next(d.value for d in at.dataframe if "trace" in d.value.columns)
    assert list(recent["trace"]) == [quoted]  # was the id spliced in as it came
    assert [b.proto.url for b in at.get("link_button")] == [quoted]
    assert not [m.value for m in at.markdown if "evil" in m.value]


# -- 3. producers' text is shown as written everywhere -----------------------------------------------------
def test_tables_and_filters_show_control_characters_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = "삼성전자 gnp.\u202eexe 주가"
    _write(tmp_path / "home", _asked("q-1", asked, END - timedelta(hours=1), intent="news\u202e", env="prod\u202e"))
    at = _app(tmp_path / "home", monkeypatch)
    texts = [v for d in at.dataframe for column in d.value.columns for v in d.value[column] if isinstance(v, str)]
    assert "삼성전자 gnp.\\u202eexe 주가" in texts  # Recent queries, Top queries
    assert not [t for t in texts if "\u202e" in t]
    assert {row["intent"] for row in _chart(at, "queries")[1]} == {"news\\u202e"}  # the legend's labels
    assert at.sidebar.multiselect(key="intents").options == ["news\\u202e"]
    assert at.sidebar.multiselect(key="envs").options == ["prod\\u202e"]


def test_an_answer_is_cut_at_shown_chars_and_whole_one_click_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = "\u202e" + "가" * (SHOWN_CHARS + 500)
    _write(tmp_path / "home", _asked("q-1", "긴 답변", END - timedelta(hours=1), answer=answer))
    at = _app(tmp_path / "home", monkeypatch)
    shown = [t.value for t in at.text if t.value.startswith("\\u202e")]
    assert shown[0] == shown_answer(answer) and len(shown[0]) < SHOWN_CHARS + 40
    assert shown[0].endswith(f"… ({len(answer) + 5:,} characters)")  # the escape is 6 characters, not 1
    assert [e.label for e in at.expander] == [f"The whole answer ({len(answer):,} characters)"]
    assert shown[1] == "\\u202e" + "가" * (SHOWN_CHARS + 500)


def test_an_answer_recorded_without_its_text_or_sources_still_shows_its_model_and_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that records the model, tokens and cost but not the answer's text (the integration example, an
    OTLP span without captured content): the timeline said nothing of the answer, though the lake had it."""
    events = _asked("q-1", "모델만 기록", END - timedelta(hours=1))
    events.insert(
        2,
        ResponseGenerated(
            query_id="q-1", env="prod", service="chat-api", gen_ai_request_model="my-model",
            gen_ai_usage_input_tokens=12, gen_ai_usage_output_tokens=4, cost_usd=0.25, ts=END - timedelta(minutes=59),
        ),
    )  # fmt: skip
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    facts = [t.value for t in at.text if "model: my-model" in t.value]
    assert facts and "cost: $0.25000 (recorded)" in facts[0]
    assert "**Answer**" in [m.value for m in at.markdown]


# -- 4. charts say when there is nothing to draw ---------------------------------------------------------
def test_no_failures_no_quality_scores_and_no_queries_draw_no_empty_charts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = END - timedelta(hours=1)
    events = _asked("q-1", "네이버 주가", ts) + _asked("q-2", "카카오 주가", ts, intent="news", env="staging")
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    fields = _chart_fields(at)
    assert not [f for f in fields if "error_rate" in f or "bin_start" in f]  # zeros: no failures, no scores
    assert any("No query failed in these filters" in i.value for i in at.info)
    # Queries without scores: not "no data, widen the dates", which would send the user looking for nothing.
    assert any("None of these queries has a quality score" in i.value for i in at.info)
    assert any("step" in f for f in fields)  # the funnel of two queries
    at.sidebar.multiselect(key="intents").set_value(["news"])
    at.sidebar.multiselect(key="envs").set_value(["prod"]).run()  # news was asked in staging only
    assert _chart_fields(at) == []  # the funnel was a frame of zeros, drawn as empty axes
    assert sum("No data for these filters" in i.value for i in at.info) >= 5
    assert not any("quality score" in i.value for i in at.info)


def test_several_services_in_one_lake_can_be_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two apps sending to one querylog: the sidebar offers each, and the report takes --service."""
    ts = END - timedelta(hours=1)
    events = [e for n in range(3) for e in _asked(f"c-{n}", "네이버 주가", ts, service="chat-api")]
    events += _asked("n-1", "카카오 뉴스", ts, service="news-bot") + _asked(
        "n-2", "네이버 주가", ts, service="news-bot"
    )
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    assert next(m.value for m in at.metric if m.label == "Queries") == "5"
    at.sidebar.multiselect(key="services").set_value(["news-bot"]).run()
    assert next(m.value for m in at.metric if m.label == "Queries") == "2"
    at.text_input(key="search").input("네이버").run()  # asked 3 times by chat-api, once by news-bot
    assert [int(n) for n in re.findall(r"×(\d+)", " ".join(h.proto.body for h in at.get("html")))] == [1]
    # One service alone: no filter to offer.
    _write(tmp_path / "one", _asked("c-9", "네이버 주가", ts))
    assert not [m for m in _app(tmp_path / "one", monkeypatch).sidebar.multiselect if m.key == "services"]


# -- 5. a quality change keeps its precision ----------------------------------------------------------------
def test_deltas_keep_the_precision_of_their_scale() -> None:
    assert _delta(0.498, 0.491, decimals=3) == "+0.007"  # was "+0.0", a green rise
    assert _delta(0.491, 0.498, decimals=3) == "-0.007"
    assert _delta(0.49101, 0.4910, decimals=3) == "0"  # no arrow for no change
    assert _delta(0.0312, 0.0300, scale=100, unit=" pt") == "+0.1 pt"


def test_the_headline_shows_a_small_quality_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = END - timedelta(days=100)  # the window of equal length before the default 90 days
    events = _asked("q-1", "네이버 주가", before, quality=0.491) + _asked("q-2", "네이버 주가", END, quality=0.498)
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    quality = next(m for m in at.metric if m.label == "Mean quality")
    assert quality.proto.delta == "+0.007"


def test_the_headline_compares_no_count_with_a_window_retention_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from querylog.analytics.upkeep import apply_retention

    events: list[Any] = []
    for day in range(150):  # one query a day: the default 90 days, and 60 of the 90 before them
        events += _asked(f"q-{day}", "네이버 주가", END - timedelta(days=day))
    _write(tmp_path / "home", events)
    whole = _app(tmp_path / "home", monkeypatch)
    assert next(m for m in whole.metric if m.label == "Queries").proto.delta == "+30"
    apply_retention(tmp_path / "home" / "lake", days=130, now=END)  # the window before keeps its last 40 days
    at = _app(tmp_path / "home", monkeypatch)
    queries = next(m for m in at.metric if m.label == "Queries")
    assert queries.value == "90" and not queries.proto.delta  # not "+50" against the 40 days left of it
    assert "retention dropped the lake's days before" in queries.proto.help


# -- 6. many intents ----------------------------------------------------------------------------------------
def test_more_intents_than_colours_are_drawn_as_the_top_ones_and_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[Any] = []
    for n in range(12):  # intent_00 asked 12 times, ..., intent_11 once
        for k in range(12 - n):
            events += _asked(f"q-{n}-{k}", "네이버 주가", END - timedelta(hours=1, minutes=k), intent=f"intent_{n:02d}")
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    _, rows = _chart(at, "queries")
    intents = {r["intent"] for r in rows}
    assert intents == {f"intent_{n:02d}" for n in range(9)} | {"other (3 intents)"}  # 10: one colour each
    assert sum(r["queries"] for r in rows if r["intent"] == "other (3 intents)") == 3 + 2 + 1
    assert sum(r["queries"] for r in rows) == len(events) // 3
    assert any("the other 3 together as one" in c.value for c in at.caption)


def test_the_latency_chart_draws_the_busiest_intents_and_the_table_has_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three hundred intents drew 900 slivers of bars, none readable."""
    import json

    import pyarrow as pa

    from querylog.analytics.explorer import LATENCY_INTENTS

    events: list[Any] = []
    for n in range(LATENCY_INTENTS + 5):  # intent_00 asked most, the last five least
        for k in range(LATENCY_INTENTS + 5 - n):
            events += _asked(f"q-{n}-{k}", "네이버 주가", END - timedelta(hours=1, minutes=k), intent=f"intent_{n:02d}")
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    x_of = [json.loads(c.proto.spec).get("encoding", {}).get("x", {}).get("field") for c in at.get("vega_lite_chart")]
    [chart] = [c for c, x in zip(at.get("vega_lite_chart"), x_of, strict=True) if x == "intent"]
    rows = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()
    assert {r["intent"] for r in rows} == {f"intent_{n:02d}" for n in range(LATENCY_INTENTS)}
    assert any(f"the table below has all {LATENCY_INTENTS + 5}" in c.value for c in at.caption)


# -- 7. lines break where there were no queries ------------------------------------------------------------
def test_error_and_latency_lines_have_every_bucket_and_one_bucket_is_a_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = END.replace(hour=0)
    events = _asked("q-1", "네이버 주가", day + timedelta(hours=1), failed=True)
    events += _asked("q-2", "네이버 주가", day + timedelta(hours=2))
    events += _asked("q-3", "네이버 주가", day + timedelta(hours=9))
    _write(tmp_path / "home", events)
    at = _app(tmp_path / "home", monkeypatch)
    spec, rows = _chart(at, "error_rate")
    assert spec["mark"]["type"] == "line"
    assert [r["bucket"].hour for r in rows] == list(range(1, 10))  # no slope across hours without queries
    assert [r["error_rate"] for r in rows] == [1.0, 0.0] + [None] * 6 + [0.0]
    spec, rows = _chart(at, "ms")
    assert {r["bucket"].hour for r in rows} == set(range(1, 10)) and len(rows) == 9 * 3
    assert [r["ms"] for r in rows if r["bucket"].hour == 5] == [None, None, None]
    _write(tmp_path / "one", _asked("q-1", "네이버 주가", day + timedelta(hours=1)))
    spec, _ = _chart(_app(tmp_path / "one", monkeypatch), "ms")
    assert spec["mark"]["type"] == "bar"  # one bucket: it was a lone dot


# -- 8. the default bucket and the day count ---------------------------------------------------------------
def test_three_dates_are_trended_by_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = END - timedelta(days=2)  # the dates run from END - 2 days to END: three of them
    _write(tmp_path / "home", _asked("q-1", "네이버 주가", ts) + _asked("q-2", "네이버 주가", END))
    at = _app(tmp_path / "home", monkeypatch)
    assert at.sidebar.radio(key="bucket").value == "day"
    at.sidebar.radio(key="bucket").set_value("hour").run()  # picked by hand: kept while the dates stay 3 or more
    at.sidebar.date_input(key="dates").set_value(((END - timedelta(days=3)).date(), END.date())).run()
    assert at.sidebar.radio(key="bucket").value == "hour"
    # Two dates: by the hour, then three again: by day. It stayed "day" for one day: one bar per chart.
    at.sidebar.radio(key="bucket").set_value("day").run()
    at.sidebar.date_input(key="dates").set_value(((END - timedelta(days=1)).date(), END.date())).run()
    assert at.sidebar.radio(key="bucket").value == "hour"
    at.sidebar.date_input(key="dates").set_value(((END - timedelta(days=2)).date(), END.date())).run()
    assert at.sidebar.radio(key="bucket").value == "day"
    assert not at.exception and not at.warning  # no "set by default and by the Session State API" warning
    _write(tmp_path / "two", _asked("q-1", "네이버 주가", END - timedelta(days=1)) + _asked("q-2", "x", END))
    assert _app(tmp_path / "two", monkeypatch).sidebar.radio(key="bucket").value == "hour"


def _later(at: AppTest) -> AppTest:
    """`at` as if its snapshot of the lake had been built long enough ago to be read again if the lake changed."""
    from querylog.analytics.explorer import SNAPSHOT_KEPT_MAX_S

    at.session_state["lake_snapshot"].built_at -= SNAPSHOT_KEPT_MAX_S + 1
    return at


def test_the_lake_is_read_once_while_it_is_unchanged_and_again_when_it_changed_and_time_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every click read the whole lake again: 7 s a click on 300,000 queries. The snapshot is kept while the lake
    is unchanged, and while it changes, for a few seconds or ten times its build time; Refresh reads it at once."""
    home = tmp_path / "home"
    _write(home, _asked("q-1", "네이버 주가", END))
    at = _app(home, monkeypatch)
    built = at.session_state["lake_snapshot"]
    at.text_input(key="search").input("네이버").run()  # a click: the page runs again
    assert at.session_state["lake_snapshot"] is built
    with ParquetSink(home / "lake") as sink:  # a serving API adds a batch
        sink.write(Batch(events=_asked("q-2", "삼성전자 주가", END), checkpoint={"walk": 100}))
    at.run()
    assert at.session_state["lake_snapshot"] is built  # changed a moment ago: kept, and said
    assert next(m.value for m in at.metric if m.label == "Queries") == "1"
    assert any("the lake has changed since" in c.value for c in at.sidebar.caption)
    at.sidebar.button(key="refresh").click().run()
    assert at.session_state["lake_snapshot"] is not built
    assert next(m.value for m in at.metric if m.label == "Queries") == "2"
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=_asked("q-3", "카카오", END), checkpoint={"walk": 200}))
    _later(at).run()  # changed, and the snapshot is old enough: read again by itself
    assert next(m.value for m in at.metric if m.label == "Queries") == "3"


def test_a_lake_of_feedback_alone_is_not_called_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from querylog.logging.events import FeedbackReceived

    _write(tmp_path / "home", [FeedbackReceived(query_id=f"q-{n}", score=1, ts=END) for n in range(3)])
    at = _app(tmp_path / "home", monkeypatch)
    assert any("holds 3 event(s) but no query" in i.value for i in at.info), [i.value for i in at.info]


def test_the_dates_follow_the_lake_until_the_user_picks_some(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tab left open kept the dates it first offered: the queries of a later day never showed until a reload."""
    home, earlier = tmp_path / "home", END - timedelta(days=2)
    _write(home, _asked("q-1", "네이버 주가", earlier))
    at = _app(home, monkeypatch)
    assert at.sidebar.date_input(key="dates").value == (earlier.date(), earlier.date())
    with ParquetSink(home / "lake") as sink:  # the next day's queries arrive while the tab is open
        sink.write(Batch(events=_asked("q-2", "삼성전자 주가", END), checkpoint={"walk": 100}))
    _later(at).run()
    assert at.sidebar.date_input(key="dates").value == (earlier.date(), END.date())
    assert next(m.value for m in at.metric if m.label == "Queries") == "2"
    picked = (earlier.date(), earlier.date())
    at.sidebar.date_input(key="dates").set_value(picked).run()  # a person's choice stays as it is
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=_asked("q-3", "카카오", END + timedelta(days=1)), checkpoint={"walk": 200}))
    _later(at).run()
    assert at.sidebar.date_input(key="dates").value == picked


def test_a_picked_range_that_retention_cut_into_is_kept_within_the_lake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept in the session, a picked range older than the lake's first day (retention dropped it) stopped every
    rerun of the page with Streamlit's "less than the min_value"."""
    import shutil

    home, days = tmp_path / "home", [END - timedelta(days=n) for n in (3, 1, 0)]
    _write(home, [e for n, day in enumerate(days) for e in _asked(f"q-{n}", "네이버 주가", day)])
    at = _app(home, monkeypatch)
    at.sidebar.date_input(key="dates").set_value((days[0].date(), days[1].date())).run()
    shutil.rmtree(home / "lake" / "events" / f"date={days[0].date()}")  # retention drops the oldest day
    _later(at).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.date_input(key="dates").value == (days[1].date(), days[1].date())


def test_a_long_question_is_shown_around_its_match_and_wraps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 15,000-character question filled a search result 4,000 px tall; one without spaces widened the page."""
    from querylog.analytics.explorer import QUESTION_CHARS

    long = "매우 긴 질문입니다 " * 1400 + "삼성전자"
    _write(tmp_path / "home", _asked("q-1", long, END) + _asked("q-2", "x" * 9000 + " 삼성전자", END))
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="search").input("삼성전자").run()
    rows = _rows(at)
    assert len(rows) == 2 and all("overflow-wrap:anywhere" in row for row in rows)
    assert all(len(re.sub("<[^>]+>", "", row)) < QUESTION_CHARS + 300 for row in rows)  # the text and its details
    assert all("<mark" in row and "삼성전자" in row for row in rows)


def test_the_day_count_has_a_thousands_separator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = END - timedelta(days=2822)
    _write(tmp_path / "home", _asked("q-1", "네이버 주가", first) + _asked("q-2", "네이버 주가", END))
    at = _app(tmp_path / "home", monkeypatch)
    at.sidebar.date_input(key="dates").set_value((first.date(), END.date()))
    at.sidebar.radio(key="bucket").set_value("hour").run()
    assert any("By the hour, 2,823 days would be 67,752 buckets" in c.value for c in at.sidebar.caption)


# -- 9. paths are not Markdown ------------------------------------------------------------------------------
def _rendered(markdown: str) -> str:
    return MarkdownIt("commonmark").render(markdown)


def test_a_data_path_is_shown_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h_**bold**_$x$"
    home.mkdir()
    at = _app(home, monkeypatch)  # an empty lake
    info = next(i.value for i in at.info if "is empty" in i.value)
    assert f"<code>{home / 'lake'}</code>" in _rendered(info) and "<strong>" not in _rendered(info)
    _write(home, _asked("q-1", "네이버 주가", END))
    at = _app(home, monkeypatch)
    lake = next(c.value for c in at.sidebar.caption if c.value.startswith("Lake:"))
    assert _rendered(lake) == f"<p>Lake: <code>{home / 'lake'}</code></p>\n"  # no bold, and $x$ inside code


def test_markdown_code_holds_any_text() -> None:
    for text in ["plain", "a`b", "``x``", "`edge", "$x$ **y**", "tab\there"]:
        rendered = _rendered(markdown_code(text))
        assert rendered.count("<code>") == 1 and "<strong>" not in rendered
        assert re.sub(r"</?(p|code)>|\n", "", rendered) == text.replace("\t", " ").replace("&", "&amp;")


# -- 10. empty answers, and answers found by search ------------------------------------------------------
@pytest.mark.parametrize("answer", ["  \n ", "\u200b", "\u3164\ufeff"], ids=["spaces", "zero-width", "filler-bom"])
def test_a_blank_answer_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    # A zero-width space was shown as the answer: a blank line, where docs/explorer.md says "(empty answer)" (walk).
    _write(tmp_path / "home", _asked("q-1", "네이버 주가", END, answer=answer))
    at = _app(tmp_path / "home", monkeypatch)
    assert "(empty answer)" in [c.value for c in at.caption]


def test_a_query_that_failed_before_its_answer_says_no_answer_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query that failed at generation, after its search found sources, showed "The answer's text was not kept.":
    read as an answer the capture setting dropped."""
    from querylog.logging.events import SearchCompleted, Source

    found = SearchCompleted(query_id="q-1", env="prod", result_count=1, sources=(Source(doc_id="d-1", rank=1),), ts=END)
    _write(tmp_path / "home", [*_asked("q-1", "네이버 주가", END, failed=True), found])
    captions = [c.value for c in _app(tmp_path / "home", monkeypatch).caption]
    assert "No answer was made: the query ended (or failed) before one." in captions
    assert not any("not kept" in c for c in captions)


def test_feedback_long_after_a_query_is_told_not_drawn_and_a_failure_shows_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback 20 minutes after the query ran the timeline's axis to 1,200,000 ms: every stage a dot at 0. A failed
    query without sources showed no answer section, and its error only past the events table's right edge."""
    import json

    import pyarrow as pa

    from querylog.logging.events import FeedbackReceived

    later = FeedbackReceived(query_id="q-1", env="prod", score=1, ts=END + timedelta(minutes=20))
    _write(tmp_path / "home", [*_asked("q-1", "네이버 주가", END, failed=True), later])
    at = _app(tmp_path / "home", monkeypatch)
    captions = [c.value for c in at.caption]
    assert "Feedback up (+1) came 20 min after the first event." in captions
    assert "No answer was made: the query ended (or failed) before one." in captions
    assert "Failed at search: TimeoutError" in [t.value for t in at.text]
    (timeline,) = [c for c in at.get("vega_lite_chart") if "start_ms" in c.proto.spec]
    drawn = pa.ipc.open_stream(timeline.proto.datasets[0].data.data).read_all().to_pylist()
    assert {row["event_type"] for row in drawn} == {"query_received", "intent_classified", "query_failed"}
    assert max(row["end_ms"] for row in drawn) <= 1_000.0
    assert json.loads(timeline.proto.spec)["layer"][0]["encoding"]["x"]["field"] == "start_ms"


def test_an_id_with_only_feedback_says_so_and_shows_the_verdict_not_an_empty_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verdict on a query the lake does not hold drew an empty chart ticked 0.000000, said the feedback came 0.0 s
    after the first event (it was the first), and its table left the comment out."""
    from querylog.logging.events import FeedbackReceived

    verdict = FeedbackReceived(query_id="gone-1", env="prod", score=-1, comment="오래된 정보", ts=END)
    _write(tmp_path / "home", [*_asked("q-1", "네이버 주가", END), verdict])
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="timeline_id").input("gone-1").run()
    assert not at.exception
    assert "Only feedback was recorded for this id: the lake holds no event of its query." in [i.value for i in at.info]
    assert not [c for c in at.get("vega_lite_chart") if "start_ms" in c.proto.spec]
    assert not [c.value for c in at.caption if "after the first event" in c.value]
    (table,) = [t for t in at.dataframe if "comment" in t.value.columns]
    assert table.value["comment"].to_list() == ["오래된 정보"]


def test_a_query_id_typed_decomposed_finds_its_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unicodedata

    _write(tmp_path / "home", _asked("질문-둘", "네이버 주가", END))  # kept in NFC, as every endpoint takes ids
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="timeline_id").input(unicodedata.normalize("NFD", "질문-둘")).run()
    assert not at.exception and "No events for this query id." not in [i.value for i in at.info]
    assert [c for c in at.get("vega_lite_chart") if "start_ms" in c.proto.spec]


def test_a_completed_query_of_a_producer_that_sends_no_answer_is_not_said_to_have_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a failed query is told "No answer was made": a query recorded before schema v2, or by a producer that
    sends no `response_generated`, has an answer the lake never saw."""
    from querylog.logging.events import SearchCompleted, Source

    found = SearchCompleted(query_id="q-1", env="prod", result_count=1, sources=(Source(doc_id="d-1", rank=1),), ts=END)
    _write(tmp_path / "home", [*_asked("q-1", "네이버 주가", END), found])
    at = _app(tmp_path / "home", monkeypatch)
    assert not any("No answer was made" in c.value for c in at.caption)
    shown = [m.value for m in at.markdown]
    assert "**Answer**" not in shown and "**Sources**" in shown  # its sources still


def test_a_search_in_answers_shows_the_part_of_the_answer_that_matched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = "시장 개요입니다. " * 30 + "네이버의 영업이익은 늘었습니다. " + "끝맺음 문장입니다. " * 30
    _write(
        tmp_path / "home",
        _asked("q-1", "네이버 실적 어때", END - timedelta(hours=2), answer=answer)
        + _asked("q-2", "네이버 실적 어때", END - timedelta(hours=1), answer="모릅니다"),
    )
    at = _app(tmp_path / "home", monkeypatch)
    at.text_input(key="search").input("영업이익").run()
    at.radio(key="search_in").set_value("answers").run()
    (row,) = _rows(at)
    assert "네이버 실적 어때" in row and "×2" in row  # the question, asked twice
    assert "<mark>영업이익</mark>" in row and "…" in row and len(row) < 1000  # the matching part, not all of it
    at.toggle(key="search_ungrouped").set_value(True).run()
    (row,) = _rows(at)
    assert "네이버 실적 어때" in row and "<mark>영업이익</mark>" in row
    assert at.session_state["search_hits"] == {"q-1": "네이버 실적 어때"}  # labelled by the question, not the answer


def test_a_snippet_is_the_part_around_the_first_match() -> None:
    text = "가" * 300 + " 영업이익 " + "나" * 300
    cut = snippet(text, "영업이익", width=100)
    assert cut.startswith("…") and cut.endswith("…") and "영업이익" in cut and len(cut) == 102
    assert snippet("짧은 답변 \u202e", "답변") == "짧은 답변 \\u202e"
    assert snippet("나" * 300, "없음", width=50) == "나" * 50 + "…"


def test_a_new_search_shows_its_best_hit_in_the_timeline_not_the_query_picked_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a pick in the Queries tab, a search offered its hit first but the timeline kept the earlier pick."""
    _write(
        tmp_path / "home",
        _asked("q-1", "네이버 실적 어때", END - timedelta(hours=2))
        + _asked("q-2", "삼성전자 주가 전망", END - timedelta(hours=1)),
    )
    at = _app(tmp_path / "home", monkeypatch)
    at.selectbox(key="timeline_query").set_value("q-2").run()
    at.text_input(key="search").input("네이버").run()
    assert at.selectbox(key="timeline_query").value == "q-1"
    at.selectbox(key="timeline_query").set_value("q-2").run()  # a pick after the search is kept while it stands
    assert at.selectbox(key="timeline_query").value == "q-2"
    _write(tmp_path / "home", _asked("q-3", "네이버 실적 어때", END - timedelta(minutes=30)))  # the lake grows
    at.run()
    assert at.selectbox(key="timeline_query").value == "q-2"  # the search stands: the pick too


def test_a_damaged_lake_file_is_named_with_how_to_mend_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page showed DuckDB's raw error with its SQL; `querylog sql` names the file and how to rebuild."""
    home = tmp_path / "home"
    _write(home, _asked("q-1", "네이버 주가", END))
    (damaged,) = (home / "lake" / "events").rglob("*.parquet")
    damaged.write_bytes(b"not parquet at all" * 5)
    at = _app(home, monkeypatch)
    (error,) = [e.value for e in at.error]
    assert str(damaged) in error and "querylog replay parquet" in error and "SELECT" not in error


def test_any_query_is_reached_by_its_id_whatever_the_dates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timeline picker offers the newest 200 of the selection: an older query could not be opened at all."""
    old = END - timedelta(days=200)  # before the default dates (the last 90 days with data)
    _write(tmp_path / "home", _asked("q-old", "오래된 질문", old) + _asked("q-new", "새 질문", END))
    at = _app(tmp_path / "home", monkeypatch)
    assert not any("q-old" in option for option in at.selectbox(key="timeline_query").options)
    at.text_input(key="timeline_id").set_value(" q-old ").run()
    assert not at.exception
    assert "오래된 질문" in [t.value for t in at.text]
    at.text_input(key="timeline_id").set_value("no-such-query").run()
    assert any("No events for this query id" in i.value for i in at.info)
