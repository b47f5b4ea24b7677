"""LokiSink against the recorded-Loki double: what Loki stores, retries (the projector's), 400s, outages,
checkpoints, options, and the counters every sink shares."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import sys
import threading
import types
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
import structlog.testing

from querylog.logging.codec import DecodeError, decode, encode
from querylog.logging.events import AnyEvent, FeedbackReceived, QueryCompleted, QueryReceived
from querylog.logging.loki import LokiOptions, LokiSink
from querylog.logging.projection import Batch, Projector, Sink, SinkSendError
from querylog.logging.segments import EventLog
from querylog.logging.time_order import TimeOrderedReader
from querylog.logging.tracker import QueryTracker
from querylog.testing import CapturingEmitter, Fault, RecordedLoki

_spec = importlib.util.spec_from_file_location(
    "querylog_sink_contract", Path(__file__).with_name("test_sink_contract.py")
)
assert _spec is not None and _spec.loader is not None
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)
DurableSinkContract = _contract.DurableSinkContract


def _tracked(n: int, *, env: str = "test", texts: Sequence[str] = ("SK하이닉스 주가 전망은?",)) -> list[AnyEvent]:
    """The events of `n` answered queries, as the chat API's tracker emits them."""
    capture = CapturingEmitter()
    tracker = QueryTracker(capture, service="querylog", env=env)
    for i in range(n):
        with tracker.query(texts[i % len(texts)], session_id=f"s-{i % 3}", user_id=f"u-{i}") as q:
            q.classified("stock_analysis", 0.9)
            q.searched(3, cache_hit=False)
            q.responded(model="m", input_tokens=10, output_tokens=20)
    return capture.events  # type: ignore[return-value]


class Harness:
    """A double, sinks on it, and projectors that never really sleep: their waits are recorded instead."""

    def __init__(self, tmp_path: Path, **loki_kwargs: Any) -> None:
        self.tmp_path = tmp_path
        self.loki = RecordedLoki(**loki_kwargs)
        self.delays: list[float] = []

    def sink(self, **kwargs: Any) -> LokiSink:
        kwargs.setdefault("checkpoint_path", self.tmp_path / "state" / "checkpoints" / "loki.json")
        kwargs.setdefault("dead_letter_dir", self.tmp_path / "state" / "loki-dead-letter")
        kwargs.setdefault("env", "test")
        return LokiSink("http://loki:3100", transport=self.loki.transport(), **kwargs)

    def projector(self, sink: LokiSink, log_dir: Path | None = None, **kwargs: Any) -> Projector:
        """The projector `querylog serve` runs (time-ordered reader, read-ahead), waits recorded."""
        kwargs.setdefault("read_ahead", True)
        return Projector(
            TimeOrderedReader(log_dir or self.tmp_path / "log"),
            sink,
            sleep=self.delays.append,
            rng=random.Random(7),
            **kwargs,
        )

    def project(self, events: Sequence[AnyEvent], **sink_kwargs: Any) -> LokiSink:
        """`events` written to a log and projected until Loki has them all, retrying as `querylog serve` does."""
        with EventLog(self.tmp_path / "log") as log:
            for event in events:
                log.append(event)
        sink = self.sink(**sink_kwargs).open()
        self.projector(sink).catch_up(retry=True)
        sink.close()
        return sink

    def pushes(self) -> list[dict[str, Any]]:
        bodies = []
        for request in self.loki.requests:
            raw = request.content
            if request.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            bodies.append(json.loads(raw))
        return bodies


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def _batch(events: Sequence[AnyEvent], position: int = 1) -> Batch:
    return Batch(events=events, checkpoint={"seg.jsonl": position})


def _offered(sink: LokiSink, events: Sequence[AnyEvent], form: str, position: int = 1) -> Batch:
    """A batch as decoded events, or as the projector offers it: planned and compressed from the log's lines."""
    if form == "events":
        return _batch(events, position)
    prepared = sink.prepare([encode(e) for e in events])
    assert prepared is not None
    return Batch(events=[], checkpoint={"seg.jsonl": position}, prepared=prepared)


