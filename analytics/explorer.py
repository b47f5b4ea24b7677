"""The Streamlit explorer: intent trends, latency, stages, search and query timelines over the lake."""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import altair as alt
import polars as pl
import streamlit as st

from querylog._format import milliseconds, percent, shortened, visible
from querylog.analytics.catalog import CatalogError
from querylog.analytics.queries import BUCKETS, Answer, Bucket, Filters, LakeQueries, Summary, open_catalog
from querylog.analytics.search_groups import group_hits
from querylog.config import ConfigError, Settings

if TYPE_CHECKING:
    from querylog.analytics.aliases import AliasFile
    from querylog.analytics.upkeep import SearchField

__all__ = ["SHOWN_CHARS", "highlight_html", "highlight_spans", "main", "plain", "shown_answer", "trace_url"]

_HANGUL: Final = re.compile(r"[\uac00-\ud7a3]")
_WORD: Final = re.compile(r"[^\s\"'“”‘’.,!?()\[\]{}<>:;/\\|]+")


# -- pure helpers (tested without Streamlit) ---------------------------------------------------------------
def highlight_spans(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, matched) runs, marking where the words of `query` occur, case-insensitively.

    A Korean word that is not found whole is tried without its last syllables, down to two, because
    particles and endings attach to the word (네이버는 → 네이버); other words must match whole.
    """
    text_nfc, query_nfc = unicodedata.normalize("NFC", text), unicodedata.normalize("NFC", query)
    marked = [False] * len(text_nfc)
    for word in _WORD.findall(query_nfc):
        shortest = 2 if _HANGUL.search(word) else len(word)
        for end in range(len(word), shortest - 1, -1):
            hits = list(re.finditer(re.escape(word[:end]), text_nfc, re.IGNORECASE))
            if hits:
                for m in hits:
                    marked[m.start() : m.end()] = [True] * (m.end() - m.start())
                break
    spans: list[tuple[str, bool]] = []
    for ch, on in zip(text_nfc, marked, strict=True):
        if spans and spans[-1][1] == on:
            spans[-1] = (spans[-1][0] + ch, on)
        else:
            spans.append((ch, on))
    return spans


def highlight_html(text: str, query: str) -> str:
    """`text`, HTML-escaped, its control and bidirectional characters shown escaped (a U+202E would draw the rest
    of the page backwards), with the matches of `query` in ``<mark>``."""
    spans = highlight_spans(visible(text), query)
    return "".join(f"<mark>{html.escape(s)}</mark>" if on else html.escape(s) for s, on in spans)


#: The most of a question the timeline shows (a question may be 16,384 characters).
SHOWN_CHARS: Final = 2_000


def plain(text: str, limit: int = SHOWN_CHARS) -> str:
    """A user's text as this page shows it: control and bidirectional characters escaped, cut past `limit`."""
    return shortened(text, limit)


def trace_url(trace_id: str | None, host: str | None = None) -> str | None:
    """The Langfuse page of a trace, when ``LANGFUSE_HOST`` is set. The id is a producer's: quoted, so that it names
    one path segment and nothing else (``abc) [x](http://…`` would otherwise add a link of its own)."""
    host = host if host is not None else os.environ.get("LANGFUSE_HOST")
    if not host or not trace_id:
        return None
    return f"{host.rstrip('/')}/trace/{quote(trace_id, safe='')}"


def shown_answer(text: str) -> str:
    """An answer as the timeline shows it: its lines kept, each `visible` (a U+202E reverses nothing after it)."""
    return "\n".join(visible(line) for line in text.split("\n"))


# -- page sections ------------------------------------------------------------------------------------------
NO_DATA: Final = "No data for these filters: widen the dates, or clear an intent or env."
FEW_BUCKETS: Final = 3  # at most this many time buckets: bars, since an area through one point draws nothing
#: Past this many buckets a trend draws no point per bucket: thousands of dots hide the line and slow the page.
POINTS_MAX_BUCKETS: Final = 200
#: Hourly trends over more days than this are drawn by day (a year by the hour is 8,760 buckets per intent).
HOURLY_MAX_DAYS: Final = 31
#: The dates first shown: the lake's last this many days. One stray old event (a backfill, a test post dated last
#: year) would otherwise spread every chart over years with the data in a sliver at the right edge.
DEFAULT_DAYS: Final = 90


