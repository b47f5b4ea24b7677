"""`querylog report`: the window against the one before it, as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from querylog.analytics.catalog import Catalog
from querylog.analytics.report import build_report, render_html, render_markdown
from querylog.cli import main
from querylog.logging.events import QueryCompleted, QueryReceived, SearchCompleted
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

HOSTILE = "<script>alert('x')</script> | 삼성 **bold**"


@pytest.fixture(scope="module")
def two_weeks(tmp_path_factory: pytest.TempPathFactory, make_lake: Callable[..., SampleLake]) -> SampleLake:
    home = tmp_path_factory.mktemp("report") / "home"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sample = make_lake(home, end=end, days=15, per_hour=4, files_per_hour=1)
    ts = sample.end - timedelta(hours=3)
    with ParquetSink(sample.lake) as sink:
        sink.write(
            Batch(
                events=[
                    QueryReceived(query_id="hostile", query_text=HOSTILE, ts=ts, env="prod"),
                    SearchCompleted(query_id="hostile", result_count=0, ts=ts, env="prod"),
                    QueryCompleted(query_id="hostile", latency_ms=3.0, ts=ts, env="prod"),
                ],
                checkpoint={"hostile": 1},
            )
        )
    return sample


def _in_window(sample: SampleLake, since: datetime, until: datetime) -> list[str]:
    return [q.query_id for q in sample.queries if since <= q.started_at < until]


def test_report_compares_the_window_with_the_one_before(two_weeks: SampleLake) -> None:
    until = two_weeks.end
    since = until - timedelta(days=7)
    with Catalog(two_weeks.lake) as cat:
        report = build_report(cat, since=since, until=until)
    now_ids = _in_window(two_weeks, since, until)
    before_ids = _in_window(two_weeks, since - timedelta(days=7), since)
    assert report.current.queries == len(now_ids) + 1  # + the hostile one
    assert report.previous.queries == len(before_ids)
    assert report.bucket == "day"
    assert report.previous_filters.until == since
    intents_now = Counter(q.intent for q in two_weeks.queries if q.query_id in set(now_ids))
    intents_now["unclassified"] += 1  # the hostile query was never classified
    intents_before = Counter(q.intent for q in two_weeks.queries if q.query_id in set(before_ids))
    for row in report.intents.iter_rows(named=True):
        assert row["queries"] == intents_now[row["intent"]]
        assert row["previous_queries"] == intents_before[row["intent"]]
        if row["previous_queries"]:
            assert row["change"] == pytest.approx(row["queries"] / row["previous_queries"] - 1)
    assert report.volume["queries"].sum() + report.current.in_progress == report.current.queries


def test_a_short_window_is_bucketed_by_hour(two_weeks: SampleLake) -> None:
    with Catalog(two_weeks.lake) as cat:
        report = build_report(cat, since=two_weeks.end - timedelta(hours=12), until=two_weeks.end)
    assert report.bucket == "hour"


def test_markdown_has_every_section_and_escapes_table_cells(two_weeks: SampleLake) -> None:
    with Catalog(two_weeks.lake) as cat:
        text = render_markdown(build_report(cat, since=two_weeks.end - timedelta(days=7), until=two_weeks.end))
    for heading in (
        "## Summary",
        "## Intents",
        "## Volume by day",
        "## Latency by intent",
        "## Latency by stage",
        "## Errors",
        "## Cache by intent",
        "## Quality score distribution",
        "## Feedback by intent",
        "## Top queries",
        "## Queries whose search found nothing",
    ):
        assert heading in text
    assert "| Error rate |" in text
    assert re.search(r"\| Queries \| [\d,]+ \| [\d,]+ \| (▲|▼|±)\d+% \|", text)
    assert "주가" in text or "뉴스" in text
    assert "\\| 삼성" in text  # a pipe in a query cannot break the table
    # Nor can it be HTML, a link or emphasis where the Markdown is rendered: shown as typed.
    assert "\\<script>alert('x')\\</script> \\| 삼성 \\*\\*bold\\*\\*" in text


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_with_inline_svg_charts(two_weeks: SampleLake) -> None:
    with Catalog(two_weeks.lake) as cat:
        page = render_html(build_report(cat, since=two_weeks.end - timedelta(days=7), until=two_weeks.end))
    parsed = _Collect()
    parsed.feed(page)
    assert parsed.tags["svg"] >= 4
    assert parsed.tags["rect"] > 20
    assert parsed.tags["script"] == 0
    assert parsed.tags["link"] == 0
    assert parsed.urls == []  # nothing to fetch: it reads the same offline
    text = "".join(parsed.text)
    assert "Queries by day" in text
    assert "news_inquiry" in text
    assert HOSTILE in text  # shown as text…
    assert "<script>alert" not in page  # …never as markup
    assert '<meta charset="utf-8">' in page
    # Column heads in words: 👍 and 👎 drew as empty boxes where the machine has no emoji font (Debian's Chromium).
    assert "up (+1)" in text and "down (-1)" in text and "👍" not in page and "👎" not in page


def test_each_charts_value_axis_counts_in_round_steps(two_weeks: SampleLake) -> None:
    """The axes read 0, 50, 100, 151, 201 and 0, 18, 37, 56, 74: a quarter of the tallest bar."""
    with Catalog(two_weeks.lake) as cat:
        page = render_html(build_report(cat, since=two_weeks.end - timedelta(days=7), until=two_weeks.end))
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ticks = [float(t.replace(",", "")) for t in re.findall(r'text-anchor="end" fill="#555">([^<]+)<', svg)]
        assert len(ticks) == 5 and ticks[0] == 0, ticks
        step = ticks[1]
        assert ticks == [step * k for k in range(5)], ticks
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 6) in (1, 1.5, 2, 2.5, 3, 4, 5, 6), ticks


@pytest.mark.parametrize("peak", [0.015, 0.05, 0.37, 0.9, 0.001, 3.0, 9.0, 201.0, 74.0, 12_345.0])
def test_an_axis_labels_each_of_its_steps_exactly(peak: float) -> None:
    """Under one, a step of 0.015 was labelled 0.01 and 0.03 (two decimals), and 0.005, 0.01, 0.01, 0.02 once the
    labels took their decimals each from its own value: the labels lied by half a step."""
    from querylog.analytics.report import _svg_bars

    svg = _svg_bars("t", ["a"], [("s", [peak])])
    labels = [t.replace(",", "") for t in re.findall(r'text-anchor="end" fill="#555">([^<]+)<', svg)]
    ticks = [float(t) for t in labels]
    assert ticks[-1] >= peak and len(set(labels)) == 5
    assert ticks == pytest.approx([ticks[-1] * k / 4 for k in range(5)], rel=1e-9, abs=1e-12)
    assert len({len(t.split(".")[1]) if "." in t else 0 for t in labels[1:]}) == 1  # one number of decimals


def test_report_command_writes_html_and_markdown(
    two_weeks: SampleLake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "week.html"
    assert (
        main(["--home", str(two_weeks.home), "report", "--since", "7d", "--format", "html", "--output", str(out)]) == 0
    )
    assert "<svg" in out.read_text(encoding="utf-8")
    assert "wrote" in capsys.readouterr().err
    assert main(["--home", str(two_weeks.home), "report", "--since", "3d", "--env", "staging"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# querylog report")
    assert "Filtered to envs: staging." in text


def test_an_output_under_a_file_says_the_file_is_no_directory(
    two_weeks: SampleLake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--output afile/x.md` said "[Errno 17] File exists: 'afile'", which names no problem."""
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "x.md"
    assert main(["--home", str(two_weeks.home), "report", "--output", str(out)]) == 1
    assert f"cannot write {out}: {tmp_path / 'afile'} is a file, not a directory" in capsys.readouterr().err