FORMS = pytest.mark.parametrize("form", ["events", "prepared"])


def _event_ids(loki: RecordedLoki) -> list[str]:
    return [orjson.loads(e.line)["event_id"] for e in loki.entries()]


def test_the_public_surface_is_pinned() -> None:
    import querylog.logging.loki as loki
    import querylog.testing as testing

    assert sorted(loki.__all__) == [
        "DEFAULT_MAX_PUSH_BYTES", "Entries", "LINE_FIELDS", "LokiClient", "LokiOptions", "LokiSink",
        "METADATA_FIELDS", "encode_lines", "plan_pushes",
    ]  # fmt: skip
    assert {"Fault", "RecordedLoki", "StoredEntry"} <= set(testing.__all__)


# -- the happy path ------------------------------------------------------------------------------------------


def test_events_reach_loki_as_three_labels_metadata_and_korean_utf8_lines(h: Harness) -> None:
    nfd = unicodedata.normalize("NFD", "하이닉스 환불")
    events = _tracked(6, texts=("SK하이닉스 주가 전망은?", nfd))
    with h.sink() as sink:
        sink.write(_batch(events))
    assert sorted(_event_ids(h.loki)) == sorted(e.event_id for e in events)
    for push in h.pushes():
        for stream in push["streams"]:
            assert set(stream["stream"]) == {"app", "env", "event"}
    assert {s["event"] for s in h.loki.streams()} <= {
        "query_received", "intent_classified", "search_completed", "response_generated", "query_completed",
    }  # fmt: skip
    assert len(h.loki.streams('{env="test"}')) <= 30
    assert h.loki.label_names() == {"app", "env", "event", "service_name"}
    received = h.loki.entries('{event="query_received"}')
    assert all("하이닉스" in e.line and "\\u" not in e.line for e in received)
    assert all(unicodedata.is_normalized("NFC", e.line) for e in received)
    assert {e.metadata["session_id"] for e in received} == {"s-0", "s-1", "s-2"}
    assert all(set(e.metadata) >= {"query_id", "session_id", "user_id"} for e in received)
    assert all(r.headers["Content-Encoding"] == "gzip" for r in h.loki.requests)


def test_telemetry_counts_received_sent_and_pushes(h: Harness) -> None:
    events = _tracked(4)
    with h.sink() as sink:
        sink.write(_batch(events))
        snap = sink.telemetry.snapshot()
    assert snap.received == snap.sent == len(events)
    assert snap.batches == len(h.loki.requests) == 1
    assert snap.batch_bytes_total == len(h.loki.requests[0].content)
    assert snap.dropped == {} and snap.retries == 0


def test_large_batches_are_cut_into_pushes_under_the_size_limit(h: Harness) -> None:
    events = _tracked(200)
    with h.sink(options=LokiOptions(max_push_bytes=64 * 1024, max_line_bytes=8192)) as sink:
        sink.write(_batch(events))
    assert len(h.loki.requests) > 1
    assert all(len(gzip.decompress(r.content)) <= 64 * 1024 for r in h.loki.requests)
    assert len(h.loki.entries()) == len(events) and h.loki.duplicates_ignored == 0