def _chart(where: Any, frame: pl.DataFrame, value: str, chart: Callable[[alt.Chart], alt.Chart]) -> None:
    """`chart` of `frame`, or a message saying there is nothing to draw (never empty axes)."""
    if frame.is_empty() or frame[value].null_count() == frame.height:
        where.info(NO_DATA)
        return
    where.altair_chart(chart(alt.Chart(frame)), width="stretch")


def _over_time(base: alt.Chart, buckets: int, bucket: Bucket, *, lines: bool = False) -> alt.Chart:
    """Marks over time that show at any data size: for a few buckets, wide bars, one per bucket; beyond, areas
    (stacked shares and counts) or `lines` (a rate), with their points on a time axis."""
    if buckets <= FEW_BUCKETS:
        x = alt.X("bucket:O", timeUnit="utcyearmonthdatehours", title=None)  # the explorer's dates are UTC
        if bucket == "day":
            x = alt.X("bucket:O", timeUnit="utcyearmonthdate", title=None)
        chart: alt.Chart = base.mark_bar().encode(x=x)
    elif lines:
        chart = base.mark_line(point=buckets <= POINTS_MAX_BUCKETS).encode(x=alt.X("bucket:T", title=None))
    else:
        points = buckets <= POINTS_MAX_BUCKETS
        chart = base.mark_area(line=True, point=points, opacity=0.7).encode(x=alt.X("bucket:T", title=None))
    return chart


def _ms_format(column: pl.Series) -> str:
    """One decimal, or as many as the column's largest value needs to show (a cache hit's 0.04 ms read 0.0)."""
    largest = column.abs().max() if column.dtype.is_numeric() else None
    if not isinstance(largest, int | float) or largest >= 10:
        return "%.1f"
    return "%.2f" if largest >= 1 else "%.3f"


def _table(where: Any, frame: pl.DataFrame, key: str, config: dict[str, Any] | None = None) -> None:
    """A dataframe with readable numbers: milliseconds without noise digits, rates and shares as percents."""
    formats: dict[str, Any] = {}
    for name in frame.columns:
        if name.endswith("_ms"):
            label = name.removesuffix("_ms") + " (ms)"
            formats[name] = st.column_config.NumberColumn(label, format=_ms_format(frame.get_column(name)))
        elif name.endswith(("_rate", "share", "of_received")):
            formats[name] = st.column_config.NumberColumn(format="percent")
        elif name.startswith("mean_"):
            formats[name] = st.column_config.NumberColumn(format="%.2f")
    where.dataframe(frame, hide_index=True, key=key, column_config={**formats, **(config or {})})


def _delta(now: float | None, before: float | None, *, scale: float = 1.0, unit: str = "") -> str | None:
    if now is None or before is None:
        return None
    return f"{(now - before) * scale:+,.1f}{unit}"


def _sidebar(lq: LakeQueries, first: datetime, last: datetime) -> tuple[Filters, Bucket]:
    st.sidebar.header("Filters")
    shown_from = max(first.date(), last.date() - timedelta(days=DEFAULT_DAYS - 1))
    picked = st.sidebar.date_input(
        "Dates (UTC)", value=(shown_from, last.date()), min_value=first.date(), max_value=last.date(), key="dates"
    )
    if shown_from > first.date():
        st.sidebar.caption(
            f"First shown: the last {DEFAULT_DAYS} days with data. The lake goes back to {first.date():%Y-%m-%d}."
        )
    days: tuple[date, ...] = tuple(picked) if isinstance(picked, tuple | list) else (picked,)  # type: ignore[arg-type]
    start = days[0] if days else first.date()
    end = days[1] if len(days) > 1 else start  # a half-picked range means that one day
    intents = st.sidebar.multiselect("Intents (none = all)", lq.intents(), key="intents")
    envs = st.sidebar.multiselect("Envs (none = all)", lq.envs(), key="envs")
    # Schema v2: shown once the lake holds queries recorded with a release or a prompt version.
    releases = lq.releases()
    chosen_releases = st.sidebar.multiselect("Releases (none = all)", releases, key="releases") if releases else []
    prompts = lq.prompt_versions()
    chosen_prompts = st.sidebar.multiselect("Prompt versions (none = all)", prompts, key="prompts") if prompts else []
    default = 1 if (end - start) >= timedelta(days=3) else 0
    bucket = st.sidebar.radio("Trend bucket", BUCKETS, index=default, horizontal=True, key="bucket")
    span_days = (end - start).days + 1
    if bucket == "hour" and span_days > HOURLY_MAX_DAYS:
        st.sidebar.caption(
            f"By the hour, {span_days} days would be {span_days * 24:,} buckets: the trends are drawn by day. "
            f"Pick {HOURLY_MAX_DAYS} days or fewer for hours."
        )
        bucket = "day"
    st.sidebar.caption(f"Lake: {lq.catalog.lake_dir}")
    chosen = {"releases": tuple(chosen_releases), "prompt_versions": tuple(chosen_prompts)}
    return Filters.for_dates(start, end, intents=tuple(intents), envs=tuple(envs), **chosen), bucket