def test_report_command_takes_a_service_and_names_unknown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ts = datetime.now(UTC) - timedelta(hours=2)
    events = [
        e
        for n, service in enumerate(["chat-api", "chat-api", "news-bot"])
        for e in (
            QueryReceived(query_id=f"q{n}", query_text="네이버 주가", service=service, ts=ts),
            QueryCompleted(query_id=f"q{n}", latency_ms=10.0, service=service, ts=ts + timedelta(seconds=1)),
        )
    ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"t": len(events)}))
    assert main(["--home", str(tmp_path), "report", "--since", "1d", "--service", "news-bot"]) == 0
    text = capsys.readouterr().out
    assert "Filtered to services: news-bot." in text
    assert "## Quality score distribution\n\n_none_" in text  # no score: not a table of ten zeros
    assert re.search(r"^\| Queries \| 1 \|", text, re.M), text
    assert main(["--home", str(tmp_path), "report", "--since", "1d", "--service", "chat_api"]) == 0
    said = capsys.readouterr().err
    assert "no query in the lake has --service 'chat_api'; it has: chat-api, news-bot" in said


def test_a_report_without_filters_lists_no_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each list of intents, envs or services is a pass over the whole lake (seconds on a large one): the report
    asked for all three to check flags that were not given."""
    from querylog.analytics.queries import LakeQueries

    ts = datetime.now(UTC) - timedelta(hours=2)
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=[QueryReceived(query_id="q", query_text="네이버 주가", ts=ts)], checkpoint={"t": 1}))
    asked: list[str] = []
    for name in ("intents", "envs", "services"):
        monkeypatch.setattr(LakeQueries, name, lambda self, name=name: asked.append(name) or [])
    assert main(["--home", str(tmp_path), "report", "--since", "1d"]) == 0
    assert asked == []
    assert main(["--home", str(tmp_path), "report", "--since", "1d", "--env", "prod"]) == 0
    assert asked == ["envs"]


def test_report_command_accepts_an_iso_date(two_weeks: SampleLake, capsys: pytest.CaptureFixture[str]) -> None:
    day = (two_weeks.end - timedelta(days=2)).date().isoformat()
    assert main(["--home", str(two_weeks.home), "report", "--since", day]) == 0
    assert f"# querylog report: {day} 00:00" in capsys.readouterr().out


def test_report_command_reports_a_past_window_with_until(
    two_weeks: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last week could not be reported from the command line: there was no --until (only `build_report`)."""
    home = str(two_weeks.home)
    end = (two_weeks.end - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=7)
    assert main(["--home", home, "report", "--since", start.date().isoformat(), "--until", end.date().isoformat()]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"# querylog report: {start:%Y-%m-%d} 00:00 – {end:%Y-%m-%d} 00:00 UTC")
    with Catalog(two_weeks.lake) as cat:
        expected = build_report(cat, since=start, until=end).current.queries
    assert expected > 0 and re.search(rf"^\| Queries \| {expected:,} \|", text, re.M), text[:600]
    # Without --since, the week before --until; a window ending ahead of now is taken.
    assert main(["--home", home, "report", "--until", end.date().isoformat()]) == 0
    generated = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC\.")  # the minute each ran
    assert len(generated.findall(text)) == 1
    assert generated.sub("", capsys.readouterr().out) == generated.sub("", text)
    assert main(["--home", home, "report", "--since", "1d", "--until", "2099-01-01"]) == 0
    capsys.readouterr()
    # A week of days to come is refused, as a --since in the future is.
    assert main(["--home", home, "report", "--until", "2999-01-01"]) == 2
    assert "the window starts in the future (2998-12-25 00:00 UTC)" in capsys.readouterr().err
    # An empty window is said, not reported as a quiet one.
    assert main(["--home", home, "report", "--since", end.date().isoformat(), "--until", start.date().isoformat()]) == 2
    assert "is not before --until" in capsys.readouterr().err


