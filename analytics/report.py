"""The periodic report: volumes, intents, latency, errors, cache and quality, against the previous window."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import polars as pl

from querylog._format import milliseconds, percent, shortened, visible
from querylog.analytics.catalog import Catalog
from querylog.analytics.queries import Bucket, Filters, LakeQueries, Summary

__all__ = ["Report", "build_report", "render_html", "render_markdown", "retention_cut"]

_PALETTE: Final = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#9d755d")
#: Korean needs a CJK font; name the common ones before the generic family so any OS finds one.
_FONTS: Final = (
    "system-ui, -apple-system, 'Segoe UI', 'Noto Sans CJK KR', 'Noto Sans KR', 'Apple SD Gothic Neo', "
    "'Malgun Gothic', sans-serif"
)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the report shows, computed once; `render_markdown` and `render_html` only format it."""

    generated_at: datetime
    filters: Filters
    previous_filters: Filters
    bucket: Bucket
    current: Summary
    previous: Summary
    #: intent, queries, share, previous_queries, change (relative; None when there were none before)
    intents: pl.DataFrame
    volume: pl.DataFrame
    latency_by_intent: pl.DataFrame
    latency_by_stage: pl.DataFrame
    errors: pl.DataFrame
    cache_by_intent: pl.DataFrame
    quality: pl.DataFrame
    feedback_by_intent: pl.DataFrame
    top_queries: pl.DataFrame
    no_result_queries: pl.DataFrame
    #: schema v2: cost by model; quality, feedback and cost by release and by prompt version (empty when the
    #: window's queries carry none, and then not shown)
    cost_by_model: pl.DataFrame
    by_release: pl.DataFrame
    by_prompt_version: pl.DataFrame
    reformulation_by_intent: pl.DataFrame
    most_reformulated: pl.DataFrame
    #: Where the lake's history starts when the report reaches before it (the previous window, or this one too): the
    #: counts before it are not there to compare. Retention dropped the days before it
    #: (`lake/_querylog/retained-from.json`), or, when `held_by_retention` is false, it is the lake's first query.
    held_from: datetime | None = None
    held_by_retention: bool = True

    @property
    def since(self) -> datetime:
        assert self.filters.since is not None
        return self.filters.since

    @property
    def until(self) -> datetime:
        assert self.filters.until is not None
        return self.filters.until

    @property
    def previous_gone(self) -> bool:
        """Retention dropped the whole previous window: nothing to compare with."""
        return self.held_from is not None and self.held_from >= _end(self.previous_filters)

    @property
    def previous_partial(self) -> bool:
        """Retention dropped the previous window's first part (or all of it): its counts are not comparable."""
        return self.held_from is not None and self.held_from > _start(self.previous_filters)


def retention_cut(lake_dir: Path | None, previous: Filters) -> datetime | None:
    """Where the lake's history starts, when retention dropped days of `previous` (the window a report or the
    explorer compares with: its counts are not all there); None when the lake holds that window whole, or is not a
    local one (`lake/_querylog/retained-from.json`)."""
    from querylog.analytics.upkeep import retained_from

    held_from = retained_from(lake_dir) if lake_dir is not None else None
    return held_from if held_from is not None and held_from > _start(previous) else None


def _start(f: Filters) -> datetime:
    assert f.since is not None
    return f.since


def _end(f: Filters) -> datetime:
    assert f.until is not None
    return f.until