def _headline(now: Summary, before: Summary) -> None:
    cols = st.columns(6)
    # Deltas compare with the window of equal length before; with nothing there, there is nothing to compare.
    cols[0].metric(
        "Queries",
        f"{now.queries:,}",
        delta=f"{now.queries - before.queries:+,}" if before.queries else None,
        help="changes: vs the window of equal length before",
    )
    cols[1].metric(
        "Error rate",
        percent(now.error_rate),
        delta_color="inverse",
        delta=_delta(now.error_rate, before.error_rate, scale=100, unit=" pt"),
    )
    cols[2].metric(
        "Latency p95",
        milliseconds(now.p95_ms),
        delta_color="inverse",
        delta=_delta(now.p95_ms, before.p95_ms, unit=" ms"),
    )
    cols[3].metric(
        "Cache hit rate",
        percent(now.cache_hit_rate),
        delta=_delta(now.cache_hit_rate, before.cache_hit_rate, scale=100, unit=" pt"),
    )
    cols[4].metric(
        "No-result rate",
        percent(now.no_result_rate),
        delta=_delta(now.no_result_rate, before.no_result_rate, scale=100, unit=" pt"),
        delta_color="inverse",
    )
    cols[5].metric(
        "Mean quality",
        "–" if now.mean_quality is None else f"{now.mean_quality:.2f}",
        delta=_delta(now.mean_quality, before.mean_quality),
    )


def _trends(lq: LakeQueries, f: Filters, bucket: Bucket) -> None:
    st.subheader("Intent trend")
    trend = lq.intent_trend(f, bucket)
    if trend.is_empty():
        st.info(NO_DATA)
        return
    buckets = trend["bucket"].n_unique()
    tooltip: list[Any] = ["bucket:T", "intent:N", "queries:Q", alt.Tooltip("share:Q", format=".1%")]
    color = alt.Color("intent:N", title="intent")
    left, right = st.columns(2)
    _chart(
        left,
        trend,
        "queries",
        lambda c: _over_time(c, buckets, bucket).encode(
            color=color, tooltip=tooltip, y=alt.Y("queries:Q", stack=True, title="queries")
        ),
    )
    _chart(
        right,
        trend,
        "share",
        lambda c: _over_time(c, buckets, bucket).encode(
            color=color,
            tooltip=tooltip,
            y=alt.Y("share:Q", stack="normalize", title="share", axis=alt.Axis(format="%")),
        ),
    )
    totals = lq.intent_totals(f)
    _table(st, totals, "intent_totals")
    st.subheader("Error rate")
    errors = lq.error_trend(f, bucket)
    _chart(
        st,
        errors,
        "error_rate",
        lambda c: _over_time(c, errors["bucket"].n_unique(), bucket, lines=True).encode(
            y=alt.Y("error_rate:Q", axis=alt.Axis(format="%"), title="error rate"),
            tooltip=["bucket:T", "finished:Q", "failed:Q", alt.Tooltip("error_rate:Q", format=".1%")],
        ),
    )


def _latency(lq: LakeQueries, f: Filters, bucket: Bucket) -> None:
    st.subheader("Latency percentiles by intent")
    by_intent = lq.latency_by_intent(f)
    long = by_intent.unpivot(
        index="intent", on=["p50_ms", "p95_ms", "p99_ms"], variable_name="percentile", value_name="ms"
    )
    _chart(
        st,
        long,
        "ms",
        lambda c: c.mark_bar().encode(
            x=alt.X("intent:N", title=None),
            xOffset="percentile:N",
            y=alt.Y("ms:Q", title="ms"),
            color="percentile:N",
            tooltip=["intent:N", "percentile:N", alt.Tooltip("ms:Q", format=",.0f")],
        ),
    )
    _table(st, by_intent, "latency_by_intent")
    st.subheader("Latency over time")
    trend = lq.latency_trend(f, bucket).unpivot(
        index="bucket", on=["p50_ms", "p95_ms", "p99_ms"], variable_name="percentile", value_name="ms"
    )
    _chart(
        st,
        trend,
        "ms",
        lambda c: c.mark_line(point=True).encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y("ms:Q", title="ms"),
            color="percentile:N",
            tooltip=["bucket:T", "percentile:N", alt.Tooltip("ms:Q", format=",.0f")],
        ),
    )