def test_pushes_are_compressed_where_the_switch_interval_lets_it_overlap_and_are_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At Python's 5 ms the read-ahead thread compresses (the writer would wait for the GIL after each push); at the
    # 0.2 ms `querylog project` runs with, the writing thread does, just before each post.
    import querylog.logging.loki.sink as sink_module

    compressed_on: list[str] = []

    def recording_compress(data: bytes, compresslevel: int) -> bytes:
        compressed_on.append(threading.current_thread().name)
        return gzip.compress(data, compresslevel=compresslevel)

    monkeypatch.setattr(sink_module, "gzip", types.SimpleNamespace(compress=recording_compress))
    events, before = _tracked(60), sys.getswitchinterval()
    pushed: dict[float, list[dict[str, Any]]] = {}
    threads: dict[float, set[str]] = {}
    for interval in (0.005, 0.0002):
        h, compressed_on[:] = Harness(tmp_path / f"{interval}"), []
        with EventLog(h.tmp_path / "log") as log:
            for event in events:
                log.append(event)
        sink = h.sink(options=LokiOptions(max_push_bytes=8 * 1024, max_line_bytes=4096)).open()
        sys.setswitchinterval(interval)
        try:
            h.projector(sink, batch_max_bytes=16 * 1024).catch_up(retry=True)
        finally:
            sys.setswitchinterval(before)
            sink.close()
        pushed[interval], threads[interval] = h.pushes(), set(compressed_on)
    assert len(pushed[0.005]) > 5 and pushed[0.005] == pushed[0.0002]
    assert any(name.startswith("querylog-read-ahead") for name in threads[0.005])
    assert threads[0.0002] == {threading.current_thread().name}


# -- retries: the projector offers a failed batch again, after Promtail's backoff -------------------------------


def test_a_429_storm_then_success_stores_each_line_once(h: Harness) -> None:
    events = _tracked(3)
    h.loki.fail_next(*[429] * 6)
    snap = h.project(events).telemetry.snapshot()
    assert len(h.loki.entries()) == len(events) and h.loki.duplicates_ignored == 0
    # Each failed attempt is one error (by stage) and one retry, counted once: not per push and again per batch.
    assert snap.retries == 6 and snap.errors == {"http_429": 6}
    assert snap.received == snap.sent == len(events)
    # Promtail's backoff: retry n waits within [0.5·2ⁿ⁻¹, 0.5·2ⁿ) seconds, capped at the policy's 30 s.
    assert [0.5 * 2 ** (n - 1) <= d <= min(30, 0.5 * 2**n) for n, d in enumerate(h.delays, start=1)] == [True] * 6


def test_5xx_timeouts_and_refused_connections_are_retried(h: Harness) -> None:
    events = _tracked(2)
    h.loki.fail_next(500, 503, Fault.timeout(), Fault.connection_refused(), Fault.slow(60))
    snap = h.project(events).telemetry.snapshot()
    assert len(h.loki.entries()) == len(events)
    assert snap.errors == {"http_5xx": 2, "timeout": 2, "connect": 1} and snap.retries == 5


def test_a_timeout_after_loki_stored_the_push_leaves_no_duplicate_line(h: Harness) -> None:
    events = _tracked(2)
    h.loki.fail_next(Fault.timeout(stored=True))
    h.project(events)
    # The push made again from the same lines is byte-identical, so Loki drops its lines as duplicates.
    assert len(h.loki.entries()) == len(events) and h.loki.duplicates_ignored == len(events)


def test_retry_after_is_honoured_up_to_five_minutes(h: Harness) -> None:
    h.loki.fail_next(Fault.answer(429, retry_after=42), Fault.answer(503, retry_after=10_000))
    h.project(_tracked(1))
    assert h.delays == [42, 300]


def test_a_failed_write_keeps_the_checkpoint_and_the_batch_goes_through_when_offered_again(h: Harness) -> None:
    events = _tracked(2)
    h.loki.fail_next(*[503] * 3)
    with h.sink() as sink:
        for offer in range(3):
            with pytest.raises(SinkSendError, match="answered 503") as failure:
                # Whoever offers a batch again says how much of it was offered before (the projector does).
                sink.write(Batch(events=events, checkpoint={"seg.jsonl": 10}, redelivered=len(events) if offer else 0))
            assert failure.value.stage == "http_5xx"
            assert sink.checkpoint() == {}
            assert not (h.tmp_path / "state" / "checkpoints" / "loki.json").exists()
        sink.write(Batch(events=events, checkpoint={"seg.jsonl": 10}, redelivered=len(events)))
        assert sink.checkpoint() == {"seg.jsonl": 10}
        snap = sink.telemetry.snapshot()
    assert len(h.loki.entries()) == len(events)
    # Offered four times, received once; three failed writes; no retries, as nobody retried (the test did).
    assert (snap.received, snap.sent, snap.errors, snap.retries) == (len(events), len(events), {"http_5xx": 3}, 0)