def build_report(
    catalog: Catalog,
    *,
    since: datetime,
    until: datetime | None = None,
    intents: Sequence[str] = (),
    envs: Sequence[str] = (),
    services: Sequence[str] = (),
    top: int = 10,
) -> Report:
    """The report for [since, until) (until defaults to now), compared with the window of equal length before."""
    now = datetime.now(UTC)
    chosen = {"intents": tuple(intents), "envs": tuple(envs), "services": tuple(services)}
    filters = Filters(since=since, until=until or now, **chosen)
    previous = filters.previous()
    # The queries of the two windows, not the lake's whole history: an hour's report cost as much as the lake.
    lq = LakeQueries(catalog, snapshot=True, asked_from=previous.since)
    window = filters.window()
    bucket: Bucket = "day" if window is not None and window >= timedelta(days=3) else "hour"
    intents_now = lq.intent_totals(filters)
    intents_before = lq.intent_totals(previous).select("intent", pl.col("queries").alias("previous_queries"))
    joined = (
        intents_now.join(intents_before, on="intent", how="full", coalesce=True)
        .with_columns(pl.col("queries").fill_null(0), pl.col("previous_queries").fill_null(0))
        .with_columns(
            pl.when(pl.col("previous_queries") > 0)
            .then(pl.col("queries") / pl.col("previous_queries") - 1)
            .otherwise(None)
            .alias("change"),
            # An empty window (its queries all 0) has no shares: null, shown "–", not 0/0.
            pl.when(pl.col("queries").sum() > 0).then(pl.col("queries") / pl.col("queries").sum()).alias("share"),
        )
        .sort(["queries", "intent"], descending=[True, False])
        .select("intent", "queries", "share", "previous_queries", "change")
    )
    bounds = lq.time_bounds()
    held_from = retention_cut(catalog.lake_dir if catalog.lake_uri is None else None, previous)
    # A lake whose first query comes after the whole previous window did not count zero queries then: it was not
    # there. (A previous window it starts within is compared: a quiet first hour looks the same as a lake not begun.)
    first = bounds[0] if bounds is not None else None
    by_retention = held_from is not None or first is None or first < _end(previous)
    volume = lq.error_trend(filters, bucket).select(
        "bucket", pl.col("finished").alias("queries"), "failed", "error_rate"
    )
    if bounds is not None:  # an empty lake has no quiet hours: it has none at all
        volume = _with_quiet_buckets(volume, max(since, bounds[0]), until or now, bucket)  # not before its first query
    return Report(
        generated_at=now,
        filters=filters,
        previous_filters=previous,
        bucket=bucket,
        current=lq.summary(filters),
        previous=lq.summary(previous),
        intents=joined,
        volume=volume,
        latency_by_intent=lq.latency_by_intent(filters),
        latency_by_stage=lq.latency_by_stage(filters),
        errors=lq.errors(filters),
        cache_by_intent=lq.cache_by_intent(filters),
        quality=lq.quality_distribution(filters),
        feedback_by_intent=lq.feedback_by_intent(filters),
        top_queries=lq.top_queries(filters, top),
        no_result_queries=lq.no_result_queries(filters, top),
        cost_by_model=lq.cost_by_model(filters),
        by_release=lq.compare_by(filters, "release"),
        by_prompt_version=lq.compare_by(filters, "prompt_version"),
        reformulation_by_intent=lq.reformulation_by_intent(filters),
        most_reformulated=lq.most_reformulated(filters, top),
        held_from=held_from if by_retention else first,
        held_by_retention=by_retention,
    )


