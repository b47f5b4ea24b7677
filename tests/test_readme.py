"""The README's code block runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_fastapi_example_records_a_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUERYLOG_STDOUT_EVENTS", "0")
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:  # type: ignore[arg-type]
        assert client.post("/ask", json={"query": "네이버 주가"}).status_code == 422  # no question: a 422, not a 500
        resp = client.post("/ask", json={"question": "네이버 주가"})
        assert resp.status_code == 200
        runtime = namespace["runtime"]
    query_id = resp.json()["query_id"]
    log_text = b"".join(p.read_bytes() for p in (tmp_path / "home" / "log").glob("*.jsonl")).decode()
    assert log_text.count(query_id) == 3  # received, classified, completed
    assert runtime is not None