@pytest.mark.parametrize("since", ["7", "1y", "tomorrow", "2099-01-01", "0d"])
def test_report_command_rejects_a_bad_since_with_a_clear_error(
    since: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path), "report", "--since", since])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--since" in err
    assert re.search(r"duration like 90s, 30m, 12h, 7d or 2w|future|more than zero", err)


def test_an_empty_lake_still_reports(tmp_path: Path) -> None:
    with Catalog(tmp_path / "nothing") as cat:
        report = build_report(cat, since=datetime.now(UTC) - timedelta(days=7))
    assert report.current.queries == 0
    assert "no data in this window" in render_html(report)
    assert "_none_" in render_markdown(report)


# -- schema v2: cost by model, comparisons by release and prompt version ------------------------------------------
def _v2_lake(home: Path) -> tuple[Path, datetime]:
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    start = datetime.now(UTC) - timedelta(hours=2)
    plan = [  # release, prompt version, model, tokens in/out, recorded cost, fails, feedback
        ("r1", "p1", "gpt-4o", 1_000, 100, None, False, 1),
        ("r1", "p1", "gpt-4o", 2_000, 200, 0.5, False, -1),
        ("r2", "p2", "our-own-llm", 10, 10, None, False, 1),
        ("r2", "p2", "gpt-4o-mini", 4_000, 400, None, True, None),
    ]
    with EventLog(home / "log") as log:
        tracker = QueryTracker(log)
        for i, (release, prompt, model, tin, tout, cost, fails, score) in enumerate(plan):
            try:
                with tracker.query(f"질문 {i}", release=release, prompt_version=prompt) as q:
                    q.responded(model=model, input_tokens=tin, output_tokens=tout, cost_usd=cost, answer="답")
                    if fails:
                        raise RuntimeError("boom")
            except RuntimeError:
                pass
            if score is not None:
                tracker.feedback(q.query_id, score)
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    return home / "lake", start


