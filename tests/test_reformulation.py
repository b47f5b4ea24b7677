"""One reformulation rule, two places: the metrics fold (the Grafana panel) and the lake's `queries` view (the
report and the explorer) count the same reformulations, by the same intent, for any sessions."""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from querylog.analytics.aliases import STARTER, load_aliases
from querylog.analytics.queries import LakeQueries, open_catalog
from querylog.logging.events import NOT_CAPTURED, Event, IntentClassified, QueryCompleted, QueryReceived
from querylog.logging.metrics import MetricsProjection
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch
from querylog.logging.reformulation import Names, asked, reformulates, sql_columns

T0 = datetime(2026, 11, 2, tzinfo=UTC)
NAMES = Names(load_aliases(STARTER).canonical_by_key())
#: Texts that are, and are not, the same question in other words; a session draws from one group.
GROUPS = [
    [
        "삼성전자",
        "Samsung Electronics",
        "삼전 주가 어때",
        "삼성전자 주가",
        "삼성전자 주가 전망은?",
        "삼성전자 배당 일정",
    ],
    ["카카오 금리", "카카오뱅크 금리", "카카오 주가", "카카오뱅크 실적 발표"],
    ["네이버 실적", "네이버 실적 발표 언제", "NVIDIA news", "nvidia  NEWS today", "환율", "삼성 전자주가"],
    ["price target for Kakao?", "price target for NAVER", "how do I reset my password", "카카오뱅크 kakao bank", "a"],
]


@st.composite
def sessions(draw: st.DrawFn) -> list[Event]:
    events: list[tuple[datetime, int, Event]] = []
    n = 0
    said = draw(st.sampled_from(GROUPS))
    for s in range(draw(st.integers(1, 4))):
        at = T0 + timedelta(seconds=draw(st.integers(0, 600)))
        for _ in range(draw(st.integers(1, 5))):
            query_id = f"q{n:03d}"
            n += 1
            intent = draw(st.sampled_from(["stock_price", "news", None]))
            events.append(
                (
                    at,
                    n,
                    QueryReceived(query_id=query_id, query_text=draw(st.sampled_from(said)), session_id=f"s{s}", ts=at),
                )
            )
            if intent is not None and draw(st.booleans()):
                events.append(
                    (
                        at + timedelta(seconds=1),
                        n,
                        IntentClassified(
                            query_id=query_id, intent=intent, confidence=0.9, ts=at + timedelta(seconds=1)
                        ),
                    )
                )
            events.append(
                (
                    at + timedelta(seconds=2),
                    n,
                    QueryCompleted(query_id=query_id, intent=intent, latency_ms=5.0, ts=at + timedelta(seconds=2)),
                )
            )
            at += timedelta(seconds=draw(st.sampled_from([3, 60, 298, 302, 900])))
    return [e for _, _, e in sorted(events, key=lambda x: (x[0], x[1]))]