@FORMS
def test_a_batch_offered_again_sends_only_what_loki_lacks(h: Harness, form: str) -> None:
    events = _tracked(60)
    options = LokiOptions(max_push_bytes=16 * 1024, max_line_bytes=4096)

    # Two pushes get through, the third finds Loki gone: the write fails part-way.
    h.loki.fail_next(Fault.passthrough(), Fault.passthrough(), Fault.connection_refused())
    with h.sink(options=options) as sink:
        with pytest.raises(SinkSendError):
            sink.write(_offered(sink, events, form))
        assert 0 < len(h.loki.entries()) < len(events) and sink.checkpoint() == {}
        sink.write(_offered(sink, events, form))
        assert sink.checkpoint() == {"seg.jsonl": 1}
    assert sorted(_event_ids(h.loki)) == sorted(e.event_id for e in events)
    assert h.loki.duplicates_ignored == 0  # nothing Loki had accepted was sent again


def test_a_checkpoint_the_disk_refused_neither_resends_nor_recounts_what_loki_has(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the checkpoint's save failed after Loki had the batch: offered again, it was sent and counted
    again (sent 9,055 for 3,610 events; count_over_time 70 over the log)."""
    import querylog.logging.projection as projection_module

    events = _tracked(3)
    real_replace = projection_module.os.replace

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    with h.sink() as sink:
        monkeypatch.setattr(projection_module.os, "replace", full)
        with pytest.raises(SinkSendError, match="No space") as failed:
            sink.write(_batch(events))
        assert failed.value.stage == "checkpoint"
        monkeypatch.setattr(projection_module.os, "replace", real_replace)
        sink.write(Batch(events=events, checkpoint={"seg.jsonl": 1}, redelivered=len(events)))
        assert sink.checkpoint() == {"seg.jsonl": 1}
        snap = sink.telemetry.snapshot()
    assert sorted(_event_ids(h.loki)) == sorted(e.event_id for e in events)
    assert h.loki.duplicates_ignored == 0
    assert (snap.received, snap.sent) == (len(events), len(events))


# -- 4xx -----------------------------------------------------------------------------------------------------


def test_a_partial_400_is_never_resent_and_its_refusals_are_counted(tmp_path: Path) -> None:
    # This Loki keeps two days; the sink thinks a week: one old line reaches Loki and is refused there.
    h = Harness(tmp_path, max_age_s=2 * 86_400)
    fresh = _tracked(1)
    old = QueryReceived(query_id="q-old", query_text="오래된 질문", ts=datetime.now(UTC) - timedelta(days=3))
    with h.sink() as sink:
        sink.write(_batch([*fresh, old], position=5))
        snap = sink.telemetry.snapshot()
        assert sink.checkpoint() == {"seg.jsonl": 5}
    # One push per event type (a line days old may trail its stream), none sent twice.
    assert len(h.loki.requests) == len({e.event_type for e in fresh}) == 5
    assert len(h.loki.entries()) == len(fresh)
    assert snap.dropped == {"too_old": 1} and snap.sent == len(fresh)
    assert snap.errors == {"http_400": 1} and h.delays == []


def test_an_unexplained_400_is_dead_lettered_once_and_can_be_reposted(h: Harness) -> None:
    events = _tracked(2)
    h.loki.fail_next(Fault.answer(400, "unexpected validation failure\n"))
    with h.sink() as sink:
        sink.write(_batch(events, position=3))
        snap = sink.telemetry.snapshot()
        assert sink.checkpoint() == {"seg.jsonl": 3}
    assert len(h.loki.requests) == 1 and snap.dropped == {"rejected": len(events)}
    (letter,) = (h.tmp_path / "state" / "loki-dead-letter").glob("*.jsonl")
    record = orjson.loads(letter.read_bytes())
    assert record["status"] == 400 and record["entries"] == len(events)
    assert record["loki_message"] == "unexpected validation failure"
    repost = h.loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=record["push"]))
    assert repost.status_code == 204 and len(h.loki.entries()) == len(events)


def test_a_422_is_dead_lettered(h: Harness) -> None:
    h.loki.fail_next(Fault.answer(422, "error at least one valid stream is required for ingestion\n"))
    with h.sink() as sink:
        sink.write(_batch(_tracked(1)))
        assert sink.telemetry.snapshot().dropped == {"unprocessable": 5}
    assert len(list((h.tmp_path / "state" / "loki-dead-letter").glob("*.jsonl"))) == 1


def test_a_413_from_a_proxy_is_split_until_it_fits(h: Harness) -> None:
    events = _tracked(2)
    h.loki.fail_next(413)
    with h.sink() as sink:
        sink.write(_batch(events))
    assert len(h.loki.requests) == 3
    assert len(h.loki.entries()) == len(events) and h.loki.duplicates_ignored == 0


@pytest.mark.parametrize(("status", "stage"), [(401, "auth"), (403, "auth"), (404, "http_4xx")])
def test_auth_and_url_errors_fail_the_write_without_dropping(h: Harness, status: int, stage: str) -> None:
    h.loki.fail_next(status)
    with h.sink() as sink:
        with pytest.raises(SinkSendError, match="check the URL, tenant and credentials"):
            sink.write(_batch(_tracked(1)))
        snap = sink.telemetry.snapshot()
        assert sink.checkpoint() == {} and snap.dropped == {} and snap.errors == {stage: 1}


def test_a_loki_refusing_structured_metadata_stops_the_projection_without_dropping(h: Harness) -> None:
    h.loki.allow_structured_metadata = False
    events = _tracked(2)
    with h.sink() as sink:
        with pytest.raises(SinkSendError, match="allow_structured_metadata") as failure:
            sink.write(_batch(events))
        assert failure.value.stage == "loki_config"
        snap = sink.telemetry.snapshot()
        assert sink.checkpoint() == {} and snap.dropped == {} and snap.sent == 0
        h.loki.allow_structured_metadata = True  # the setting fixed: the same batch goes through
        sink.write(_batch(events))
        assert sink.telemetry.snapshot().sent == len(events) and len(h.loki.entries()) == len(events)


# -- what is not sent ----------------------------------------------------------------------------------------


@FORMS
def test_events_loki_would_refuse_are_counted_not_sent(h: Harness, form: str) -> None:
    now = datetime.now(UTC)
    old = QueryCompleted(query_id="q1", latency_ms=1.0, ts=now - timedelta(days=8))
    future = QueryCompleted(query_id="q2", latency_ms=1.0, ts=now + timedelta(hours=1))
    with h.sink() as sink, structlog.testing.capture_logs() as logged:
        sink.write(_offered(sink, [old, future], form, position=9))
        snap = sink.telemetry.snapshot()
        assert sink.checkpoint() == {"seg.jsonl": 9}
    assert h.loki.requests == []  # nothing worth a push: no empty push, no 422
    assert snap.dropped == {"too_old": 1, "too_new": 1}
    # Which events Loki will lack, and why: the counter alone does not say.
    said = {(e["reason"], tuple(e["event_ids"])) for e in logged if e["event"] == "loki_entries_not_sent"}
    assert said == {("too_old", (old.event_id,)), ("too_new", (future.event_id,))}


@FORMS
def test_a_line_far_behind_its_stream_is_not_sent(h: Harness, form: str) -> None:
    now = datetime.now(UTC)
    behind = QueryCompleted(query_id="b", latency_ms=1.0, ts=now - timedelta(hours=2))
    with h.sink() as sink:
        sink.write(_offered(sink, [QueryCompleted(query_id="a", latency_ms=1.0, ts=now)], form))
        sink.write(_offered(sink, [behind, QueryCompleted(query_id="c", latency_ms=1.0, ts=now)], form, position=2))
        assert sink.telemetry.snapshot().dropped == {"too_far_behind": 1}
    # The line two hours behind is left out of the second push; the one beside it goes.
    assert len(h.loki.requests) == 2
    assert sorted(e.metadata["query_id"] for e in h.loki.entries()) == ["a", "c"]


def _pushed_elsewhere(loki: RecordedLoki, event: str, ts: datetime, line: str) -> None:
    """A line another writer (or an earlier run) pushed to the sink's stream for `event`: Loki's, not the sink's."""
    ahead = {
        "stream": {"app": "querylog", "env": "test", "event": event},
        "values": [[str(int(ts.timestamp() * 1e9)), line]],
    }
    assert loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json={"streams": [ahead]})).status_code == 204
    loki.requests.clear()


def test_a_stream_another_writer_moved_ahead_is_learnt_from_the_first_refusal(h: Harness) -> None:
    now = datetime.now(UTC)
    _pushed_elsewhere(h.loki, "query_completed", now, "another writer's line")
    late = [QueryCompleted(query_id=f"q{i}", latency_ms=1.0, ts=now - timedelta(hours=2, minutes=i)) for i in range(2)]
    with h.sink() as sink:
        sink.write(_batch(late[:1]))
        sink.write(_batch(late[1:], position=2))
        snap = sink.telemetry.snapshot()
    assert snap.dropped == {"too_far_behind": 2} and snap.errors == {"http_400": 1}
    assert len(h.loki.requests) == 1  # the second late line was judged here, not sent


@FORMS
def test_lines_far_behind_a_stream_loki_knows_are_counted_even_beside_other_streams(h: Harness, form: str) -> None:
    # Loki answers a push with its last stream's outcome (204 here: the fresh stream is fine), so late lines
    # of another stream in the same push would be dropped by Loki unseen and counted sent.
    now = datetime.now(UTC)
    _pushed_elsewhere(h.loki, "query_completed", now, "an earlier run's line")
    late = [QueryCompleted(query_id=f"late{i}", latency_ms=1.0, ts=now - timedelta(hours=2) + timedelta(seconds=i))
            for i in range(3)]  # fmt: skip
    fresh = [FeedbackReceived(query_id=f"f{i}", score=1, ts=now - timedelta(hours=1, minutes=55)) for i in range(2)]
    with h.sink() as sink:
        sink.write(_offered(sink, [*late, *fresh], form))
        snap = sink.telemetry.snapshot()
    assert snap.dropped == {"too_far_behind": 3} and snap.sent == 2
    assert sorted(e.metadata.get("query_id", "-") for e in h.loki.entries()) == ["-", "f0", "f1"]
    assert all(len(push["streams"]) == 1 for push in h.pushes())


