"""`querylog ui` in a real headless Chromium, driven by Playwright: every tab renders without a Streamlit
exception, its charts draw marks (for one hour of data as for thirty days), search shows Korean highlighted and
grouped by question. Screenshots land in the test's tmp dir (or in $QUERYLOG_SCREENSHOTS when set)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from tests.analytics.conftest import SampleLake

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser download cannot work here
DEADLINE_S = 90  # generous for a loaded machine; the waits below return as soon as the page is ready
#: The lakes the explorer is looked at with: all data in one hour (what `make run` leaves), and a month.
END = datetime(2026, 11, 20, 15, tzinfo=UTC)  # in the past: the default dates must find the data by themselves
LAKES: dict[str, dict[str, Any]] = {
    "one-hour": {"days": 0, "hours": (14,), "per_hour": 60},
    "30-days": {"days": 30, "per_hour": 6},
}
#: Each tab, a heading it shows, and how many of its charts must draw marks.
TABS = [
    ("Trends", "Intent trend", 3),
    ("Latency", "Latency percentiles by intent", 2),
    ("Stages & errors", "Stage funnel", 1),
    ("Queries", "A query's timeline", 1),
    ("Sessions & feedback", "Feedback by intent", 1),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Installs Debian's chromium and CJK fonts when this is root with apt; otherwise does nothing, quietly.
    subprocess.run(["sh", str(ROOT / "scripts" / "ensure-chromium.sh")], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (scripts/ensure-chromium.sh needs root and apt to install it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is a dev dependency")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",  # this machine's closed network refuses them, many at a time
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module", params=list(LAKES))
def ui(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, make_lake: Callable[..., SampleLake]
) -> Iterator[tuple[str, str, SampleLake]]:
    """`querylog ui` on a free port over a generated lake; stopped (and checked to stop) afterwards."""
    name: str = request.param
    home = tmp_path_factory.mktemp(f"browser-{name}") / "home"
    lake = make_lake(home, end=END, **LAKES[name])
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUERYLOG_", "LANGFUSE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "querylog", "--home", str(home), "ui", "--port", str(port)],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"querylog ui exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"{url}_stcore/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    _wait_for(healthy, "the Streamlit server to answer /_stcore/health")
    try:
        yield name, url, lake
    finally:
        proc.terminate()  # SIGTERM: `querylog ui` forwards it to Streamlit
        assert proc.wait(timeout=60) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "Streamlit still listening after querylog ui stopped"


@pytest.fixture(scope="module")
def page(browser: Browser, ui: tuple[str, str, SampleLake]) -> Iterator[tuple[Page, str, SampleLake]]:
    name, url, lake = ui
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="ko-KR")
    page = context.new_page()
    page.set_default_timeout(DEADLINE_S * 1000)
    page.goto(url)
    try:
        yield page, name, lake
    finally:
        context.close()


def _settle(page: Page) -> None:
    """Wait until Streamlit has finished running the script (its status widget is gone)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")


def _panel(page: Page) -> Any:
    return page.locator('[role="tabpanel"]:not([hidden])')


def _marks_per_chart(page: Page) -> list[int]:
    """For each chart in the open tab, how many data marks (bars, areas, points) Vega drew that one can see:
    an area or a line through a single point is drawn too, as a path with no width, and shows nothing."""
    counts: list[int] = (
        _panel(page)
        .locator('[data-testid="stVegaLiteChart"]')
        .evaluate_all(
            """charts => charts.map(c => [...c.querySelectorAll('g.role-mark path')]
               .filter(p => { const b = p.getBBox(); return b.width > 1 && b.height > 1; }).length)"""
        )
    )
    return counts


