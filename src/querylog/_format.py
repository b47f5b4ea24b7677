"""Rows as a terminal table (East Asian wide characters count double), JSON or CSV."""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["FORMATS", "format_rows", "milliseconds", "percent", "rounded_ms", "shortened", "visible"]

FORMATS = ("table", "json", "csv")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    return str(value)


def _char_width(ch: str) -> int:
    """Columns a terminal gives `ch`: 0 for a mark drawn on the character before it (a combining accent; the vowel
    and final jamo of decomposed Hangul, NFD ``하`` being ``ᄒ`` + ``ᅡ``), 2 for a wide one (Hangul, Han), else 1."""
    if "\u1160" <= ch <= "\u11ff" or unicodedata.combining(ch) or unicodedata.category(ch) == "Me":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_char_width(ch) for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


#: Line breaks as any system writes them, and tabs: shown as one space each.
_BREAKS = re.compile("\r\n|[\r\n\t]")
#: What a terminal would obey rather than show: C0 and C1 controls (ESC starts colour and cursor sequences) and
#: the bidirectional overrides and isolates (U+202E shows the rest of a line backwards).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` safe to print on a terminal: line breaks (``\\n``, ``\\r\\n``, ``\\r``) and tabs become spaces, any other
    control character and the bidirectional controls their escape (``\\x1b``, ``\\u202e``). A user's question must
    not recolour, move or reverse the operator's screen."""
    text = _BREAKS.sub(" ", text)
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def shortened(text: str, limit: int) -> str:
    """`visible(text)`, cut past `limit` characters and saying how long it was: a user's text in a message or a
    label, where a 16,384-character question would fill the screen."""
    text = visible(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _ms_decimals(value: float) -> int:
    # Two decimals under 1 ms, one under 10 ms, whole past it: a cache hit in 0.36 ms is not "0 ms".
    return 2 if abs(value) < 1 else 1 if abs(value) < 10 else 0


def milliseconds(value: float | None) -> str:
    """A latency for a person (``0.36 ms``, ``4.2 ms``, ``1,312 ms``); "–" for none."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.{_ms_decimals(value)}f} ms"


def rounded_ms(value: float) -> float:
    """A latency rounded as `milliseconds` shows it, as a number (the terminal echo's ``ms=0.36``)."""
    decimals = _ms_decimals(value)
    return round(value, decimals) if decimals else round(value)


def percent(value: float | None) -> str:
    """A share (0.125 → 12.5%); "–" for none, and for 0/0 (a share of an empty window)."""
    return "–" if value is None or math.isnan(value) else f"{value * 100:.1f}%"


def _clip(text: str, limit: int) -> str:
    text = visible(text)
    if _width(text) <= limit:
        return text
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > limit - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _csv_cell(value: Any) -> Any:
    """A CSV cell: nested values (a query's sources, tags, attributes) as JSON, which a spreadsheet or a program
    reads back, not as Python's repr."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return _dumps(value).decode()
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _exact(value: Any) -> Any:
    """`value` with every integer past 64 bits (a HUGEINT sum, at any depth) as its exact decimal text."""
    if type(value) is int:
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def _dumps(value: Any, option: int = 0) -> bytes:
    """JSON of a query's values: a MAP's keys as text, dates as ISO text, integers past 64 bits exactly, as text."""
    option |= orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(value, default=_json_default, option=option)
    except orjson.JSONEncodeError:  # an integer past 64 bits: rare, so looked for only when one is there
        return orjson.dumps(_exact(value), default=_json_default, option=option)


def format_rows(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *, max_col_width: int = 60
) -> str:
    if fmt == "json":
        objects = [dict(zip(columns, row, strict=True)) for row in rows]
        return _dumps(objects, orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    cells = [[_clip(_cell(v), max_col_width) for v in row] for row in rows]
    widths = [max([_width(c), *(_width(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(_pad(c, w) for c, w in zip(columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    out.append(line)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"