def test_the_report_adds_cost_by_model_and_compares_releases_and_prompt_versions(tmp_path: Path) -> None:
    from querylog.logging.pricing import DEFAULT_PRICES

    lake, since = _v2_lake(tmp_path)
    with Catalog(lake) as cat:
        report = build_report(cat, since=since)
    cost = {r["model"]: r for r in report.cost_by_model.iter_rows(named=True)}
    gpt4o = DEFAULT_PRICES.price("gpt-4o", datetime.now(UTC))
    mini = DEFAULT_PRICES.price("gpt-4o-mini", datetime.now(UTC))
    assert gpt4o is not None and mini is not None
    assert cost["gpt-4o"]["queries"] == cost["gpt-4o"]["priced"] == 2
    assert cost["gpt-4o"]["cost_usd"] == pytest.approx(0.5 + (1_000 * gpt4o.input + 100 * gpt4o.output) / 1e6)
    assert cost["gpt-4o-mini"]["cost_usd"] == pytest.approx((4_000 * mini.input + 400 * mini.output) / 1e6)
    assert cost["our-own-llm"]["priced"] == 0 and cost["our-own-llm"]["cost_usd"] is None  # unpriced, not $0
    releases = {r["value"]: r for r in report.by_release.iter_rows(named=True)}
    assert (releases["r1"]["queries"], releases["r1"]["failed"], releases["r1"]["mean_score"]) == (2, 0, 0.0)
    assert releases["r1"]["positive_share"] == 0.5
    assert (releases["r2"]["failed"], releases["r2"]["error_rate"]) == (1, 0.5)
    assert set(report.by_prompt_version["value"].to_list()) == {"p1", "p2"}
    # r2's cost is gpt-4o-mini's alone: our-own-llm has no price, and the figure says it is a part, not the whole
    assert (releases["r1"]["unpriced"], releases["r2"]["unpriced"]) == (0, 1)
    assert releases["r2"]["cost_usd"] == pytest.approx(cost["gpt-4o-mini"]["cost_usd"])
    markdown = render_markdown(report)
    assert "(1 unpriced)" in markdown
    for title in ("## Cost by model", "## By release", "## By prompt version"):
        assert title in markdown
    assert "our-own-llm" in markdown and "| r2 |" in markdown
    assert "| release | queries |" in markdown and "| prompt version | queries |" in markdown  # no blank header
    assert "By release" in render_html(report)


