"""Reading Loki's push errors: which 400s were partial (the rest stored) and what each refused, and how many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from querylog.logging.loki.rejections import read_push_error

RECORDING = json.loads((Path(__file__).resolve().parents[1] / "data" / "loki-3.4.5.json").read_text())


def _body(name: str) -> str:
    body: str = RECORDING[name]["response"]["body"]
    return body


def test_the_recorded_too_old_answer_is_a_partial_refusal_of_one_entry() -> None:
    verdict = read_push_error(_body("mixed_valid_and_too_old"))
    assert verdict.partial and sum(r.count for r in verdict.rejections) == 1
    (rejection,) = verdict.rejections
    assert rejection.reason == "too_old" and rejection.cutoff == "2026-11-17T01:35:17Z"
    assert rejection.stream == '{app="rec", event="mix", service_name="rec"}'


def test_the_recorded_line_too_long_answer_names_its_reason() -> None:
    verdict = read_push_error(_body("line_too_long"))
    assert verdict.partial and [r.reason for r in verdict.rejections] == ["line_too_long"]


@pytest.mark.parametrize("name", ["timestamp_as_number_rejected", "invalid_label_name", "malformed_json"])
def test_whole_request_errors_are_not_partial(name: str) -> None:
    assert not read_push_error(_body(name)).partial


def test_grouped_errors_are_counted() -> None:
    body = (
        '3 errors like: entry for stream \'{app="a", service_name="a"}\' has timestamp too old: '
        "2026-11-16T01:35:17Z, oldest acceptable timestamp is: 2026-11-17T01:35:17Z; "
        '1 errors like: entry for stream \'{app="a", service_name="a"}\' has timestamp too new: 2026-11-24T09:00:00Z\n'
    )
    verdict = read_push_error(body)
    assert verdict.partial and sum(r.count for r in verdict.rejections) == 4
    assert [(r.reason, r.count) for r in verdict.rejections] == [("too_old", 3), ("too_new", 1)]


def test_a_label_value_holding_a_semicolon_does_not_split_a_message() -> None:
    body = "entry for stream '{app=\"a; b\"}' has timestamp too new: 2026-11-24T09:00:00Z"
    verdict = read_push_error(body)
    assert verdict.partial and verdict.rejections[0].stream == '{app="a; b"}'


def test_an_ingester_refusal_reports_its_total() -> None:
    body = (
        "entry with timestamp 2026-11-23 23:00:00 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp "
        "is: 2026-11-23T23:00:00Z, oldest acceptable timestamp is: 2026-11-24T00:35:17Z',\n"
        'user \'fake\', total ignored: 7 out of 9 for stream: {app="querylog", env="prod", event="query_received", '
        'service_name="querylog"}\n'
    )
    verdict = read_push_error(body)
    assert verdict.partial and sum(r.count for r in verdict.rejections) == 7
    assert verdict.rejections[0].reason == "too_far_behind"
    assert verdict.rejections[0].cutoff == "2026-11-24T00:35:17Z"


def test_an_unknown_message_is_not_partial() -> None:
    assert not read_push_error("something else went wrong\n").partial
    assert not read_push_error("").partial


@given(st.text())
def test_any_body_is_read_without_raising(body: str) -> None:
    read_push_error(body)
