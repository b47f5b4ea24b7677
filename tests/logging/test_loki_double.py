"""RecordedLoki answers every recorded request as Loki 3.4.5 did (tests/data/loki-3.4.5.json, a verbatim copy of
shared/loki-recordings), and behaves like Loki where the recording says nothing."""

from __future__ import annotations

import copy
import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.loki_query import queryable_loki

from querylog.testing import Fault, RecordedLoki

RECORDING = Path(__file__).resolve().parents[1] / "data" / "loki-3.4.5.json"
#: The recording's "now": fresh lines are stamped 1795484117.636…, and the too-old answer puts the cutoff
#: (now − 7 days) within second 01:35:17.
RECORDED_NOW = 1_795_484_117.7
#: Two raw bodies are not in the recording ("<raw bytes, see note>"); they are rebuilt from Loki's answers.
#: The malformed body is what the error quotes as its whole context; the gzip push is the stream
#: {app="rec", event="gz"} that /series lists and the count query counts once.
MALFORMED_BODY = b'{"streams":['
GZIP_PUSH = {"streams": [{"stream": {"app": "rec", "event": "gz"}, "values": [["1795484117636728613", "gzip line"]]}]}
#: Labels of streams the recorded Loki held from pushes outside the recording: no recorded request made them.
UNRECORDED_LABELS = {"intent", "logger", "severity"}
DAY_NS = 86_400 * 10**9


def _cases() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDING.read_text())
    return data


def _shift_text(text: str, days: int) -> str:
    """Move every epoch-ns number and RFC 3339 second in an error message by `days`."""
    text = re.sub(r"\b1\d{18}\b", lambda m: str(int(m.group()) + days * DAY_NS), text)
    return re.sub(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        lambda m: (datetime.fromisoformat(m.group().replace("Z", "+00:00")) + timedelta(days=days)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        text,
    )


def _shift(case: dict[str, Any], days: int) -> dict[str, Any]:
    """The case as if recorded `days` later, as the recordings' README asks for a replay."""
    case = copy.deepcopy(case)
    delta_ns, delta_s = days * DAY_NS, days * 86_400
    request, response = case["request"], case["response"]
    if isinstance(request.get("body"), dict):
        for stream in request["body"]["streams"]:
            for value in stream["values"]:
                value[0] = type(value[0])(int(value[0]) + delta_ns)
    for key in ("start", "end", "time"):
        if key in request.get("params", {}):
            request["params"][key] = str(int(request["params"][key]) + delta_ns)
    body = response["body"]
    if isinstance(body, str):
        response["body"] = _shift_text(body, days)
    elif isinstance(body.get("data"), dict):
        for item in body["data"]["result"]:
            for value in item.get("values", []):
                value[0] = str(int(value[0]) + delta_ns) if isinstance(value[0], str) else value[0] + delta_s
            if "value" in item:
                item["value"][0] = round(item["value"][0] + delta_s, 3)
    return case


def _push_body(name: str, case: dict[str, Any], days: int) -> bytes:
    if name == "malformed_json":
        return MALFORMED_BODY
    if name == "gzip_body_ok":
        push = copy.deepcopy(GZIP_PUSH)
        push["streams"][0]["values"][0][0] = str(int(push["streams"][0]["values"][0][0]) + days * DAY_NS)
        return gzip.compress(json.dumps(push).encode())
    # The recorder serialised with Python's json.dumps defaults: the error contexts show its ", " and ": ".
    return json.dumps(case["request"]["body"]).encode()


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "number"


def _replay(days: int) -> Iterator[tuple[str, dict[str, Any], httpx.Response]]:
    loki = queryable_loki(clock=lambda: RECORDED_NOW + days * 86_400)  # the recordings include queries
    with httpx.Client(transport=loki.transport(), base_url="http://loki") as client:
        for name, recorded in _cases().items():
            case = _shift(recorded, days)
            request = case["request"]
            if "path" in request:
                response = client.get(request["path"], params={k: str(v) for k, v in request["params"].items()})
            else:
                body = _push_body(name, case, days)
                response = client.post("/loki/api/v1/push", content=body, headers=request["headers"])
            yield name, case["response"], response


@pytest.mark.parametrize("days", [0, 400], ids=["as-recorded", "shifted-400-days"])
def test_every_recorded_exchange_is_answered_as_loki_did(days: int) -> None:
    answered = 0
    for name, expected, response in _replay(days):
        assert response.status_code == expected["status"], name
        body = expected["body"]
        if isinstance(body, str):
            assert response.text == body, name
        elif name == "labels":
            assert set(response.json()["data"]) == set(body["data"]) - UNRECORDED_LABELS
        elif name == "series":
            key = lambda labels: sorted(labels.items())  # noqa: E731
            assert sorted(response.json()["data"], key=key) == sorted(body["data"], key=key)
        else:
            got = response.json()
            assert got["status"] == body["status"], name
            assert got["data"]["resultType"] == body["data"]["resultType"], name
            assert got["data"]["result"] == body["data"]["result"], name
            # Query statistics are runtime measurements; the double gives Loki's fields, not its figures.
            assert _shape(got["data"]["stats"]) == _shape(body["data"]["stats"]), name
        answered += 1
    assert answered == len(_cases()) == 17


def test_a_mixed_push_is_refused_yet_its_fresh_line_is_stored() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    mixed = _cases()["mixed_valid_and_too_old"]["request"]["body"]
    response = loki.handle(httpx.Request("POST", "http://loki/loki/api/v1/push", json=mixed))
    assert response.status_code == 400
    assert loki.lines('{app="rec"}') == ["fresh line"]


def test_refusals_of_several_kinds_are_grouped_as_loki_words_them() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    old, new = str(int((RECORDED_NOW - 8 * 86_400) * 1e9)), str(int((RECORDED_NOW + 3600) * 1e9))
    push = {"streams": [{"stream": {"app": "a"}, "values": [[old, "x"], [old, "y"], [new, "z"]]}]}
    response = loki.handle(httpx.Request("POST", "http://loki/loki/api/v1/push", json=push))
    assert response.status_code == 400
    parts = response.text.rstrip("\n").split("; ")
    assert parts[0].startswith('2 errors like: entry for stream \'{app="a", service_name="a"}\' has timestamp too old')
    assert parts[1].startswith("1 errors like: entry for stream") and "timestamp too new" in parts[1]


def test_a_line_an_hour_behind_its_stream_is_refused_with_the_ingester_wording() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    now = int(RECORDED_NOW * 1e9)
    loki.handle(
        httpx.Request(
            "POST",
            "http://l/loki/api/v1/push",
            json={"streams": [{"stream": {"app": "a"}, "values": [[str(now), "new"]]}]},
        )
    )
    late = str(now - 2 * 3600 * 10**9)
    push = {"streams": [{"stream": {"app": "a"}, "values": [[late, "late"], [str(now - 10**9), "recent"]]}]}
    response = loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push))
    assert response.status_code == 400
    assert "ignored, reason: 'entry too far behind, entry timestamp is: " in response.text
    assert response.text.endswith('user \'fake\', total ignored: 1 out of 2 for stream: {app="a", service_name="a"}\n')
    assert loki.lines() == ["recent", "new"]


