"""The integration guide's example runs as written, matches examples/, and docs/api.md covers every endpoint."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from querylog.config import Settings
from querylog.logging.codec import decode
from querylog.service.app import create_app
from querylog.testing import capture_events

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "integrating.md"
EXAMPLE = ROOT / "examples" / "integrate_fastapi.py"
MARKER = "<!-- example: examples/integrate_fastapi.py -->"


def _guide_example() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(re.escape(MARKER) + r"\n```python\n(.*?)```", text, re.DOTALL)
    assert match, f"{GUIDE.name} lost its example block (the one after {MARKER})"
    return match.group(1)


def _run_guide(namespace: dict[str, Any]) -> None:
    exec(compile(_guide_example(), str(GUIDE), "exec"), namespace)


def _run_file(namespace: dict[str, Any]) -> None:
    namespace.update(runpy.run_path(str(EXAMPLE)))


def test_the_guide_shows_the_example_file_verbatim() -> None:
    assert _guide_example() == EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.parametrize("run", [_run_guide, _run_file], ids=["docs-block", "examples-file"])
def test_the_example_app_records_each_request_as_a_query(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("QUERYLOG_HOME", str(home))
    monkeypatch.setenv("QUERYLOG_STDOUT_EVENTS", "0")
    monkeypatch.setenv("QUERYLOG_ENV", "example")
    namespace: dict[str, Any] = {"__name__": "integrate_fastapi"}
    run(namespace)
    app: FastAPI = namespace["app"]
    with TestClient(app) as client, capture_events(app.state.querylog.tracker) as captured:
        resp = client.post("/ask", json={"question": "네이버 주가 전망은?", "session_id": "s-1"})
    assert resp.status_code == 200
    query_id = resp.json()["query_id"]
    expected = ["query_received", "search_completed", "response_generated", "query_completed"]
    assert [e.event_type for e in captured] == expected
    with TestClient(app) as client:  # a second run appends to the same log
        resp = client.post("/ask", json={"question": "카카오 실적"})
    # the first run's events went to the capture instead of the log; the second run's are in the log
    logged = [decode(line) for p in sorted((home / "log").glob("*.jsonl")) for line in p.read_bytes().splitlines()]
    assert [e.event_type for e in logged] == expected
    assert {(e.query_id, e.env, e.session_id) for e in logged} == {(resp.json()["query_id"], "example", None)}
    assert query_id != resp.json()["query_id"]


def test_the_api_reference_documents_every_endpoint(settings: Settings) -> None:
    reference = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    spec = create_app(settings, environ={}).openapi()
    for path, operations in spec["paths"].items():
        for method in operations:
            assert f"## {method.upper()} {path}" in reference, f"docs/api.md has no section for {method.upper()} {path}"
