"""A small LogQL engine for the recorded-Loki double: the subset querylog's docs, panels and tests use.

Supported: stream selectors (``= != =~ !~``); line filters (``|= != |~ !~``); ``| json`` (all fields, or
``json a, b="x.y"``); ``| logfmt``; label filters on stream labels, structured metadata and parsed fields
(string ``= != =~ !~``, numeric ``> >= < <= == !=``); ``| unwrap f``; range aggregations
(``count_over_time rate bytes_over_time bytes_rate sum_/avg_/min_/max_/first_/last_over_time
quantile_over_time``) and vector aggregations (``sum avg min max count topk bottomk`` with ``by``/``without``).
Anything else is a parse error, reported the way Loki words its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeAlias

import orjson

__all__ = [
    "LogQLError",
    "LogSelector",
    "Matcher",
    "MetricExpr",
    "Row",
    "Sample",
    "evaluate_log",
    "evaluate_metric",
    "format_value",
    "parse",
    "parse_duration",
    "parse_selector",
]

Labels: TypeAlias = dict[str, str]


class LogQLError(ValueError):
    """A query Loki would refuse with 400; the message is worded like Loki's."""


# -- lexing ------------------------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")
_DURATION_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_NUMBER_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENT_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LOGFMT_RE: Final = re.compile(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_OPS: Final = (
    "|=", "|~", "!=", "!~", "=~", "==", ">=", "<=", "=", ">", "<", "|", "{", "}", "(", ")", "[", "]", ",",
    "+", "-", "*", "/", "%",
)  # fmt: skip
_COMPARISONS: Final = ("==", "!=", ">", ">=", "<", "<=")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # an operator itself, or STRING, NUMBER, DURATION, IDENT, EOF
    text: str
    col: int  # 1-based, as Loki reports it


def parse_duration(text: str) -> float:
    """``"5m"`` → 300.0 seconds; ``"1h30m"`` → 5400.0."""
    if not _DURATION_RE.fullmatch(text):
        raise LogQLError(f"not a valid duration string: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART_RE.findall(text))


def _lex(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(query):
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c in '"`':
            j, value = _read_string(query, i)
            tokens.append(_Token("STRING", value, i + 1))
            i = j
            continue
        if c.isdigit():
            dur = _DURATION_RE.match(query, i)
            num = _NUMBER_RE.match(query, i)
            if dur and (not num or dur.end() > num.end()):
                tokens.append(_Token("DURATION", dur.group(), i + 1))
                i = dur.end()
            else:
                assert num is not None
                tokens.append(_Token("NUMBER", num.group(), i + 1))
                i = num.end()
            continue
        ident = _IDENT_RE.match(query, i)
        if ident:
            tokens.append(_Token("IDENT", ident.group(), i + 1))
            i = ident.end()
            continue
        op = next((o for o in _OPS if query.startswith(o, i)), None)
        if op is None:
            raise LogQLError(f"parse error at line 1, col {i + 1}: syntax error: unexpected character: '{c}'")
        tokens.append(_Token(op, op, i + 1))
        i += len(op)
    tokens.append(_Token("EOF", "$end", len(query) + 1))
    return tokens


def _read_string(query: str, start: int) -> tuple[int, str]:
    quote = query[start]
    if quote == "`":
        end = query.find("`", start + 1)
        if end < 0:
            raise LogQLError(f"parse error at line 1, col {start + 1}: literal not terminated")
        return end + 1, query[start + 1 : end]
    i = start + 1
    while i < len(query):
        if query[i] == "\\":
            i += 2
            continue
        if query[i] == '"':
            try:
                value: str = orjson.loads(query[start : i + 1])
            except orjson.JSONDecodeError as exc:
                raise LogQLError(f"parse error at line 1, col {start + 1}: invalid string: {exc}") from None
            return i + 1, value
        i += 1
    raise LogQLError(f"parse error at line 1, col {start + 1}: literal not terminated")


# -- the syntax tree ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return _compare_text(labels.get(self.name, ""), self.op, self.value)


def _compare_text(actual: str, op: str, expected: str) -> bool:
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    found = re.fullmatch(expected, actual) is not None  # Loki anchors label regexes
    return found if op == "=~" else not found


@dataclass(frozen=True, slots=True)
class _LineFilter:
    op: str
    value: str

    def keep(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        found = re.search(self.value, line) is not None
        return found if self.op == "|~" else not found


@dataclass(frozen=True, slots=True)
class _Json:
    fields: tuple[tuple[str, str], ...] = ()  # (label, path); empty: every field


@dataclass(frozen=True, slots=True)
class _Logfmt:
    pass


@dataclass(frozen=True, slots=True)
class _LabelFilter:
    name: str
    op: str
    value: str | float


@dataclass(frozen=True, slots=True)
class _Unwrap:
    name: str


_Stage: TypeAlias = _LineFilter | _Json | _Logfmt | _LabelFilter | _Unwrap


@dataclass(frozen=True, slots=True)
class LogSelector:
    matchers: tuple[Matcher, ...]
    stages: tuple[_Stage, ...] = ()

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    @property
    def unwrap(self) -> str | None:
        return next((s.name for s in self.stages if isinstance(s, _Unwrap)), None)


@dataclass(frozen=True, slots=True)
class _Grouping:
    without: bool
    labels: tuple[str, ...]

    def key(self, labels: Mapping[str, str]) -> Labels:
        if self.without:
            return {k: v for k, v in labels.items() if k not in self.labels}
        return {k: labels[k] for k in self.labels if k in labels}


@dataclass(frozen=True, slots=True)
class _RangeAgg:
    op: str
    selector: LogSelector
    range_s: float
    param: float | None = None
    grouping: _Grouping | None = None


@dataclass(frozen=True, slots=True)
class _VectorAgg:
    op: str
    inner: MetricExpr
    grouping: _Grouping | None = None
    param: float | None = None


@dataclass(frozen=True, slots=True)
class _Scalar:
    value: float


@dataclass(frozen=True, slots=True)
class _Binary:
    """``a / b``, ``a > 0.1``: series match on identical labels; a comparison keeps the left side's series."""

    op: str
    left: MetricExpr
    right: MetricExpr
    bool_result: bool = False


MetricExpr: TypeAlias = _RangeAgg | _VectorAgg | _Scalar | _Binary
_RANGE_OPS: Final = frozenset(
    {
        "count_over_time", "rate", "bytes_over_time", "bytes_rate", "sum_over_time", "avg_over_time",
        "min_over_time", "max_over_time", "first_over_time", "last_over_time", "quantile_over_time",
        "stddev_over_time", "stdvar_over_time", "absent_over_time",
    }
)  # fmt: skip
_UNWRAPPED_OPS: Final = _RANGE_OPS - {"count_over_time", "rate", "bytes_over_time", "bytes_rate", "absent_over_time"}
_VECTOR_OPS: Final = frozenset({"sum", "avg", "min", "max", "count", "topk", "bottomk", "stddev", "stdvar"})


# -- parsing -----------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _lex(query)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, expecting: str | None = None) -> LogQLError:
        t = self.tok
        shown = t.text if t.kind == "EOF" else (repr(t.text) if t.kind == "STRING" else t.text)
        if t.kind == "IDENT":
            shown = f"IDENTIFIER {t.text}" if t.text not in _RANGE_OPS | _VECTOR_OPS else t.text.upper()
        message = f"parse error at line 1, col {t.col}: syntax error: unexpected {shown}"
        return LogQLError(message + (f", expecting {expecting}" if expecting else ""))

    def expect(self, kind: str, expecting: str | None = None) -> _Token:
        if self.tok.kind != kind:
            raise self.fail(expecting or kind)
        return self.take()

    def parse(self) -> LogSelector | MetricExpr:
        expr: LogSelector | MetricExpr = self.log_selector() if self.tok.kind == "{" else self.binary()
        if self.tok.kind != "EOF":
            raise self.fail()
        return expr

    def binary(self) -> MetricExpr:
        left = self.additive()
        if self.tok.kind in _COMPARISONS:
            op = self.take().text
            bool_result = self.tok.kind == "IDENT" and self.tok.text == "bool"
            if bool_result:
                self.take()
            return _Binary(op, left, self.additive(), bool_result)
        return left

    def additive(self) -> MetricExpr:
        expr = self.multiplicative()
        while self.tok.kind in ("+", "-"):
            op = self.take().text
            expr = _Binary(op, expr, self.multiplicative())
        return expr

    def multiplicative(self) -> MetricExpr:
        expr = self.operand()
        while self.tok.kind in ("*", "/", "%"):
            op = self.take().text
            expr = _Binary(op, expr, self.operand())
        return expr

    def operand(self) -> MetricExpr:
        if self.tok.kind == "NUMBER":
            return _Scalar(float(self.take().text))
        if self.tok.kind == "(":
            self.take()
            expr = self.binary()
            self.expect(")")
            return expr
        return self.metric()

    def metric(self) -> MetricExpr:
        if self.tok.kind != "IDENT":
            raise self.fail()
        name = self.tok.text
        if name in _RANGE_OPS:
            return self.range_agg()
        if name in _VECTOR_OPS:
            return self.vector_agg()
        raise self.fail()

    def grouping(self) -> _Grouping | None:
        if self.tok.kind == "IDENT" and self.tok.text in ("by", "without"):
            without = self.take().text == "without"
            self.expect("(")
            labels: list[str] = []
            while self.tok.kind != ")":
                labels.append(self.expect("IDENT", "IDENTIFIER").text)
                if self.tok.kind == ",":
                    self.take()
            self.expect(")")
            return _Grouping(without, tuple(labels))
        return None

    def vector_agg(self) -> _VectorAgg:
        op = self.take().text
        grouping = self.grouping()
        self.expect("(")
        param = None
        if op in ("topk", "bottomk"):
            param = float(self.expect("NUMBER").text)
            self.expect(",")
        inner = self.binary()
        self.expect(")")
        grouping = grouping or self.grouping()
        return _VectorAgg(op, inner, grouping, param)

    def range_agg(self) -> _RangeAgg:
        op = self.take().text
        self.expect("(")
        param = None
        if op == "quantile_over_time":
            param = float(self.expect("NUMBER").text)
            self.expect(",")
        if self.tok.kind == "(":
            self.take()
            selector = self.log_selector()
            self.expect(")")
            range_s = self.range()
        else:
            selector = self.log_selector()
            range_s = self.range()
            # Loki also takes the range right after the selector: count_over_time({a="b"}[5m] |= "x")
            more = self.stages()
            selector = LogSelector(selector.matchers, selector.stages + more)
        self.expect(")")
        grouping = self.grouping()
        if op in _UNWRAPPED_OPS and selector.unwrap is None:
            raise LogQLError(f"parse error : invalid aggregation {op} without unwrap")
        if op not in _UNWRAPPED_OPS and selector.unwrap is not None:
            raise LogQLError(f"parse error : invalid aggregation {op} with unwrap")
        return _RangeAgg(op, selector, range_s, param, grouping)

    def range(self) -> float:
        self.expect("[")
        token = self.expect("DURATION", "DURATION")
        self.expect("]")
        return parse_duration(token.text)

    def log_selector(self) -> LogSelector:
        self.expect("{")
        matchers: list[Matcher] = []
        while self.tok.kind != "}":
            name = self.expect("IDENT", "IDENTIFIER").text
            if self.tok.kind not in ("=", "!=", "=~", "!~"):
                raise self.fail("EQ or NEQ or RE or NRE")
            op = self.take().text
            value = self.expect("STRING", "STRING").text
            matchers.append(Matcher(name, op, value))
            if self.tok.kind == ",":
                self.take()
            elif self.tok.kind != "}":
                raise self.fail("COMMA or CLOSE_BRACE")
        self.expect("}")
        if not any(m.op in ("=", "=~") and not _compare_text("", m.op, m.value) for m in matchers):
            raise LogQLError("parse error : queries require at least one regexp or equality matcher that does not "
                             "have an empty-compatible value. For instance, app=~\".*\" does not meet this "
                             "requirement, but app=~\".+\" will")  # fmt: skip
        return LogSelector(tuple(matchers), self.stages())

    def stages(self) -> tuple[_Stage, ...]:
        stages: list[_Stage] = []
        while True:
            kind = self.tok.kind
            if kind in ("|=", "!=", "|~", "!~"):
                op = self.take().text
                stages.append(_LineFilter(op, self.expect("STRING", "STRING or ip").text))
            elif kind == "|":
                self.take()
                stages.append(self.pipe_stage())
            else:
                return tuple(stages)

    def pipe_stage(self) -> _Stage:
        token = self.expect("IDENT", "IDENTIFIER")
        word = token.text
        if word == "json":
            fields: list[tuple[str, str]] = []
            while self.tok.kind == "IDENT" and self.tokens[self.i + 1].kind in ("=", ",", "|", "EOF", "[", ")"):
                label = self.take().text
                path = label
                if self.tok.kind == "=":
                    self.take()
                    path = self.expect("STRING", "STRING").text
                fields.append((label, path))
                if self.tok.kind == ",":
                    self.take()
                else:
                    break
            return _Json(tuple(fields))
        if word == "logfmt":
            return _Logfmt()
        if word == "unwrap":
            return _Unwrap(self.expect("IDENT", "IDENTIFIER").text)
        if self.tok.kind in ("=", "!=", "=~", "!~") and self.tokens[self.i + 1].kind == "STRING":
            op = self.take().text
            return _LabelFilter(word, op, self.take().text)
        if self.tok.kind in (">", ">=", "<", "<=", "==", "!=") and self.tokens[self.i + 1].kind in (
            "NUMBER",
            "DURATION",
        ):
            op = self.take().text
            raw = self.take()
            value = parse_duration(raw.text) if raw.kind == "DURATION" else float(raw.text)
            return _LabelFilter(word, op, value)
        self.i -= 1
        raise self.fail()


def parse(query: str) -> LogSelector | MetricExpr:
    """Parse a LogQL query; raises `LogQLError` worded like Loki's 400 answers."""
    return _Parser(query).parse()


def parse_selector(query: str) -> LogSelector:
    """A plain stream selector such as a ``match[]`` of ``/series``."""
    parsed = parse(query)
    if not isinstance(parsed, LogSelector) or parsed.stages:
        raise LogQLError(f"parse error : only a stream selector is allowed here: {query}")
    return parsed


# -- evaluating --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One log line after the pipeline: its labels (stream, metadata, parsed), time, line and unwrapped value."""

    labels: Labels
    ts_ns: int
    line: str
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One stored entry as the engine reads it."""

    stream: Mapping[str, str]
    metadata: Mapping[str, str]
    ts_ns: int
    line: str


def _flatten(obj: object, prefix: str, out: Labels) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key))
            _flatten(value, f"{prefix}_{name}" if prefix else name, out)
    elif isinstance(obj, list):
        return  # Loki skips arrays unless addressed by an expression
    elif obj is None:
        out[prefix] = ""
    elif obj is True or obj is False:
        out[prefix] = "true" if obj else "false"
    elif isinstance(obj, float | int):
        out[prefix] = format_value(float(obj)) if isinstance(obj, float) else str(obj)
    else:
        out[prefix] = str(obj)


def _json_path(obj: object, path: str) -> object:
    for part in re.findall(r"[^.\[\]\"]+", path):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def _set_parsed(labels: Labels, stream: Mapping[str, str], name: str, value: str) -> None:
    # A parsed field named like a stream label is renamed, as Loki does (`event` → `event_extracted`).
    labels[f"{name}_extracted" if name in stream else name] = value


def _run(selector: LogSelector, row: Row) -> Sample | None:
    labels: Labels = {**row.stream, **row.metadata}
    value: float | None = None
    for stage in selector.stages:
        if isinstance(stage, _LineFilter):
            if not stage.keep(row.line):
                return None
        elif isinstance(stage, _Json):
            try:
                obj = orjson.loads(row.line)
            except orjson.JSONDecodeError as exc:
                labels["__error__"] = "JSONParserErr"
                labels["__error_details__"] = str(exc)
                continue
            parsed: Labels = {}
            if stage.fields:
                for label, path in stage.fields:
                    found = _json_path(obj, path)
                    if found is not None and not isinstance(found, dict | list):
                        _flatten(found, label, parsed)
            elif isinstance(obj, dict):
                _flatten(obj, "", parsed)
            for name, text in parsed.items():
                _set_parsed(labels, row.stream, name, text)
        elif isinstance(stage, _Logfmt):
            for key, quoted, bare in _LOGFMT_RE.findall(row.line):
                _set_parsed(labels, row.stream, key, quoted or bare)
        elif isinstance(stage, _LabelFilter):
            actual = labels.get(stage.name, "")
            if isinstance(stage.value, str):
                if not _compare_text(actual, stage.op, stage.value):
                    return None
            else:
                try:
                    number = float(actual)
                except ValueError:
                    labels["__error__"] = "LabelFilterErr"
                    continue
                if not _compare_number(number, stage.op, stage.value):
                    return None
        else:
            raw = labels.pop(stage.name, None)
            try:
                value = float(raw) if raw is not None else None
            except ValueError:
                value = None
            if value is None:
                labels["__error__"] = "SampleExtractionErr"
    return Sample(labels, row.ts_ns, row.line, value)


def _compare_number(actual: float, op: str, expected: float) -> bool:
    return {
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
        "==": actual == expected,
        "!=": actual != expected,
    }[op]


Rows: TypeAlias = Callable[[LogSelector, int, int], Iterable[Row]]


def evaluate_log(selector: LogSelector, rows: Iterable[Row]) -> Iterator[Sample]:
    """The lines `selector` keeps, with their labels."""
    for row in rows:
        sample = _run(selector, row)
        if sample is not None:
            yield sample


def _over_time(op: str, samples: Sequence[Sample], range_s: float, param: float | None) -> float | None:
    if op == "count_over_time":
        return float(len(samples))
    if op == "rate":
        return len(samples) / range_s
    if op == "bytes_over_time":
        return float(sum(len(s.line.encode()) for s in samples))
    if op == "bytes_rate":
        return sum(len(s.line.encode()) for s in samples) / range_s
    if op == "absent_over_time":
        return None
    values = [s.value for s in samples if s.value is not None]
    if not values:
        return None
    if op == "sum_over_time":
        return math.fsum(values)
    if op == "avg_over_time":
        return math.fsum(values) / len(values)
    if op == "min_over_time":
        return min(values)
    if op == "max_over_time":
        return max(values)
    if op == "first_over_time":
        return values[0]
    if op == "last_over_time":
        return values[-1]
    if op in ("stddev_over_time", "stdvar_over_time"):
        mean = math.fsum(values) / len(values)
        var = math.fsum((v - mean) ** 2 for v in values) / len(values)
        return math.sqrt(var) if op == "stddev_over_time" else var
    assert param is not None
    return _quantile(param, values)


def _quantile(q: float, values: list[float]) -> float:
    # Prometheus' interpolation, as Loki's quantile_over_time uses it.
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lower = math.floor(rank)
    upper = min(lower + 1, len(ordered) - 1)
    weight = rank - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


_Vector: TypeAlias = dict[tuple[tuple[str, str], ...], float]


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a))
    if op == "%":
        return math.fmod(a, b) if b else math.nan
    return 1.0 if _compare_number(a, op, b) else 0.0


def _binary(expr: _Binary, rows: Rows, at_ns: int) -> _Vector | float:
    left = _evaluate(expr.left, rows, at_ns)
    right = _evaluate(expr.right, rows, at_ns)
    comparison = expr.op in _COMPARISONS
    if isinstance(left, float) and isinstance(right, float):
        return _arith(expr.op, left, right)
    out: _Vector = {}
    pairs: Iterable[tuple[tuple[tuple[str, str], ...], float, float]]
    if isinstance(left, float):
        assert isinstance(right, dict)
        pairs = ((k, left, v) for k, v in right.items())
    elif isinstance(right, float):
        pairs = ((k, v, right) for k, v in left.items())
    else:
        pairs = ((k, v, right[k]) for k, v in left.items() if k in right)
    for key, a, b in pairs:
        if not comparison:
            out[key] = _arith(expr.op, a, b)
        elif expr.bool_result:
            out[key] = 1.0 if _compare_number(a, expr.op, b) else 0.0
        elif _compare_number(a, expr.op, b):
            out[key] = a if not isinstance(left, float) else b
    return out


def _evaluate(expr: MetricExpr, rows: Rows, at_ns: int) -> _Vector | float:
    if isinstance(expr, _Scalar):
        return expr.value
    if isinstance(expr, _Binary):
        return _binary(expr, rows, at_ns)
    return evaluate_metric(expr, rows, at_ns)


def evaluate_metric(expr: MetricExpr, rows: Rows, at_ns: int) -> _Vector:
    """The instant vector of `expr` at `at_ns`: series labels → value (a scalar is one series with no labels)."""
    if isinstance(expr, _Scalar | _Binary):
        evaluated = _evaluate(expr, rows, at_ns)
        return {(): evaluated} if isinstance(evaluated, float) else evaluated
    if isinstance(expr, _RangeAgg):
        start = at_ns - int(expr.range_s * 1e9)
        groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
        # The window is (t - range, t], like Loki's range vector iterator.
        for sample in evaluate_log(expr.selector, rows(expr.selector, start + 1, at_ns + 1)):
            labels = sample.labels if expr.grouping is None else expr.grouping.key(sample.labels)
            groups.setdefault(_key(labels), []).append(sample)
        result: dict[tuple[tuple[str, str], ...], float] = {}
        for key, samples in groups.items():
            samples.sort(key=lambda s: s.ts_ns)
            over = _over_time(expr.op, samples, expr.range_s, expr.param)
            if over is not None:
                result[key] = over
        return result
    inner = evaluate_metric(expr.inner, rows, at_ns)
    if expr.op in ("topk", "bottomk"):
        assert expr.param is not None
        buckets: dict[tuple[tuple[str, str], ...], list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for key, value in inner.items():
            group = _key(expr.grouping.key(dict(key))) if expr.grouping else ()
            buckets.setdefault(group, []).append((key, value))
        picked: dict[tuple[tuple[str, str], ...], float] = {}
        for members in buckets.values():
            members.sort(key=lambda kv: kv[1], reverse=expr.op == "topk")
            picked.update(members[: int(expr.param)])
        return picked
    grouped: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for key, value in inner.items():
        group = _key(expr.grouping.key(dict(key))) if expr.grouping else ()
        grouped.setdefault(group, []).append(value)
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for group, values in grouped.items():
        if expr.op == "sum":
            out[group] = math.fsum(values)
        elif expr.op == "avg":
            out[group] = math.fsum(values) / len(values)
        elif expr.op == "min":
            out[group] = min(values)
        elif expr.op == "max":
            out[group] = max(values)
        elif expr.op == "count":
            out[group] = float(len(values))
        else:
            mean = math.fsum(values) / len(values)
            var = math.fsum((v - mean) ** 2 for v in values) / len(values)
            out[group] = math.sqrt(var) if expr.op == "stddev" else var
    return out


def format_value(value: float) -> str:
    """A sample value as Loki writes it (Go's ``strconv.FormatFloat(v, 'f', -1, 64)``)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text else text
