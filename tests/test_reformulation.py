"""One reformulation rule, two places: the metrics fold (the Grafana panel) and the lake's `queries` view (the
report and the explorer) count the same reformulations, by the same intent, for any sessions."""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from querylog.analytics.queries import UNCLASSIFIED, LakeQueries, open_catalog
from querylog.logging.events import Event, IntentClassified, QueryCompleted, QueryReceived
from querylog.logging.metrics import MetricsProjection
from querylog.logging.parquet import ParquetSink
from querylog.logging.projection import Batch
from querylog.logging.reformulation import characters, similar

T0 = datetime(2026, 11, 2, tzinfo=UTC)
# Texts that are, and are not, the same question in other words.
TEXTS = [
    "삼성전자 주가",
    "삼성전자 주가 전망은?",
    "삼성 전자주가",
    "네이버 실적",
    "네이버 실적 발표 언제",
    "환율",
    "NVIDIA news",
    "nvidia  NEWS today",
]


@st.composite
def sessions(draw: st.DrawFn) -> list[Event]:
    events: list[tuple[datetime, int, Event]] = []
    n = 0
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
                    QueryReceived(
                        query_id=query_id, query_text=draw(st.sampled_from(TEXTS)), session_id=f"s{s}", ts=at
                    ),
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


_METRIC_INTENT = {UNCLASSIFIED: "unknown", None: "unknown"}


def _folded(events: list[Event]) -> Counter[str]:
    projection = MetricsProjection()
    projection.apply(events)
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(projection.exposition().decode()):
        if family.name == "querylog_reformulated_queries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["intent"]] += int(sample.value)
    return counts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=sessions(), split=st.integers(0, 100))
def test_the_metric_counts_what_the_lake_counts(events: list[Event], split: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        with ParquetSink(lake) as sink:
            sink.write(Batch(events=events, checkpoint={"all": len(events)}))
        with open_catalog(lake) as catalog:
            frame = LakeQueries(catalog).reformulation_by_intent()
    # A query without an intent is `unclassified` in the lake's frames and `unknown` in the metrics (queries_total's
    # label value too).
    rows = frame.iter_rows(named=True)
    lake_counts = Counter({_METRIC_INTENT.get(row["intent"], row["intent"]): row["reformulated"] for row in rows})
    lake_counts = +lake_counts  # intents with none reformulated have no series
    assert _folded(events) == lake_counts
    # A restart from a snapshot taken anywhere gives the same counts as one uninterrupted fold.
    cut = split * len(events) // 100
    first = MetricsProjection()
    first.apply(events[:cut])
    second = MetricsProjection()
    second.restore_state(first.export_state())
    second.apply(events[cut:])
    assert second.exposition() == _exposition(events)


def _exposition(events: list[Event]) -> bytes:
    projection = MetricsProjection()
    projection.apply(events)
    return projection.exposition()


def test_the_rule_ignores_case_and_spacing_and_wants_half_the_characters() -> None:
    assert similar(characters("NVIDIA news"), characters("nvidia  NEWS"))
    assert similar(characters("삼성전자 주가"), characters("삼성 전자주가"))
    assert not similar(characters("네이버 실적"), characters("환율"))
    assert not similar(characters(""), characters(""))


def test_erasing_a_query_forgets_its_text_in_the_fold() -> None:
    projection = MetricsProjection()
    projection.apply([QueryReceived(query_id="q1", query_text="삼성전자 주가", session_id="s", ts=T0)])
    assert projection.export_state()["sessions"]
    projection.forget_queries(["q1"])
    assert projection.export_state()["sessions"] == []
    projection.apply(
        [QueryReceived(query_id="q2", query_text="삼성전자 주가 전망", session_id="s", ts=T0 + timedelta(seconds=5))]
    )
    assert "querylog_reformulated_queries_total{" not in projection.exposition().decode()  # no series: q1 is gone