def test_a_lake_without_releases_or_costs_shows_no_such_sections(two_weeks: SampleLake) -> None:
    with Catalog(two_weeks.lake) as cat:
        report = build_report(cat, since=two_weeks.end - timedelta(days=7), until=two_weeks.end)
    assert report.by_release.height == 0 and report.by_prompt_version.height == 0
    markdown = render_markdown(report)
    assert "## By release" not in markdown and "## By prompt version" not in markdown


def test_the_report_shows_reformulation_rates_and_the_questions_asked_again(tmp_path: Path) -> None:
    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    t = datetime.now(UTC) - timedelta(hours=2)
    asked = [("q1", "s1", "엔비디아 실적 발표 언제야", 0), ("q2", "s1", "엔비디아 실적 발표일 알려줘", 40)]
    asked += [("q3", "s2", "환율 전망", 0)]
    events: list[object] = []
    for query_id, session, text, after in asked:
        ts = t + timedelta(seconds=after)
        events += [
            QueryReceived(query_id=query_id, session_id=session, query_text=text, ts=ts),
            QueryCompleted(query_id=query_id, session_id=session, latency_ms=5.0, intent="news_inquiry", ts=ts),
        ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"r": 1}))  # type: ignore[arg-type]
    with Catalog(tmp_path / "lake") as catalog:
        text = render_markdown(build_report(catalog, since=t - timedelta(days=1)))
    section = text.split("## Reformulations by intent")[1].split("##")[0]
    assert "| news_inquiry | 3 | 1 | 33.3% |" in section
    top = text.split("## Most reformulated questions")[1].split("##")[0]
    assert "엔비디아 실적 발표 언제야" in top and "환율 전망" not in top


def test_a_markdown_report_shows_control_characters_of_a_question_escaped(tmp_path: Path) -> None:
    """A Markdown report is read in a terminal too (`querylog report`, `less`): a question's ESC sequence or
    right-to-left override is written escaped, never obeyed."""
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    home = tmp_path / "home"
    with EventLog(home / "log") as log, QueryTracker(log).query("네이버\x1b[2J 주가\u202e") as q:
        q.classified("stock_analysis", 0.9)
    with ParquetSink(home / "lake") as sink:
        Projector(LogReader(home / "log"), sink).catch_up()
    with Catalog(home / "lake") as cat:
        markdown = render_markdown(build_report(cat, since=datetime.now(UTC) - timedelta(days=1)))
    assert "네이버\\x1b\\[2J 주가\\u202e" in markdown  # `[` escaped for Markdown, `\\x1b` left as it reads
    assert "\x1b" not in markdown and "\u202e" not in markdown


def test_a_long_question_is_shortened_in_the_report_saying_how_long_it_was(tmp_path: Path) -> None:
    """A 16,384-character question filled one 16,415-character Markdown table line and 200 lines of an HTML cell."""
    question = "삼성전자 실적 " + "가" * 16_000
    ts = datetime.now(UTC) - timedelta(hours=1)
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(
            Batch(
                events=[
                    QueryReceived(query_id="long", query_text=question, ts=ts),
                    QueryCompleted(query_id="long", latency_ms=3.0, ts=ts),
                ],
                checkpoint={"long": 1},
            )
        )
    with Catalog(tmp_path / "lake") as cat:
        report = build_report(cat, since=datetime.now(UTC) - timedelta(days=1))
    said = f"… ({len(question):,} characters)"
    for page in (render_markdown(report), render_html(report)):
        assert said in page and "삼성전자 실적 " in page
        assert "가" * 300 not in page


def test_an_empty_window_after_a_busy_one_shows_no_nan_and_small_latencies_keep_their_digits(
    two_weeks: SampleLake,
) -> None:
    from querylog._format import milliseconds

    with Catalog(two_weeks.lake) as cat:
        report = build_report(cat, since=two_weeks.end, until=two_weeks.end + timedelta(days=7))
    assert report.intents.height > 0 and report.intents["queries"].sum() == 0  # the week before had queries
    text = render_markdown(report)
    assert "nan" not in text.lower()
    # A cache hit answers in a third of a millisecond: "0 ms" said nothing (the report and the explorer's headline).
    assert [milliseconds(v) for v in (0.36, 2.54, 12.4, 1234.0, None)] == [
        "0.36 ms",
        "2.5 ms",
        "12 ms",
        "1,234 ms",
        "–",
    ]


