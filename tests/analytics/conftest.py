"""Generated lakes for the analytics tests: synthetic Korean/English queries whose true numbers are known."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from querylog.logging.events import (
    AnyEvent,
    FeedbackReceived,
    IntentClassified,
    QueryCompleted,
    QueryFailed,
    QueryReceived,
    ResponseGenerated,
    SearchCompleted,
    Source,
)
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch

TEMPLATES: dict[str, tuple[str, ...]] = {
    "stock_analysis": ("{ko} 주가 전망은?", "What is the price target for {en}?"),
    "news_inquiry": ("{ko} 최근 뉴스 알려줘", "Latest news about {en}"),
    "market_overview": ("오늘 코스피 시장 어때?", "How is the KOSPI index doing today?"),
    "company_info": ("{ko} 대표가 누구야", "What does {en} do?"),
}
COMPANIES = (("삼성전자", "Samsung Electronics"), ("네이버", "NAVER"), ("카카오", "Kakao"), ("엔비디아", "NVIDIA"))
#: Stock questions dominate day 0; news grows every day (a trend the charts should show).
BASE_WEIGHTS = {"stock_analysis": 6, "news_inquiry": 2, "market_overview": 2, "company_info": 2}


@dataclass
class SampleQuery:
    query_id: str
    text: str
    intent: str
    env: str
    session_id: str
    started_at: datetime
    status: str  # completed | failed | in_progress
    latency_ms: float | None = None
    classify_ms: float | None = None
    search_ms: float | None = None
    generate_ms: float | None = None
    result_count: int | None = None
    cache_hit: bool | None = None
    quality_score: float | None = None
    failed_stage: str | None = None
    feedback: int | None = None
    trace_id: str | None = None


@dataclass
class SampleLake:
    home: Path
    lake: Path
    start: datetime
    end: datetime
    queries: list[SampleQuery] = field(default_factory=list)
    events: int = 0

    def truth(self, **where: object) -> list[SampleQuery]:
        return [q for q in self.queries if all(getattr(q, k) == v for k, v in where.items())]


def sample_answer(text: str) -> str:
    """The answer the sample lake records for a query text."""
    return f"{text}: 요약 답변입니다"


def _events_for(q: SampleQuery, rng: random.Random) -> list[AnyEvent]:
    common = {
        "query_id": q.query_id,
        "session_id": q.session_id,
        "user_id": f"u-{q.session_id}",
        "env": q.env,
        "service": "chat",
        "trace_id": q.trace_id,
    }
    t = q.started_at
    out: list[AnyEvent] = [QueryReceived(query_text=q.text, ts=t, **common)]  # type: ignore[arg-type]
    stages = ("classify", "search", "generate")
    fail_at = stages.index(q.failed_stage) if q.failed_stage else None
    if q.status == "in_progress" or fail_at != 0:
        q.classify_ms = round(rng.uniform(2, 10), 3)
        t += timedelta(milliseconds=q.classify_ms)
        out.append(IntentClassified(intent=q.intent, confidence=0.9, duration_ms=q.classify_ms, ts=t, **common))  # type: ignore[arg-type]
    if q.status == "in_progress":
        return out  # classified, never finished
    if fail_at is None or fail_at > 1:
        q.cache_hit = rng.random() < 0.25
        q.result_count = 0 if rng.random() < 0.1 else rng.randint(1, 5)
        q.search_ms = round(rng.uniform(1, 5) if q.cache_hit else rng.uniform(20, 200), 3)
        t += timedelta(milliseconds=q.search_ms)
        sources = tuple(
            Source(doc_id=f"doc-{n}", title=f"{q.text} 관련 기사 {n}", score=round(5.0 - n, 2), rank=n)
            for n in range(1, q.result_count + 1)
        )
        out.append(
            SearchCompleted(
                result_count=q.result_count,
                cache_hit=q.cache_hit,
                duration_ms=q.search_ms,
                sources=sources,
                ts=t,
                **common,  # type: ignore[arg-type]
            )
        )
    if fail_at is None:
        q.generate_ms = round(rng.uniform(300, 3000) * (2.0 if q.intent == "market_overview" else 1.0), 3)
        q.quality_score = round(rng.uniform(0.2, 1.0), 2)
        t += timedelta(milliseconds=q.generate_ms)
        out.append(
            ResponseGenerated(
                gen_ai_system="openai",
                gen_ai_request_model="gpt-4o-mini",
                duration_ms=q.generate_ms,
                quality_score=q.quality_score,
                gen_ai_usage_input_tokens=100,
                gen_ai_usage_output_tokens=50,
                answer_text=sample_answer(q.text),
                answer_chars=len(sample_answer(q.text)),
                finish_reason="stop",
                ts=t,
                **common,
            )
        )  # type: ignore[arg-type]
    q.latency_ms = round((t - q.started_at).total_seconds() * 1000 + 1.0, 3)
    end = q.started_at + timedelta(milliseconds=q.latency_ms)
    if fail_at is None:
        out.append(
            QueryCompleted(
                latency_ms=q.latency_ms,
                intent=q.intent,
                cache_hit=q.cache_hit,
                result_count=q.result_count,
                quality_score=q.quality_score,
                ts=end,
                **common,
            )
        )  # type: ignore[arg-type]
        if q.feedback is not None:
            out.append(FeedbackReceived(score=q.feedback, ts=end + timedelta(seconds=20), **common))  # type: ignore[arg-type]
    else:
        intent = q.intent if fail_at > 0 else None
        out.append(
            QueryFailed(
                error_type="TimeoutError" if fail_at == 2 else "RuntimeError",
                error_message="boom",
                stage=q.failed_stage,
                latency_ms=q.latency_ms,
                intent=intent,
                ts=end,
                **common,
            )
        )  # type: ignore[arg-type]
        if fail_at == 0:
            q.intent = "unclassified"
    return out


def write_sample_lake(
    home: Path,
    *,
    end: datetime,
    days: int = 3,
    hours: tuple[int, ...] = (1, 7, 13, 19),
    per_hour: int = 12,
    files_per_hour: int = 3,
    seed: int = 7,
) -> SampleLake:
    """Write `days` days of queries ending before `end` into ``home/lake``; return the ground truth."""
    rng = random.Random(seed)
    first_day = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    sample = SampleLake(home=home, lake=home / "lake", start=first_day, end=end)
    n = 0
    batches: list[list[AnyEvent]] = []
    for day in range(days + 1):
        weights = dict(BASE_WEIGHTS, news_inquiry=BASE_WEIGHTS["news_inquiry"] + 3 * day)
        for hour in hours:
            hour_start = first_day + timedelta(days=day, hours=hour)
            if hour_start + timedelta(hours=1) > end:
                continue
            hour_events: list[AnyEvent] = []
            session, asked = "", ""
            for k in range(per_hour):
                n += 1
                intent = rng.choices(list(weights), weights=list(weights.values()))[0]
                ko, en = rng.choice(COMPANIES)
                text = rng.choice(TEMPLATES[intent]).format(ko=ko, en=en)
                if k % 3 == 0:
                    session = f"s-{n}"
                elif rng.random() < 0.3 and asked:
                    text, intent = asked  # the user asks the same thing again in the session
                roll = rng.random()
                q = SampleQuery(
                    query_id=f"q-{n:05d}",
                    text=text,
                    intent=intent,
                    env="prod" if rng.random() < 0.8 else "staging",
                    session_id=session,
                    started_at=hour_start + timedelta(minutes=k * 60 / per_hour, seconds=rng.uniform(0, 4)),
                    status="failed" if roll < 0.08 else "in_progress" if roll < 0.1 else "completed",
                    trace_id=f"{n:032x}" if rng.random() < 0.5 else None,
                )
                if q.status == "failed":
                    q.failed_stage = rng.choice(("classify", "search", "generate"))
                if q.status == "completed" and rng.random() < 0.3:
                    q.feedback = rng.choice((-1, 1, 1, 0))
                asked = (text, intent)
                sample.queries.append(q)
                hour_events.extend(_events_for(q, rng))
            size = -(-len(hour_events) // files_per_hour)
            batches.extend(hour_events[i : i + size] for i in range(0, len(hour_events), size))
    with ParquetSink(sample.lake) as sink:
        for i, batch in enumerate(batches):
            sink.write(Batch(events=batch, checkpoint={"generated": i + 1}))
            sample.events += len(batch)
    return sample


def floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


@pytest.fixture(scope="session")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> SampleLake:
    """Three days and a bit of queries ending at the last full hour: read-only, shared by the tests."""
    home = tmp_path_factory.mktemp("sample") / "home"
    return write_sample_lake(home, end=floor_hour(datetime.now(UTC)))


@pytest.fixture(scope="session")
def make_lake() -> Callable[..., SampleLake]:
    """`write_sample_lake`, for tests that need a lake of a particular shape."""
    return write_sample_lake


@pytest.fixture
def fresh_lake(tmp_path: Path) -> SampleLake:
    """A lake of its own for tests that change it (compaction, retention)."""
    return write_sample_lake(tmp_path / "home", end=floor_hour(datetime.now(UTC)) - timedelta(hours=2), per_hour=6)