@pytest.mark.parametrize("late_stream_last", [False, True])
def test_a_push_is_answered_with_its_last_streams_outcome(late_stream_last: bool) -> None:
    # Loki 3.4's ingester keeps only the last stream's error (pkg/ingester/instance.go; the live tier checks it).
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    now = int(RECORDED_NOW * 1e9)
    first = {"streams": [{"stream": {"app": "a"}, "values": [[str(now), "new"]]}]}
    assert loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=first)).status_code == 204
    late = {"stream": {"app": "a"}, "values": [[str(now - 2 * 3600 * 10**9), "late"]]}
    fresh = {"stream": {"app": "b"}, "values": [[str(now), "fresh"]]}
    streams = [fresh, late] if late_stream_last else [late, fresh]
    response = loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json={"streams": streams}))
    assert response.status_code == (400 if late_stream_last else 204)
    assert sorted(loki.lines()) == ["fresh", "new"]


def test_an_identical_resend_is_dropped_and_counted() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    push = _cases()["ok_json"]["request"]["body"]
    for _ in range(2):
        assert loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push)).status_code == 204
    assert len(loki.entries()) == 1 and loki.duplicates_ignored == 1


def test_loki_adds_service_name_and_a_detected_level_but_metadata_is_no_label() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    ts = str(int(RECORDED_NOW * 1e9))
    values = [[ts, '{"level":"warn","msg":"x"}', {"user_id": "u-1"}], [ts, "an error happened"], [ts, '{"a":1}']]
    push = {"streams": [{"stream": {"app": "a", "env": "e"}, "values": values}]}
    assert loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push)).status_code == 204
    assert loki.label_names() == {"app", "env", "service_name"}
    levels = {e.line: e.metadata["detected_level"] for e in loki.entries()}
    assert levels == {'{"level":"warn","msg":"x"}': "warn", "an error happened": "error", '{"a":1}': "unknown"}
    assert loki.entries()[0].metadata["user_id"] == "u-1"