def _stages(lq: LakeQueries, f: Filters) -> None:
    st.subheader("Stage funnel")
    funnel = lq.funnel(f)
    _chart(
        st,
        funnel,
        "queries",
        lambda c: c.mark_bar().encode(
            y=alt.Y("step:N", sort=None, title=None),
            x=alt.X("queries:Q"),
            tooltip=["step:N", "queries:Q", "dropped:Q", alt.Tooltip("drop_rate:Q", format=".1%")],
        ),
    )
    _table(st, funnel, "funnel")
    st.subheader("Stage latency")
    stages = lq.latency_by_stage(f)
    _table(st, stages, "stage_latency")
    left, right = st.columns(2)
    left.subheader("Errors")
    _table(left, lq.errors(f), "errors")
    right.subheader("Cache by intent")
    _table(right, lq.cache_by_intent(f), "cache")


def _search(settings: Settings, lq: LakeQueries, f: Filters) -> None:
    st.subheader("Search what users asked, or what they were answered")
    text = st.text_input("Search", placeholder="네이버 주가, NVIDIA news …", key="search")
    field: SearchField = "answers" if st.radio(
        "In", ["questions", "answers"], horizontal=True, key="search_in"
    ) == "answers" else "queries"  # fmt: skip
    if not text.strip():
        st.session_state["search_hits"] = {}  # cleared with the search: the timeline picker offers recent queries
        st.caption(
            "Korean, English and mixed text; particles and missing spaces are fine. Company names find each other "
            "(현대차, Hyundai Motor, 005380), 초성 works (ㄴㅇㅂ), and a typo is forgiven when nothing else matches."
        )
        return
    from querylog.analytics.upkeep import LakeSearch, UpkeepError

    aliases = None
    if settings.aliases_path is not None:
        watched = _alias_file(str(settings.aliases_path))
        aliases = watched.current()  # read again when the file changes; a bad change keeps the previous one
        if watched.error:
            st.warning(f"The alias file is not in use as it stands: {watched.error}")
    try:
        search = LakeSearch(settings.home, field=field)
        with st.spinner("Bringing the index up to date…"):
            search.sync(lq.catalog)
        intent = f.intents[0] if len(f.intents) == 1 else None  # the index filters by one intent
        hits = search.search(text, limit=2000, intent=intent, since=f.since, aliases=aliases)
    except UpkeepError as exc:
        st.warning(f"Search is unavailable: {exc}")
        return
    # The index knows text, time and intent; the sidebar's other filters (env, end date, several intents)
    # are applied here, against the lake.
    selected = lq.matching(f, [h.query_id for h in hits])
    hits = [h for h in hits if h.query_id in selected]
    if not hits:
        st.session_state["search_hits"] = {}  # the Queries tab's picker offers no hits of an earlier search
        st.info(f"No {'answers' if field == 'answers' else 'queries'} match this search in this selection.")
        return
    if st.toggle("One row per query", key="search_ungrouped"):
        hits = hits[:50]
        st.caption(f"{len(hits)} result(s), best first")
        for rank, hit in enumerate(hits, 1):
            st.html(
                f"<div style='margin:.2rem 0'><b>{rank}.</b> {highlight_html(hit.query_text, text)} "
                f"<span style='color:#777;font-size:.85em'>· {html.escape(hit.intent or '–')} · "
                f"{hit.ts:%Y-%m-%d %H:%M} · score {float(hit.score):g}{_why(hit.why)}</span></div>"
            )
        # Offered first in the timeline picker of the Queries tab.
        st.session_state["search_hits"] = {hit.query_id: hit.query_text for hit in hits}
        return
    groups = group_hits(lq.catalog, [(float(h.score), field, h) for h in hits], limit=50, filters=f)
    st.caption(f"{len(groups)} distinct question(s), best match first; ×N: how often it was asked in these dates")
    for rank, group in enumerate(groups, 1):
        intents = html.escape(", ".join(group.intents) or "–")
        when = f"last {group.last_asked:%Y-%m-%d %H:%M}"
        if group.times_asked > 1:
            when += f", first {group.first_asked:%Y-%m-%d %H:%M}"
        st.html(
            f"<div class='ql-question' style='margin:.2rem 0'><b>{rank}.</b> "
            f"{highlight_html(group.query_text, text)} "
            f"<b style='color:#2b6cb0'>×{group.times_asked}</b> "
            f"<span style='color:#777;font-size:.85em'>· {intents} · {when} · score {group.score:g}"
            f"{_why(group.why)}</span></div>"
        )
    # The newest query of each question, offered first in the timeline picker of the Queries tab.
    st.session_state["search_hits"] = {g.query_ids[0]: g.query_text for g in groups if g.query_ids}