def test_an_intent_or_env_no_query_has_is_named_with_those_the_lake_has(
    two_weeks: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --intent nope` was an empty report without a word: a typo and a quiet week read the same."""
    assert main(["--home", str(two_weeks.home), "report", "--intent", "nope", "--env", "production"]) == 0
    err = capsys.readouterr().err
    intents = sorted({q.intent or "unclassified" for q in two_weeks.queries})
    assert f"no query in the lake has --intent 'nope'; it has: {', '.join(intents)}" in err
    assert "no query in the lake has --env 'production'; it has: " in err
    assert main(["--home", str(two_weeks.home), "report", "--intent", intents[0]]) == 0
    assert "no query in the lake has" not in capsys.readouterr().err


def test_a_markdown_cell_cannot_unescape_itself_with_a_backslash() -> None:
    from querylog.analytics.report import _md_cell

    assert _md_cell("\\<b>x</b>") == "\\\\\\<b>x\\</b>"  # `\\` then `\<`: a backslash, then < as text
    assert _md_cell("C:\\path [1]") == "C:\\path \\[1]"  # a backslash before a letter escapes nothing: as typed
    assert (
        _md_cell("__init__ ~~x~~ AT&T &amp;") == "\\_\\_init\\_\\_ \\~\\~x\\~\\~ AT&T \\&amp;"
    )  # no bold, strike, entity
    assert _md_cell("stock_analysis") == "stock_analysis"  # an underscore inside a word is no emphasis: as typed


def test_each_response_s_cost_counts_under_its_own_model_exactly(tmp_path: Path) -> None:
    """A query that called gpt-4o then gpt-4o-mini had its whole cost and tokens under gpt-4o-mini (its last model),
    where /metrics splits them; a response naming no model and no cost was not "unpriced" in the release comparison,
    where /metrics counts it so; and a float sum's last digits hang on the order DuckDB adds rows in (cents on the
    edge, 0.0075 + 0.004 + 0.00125, printed $0.0127 or $0.0128 from one run to the next)."""
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    since = datetime.now(UTC) - timedelta(hours=1)
    with EventLog(tmp_path / "log") as log:
        tracker = QueryTracker(log)
        with tracker.query("두 모델", release="r1") as q:
            q.responded(model="gpt-4o", input_tokens=1_000, output_tokens=0, cost_usd=0.0025, answer="초안")
            q.responded(model="gpt-4o-mini", input_tokens=1_000, output_tokens=0, cost_usd=0.00015, answer="답")
        for cost in (0.1, 0.2):  # as floats, 0.30000000000000004 in either order
            with tracker.query(f"엣지 {cost}", release="r1") as q:
                q.responded(model="edge-model", input_tokens=10, output_tokens=0, cost_usd=cost, answer="답")
        with tracker.query("모델 없음", release="r2") as q:
            q.responded(answer="답")  # no model, no cost: an unpriced response, as /metrics counts it
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as cat:
        report = build_report(cat, since=since)
    cost = {r["model"]: r for r in report.cost_by_model.iter_rows(named=True)}
    assert set(cost) == {"gpt-4o", "gpt-4o-mini", "edge-model"}
    assert (cost["gpt-4o"]["queries"], cost["gpt-4o"]["cost_usd"], cost["gpt-4o"]["input_tokens"]) == (1, 0.0025, 1_000)
    assert (cost["gpt-4o-mini"]["queries"], cost["gpt-4o-mini"]["cost_usd"]) == (1, 0.00015)
    assert cost["edge-model"]["cost_usd"] == 0.3  # exact (decimal), whatever order the rows are added in
    releases = {r["value"]: r for r in report.by_release.iter_rows(named=True)}
    assert (releases["r1"]["unpriced"], releases["r2"]["unpriced"]) == (0, 1)
    assert "| edge-model | 2 | 2 | $0.3000 |" in render_markdown(report)


def test_cost_by_model_names_the_model_that_answered_when_none_was_requested_as_the_cost_counter_does(
    tmp_path: Path,
) -> None:
    """A response naming only the model that answered (an OTLP span's ``gen_ai.response.model``) was "unknown" in the
    report's cost by model while /metrics counted its cost under that model."""
    from querylog.logging.codec import decode
    from querylog.logging.metrics import MetricsProjection
    from querylog.logging.projection import Projector
    from querylog.logging.segments import EventLog, LogReader
    from querylog.logging.tracker import QueryTracker

    since = datetime.now(UTC) - timedelta(hours=1)
    with EventLog(tmp_path / "log") as log, QueryTracker(log).query("질문") as q:
        q.responded(response_model="gpt-4o-2024-08-06", input_tokens=1_000_000, output_tokens=0, answer="답")
    with ParquetSink(tmp_path / "lake") as sink:
        Projector(LogReader(tmp_path / "log"), sink).catch_up()
    with Catalog(tmp_path / "lake") as cat:
        [row] = build_report(cat, since=since).cost_by_model.iter_rows(named=True)
    projection = MetricsProjection()
    projection.apply(decode(line) for batch in LogReader(tmp_path / "log").iter_all() for line in batch.lines)
    exposition = projection.exposition().decode()
    assert row["model"] == "gpt-4o-2024-08-06" and row["priced"] == 1
    assert f'querylog_llm_cost_usd_total{{model="gpt-4o-2024-08-06"}} {row["cost_usd"]}' in exposition


def test_a_day_without_queries_is_a_row_of_zeros_in_the_volume_not_a_gap(tmp_path: Path) -> None:
    until = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = until - timedelta(days=4)
    events = []
    for n, day in enumerate((0, 3)):  # the days between them had no query (an outage, say)
        ts = since + timedelta(days=day, hours=5)
        events += [
            QueryReceived(query_id=f"q{n}", query_text="삼성전자", ts=ts),
            QueryCompleted(query_id=f"q{n}", latency_ms=120.0, ts=ts),
        ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"x": 1}))
    with Catalog(tmp_path / "lake") as cat:
        report = build_report(cat, since=since, until=until)
        hourly = build_report(cat, since=since + timedelta(days=3), until=since + timedelta(days=3, hours=8))
        # All history: 20,801 rows of zeros from 1970 on (18 s and 388 MB for the HTML); it starts at the first query.
        everything = build_report(cat, since=datetime(1970, 1, 1, tzinfo=UTC), until=until)
        part = build_report(cat, since=since + timedelta(hours=4), until=until - timedelta(hours=15))
        # A window of a quiet hour alone: its row of zeros, not "_none_" (walk).
        silent = build_report(cat, since=since + timedelta(days=1, hours=2), until=since + timedelta(days=1, hours=3))
    assert [(b.date().isoformat(), q) for b, q in report.volume.select("bucket", "queries").iter_rows()] == [
        ((since + timedelta(days=d)).date().isoformat(), 1 if d in (0, 3) else 0) for d in range(4)
    ]
    assert everything.volume.equals(report.volume)
    quiet = (since + timedelta(days=1)).date().isoformat()
    assert f"| {quiet} | 0 | 0 | – |" in render_markdown(report)
    assert silent.volume.select("bucket", "queries").rows() == [(since + timedelta(days=1, hours=2), 0)]
    # A window from 04:00 on the first day to 09:00 on the last: those rows say they hold only part of their day.
    rows = [line.split(" |")[0] for line in render_markdown(part).splitlines() if line.startswith("| 20")]
    days = [(since + timedelta(days=d)).date() for d in range(4)]
    assert rows == [f"| {days[0]} (04:00–00:00)", f"| {days[1]}", f"| {days[2]}", f"| {days[3]} (00:00–09:00)"]
    assert (
        hourly.bucket == "hour"
        and len(hourly.volume) == 8
        and hourly.volume["queries"].to_list() == [0] * 5 + [1] + [0] * 2
    )


def test_a_previous_window_retention_cut_is_said_and_its_counts_are_not_compared(tmp_path: Path) -> None:
    from querylog.analytics.upkeep import apply_retention

    until = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for day in range(1, 15):  # the same traffic every day: two weeks of three queries a day
        for n in range(3):
            ts, qid = until - timedelta(days=day, hours=-n - 1), f"q{day}-{n}"
            events += [
                QueryReceived(query_id=qid, query_text="삼성전자", ts=ts),
                QueryCompleted(query_id=qid, latency_ms=100.0 + n, ts=ts),
            ]
    lake = tmp_path / "lake"
    with ParquetSink(lake) as sink:
        sink.write(Batch(events=events, checkpoint={"x": 1}))
    with Catalog(lake) as cat:
        whole = build_report(cat, since=until - timedelta(days=7), until=until)
    apply_retention(lake, days=10, now=until)  # keeps the last 10 days: the previous window's last 3 of 7
    with Catalog(lake) as cat:
        cut = build_report(cat, since=until - timedelta(days=7), until=until)
        gone = build_report(cat, since=until - timedelta(days=3), until=until)  # previous: 6 to 3 days back, held
        older = build_report(cat, since=until - timedelta(days=12), until=until - timedelta(days=7))
    assert whole.held_from is None and "Retention" not in render_markdown(whole)
    assert "| Queries | 21 | 21 | ±0% |" in render_markdown(whole)
    assert cut.held_from == until - timedelta(days=10) and cut.previous_partial and not cut.previous_gone
    # 21 queries against the 9 retention left of the week before: not "▲133%", which traffic never did.
    md = render_markdown(cut)
    assert "| Queries | 21 | 9 | – |" in md and "| Latency p50 | 101 ms | 101 ms | ±0% |" in md
    assert f"Retention dropped the lake's days before {until - timedelta(days=10):%Y-%m-%d} 00:00 UTC" in md
    assert "its counts are not compared" in md and "its counts are not compared" in render_html(cut)
    assert [r[-1] for r in _table_rows(md, "intent")] == ["–"]
    assert gone.held_from is None and "| Queries | 9 | 9 | ±0% |" in render_markdown(gone)
    # A window that starts before the lake does: nothing of the one before it is held.
    assert older.previous_gone and "| Queries | 9 | – | – |" in render_markdown(older)
    assert "this window is held only from then on" in render_markdown(older)
    with Catalog(lake) as cat:  # a window wholly before the lake's start: nothing of it is held
        before = build_report(cat, since=until - timedelta(days=14), until=until - timedelta(days=10))
    assert "neither this window nor the one before it is held" in render_markdown(before)


def test_a_previous_window_before_the_lakes_first_query_is_not_compared(tmp_path: Path) -> None:
    """A lake begun two days ago reported "| Queries | 6 | 0 | new |" against the week before it existed."""
    until = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for day in range(1, 3):
        for n in range(3):
            ts, qid = until - timedelta(days=day, hours=-n - 1), f"q{day}-{n}"
            events += [
                QueryReceived(query_id=qid, query_text="하이닉스", ts=ts),
                QueryCompleted(query_id=qid, latency_ms=100.0, ts=ts),
            ]
    with ParquetSink(tmp_path / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"x": 1}))
    first = until - timedelta(days=2, hours=-1)
    with Catalog(tmp_path / "lake") as cat:
        week = build_report(cat, since=until - timedelta(days=7), until=until)  # the week before: before the lake
        day = build_report(cat, since=until - timedelta(days=1), until=until)  # the day before: the lake's first
    md = render_markdown(week)
    assert week.previous_gone and "| Queries | 6 | – | – |" in md
    assert f"The lake starts with its first query, {first:%Y-%m-%d %H:%M} UTC:" in md
    assert "nothing is compared" in md and "The lake starts" in render_html(week)
    # A previous window the lake starts within is compared: a quiet first hour looks the same as a lake not begun.
    assert day.held_from is None and "| Queries | 3 | 3 | ±0% |" in render_markdown(day)


def _table_rows(markdown: str, first_header: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows
