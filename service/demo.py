"""A realistic demo workload for the chat API: Korean/English questions, sessions with follow-ups,
repeated questions (cache hits), a few failures, and users' feedback on some answers."""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, TextIO

import httpx

from querylog.service.generation import FAILURE_MARKER

__all__ = ["MIN_RATE", "DemoQuery", "DemoReport", "demo_queries", "run_demo", "topic_particle"]

#: (Korean, English) names of the companies the demo (and the benchmarks' workload) ask about.
COMPANIES: Final = (
    ("삼성전자", "Samsung Electronics"),
    ("SK하이닉스", "SK Hynix"),
    ("네이버", "NAVER"),
    ("카카오", "Kakao"),
    ("현대차", "Hyundai Motor"),
    ("LG에너지솔루션", "LG Energy Solution"),
    ("애플", "Apple"),
    ("엔비디아", "NVIDIA"),
    ("테슬라", "Tesla"),
)
_KO: Final = (
    "{c} 주가 전망은?",
    "{c}{topic} 왜 떨어졌나요",
    "{c} 실적 발표 언제야",
    "{c} 최근 뉴스 알려줘",
    "{c}의 목표주가는 얼마인가요?",
    "{c} 대표가 누구야",
    "{c} 사업 구조 설명해줘",
    "오늘 코스피 시장 어때?",
    "환율이 {c}에 미치는 영향",
)
_EN: Final = (
    "What is the price target for {e}?",
    "Latest news about {e}",
    "Should I buy {e} stock now?",
    "How did {e} earnings look this quarter?",
    "What does {e} do?",
    "How is the KOSPI index doing today?",
)
_FOLLOW_UPS: Final = ("그럼 {c} 매수해도 될까?", "{c} 관련 기사 더 있어?", "And what about {e} news?", "{c} 경쟁사는?")
#: The slowest rate `run_demo` takes: one request an hour. Slower, a wait between requests overflows the clock.
MIN_RATE: Final = 1 / 3600
#: Feedback a user leaves on an answer, and how often: mostly thumbs up, a real share of thumbs down.
_VERDICTS: Final = ((1, 0.6), (0, 0.15), (-1, 0.25))
_COMMENTS: Final[dict[int, tuple[str | None, ...]]] = {
    1: ("도움이 됐어요", "Helpful, thanks", None, None),
    0: (None,),
    -1: ("답변이 질문과 달라요", "최신 정보가 아니에요", "Not what I asked", None),
}


def topic_particle(name: str) -> str:
    """은 after a final consonant (애플은, LG에너지솔루션은), 는 after a vowel (삼성전자는), as a Korean writes it."""
    last = name[-1]
    if "가" <= last <= "힣":
        return "은" if (ord(last) - ord("가")) % 28 else "는"
    return "는"  # a Latin name or a digit: read as its Korean name would be, most end in a vowel


@dataclass(frozen=True, slots=True)
class DemoQuery:
    query: str
    session_id: str
    user_id: str


@dataclass
class DemoReport:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    #: Of `failed`, the questions that carried ``#fail`` (they fail on purpose); the others failed for a reason.
    failed_on_purpose: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    feedback: int = 0
    feedback_failed: int = 0
    elapsed_s: float = 0.0

    def failures(self) -> str:
        """What failed, in words: ``3 failed (#fail, on purpose)``, with the others by status or error when any."""
        said = f"{self.failed} failed"
        reasons = []
        if self.failed_on_purpose:  # alone, their number is the one said already
            counted = f"{self.failed_on_purpose} " if self.errors else ""
            reasons.append(f"{counted}{FAILURE_MARKER}, on purpose")
        reasons += [f"{n} × {status}" for status, n in self.errors.most_common()]
        return f"{said} ({'; '.join(reasons)})" if reasons else said


def demo_queries(n: int, *, seed: int = 7, failure_rate: float = 0.03, run: str = "") -> Iterator[DemoQuery]:
    """`n` queries in sessions of 1–4 turns; ~15% repeat an earlier question; `failure_rate` carry ``#fail``.
    `run` goes into the session ids (``s-<seed>-<run>-<n>``): a second demo into the same data directory starts
    sessions of its own instead of continuing the first one's (one session over two runs, hours apart)."""
    rng = random.Random(seed)
    asked: list[str] = []
    produced = 0
    session_no = 0
    while produced < n:
        session_no += 1
        session_id = f"s-{seed}-{run}-{session_no}" if run else f"s-{seed}-{session_no}"
        user_id = f"u-{rng.randint(1, max(3, n // 10))}"
        ko, en = rng.choice(COMPANIES)
        for turn in range(rng.randint(1, 4)):
            if produced >= n:
                return
            if asked and rng.random() < 0.15:
                text = rng.choice(asked)
            elif turn == 0:
                template = rng.choice(_KO if rng.random() < 0.65 else _EN)
                text = template.format(c=ko, e=en, topic=topic_particle(ko))
            else:
                text = rng.choice(_FOLLOW_UPS).format(c=ko, e=en)
            if rng.random() < failure_rate:
                text = f"{text} {FAILURE_MARKER}"
            else:
                asked.append(text)
            produced += 1
            yield DemoQuery(query=text, session_id=session_id, user_id=user_id)