@st.cache_resource
def _alias_file(path: str) -> AliasFile:
    """One watcher per alias file for the life of the explorer, so that a change is read once."""
    from querylog.analytics.aliases import AliasFile

    return AliasFile(Path(path))


def _why(reason: str) -> str:
    """How a hit outside the exact tier matched (alias, 초성, typo), for the result line."""
    return f" · <i>{html.escape(reason)}</i>" if reason else ""


def _links(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Adds a `trace` link column when LANGFUSE_HOST is set."""
    host = os.environ.get("LANGFUSE_HOST")
    if not host or "trace_id" not in frame.columns:
        return frame, {}
    prefix = f"{host.rstrip('/')}/trace/"
    frame = frame.with_columns(
        pl.when(pl.col("trace_id").is_not_null())
        .then(pl.lit(prefix) + pl.col("trace_id"))
        .otherwise(None)
        .alias("trace")
    )
    return frame, {"trace": st.column_config.LinkColumn("trace", display_text=r".*/trace/(.*)")}


def _queries(lq: LakeQueries, f: Filters) -> None:
    left, right = st.columns(2)
    left.subheader("Top queries")
    _table(left, lq.top_queries(f, 20), "top_queries")
    right.subheader("Search found nothing")
    _table(right, lq.no_result_queries(f, 20), "no_results")
    st.subheader("Recent queries")
    recent, config = _links(lq.recent_queries(f, 200))
    _table(st, recent, "recent", config)
    st.subheader("A query's timeline")
    found: dict[str, str] = st.session_state.get("search_hits", {})
    labels = {**dict(zip(recent["query_id"].to_list(), recent["query_text"].to_list(), strict=True)), **found}
    choices = list(dict.fromkeys([*found, *recent["query_id"].to_list()]))
    if not choices:
        st.info("No queries in this selection.")
        return
    query_id = st.selectbox(
        "Query", choices, key="timeline_query", format_func=lambda q: f"{plain(labels.get(q, ''), 60)}  ·  {q}"
    )
    _timeline(lq, query_id)


def _answer(answer: Answer | None) -> None:
    """What the user was told, and from which documents (queries recorded before schema v2 have neither)."""
    if answer is None:
        return
    if answer.answer_text is None and answer.sources.is_empty():
        if answer.answer_chars is not None:
            st.caption(f"Answer of {answer.answer_chars:,} characters; its text was not kept.")
        return
    facts = [
        ("response type", answer.response_type),
        ("finish", answer.finish_reason),
        ("model", answer.response_model or answer.model),
        ("cost", None if answer.cost_usd is None else f"${answer.cost_usd:,.5f} ({answer.cost_source})"),
        ("first token", None if answer.ttft_ms is None else milliseconds(answer.ttft_ms)),
        ("release", answer.release),
        ("prompt", answer.prompt_version),
    ]
    st.markdown("**Answer**")
    if answer.answer_text == "":
        st.caption("The answer was empty.")
    elif answer.answer_text is not None:
        # Shown as text, never as Markdown: an answer is user-visible content, not markup for this page.
        st.text(shown_answer(answer.answer_text))
    # As text too: a release, prompt version or model name comes from a producer, and is not markup either.
    st.text(plain("  ·  ".join(f"{name}: {value}" for name, value in facts if value)))
    if not answer.sources.is_empty():
        st.markdown("**Sources**")
        _table(st, answer.sources, "timeline_sources")


def _timeline(lq: LakeQueries, query_id: str) -> None:
    events = lq.query_events(query_id)
    if events.is_empty():
        st.info("No events for this query id.")
        return
    text = events.filter(pl.col("event_type") == "query_received")["query_text"].to_list()
    # As text, never Markdown: a question holding `$x$`, `:red[…]` or a link is shown as asked.
    st.text(plain(text[0]) if text else query_id)
    trace = trace_url(events["trace_id"].drop_nulls().first())  # type: ignore[arg-type]
    if trace:
        st.link_button("Open trace in Langfuse", trace)  # a button, not Markdown built from a producer's id
    _answer(lq.answer(query_id))
    # A stage event is emitted when the stage ends and carries its duration: draw it as a bar ending there.
    spans = events.with_columns(
        (pl.col("offset_ms") - pl.col("duration_ms").fill_null(0)).alias("start_ms"),
        pl.col("offset_ms").alias("end_ms"),
    )
    st.altair_chart(
        alt.Chart(spans)
        .mark_bar(size=14)
        .encode(
            y=alt.Y("event_type:N", sort=None, title=None),
            x=alt.X("start_ms:Q", title="ms since received"),
            x2="end_ms:Q",
            color="event_type:N",
            tooltip=[
                "event_type:N",
                "ts:T",
                alt.Tooltip("offset_ms:Q", format=",.1f"),
                alt.Tooltip("duration_ms:Q", format=",.1f"),
            ],
        )
        + alt.Chart(spans)
        .mark_point(filled=True, size=60)
        .encode(y=alt.Y("event_type:N", sort=None), x="end_ms:Q", color="event_type:N"),
        width="stretch",
    )
    shown = events.select(
        [c for c in events.columns if c not in ("query_text", "trace_id") and events[c].null_count() < events.height]
    )
    _table(st, shown, "timeline_events")


def _people(lq: LakeQueries, f: Filters) -> None:
    stats = lq.session_stats(f)
    cols = st.columns(4)
    cols[0].metric("Sessions", f"{stats.sessions:,}")
    cols[1].metric("Queries per session", "–" if stats.mean_queries is None else f"{stats.mean_queries:.2f}")
    cols[2].metric("Sessions with repeats", f"{stats.sessions_with_repeats:,}")
    cols[3].metric("Repeated questions", f"{stats.repeated_queries:,}")
    _table(st, lq.sessions(f, 200), "sessions")
    st.subheader("Reformulations")
    st.caption(
        "A query is reformulated when the next query of its session, within 5 minutes, says nearly the same "
        "thing (at least half of their Hangul characters, letter pairs and companies in common, spaces aside; a "
        "company counts by any of its names in the alias file, and two different companies are never the same "
        "question): the user asked again."
    )
    left, right = st.columns(2)
    _table(left, lq.reformulation_by_intent(f), "reformulation_by_intent")
    _table(right, lq.most_reformulated(f, 20), "most_reformulated")
    left, right = st.columns(2)
    left.subheader("Feedback by intent")
    _table(left, lq.feedback_by_intent(f), "feedback")
    right.subheader("Quality scores")
    _chart(
        right,
        lq.quality_distribution(f),
        "queries",
        lambda c: c.mark_bar().encode(
            x=alt.X("bin_start:Q", bin="binned", title="quality score"),
            x2="bin_end:Q",
            y="queries:Q",
            tooltip=["bin_start:Q", "bin_end:Q", "queries:Q"],
        ),
    )


def main() -> None:
    st.set_page_config(page_title="querylog explorer", page_icon="🔎", layout="wide")
    st.title("querylog explorer")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
    try:
        with open_catalog(settings.lake_dir, names=settings.company_names()) as catalog:
            lq = LakeQueries(catalog, snapshot=True)
            bounds = lq.time_bounds()
            if bounds is None:
                st.info(
                    f"The lake at {settings.lake_dir} is empty. Start the API with `querylog serve --demo 200` "
                    "and come back."
                )
                return
            filters, bucket = _sidebar(lq, *bounds)
            _headline(lq.summary(filters), lq.summary(filters.previous()))
            tabs = st.tabs(["Trends", "Latency", "Stages & errors", "Search", "Queries", "Sessions & feedback"])
            with tabs[0]:
                _trends(lq, filters, bucket)
            with tabs[1]:
                _latency(lq, filters, bucket)
            with tabs[2]:
                _stages(lq, filters)
            with tabs[3]:
                _search(settings, lq, filters)
            with tabs[4]:
                _queries(lq, filters)
            with tabs[5]:
                _people(lq, filters)
    except CatalogError as exc:
        st.error(f"The lake could not be read: {exc}")


if __name__ == "__main__":
    main()
