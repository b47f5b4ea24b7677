"""POST /v1/events and POST /v1/feedback over HTTP: auth, validation, limits, idempotency, redaction, the lake."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gzip
import json
import os
import threading
import unicodedata
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.requests import Request

import querylog
from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.logging.codec import decode
from querylog.logging.events import WRITTEN_VERSION, Event, QueryReceived
from querylog.runtime import Runtime
from querylog.service.app import create_app
from querylog.service.producers import (
    DRAIN_MAX_BYTES,
    MAX_GZIP_MEMBERS,
    RecentIds,
    _read_body,
    counted_status,
    tail_event_ids,
)
from querylog.testing import capture_events


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, environ={}))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with _client(settings) as c:
        yield c


def _runtime(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.querylog  # type: ignore[attr-defined]
    return runtime


def _logged(settings: Settings) -> list[Event]:
    lines = b"".join(p.read_bytes() for p in sorted(settings.log_dir.glob("*.jsonl"))).splitlines()
    return [decode(line) for line in lines]


def _batch(n: int, *, prefix: str = "e") -> list[dict[str, Any]]:
    return [
        {
            "event_type": "query_received",
            "event_id": f"{prefix}-{i}",
            "query_id": f"q-{prefix}-{i}",
            "session_id": "s-1",
            "query_text": f"카카오 주가 {i}",
            "ts": "2025-01-31T09:00:00Z",
        }
        for i in range(n)
    ]


# -- auth ---------------------------------------------------------------------------------------------
@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    with _client(dataclasses.replace(settings, ingest_token="s3cret-token")) as c:
        yield c


def test_without_a_bearer_token_ingest_is_401_with_a_challenge(guarded: TestClient) -> None:
    resp = guarded.post("/v1/events", json={"events": _batch(1)})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in resp.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer s3cret-token-and-more", "Bearer s3cret-toke"])
def test_a_wrong_bearer_token_is_403(guarded: TestClient, header: str) -> None:
    resp = guarded.post("/v1/events", json={"events": _batch(1)}, headers={"Authorization": header})
    assert resp.status_code == 403


def test_a_non_bearer_authorization_is_401(guarded: TestClient) -> None:
    resp = guarded.post("/v1/events", json={"events": _batch(1)}, headers={"Authorization": "Basic czNjcmV0"})
    assert resp.status_code == 401


def test_the_right_bearer_token_is_202(guarded: TestClient) -> None:
    resp = guarded.post("/v1/events", json={"events": _batch(2)}, headers={"Authorization": "Bearer s3cret-token"})
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 2, "duplicates": 0}


def test_auth_is_checked_before_the_body_is_read(guarded: TestClient) -> None:
    resp = guarded.post("/v1/events", content=b"{not json")
    assert resp.status_code == 401


def test_without_a_configured_token_ingest_is_open(client: TestClient) -> None:
    assert client.post("/v1/events", json={"events": _batch(1)}).status_code == 202


# -- appending ---------------------------------------------------------------------------------------
def test_an_accepted_batch_is_in_the_log_when_202_returns(client: TestClient, settings: Settings) -> None:
    resp = client.post("/v1/events", json={"events": _batch(3)})
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 3, "duplicates": 0}
    logged = [e for e in _logged(settings) if e.event_id.startswith("e-")]
    assert [e.event_id for e in logged] == ["e-0", "e-1", "e-2"]
    assert all(e.event_type == "query_received" and e.session_id == "s-1" for e in logged)


def test_service_and_env_default_to_the_servers_and_are_kept_when_given(client: TestClient, settings: Settings) -> None:
    events = [
        {"event_type": "feedback_received", "event_id": "f-1", "query_id": "q-1", "score": 1},
        {
            "event_type": "feedback_received",
            "event_id": "f-2",
            "query_id": "q-2",
            "score": 0,
            "service": "web",
            "env": "prod",
        },
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 202
    by_id = {e.event_id: e for e in _logged(settings)}
    assert (by_id["f-1"].service, by_id["f-1"].env) == (settings.service, "test")
    assert (by_id["f-2"].service, by_id["f-2"].env) == ("web", "prod")


def test_an_empty_batch_is_accepted_and_adds_nothing(client: TestClient) -> None:
    assert client.post("/v1/events", json={"events": []}).json() == {"accepted": 0, "duplicates": 0}


def test_text_is_redacted_and_nfc_normalised_before_the_log(settings: Settings) -> None:
    salted = dataclasses.replace(settings, user_id_salt="pepper")
    decomposed = unicodedata.normalize("NFD", "네이버 실적 010-1234-5678로 연락")
    events = [
        {
            "event_type": "query_received",
            "event_id": "r-1",
            "query_id": "q-1",
            "query_text": decomposed,
            "user_id": "u-42",
        },
        {
            "event_type": "query_failed",
            "event_id": "r-2",
            "query_id": "q-1",
            "error_type": "Boom",
            "error_message": "mail kim@example.com",
        },
        {
            "event_type": "feedback_received",
            "event_id": "r-3",
            "query_id": "q-1",
            "score": -1,
            "comment": "내 카드 4111-1111-1111-1111",
        },
    ]
    with _client(salted) as c:
        assert c.post("/v1/events", json={"events": events}).status_code == 202
        expected_user = _runtime(c).redactor.pseudonymize_user_id("u-42")
    raw = b"".join(p.read_bytes() for p in settings.log_dir.glob("*.jsonl")).decode()
    for secret in ("010-1234-5678", "kim@example.com", "4111-1111-1111-1111", "u-42"):
        assert secret not in raw
    by_id = {e.event_id: e for e in _logged(settings)}
    received = by_id["r-1"]
    assert received.query_text.startswith("네이버 실적 ")  # type: ignore[attr-defined]
    assert unicodedata.is_normalized("NFC", received.query_text)  # type: ignore[attr-defined]
    assert received.user_id == expected_user != "u-42"


def test_v1_and_v2_bodies_are_both_accepted_and_v2_text_is_redacted(settings: Settings) -> None:
    v1 = {
        "event_type": "query_received",
        "event_id": "v1-1",
        "query_id": "q-1",
        "query_text": "현대차 주가",
        "schema_version": 1,
    }
    v2 = [
        {
            "event_type": "search_completed",
            "event_id": "v2-1",
            "query_id": "q-1",
            "result_count": 1,
            "sources": [{"doc_id": "news-7", "title": "연락처 010-1234-5678", "score": 2.5, "rank": 1}],
            "backend_durations_ms": {"opensearch": 4.0},
        },
        {
            "event_type": "response_generated",
            "event_id": "v2-2",
            "query_id": "q-1",
            "answer_text": unicodedata.normalize("NFD", "답변: 010-1234-5678"),
            "finish_reason": "stop",
            "cost_usd": 0.002,
            "release": "r-9",
            "tags": ["beta", "010-1234-5678", "x" * 57 + " a@b.co"],  # 64 characters; its mask makes 65
            "attributes": {"channel": "kakao 010-1234-5678"},
        },
    ]
    with _client(settings) as c:
        assert c.post("/v1/events", json={"events": [v1, *v2]}).status_code == 202
    raw = b"".join(p.read_bytes() for p in settings.log_dir.glob("*.jsonl")).decode()
    assert "010-1234-5678" not in raw
    by_id = {e.event_id: e for e in _logged(settings)}
    assert by_id["v1-1"].schema_version == 1 and by_id["v2-1"].schema_version == WRITTEN_VERSION  # none said
    response = by_id["v2-2"]
    assert response.answer_text == "답변: [PHONE]"  # type: ignore[attr-defined]
    assert response.attributes == {"channel": "kakao [PHONE]"}
    tags = ("beta", "[PHONE]", ("x" * 57 + " [EMAIL]")[:64])
    assert (response.release, response.tags, response.cost_usd) == ("r-9", tags, 0.002)  # type: ignore[attr-defined]
    [source] = by_id["v2-1"].sources  # type: ignore[attr-defined]
    assert (source.doc_id, source.title, source.rank) == ("news-7", "연락처 [PHONE]", 1)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"attributes": {f"k{i}": "v" for i in range(33)}}, "attributes"),
        ({"attributes": {"k": "v" * 5000}}, "attributes"),
        ({"attributes": {"k": 1}}, "attributes"),
        ({"sources": [{"title": "no id"}]}, "sources"),
    ],
)
def test_v2_fields_over_their_bounds_are_422_naming_the_field(
    client: TestClient, settings: Settings, extra: dict[str, Any], field: str
) -> None:
    event = {"event_type": "search_completed", "query_id": "q-1", "result_count": 0, **extra}
    resp = client.post("/v1/events", json={"events": [_batch(1, prefix="ok")[0], event]})
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"].split("[")[0]) == (1, field)  # e.g. sources[0]: the item too
    assert not any(e.event_id.startswith("ok-") for e in _logged(settings))  # the whole batch refused


def test_an_event_dated_past_the_servers_clock_is_422_naming_ts_and_a_backfill_or_a_little_skew_is_kept(
    client: TestClient, settings: Settings
) -> None:
    now = datetime.now(UTC)
    ahead = {**_batch(1, prefix="ahead")[0], "ts": (now + timedelta(days=1)).isoformat()}
    resp = client.post("/v1/events", json={"events": [_batch(1, prefix="ok")[0], ahead]})
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"]) == (1, "ts")
    assert "ahead of this server's clock" in problem["message"] and "producer's clock" in problem["message"]
    assert _logged(settings) == []  # the whole batch refused
    # Past the ends of the calendar once in UTC: refused as well, never a 500.
    for edge in ("0001-01-01T00:00:00+00:03", "9999-12-31T23:59:59-00:03"):
        resp = client.post("/v1/events", json={"events": [{**_batch(1, prefix="edge")[0], "ts": edge}]})
        assert resp.status_code == 422, resp.text
        assert [(p["index"], p["field"]) for p in resp.json()["detail"]] == [(0, "ts")]
    skewed = {**_batch(1, prefix="skew")[0], "ts": (now + timedelta(minutes=1)).isoformat()}
    backfill = {**_batch(1, prefix="old")[0], "ts": "2020-01-01T00:00:00Z"}
    resp = client.post("/v1/events", json={"events": [skewed, backfill]})
    assert resp.status_code == 202 and resp.json() == {"accepted": 2, "duplicates": 0}


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z"])
def test_an_event_dated_before_1970_is_422_naming_ts(client: TestClient, settings: Settings, ts: str) -> None:
    """Go's zero time (year 1) was kept, and the explorer then failed on its whole page (a window before it)."""
    resp = client.post(
        "/v1/events", json={"events": [_batch(1, prefix="ok")[0], {**_batch(1, prefix="y1")[0], "ts": ts}]}
    )
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"]) == (1, "ts") and "before 1970-01-01" in problem["message"]
    assert _logged(settings) == []
    resp = client.post("/v1/events", json={"events": [{**_batch(1, prefix="epoch")[0], "ts": "1970-01-01T00:00:00Z"}]})
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("query_id", " "),
        ("query_id", "a b"),  # /v1/feedback could never name it
        ("event_id", "e 1"),
        ("session_id", "x" * 201),
        ("user_id", "\x00\x1b"),
        ("trace_id", "   "),
    ],
)
def test_an_id_no_other_endpoint_would_take_is_refused_naming_it(
    client: TestClient, settings: Settings, field: str, value: str
) -> None:
    event = {**_batch(1, prefix="id")[0], field: value}
    resp = client.post("/v1/events", json={"events": [event]})
    assert resp.status_code == 422, resp.text
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"]) == (0, field)
    assert _logged(settings) == []