def _http_url(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host) and (parsed.port is None or 0 < parsed.port < 65536)


def run_demo(
    url: str,
    *,
    queries: int = 200,
    rate: float | None = None,
    concurrency: int = 8,
    seed: int = 7,
    feedback_rate: float = 0.3,
    progress: TextIO | None = sys.stderr,
    client: httpx.Client | None = None,
) -> DemoReport:
    """Send the workload to `url` (the API's base URL). `rate` caps requests per second (None: as fast as
    `concurrency` allows). A `feedback_rate` share of answered queries get a POST /v1/feedback (-1, 0 or 1),
    drawn from `seed` like the queries. Prints a progress bar to `progress`."""
    if not 0.0 <= feedback_rate <= 1.0:
        raise ValueError(f"feedback_rate must be within [0, 1], got {feedback_rate}")
    if queries < 0:
        raise ValueError(f"queries must be >= 0, got {queries}")
    if rate is not None and not MIN_RATE <= rate < math.inf:
        raise ValueError(f"rate must be a number of requests per second, at least 1/3600 (one an hour), got {rate}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if client is None and not _http_url(url):
        raise ValueError(f"--url must be an http(s) URL such as http://127.0.0.1:8000; got {url!r}")
    report = DemoReport()
    lock = threading.Lock()
    http = client or httpx.Client(base_url=url, timeout=30.0)
    started = time.perf_counter()
    bar = _ProgressBar(queries, progress)

    def send(item: DemoQuery, verdict: tuple[int, str | None] | None) -> None:
        query_id: str | None = None
        try:
            resp = http.post(
                "/v1/chat", json={"query": item.query, "session_id": item.session_id, "user_id": item.user_id}
            )
            outcome: int | str = resp.status_code
            answered = resp.json() if resp.status_code == 200 else {}
            intent, query_id = answered.get("intent"), answered.get("query_id")
        except httpx.HTTPError as exc:
            outcome, intent = type(exc).__name__, None
        feedback_ok: bool | None = None
        if query_id is not None and verdict is not None:
            score, comment = verdict
            try:
                sent = http.post("/v1/feedback", json={"query_id": query_id, "score": score, "comment": comment})
                feedback_ok = sent.status_code == 202
            except httpx.HTTPError:
                feedback_ok = False
        with lock:
            if feedback_ok is True:
                report.feedback += 1
            elif feedback_ok is False:
                report.feedback_failed += 1
            report.sent += 1
            if outcome == 200:
                report.ok += 1
                report.intents[str(intent)] += 1
            elif item.query.endswith(FAILURE_MARKER) and outcome == 502:  # its simulated failure, not another
                report.failed += 1
                report.failed_on_purpose += 1
            else:
                report.failed += 1
                report.errors[str(outcome)] += 1
            bar.update(report.sent)

    pacer = _pacer(rate)
    # A generator of its own, so that adding feedback left the query sequence of a given seed unchanged.
    feedback_rng = random.Random(f"feedback-{seed}")
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for item in demo_queries(queries, seed=seed, run=_run_id()):
                pacer()
                pool.submit(send, item, _verdict(feedback_rng, feedback_rate))
    finally:
        if client is None:
            http.close()
    report.elapsed_s = time.perf_counter() - started
    bar.done()
    return report


def _run_id() -> str:
    """This run, for its session ids: the millisecond it started, in hex (the same texts each run, own sessions)."""
    return f"{time.time_ns() // 1_000_000:x}"


def _verdict(rng: random.Random, rate: float) -> tuple[int, str | None] | None:
    """Whether an answer gets feedback, and which: drawn for every query so the draws depend on the seed only."""
    gives, pick = rng.random(), rng.random()
    score = rng.choices([s for s, _ in _VERDICTS], weights=[w for _, w in _VERDICTS])[0]
    comments = _COMMENTS[score]
    return (score, comments[int(pick * len(comments))]) if gives < rate else None


def _pacer(rate: float | None) -> Callable[[], None]:
    if rate is None:
        return lambda: None
    interval = 1.0 / rate
    next_at = time.perf_counter()

    def wait() -> None:
        nonlocal next_at
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the workload itself, not waiting for a result
        next_at = max(next_at + interval, time.perf_counter() - interval)

    return wait


class _ProgressBar:
    """A bar redrawn in place on a terminal; elsewhere (a pipe, a log file, CI), a plain line every tenth."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        self.terminal = stream is not None and stream.isatty()
        self._last = -1

    def update(self, done: int) -> None:
        if self.stream is None or self.total == 0:
            return
        pct = done * 100 // self.total
        if not self.terminal:
            pct -= pct % 10
        if pct == self._last:
            return
        self._last = pct
        if self.terminal:
            filled = pct * 30 // 100
            self.stream.write(f"\r  demo [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
        elif pct:
            self.stream.write(f"  demo: {done}/{self.total} queries sent\n")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.total and self.terminal:
            self.stream.write("\n")
            self.stream.flush()