def _shoot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if target := os.environ.get("QUERYLOG_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def _open(page: Page, tab: str, heading: str) -> None:
    page.get_by_role("tab", name=tab, exact=True).click()
    _panel(page).get_by_text(heading, exact=True).first.wait_for()
    _settle(page)


@pytest.mark.parametrize(("tab", "heading", "charts"), TABS, ids=[t[0] for t in TABS])
def test_every_tab_renders_with_marks_in_its_charts(
    page: tuple[Page, str, SampleLake], tab: str, heading: str, charts: int, tmp_path: Path
) -> None:
    browser_page, lake_name, lake = page
    _open(browser_page, tab, heading)
    assert browser_page.locator('[data-testid="stException"]').count() == 0
    marks = _wait_for(
        lambda: (m := _marks_per_chart(browser_page)) and sum(c > 0 for c in m) >= charts and m,
        f"{charts} chart(s) with marks on the {tab} tab",
    )
    assert sum(c > 0 for c in marks) >= charts, marks
    assert "No data for these filters" not in _panel(browser_page).inner_text()
    if tab == "Trends":
        text = _panel(browser_page).inner_text()
        assert all(intent in text for intent in {q.intent for q in lake.queries})
        # The Queries metric: the default dates cover the whole lake, although it ended days ago.
        assert f"{len(lake.queries):,}" in browser_page.get_by_test_id("stMetricValue").first.inner_text()
    slug = re.sub(r"\W+", "-", tab.lower())
    _shoot(browser_page, tmp_path, f"explorer-{lake_name}-{slug}")


def test_korean_search_is_highlighted_and_grouped_by_question(
    page: tuple[Page, str, SampleLake], tmp_path: Path
) -> None:
    browser_page, lake_name, lake = page
    _open(browser_page, "Search", "Search what users asked, or what they were answered")
    box = _panel(browser_page).locator('input[aria-label="Search"]')
    box.fill("네이버 주가")
    box.press("Enter")
    results = _panel(browser_page).locator(".ql-question")
    results.first.wait_for()
    _settle(browser_page)
    assert browser_page.locator('[data-testid="stException"]').count() == 0
    assert set(results.first.locator("mark").all_inner_texts()) == {"네이버", "주가"}
    matching = [q for q in lake.queries if "네이버" in q.text and "주가" in q.text]
    counts = [int(m) for m in re.findall(r"×(\d+)", " ".join(results.all_inner_texts()))]
    assert sum(counts) == len(matching) and len(counts) == results.count()
    # Korean drawn with a real font is about one em wide; a missing-glyph box is much narrower.
    width = browser_page.evaluate(
        """() => { const c = document.createElement('canvas').getContext('2d');
                   c.font = '40px sans-serif'; return c.measureText('네').width / 40; }"""
    )
    assert width > 0.8, f"Hangul glyph is {width:.2f} em wide: no CJK font? (apt-get install fonts-noto-cjk)"
    _shoot(browser_page, tmp_path, f"explorer-{lake_name}-search")
    # 초성 typed as people type them: every result says how it matched.
    box.fill("ㄴㅇㅂ")
    box.press("Enter")
    _wait_for(lambda: "(초성" in _panel(browser_page).inner_text(), "results found by 초성")
    _settle(browser_page)  # the rows come before the script ends: let it end before reading them (and stopping)
    texts = _panel(browser_page).locator(".ql-question").all_inner_texts()
    assert texts and all("ㄴㅇㅂ → " in t for t in texts), texts[:3]


@contextmanager
def _ui_over(home: Path, cwd: Path) -> Iterator[str]:
    """`querylog ui` over `home` on a free port, its URL; stopped afterwards."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUERYLOG_", "LANGFUSE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "querylog", "--home", str(home), "ui", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        assert proc.poll() is None, f"querylog ui exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}_stcore/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    _wait_for(healthy, "the Streamlit server to answer /_stcore/health")
    try:
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("with_data", [False, True], ids=["empty-lake", "sidebar"])
def test_a_data_path_is_drawn_as_typed_not_as_markdown_or_math(
    browser: Browser, tmp_path: Path, with_data: bool
) -> None:
    """A QUERYLOG_HOME of h_**bold**_$x$ was drawn bold and as KaTeX in the empty-lake note and the Lake: caption."""
    from querylog.logging.events import QueryCompleted, QueryReceived
    from querylog.logging.parquet import ParquetSink
    from querylog.logging.projection import Batch

    home = tmp_path / "h_**bold**_$x$"
    home.mkdir()  # an empty lake, not a home that does not exist (said otherwise)
    if with_data:
        events = [
            QueryReceived(query_id="q-1", query_text="네이버 주가", ts=END),
            QueryCompleted(query_id="q-1", latency_ms=12.0, ts=END),
        ]
        with ParquetSink(home / "lake") as sink:
            sink.write(Batch(events=events, checkpoint={"q-1": 1}))
    (tmp_path / "cwd").mkdir()
    with _ui_over(home, tmp_path / "cwd") as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(DEADLINE_S * 1000)
        page.goto(url)
        where = page.get_by_test_id("stSidebar") if with_data else page.get_by_test_id("stAlert")
        where.get_by_text("Lake:" if with_data else "is empty", exact=False).first.wait_for()
        _settle(page)
        assert where.locator("strong").count() == 0 and where.locator(".katex").count() == 0
        assert str(home / "lake") in where.locator("code").all_inner_texts()
        context.close()