def _lake_counts(events: list[Event], names: Names | None) -> Counter[str]:
    """Reformulated queries by intent, as the lake's `queries` view counts them (intents without any left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        with ParquetSink(lake) as sink:
            sink.write(Batch(events=events, checkpoint={"all": len(events)}))
        with open_catalog(lake, names=names) as catalog:
            frame = LakeQueries(catalog).reformulation_by_intent()
    # A query without an intent is `unclassified` in the lake's frames and in the metrics' label alike.
    return +Counter({row["intent"]: row["reformulated"] for row in frame.iter_rows(named=True)})


def _folded(events: list[Event], names: Names | None) -> Counter[str]:
    projection = MetricsProjection(names=names)
    projection.apply(events)
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(projection.exposition().decode()):
        if family.name == "querylog_reformulated_queries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["intent"]] += int(sample.value)
    return counts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=sessions(), split=st.integers(0, 100), names=st.sampled_from([None, NAMES]))
def test_the_metric_counts_what_the_lake_counts(events: list[Event], split: int, names: Names | None) -> None:
    lake_counts = _lake_counts(events, names)
    assert _folded(events, names) == lake_counts
    # A restart from a snapshot taken anywhere gives the same counts as one uninterrupted fold.
    cut = split * len(events) // 100
    first = MetricsProjection(names=names)
    first.apply(events[:cut])
    second = MetricsProjection(names=names)
    second.restore_state(first.export_state())
    second.apply(events[cut:])
    assert second.exposition() == _exposition(events, names)


def _exposition(events: list[Event], names: Names | None) -> bytes:
    projection = MetricsProjection(names=names)
    projection.apply(events)
    return projection.exposition()


@pytest.mark.parametrize(
    ("first", "then", "again"),
    [
        ("NVIDIA news", "nvidia  NEWS", True),  # case and spacing aside
        ("삼성전자 주가", "삼성 전자주가", True),
        ("네이버 주가 전망은?", "네이버 주가 전망 알려줘", True),
        ("네이버 실적", "환율", False),
        ("삼성전자 주가", "삼전 주가 어때", True),  # the same company in other words, the same question
        ("삼성전자", "Samsung Electronics", True),  # only the name, said again another way
        ("삼성전자 주가 전망", "삼성전자 배당 일정", False),  # a new question about the same company
        ("카카오 금리", "카카오뱅크 금리", True),  # the characters alone say it (카카오뱅크 is another company)
        ("카카오 주가", "카카오뱅크 실적 발표", False),
        ("네이버 주가", "카카오 주가", False),  # another company
        # English: sets of letters made any two sentences alike; pairs of letters do not.
        ("How do I reset my password?", "What are your opening hours?", False),
        ("how do I reset my password", "how to reset password?", True),
        ("What is the price target for Kakao?", "What is the price target for NAVER?", False),
        ("And what about Hyundai Motor news?", "Latest news about NAVER", False),
        # A long name no longer makes a new question about its company the same one.
        ("LG에너지솔루션 경쟁사는?", "LG에너지솔루션 관련 기사 더 있어?", False),
        # Where Python and DuckDB lower case differently: each side as the other.
        ("İade", "iade", True),
        ("ΑΣ", "ασ", True),
        # An instrumentation that captured no question: the placeholder is no text, not the same question twice.
        (NOT_CAPTURED, NOT_CAPTURED, False),
    ],
)
def test_the_rule(first: str, then: str, again: bool) -> None:
    assert reformulates(asked(first, NAMES), asked(then, NAMES)) is again
    # The lake's SQL and the metrics fold say the same, for these two asked 10 s apart in one session.
    events: list[Event] = []
    for i, text in enumerate((first, then)):
        at = T0 + timedelta(seconds=10 * i)
        events.append(QueryReceived(query_id=f"q{i}", query_text=text, session_id="s", ts=at))
        events.append(QueryCompleted(query_id=f"q{i}", intent="news", latency_ms=5.0, ts=at + timedelta(seconds=1)))
    expected = Counter({"news": 1} if again else {})
    assert _folded(events, NAMES) == expected
    assert _lake_counts(events, NAMES) == expected


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab Z?1네이버한\u0301\t\x0b\U0001f600İΣς"), max_size=12)
    | st.text(max_size=12)
)
def test_the_lake_reads_a_text_into_the_tokens_the_fold_does(text: str) -> None:
    import duckdb

    expression = dict(sql_columns("t", None)[0])["_tokens"]
    with duckdb.connect() as con:  # its own: the module's default connection is shared with other tests
        [(tokens,)] = con.execute(f"SELECT {expression} FROM (SELECT ? AS t)", [text]).fetchall()
    assert set(tokens) == asked(text).tokens


def test_without_names_only_characters_count() -> None:
    assert not reformulates(asked("삼성전자"), asked("Samsung Electronics"))
    assert not reformulates(asked(""), asked(""))


def test_erasing_a_query_forgets_its_text_in_the_fold() -> None:
    projection = MetricsProjection()
    projection.apply([QueryReceived(query_id="q1", query_text="삼성전자 주가", session_id="s", ts=T0)])
    assert projection.export_state()["asked"]
    projection.forget_queries(["q1"])
    assert projection.export_state()["asked"] == []
    projection.apply(
        [QueryReceived(query_id="q2", query_text="삼성전자 주가 전망", session_id="s", ts=T0 + timedelta(seconds=5))]
    )
    assert "querylog_reformulated_queries_total{" not in projection.exposition().decode()  # no series: q1 is gone