def test_ids_as_producers_send_them_are_taken(client: TestClient) -> None:
    event = {
        **_batch(1, prefix="ok")[0],
        "session_id": "s 1 (web)",
        "user_id": "kim@example.com",
        "query_id": "x" * 200,
    }
    assert client.post("/v1/events", json={"events": [event]}).status_code == 202


# -- idempotency -------------------------------------------------------------------------------------
def test_resending_a_batch_adds_nothing_and_the_lake_has_each_event_once(
    client: TestClient, settings: Settings
) -> None:
    batch = _batch(5)
    first = client.post("/v1/events", json={"events": batch})
    again = client.post("/v1/events", json={"events": batch})
    assert first.json() == {"accepted": 5, "duplicates": 0}
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 5}
    _runtime(client).projectors["parquet"].catch_up()
    with Catalog(settings.lake_dir) as cat:
        _, rows = cat.query("select event_id, count(*) from events where event_id like 'e-%' group by 1 order by 1")
    assert rows == [(f"e-{i}", 1) for i in range(5)]


def test_a_partly_new_batch_appends_only_the_new_events(client: TestClient, settings: Settings) -> None:
    client.post("/v1/events", json={"events": _batch(3)})
    resp = client.post("/v1/events", json={"events": _batch(5)})
    assert resp.json() == {"accepted": 2, "duplicates": 3}
    assert sorted(e.event_id for e in _logged(settings) if e.event_id.startswith("e-")) == [f"e-{i}" for i in range(5)]


def test_a_repeated_event_id_within_one_batch_counts_once(client: TestClient) -> None:
    one = _batch(1)
    assert client.post("/v1/events", json={"events": one + one}).json() == {"accepted": 1, "duplicates": 1}


def test_events_without_an_event_id_get_a_fresh_one_each_time(client: TestClient, settings: Settings) -> None:
    event = {"event_type": "feedback_received", "query_id": "q-anon", "score": 1}
    client.post("/v1/events", json={"events": [event]})
    client.post("/v1/events", json={"events": [event]})
    ids = [e.event_id for e in _logged(settings) if e.query_id == "q-anon"]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_the_dedup_window_survives_a_restart(settings: Settings) -> None:
    with _client(settings) as c:
        assert c.post("/v1/events", json={"events": _batch(4)}).json() == {"accepted": 4, "duplicates": 0}
    with _client(settings) as c:
        assert c.post("/v1/events", json={"events": _batch(4)}).json() == {"accepted": 0, "duplicates": 4}


def test_the_dedup_window_survives_a_restart_after_the_log_was_trimmed(settings: Settings) -> None:
    """With the log trimmed (`QUERYLOG_LOG_RETENTION=0s`), a batch sent again after a restart was appended again:
    the window was re-learnt from the log alone. The lake still holds those events' ids."""
    with _client(settings) as c:
        assert c.post("/v1/events", json={"events": _batch(4)}).json() == {"accepted": 4, "duplicates": 0}
    assert len(_logged(settings)) == 4  # and the lake has them: closing drained the projections
    for segment in settings.log_dir.glob("*.jsonl"):
        segment.unlink()  # as housekeeping trims a log every durable projection has
    with _client(settings) as c:
        assert c.post("/v1/events", json={"events": _batch(6)}).json() == {"accepted": 2, "duplicates": 4}


def test_the_dedup_window_is_bounded(settings: Settings) -> None:
    small = dataclasses.replace(settings, ingest_dedup_window=3)
    with _client(small) as c:
        c.post("/v1/events", json={"events": _batch(5)})
        # e-0 and e-1 have left the window of 3; e-2..e-4 are still in it
        assert c.post("/v1/events", json={"events": _batch(5)}).json() == {"accepted": 2, "duplicates": 3}