def test_a_bad_label_name_stores_nothing() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    ts = str(int(RECORDED_NOW * 1e9))
    push = {
        "streams": [
            {"stream": {"app": "ok"}, "values": [[ts, "a"]]},
            {"stream": {"bad-label": "v"}, "values": [[ts, "b"]]},
        ]
    }
    response = loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push))
    assert response.status_code == 400 and response.text.startswith("couldn't parse labels: 1:5: parse error")
    assert loki.entries() == []


def test_queued_faults_answer_the_next_requests_in_order() -> None:
    loki = RecordedLoki()
    loki.fail_next(429, 503, Fault.timeout(), Fault.connection_refused(), Fault.answer(429, retry_after=2))
    with httpx.Client(transport=loki.transport(), base_url="http://l") as client:
        assert client.get("/ready").status_code == 429
        assert client.get("/ready").text == "no healthy ingesters\n"
        with pytest.raises(httpx.ReadTimeout):
            client.get("/ready")
        with pytest.raises(httpx.ConnectError):
            client.get("/ready")
        assert client.get("/ready").headers["Retry-After"] == "2"
        assert client.get("/ready").status_code == 200
    assert len(loki.requests) == 6 and loki.pending_faults == 0


def test_a_timeout_after_storing_lets_the_resend_reach_loki_twice() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    loki.fail_next(Fault.timeout(stored=True))
    push = _cases()["ok_json"]["request"]["body"]
    with pytest.raises(httpx.ReadTimeout):
        loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push))
    loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push))
    assert len(loki.entries()) == 1 and loki.duplicates_ignored == 1


def test_multi_tenant_loki_needs_a_tenant_and_keeps_tenants_apart() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW, auth_enabled=True)
    push = _cases()["ok_json"]["request"]["body"]
    response = loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push))
    assert (response.status_code, response.text) == (401, "no org id\n")
    headers = {"X-Scope-OrgID": "team-a"}
    assert (
        loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json=push, headers=headers)).status_code == 204
    )
    assert len(loki.entries(tenant="team-a")) == 1 and loki.entries(tenant="fake") == []


def test_a_gateway_refuses_requests_without_its_credentials() -> None:
    loki = RecordedLoki(required_headers={"Authorization": "Bearer s3cret"})
    assert loki.handle(httpx.Request("GET", "http://l/loki/api/v1/labels")).status_code == 401
    ok = loki.handle(httpx.Request("GET", "http://l/loki/api/v1/labels", headers={"Authorization": "Bearer s3cret"}))
    assert ok.status_code == 200


def _push_lines(loki: RecordedLoki, lines: list[tuple[dict[str, str], str, dict[str, str]]]) -> None:
    ts = int(RECORDED_NOW * 1e9) - 60 * 10**9
    streams = [
        {"stream": labels, "values": [[str(ts + i), line, meta]]} for i, (labels, line, meta) in enumerate(lines)
    ]
    assert loki.handle(httpx.Request("POST", "http://l/loki/api/v1/push", json={"streams": streams})).status_code == 204


