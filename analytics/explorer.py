"""The Streamlit explorer: intent trends, latency, stages, search and query timelines over the lake."""

from __future__ import annotations

import html
import itertools
import os
import re
import shlex
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import altair as alt
import polars as pl
import pyarrow as pa
import streamlit as st

from querylog._format import milliseconds, percent, shortened, visible
from querylog.analytics._search_text import fold, unquoted
from querylog.analytics.catalog import CatalogError
from querylog.analytics.lake_generation import lake_signature
from querylog.analytics.queries import BUCKETS, Answer, Bucket, Filters, LakeQueries, Summary, open_catalog
from querylog.analytics.report import retention_cut
from querylog.analytics.search_groups import AskedQuestion, find_questions, questions_of, window_hits
from querylog.analytics.upkeep import UpkeepError
from querylog.commands import unreadable_file, unreadable_lake
from querylog.config import ConfigError, Settings
from querylog.logging.events import EVENT_CLASSES, shows_nothing
from querylog.logging.reformulation import Names

if TYPE_CHECKING:
    from querylog.analytics.aliases import Aliases, AliasFile
    from querylog.analytics.search import SearchHit
    from querylog.analytics.upkeep import LakeSearch, SearchField

__all__ = [
    "SHOWN_CHARS",
    "highlight_html",
    "highlight_spans",
    "main",
    "markdown_code",
    "plain",
    "shown_answer",
    "snippet",
    "trace_url",
]

_HANGUL: Final = re.compile(r"[\uac00-\ud7a3]")
_WORD: Final = re.compile(r"[^\s\"'“”‘’.,!?()\[\]{}<>:;/\\|]+")


# -- pure helpers (tested without Streamlit) ---------------------------------------------------------------
def _folded(text: str) -> tuple[str, list[int]]:
    """`text` as search compares it (`_search_text.fold`, character by character: ``ＳＫ`` is ``sk``, ``①`` is
    ``1``, what draws nothing goes), without whitespace (``삼성 전자`` holds 삼성전자); and for each folded character,
    the index of the character of `text` it comes from."""
    folded: list[str] = []
    source: list[int] = []
    for i, piece in enumerate(fold(pa.array(list(text), pa.string())).to_pylist()):
        for char in piece:
            if not char.isspace():
                folded.append(char)
                source.append(i)
    return "".join(folded), source