def test_live_lines_share_a_push_across_streams(h: Harness) -> None:
    sink = h.project(_tracked(5))
    assert sink.telemetry.snapshot().sent == 25
    assert [len(push["streams"]) for push in h.pushes()] == [5]


def test_overlong_lines_are_truncated_with_a_marker_and_counted(h: Harness) -> None:
    huge = QueryReceived(query_id="q", query_text="가" * 3000)
    with h.sink(options=LokiOptions(max_line_bytes=2048, max_push_bytes=8192)) as sink:
        sink.write(_batch([huge]))
        assert sink.telemetry.snapshot().errors == {"truncate": 1}
    (entry,) = h.loki.entries()
    assert len(entry.line.encode()) <= 2048 and orjson.loads(entry.line)["query_text"].endswith("…[truncated]")


# -- production options --------------------------------------------------------------------------------------


def test_tenant_and_basic_auth_are_sent(tmp_path: Path) -> None:
    h = Harness(tmp_path, auth_enabled=True, required_headers={"Authorization": "Basic dTpw"})
    with h.sink(options=LokiOptions(tenant="team-a", username="u", password="p")) as sink:
        sink.write(_batch(_tracked(1)))
    assert len(h.loki.entries(tenant="team-a")) == 5
    assert h.loki.requests[0].headers["X-Scope-OrgID"] == "team-a"


