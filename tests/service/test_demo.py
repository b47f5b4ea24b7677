"""The demo workload reads as Korean users write: the topic particle agrees with the name before it."""

from __future__ import annotations

import json

import httpx
import pytest

from querylog.service.demo import COMPANIES, demo_queries, run_demo, topic_particle


def test_the_topic_particle_follows_the_names_last_sound() -> None:
    assert [topic_particle(n) for n in ("애플", "LG에너지솔루션", "삼성전자", "카카오", "NAVER")] == [
        "은", "은", "는", "는", "는",
    ]  # fmt: skip


def test_demo_questions_never_pair_a_name_with_the_wrong_particle() -> None:
    texts = [q.query for q in demo_queries(3_000, seed=11)]
    wrong = [f"{ko}{'는' if topic_particle(ko) == '은' else '은'} " for ko, _ in COMPANIES]
    right = [f"{ko}{topic_particle(ko)} 왜" for ko, _ in COMPANIES]
    assert not [t for t in texts if any(w in t for w in wrong)]
    assert any("애플은 왜" in t for t in texts) and any(r in t for t in texts for r in right)


def test_each_demo_run_asks_the_same_questions_in_sessions_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `make run`s into one data directory used the same session ids: each session went on over both runs
    (86 sessions for 420 queries, 41 with more than four), and the reformulation views counted across them."""
    seen: list[list[tuple[str, str]]] = []

    def chat(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen[-1].append((body["session_id"], body["query"]))
        return httpx.Response(502)  # no query id: no feedback is sent

    for run in ("692d3a00", "692d3a3c"):  # a minute apart
        seen.append([])
        monkeypatch.setattr("querylog.service.demo._run_id", lambda run=run: run)
        with httpx.Client(base_url="http://demo", transport=httpx.MockTransport(chat)) as client:
            run_demo("http://demo", queries=30, concurrency=1, progress=None, client=client)
    first, second = seen
    assert [q for _, q in first] == [q for _, q in second]  # the seed's questions, each run
    assert not {s for s, _ in first} & {s for s, _ in second}


@pytest.mark.parametrize("rate", [0.0, -1.0, 1e-320, 1 / 7200, float("nan"), float("inf")])
def test_a_rate_the_demo_cannot_keep_is_refused_before_any_request(rate: float) -> None:
    """The library call holds the command line's rule: a rate of nan or inf ran flat out, and one far below one
    request an hour ended in a traceback from a wait the clock cannot hold."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    client = httpx.Client(base_url="http://demo.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ValueError, match="at least 1/3600"):
        run_demo("http://demo.test", queries=3, rate=rate, progress=None, client=client)
    assert not sent
