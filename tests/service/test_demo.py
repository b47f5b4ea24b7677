"""The demo workload reads as Korean users write: the topic particle agrees with the name before it."""

from __future__ import annotations

from querylog.service.demo import COMPANIES, demo_queries, topic_particle


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