def _with_quiet_buckets(volume: pl.DataFrame, since: datetime, until: datetime, bucket: Bucket) -> pl.DataFrame:
    """`volume` with a row of zeros for each hour or day of [since, until) without a query: a quiet day (an
    outage) is a row that says 0, not a gap a reader may not notice; a window without any query too (the last 90
    seconds of a quiet service). The caller starts `since` no earlier than the lake's first query (``--since
    1970-01-01`` is not 20,000 rows of 0)."""
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first = datetime.fromtimestamp(since.timestamp() // step.total_seconds() * step.total_seconds(), UTC)
    last = until - timedelta(microseconds=1)
    dtype = volume.schema["bucket"]
    grid = pl.datetime_range(first, last, step, eager=True, time_zone="UTC").cast(dtype).alias("bucket")
    return (
        grid.to_frame()
        .join(volume, on="bucket", how="full", coalesce=True)  # full: a bucket the grid misses is kept, never lost
        .with_columns(pl.col("queries").fill_null(0), pl.col("failed").fill_null(0))
        .sort("bucket")
    )


# -- formatting helpers ---------------------------------------------------------------------------------
def _num(value: Any) -> str:
    return "–" if value is None else f"{value:,}"


def _usd(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _relative(current: float | None, previous: float | None) -> str:
    if current is None or previous is None:
        return "–"
    if previous == 0:
        return "new" if current else "±0%"
    change = current / previous - 1
    return f"{'▲' if change > 0 else '▼' if change < 0 else '±'}{abs(change) * 100:.0f}%"


def _points(current: float | None, previous: float | None) -> str:
    if current is None or previous is None:
        return "–"
    change = (current - previous) * 100
    return f"{'▲' if change > 0 else '▼' if change < 0 else '±'}{abs(change):.1f} pt"


def _headline(report: Report) -> list[tuple[str, str, str, str]]:
    """(metric, this window, previous window, change). Against a previous window retention cut, counts are not
    compared (rates and percentiles of the part held still are); against one it took whole, nothing is."""
    c, p = report.current, report.previous
    rows: list[tuple[str, Any, Any, Callable[[Any], str], Callable[[Any, Any], str]]] = [
        ("Queries", c.queries, p.queries, _num, _relative),
        ("Completed", c.completed, p.completed, _num, _relative),
        ("Failed", c.failed, p.failed, _num, _relative),
        ("Error rate", c.error_rate, p.error_rate, percent, _points),
        ("Latency p50", c.p50_ms, p.p50_ms, milliseconds, _relative),
        ("Latency p95", c.p95_ms, p.p95_ms, milliseconds, _relative),
        ("Latency p99", c.p99_ms, p.p99_ms, milliseconds, _relative),
        ("Cache hit rate", c.cache_hit_rate, p.cache_hit_rate, percent, _points),
        ("No-result rate", c.no_result_rate, p.no_result_rate, percent, _points),
        ("Mean quality", c.mean_quality, p.mean_quality, _score, _relative),
        ("Feedback rate", c.feedback_rate, p.feedback_rate, percent, _points),
        ("Mean feedback (−1…1)", c.mean_feedback, p.mean_feedback, _score, _points_plain),
        ("Sessions", c.sessions, p.sessions, _num, _relative),
    ]
    if report.previous_gone:
        return [(name, fmt(now), "–", "–") for name, now, _, fmt, _ in rows]
    return [
        (name, fmt(now), fmt(before), "–" if report.previous_partial and fmt is _num else change(now, before))
        for name, now, before, fmt, change in rows
    ]


def _points_plain(current: float | None, previous: float | None) -> str:
    if current is None or previous is None:
        return "–"
    change = current - previous
    return f"{'▲' if change > 0 else '▼' if change < 0 else '±'}{abs(change):.2f}"


def _window(report: Report) -> str:
    return f"{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC"


def _previous_window(report: Report) -> str:
    f = report.previous_filters
    return f"{_start(f):%Y-%m-%d %H:%M} – {_end(f):%Y-%m-%d %H:%M} UTC"


def _bucket_label(report: Report, value: datetime) -> str:
    """The day or hour, and the part of it in the window when that is not all of it (a window from 15:00, or to
    now): a first day of nine hours is not read as a quiet day."""
    step = timedelta(days=1) if report.bucket == "day" else timedelta(hours=1)
    label = f"{value:%Y-%m-%d}" if report.bucket == "day" else f"{value:%m-%d %H:00}"
    start, end = max(value, report.since), min(value + step, report.until)
    if (start, end) != (value, value + step) and start < end:
        label += f" ({start:%H:%M}–{end:%H:%M})"
    return label


def _sections(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table, shared by both renderings."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    out.append(
        (
            "Intents",
            ["intent", "queries", "share", "previous", "change"],
            [
                [
                    r["intent"],
                    _num(r["queries"]),
                    percent(r["share"]),
                    "–" if report.previous_gone else _num(r["previous_queries"]),
                    "–" if report.previous_partial else _relative(r["queries"], r["previous_queries"]),
                ]
                for r in report.intents.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            f"Volume by {report.bucket}",
            [report.bucket, "finished", "failed", "error rate"],
            [
                [_bucket_label(report, r["bucket"]), _num(r["queries"]), _num(r["failed"]), percent(r["error_rate"])]
                for r in report.volume.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            "Latency by intent",
            ["intent", "queries", "p50", "p95", "p99"],
            [
                [
                    r["intent"],
                    _num(r["queries"]),
                    milliseconds(r["p50_ms"]),
                    milliseconds(r["p95_ms"]),
                    milliseconds(r["p99_ms"]),
                ]
                for r in report.latency_by_intent.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            "Latency by stage",
            ["stage", "queries", "p50", "p95", "p99"],
            [
                [
                    r["stage"],
                    _num(r["queries"]),
                    milliseconds(r["p50_ms"]),
                    milliseconds(r["p95_ms"]),
                    milliseconds(r["p99_ms"]),
                ]
                for r in report.latency_by_stage.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            "Errors",
            ["error type", "stage", "queries", "share of failures"],
            [
                [r["error_type"] or "–", r["failed_stage"] or "–", _num(r["queries"]), percent(r["share"])]
                for r in report.errors.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            "Cache by intent",
            ["intent", "searched", "cache hits", "hit rate"],
            [
                [r["intent"], _num(r["searched"]), _num(r["cache_hits"]), percent(r["cache_hit_rate"])]
                for r in report.cache_by_intent.iter_rows(named=True)
            ],
        )
    )
    scored = bool(report.quality["queries"].sum())  # no score in the window: "none", as the other sections say
    out.append(
        (
            "Quality score distribution",
            ["score", "queries"],
            [
                [f"{r['bin_start']:.1f}–{r['bin_end']:.1f}", _num(r["queries"])]
                for r in (report.quality.iter_rows(named=True) if scored else ())
            ],
        )
    )
    out.append(
        (
            "Feedback by intent",
            ["intent", "finished", "with feedback", "rate", "mean score", "up (+1)", "down (-1)"],
            [
                [
                    r["intent"],
                    _num(r["finished"]),
                    _num(r["with_feedback"]),
                    percent(r["feedback_rate"]),
                    _score(r["mean_score"]),
                    _num(r["positive"]),
                    _num(r["negative"]),
                ]
                for r in report.feedback_by_intent.iter_rows(named=True)
            ],
        )
    )
    if report.cost_by_model.height:
        out.append(
            (
                "Cost by model",
                ["model", "queries", "priced", "cost (USD)", "per query", "input tokens", "output tokens"],
                [
                    [
                        r["model"],
                        _num(r["queries"]),
                        _num(r["priced"]),
                        _usd(r["cost_usd"]),
                        _usd(r["cost_per_query"]),
                        _num(r["input_tokens"]),
                        _num(r["output_tokens"]),
                    ]
                    for r in report.cost_by_model.iter_rows(named=True)
                ],
            )
        )
    by = (
        ("By release", "release", report.by_release),
        ("By prompt version", "prompt version", report.by_prompt_version),
    )
    for title, name, frame in by:
        if frame.height:
            out.append(
                (
                    title,
                    [name, "queries", "error rate", "p50", "p95", "feedback", "mean score", "up share", "quality",
                     "cost (USD)"],
                    [
                        [
                            "(none)" if r["value"] is None else r["value"],
                            _num(r["queries"]),
                            percent(r["error_rate"]),
                            milliseconds(r["p50_ms"]),
                            milliseconds(r["p95_ms"]),
                            _num(r["with_feedback"]),
                            _score(r["mean_score"]),
                            percent(r["positive_share"]),
                            _score(r["mean_quality"]),
                            _usd(r["cost_usd"]) + (f" ({r['unpriced']:,} unpriced)" if r["unpriced"] else ""),
                        ]
                        for r in frame.iter_rows(named=True)
                    ],
                )
            )  # fmt: skip
    out.append(
        (
            "Reformulations by intent",
            ["intent", "queries", "asked again", "rate"],
            [
                [r["intent"], _num(r["queries"]), _num(r["reformulated"]), percent(r["reformulation_rate"])]
                for r in report.reformulation_by_intent.iter_rows(named=True)
            ],
        )
    )
    if report.most_reformulated.height:
        out.append(
            (
                "Most reformulated questions",
                ["query", "asked again", "queries", "rate", "intent"],
                [
                    [_question(r["query_text"]), _num(r["reformulated"]), _num(r["queries"]),
                     percent(r["reformulation_rate"]), r["intent"]]
                    for r in report.most_reformulated.iter_rows(named=True)
                ],
            )
        )  # fmt: skip
    out.append(
        (
            "Top queries",
            ["query", "queries", "intent", "no results", "p50"],
            [
                [
                    _question(r["query_text"]),
                    _num(r["queries"]),
                    r["intent"],
                    _num(r["no_results"]),
                    milliseconds(r["p50_ms"]),
                ]
                for r in report.top_queries.iter_rows(named=True)
            ],
        )
    )
    out.append(
        (
            "Queries whose search found nothing",
            ["query", "queries", "intent", "last seen"],
            [
                [_question(r["query_text"]), _num(r["queries"]), r["intent"], f"{r['last_seen']:%Y-%m-%d %H:%M}"]
                for r in report.no_result_queries.iter_rows(named=True)
            ],
        )
    )
    return out


#: The most of a question a table cell shows: a question may be 16,384 characters, and the page is a summary.
QUESTION_CHARS: Final = 200


def _question(text: str) -> str:
    return shortened(text, QUESTION_CHARS)


# -- Markdown -------------------------------------------------------------------------------------------
#: Backslash-escaped in a Markdown cell: a user's ``<img onerror=…>``, ``[x](javascript:…)``, ``**`` or backtick shows
#: as typed, never rendered as HTML, a link or emphasis, and ``|`` cannot break the table. A backslash only where it
#: would escape the next character (ASCII punctuation): `visible`'s ``\x1b`` stays as it reads in a terminal; ``_``
#: only where it could start or end emphasis (``__init__``, not ``stock_analysis``); ``&`` only before an entity.
_MD_SPECIAL: Final = re.compile(r"[`*\[<|~]|\\(?=[!-/:-@\[-`{-~])|_(?![^\W_])|(?<![^\W_])_|&(?=#?\w+;)")


def _md_cell(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\g<0>", " ".join(visible(text).split()))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    parts = [
        f"# querylog report: {_window(report)}\n",
        f"Compared with the previous window of equal length ({_previous_window(report)}). "
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC." + _retention_note(report) + _filter_note(report) + "\n",
        "## Summary\n",
        _md_table(["metric", "this window", "previous window", "change"], [list(r) for r in _headline(report)]),
    ]
    for title, header, rows in _sections(report):
        parts += [f"## {title}\n", _md_table(header, rows)]
    return "\n".join(parts)


def _retention_note(report: Report) -> str:
    """What the lake holds of the windows, when they reach before its history: retention dropped the days before,
    or the lake starts later."""
    if report.held_from is None:
        return ""
    if report.held_by_retention:
        said = f" Retention dropped the lake's days before {report.held_from:%Y-%m-%d %H:%M} UTC:"
    else:
        said = f" The lake starts with its first query, {report.held_from:%Y-%m-%d %H:%M} UTC:"
    if report.held_from >= report.until:
        return said + " neither this window nor the one before it is held; nothing is compared."
    if report.held_from > report.since:
        return said + " this window is held only from then on and the previous one not at all; nothing is compared."
    if report.previous_gone:
        return said + " the previous window is not held; nothing is compared."
    return said + " the previous window is held only from then on; its counts are not compared."


def _filter_note(report: Report) -> str:
    f = report.filters
    notes = []
    if f.intents:
        notes.append("intents: " + ", ".join(f.intents))
    if f.envs:
        notes.append("envs: " + ", ".join(f.envs))
    if f.services:
        notes.append("services: " + ", ".join(f.services))
    return f" Filtered to {'; '.join(notes)}." if notes else ""


# -- HTML with inline SVG charts --------------------------------------------------------------------------
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _svg_bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    stacked: bool = False,
    unit: str = "",
    width: int = 720,
    height: int = 240,
) -> str:
    """A grouped or stacked bar chart as inline SVG, each bar with a tooltip naming its value."""
    if not labels:
        return ""
    left, bottom, top, right = 56, 46, 28, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = (
        [sum(s[1][i] for s in series) for i in range(len(labels))]
        if stacked
        else [max(s[1][i] for s in series) for i in range(len(labels))]
    )
    peak = _axis_top(max([*totals, 0]) or 1.0)
    slot = plot_w / len(labels)
    bar_w = slot * 0.8 / (1 if stacked else len(series))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{_esc(_FONTS)}" font-size="11">',
        f"<title>{_esc(title)}</title>",
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{_esc(title)}</text>',
    ]
    # Each gridline's label with the decimals its step needs (0.005, 0.01, 0.015: three), the same on every line.
    decimals = max(0, -math.floor(math.log10(peak / 4) + 1e-9)) if peak < 4 else 0
    for k in range(5):
        value = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        label = f"{value:,.{decimals}f}" if decimals else _tick(value)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_esc(label)}</text>')
    every = max(1, len(labels) // 12)  # keep axis labels legible when there are many bars
    for i, label in enumerate(labels):
        x0 = left + slot * i + slot * 0.1
        base = 0.0
        for j, (name, values) in enumerate(series):
            value = values[i]
            h = plot_h * value / peak
            x = x0 if stacked else x0 + bar_w * j
            y = top + plot_h - h - (plot_h * base / peak if stacked else 0)
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[j % len(_PALETTE)]}"><title>{_esc(label)} · {_esc(name)}: '
                f"{_esc(_tick(value))}{_esc(unit)}</title></rect>"
            )
            if stacked:
                base += value
        if i % every == 0:
            out.append(
                f'<text x="{left + slot * (i + 0.5):.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'fill="#333">{_esc(label)}</text>'
            )
    x = left
    for j, (name, _) in enumerate(series):
        out.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{_PALETTE[j % len(_PALETTE)]}"/>')
        out.append(f'<text x="{x + 14}" y="{height - 5}">{_esc(name)}</text>')
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


#: The steps an axis's gridlines may take, times a power of ten: 0, 60, 120, 180, 240 rather than 0, 50, 100, 151, 201.
_ROUND_STEPS: Final = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 10.0)


def _axis_top(peak: float) -> float:
    """The top of a chart's value axis: the smallest four round steps (`_ROUND_STEPS`) that reach `peak`, each a
    whole number once `peak` is one or more (the charts count queries and milliseconds: not 2.50, 5, 7.50, 10)."""
    if not (math.isfinite(peak) and peak > 0):
        return 1.0
    step = peak / 4
    scale = 10.0 ** math.floor(math.log10(step))
    # Under one, steps a two-decimal label reads exactly (not 0.015): 1, 2 or 5 of the scale.
    sizes = (m * scale for m in (_ROUND_STEPS if peak >= 1 else (1.0, 2.0, 5.0, 10.0)))
    return 4 * next(s for s in sizes if s >= step * (1 - 1e-9) and (peak < 1 or abs(s - round(s)) < 1e-9))


def _tick(value: float) -> str:
    if abs(value) >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.2g}"  # a step of 0.002 is no "0.00"


def _charts(report: Report) -> list[str]:
    charts = []
    v = report.volume
    if not v.is_empty():
        labels = [_bucket_label(report, b) for b in v["bucket"]]
        ok = [float(q - f) for q, f in zip(v["queries"], v["failed"], strict=True)]
        charts.append(
            _svg_bars(
                f"Queries by {report.bucket}",
                labels,
                [("completed", ok), ("failed", [float(x) for x in v["failed"]])],
                stacked=True,
            )
        )
    i = report.intents
    if not i.is_empty():
        charts.append(
            _svg_bars(
                "Queries by intent: this window vs previous",
                list(i["intent"]),
                [
                    ("this window", [float(x) for x in i["queries"]]),
                    ("previous", [float(x) for x in i["previous_queries"]]),
                ],
            )
        )
    lat = report.latency_by_intent
    if not lat.is_empty():
        charts.append(
            _svg_bars(
                "Latency by intent (ms)",
                list(lat["intent"]),
                [(name, [float(x or 0) for x in lat[f"{name}_ms"]]) for name in ("p50", "p95", "p99")],
                unit=" ms",
            )
        )
    q = report.quality
    if q["queries"].sum():
        charts.append(
            _svg_bars(
                "Quality score distribution",
                [f"{b:.1f}" for b in q["bin_start"]],
                [("queries", [float(x) for x in q["queries"]])],
            )
        )
    return [c for c in charts if c]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "<p class=none>none</p>"
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no network — any browser shows it as is."""
    cards = "".join(
        f"<div class=card><div class=metric>{_esc(name)}</div><div class=value>{_esc(now)}</div>"
        f"<div class=change>{_esc(change)} <span>vs {_esc(before)}</span></div></div>"
        for name, now, before, change in _headline(report)
    )
    sections = "".join(f"<h2>{_esc(t)}</h2>{_html_table(h, r)}" for t, h, r in _sections(report))
    charts = "".join(f"<figure>{svg}</figure>" for svg in _charts(report))
    return f"""<!doctype html>
<html lang="ko"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>querylog report {_esc(_window(report))}</title>
<style>
body {{ font-family: {_FONTS}; margin: 2rem auto; max-width: 980px; color: #222; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .6rem; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .5rem .7rem; }}
.metric {{ color: #555; font-size: .85rem; }} .value {{ font-size: 1.3rem; font-weight: 600; }}
.change {{ font-size: .85rem; }} .change span {{ color: #777; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
th, td {{ border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: left; }}
td:not(:first-child) {{ font-variant-numeric: tabular-nums; }}
figure {{ margin: 1rem 0; }} .none {{ color: #777; }} footer {{ color: #777; font-size: .8rem; margin-top: 2rem; }}
</style></head><body>
<h1>querylog report</h1>
<p>{_esc(_window(report))}, compared with {_esc(_previous_window(report))}.{_esc(_retention_note(report))}\
{_esc(_filter_note(report))}</p>
<h2>Summary</h2><div class=cards>{cards}</div>
<h2>Charts</h2>{charts or "<p class=none>no data in this window</p>"}
{sections}
<footer>Generated {report.generated_at:%Y-%m-%d %H:%M} UTC by querylog. Self-contained: no scripts, no external
resources; charts are inline SVG.</footer>
</body></html>
"""