def test_logql_panels_of_the_docs_work() -> None:
    loki = queryable_loki(clock=lambda: RECORDED_NOW)
    done = {"app": "querylog", "env": "prod", "event": "query_completed"}
    _push_lines(
        loki,
        [
            (done, '{"intent":"stock","latency_ms":100}', {"session_id": "s-1"}),
            (done, '{"intent":"stock","latency_ms":300}', {"session_id": "s-2"}),
            (done, '{"intent":"news","latency_ms":50}', {"session_id": "s-1"}),
        ],
    )
    client = httpx.Client(transport=loki.transport(), base_url="http://l")
    t = str(int(RECORDED_NOW * 1e9))

    def instant(query: str) -> dict[str, str]:
        result = client.get("/loki/api/v1/query", params={"query": query, "time": t}).json()["data"]["result"]
        return {json.dumps(r["metric"], sort_keys=True): r["value"][1] for r in result}

    assert instant(
        'sum by (intent) (count_over_time({app="querylog", event="query_completed"} | json intent [5m]))'
    ) == {
        '{"intent": "news"}': "1",
        '{"intent": "stock"}': "2",
    }
    p95 = 'quantile_over_time(0.5, {app="querylog"} | json | unwrap latency_ms | __error__="" [5m]) by (intent)'
    assert instant(p95) == {'{"intent": "news"}': "50", '{"intent": "stock"}': "200"}
    assert instant('sum(count_over_time({app="querylog"} | session_id="s-1" [5m]))') == {"{}": "2"}
    streams = client.get("/loki/api/v1/query_range", params={"query": '{app="querylog"} |= "news"', "start": "0"})
    assert [v[1] for r in streams.json()["data"]["result"] for v in r["values"]] == [
        '{"intent":"news","latency_ms":50}'
    ]
    log_instant = client.get("/loki/api/v1/query", params={"query": '{app="querylog"}'})
    assert log_instant.status_code == 400 and "not supported as an instant query" in log_instant.text


def test_a_parsed_field_named_like_a_label_is_renamed_as_loki_does() -> None:
    loki = queryable_loki(clock=lambda: RECORDED_NOW)
    _push_lines(loki, [({"app": "a", "event": "x"}, '{"event":"inner","n":1}', {})])
    response = loki.handle(
        httpx.Request("GET", "http://l/loki/api/v1/query_range", params={"query": '{app="a"} | json', "start": "0"})
    )
    labels = response.json()["data"]["result"][0]["stream"]
    assert labels["event"] == "x" and labels["event_extracted"] == "inner" and labels["n"] == "1"


def test_served_double_answers_over_real_http() -> None:
    loki = queryable_loki(clock=lambda: RECORDED_NOW)
    with loki.serve() as url:
        assert httpx.get(f"{url}/ready").text == "ready\n"
        push = _cases()["ok_structured_metadata"]["request"]["body"]
        assert httpx.post(f"{url}/loki/api/v1/push", json=push).status_code == 204
        loki.fail_next(Fault.connection_refused())
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{url}/loki/api/v1/push", json=push)
        query = {"query": '{app="rec"} | user_id="u-42"', "start": "0", "limit": "10"}
        result = httpx.get(f"{url}/loki/api/v1/query_range", params=query).json()["data"]["result"]
    assert result[0]["stream"]["session_id"] == "s-7"
    assert loki.lines() == ['{"query": "삼성전자는 왜 떨어졌나"}']


def test_the_double_in_the_wheel_selects_streams_and_leaves_logql_queries_to_an_engine() -> None:
    loki = RecordedLoki(clock=lambda: RECORDED_NOW)
    _push_lines(
        loki,
        [
            ({"app": "querylog", "env": "prod", "event": "query_completed"}, "a", {}),
            ({"app": "querylog", "env": "dev", "event": "query_failed"}, "b", {}),
            ({"app": "other", "env": "prod", "event": "x"}, "c", {}),
        ],
    )
    assert loki.lines('{app="querylog"}') == ["a", "b"]
    assert loki.lines('{app="querylog", event=~"query_.*", env!="dev"}') == ["a"]
    assert loki.lines('{app!~"query.*"}') == ["c"]
    with pytest.raises(ValueError, match="stream selector"):
        loki.lines('app="querylog"')
    client = httpx.Client(transport=loki.transport(), base_url="http://l")
    series = client.get("/loki/api/v1/series", params={"match[]": '{event="x"}', "start": "0"})
    assert series.json()["data"] == [{"app": "other", "env": "prod", "event": "x", "service_name": "other"}]
    assert client.get("/loki/api/v1/series", params={"match[]": "{event=x}", "start": "0"}).status_code == 400
    query = client.get("/loki/api/v1/query_range", params={"query": '{app="querylog"}', "start": "0"})
    assert query.status_code == 501 and "query_engine" in query.text


def test_the_recorded_now_matches_the_too_old_answer() -> None:
    # Guards the constant the contract test relies on: cutoff = now − 7 days, printed to the second.
    body = _cases()["too_old_sample"]["response"]["body"]
    cutoff = re.search(r"oldest acceptable timestamp is: (\S+)\n", body)
    assert cutoff is not None
    now = datetime.fromtimestamp(RECORDED_NOW, UTC) - timedelta(days=7)
    assert now.strftime("%Y-%m-%dT%H:%M:%SZ") == cutoff.group(1)