def highlight_spans(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, matched) runs, marking where the words of `query` occur, in the form search compares
    (`_folded`: case, full-width forms and spacing inside a word do not matter).

    A Korean word that is not found whole is tried without its last syllables, down to two, because
    particles and endings attach to the word (네이버는 → 네이버); other words must match whole.
    """
    text_nfc, query_nfc = unicodedata.normalize("NFC", text), unicodedata.normalize("NFC", query)
    folded, source = _folded(text_nfc)
    marked = [False] * len(text_nfc)
    for word in (_folded(w)[0] for w in _WORD.findall(query_nfc)):
        shortest = 2 if _HANGUL.search(word) else len(word)
        for end in range(len(word), max(shortest, 1) - 1, -1):
            hits = list(re.finditer(re.escape(word[:end]), folded))
            if hits:
                for m in hits:  # from its first character to its last, but a space (삼성 전자: two marks)
                    for i in range(source[m.start()], source[m.end() - 1] + 1):
                        marked[i] = marked[i] or not text_nfc[i].isspace()
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


def shown_answer(text: str, limit: int = SHOWN_CHARS) -> str:
    """An answer as the timeline shows it: its lines kept, each `visible` (a U+202E reverses nothing after it), cut
    past `limit` characters, saying how long it was (an answer may be 16,384 characters)."""
    shown = "\n".join(visible(line) for line in text.split("\n"))
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown):,} characters)"


#: The most of an answer a search result shows: the part around what matched.
SNIPPET_CHARS: Final = 160
#: The most of a question a search result shows (the part around what matched): one long question would fill the
#: page, or widen it past the screen.
QUESTION_CHARS: Final = 400


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The part of `text` (`visible`, NFC) around the first match of `query`, at most `width` characters, with "…"
    where it was cut: what a search in the answers found, without the rest of a long answer."""
    spans = highlight_spans(visible(text), query)
    shown = "".join(piece for piece, _ in spans)  # NFC, as highlighting reads it
    if len(shown) <= width:
        return shown
    offsets = itertools.accumulate((len(piece) for piece, _ in spans), initial=0)
    first = next((at for at, (_, matched) in zip(offsets, spans, strict=False) if matched), 0)
    start = max(0, min(first - width // 4, len(shown) - width))  # a little context before the match
    end = start + width
    return ("…" if start else "") + shown[start:end] + ("…" if end < len(shown) else "")


def markdown_code(text: str) -> str:
    """`text` as one Markdown code span, shown as written: a path holding ``**x**`` or ``$x$`` is neither bold nor
    math. The fence is one backtick longer than any run of them inside; control characters are escaped."""
    text = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


# -- page sections ------------------------------------------------------------------------------------------
NO_DATA: Final = (
    "No data for these filters and dates: widen the dates, or clear a filter (charts of finished queries leave out "
    "those still in progress)."
)
#: The quality histogram of queries that exist but carry no score: widening the dates would not help.
NO_SCORES: Final = (
    "None of these queries has a quality score: a score comes with a response (`q.responded(quality_score=…)`) or "
    "a `query_completed` event's `quality_score`."
)
#: An axis of query counts ticks whole numbers (one query drew ticks 0.0, 0.1, … 1.0).
_COUNTS: Final = alt.Axis(tickMinStep=1, format="d")
#: Milliseconds in a tooltip: up to three decimals, none trailing (a 0.566 ms step read "1", a 0.03 ms one "0.0").
_MS_TOOLTIP: Final = ",.3~f"
FEW_BUCKETS: Final = 3  # at most this many time buckets: bars, since an area through one point draws nothing
#: Past this many buckets a trend draws no point per bucket: thousands of dots hide the line and slow the page.
POINTS_MAX_BUCKETS: Final = 200
#: Hourly trends over more days than this are drawn by day (a year by the hour is 8,760 buckets per intent).
HOURLY_MAX_DAYS: Final = 31
#: The dates first shown: the lake's last this many days. One stray old event (a backfill, a test post dated last
#: year) would otherwise spread every chart over years with the data in a sliver at the right edge.
DEFAULT_DAYS: Final = 90
#: Dates picked from this many days on are trended by the day, fewer by the hour (docs/explorer.md).
DAY_BUCKET_FROM_DAYS: Final = 3
#: Intents the trend colours one by one: the palette has 10 colours; the rest are drawn together as "other".
TREND_INTENTS: Final = 9
#: Intents drawn in the latency chart (three bars each); the table beside it has every one.
LATENCY_INTENTS: Final = 25
_BUCKET_STEP: Final[dict[str, str]] = {"hour": "1h", "day": "1d"}
#: A bucket as its tooltip names it, in UTC as the dates are (Vega-Lite would show the browser's time zone).
_WHEN_FORMAT: Final[dict[str, str]] = {"hour": "%Y-%m-%d %H:00 UTC", "day": "%Y-%m-%d (UTC)"}


def _chart(
    where: Any,
    frame: pl.DataFrame,
    value: str,
    chart: Callable[[alt.Chart], alt.Chart],
    *,
    zeros_are_empty: bool = False,
    empty: str = NO_DATA,
) -> None:
    """`chart` of `frame`, or `empty`, saying why there is nothing to draw (never empty axes). With `zeros_are_empty`,
    a frame whose values are all zero is nothing too (a funnel or a histogram of no queries has a row per step)."""
    if _nothing_to_draw(frame, value, zeros_are_empty=zeros_are_empty):
        where.info(empty)
        return
    where.altair_chart(chart(alt.Chart(_readable(frame))), width="stretch")  # intents label the axes and legends


def _nothing_to_draw(frame: pl.DataFrame, value: str, *, zeros_are_empty: bool) -> bool:
    if frame.is_empty() or frame[value].null_count() == frame.height:
        return True
    return zeros_are_empty and bool((frame[value].fill_null(0) == 0).all())


def _over_time(
    base: alt.Chart, buckets: int, bucket: Bucket, *, lines: bool = False, valued: int | None = None
) -> alt.Chart:
    """Marks over time that show at any data size: for a few buckets, wide bars, one per bucket; beyond, areas
    (stacked shares and counts) or `lines` (a rate, a latency), with their points on a time axis. A line breaks
    at a bucket without a value rather than bridging it, so a value between two gaps shows only as its point: the
    points are drawn while `valued` (the buckets holding a value; all of them unless said) are not too many."""
    if buckets <= FEW_BUCKETS:
        x = alt.X("bucket:O", timeUnit="utcyearmonthdatehours", title=None)  # the explorer's dates are UTC
        if bucket == "day":
            x = alt.X("bucket:O", timeUnit="utcyearmonthdate", title=None)
        chart: alt.Chart = base.mark_bar().encode(x=x)
    elif lines:
        points = (buckets if valued is None else valued) <= POINTS_MAX_BUCKETS
        chart = base.mark_line(point=points).encode(x=_utc_x())
    else:
        points = buckets <= POINTS_MAX_BUCKETS
        chart = base.mark_area(line=True, point=points, opacity=0.7).encode(x=_utc_x())
    return chart


def _utc_x() -> alt.X:
    """The buckets' time axis, in UTC as the dates are picked: a time scale is drawn in the browser's zone otherwise
    (in Seoul the charts were nine hours off the tables)."""
    return alt.X("bucket:T", title=None, scale=alt.Scale(type="utc"))


def _with_when(frame: pl.DataFrame, bucket: Bucket) -> pl.DataFrame:
    """`frame` with ``when``: its bucket as text in UTC, for tooltips (see `_WHEN_FORMAT`)."""
    return frame.with_columns(
        pl.col("bucket").dt.convert_time_zone("UTC").dt.strftime(_WHEN_FORMAT[bucket]).alias("when")
    )


def _every_bucket(frame: pl.DataFrame, bucket: Bucket) -> pl.DataFrame:
    """`frame` with a row for every bucket from its first to its last, null where it had none: a line through
    the buckets then breaks where there were no queries instead of drawing a slope across them."""
    if frame.is_empty():
        return frame
    every = pl.datetime_range(frame["bucket"].min(), frame["bucket"].max(), _BUCKET_STEP[bucket], eager=True)  # type: ignore[arg-type]
    return pl.DataFrame({"bucket": every}).join(frame, on="bucket", how="left")


def _top_intents(trend: pl.DataFrame, keep: int = TREND_INTENTS) -> tuple[pl.DataFrame, int]:
    """The intent trend with the `keep` intents asked most drawn each on its own and the rest summed into one
    "other (N intents)" series, so that no two share a colour; and how many were summed (0: none)."""
    totals = trend.group_by("intent").agg(pl.col("queries").sum()).sort(["queries", "intent"], descending=[True, False])
    if totals.height <= keep + 1:  # one more fits the palette as well as "other" would
        return trend, 0
    rest = totals["intent"][keep:]
    other = f"other ({len(rest)} intents)"
    folded = (
        trend.with_columns(
            pl.when(pl.col("intent").is_in(rest.implode())).then(pl.lit(other)).otherwise("intent").alias("intent")
        )
        .group_by("bucket", "intent")
        .agg(pl.col("queries").sum())
    )
    total = pl.col("queries").sum().over("bucket")
    share = pl.when(total > 0).then(pl.col("queries") / total).otherwise(None).alias("share")
    return folded.with_columns(share).sort("bucket", "intent"), len(rest)


def _ms_format(columns: pl.DataFrame) -> str:
    """The one format of a table's millisecond `columns`: one decimal, or as many as their smallest value above zero
    needs (a cache hit's 0.04 ms read 0.0). One for them all: a row's p50 and p95 of the same 0.138 ms read 0.14 and
    0.1 when each column chose its own."""
    smallest = min(
        (m for c in columns.iter_columns() if c.dtype.is_numeric() and (m := c.filter(c > 0).min()) is not None),
        default=None,
    )
    if not isinstance(smallest, int | float) or smallest >= 10:
        return "%.1f"
    return "%.2f" if smallest >= 1 else "%.3f"


def _readable(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every text cell as the page shows a user's text (`plain`): a question, a source title or an
    intent holding a U+202E would otherwise draw its cell or label backwards, and one of 16,384 characters fill it.
    Each distinct value is looked at once (a trend repeats its intents in every bucket)."""
    for name in [name for name, dtype in frame.schema.items() if dtype == pl.String]:
        changed = {v: shown for v in frame[name].unique().drop_nulls().to_list() if (shown := plain(v)) != v}
        if changed:
            frame = frame.with_columns(pl.col(name).replace(changed))
    return frame


def _table(where: Any, frame: pl.DataFrame, key: str, config: dict[str, Any] | None = None) -> None:
    """A dataframe with readable numbers (milliseconds without noise digits, rates and shares as percents) and
    readable text (`_readable`)."""
    frame = _readable(frame)
    formats: dict[str, Any] = {}
    ms = _ms_format(frame.select(pl.col("^.*_ms$")))
    for name in frame.columns:
        if name.endswith("_ms"):
            formats[name] = st.column_config.NumberColumn(name.removesuffix("_ms") + " (ms)", format=ms)
        elif name.endswith(("_rate", "share", "of_received")):
            formats[name] = st.column_config.NumberColumn(format="percent")
        elif name.startswith("mean_"):
            formats[name] = st.column_config.NumberColumn(format="%.2f")
    where.dataframe(frame, hide_index=True, key=key, column_config={**formats, **(config or {})})


def _delta(
    now: float | None, before: float | None, *, scale: float = 1.0, unit: str = "", decimals: int = 1
) -> str | None:
    """The change from `before` to `now`, at the precision its scale needs (a quality score of 0–1 moves in
    thousandths: `decimals` 3). A change that rounds to nothing is "0", which Streamlit draws grey, without an
    arrow: "+0.0" was a green rise."""
    if now is None or before is None:
        return None
    change = round((now - before) * scale, decimals)
    return "0" if change == 0 else f"{change:+,.{decimals}f}{unit}"


def _sidebar(lq: LakeQueries, first: datetime, last: datetime, read_at: datetime) -> tuple[Filters, Bucket]:
    st.sidebar.header("Filters")
    shown_from = max(first.date(), last.date() - timedelta(days=DEFAULT_DAYS - 1))
    offered = (shown_from, last.date())
    # The dates follow the lake until the user picks some: a tab left open overnight shows the new day too.
    if st.session_state.get("dates_offered") != offered:
        if st.session_state.get("dates") in (None, st.session_state.get("dates_offered")):
            st.session_state["dates"] = offered
        st.session_state["dates_offered"] = offered
    # A range picked earlier stays within the lake's days, which retention or an erase may have moved since.
    kept = tuple(st.session_state["dates"])
    if any(not first.date() <= d <= last.date() for d in kept):
        st.session_state["dates"] = tuple(min(max(d, first.date()), last.date()) for d in kept)
    picked = st.sidebar.date_input("Dates (UTC)", min_value=first.date(), max_value=last.date(), key="dates")
    if shown_from > first.date():
        st.sidebar.caption(
            f"First shown: the last {DEFAULT_DAYS} days with data. The lake goes back to {first.date():%Y-%m-%d}."
        )
    days: tuple[date, ...] = tuple(picked) if isinstance(picked, tuple | list) else (picked,)  # type: ignore[arg-type]
    start = days[0] if days else first.date()
    end = days[1] if len(days) > 1 else start  # a half-picked range means that one day
    # Producers name intents, envs, services, releases and prompt versions: shown with their control characters
    # escaped.
    intents = st.sidebar.multiselect("Intents (none = all)", lq.intents(), key="intents", format_func=visible)
    envs = st.sidebar.multiselect("Envs (none = all)", lq.envs(), key="envs", format_func=visible)
    # Shown when several apps send to this querylog: one service alone needs no filter.
    services = lq.services()
    chosen_services = (
        st.sidebar.multiselect("Services (none = all)", services, key="services", format_func=visible)
        if len(services) > 1
        else []
    )
    # Schema v2: shown once the lake holds queries recorded with a release or a prompt version.
    releases = lq.releases()
    chosen_releases = (
        st.sidebar.multiselect("Releases (none = all)", releases, key="releases", format_func=visible)
        if releases
        else []
    )
    prompts = lq.prompt_versions()
    chosen_prompts = (
        st.sidebar.multiselect("Prompt versions (none = all)", prompts, key="prompts", format_func=visible)
        if prompts
        else []
    )
    span_days = (end - start).days + 1  # dates picked, both ends included
    # The bucket follows the dates (days from DAY_BUCKET_FROM_DAYS dates, else hours) whenever they cross that line:
    # a keyed widget keeps its value and ignores its `index` after the first run, so it is set here.
    default = BUCKETS[1 if span_days >= DAY_BUCKET_FROM_DAYS else 0]
    # Also when the radio's state is gone: Streamlit drops a widget's state after a run that did not draw it (an
    # empty lake for an instant, an error), while this key stays.
    if st.session_state.get("bucket_default") != default or "bucket" not in st.session_state:
        st.session_state["bucket"] = st.session_state["bucket_default"] = default
    bucket = st.sidebar.radio("Trend bucket", BUCKETS, horizontal=True, key="bucket")
    if bucket == "hour" and span_days > HOURLY_MAX_DAYS:
        st.sidebar.caption(
            f"By the hour, {span_days:,} days would be {span_days * 24:,} buckets: the trends are drawn by day. "
            f"Pick {HOURLY_MAX_DAYS} days or fewer for hours."
        )
        bucket = "day"
    st.sidebar.caption(f"Lake: {markdown_code(str(lq.catalog.lake_dir))}")  # a path is not Markdown
    # The snapshot is read again at a click once the lake changed and it is a few seconds old (`_lake_snapshot`).
    st.sidebar.button("Refresh", key="refresh", help="Read the lake again now")
    st.sidebar.caption(f"Read at {read_at:%Y-%m-%d %H:%M:%S} UTC")
    chosen = {
        "services": tuple(chosen_services),
        "releases": tuple(chosen_releases),
        "prompt_versions": tuple(chosen_prompts),
    }
    return Filters.for_dates(start, end, intents=tuple(intents), envs=tuple(envs), **chosen), bucket


def _headline(now: Summary, before: Summary, held_from: datetime | None = None) -> None:
    """`held_from`: retention dropped the lake's days before it, the window before this one's start among them: its
    count is not compared (its rates and percentiles, of the part held, still are)."""
    cols = st.columns(6)
    # Deltas compare with the window of equal length before; with nothing there, there is nothing to compare.
    cut = f" (not the count: retention dropped the lake's days before {held_from:%Y-%m-%d})" if held_from else ""
    cols[0].metric(
        "Queries",
        f"{now.queries:,}",
        delta=f"{now.queries - before.queries:+,}" if before.queries and not held_from else None,
        help="changes: vs the window of equal length before" + cut,
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
        delta=_delta(now.mean_quality, before.mean_quality, decimals=3),  # a 0–1 score moves in thousandths
    )


def _trends(lq: LakeQueries, f: Filters, bucket: Bucket) -> None:
    st.subheader("Intent trend")
    trend = lq.intent_trend(f, bucket)
    if trend.is_empty():
        st.info(NO_DATA)
        return
    _intent_charts(trend, bucket)
    _table(st, lq.intent_totals(f), "intent_totals")
    _error_rate(lq, f, bucket)


def _intent_charts(trend: pl.DataFrame, bucket: Bucket) -> None:
    """Queries per intent over time, stacked, and each intent's share, side by side."""
    buckets = trend["bucket"].n_unique()
    trend, folded = _top_intents(trend)
    if folded:
        st.caption(
            f"The {TREND_INTENTS} intents asked most are drawn each in its colour, the other {folded} together as "
            "one; the table below lists every intent."
        )
    trend = _with_when(trend, bucket)
    tooltip: list[Any] = ["when:N", "intent:N", "queries:Q", alt.Tooltip("share:Q", format=".1%")]
    color = alt.Color("intent:N", title="intent", legend=alt.Legend(labelLimit=0))  # names in full
    left, right = st.columns(2)
    _chart(
        left,
        trend,
        "queries",
        lambda c: _over_time(c, buckets, bucket).encode(
            color=color, tooltip=tooltip, y=alt.Y("queries:Q", stack=True, title="queries", axis=_COUNTS)
        ),
    )
    # Shares as bars, each as wide as its bucket: a share is undefined where no query was asked, and an area
    # cannot be drawn through a bucket with empty ones on both sides (it showed as dots). Each intent's band is
    # given from and to (Vega-Lite stacks no bar given its width as a range: they were thin strips).
    _chart(
        right,
        _share_bands(trend, bucket),
        "share",
        lambda c: (
            _over_time(c, buckets, bucket)
            if buckets <= FEW_BUCKETS
            else c.mark_bar().encode(x=_utc_x(), x2="bucket_end:T")
        ).encode(
            color=color,
            tooltip=tooltip,
            y=alt.Y("share_from:Q", title="share", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            y2="share_to:Q",
        ),
    )


def _share_bands(trend: pl.DataFrame, bucket: Bucket) -> pl.DataFrame:
    """Each intent's share of its bucket as a band, ``share_from`` to ``share_to``, stacked in the legend's order
    (by name), each bucket's bands filling 0 to 1; and ``bucket_end``, where the bucket's bar ends."""
    to = pl.col("share").cum_sum().over("bucket")
    return (
        trend.drop_nulls("share")
        .sort("bucket", "intent")
        .with_columns(
            (to - pl.col("share")).alias("share_from"),
            to.alias("share_to"),
            pl.col("bucket").dt.offset_by(_BUCKET_STEP[bucket]).alias("bucket_end"),
        )
    )


def _error_rate(lq: LakeQueries, f: Filters, bucket: Bucket) -> None:
    st.subheader("Error rate")
    errors = _with_when(_every_bucket(lq.error_trend(f, bucket), bucket), bucket)
    valued = errors.height - (errors["error_rate"].null_count() if errors.height else 0)
    if valued and not errors["failed"].sum():
        # A chart of zeros draws bars of no height on an axis of 0.000000%: say it instead.
        st.info("No query failed in these filters: the error rate is 0% throughout.")
        return
    _chart(
        st,
        errors,
        "error_rate",
        lambda c: _over_time(c, errors.height, bucket, lines=True, valued=valued).encode(
            y=alt.Y("error_rate:Q", axis=alt.Axis(format="%"), title="error rate"),
            tooltip=["when:N", "finished:Q", "failed:Q", alt.Tooltip("error_rate:Q", format=".1%")],
        ),
    )


def _latency(lq: LakeQueries, f: Filters, bucket: Bucket) -> None:
    st.subheader("Latency percentiles by intent")
    by_intent = lq.latency_by_intent(f)
    drawn = by_intent
    if by_intent.height > LATENCY_INTENTS:  # hundreds of bars, each a sliver: the busiest
        busiest = by_intent.sort(["queries", "intent"], descending=[True, False])["intent"].head(LATENCY_INTENTS)
        drawn = by_intent.filter(pl.col("intent").is_in(busiest.implode()))
        st.caption(
            f"The {LATENCY_INTENTS} intents with the most finished queries are drawn; the table "
            f"below has all {by_intent.height}."
        )
    long = drawn.unpivot(index="intent", on=["p50_ms", "p95_ms", "p99_ms"], variable_name="percentile", value_name="ms")
    _chart(
        st,
        long,
        "ms",
        lambda c: c.mark_bar().encode(
            x=alt.X("intent:N", title=None),
            xOffset="percentile:N",
            y=alt.Y("ms:Q", title="ms"),
            color="percentile:N",
            tooltip=["intent:N", "percentile:N", alt.Tooltip("ms:Q", format=_MS_TOOLTIP)],
        ),
    )
    _table(st, by_intent, "latency_by_intent")
    st.subheader("Latency over time")
    by_bucket = _with_when(_every_bucket(lq.latency_trend(f, bucket), bucket), bucket)
    buckets, valued = by_bucket.height, by_bucket.height - by_bucket["p50_ms"].null_count()
    trend = by_bucket.unpivot(
        index=["bucket", "when"], on=["p50_ms", "p95_ms", "p99_ms"], variable_name="percentile", value_name="ms"
    )

    def draw(c: alt.Chart) -> alt.Chart:
        chart = _over_time(c, buckets, bucket, lines=True, valued=valued).encode(
            y=alt.Y("ms:Q", title="ms", stack=None),
            color="percentile:N",
            tooltip=["when:N", "percentile:N", alt.Tooltip("ms:Q", format=_MS_TOOLTIP)],
        )
        return chart.encode(xOffset="percentile:N") if buckets <= FEW_BUCKETS else chart  # bars side by side

    _chart(st, trend, "ms", draw)


def _stages(lq: LakeQueries, f: Filters) -> None:
    st.subheader("Stage funnel")
    funnel = lq.funnel(f)
    _chart(
        st,
        funnel,
        "queries",
        lambda c: c.mark_bar().encode(
            y=alt.Y("step:N", sort=None, title=None),
            x=alt.X("queries:Q", axis=_COUNTS),
            tooltip=["step:N", "queries:Q", "dropped:Q", alt.Tooltip("drop_rate:Q", format=".1%")],
        ),
        zeros_are_empty=True,  # a step a row, each of no queries
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
    # What was asked (not what was found: a search that stands finds newer queries as the lake grows).
    st.session_state["search_asked"] = (text.strip(), field, bool(st.session_state.get("search_ungrouped")), f)
    if not text.strip():
        st.session_state["search_hits"] = {}  # cleared with the search: the timeline picker offers recent queries
        st.caption(
            "Korean, English and mixed text; particles and missing spaces are fine. Company names find each other "
            "(현대차, Hyundai Motor, 005380), 초성 works (ㄴㅇㅂ), and a typo is forgiven when nothing else matches."
        )
        return
    if not unquoted(text).strip():  # as `querylog search` refuses it: quotes alone would match nothing, unsaid
        st.warning("Give some text to look for: quotes alone match nothing.")
        return
    from querylog.analytics.upkeep import LakeSearch, UpkeepError

    aliases = _aliases(settings)
    one_per_query = st.toggle("One row per query", key="search_ungrouped")
    try:
        search = LakeSearch(settings.home, field=field)
        # Once for the lake this page reads (its snapshot), as the results below: a click elsewhere on the page
        # reruns this tab, and would otherwise search again (seconds on a large lake).
        with st.spinner("Bringing the index up to date…"):
            lq.kept(("search index synced", field), lambda: search.sync(lq.catalog))
        if one_per_query:
            _query_results(lq, search, text, f, aliases)
        else:
            _question_results(lq, search, text, f, aliases)
    except UpkeepError as exc:
        st.warning(f"Search is unavailable: {markdown_code(str(exc))}")


#: The most results the search tab lists.
SEARCH_ROWS: Final = 50


def _aliases(settings: Settings) -> Aliases | None:
    """The alias file search uses, read again when it changes; a bad change is said, and the previous one kept."""
    if settings.aliases_path is None:
        return None
    watched = _alias_file(str(settings.aliases_path))
    aliases = watched.current()
    if watched.error:
        st.warning(f"The alias file is not in use as it stands: {markdown_code(watched.error)}")
    return aliases


def _how_many(found: int, what: str) -> str:
    """How many results a list shows, `found` of them asked for one past `SEARCH_ROWS`: past it, the list is the
    best `SEARCH_ROWS` of more (how many more is not counted)."""
    shown = min(found, SEARCH_ROWS)
    what += "" if shown == 1 else "s"
    return f"{shown} {what}" if found <= SEARCH_ROWS else f"The best {shown} {what} (more match: narrow the search)"


#: What a query id looks like (a UUID, ``otlp-<trace>-<span>``, ``q-17``): one word of letters, digits and dashes
#: with at least one dash and one digit.
_LOOKS_LIKE_AN_ID: Final = re.compile(r"^(?=[^-]*-)(?=\D*\d)[A-Za-z0-9_.:-]{3,}$")


def _no_results(search: LakeSearch, text: str) -> None:
    st.session_state["search_hits"] = {}  # the Queries tab's picker offers no hits of an earlier search
    answers = search.field == "answers"
    st.info(f"No {'answers' if answers else 'queries'} match this search in this selection.")
    if _LOOKS_LIKE_AN_ID.match(text.strip()):
        st.caption("Search reads what was asked, not ids: a query's events are found by its id under **Query id** in "
                   "the Queries tab, whatever the dates and filters.")  # fmt: skip
    if answers and search.indexed() == 0:
        st.caption("No query in the lake has its answer recorded: answers are kept from schema v2 on.")


def _question_results(lq: LakeQueries, search: LakeSearch, text: str, f: Filters, aliases: Aliases | None) -> None:
    """One row per distinct question, with how often it was asked in the filters (and the answer that matched)."""
    groups = lq.kept(
        ("questions", search.field, text, f, id(aliases)),
        lambda: find_questions(lq.catalog, [search], text, limit=SEARCH_ROWS + 1, filters=f, aliases=aliases),
    )
    if not groups:
        _no_results(search, text)
        return
    st.caption(
        f"{_how_many(len(groups), 'distinct question')}, best match first; ×N: how often it was asked in these dates"
    )
    groups = groups[:SEARCH_ROWS]
    for rank, group in enumerate(groups, 1):
        st.html(_question_html(rank, group, text))
    # The newest query of each question, offered first in the timeline picker of the Queries tab.
    st.session_state["search_hits"] = {g.query_ids[0]: g.query_text for g in groups if g.query_ids}


#: A search result wraps anywhere: a question without spaces must not widen the page.
_RESULT_STYLE: Final = "margin:.2rem 0;overflow-wrap:anywhere"


def _marked(text: str, found: tuple[str, ...]) -> str:
    """What a result highlights: the words searched for, and what matched in their place (a 초성, alias or typo
    match holds none of the words as typed)."""
    return " ".join([text, *found])


def _question_html(rank: int, group: AskedQuestion, text: str) -> str:
    text = _marked(text, group.found)
    intents = html.escape(visible(", ".join(group.intents) or "–"))
    when = f"last {group.last_asked:%Y-%m-%d %H:%M}"
    if group.times_asked > 1:
        when += f", first {group.first_asked:%Y-%m-%d %H:%M}"
    when += " UTC"
    return (
        f"<div class='ql-question' style='{_RESULT_STYLE}'><b>{rank}.</b> "
        f"{highlight_html(snippet(group.query_text, text, QUESTION_CHARS), text)} "
        f"<b style='color:#2b6cb0'>×{group.times_asked}</b> "
        f"<span style='color:#777;font-size:.85em'>· {intents} · {when} · score {group.score:g}"
        f"{_why(group.why)}</span>{_answer_html(group.answer, text)}</div>"
    )


def _query_results(lq: LakeQueries, search: LakeSearch, text: str, f: Filters, aliases: Aliases | None) -> None:
    """One row per matching query, best first; found in the answers, with the question it answered."""
    hits = lq.kept(
        ("queries", search.field, text, f, id(aliases)), lambda: _matching_queries(lq, search, text, f, aliases)
    )
    if not hits:
        _no_results(search, text)
        return
    answers = search.field == "answers"  # a hit's text is then the answer
    asked = questions_of(lq.catalog, [h.query_id for h in hits]) if answers else {}
    st.caption(f"{_how_many(len(hits), 'result')}, best first")
    hits = hits[:SEARCH_ROWS]
    for rank, hit in enumerate(hits, 1):
        question = asked.get(hit.query_id, "") if answers else hit.query_text
        marked = _marked(text, hit.found)
        st.html(
            f"<div class='ql-query' style='{_RESULT_STYLE}'><b>{rank}.</b> "
            f"{highlight_html(snippet(question, marked, QUESTION_CHARS), marked)} "
            f"<span style='color:#777;font-size:.85em'>· {html.escape(visible(hit.intent or '–'))} · "
            f"{hit.ts:%Y-%m-%d %H:%M} · score {float(hit.score):g}{_why(hit.why)}</span>"
            f"{_answer_html(hit.query_text if answers else '', marked)}</div>"
        )
    # Offered first in the timeline picker of the Queries tab, labelled with the question.
    st.session_state["search_hits"] = {h.query_id: asked.get(h.query_id, "") if answers else h.query_text for h in hits}


def _matching_queries(
    lq: LakeQueries, search: LakeSearch, text: str, f: Filters, aliases: Aliases | None
) -> list[SearchHit]:
    """The best `SEARCH_ROWS` queries in the sidebar's filters, and one more if there is (so that the page can say
    more match). The index filters by text, dates and one intent; the lake applies the rest (env, release, several
    intents), and while it leaves fewer than asked for and the index has more, the index is asked for 8 times as
    many: the hits it did not return rank below those kept."""
    rows = wanted = SEARCH_ROWS + 1
    while True:
        hits = window_hits(search, text, limit=wanted, filters=f, aliases=aliases)
        selected = lq.matching(f, [h.query_id for h in hits])
        kept = [h for h in hits if h.query_id in selected]
        if len(kept) >= rows or len(hits) < wanted:
            return kept[:rows]
        wanted *= 8


def _answer_html(answer: str, text: str) -> str:
    """The part of a matching answer around what matched, highlighted, under its question ("" for none)."""
    if not answer:
        return ""
    return (
        "<div class='ql-answer' style='margin:.1rem 0 .3rem 1.6rem;color:#444;font-size:.9em;overflow-wrap:anywhere'>"
        f"↳ {highlight_html(snippet(answer, text), text)}</div>"
    )


@st.cache_resource
def _alias_file(path: str) -> AliasFile:
    """One watcher per alias file for the life of the explorer, so that a change is read once."""
    from querylog.analytics.aliases import AliasFile

    return AliasFile(Path(path))


def _why(reason: str) -> str:
    """How a hit outside the exact tier matched (alias, 초성, typo), for the result line."""
    return f" · <i>{html.escape(visible(reason))}</i>" if reason else ""


def _links(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Adds a `trace` link column when LANGFUSE_HOST is set: each id quoted as one path segment (`trace_url`)."""
    host = os.environ.get("LANGFUSE_HOST")
    if not host or "trace_id" not in frame.columns:
        return frame, {}
    links = [trace_url(trace_id, host) for trace_id in frame["trace_id"].to_list()]
    frame = frame.with_columns(pl.Series("trace", links, dtype=pl.String))
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
    asked = st.session_state.get("search_asked")
    if found and st.session_state.get("timeline_asked") != asked:
        # A new search: its best hit is shown, not the query picked before it (nor an id typed); a pick made since
        # is kept.
        st.session_state["timeline_query"] = next(iter(found))
        st.session_state["timeline_id"] = ""
    st.session_state["timeline_asked"] = asked
    labels = {**dict(zip(recent["query_id"].to_list(), recent["query_text"].to_list(), strict=True)), **found}
    choices = list(dict.fromkeys([*found, *recent["query_id"].to_list()]))
    # The picker offers the newest 200 of the selection and the search's hits; any other query is reached by its id.
    typed = st.text_input(
        "Query id", key="timeline_id", placeholder="any query in the lake, whatever the dates and filters"
    ).strip()
    if typed:
        # Ids are kept in NFC (one typed on macOS arrives decomposed); an older release kept them as they were sent.
        forms = dict.fromkeys((unicodedata.normalize("NFC", typed), typed))
        _timeline(lq, next((form for form in forms if not lq.query_events(form).is_empty()), typed))
        return
    if not choices:
        st.info("No queries in this selection.")
        return
    query_id = st.selectbox(
        "Query", choices, key="timeline_query", format_func=lambda q: f"{plain(labels.get(q, ''), 60)}  ·  {q}"
    )
    _timeline(lq, query_id)


def _answer(answer: Answer | None, *, failed: bool = False) -> None:
    """What the user was told, and from which documents; that none was made, when the query `failed` before one. A
    query recorded before schema v2, or by a producer that records its answer's model but not its text, shows that
    model and the answer's cost; one with no response recorded at all, nothing."""
    if answer is None:
        return
    # Recorded as made (its text, length or model: its facts are shown without the text too), or said not made for a
    # failed query; a completed query with no answer recorded (a producer that sends none) shows its sources only.
    made = (answer.answer_text, answer.answer_chars, answer.model, answer.response_model) != (None, None, None, None)
    if made or failed:
        _answer_made(answer)
    if not answer.sources.is_empty():
        st.markdown("**Sources**")
        _table(st, answer.sources, "timeline_sources")


def _answer_made(answer: Answer) -> None:
    """The answer's heading, its text (or that none was made: the query failed before one), and its facts."""
    st.markdown("**Answer**")
    _answer_text(answer)
    facts = [
        ("response type", answer.response_type),
        ("finish", answer.finish_reason),
        ("model", answer.response_model or answer.model),
        ("cost", None if answer.cost_usd is None else f"${answer.cost_usd:,.5f} ({answer.cost_source})"),
        ("first token", None if answer.ttft_ms is None else milliseconds(answer.ttft_ms)),
        ("release", answer.release),
        ("prompt", answer.prompt_version),
    ]
    if any(value for _, value in facts):
        # As text too: a release, prompt version or model name comes from a producer, and is not markup either.
        st.text(plain("  ·  ".join(f"{name}: {value}" for name, value in facts if value)))


def _answer_text(answer: Answer) -> None:
    """The answer under its heading: never nothing (an empty or blank answer says so), the first `SHOWN_CHARS`
    characters with the rest one click away."""
    text = answer.answer_text
    if text is None and answer.answer_chars is None and answer.model is None and answer.response_model is None:
        st.caption("No answer was made: the query ended (or failed) before one.")  # its sources are shown below
    elif text is None:
        kept = "" if answer.answer_chars is None else f" (it had {answer.answer_chars:,} characters)"
        st.caption(f"The answer's text was not kept{kept}.")
    elif shows_nothing(text):  # whitespace, zero-width spaces and the like, as /v1/events reads blank
        st.caption("(empty answer)")
    else:
        # Shown as text, never as Markdown: an answer is user-visible content, not markup for this page.
        shown, whole = shown_answer(text), shown_answer(text, limit=len(text) * 6)  # escapes lengthen a text
        st.text(shown)
        if shown != whole:
            with st.expander(f"The whole answer ({len(text):,} characters)"):
                st.text(whole)


#: One colour per event type, the same in every query's timeline (Altair would colour by the types each one holds).
#: No legend: the rows name the types a query has, where a legend of the domain listed every type it lacks too.
_EVENT_COLOR: Final = alt.Color("event_type:N", scale=alt.Scale(domain=list(EVENT_CLASSES)), legend=None)


def _timeline(lq: LakeQueries, query_id: str) -> None:
    events = lq.query_events(query_id)
    if events.is_empty():
        st.info("No events for this query id.")
        return
    text = events.filter(pl.col("event_type") == "query_received")["query_text"].to_list()
    # As text, never Markdown: a question holding `$x$`, `:red[…]` or a link is shown as asked.
    st.text(plain(text[0] if text else query_id))
    trace = trace_url(events["trace_id"].drop_nulls().first())  # type: ignore[arg-type]
    if trace:
        st.link_button("Open trace in Langfuse", trace)  # a button, not Markdown built from a producer's id
    failures = events.filter(pl.col("event_type") == "query_failed")
    # Failed if its last word is a failure, as the `queries` view says: a failure retried to an answer is not.
    ends = events.filter(pl.col("event_type").is_in(["query_completed", "query_failed"]))["event_type"]
    _answer(lq.answer(query_id), failed=not ends.is_empty() and ends[-1] == "query_failed")
    for failed in failures.iter_rows(named=True):
        at = f" at {failed['stage']}" if failed.get("stage") else ""
        said = ": ".join(str(failed[k]) for k in ("error_type", "error_message") if failed.get(k))
        st.text(plain(f"Failed{at}: {said or 'no error given'}"))
    # A stage event is emitted when the stage ends and carries its duration: draw it as a bar ending there.
    spans = events.with_columns(
        (pl.col("offset_ms") - pl.col("duration_ms").fill_null(0)).alias("start_ms"),
        pl.col("offset_ms").alias("end_ms"),
    )
    asked = spans.filter(pl.col("event_type") != "feedback_received")
    if asked.is_empty():  # a verdict on a query the lake does not hold (retention took it, or another lake has it)
        st.info("Only feedback was recorded for this id: the lake holds no event of its query.")
        _table(st, events.select("ts", "score", "comment", "event_id"), "timeline_events")
        return
    # Feedback comes minutes or days after the query: drawn on the same axis, it would squash every stage to a dot.
    for feedback in spans.filter(pl.col("event_type") == "feedback_received").iter_rows(named=True):
        st.caption(f"Feedback {_score(feedback['score'])} came {_later(feedback['offset_ms'])} after the first event.")
    spans = asked.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.3f").alias("at")
    )
    st.altair_chart(
        alt.Chart(spans)
        .mark_bar(size=14)
        .encode(
            y=alt.Y("event_type:N", sort=None, title=None),
            x=alt.X("start_ms:Q", title="ms since its first event"),
            x2="end_ms:Q",
            color=_EVENT_COLOR,
            tooltip=[
                "event_type:N",
                alt.Tooltip("at:N", title="at (UTC)"),
                alt.Tooltip("offset_ms:Q", format=_MS_TOOLTIP),
                alt.Tooltip("duration_ms:Q", format=_MS_TOOLTIP),
            ],
        )
        + alt.Chart(spans)
        .mark_point(filled=True, size=60)
        .encode(y=alt.Y("event_type:N", sort=None), x="end_ms:Q", color=_EVENT_COLOR),
        width="stretch",
    )
    shown = events.select(
        [c for c in events.columns if c not in ("query_text", "trace_id") and events[c].null_count() < events.height]
    )
    _table(st, shown, "timeline_events")


def _score(score: int | None) -> str:
    return {1: "up (+1)", 0: "(0)", -1: "down (-1)"}.get(score if score is not None else 2, "")


def _later(offset_ms: float) -> str:
    """How long after a query's first event, in the unit that reads best."""
    seconds = offset_ms / 1000
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"


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
            y=alt.Y("queries:Q", axis=_COUNTS),
            tooltip=["bin_start:Q", "bin_end:Q", "queries:Q"],
        ),
        zeros_are_empty=True,  # a bin a row, each of no queries
        empty=NO_SCORES if lq.summary(f).queries else NO_DATA,
    )


#: The lake's snapshot (the `queries` view computed once) is kept across the page's reruns, one per widget change:
#: while the lake is unchanged, and while it changes (a serving API adds files each second) for this long at least,
#: or three times what it took to build, so that a large lake is not read again at every click; never longer than
#: `SNAPSHOT_KEPT_MAX_S` (a read slowed by a busy machine would hold it long). Refresh reads it now.
SNAPSHOT_KEPT_S: Final = 10.0
SNAPSHOT_KEPT_MAX_S: Final = 30.0


@dataclass
class _Snapshot:
    """A session's lake snapshot, and what the lake and the alias file were when it was built."""

    lake_dir: Path
    aliases: Aliases | None
    queries: LakeQueries
    signature: tuple[int, int, int]
    read_at: datetime
    built_at: float
    build_s: float


def _lake_snapshot(settings: Settings) -> _Snapshot:
    """This session's snapshot of the lake: the one built before, unless the lake changed since and it is old
    enough (`SNAPSHOT_KEPT_S`), or the user pressed Refresh."""
    # The watcher search uses: the same `Aliases` until the file changes (the search tab says when it is refused).
    aliases = _alias_file(str(settings.aliases_path)).current() if settings.aliases_path is not None else None
    signature = lake_signature(settings.lake_dir)
    held: _Snapshot | None = st.session_state.get("lake_snapshot")
    refresh = bool(st.session_state.get("refresh"))  # the sidebar's button, pressed for this run
    if held is not None and held.lake_dir == settings.lake_dir and held.aliases is aliases and not refresh:
        age = time.monotonic() - held.built_at
        kept = min(SNAPSHOT_KEPT_MAX_S, max(SNAPSHOT_KEPT_S, 3 * held.build_s))
        if held.signature == signature or age < kept:
            if held.signature != signature:
                st.sidebar.caption(
                    f"Read {age:.0f} s ago; the lake has changed since. A click reads it again once the page is "
                    f"{kept:.0f} s old; Refresh reads it now."
                )
            return held
    if held is not None:
        del st.session_state["lake_snapshot"]
        held.queries.catalog.close()
    started = time.monotonic()
    names = Names(aliases.canonical_by_key()) if aliases is not None else None
    catalog = open_catalog(settings.lake_dir, names=names)
    try:
        queries = LakeQueries(catalog, snapshot=True)
    except BaseException:
        catalog.close()
        raise
    built = time.monotonic()
    held = _Snapshot(
        settings.lake_dir,
        aliases,
        queries,
        signature,
        read_at=datetime.now(UTC),
        built_at=built,
        build_s=built - started,
    )
    st.session_state["lake_snapshot"] = held
    return held


def main() -> None:
    st.set_page_config(page_title="querylog explorer", page_icon="🔎", layout="wide")
    st.title("querylog explorer")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {markdown_code(str(exc))}")
        st.stop()
    try:
        snapshot = _lake_snapshot(settings)
        lq = snapshot.queries
        bounds = lq.time_bounds()
        if bounds is None:
            serve = f"querylog --home {shlex.quote(str(settings.home))} serve --demo 200"
            # A mistyped --home is not an empty lake, nor is one holding other events (feedback) but no query.
            _, [(events,)] = lq.catalog.query("SELECT count(*) FROM events")
            empty = (
                f"The lake at {markdown_code(str(settings.lake_dir))} holds {events:,} event(s) but no query (no "
                "`query_received`): `querylog sql` shows them"
                if events
                else f"The lake at {markdown_code(str(settings.lake_dir))} is empty"
                if settings.home.is_dir()
                else f"The data directory {markdown_code(str(settings.home))} does not exist"
            )
            st.info(
                f"{empty}. Start the API with {markdown_code(serve)} and come back, or check `--home` "
                "(`QUERYLOG_HOME`)."
            )
            return
        filters, bucket = _sidebar(lq, *bounds, snapshot.read_at)
        try:
            previous: Filters | None = filters.previous()
        except ValueError:  # the dates start on the calendar's first day (a lake with an event of year 1)
            previous = None
        cut = retention_cut(settings.lake_dir, previous) if previous is not None else None
        _headline(lq.summary(filters), lq.summary(previous) if previous is not None else Summary.empty(), cut)
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
        # A damaged file named, with how to mend it, as the CLI says it; anything else in DuckDB's own words.
        said = unreadable_lake(exc, settings.lake_dir) if unreadable_file(exc) else str(exc)
        st.error(f"The lake could not be read: {markdown_code(said)}")
    except UpkeepError as exc:  # the lake's own record of where its history starts is damaged (it says how to mend it)
        st.error(markdown_code(str(exc)))


if __name__ == "__main__":
    main()
