"""`querylog ui` in a real headless Chromium: the page renders the lake's intents, search highlights Korean,
and no Streamlit exception box appears. Screenshots land in the test's tmp dir (or $QUERYLOG_SCREENSHOTS)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DEADLINE_S = 90  # generous for a loaded machine; the waits below return as soon as the page is ready


@pytest.fixture(scope="module")
def chromium() -> Path:
    # Installs Debian's chromium and CJK fonts when this is root with apt; otherwise does nothing, quietly.
    subprocess.run(["sh", str(ROOT / "scripts" / "ensure-chromium.sh")], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (scripts/ensure-chromium.sh needs root and apt to install it)")
    return CHROMIUM


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


@pytest.fixture(scope="module")
def ui(
    tmp_path_factory: pytest.TempPathFactory, make_lake: Callable[..., SampleLake]
) -> Iterator[tuple[str, SampleLake]]:
    """`querylog ui` on a free port over a generated lake; stopped (and checked to stop) afterwards."""
    home = tmp_path_factory.mktemp("browser") / "home"
    lake = make_lake(home, end=datetime.now(UTC).replace(minute=0, second=0, microsecond=0), days=3)
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
        yield url, lake
    finally:
        proc.terminate()  # SIGTERM: `querylog ui` forwards it to Streamlit
        assert proc.wait(timeout=60) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "Streamlit still listening after querylog ui stopped"


class Browser:
    """Headless Chromium driven over the DevTools protocol (the websockets package comes with uvicorn)."""

    def __init__(self, binary: Path, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1400,1600",
                "--lang=ko-KR",
                url,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        self.page_ws_url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        self.ws: Any = None
        self._id = 0

    def _devtools_port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()  # Chromium announces the port on stderr as it starts
            if m := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                return int(m.group(1))
            if not line and self.proc.poll() is not None:
                break
        pytest.fail("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=DEADLINE_S))
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message["result"])

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def state(self) -> dict[str, Any]:
        return dict(
            self.js("""({
            text: document.body ? document.body.textContent : "",
            exceptions: document.querySelectorAll('[data-testid="stException"]').length,
            running: !!document.querySelector('[data-testid="stStatusWidget"]'),
            charts: document.querySelectorAll('.vega-embed').length,
            marks: [...document.querySelectorAll('mark')].map(m => m.textContent),
        })""")
        )

    def click_tab(self, label: str) -> None:
        """A real mouse click: Streamlit's tabs react to pointer events, not to element.click()."""
        box = self.js(f"""(() => {{
            const tab = [...document.querySelectorAll('[role="tab"]')].find(t => t.textContent.trim() === {json.dumps(label)});
            if (!tab) return null;
            tab.scrollIntoView({{block: "center"}});  // a click lands only on what is in view
            const r = tab.getBoundingClientRect();
            return {{x: r.x + r.width / 2, y: r.y + r.height / 2}};
        }})()""")
        assert box, f"no tab {label!r}"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        if target := os.environ.get("QUERYLOG_SCREENSHOTS"):
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(chromium: Path, ui: tuple[str, SampleLake]) -> Iterator[tuple[Browser, SampleLake]]:
    from websockets.sync.client import connect

    url, lake = ui
    browser = Browser(chromium, url)
    try:
        with connect(browser.page_ws_url, max_size=None) as ws:
            browser.ws = ws
            yield browser, lake
    finally:
        browser.close()


def _settled(browser: Browser, ready: Callable[[dict[str, Any]], bool]) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        state = browser.state()
        return state if not state["running"] and ready(state) else None

    return check


def test_the_page_shows_the_lakes_intents_and_no_exception(page: tuple[Browser, SampleLake], tmp_path: Path) -> None:
    browser, lake = page
    intents = {q.intent for q in lake.queries}
    state = _wait_for(
        _settled(browser, lambda s: s["charts"] > 0 and all(i in s["text"] for i in intents)),
        f"the intent trend with {sorted(intents)}",
    )
    assert "querylog explorer" in state["text"]
    assert state["exceptions"] == 0
    assert f"{len(lake.queries):,}" in state["text"]  # the Queries metric
    assert browser.screenshot(tmp_path / "explorer-trends.png").stat().st_size > 10_000


def test_korean_search_results_are_highlighted(page: tuple[Browser, SampleLake], tmp_path: Path) -> None:
    browser, _ = page
    browser.click_tab("Search")
    _wait_for(lambda: browser.js("!!document.querySelector('input[aria-label=\"Search\"]')"), "the search box")
    browser.js("document.querySelector('input[aria-label=\"Search\"]').focus()")
    browser.call("Input.insertText", text="네이버 주가")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    state = _wait_for(
        _settled(browser, lambda s: bool(s["marks"]) or "Search is unavailable" in s["text"]),
        "search results or the unavailable message",
    )
    assert state["exceptions"] == 0
    if "Search is unavailable" not in state["text"]:
        assert set(state["marks"]) == {"네이버", "주가"}
        assert "result(s), best first" in state["text"]
    # Korean drawn with a real font is about one em wide; a missing-glyph box is much narrower.
    width = browser.js("""(() => { const c = document.createElement('canvas').getContext('2d');
                           c.font = '40px sans-serif'; return c.measureText('네').width / 40; })()""")
    assert width > 0.8, f"Hangul glyph is {width:.2f} em wide: no CJK font? (apt-get install fonts-noto-cjk)"
    browser.screenshot(tmp_path / "explorer-search.png")


@pytest.mark.parametrize(
    ("tab", "marker"),
    [
        ("Latency", "Latency percentiles by intent"),
        ("Stages & errors", "Stage funnel"),
        ("Queries", "A query's timeline"),
        ("Sessions & feedback", "Feedback by intent"),
        ("Trends", "Intent trend"),
    ],
)
def test_every_tab_renders_without_an_exception(
    page: tuple[Browser, SampleLake], tab: str, marker: str, tmp_path: Path
) -> None:
    browser, _ = page
    browser.click_tab(tab)
    state = _wait_for(
        _settled(
            browser,
            lambda s: (
                marker
                in browser.js(
                    "[...document.querySelectorAll('[role=\"tabpanel\"]')].filter(p => !p.hidden)"
                    ".map(p => p.textContent).join(' ')"
                )
                and s["charts"] > 0
            ),
        ),
        f"the {tab} tab",
    )
    assert state["exceptions"] == 0
    name = re.sub(r"\W+", "-", tab.lower())
    browser.screenshot(tmp_path / f"explorer-{name}.png")
    if tab == "Queries":
        browser.js(
            "[...document.querySelectorAll('h3')].find(h => h.textContent.includes('timeline')).scrollIntoView()"
        )
        browser.screenshot(tmp_path / "explorer-timeline.png")
