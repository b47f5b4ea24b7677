"""The benchmarks' workload: Korean/English/mixed finance questions, their intents, and real event logs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Final

import msgspec

from querylog.logging.events import Event, QueryReceived
from querylog.logging.segments import EventLog
from querylog.logging.tracker import Emitter, QueryTracker
from querylog.service.demo import COMPANIES as DEMO_COMPANIES
from querylog.service.intents import classify

__all__ = ["COMPANIES", "query_texts", "text_intents", "write_log"]

# The demo's companies and a few more, so a 10M-event lake has a long tail of names to search for.
COMPANIES: Final = (
    *DEMO_COMPANIES,
    ("셀트리온", "Celltrion"),
    ("포스코홀딩스", "POSCO Holdings"),
    ("기아", "Kia"),
    ("삼성바이오로직스", "Samsung Biologics"),
    ("마이크로소프트", "Microsoft"),
    ("아마존", "Amazon"),
)
_KO: Final = (
    "{c} 주가 전망은?",
    "{c}는 왜 떨어졌나요",
    "{c} 실적 발표 언제야",
    "{c} 최근 뉴스 알려줘",
    "{c}의 목표주가는 얼마인가요?",
    "{c} 대표가 누구야",
    "{c} 사업 구조 설명해줘",
    "{c} 배당금 얼마야",
    "{c} 외국인 매수 동향",
    "{c} 오늘 왜 올랐어?",
    "{c} PER 몇이야",
    "{c} 관련 기사 더 있어?",
    "그럼 {c} 매수해도 될까?",
    "{c} 경쟁사는?",
    "환율이 {c}에 미치는 영향",
)
_EN: Final = (
    "What is the price target for {e}?",
    "Latest news about {e}",
    "Should I buy {e} stock now?",
    "How did {e} earnings look this quarter?",
    "What does {e} do?",
    "Why did {e} drop today?",
    "{e} dividend yield",
    "Who is the CEO of {e}?",
)
_MIXED: Final = ("{e} 주가 어때?", "{c} stock forecast", "{e} 실적 news", "{c} earnings 언제?")
_MARKET: Final = (
    "오늘 코스피 시장 어때?",
    "코스닥 지수 전망",
    "미국 금리 인상 영향은?",
    "How is the KOSPI index doing today?",
    "What moved the market today?",
    "반도체 업황 어때",
    "원달러 환율 전망",
)
_SUFFIXES: Final = ("", "", "", " 지금", " 오늘", " 이번 주", " 2025년", " please", " 요약해줘", " 간단히")


def query_texts(n_distinct: int, *, seed: int = 7) -> list[str]:
    """`n_distinct` different questions (templates × companies × suffixes, then numbered variants)."""
    rng = random.Random(seed)
    base: list[str] = list(_MARKET)
    for ko, en in COMPANIES:
        base += [t.format(c=ko) for t in _KO] + [t.format(e=en) for t in _EN] + [t.format(c=ko, e=en) for t in _MIXED]
    texts: list[str] = []
    seen: set[str] = set()
    for suffix in _SUFFIXES:
        for text in base:
            candidate = text + suffix
            if candidate not in seen:
                seen.add(candidate)
                texts.append(candidate)
    rng.shuffle(texts)
    i = 0
    while len(texts) < n_distinct:
        # Past the templates: the same questions with a number in them, as users ask about quarters and prices.
        candidate = f"{base[i % len(base)]} {rng.randint(1, 4)}분기 {rng.randint(1, 999)}"
        if candidate not in seen:
            seen.add(candidate)
            texts.append(candidate)
        i += 1
    return texts[:n_distinct]


@lru_cache(maxsize=8)
def text_intents(texts: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """The service's own classifier's verdict for each text: intents consistent with the questions."""
    out = []
    for text in texts:
        verdict = classify(text)
        out.append((str(verdict.intent), float(verdict.confidence)))
    return tuple(out)


class _Paced:
    """An emitter that dates each query's events at a steady rate of event time, `rate_qps` queries a second from
    `start` (a query's events a millisecond apart): the history of a service with steady traffic, not of one that
    served it all in the seconds the bench takes to write it."""

    def __init__(self, log: EventLog, *, start: datetime, rate_qps: float) -> None:
        self.log, self.start, self.rate_qps = log, start, rate_qps
        self._query, self._step = -1, 0

    def append(self, event: Event) -> None:
        if isinstance(event, QueryReceived):
            self._query, self._step = self._query + 1, 0
        ts = self.start + timedelta(seconds=self._query / self.rate_qps, milliseconds=self._step)
        self._step += 1
        self.log.append(msgspec.structs.replace(event, ts=ts))

    def flush(self) -> None:
        self.log.flush()


def write_log(
    log_dir: Path, n_events: int, *, seed: int = 11, failure_rate: float = 0.03, rate_qps: float | None = None
) -> int:
    """Write about `n_events` real events through QueryTracker into an EventLog at `log_dir`. Returns the count.
    With `rate_qps`, the events are dated at that many queries a second, ending about now (`_Paced`); otherwise
    they carry the time they were written."""
    rng = random.Random(seed)
    texts = tuple(query_texts(2000, seed=seed))
    verdicts = text_intents(texts)
    written = 0
    with EventLog(log_dir, fsync="never") as log:
        emitter: Emitter = log
        if rate_qps is not None:
            span = timedelta(seconds=n_events / 4.9 / rate_qps)  # about 4.9 events a query (3% fail with 4)
            emitter = _Paced(log, start=datetime.now(UTC) - span, rate_qps=rate_qps)
        tracker = QueryTracker(emitter, service="chat-api", env="bench")
        i = 0
        while written < n_events:
            k = min(len(texts) - 1, int(rng.paretovariate(1.2)) - 1)  # a few questions are asked very often
            text, (intent, confidence) = texts[k], verdicts[k]
            fail = rng.random() < failure_rate
            try:
                with tracker.query(text, session_id=f"s-{i // 4}", user_id=f"u-{rng.randint(1, 5000)}") as q:
                    q.classified(intent, confidence, duration_ms=rng.lognormvariate(0.0, 0.5))
                    cache_hit = rng.random() < 0.3
                    q.searched(
                        rng.randint(0, 10),
                        cache_hit=cache_hit,
                        top_score=rng.uniform(0.5, 12.0),
                        duration_ms=rng.lognormvariate(0.5 if cache_hit else 2.5, 0.6),
                    )
                    if fail:
                        raise TimeoutError("LLM request timed out after 30s")
                    q.responded(
                        system="openai",
                        model=rng.choice(("gpt-4o-mini", "gpt-4o", "local-echo")),
                        input_tokens=rng.randint(200, 3000),
                        output_tokens=rng.randint(20, 800),
                        quality_score=round(rng.betavariate(5, 2), 3),
                        answer_chars=rng.randint(80, 2400),
                        duration_ms=rng.lognormvariate(6.5, 0.7),
                    )
            except TimeoutError:
                written += 4
            else:
                written += 5
            i += 1
    return written
