"""Request ids: echoed when valid, made when absent or invalid, bound to structlog for the request only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from querylog.config import Settings
from querylog.service.app import create_app
from querylog.service.middleware import RequestIdMiddleware, valid_request_id


@pytest.fixture
def probe() -> Iterator[TestClient]:
    """A bare app with the middleware whose endpoints report the structlog context they run in."""
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)

    @app.get("/sync")
    def sync_context() -> dict[str, Any]:  # runs in the threadpool
        return structlog.contextvars.get_contextvars()

    @app.get("/async")
    async def async_context() -> dict[str, Any]:
        return structlog.contextvars.get_contextvars()

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("a bug in an endpoint")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, environ={})) as c:
        yield c


def test_a_valid_request_id_is_echoed(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"query": "네이버"}, headers={"X-Request-ID": "req-2025.01_31-abc"})
    assert resp.headers["x-request-id"] == "req-2025.01_31-abc"


def test_a_request_id_is_made_when_none_is_sent(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert valid_request_id(first) and len(first) == 32 and first != second


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "semi;colon", "newline\\n", "한글", ""])
def test_an_invalid_request_id_is_replaced_not_echoed(client: TestClient, sent: str) -> None:
    resp = client.get("/healthz", headers={"X-Request-ID": sent.encode("utf-8")})
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] != sent and valid_request_id(resp.headers["x-request-id"])


def test_the_longest_valid_request_id_is_kept(client: TestClient) -> None:
    sent = "a" * 128
    assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


def test_error_responses_carry_the_request_id_too(client: TestClient) -> None:
    for resp in (
        client.get("/no-such-page", headers={"X-Request-ID": "r-404"}),
        client.post("/v1/chat", json={}, headers={"X-Request-ID": "r-422"}),
        client.post("/v1/events", content=b"{", headers={"X-Request-ID": "r-400", "Content-Type": "application/json"}),
    ):
        assert resp.headers["x-request-id"] == f"r-{resp.status_code}"
        assert resp.headers.get_list("x-request-id") == [f"r-{resp.status_code}"]


def test_an_unhandled_error_answers_500_with_the_request_id(probe: TestClient) -> None:
    resp = probe.get("/crash", headers={"X-Request-ID": "r-500"})
    assert resp.status_code == 500 and resp.text == "Internal Server Error"
    assert resp.headers.get_list("x-request-id") == ["r-500"]


def test_an_unhandled_error_still_reaches_the_server_with_its_traceback() -> None:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("a bug in an endpoint")

    with TestClient(app) as c, pytest.raises(RuntimeError, match="a bug in an endpoint"):
        c.get("/crash")


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_the_request_id_is_bound_in_structlog_during_the_request(probe: TestClient, path: str) -> None:
    resp = probe.get(path, headers={"X-Request-ID": "trace-me-1"})
    assert resp.json() == {"request_id": "trace-me-1"}
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_log_lines_during_a_request_name_it(client: TestClient) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        client.post("/v1/events", json={"events": []}, headers={"X-Request-ID": "batch-77"})
    assert {"event": "events_ingested", "request_id": "batch-77"}.items() <= logs[-1].items()


def test_cors_is_off_by_default(client: TestClient) -> None:
    resp = client.options(
        "/v1/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in resp.headers