def test_a_bearer_token_is_sent(tmp_path: Path) -> None:
    h = Harness(tmp_path, required_headers={"Authorization": "Bearer t0ken"})
    with h.sink(options=LokiOptions(token="t0ken")) as sink:
        sink.write(_batch(_tracked(1)))
    assert len(h.loki.entries()) == 5 and h.loki.requests[0].headers["User-Agent"].startswith("querylog/")


def test_an_injected_client_gets_the_same_headers(tmp_path: Path) -> None:
    loki = RecordedLoki(auth_enabled=True)
    client = httpx.Client(transport=loki.transport(), base_url="http://loki")
    sink = LokiSink("http://loki", client=client, options=LokiOptions(tenant="t", compression="none")).open()
    sink.write(_batch(_tracked(1)))
    sink.close()
    assert client.is_closed and len(loki.entries(tenant="t")) == 5
    assert "Content-Encoding" not in loki.requests[0].headers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": "t", "username": "u", "password": "p"}, "not both"),
        ({"username": "u"}, "needs both"),
        ({"insecure_skip_verify": True, "ca_file": Path("/etc/hostname")}, "contradict"),
        ({"ca_file": Path("/nonexistent/ca.pem")}, "does not exist"),
        ({"max_push_bytes": 1000}, "at least two of the longest lines"),
        ({"compression": "zstd"}, "gzip"),
    ],
)
def test_bad_options_fail_at_construction_with_a_sentence(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LokiOptions(**kwargs)


def test_bad_sink_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="http://"):
        LokiSink("loki:3100")
    with pytest.raises(ValueError, match="label env"):
        LokiSink("http://loki", env="prod env")


def test_tls_options_reach_the_client(tmp_path: Path) -> None:
    client = LokiOptions(insecure_skip_verify=True).client("https://loki")
    client.close()
    import certifi

    client = LokiOptions(ca_file=Path(certifi.where())).client("https://loki")
    client.close()


# -- lifecycle and the projector -----------------------------------------------------------------------------


def test_an_outage_then_catch_up_loses_nothing_and_duplicates_nothing(h: Harness, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    sink = h.sink().open()
    projector = h.projector(sink, log_dir, batch_max_events=7)
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log, env="test")
        for i in range(10):
            with tracker.query(f"네이버 질문 {i}", session_id="s"):
                pass
        # Loki is down: every attempt is refused. The projector fails, the checkpoint stays at the start.
        h.loki.fail_next(*[Fault.connection_refused()] * 4)
        for _ in range(4):
            with pytest.raises(SinkSendError):
                projector.run_once()
            assert sink.checkpoint() == {}
        assert h.loki.entries() == [] and h.loki.pending_faults == 0
        # The API kept writing meanwhile.
        for i in range(10, 15):
            with tracker.query(f"네이버 질문 {i}", session_id="s"):
                pass
        log.flush()
        # Loki is back: the projection catches up.
        projector.catch_up()
        assert sink.checkpoint() == projector.reader.end_checkpoint()
        written = [json.loads(line) for p in sorted(log_dir.glob("*.jsonl")) for line in p.read_text().splitlines()]
    projector.stop(drain_timeout_s=None)
    sink.close()
    assert sorted(_event_ids(h.loki)) == sorted(e["event_id"] for e in written)
    assert h.loki.duplicates_ignored == 0 and len(h.loki.entries()) == 30


