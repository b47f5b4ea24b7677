"""The notebooks run top to bottom, cell by cell, on a generated lake, the way "Run all" would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

#: Runs a percent-format notebook's code cells in order in one namespace, naming the cell that fails.
RUNNER = r"""
import re, sys, traceback
source = open(sys.argv[1], encoding="utf-8").read()
cells = re.split(r"^# %%(.*)$", source, flags=re.M)
namespace = {"__name__": "__main__"}
code_cells = 0
for i in range(1, len(cells), 2):
    if "[markdown]" in cells[i]:
        continue
    code_cells += 1
    try:
        exec(compile(cells[i + 1], f"{sys.argv[1]}:cell{code_cells}", "exec"), namespace)
    except Exception:
        traceback.print_exc()
        print(f"cell {code_cells} failed", file=sys.stderr)
        sys.exit(1)
print(f"ran {code_cells} code cells")
"""

EXPECTED = {
    "intent_trends.py": [r"rising: .*news_inquiry", r"stock_analysis", r"[가-힣]{2,}", r"chart: 4 encodings"],
    "latency_investigation.py": [r"slowest intent at p95: market_overview", r"generate_share", r"TimeoutError"],
    "search_analytics.py": [
        r"korean",
        r"found_nothing",
        r"indexed \d+ new queries|full-text search skipped",
        r"hits for '네이버'|full-text search skipped",
    ],
}


def _run(name: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Notebook `name` run cell by cell (`RUNNER`) with QUERYLOG_HOME at `home`."""
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(NOTEBOOKS / name)],
        cwd=cwd,
        env={**os.environ, "QUERYLOG_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, make_lake: Callable[..., SampleLake]) -> Path:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return make_lake(tmp_path_factory.mktemp("notebooks") / "home", end=end, days=4).home


def test_there_are_at_least_three_notebooks() -> None:
    assert set(EXPECTED) <= {p.name for p in NOTEBOOKS.glob("*.py")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_top_to_bottom(name: str, home: Path, tmp_path: Path) -> None:
    proc = _run(name, home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"ran \d+ code cells", proc.stdout)
    for pattern in EXPECTED[name]:
        assert re.search(pattern, proc.stdout), f"{name}: no {pattern!r} in output:\n{proc.stdout[-3000:]}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_a_jupytext_percent_notebook_with_prose(name: str) -> None:
    text = (NOTEBOOKS / name).read_text(encoding="utf-8")
    assert text.startswith("# ---\n# jupyter:")
    assert "format_name: percent" in text
    assert text.count("# %% [markdown]") >= 4
    assert len(re.findall(r"^# %%$", text, flags=re.M)) >= 4
    assert "QUERYLOG_HOME" in text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_binds_values_instead_of_formatting_sql(name: str) -> None:
    text = (NOTEBOOKS / name).read_text(encoding="utf-8")
    assert not re.search(r'sql\(\s*f"', text), "SQL built with an f-string"


def test_one_day_of_queries_shows_no_trend_rather_than_every_intent_rising(
    tmp_path: Path, make_lake: Callable[..., SampleLake]
) -> None:
    end = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    home = make_lake(tmp_path / "home", end=end, days=0).home  # hours of today only
    proc = _run("intent_trends.py", home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rising: no trend from a single day" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_notebook_pointed_at_no_lake_says_so_and_makes_nothing(name: str, tmp_path: Path) -> None:
    """A mistyped QUERYLOG_HOME printed empty tables and exited 0 (and the search notebook made directories there)."""
    missing = tmp_path / "typo"
    proc = _run(name, missing, tmp_path)
    assert proc.returncode == 1
    assert f"No lake at {missing / 'lake'}: set QUERYLOG_HOME" in proc.stderr
    assert not missing.exists()


def test_the_intent_chart_draws_a_long_history_of_many_intents(tmp_path: Path) -> None:
    """Sixty intents over ninety days are 5,400 (day, intent) rows: Altair refused the chart (MaxRowsError). The nine
    intents asked most are drawn each on its own, the rest as one "other" series, as in the explorer."""
    from datetime import timedelta

    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    start = datetime(2026, 6, 1, 9, tzinfo=UTC)
    events: list[object] = []
    for day in range(90):
        for k in range(60):
            ts, query_id = start + timedelta(days=day, seconds=k), f"q-{day}-{k}"
            events += [
                QueryReceived(query_id=query_id, query_text=f"질문 {k}", ts=ts),
                QueryCompleted(query_id=query_id, latency_ms=5.0, intent=f"intent-{k:02d}", ts=ts),
            ]
    home = tmp_path / "home"
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"r": 1}))  # type: ignore[arg-type]
    proc = _run("intent_trends.py", home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chart: 4 encodings over 900 rows, 10 series" in proc.stdout, proc.stdout[-2000:]


def test_the_search_notebook_counts_a_question_as_search_and_the_report_do(tmp_path: Path) -> None:
    """Its "most asked" and "no results" tables grouped by lower(trim(text)): a question typed with a double space
    (or in full width) was another question, 38 + 9 where `querylog search` and the report said 47."""
    from datetime import timedelta

    from querylog.logging.events import QueryCompleted, QueryReceived, SearchCompleted
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    start = datetime(2026, 6, 1, 9, tzinfo=UTC)
    spellings = ["네이버 주가 전망은?"] * 3 + ["네이버  주가 전망은?"] * 2 + ["ＮＡＶＥＲ 실적"] + ["NAVER 실적"] * 2
    events: list[object] = []
    for n, text in enumerate(spellings):
        ts, query_id = start + timedelta(seconds=n), f"q-{n}"
        events += [
            QueryReceived(query_id=query_id, query_text=text, ts=ts),
            SearchCompleted(query_id=query_id, result_count=0, ts=ts),
            QueryCompleted(query_id=query_id, latency_ms=5.0, ts=ts),
        ]
    home = tmp_path / "home"
    with ParquetSink(home / "lake") as sink:
        sink.write(Batch(events=events, checkpoint={"r": 1}))  # type: ignore[arg-type]
    proc = _run("search_analytics.py", home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    most_asked = proc.stdout[proc.stdout.index("│ query") : proc.stdout.index("found_nothing")]
    assert re.search(r"네이버 주가 전망은\?\s*┆\s*5\s*┆", most_asked), most_asked
    assert re.search(r"NAVER 실적\s*┆\s*3\s*┆", most_asked), most_asked