@contextlib.contextmanager
def _log_disk_full(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every write to the server's log refused as a full disk refuses it, while the block runs."""
    log = _runtime(client).log
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        if fd == log._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", full_disk)
        yield


def test_a_batch_the_disk_refused_is_503_and_its_retry_is_accepted(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _log_disk_full(client, monkeypatch):
        refused = client.post("/v1/events", json={"events": _batch(2)})
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    retried = client.post("/v1/events", json={"events": _batch(2)})
    assert retried.json() == {"accepted": 2, "duplicates": 0}
    assert sorted(e.event_id for e in _logged(settings) if e.event_id.startswith("e-")) == ["e-0", "e-1"]


def test_a_batch_the_disk_cut_short_is_503_and_its_retry_adds_only_the_events_not_written(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write the disk refused partway had its first events in the log already: the retry the 503
    asked for wrote them again (14,595 rows for 14,000 events)."""
    log = _runtime(client).log
    real_write = os.write
    calls: list[int] = []

    def filling_disk(fd: int, data: Any) -> int:
        if fd != log._fd:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:  # room for about half the batch, cut mid-line: a short write
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", filling_disk)
    refused = client.post("/v1/events", json={"events": _batch(10)})
    monkeypatch.setattr(os, "write", real_write)
    assert refused.status_code == 503, refused.text
    kept = [e.event_id for e in _logged(settings) if e.event_id.startswith("e-")]
    assert 0 < len(kept) < 10  # the whole lines before the cut stayed
    retried = client.post("/v1/events", json={"events": _batch(10)})
    assert retried.json() == {"accepted": 10 - len(kept), "duplicates": len(kept)}
    assert f"{10 - len(kept)} of 10 events not written" in refused.json()["detail"]
    assert sorted(e.event_id for e in _logged(settings) if e.event_id.startswith("e-")) == sorted(
        e["event_id"] for e in _batch(10)
    )
    # /metrics: the events the log holds from the cut batch counted accepted once, so that accepted adds up to it
    metrics = client.get("/metrics").text
    assert 'querylog_ingest_events_total{endpoint="events",outcome="accepted"} 10.0' in metrics


def test_another_request_s_unwritable_event_does_not_make_a_batch_503(client: TestClient, settings: Settings) -> None:
    # The log encodes at flush: an event another request queued, that cannot be written (counted and dropped as
    # `unencodable`), is encoded in this batch's flush. The batch was written: it must not be told to retry.
    log = _runtime(client).log
    log.append(QueryReceived(query_id="q-\ud800", query_text="x"))  # a lone surrogate: only Python callers make one
    answered = client.post("/v1/events", json={"events": _batch(2)})
    assert answered.json() == {"accepted": 2, "duplicates": 0}
    assert log.telemetry.snapshot().dropped == {"unencodable": 1}
    assert sorted(e.event_id for e in _logged(settings) if e.event_id.startswith("e-")) == ["e-0", "e-1"]


def test_tail_event_ids_reads_the_newest_lines_across_segments(settings: Settings) -> None:
    with _client(settings) as c:
        c.post("/v1/events", json={"events": _batch(3, prefix="a")})
    with _client(settings) as c:  # a second run writes a second segment
        c.post("/v1/events", json={"events": _batch(3, prefix="b")})
    reader = Runtime(settings).reader
    assert tail_event_ids(reader, 4) == ["a-2", "b-0", "b-1", "b-2"]
    assert tail_event_ids(reader, 100)[-6:] == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    # a byte budget that ends mid-line yields the whole lines after it only
    last_line = reader.segments()[-1].read_bytes().splitlines(keepends=True)[-1]
    assert tail_event_ids(reader, 100, max_bytes=len(last_line) + 10) == ["b-2"]
    # read backwards in chunks smaller than a line: lines are put back together across chunks
    for chunk in (7, 64, 333, 4096):
        assert tail_event_ids(reader, 100, chunk_bytes=chunk)[-6:] == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    with reader.segments()[-1].open("ab") as fh:  # a torn tail (no newline yet) is not an event
        fh.write(b'{"event_type":"query_received","event_id":"torn"')
    assert tail_event_ids(reader, 2, chunk_bytes=50) == ["b-1", "b-2"]


def test_recent_ids_forget_the_oldest_first() -> None:
    ids = RecentIds(2)
    ids.update(["a", "b", "a", "c"])
    assert "a" not in ids and "b" in ids and "c" in ids and len(ids) == 2


# -- validation ---------------------------------------------------------------------------------------
def test_an_invalid_event_rejects_the_whole_batch_naming_index_and_field(
    client: TestClient, settings: Settings
) -> None:
    batch: list[Any] = _batch(3)
    batch.append({"event_type": "feedback_received", "event_id": "bad-1", "query_id": "q-1", "score": "great"})
    batch.append({"event_type": "feedback_received", "event_id": "bad-2", "query_id": "q-1", "score": 5})
    batch.append("not an event")
    batch.append({"event_type": "intent_classified", "query_id": "q-1", "intent": "x", "confidence": 0.5, "mood": 1})
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    body = resp.json()
    assert body["invalid_events"] == 4
    assert [(d["index"], d["field"]) for d in body["detail"]] == [(3, "score"), (4, "score"), (5, None), (6, "mood")]
    assert "int" in body["detail"][0]["message"] and "<= 1" in body["detail"][1]["message"]  # the bound, as published
    assert not any(e.event_id.startswith("e-") for e in _logged(settings))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"query_id": "q-1", "score": 1}, "event_type"),
        ({"event_type": "no_such_type", "query_id": "q-1"}, "event_type"),
        ({"event_type": "feedback_received", "score": 1}, "query_id"),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": "hi", "ts": "yesterday"}, "ts"),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": "hi", "ts": "2025-01-01T00:00:00"}, "ts"),
        (
            {"event_type": "query_received", "query_id": "q-1", "query_text": "hi", "schema_version": 99},
            "schema_version",
        ),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": "   "}, "query_text"),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": "\u200b"}, "query_text"),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": "\x01\x00"}, "query_text"),
        ({"event_type": "query_received", "query_id": "q-1", "query_text": " \u200e\x1b "}, "query_text"),
        ({"event_type": "intent_classified", "query_id": "q-1", "intent": "x", "confidence": 1.5}, "confidence"),
        ({"event_type": "feedback_received", "query_id": "q-1", "score": 1, "service": None}, "service"),
    ],
)
def test_each_kind_of_invalid_event_names_its_field(client: TestClient, event: dict[str, Any], field: str) -> None:
    resp = client.post("/v1/events", json={"events": [event]})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"]) == (0, field)
    assert problem["message"] and "regex" not in problem["message"]  # a blank text was told by its regex


def test_a_time_finer_than_a_microsecond_is_cut_not_rounded_into_the_next_day(
    client: TestClient, settings: Settings
) -> None:
    """``23:59:59.9999999Z`` was stored as the next day's 00:00:00: in the next day's partition and report row."""
    events = [
        {"event_type": "query_completed", "query_id": "t-1", "latency_ms": 1, "ts": "2026-12-06T23:59:59.9999999Z"},
        {
            "event_type": "query_completed",
            "query_id": "t-2",
            "latency_ms": 1,
            "ts": "2026-12-06T12:00:00.123456789+09:00",
        },
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 202
    assert sorted((e.query_id, e.ts.isoformat()) for e in _logged(settings)) == [
        ("t-1", "2026-12-06T23:59:59.999999+00:00"),
        ("t-2", "2026-12-06T03:00:00.123456+00:00"),
    ]


def test_names_are_taken_in_nfc_without_the_spaces_around_them(client: TestClient, settings: Settings) -> None:
    """An intent typed decomposed (macOS) or with a trailing space was a second series of the same-looking name in
    /metrics, the report and the explorer's filters; ids were already taken in NFC, tags already trimmed."""
    composed = "뉴스"
    sent = [unicodedata.normalize("NFD", composed), composed, f" {composed} "]
    events = [
        {"event_type": "query_completed", "query_id": f"n-{i}", "latency_ms": 5, "intent": intent, "release": intent}
        for i, intent in enumerate(sent)
    ]
    assert unicodedata.normalize("NFD", composed) != composed
    assert client.post("/v1/events", json={"events": events}).status_code == 202
    assert {(e.intent, e.release) for e in _logged(settings)} == {(composed, composed)}


@pytest.mark.parametrize(("ranks", "shown"), [((2, 1), "2 then 1"), ((1, 2, 2), "2 then 2")])
def test_sources_out_of_rank_order_are_refused_naming_the_ranks(
    client: TestClient, settings: Settings, ranks: tuple[int, ...], shown: str
) -> None:
    """Sources are listed best first: a list whose ranks do not increase was stored as sent, and the explorer showed
    the second-best document as the best (and past 20 sources, the cut would keep the wrong ones)."""
    sources = [{"doc_id": f"d-{rank}-{n}", "rank": rank} for n, rank in enumerate(ranks)]
    good = {"event_type": "search_completed", "query_id": "q-1", "result_count": len(ranks), "event_id": "e-good"}
    bad = {**good, "event_id": "e-bad", "sources": sources}
    resp = client.post("/v1/events", json={"events": [good, bad]})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert (problem["index"], problem["field"]) == (1, "sources")
    assert "best first" in problem["message"] and shown in problem["message"]
    assert not _logged(settings)  # the batch is taken whole or not at all
    fixed = {**bad, "sources": [{**s, "rank": n} for n, s in enumerate(sources, start=1)]}
    assert client.post("/v1/events", json={"events": [good, fixed]}).status_code == 202


@pytest.mark.parametrize(("version", "said"), [("2", "got `str`"), (None, "got `null`"), (True, "got `bool`")])
def test_a_schema_version_of_another_json_type_is_told_by_its_type(
    client: TestClient, version: object, said: str
) -> None:
    """``"schema_version": "2"`` was answered "Unsupported schema_version '2'", null "… None": a version, not a type."""
    event = {"event_type": "query_received", "query_id": "q-1", "query_text": "hi", "schema_version": version}
    resp = client.post("/v1/events", json={"events": [event]})
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert (
        problem["field"] == "schema_version" and "Expected `int`" in problem["message"] and said in problem["message"]
    )


def test_at_most_a_hundred_problems_are_listed(client: TestClient) -> None:
    bad = [{"event_type": "feedback_received", "query_id": "q", "score": 7}] * 150
    body = client.post("/v1/events", json={"events": bad}).json()
    assert body["invalid_events"] == 150 and len(body["detail"]) == 100


@pytest.mark.parametrize(
    ("payload", "field"),
    [([], None), ({"events": 5}, "events"), ({}, "events"), ({"events": [], "extra": 1}, "extra"), ("x", None)],
)
def test_a_wrong_envelope_is_422_without_an_index(client: TestClient, payload: object, field: str | None) -> None:
    resp = client.post("/v1/events", json=payload)
    assert resp.status_code == 422
    [problem] = resp.json()["detail"]
    assert problem["index"] is None and problem["field"] == field


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"events": [', '{"events": []}'.encode("utf-16")])
def test_malformed_json_is_400_with_a_clear_message(client: TestClient, body: bytes) -> None:
    resp = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["detail"].startswith("malformed JSON")


def test_a_bad_attribute_key_names_the_attributes_field(client: TestClient) -> None:
    event = {**_batch(1, prefix="key")[0], "attributes": {"bad key!": "v"}}
    [problem] = client.post("/v1/events", json={"events": [event]}).json()["detail"]
    assert problem["field"] == "attributes" and problem["message"].startswith("a key: ")


def test_a_lone_surrogate_escape_is_named_not_called_truncated(client: TestClient) -> None:
    body = b'{"events": [{"event_type": "query_received", "query_id": "q", "query_text": "a\\ud800b"}]}'
    resp = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["detail"] == "malformed JSON: \\ud800 is half of a surrogate pair, not text: send UTF-8"
    pair = '{"events": [{"event_type": "query_received", "query_id": "q-emoji", "query_text": "\\ud83d\\ude00"}]}'
    assert client.post("/v1/events", content=pair, headers={"content-type": "application/json"}).status_code == 202


@pytest.mark.parametrize("depth", [1_000, 50_000])
def test_json_nested_past_the_parsers_depth_is_a_400_not_a_500(client: TestClient, depth: int) -> None:
    body = b'{"events":' + b"[" * depth + b"]" * depth + b"}"
    resp = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["detail"] == "malformed JSON: nested too deeply"


def test_a_gzip_batch_is_inflated_and_another_encoding_is_refused_unread(client: TestClient) -> None:
    batch = {"events": [{"event_type": "query_received", "query_id": "q-gz", "query_text": "gzip로 보낸 질문"}]}
    body = gzip.compress(json.dumps(batch).encode())
    resp = client.post(
        "/v1/events", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    plain = json.dumps(batch).encode()
    resp = client.post(
        "/v1/events", content=plain, headers={"content-type": "application/json", "content-encoding": "br"}
    )
    assert resp.status_code == 415 and "gzip" in resp.json()["detail"]
    resp = client.post(
        "/v1/events", content=b"not gzip", headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert resp.status_code == 400 and "inflate" in resp.json()["detail"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]
)
def test_a_batch_a_web_page_could_send_unasked_is_refused_unread(client: TestClient, content_type: str | None) -> None:
    """Any web page a user opened could append events to a server on 127.0.0.1 without a token: a browser sends a
    form, text/plain or a typeless blob cross-origin without asking first (no CORS preflight); JSON it cannot."""
    batch = b'{"events":[{"event_type":"feedback_received","query_id":"csrf-1","score":-1}]}'
    headers = {"content-type": content_type} if content_type else {}
    resp = client.post("/v1/events", content=batch, headers={"origin": "http://elsewhere.example", **headers})
    assert resp.status_code == 415 and "application/json" in resp.json()["detail"]
    for taken in ("application/json; charset=utf-8", "application/vnd.batch+json"):
        resp = client.post("/v1/events", content=batch, headers={"content-type": taken})
        assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat", '{"query": "삼성전자 주가"}'.encode()), ("/v1/feedback", b'{"query_id": "q-1", "score": 1}')],
)
def test_a_question_or_verdict_sent_as_a_form_is_415_saying_to_send_json(
    client: TestClient, path: str, body: bytes
) -> None:
    """`curl -d '{"query": …}'` sends a form: the answer was a 422 about a body read as a string."""
    form = client.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "send the body as application/json" in form.json()["detail"]
    sent = client.post(path, content=body, headers={"content-type": "application/json"})
    assert sent.status_code in (200, 202), sent.text


@pytest.mark.parametrize("path", ["/v1/events", "/v1/traces"])
def test_a_body_in_another_charset_than_utf8_is_415_unread(client: TestClient, path: str) -> None:
    """JSON is UTF-8: a body said to be latin-1 would be read as UTF-8, its text garbled; refused, naming it."""
    batch = '{"events":[{"event_type":"query_received","query_id":"caf\u00e9","query_text":"café"}]}'
    for charset in ("latin-1", '"ISO-8859-1"', "utf-16"):
        resp = client.post(
            path, content=batch.encode("latin-1"), headers={"content-type": f"application/json; charset={charset}"}
        )
        assert resp.status_code == 415, resp.text
        assert "UTF-8" in resp.text
    for charset in ("UTF-8", '"utf-8"', "utf8"):
        resp = client.post(
            "/v1/events", content=batch.encode(), headers={"content-type": f"application/json;charset={charset}"}
        )
        assert resp.status_code == 202, resp.text


def test_a_gzip_body_is_taken_whole_or_refused_never_in_part(client: TestClient) -> None:
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    # One batch in two parts, each its own gzip member (a gzip file appended to, a writer that flushed between them).
    first = '{"events":[{"event_type":"query_received","query_id":"q-m1","query_text":"질문"}'.encode()
    second = b',{"event_type":"query_received","query_id":"q-m2","query_text":"x"}]}'
    resp = client.post("/v1/events", content=gzip.compress(first) + gzip.compress(second), headers=gz)
    assert resp.status_code == 202 and resp.json()["accepted"] == 2
    whole = gzip.compress(first + second)
    streamer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    flushed = streamer.compress(first) + streamer.flush(zlib.Z_SYNC_FLUSH)  # inflates to `first`, then stops
    for cut_short in (flushed, whole[:-8], whole + b"garbage"):  # no end; no checksum trailer; bytes after it
        resp = client.post("/v1/events", content=cut_short, headers=gz)
        assert resp.status_code == 400 and "inflate" in resp.json()["detail"]
    # Members past the bound (each costs a copy of what follows it: 100k of them held the server for minutes).
    resp = client.post("/v1/events", content=gzip.compress(b"") * 100_000 + gzip.compress(first + second), headers=gz)
    assert resp.status_code == 400 and f"more than {MAX_GZIP_MEMBERS} gzip members" in resp.json()["detail"]
    members = [gzip.compress(first), *[gzip.compress(b"")] * (MAX_GZIP_MEMBERS - 2), gzip.compress(second)]
    resp = client.post("/v1/events", content=b"".join(members), headers=gz)
    assert resp.status_code == 202 and resp.json()["accepted"] == 2  # at the bound: taken


# -- limits --------------------------------------------------------------------------------------------
@pytest.fixture
def limited(settings: Settings) -> Iterator[TestClient]:
    with _client(dataclasses.replace(settings, ingest_max_bytes=4096, ingest_max_events=3)) as c:
        yield c


def test_a_body_over_the_limit_by_content_length_is_413(limited: TestClient) -> None:
    resp = limited.post("/v1/events", content=b" " * 5000, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert "QUERYLOG_INGEST_MAX_BYTES" in resp.json()["detail"]


def test_a_chunked_body_over_the_limit_is_413(limited: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(100):
            yield b" " * 100

    resp = limited.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413


def test_a_batch_over_the_event_limit_is_413(limited: TestClient, settings: Settings) -> None:
    resp = limited.post("/v1/events", json={"events": _batch(4)})
    assert resp.status_code == 413
    assert "at most 3" in resp.json()["detail"]
    assert not any(e.event_id.startswith("e-") for e in _logged(settings))
    # Refused whole, and counted as a 422's events are (docs/metrics.md: "refused").
    assert 'querylog_ingest_events_total{endpoint="events",outcome="refused"} 4.0' in limited.get("/metrics").text


def test_reading_an_endless_body_stops_at_the_drain_bound() -> None:
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}  # never ends

    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": [], "query_string": b""}
    request = Request(scope, receive)
    with pytest.raises(Exception, match="over 10240 bytes") as excinfo:
        asyncio.run(_read_body(request, 10 * 1024))
    assert getattr(excinfo.value, "status_code", None) == 413
    # Read past the limit (so that a body-first client gets the 413) but no further than the bound.
    assert received == DRAIN_MAX_BYTES // 1024 + 1


def test_a_client_that_goes_away_mid_body_is_a_refusal_not_an_application_error() -> None:
    """A client that sent less than its Content-Length and closed made Starlette log "Exception in ASGI application"
    with a ClientDisconnect traceback, and the refusal went uncounted."""
    messages = iter([{"type": "http.request", "body": b'{"events": [', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    headers = [(b"content-length", b"1000"), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": headers, "query_string": b""}
    with pytest.raises(Exception, match="went away before sending its whole body") as excinfo:
        asyncio.run(_read_body(Request(scope, receive), 10 * 1024))
    assert getattr(excinfo.value, "status_code", None) == 400
    # Counted apart from malformed bodies (2,100 slow clients that went away read as 2,100 "400 malformed").
    assert isinstance(excinfo.value, HTTPException) and counted_status(excinfo.value) == 499


def test_a_body_that_stops_arriving_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer that stalled mid-body (or a half-open connection) held its share of the budget for good: three such
    held 60 MB, and every large batch was refused 503 until the server restarted."""
    import querylog.service.producers as producers

    monkeypatch.setattr(producers, "BODY_IDLE_S", 0.2)

    async def stalled() -> dict[str, Any]:
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"events": [', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError("unreachable")

    sent: list[int] = []
    headers = [(b"content-length", b"5000000"), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": headers, "query_string": b""}
    with pytest.raises(HTTPException) as excinfo:
        asyncio.run(_read_body(Request(scope, stalled), 20 * 1024 * 1024))
    assert excinfo.value.status_code == 408 and "stopped for" in str(excinfo.value.detail)


def test_a_request_refused_for_its_headers_takes_none_of_the_budget(client: TestClient) -> None:
    """A text/plain or latin-1 batch was answered 503 while the server was busy, and its 415 came only at a retry."""
    budget = client.app.state.ingestor.inflight  # type: ignore[attr-defined]
    others = budget.hold(budget.cap)
    assert others is not None
    try:
        for headers in (
            {"content-type": "text/plain"},
            {"content-type": "application/json; charset=latin-1"},
            {"content-type": "application/json", "content-encoding": "br"},
        ):
            assert client.post("/v1/events", content=b"{}", headers=headers).status_code == 415, headers
        # Over the byte limit: refused 413 unread, never kept, so it holds nothing either.
        too_large = b"x" * (client.app.state.ingestor.max_bytes + 1)  # type: ignore[attr-defined]
        assert (
            client.post("/v1/events", content=too_large, headers={"content-type": "application/json"}).status_code
            == 413
        )
    finally:
        others.release()
    for charset in ("us-ascii", "'utf-8'"):  # ASCII is UTF-8; quoted either way
        ok = client.post(
            "/v1/events", content=b'{"events": []}', headers={"content-type": f"application/json; charset={charset}"}
        )
        assert ok.status_code == 202, (charset, ok.text)


# -- feedback ------------------------------------------------------------------------------------------
def test_feedback_lands_as_an_event_of_the_right_query(client: TestClient, settings: Settings) -> None:
    answered = client.post(
        "/v1/chat", json={"query": "삼성전자 주가 전망", "session_id": "s-9", "user_id": "u-9"}
    ).json()
    other = client.post("/v1/chat", json={"query": "KOSPI today"}).json()
    resp = client.post("/v1/feedback", json={"query_id": answered["query_id"], "score": -1, "comment": "오래된 정보"})
    assert resp.status_code == 202
    body = resp.json()
    assert body["query_id"] == answered["query_id"] and body["event_id"]
    _runtime(client).projectors["parquet"].catch_up()
    with Catalog(settings.lake_dir) as cat:
        _, rows = cat.query("select query_id, feedback_score from queries order by started_at")
        _, events = cat.query(
            "select event_id, session_id, user_id, comment from events where event_type = 'feedback_received'"
        )
    assert rows == [(answered["query_id"], -1), (other["query_id"], None)]
    assert events == [(body["event_id"], "s-9", "u-9", "오래된 정보")]


@pytest.mark.parametrize("release", [None, "r-2026.12"])
def test_feedback_carries_the_release_of_the_query_it_judges(settings: Settings, release: str | None) -> None:
    """Without QUERYLOG_RELEASE the chat API's queries carried querylog's version and their feedback no release: a
    chart of feedback by release put every verdict under none."""
    with _client(dataclasses.replace(settings, release=release)) as client:
        answered = client.post("/v1/chat", json={"query": "하이닉스 실적"}).json()
        assert client.post("/v1/feedback", json={"query_id": answered["query_id"], "score": 1}).status_code == 202
    releases = {e.event_type: e.release for e in _logged(settings)}
    assert releases["feedback_received"] == releases["query_received"] == (release or querylog.__version__)


def test_feedback_the_disk_refused_is_503_and_its_retry_is_recorded(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk `/v1/feedback` answered 202 ("durable when 202 is returned") and the verdict was gone."""
    answered = client.post("/v1/chat", json={"query": "삼성전자 주가"}).json()
    verdict = {"query_id": answered["query_id"], "score": -1, "comment": "틀렸어요"}
    with _log_disk_full(client, monkeypatch):
        refused = client.post("/v1/feedback", json=verdict)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert "could not write the feedback" in refused.json()["detail"]
    retried = client.post("/v1/feedback", json=verdict)
    assert retried.status_code == 202
    feedback = [e for e in _logged(settings) if e.event_type == "feedback_received"]
    assert [e.event_id for e in feedback] == [retried.json()["event_id"]]


def test_ids_typed_decomposed_are_taken_in_nfc_so_feedback_finds_its_query_and_a_session_stays_one(
    client: TestClient, settings: Settings
) -> None:
    """A Korean id typed on macOS arrives decomposed (NFD): its feedback joined no query and its session split."""
    nfd = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731
    sent = client.post(
        "/v1/events",
        json={"events": [{"event_type": "query_received", "query_id": nfd("질문-1"), "query_text": "한글 아이디"}]},
    )
    assert sent.status_code == 202, sent.text
    verdict = client.post("/v1/feedback", json={"query_id": nfd("질문-1"), "score": -1, "session_id": nfd("세션-1")})
    assert verdict.status_code == 202 and verdict.json()["query_id"] == "질문-1"
    for session in ("세션-1", nfd("세션-1")):
        assert client.post("/v1/chat", json={"query": "삼성전자", "session_id": session}).status_code == 200
    logged = _logged(settings)
    assert [(e.event_type, e.query_id) for e in logged if "질문" in e.query_id] == [
        ("query_received", "질문-1"),
        ("feedback_received", "질문-1"),
    ]
    assert {e.session_id for e in logged if e.session_id} == {"세션-1"}  # one session, both questions in it


def test_feedback_after_an_erasure_does_not_bring_back_the_erased_querys_user_and_session(
    client: TestClient, settings: Settings
) -> None:
    """A server running since before `querylog erase` remembered the erased query's session and user ids: a late
    thumbs-up naming only the query id came back with them, into the log, the lake and Loki."""
    from querylog.erase import erase

    erased = client.post("/v1/chat", json={"query": "삼성전자 주가", "session_id": "s-gone", "user_id": "u-gone"})
    kept = client.post("/v1/chat", json={"query": "카카오 뉴스", "session_id": "s-kept", "user_id": "u-kept"})
    _runtime(client).projectors["parquet"].catch_up()
    assert erase(settings, user_ids=["u-gone"], skip_loki=True).queries == 1
    for answer in (erased, kept):
        assert client.post("/v1/feedback", json={"query_id": answer.json()["query_id"], "score": 1}).status_code == 202
    lines = b"".join(p.read_bytes() for p in sorted(settings.log_dir.glob("*.jsonl"))).splitlines()
    logged = [decode(line) for line in lines if line.strip()]  # the erased lines are blank
    feedback = {e.query_id: e for e in logged if e.event_type == "feedback_received"}
    late = feedback[erased.json()["query_id"]]
    assert (late.session_id, late.user_id) == (None, None)
    assert (feedback[kept.json()["query_id"]].session_id, feedback[kept.json()["query_id"]].user_id) == (
        "s-kept",
        "u-kept",
    )


def test_feedback_is_emitted_through_the_tracker(client: TestClient) -> None:
    query_id = client.post("/v1/chat", json={"query": "카카오 뉴스"}).json()["query_id"]
    with capture_events(_runtime(client).tracker) as events:
        client.post("/v1/feedback", json={"query_id": query_id, "score": 1})
    [event] = events
    assert event.event_type == "feedback_received" and event.query_id == query_id
    assert event.score == 1 and event.env == "test"  # type: ignore[attr-defined]


def test_feedback_comments_are_redacted(client: TestClient, settings: Settings) -> None:
    client.post("/v1/feedback", json={"query_id": "q-1", "score": 0, "comment": "전화 010-9876-5432 주세요"})
    [event] = [e for e in _logged(settings) if e.event_type == "feedback_received"]
    assert "010-9876-5432" not in (event.comment or "")  # type: ignore[attr-defined]


def test_feedback_on_a_query_this_process_did_not_answer_is_accepted(client: TestClient, settings: Settings) -> None:
    resp = client.post("/v1/feedback", json={"query_id": "from-another-worker", "score": 1, "session_id": "s-x"})
    assert resp.status_code == 202
    assert resp.json()["trace_id"] is None
    [event] = [e for e in _logged(settings) if e.event_type == "feedback_received"]
    assert (event.query_id, event.session_id) == ("from-another-worker", "s-x")


@pytest.mark.parametrize(
    "payload",
    [
        {"query_id": "q-1", "score": 2},
        {"query_id": "q-1", "score": -2},
        {"query_id": "q-1", "score": True},
        {"query_id": "q-1", "score": "1"},
        {"query_id": "q-1", "score": 0.5},
        {"query_id": "", "score": 1},
        {"query_id": "has space", "score": 1},
        {"score": 1},
        {"query_id": "q-1", "score": 1, "rating": 5},
    ],
)
def test_bad_feedback_is_422_and_emits_nothing(client: TestClient, payload: dict[str, Any]) -> None:
    with capture_events(_runtime(client).tracker) as events:
        assert client.post("/v1/feedback", json=payload).status_code == 422
    assert events == []


# -- documentation -------------------------------------------------------------------------------------
def test_the_openapi_document_has_the_event_schemas_and_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"QueryReceived", "FeedbackReceived", "IngestAccepted", "IngestRejected", "FeedbackRequest"} <= set(schemas)
    assert spec["components"]["securitySchemes"]["IngestToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of QUERYLOG_INGEST_TOKEN. Required only when the server sets one.",
    }
    events = spec["paths"]["/v1/events"]["post"]
    assert set(events["responses"]) >= {"202", "400", "401", "403", "413", "422", "503"}
    body_schema = events["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["properties"]["events"]["items"]["discriminator"]["propertyName"] == "event_type"
    for path in spec["paths"].values():
        for operation in path.values():
            assert operation.get("summary"), operation


def test_the_limits_are_read_from_the_environment() -> None:
    from querylog.config import ConfigError

    settings = Settings.from_env(
        {"QUERYLOG_INGEST_MAX_BYTES": "2048", "QUERYLOG_INGEST_MAX_EVENTS": "50", "QUERYLOG_INGEST_DEDUP_WINDOW": "0"}
    )
    assert (settings.ingest_max_bytes, settings.ingest_max_events, settings.ingest_dedup_window) == (2048, 50, 0)
    with pytest.raises(ConfigError, match="QUERYLOG_INGEST_MAX_EVENTS"):
        Settings.from_env({"QUERYLOG_INGEST_MAX_EVENTS": "0"})


def test_the_demo_workload_leaves_feedback_on_some_answers(client: TestClient, settings: Settings) -> None:
    from querylog.service.demo import run_demo

    report = run_demo("http://testserver", queries=40, client=client, progress=None, concurrency=2)
    feedback = [e for e in _logged(settings) if e.event_type == "feedback_received"]
    assert report.feedback > 0 and report.feedback_failed == 0
    assert len(feedback) == report.feedback
    assert {e.score for e in feedback} <= {-1, 0, 1}  # type: ignore[attr-defined]
    answered = {e.query_id for e in _logged(settings) if e.event_type == "query_completed"}
    assert {e.query_id for e in feedback} <= answered


@pytest.mark.parametrize("terminal", [True, False])
def test_the_demo_shows_progress_as_a_bar_on_a_terminal_and_as_lines_elsewhere(
    client: TestClient, terminal: bool
) -> None:
    """A bar redrawn with carriage returns is what a terminal wants and what a log file or CI output garbles."""
    import io

    from querylog.service.demo import run_demo

    out = io.StringIO()
    out.isatty = lambda: terminal  # type: ignore[method-assign]
    run_demo("http://testserver", queries=40, client=client, progress=out, concurrency=1)
    if terminal:
        assert out.getvalue().startswith("\r  demo [") and out.getvalue().endswith("40/40\n")
    else:
        lines = out.getvalue().splitlines()
        assert "\r" not in out.getvalue() and len(lines) == 10
        assert lines[0] == "  demo: 4/40 queries sent" and lines[-1] == "  demo: 40/40 queries sent"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/v1/events", "/v1/traces"])
def test_a_client_that_sends_its_whole_body_first_gets_the_413(tmp_path: Path, path: str) -> None:
    """Python's urllib sends all 24 MiB (over the 20 MiB limit) before it reads the answer: the 413, not a reset."""
    import urllib.error
    import urllib.request

    from querylog.testing import running_server

    body = b"x" * (24 * 1024 * 1024)
    with running_server(tmp_path / "home") as server:
        request = urllib.request.Request(
            f"{server.url}{path}", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
        assert b"QUERYLOG_INGEST_MAX_BYTES" in refused.value.read()


def test_what_producers_sent_and_what_was_refused_is_on_metrics(client: TestClient) -> None:
    """A producer whose batches are all refused showed only in log lines."""

    def sample(name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = client.get("/metrics").text
        found = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == name and s.labels == labels
        ]
        return found[0] if found else 0.0

    assert sample("querylog_ingest_events_total", endpoint="events", outcome="accepted") == 0  # there from the start
    batch = _batch(3, prefix="m")
    assert client.post("/v1/events", json={"events": batch}).status_code == 202
    assert client.post("/v1/events", json={"events": batch}).status_code == 202  # a retry: all duplicates
    bad = [*_batch(2, prefix="n"), {"event_type": "query_received"}]  # no query_id: the batch is refused whole
    assert client.post("/v1/events", json={"events": bad}).status_code == 422
    assert (
        client.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    )
    assert sample("querylog_ingest_events_total", endpoint="events", outcome="accepted") == 3
    assert sample("querylog_ingest_events_total", endpoint="events", outcome="duplicate") == 3
    assert sample("querylog_ingest_events_total", endpoint="events", outcome="refused") == 3
    assert sample("querylog_ingest_requests_refused_total", endpoint="events", status="422") == 1
    assert sample("querylog_ingest_requests_refused_total", endpoint="events", status="400") == 1


def test_every_answer_gives_its_bytes_back_to_the_inflight_budget(client: TestClient) -> None:
    """A request holds its share of QUERYLOG_INGEST_INFLIGHT_MAX_BYTES only while it runs, whatever its answer."""
    budget = client.app.state.ingestor.inflight  # type: ignore[attr-defined]
    json_type = {"content-type": "application/json"}
    answers = [
        client.post("/v1/events", json={"events": _batch(2, prefix="b")}).status_code,
        client.post("/v1/events", content=b"{not json", headers=json_type).status_code,
        client.post("/v1/events", json={"events": [{"event_type": "query_received"}]}).status_code,
        client.post(
            "/v1/events", content=gzip.compress(b"x" * 100), headers={**json_type, "content-encoding": "gzip"}
        ).status_code,
        client.post("/v1/events", content=b"{}", headers={"content-type": "text/plain"}).status_code,
        client.post("/v1/traces", content=b"{}", headers=json_type).status_code,
    ]
    assert answers == [202, 400, 422, 400, 415, 200]
    assert budget.held == 0

    def held_on_metrics() -> float:
        from prometheus_client.parser import text_string_to_metric_families

        families = text_string_to_metric_families(client.get("/metrics").text)
        return next(f.samples[0].value for f in families if f.name == "querylog_ingest_inflight_bytes")

    assert held_on_metrics() == 0
    taken = budget.hold(budget.cap)  # the whole budget is free again
    assert taken is not None
    try:
        assert held_on_metrics() == budget.cap
        refused = client.post("/v1/events", json={"events": _batch(1, prefix="c")})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert client.post("/v1/traces", content=b"{}", headers=json_type).status_code == 503
    finally:
        taken.release()
    assert client.post("/v1/events", json={"events": _batch(1, prefix="c")}).json() == {"accepted": 1, "duplicates": 0}


def test_a_gzip_body_holds_a_guess_of_its_inflated_size_then_its_size(client: TestClient) -> None:
    """A gzip body held the whole byte limit (20 MiB) while it was read: three small gzip exports at once filled the
    default budget. It holds ten times its length, and once inflated its size, refused (503) only if that does
    not fit."""
    budget = client.app.state.ingestor.inflight  # type: ignore[attr-defined]
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    small = gzip.compress(json.dumps({"events": _batch(3, prefix="g")}).encode())
    long = [{**event, "query_text": "가" * 16_000} for event in _batch(8, prefix="h")]
    roomy = json.dumps({"events": long}, ensure_ascii=False).encode()  # 384 kB that compress well
    packed = gzip.compress(roomy)
    assert 10 * len(packed) < len(roomy)
    others = budget.hold(budget.cap - 10 * len(small) - len(roomy) // 2)  # other bodies being read
    assert others is not None
    try:
        assert client.post("/v1/events", content=small, headers=gz).json() == {"accepted": 3, "duplicates": 0}
        refused = client.post("/v1/events", content=packed, headers=gz)  # fits as guessed, not once inflated
        assert refused.status_code == 503, refused.text
    finally:
        others.release()
    assert client.post("/v1/events", content=packed, headers=gz).json() == {"accepted": 8, "duplicates": 0}
    assert budget.held == 0


# -- answers ------------------------------------------------------------------------------------------------
def _response(answer: str, **extra: Any) -> dict[str, Any]:
    return {"event_type": "response_generated", "event_id": "r-1", "query_id": "q-r", "answer_text": answer, **extra}


def test_an_answer_keeps_its_length_as_sent_when_the_event_stores_it_cut(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/v1/events", json={"events": [_response("가" * 20_000)]}).status_code == 202
    [event] = _logged(settings)
    assert event.answer_chars == 20_000 and event.answer_text.endswith("…[truncated]")  # type: ignore[attr-defined]


def test_with_answers_not_captured_producers_answers_keep_only_their_length(settings: Settings) -> None:
    with _client(dataclasses.replace(settings, capture_answers=False)) as c:
        resp = c.post("/v1/events", json={"events": [_response("SECRET ANSWER TEXT", answer_chars=99)]})
        assert resp.status_code == 202
        second = {**_response("SECRET 2"), "event_id": "r-2"}
        assert c.post("/v1/events", json={"events": [second]}).status_code == 202
    kept = _logged(settings)
    assert [(e.answer_text, e.answer_chars) for e in kept] == [(None, 99), (None, 8)]  # type: ignore[attr-defined]
    log = b"".join(p.read_bytes() for p in settings.log_dir.glob("*.jsonl"))
    assert b"SECRET" not in log


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", "   "),
        ("session_id", "a\u0000b"),
        ("user_id", "x" * 201),
        ("query_id", "q 1"),
        ("event_id", "e\u0085"),
        ("schema_version", 4),
        ("session_id", "s-ok"),
        ("query_id", "q-ok"),
        ("schema_version", 2),
        ("schema_version", 3),
        ("release", "r" * 201),  # names become metric labels and filters: bounded as ids are
        ("release", "v1\nv2"),
        ("language", "k" * 201),
        ("release", "2026.12.05-hotfix"),
        ("prompt_version", ""),
        ("prompt_version", "  "),
        ("release", "\u200b"),
        ("query_id", "\u200b\u2060"),
        ("session_id", "\ufeff "),
    ],
)
def test_the_published_event_schema_refuses_what_the_server_refuses(client: TestClient, field: str, value: Any) -> None:
    # A client generated from /openapi.json must not send what the server answers 422 to, nor refuse what it takes.
    jsonschema = pytest.importorskip("jsonschema")
    spec = client.get("/openapi.json").json()
    schema = {"$ref": "#/components/schemas/QueryReceived", "components": spec["components"]}
    event = {**_batch(1, prefix=f"v-{field}")[0], field: value}
    published_ok = jsonschema.Draft202012Validator(schema).is_valid(event)
    status = client.post("/v1/events", json={"events": [event]}).status_code
    assert status in (202, 422)
    assert published_ok == (status == 202), (published_ok, status)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"event_type": "response_generated", "gen_ai_request_model": "m" * 100_000}, "gen_ai_request_model"),
        ({"event_type": "query_failed", "error_type": "E" * 201, "error_message": "x"}, "error_type"),
        ({"event_type": "intent_classified", "intent": "stock\u0000", "confidence": 0.5}, "intent"),
        ({"event_type": "query_completed", "latency_ms": 5, "intent": ""}, "intent"),
        ({"event_type": "query_failed", "error_type": "E", "intent": "   "}, "intent"),
        ({"event_type": "query_completed", "latency_ms": 5, "release": "\u200b"}, "release"),
    ],
)
def test_a_name_past_the_id_length_blank_or_with_control_characters_is_refused_by_field(
    client: TestClient, event: dict[str, Any], field: str
) -> None:
    resp = client.post("/v1/events", json={"events": [{"query_id": "q-name", **event}]})
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["field"] == field and "at most 200 characters, not blank" in error["message"]


@pytest.mark.parametrize("session_id", ["   ", "a\u0000b", "\u200b"])
def test_chat_and_feedback_hold_ids_to_the_rules_events_are_held_to(client: TestClient, session_id: str) -> None:
    assert client.post("/v1/chat", json={"query": "삼성전자", "session_id": session_id}).status_code == 422
    assert client.post("/v1/feedback", json={"query_id": "q-1", "score": 1, "user_id": session_id}).status_code == 422


def test_the_documented_example_batch_is_taken_once_and_its_retry_adds_nothing(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    example = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert client.post("/v1/events", json=example).json() == {"accepted": 2, "duplicates": 0}
    assert client.post("/v1/events", json=example).json() == {"accepted": 0, "duplicates": 2}


def test_a_time_without_its_offset_is_told_to_carry_one(client: TestClient) -> None:
    """It said "must be timezone-aware (UTC)", which read as if only UTC were taken; +09:00 is."""
    event = {"event_type": "query_received", "query_id": "q-1", "query_text": "hi", "ts": "2025-01-01T09:00:00"}
    [problem] = client.post("/v1/events", json={"events": [event]}).json()["detail"]
    assert problem["field"] == "ts" and "must carry its UTC offset (Z, or one such as +09:00)" in problem["message"]
    assert client.post("/v1/events", json={"events": [{**event, "ts": "2025-01-01T09:00:00+09:00"}]}).status_code == 202


class _Held:
    """Stands in for a parse step: says when it is entered, holds until released (at most 10 s), then runs it."""

    def __init__(self, step: Any) -> None:
        self.step, self.entered, self.release, self.returned = step, threading.Event(), threading.Event(), False

    def __call__(self, *args: Any) -> Any:
        self.entered.set()
        self.release.wait(10)
        self.returned = True
        return self.step(*args)


@pytest.mark.parametrize("kind", ["events", "events gzip", "traces"])
def test_a_large_body_is_parsed_while_the_server_answers_other_requests(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A 19 MB OTLP/JSON export was parsed on the event loop: /healthz waited over a second behind it, every chat
    request too. Each parse step of a large body now runs on a worker thread; held there, the server still answers."""
    from querylog.service import otlp, producers

    headers = {"content-type": "application/json"}
    if kind == "traces":
        held = _Held(otlp._decode)
        monkeypatch.setattr(otlp, "_decode", held)
        path, body = "/v1/traces", json.dumps({"resourceSpans": [], "pad": "x" * 10}).encode()
    else:
        events = [{**e, "query_text": "질문 " * 200} for e in _batch(400, prefix="big")]
        body = json.dumps({"events": events}).encode()
        assert len(body) > producers.OFF_LOOP_BYTES
        path = "/v1/events"
        if kind == "events gzip":
            body = gzip.compress(body)
            headers["content-encoding"] = "gzip"
            held = _Held(producers._inflate)
            monkeypatch.setattr(producers, "_inflate", held)
            assert len(body) <= producers.OFF_LOOP_BYTES  # a few kilobytes of gzip may hold megabytes
        else:
            held = _Held(producers._json.decode)
            monkeypatch.setattr(producers, "_json", SimpleNamespace(decode=held))
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.post, path, content=body, headers=headers)
        assert held.entered.wait(10)
        assert client.get("/healthz").status_code == 200
        assert not held.returned  # answered while the body was still being parsed
        held.release.set()
        assert answer.result().status_code in (200, 202, 400)


def test_an_error_item_echoes_at_most_a_few_hundred_characters_of_what_was_sent(client: TestClient) -> None:
    """An unknown field named by a megabyte came back twice in the 422 (its path and its message): 100 such events
    made a 40 MB answer to a 20 MB batch. So did an unknown event type."""
    name = "k" * 100_000
    events = [{**_batch(1, prefix="echo")[0], name: 1}, {"event_type": "t" * 100_000, "query_id": "q-echo"}]
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 422 and len(resp.content) < 2_000
    unknown, kind = resp.json()["detail"]
    assert unknown["field"].startswith("kkkk") and "100,000 characters" in unknown["field"]
    assert "tttt" in kind["message"] and len(kind["message"]) < 300
    resp = client.post("/v1/events", json={"events": [], name: 1})  # beside the batch, not in an event
    assert resp.status_code == 422 and len(resp.content) < 2_000


def test_a_utf8_byte_order_mark_is_read_past_and_utf16_is_named(client: TestClient) -> None:
    """A UTF-8 BOM was "invalid character (byte 0)" and UTF-16 "object keys must be strings (byte 1)"."""
    batch = json.dumps({"events": _batch(1, prefix="bom")}, ensure_ascii=False)
    headers = {"content-type": "application/json"}
    resp = client.post("/v1/events", content=b"\xef\xbb\xbf" + batch.encode(), headers=headers)
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        resp = client.post("/v1/events", content=batch.encode(encoding), headers=headers)
        assert resp.status_code == 400 and resp.json()["detail"].endswith("send UTF-8"), encoding


def test_a_blank_tag_is_quoted_as_it_was_sent() -> None:
    """The message quoted the tag stripped: two spaces were told as '' — a length the caller never sent."""
    from querylog.logging.events import EventValidationError, checked_tags

    with pytest.raises(EventValidationError, match=r"besides the spaces around it, got '  '$"):
        checked_tags(["ok", "  "])
    with pytest.raises(EventValidationError, match=r"got 'xxx.*' \(300 characters\)$"):
        checked_tags(["x" * 300])