_GOOD = '"event_id":"e-1","ts":"2026-11-24T03:00:00Z","query_id":"q-1"'
#: Lines the codec refuses: the Loki projection must refuse them too, never ship them.
REFUSED_LINES = [
    b"not json",
    ('{"event_type":"query_received",' + _GOOD + ',"query_text":"x","extra":1}').encode(),
    ('{"event_type":"query_received",' + _GOOD + ',"query_text":"   "}').encode(),
    ('{"event_type":"intent_classified",' + _GOOD + ',"intent":"stock","confidence":2.0}').encode(),
    b'{"event_type":"query_received","event_id":"e-1","ts":"2026-11-24T03:00:00","query_id":"q","query_text":"x"}',
    ('{"event_type":"feedback_received",' + _GOOD + ',"score":5}').encode(),
]


@pytest.mark.parametrize("bad", REFUSED_LINES)
def test_a_batch_with_a_line_the_codec_refuses_is_not_prepared(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(bad)
    lines = [encode(e) for e in _tracked(2)] + [bad]
    sink = LokiSink("http://loki:3100", app="querylog", env="test")
    assert sink.prepare(lines) is None  # the projector decodes line by line and counts the refused one
    sink.close()


def test_lines_the_codec_refuses_are_counted_and_the_projection_moves_past_them(h: Harness, tmp_path: Path) -> None:
    bad_lines = REFUSED_LINES
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log, env="test")
        with tracker.query("첫 질문"):
            pass
        log.flush()
        segment = log.segment
        assert segment is not None
        with segment.open("ab") as fh:  # lines no writer of ours makes: hand-edited, or from elsewhere
            fh.write(b"\n".join(bad_lines) + b"\n")
        with tracker.query("두번째 질문"):
            pass
    sink = h.sink().open()
    projector = h.projector(sink, log_dir)
    projector.catch_up()
    projector.stop(drain_timeout_s=None)
    assert sink.checkpoint() == projector.reader.end_checkpoint()  # not stuck behind them
    sink.close()
    assert len(h.loki.entries()) == 4  # the two queries' events, and nothing of the refused lines
    assert projector.corrupt_lines == len(bad_lines)
    assert sink.telemetry.snapshot().dropped == {"corrupt_line": len(bad_lines)}


def test_a_reopened_sink_resumes_after_its_checkpoint_without_resending(h: Harness, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log, env="test")
        with tracker.query("첫 질문"):
            pass
        first = h.sink().open()
        h.projector(first, log_dir).catch_up()
        first.close()
        with tracker.query("두번째 질문"):
            pass
        second = h.sink().open()
        h.projector(second, log_dir).catch_up()
        second.close()
    assert len(h.loki.entries()) == 4 and h.loki.duplicates_ignored == 0


def test_a_running_loki_projector_drains_on_stop(h: Harness, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    sink = h.sink().open()
    projector = h.projector(sink, log_dir, interval_s=0.05)
    with EventLog(log_dir) as log:
        projector.start()
        tracker = QueryTracker(log, env="test")
        for i in range(5):
            with tracker.query(f"삼성전자 {i}"):
                pass
        log.flush()
        projector.stop(drain_timeout_s=30)
    sink.close()
    assert len(h.loki.entries()) == 10


class TestLokiSinkContract(DurableSinkContract):  # type: ignore[misc, valid-type]
    """The sink contract every backend passes, against one double per test."""

    doubles: ClassVar[dict[Path, RecordedLoki]] = {}

    def make_sink(self, tmp_path: Path) -> Sink:
        loki = self.doubles.setdefault(tmp_path, RecordedLoki())
        return LokiSink("http://loki", transport=loki.transport(), checkpoint_path=tmp_path / "loki.json")

    def stored_ids(self, sink: Sink, tmp_path: Path) -> list[str]:
        return _event_ids(self.doubles[tmp_path])
