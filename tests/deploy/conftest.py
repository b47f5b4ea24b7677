"""Shared loaders and LogQL/PromQL checks for the deployment tests (dashboards, Loki rules, compose).

Dashboard targets and Loki rules are read from the committed files and handed to tests through
``pytest_generate_tests``, so every query gets its own test id (``dashboard:panel:ref`` or ``group:rule``).
Tests reach the functions below through the ``checks`` fixture.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest
import yaml

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARD_DIR: Final = REPO_ROOT / "grafana" / "dashboards"
RULES_FILE: Final = REPO_ROOT / "loki" / "rules" / "fake" / "querylog.yml"

STREAM_LABELS: Final = frozenset({"app", "env", "event"})
HIGH_CARDINALITY: Final = ("user_id", "session_id", "query_id", "trace_id")
RANGE_FUNCTIONS: Final = (
    "rate", "rate_counter", "count_over_time", "bytes_rate", "bytes_over_time", "sum_over_time", "avg_over_time",
    "max_over_time", "min_over_time", "first_over_time", "last_over_time", "stddev_over_time", "stdvar_over_time",
    "quantile_over_time", "absent_over_time",
)  # fmt: skip
AGGREGATIONS: Final = ("sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "sort", "sort_desc")


# --- loading ------------------------------------------------------------------------------------------------------


def load_generator() -> ModuleType:
    """grafana/generate.py as a module (it is a script, not a package: load it by path)."""
    spec = importlib.util.spec_from_file_location("querylog_grafana_generate", REPO_ROOT / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being made
    spec.loader.exec_module(module)
    return module


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name → parsed JSON of every committed dashboard."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


@dataclass(frozen=True, slots=True)
class DashboardTarget:
    dashboard: dict[str, Any]
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.dashboard['uid']}:{self.panel['id']}:{self.target['refId']}"

    @property
    def expr(self) -> str:
        return str(self.target["expr"])

    @property
    def datasource_uid(self) -> str:
        return str(self.target["datasource"]["uid"])

    @property
    def instant(self) -> bool:
        return self.target.get("queryType") == "instant" or self.target.get("instant") is True


def iter_targets() -> Iterator[DashboardTarget]:
    for dashboard in load_dashboards().values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield DashboardTarget(dashboard, panel, target)


@dataclass(frozen=True, slots=True)
class Rule:
    group: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("alert") or self.body.get("record"))

    @property
    def is_alert(self) -> bool:
        return "alert" in self.body

    @property
    def id(self) -> str:
        topic = self.body.get("labels", {}).get("topic")
        return f"{self.group}:{self.name}" + (f":{topic}" if topic else "")


def load_rules_file(path: Path = RULES_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def iter_rules() -> Iterator[Rule]:
    for group in load_rules_file().get("groups", []):
        for body in group.get("rules", []):
            yield Rule(group["name"], body)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loki_target" in metafunc.fixturenames:
        loki = [t for t in iter_targets() if t.datasource_uid == "loki"]
        metafunc.parametrize("loki_target", loki, ids=[t.id for t in loki])
    if "prom_target" in metafunc.fixturenames:
        prom = [t for t in iter_targets() if t.datasource_uid == "prometheus"]
        metafunc.parametrize("prom_target", prom, ids=[t.id for t in prom])
    if "loki_rule" in metafunc.fixturenames:
        rules = list(iter_rules())
        metafunc.parametrize("loki_rule", rules, ids=[r.id for r in rules])
    if "loki_alert" in metafunc.fixturenames:
        alerts = [r for r in iter_rules() if r.is_alert]
        metafunc.parametrize("loki_alert", alerts, ids=[r.id for r in alerts])
    if "dashboard" in metafunc.fixturenames:
        dashboards = load_dashboards()
        metafunc.parametrize("dashboard", list(dashboards.values()), ids=list(dashboards))


# --- query checks -------------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|`[^`]*`)\s*')
_PAIRS: Final = {")": "(", "]": "[", "}": "{"}


def mask_strings(expr: str) -> str:
    """The expression with every string literal's content blanked (same length), so that braces, parentheses and
    label names inside strings (line_format templates, regexps, search text) are not mistaken for syntax."""
    return _STRING.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], expr)


def bracket_problems(expr: str) -> list[str]:
    code = mask_strings(expr)
    if code.count('"') % 2 or code.count("`") % 2:
        return ["unterminated string literal"]
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(code):
        if ch in "([{":
            stack.append((ch, i))
        elif ch in ")]}":
            if not stack or stack[-1][0] != _PAIRS[ch]:
                return [f"unbalanced {ch!r} at {i}"]
            stack.pop()
    return [f"unclosed {ch!r} at {i}" for ch, i in stack]


def stream_selectors(expr: str) -> list[str]:
    """The text inside every `{...}` stream selector (string contents intact)."""
    code = mask_strings(expr)
    return [expr[m.start() + 1 : m.end() - 1] for m in re.finditer(r"\{[^{}]*\}", code)]


def selector_problems(selector: str) -> list[str]:
    problems = []
    names = []
    for part in _split_matchers(selector):
        m = _MATCHER.fullmatch(part)
        if m is None:
            problems.append(f"cannot read matcher {part!r} in {{{selector}}}")
        else:
            names.append(m.group(1))
    for name in names:
        if name not in STREAM_LABELS:
            problems.append(f"selector {{{selector}}} uses label {name!r}; stream labels are {sorted(STREAM_LABELS)}")
    if "app" not in names:
        problems.append(f'selector {{{selector}}} has no app matcher (every querylog query starts with app="querylog")')
    return problems


def _split_matchers(selector: str) -> list[str]:
    code = mask_strings(selector)
    parts, start = [], 0
    for i, ch in enumerate(code):
        if ch == ",":
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p for p in parts if p.strip()]


def _matching_paren(code: str, open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"no closing parenthesis for {open_index}")


def _enclosing_paren(code: str, index: int) -> int | None:
    depth = 0
    for i in range(index - 1, -1, -1):
        if code[i] == ")":
            depth += 1
        elif code[i] == "(":
            if depth == 0:
                return i
            depth -= 1
    return None


_GROUPING_AFTER = re.compile(r"\s*(by|without)\s*\(")
_AGGREGATION_BEFORE = re.compile(r"\b(" + "|".join(AGGREGATIONS) + r")\s*(?:(?:by|without)\s*\([^()]*\)\s*)?$")
_DISTINCT_COUNT_BEFORE = re.compile(r"\bcount\s*\(\s*sum\s+by\s*\(\s*$")


def high_cardinality_problems(expr: str) -> list[str]:
    """Ids may appear only as a structured-metadata filter (`| session_id="s-7"`) or in the one distinct-count
    form `count(sum by (session_id) (...))`, which returns a single series."""
    code = mask_strings(expr)
    problems = []
    for name in HIGH_CARDINALITY:
        for m in re.finditer(rf"\b{name}\b", code):
            before, after = code[: m.start()], code[m.end() :]
            if re.search(r"\|\s*$", before) and re.match(r'\s*(=~|!~|!=|=)\s*["`]', after):
                continue
            if _DISTINCT_COUNT_BEFORE.search(before) and re.match(r"\s*\)", after):
                continue
            problems.append(f"{name} used outside a structured-metadata filter at {m.start()}: {expr}")
    return problems


def logql_problems(expr: str, *, range_pattern: str) -> list[str]:
    """Everything wrong with a LogQL expression by this project's rules. `range_pattern` is a regexp the
    contents of every `[...]` range must match fully (`\\$__auto` for dashboards, `\\d+[smhd]` for rules)."""
    problems = bracket_problems(expr)
    if problems:
        return problems
    selectors = stream_selectors(expr)
    if not selectors:
        problems.append("no stream selector")
    for selector in selectors:
        problems += selector_problems(selector)
    problems += high_cardinality_problems(expr)
    code = mask_strings(expr)
    for m in re.finditer(r"\[([^\]]*)\]", code):
        if not re.fullmatch(range_pattern, m.group(1).strip()):
            problems.append(f"range [{m.group(1)}] does not match {range_pattern}")
    for m in re.finditer(r"\b(" + "|".join(RANGE_FUNCTIONS) + r")\s*\(", code):
        open_index = m.end() - 1
        close = _matching_paren(code, open_index)
        grouped = _GROUPING_AFTER.match(code, close + 1) is not None
        if m.group(1) == "quantile_over_time":
            if not grouped:
                problems.append("quantile_over_time without by (...): quantiles cannot be re-aggregated")
            arg = re.match(r"\s*([0-9.]+)\s*,", code[open_index + 1 :])
            if arg is None or not 0 <= float(arg.group(1)) <= 1:
                problems.append("quantile_over_time needs a quantile in [0, 1] as its first argument")
            continue
        if grouped or m.group(1) == "absent_over_time":
            continue
        enclosing = _enclosing_paren(code, m.start())
        if enclosing is None or not _AGGREGATION_BEFORE.search(code[:enclosing]):
            problems.append(
                f"{m.group(1)}(...) is not aggregated: without sum/avg/... by (...) every structured-metadata "
                "value (each query_id) becomes its own series"
            )
    return problems


def is_metric_query(expr: str) -> bool:
    return re.search(r"\[[^\]]*\]", mask_strings(expr)) is not None


_INCREASE_OF: Final = re.compile(r"\bincrease\s*\(\s*[a-z_:][a-z0-9_:]*\s*(?:\{[^}]*\})?\s*$")


def promql_problems(expr: str) -> list[str]:
    problems = bracket_problems(expr)
    if problems:
        return problems
    code = mask_strings(expr)
    for m in re.finditer(r"\[([^\]]*)\]", code):
        if m.group(1) == "$__interval" and _INCREASE_OF.search(code[: m.start()]):
            continue  # a count per step: `increase` over the step itself, whose bars add up (generate.py PER_STEP)
        if m.group(1) != "$__rate_interval":
            problems.append(f"range [{m.group(1)}] should be [$__rate_interval]")
    for m in re.finditer(r"\bhistogram_quantile\s*\(", code):
        inner = code[m.end() : _matching_paren(code, m.end() - 1)]
        grouping = re.search(r"\bby\s*\(([^)]*)\)", inner)
        if grouping is None or "le" not in [g.strip() for g in grouping.group(1).split(",")]:
            problems.append("histogram_quantile needs sum by (le, ...) inside it")
        elif len([g for g in grouping.group(1).split(",") if g.strip()]) < 2:
            problems.append("histogram_quantile: give the series dimension too, as in sum by (le, intent)")
    for name in re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*(?:\{|\[)", code):
        if not name.startswith("querylog_"):
            problems.append(f"metric {name!r} is not a querylog metric")
    for name in HIGH_CARDINALITY:
        if re.search(rf"\b{name}\b", code):
            problems.append(f"{name} in a PromQL query: ids are never metric labels")
    return problems


@pytest.fixture(scope="session")
def generator() -> ModuleType:
    return load_generator()


@pytest.fixture(scope="session")
def checks() -> ModuleType:
    """This module, for its loaders and query checks: under --import-mode=importlib a test cannot import conftest."""
    return sys.modules[__name__]
