"""Log trimming: what is deleted, what a projection that is behind holds back, and what the cap does."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from querylog.logging.events import QueryReceived
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.trim import Holder, SegmentInfo, plan_trim, segment_infos, trim_log

_NOW = 1_000_000.0
_DAY = 86_400.0


def _segment(name: str, *, age_s: float, size: int = 100, finished: bool = True) -> SegmentInfo:
    return SegmentInfo(
        name=name, size=size, whole=size, mtime=_NOW - age_s, created=_NOW - age_s - 60, finished=finished
    )


_OLD = _segment("a", age_s=3 * _DAY)
_MIDDLE = _segment("b", age_s=2 * _DAY)
_NEW = _segment("c", age_s=3_600)
_ACTIVE = _segment("d", age_s=0, finished=False)
_ALL = [_OLD, _MIDDLE, _NEW, _ACTIVE]


def _read_all(*segments: SegmentInfo) -> dict[str, int]:
    return {s.name: s.whole for s in segments}


def _deleted(holders: list[Holder], *, retention_s: float = _DAY, max_bytes: int | None = None) -> list[str]:
    plan = plan_trim(_ALL, holders, retention_s=retention_s, max_bytes=max_bytes, now=_NOW)
    return [s.name for s in plan.delete]


def test_segments_every_holder_has_read_are_deleted_once_past_the_retention() -> None:
    everything = _read_all(*_ALL)
    holders = [Holder("parquet", everything), Holder("loki", everything)]
    assert _deleted(holders) == ["a", "b"]
    assert _deleted(holders, retention_s=0) == ["a", "b", "c"]  # the active segment never
    assert _deleted(holders, retention_s=7 * _DAY) == []


def test_a_holder_that_is_behind_holds_the_log_back_and_says_how_far() -> None:
    behind = Holder("loki", {"a": _OLD.whole, "b": _MIDDLE.whole - 1})
    plan = plan_trim(_ALL, [Holder("parquet", _read_all(*_ALL)), behind], retention_s=0, max_bytes=None, now=_NOW)
    assert [s.name for s in plan.delete] == ["a"]
    assert plan.behind_seconds["loki"] == _NOW - _MIDDLE.mtime
    assert plan.behind_seconds["parquet"] == 0.0
    assert _deleted([Holder("parquet", None)], retention_s=0) == []  # committed nothing yet: holds all


def test_a_torn_tail_is_not_needed_a_torn_segment_read_to_its_last_line_is_done() -> None:
    torn = SegmentInfo(name="t", size=150, whole=120, mtime=_NOW - _DAY, created=_NOW - _DAY - 60, finished=True)
    plan = plan_trim([torn], [Holder("parquet", {"t": 120})], retention_s=0, max_bytes=None, now=_NOW)
    assert [s.name for s in plan.delete] == ["t"]


def test_past_the_cap_segments_the_lake_has_go_whatever_their_age_and_the_others_losses_are_counted() -> None:
    lake = Holder("parquet", _read_all(_OLD, _MIDDLE, _NEW))
    stopped = Holder("loki", {})
    plan = plan_trim(_ALL, [lake, stopped], retention_s=7 * _DAY, max_bytes=150, now=_NOW)
    assert [s.name for s in plan.delete] == ["a", "b", "c"]  # oldest first, until under the cap
    assert plan.forced == {"loki": 3} and plan.kept_bytes == 100 and not plan.over_cap


def test_past_the_cap_nothing_the_lake_lacks_is_deleted_and_the_plan_says_over_cap() -> None:
    lake = Holder("parquet", _read_all(_OLD))
    plan = plan_trim(_ALL, [lake], retention_s=7 * _DAY, max_bytes=150, now=_NOW)
    assert [s.name for s in plan.delete] == ["a"]
    assert plan.over_cap and plan.kept_bytes == 300


def test_a_segment_created_a_moment_ago_is_never_taken_for_a_finished_one() -> None:
    fresh = SegmentInfo(name="f", size=0, whole=0, mtime=_NOW, created=_NOW - 0.5, finished=True)
    assert plan_trim([fresh], [Holder("parquet", {})], retention_s=0, max_bytes=None, now=_NOW).delete == ()


def test_on_disk_the_writers_segment_stays_and_finished_read_ones_go(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    for _ in range(3):  # three writers one after the other: three finished segments
        with EventLog(directory) as log:
            log.append(QueryReceived(query_id="q", query_text="삼성전자"))
    with EventLog(directory) as live:
        live.append(QueryReceived(query_id="q", query_text="live"))
        live.flush()
        assert not any(i.finished for i in segment_infos(directory))  # just created: not even looked at
        infos = segment_infos(directory, now=time.time() + 60)
        assert [i.finished for i in infos] == [True, True, True, False]  # the live writer's is locked
        read = LogReader(directory).end_checkpoint()
        later = max(i.created for i in infos) + 3_600
        plan = trim_log(directory, [Holder("parquet", read)], retention_s=0, now=later)
        assert len(plan.delete) == 3
        assert [p.name for p in LogReader(directory).segments()] == [live.segment.name]  # type: ignore[union-attr]
        live.append(QueryReceived(query_id="q2", query_text="after the trim"))
        live.flush()
    assert [line for batch in LogReader(directory).iter_all() for line in batch.lines][-1].count(b"after the trim")


@pytest.mark.parametrize("checkpoint", [None, {}])
def test_on_disk_nothing_unread_is_deleted(tmp_path: Path, checkpoint: dict[str, int] | None) -> None:
    directory = tmp_path / "log"
    with EventLog(directory) as log:
        log.append(QueryReceived(query_id="q", query_text="x"))
    later = segment_infos(directory, now=time.time() + 60)[0].created + 30 * _DAY
    assert trim_log(directory, [Holder("parquet", checkpoint)], retention_s=0, now=later).delete == ()
    assert len(LogReader(directory).segments()) == 1
