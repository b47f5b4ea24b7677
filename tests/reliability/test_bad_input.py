"""Odd text and malformed requests get clear answers and never a 5xx; what was accepted is kept intact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from querylog.config import Settings
from querylog.logging.events import QueryReceived
from querylog.service.app import create_app
from querylog.testing import capture_events


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    "text",
    [
        "삼성전자\u0000주가",  # NUL
        "\u202e\u05e9\u05dc\u05d5\u05dd 네이버",  # RTL override and Hebrew
        "🚀📈 엔비디아 주가 🤖",  # emoji (astral plane)
        "\u200b\ufeff카카오\u200d뉴스",  # zero-width characters and a BOM
        "x" * 16_000,  # long, but within the limit
    ],
)
def test_odd_text_is_answered_and_stored_as_sent(client: TestClient, text: str) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", json={"query": text})
    assert resp.status_code == 200
    received = events[0]
    assert isinstance(received, QueryReceived)
    assert received.query_text == text


def test_an_overlong_query_is_refused_with_a_clear_error(client: TestClient) -> None:
    # Past the body limit (3 MB): refused before the body is read whole.
    resp = client.post("/v1/chat", json={"query": "가" * 1_000_000})
    assert resp.status_code == 413
    assert "over 1048576 bytes" in resp.json()["detail"]
    # Within it (300 KB) but past the question's bound: the field is named.
    resp = client.post("/v1/chat", json={"query": "가" * 100_000})
    assert resp.status_code == 422
    assert "query" in resp.text and "16384" in resp.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe\xfa not utf-8", "application/json"),
        (b'{"query": "\xed\xa0\x80"}', "application/json"),  # a lone surrogate encoded as UTF-8
        (b'{"query": ', "application/json"),
        (b"query=x", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_bodies_are_4xx_and_emit_nothing(client: TestClient, body: bytes, content_type: str) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", content=body, headers={"content-type": content_type})
    assert 400 <= resp.status_code < 500
    assert events == []


def test_lone_surrogates_escaped_in_json_are_refused_not_stored(client: TestClient) -> None:
    tracker = client.app.state.querylog.tracker  # type: ignore[attr-defined]
    with capture_events(tracker) as events:
        resp = client.post("/v1/chat", content=b'{"query": "\\ud800 x"}', headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "unicode" in resp.text  # pydantic's string_unicode error, echoed back safely
    assert events == []
