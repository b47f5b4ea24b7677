"""Metrics snapshots: a restarted fold serves the totals at once, folds only what came after, never goes back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from querylog.logging.metrics import MetricsProjection
from querylog.logging.metrics_snapshot import load_snapshot, read_published_fold, write_snapshot
from querylog.logging.projection import Projector
from querylog.logging.segments import EventLog, LogReader
from querylog.logging.sinks import MetricsSink
from querylog.logging.telemetry import SinkTelemetry
from querylog.logging.tracker import QueryTracker
from querylog.logging.trim import Holder, trim_log


def _queries(log_dir: Path, n: int, *, intent: str = "stock_analysis") -> None:
    with EventLog(log_dir) as log:
        tracker = QueryTracker(log)
        for i in range(n):
            with tracker.query(f"질문 {i}", session_id="s") as q:
                q.classified(intent, 0.9)
                q.searched(2, cache_hit=i % 2 == 0, top_score=1.0)
                q.responded(model="m", input_tokens=5, output_tokens=7, quality_score=0.5)
            if i % 3 == 0:
                tracker.feedback(q.query_id, 1)


def _fold(log_dir: Path, snapshot: Path | None, **sink: object) -> tuple[MetricsProjection, MetricsSink]:
    projection = MetricsProjection()
    metrics_sink = MetricsSink(projection, snapshot_path=snapshot, log_dir=log_dir, **sink).open()  # type: ignore[arg-type]
    return projection, metrics_sink


def _run(log_dir: Path, sink: MetricsSink) -> None:
    Projector(LogReader(log_dir), sink).catch_up()


def _full(log_dir: Path) -> bytes:
    projection, sink = _fold(log_dir, None)
    _run(log_dir, sink)
    return projection.exposition()


def test_a_restart_serves_the_totals_before_reading_the_log_and_then_folds_only_the_rest(tmp_path: Path) -> None:
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 30)
    first, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    sink.close()  # writes the snapshot
    assert load_snapshot(snapshot) is not None
    _queries(log_dir, 12, intent="news_inquiry")
    restarted, sink = _fold(log_dir, snapshot)
    assert restarted.exposition() == first.exposition()  # the first scrape: the totals, not zero
    assert sink.restored_events == sum(1 for b in LogReader(log_dir).iter_all() for _ in b.lines) - 12 * 5 - 4
    before = sink.telemetry.snapshot().sent
    _run(log_dir, sink)
    assert sink.telemetry.snapshot().sent - before == 12 * 5 + 4  # only what came after the snapshot
    assert restarted.exposition() == _full(log_dir)


def test_after_the_log_is_trimmed_the_totals_still_count_every_event(tmp_path: Path) -> None:
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 20)
    expected_before_trim = _full(log_dir)
    projection, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    sink.close()
    covered = load_snapshot(snapshot)
    assert covered is not None
    segments = LogReader(log_dir).segments()
    later = max(int(p.name.split("-")[0]) for p in segments) / 1e9 + 3_600
    assert len(trim_log(log_dir, [Holder("metrics", covered.checkpoint)], retention_s=0, now=later).delete) == 1
    assert LogReader(log_dir).segments() == []
    restarted, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    assert restarted.exposition() == expected_before_trim == projection.exposition()


def test_a_snapshot_behind_the_one_on_disk_never_replaces_it(tmp_path: Path) -> None:
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 5)
    _behind, slow = _fold(log_dir, snapshot)
    Projector(LogReader(log_dir), slow, batch_max_events=3).run_once()  # a slow worker: 3 events in
    _ahead, fast = _fold(log_dir, snapshot)
    _run(log_dir, fast)
    assert fast.snapshot()
    on_disk = load_snapshot(snapshot)
    assert not slow.snapshot()
    assert load_snapshot(snapshot) == on_disk
    assert on_disk is not None and write_snapshot(snapshot, on_disk, log_dir=log_dir)  # the same one: fine


def test_a_snapshot_of_another_configuration_is_ignored_counted_and_the_log_folded_again(tmp_path: Path) -> None:
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 4)
    _, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    sink.close()
    other = MetricsProjection(query_buckets=[0.1, 1.0])
    other_sink = MetricsSink(other, snapshot_path=snapshot, log_dir=log_dir).open()
    assert other_sink.restored_events == 0
    assert other_sink.telemetry.snapshot().fallbacks == {"snapshot_config_changed": 1}
    _run(log_dir, other_sink)
    fresh = MetricsProjection(query_buckets=[0.1, 1.0])
    fresh_sink = MetricsSink(fresh).open()
    _run(log_dir, fresh_sink)
    assert other.exposition() == fresh.exposition()


def test_a_snapshot_folded_under_an_older_releases_rules_is_not_loaded(tmp_path: Path) -> None:
    """An older release scored a query by its completion where this one takes its answer's score: its snapshot,
    loaded, kept the old scores, and `querylog replay metrics` disagreed with /metrics for good after an upgrade."""
    import json

    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 4)
    _, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    sink.close()
    written = json.loads(snapshot.read_bytes())
    assert written["rules"] == 2 and "rules" not in written["config"]  # which a release before compares whole
    del written["rules"]  # as a release before the rules were numbered wrote it
    snapshot.write_text(json.dumps(written))
    restarted, again = _fold(log_dir, snapshot)
    assert again.restored_events == 0
    assert again.telemetry.snapshot().fallbacks == {"snapshot_outdated": 1}
    _run(log_dir, again)
    fresh, fresh_sink = _fold(log_dir, None)
    _run(log_dir, fresh_sink)
    assert restarted.exposition() == fresh.exposition()


def test_export_and_restore_give_the_same_exposition_and_erasure_forgets_open_queries(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    _queries(log_dir, 6)
    with EventLog(log_dir) as log, QueryTracker(log).query("열린 질문", query_id="open-1") as q:  # still open
        q.classified("x", 0.5)
        log.flush()
        projection, sink = _fold(log_dir, None)
        _run(log_dir, sink)
        copy = MetricsProjection()
        copy.restore_state(projection.export_state())
        assert copy.exposition() == projection.exposition()
        assert b"querylog_active_queries 1.0" in copy.exposition()
        assert copy.forget_queries(["open-1", "unknown"]) == 1
        assert b"querylog_active_queries 0.0" in copy.exposition()


def test_a_snapshot_counted_with_other_prices_is_still_loaded_so_no_counter_goes_back(tmp_path: Path) -> None:
    from datetime import date

    from querylog.logging.pricing import Price, PriceTable

    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 3)
    first, sink = _fold(log_dir, snapshot)
    _run(log_dir, sink)
    sink.close()
    corrected = PriceTable("corrected", [Price(model="m", effective_from=date(2020, 1, 1), input=1.0, output=1.0)])
    restarted = MetricsProjection(prices=corrected)
    restarted_sink = MetricsSink(restarted, snapshot_path=snapshot, log_dir=log_dir).open()
    assert restarted_sink.restored_events > 0 and restarted_sink.telemetry.snapshot().fallbacks == {}
    assert restarted.exposition() == first.exposition()


def test_a_published_fold_shows_in_a_mirror_as_the_fold_itself_with_the_mirrors_own_sinks(tmp_path: Path) -> None:
    # QUERYLOG_PROJECTIONS=process: the child folds and publishes; the API process shows what it published.
    log_dir, published = tmp_path / "log", tmp_path / "state" / "metrics-fold.prom"
    _queries(log_dir, 9)
    folded, sink = _fold(log_dir, tmp_path / "state" / "metrics-snapshot.json", exposition_path=published)
    mirror = MetricsProjection()
    mirror.mirror(lambda: read_published_fold(published))
    mirror.add_sink(SinkTelemetry("parquet"))
    assert published.exists()  # published once open, before any batch: the snapshot's totals (none here)
    _run(log_dir, sink)
    # The same families and samples as the fold shows itself, the sinks' series coming from the mirror's own.
    shown = _families(mirror.exposition())
    assert b"covers" not in mirror.exposition()  # the line saying what the publication covers stays in the file
    assert {k: v for k, v in shown.items() if "_sink_" not in k} == _families(folded.fold_exposition())
    assert {k: v for k, v in _families(folded.exposition()).items() if "_sink_" not in k} == {
        k: v for k, v in shown.items() if "_sink_" not in k
    }
    assert shown["querylog_sink_events_sent"] == [("querylog_sink_events_sent_total", {"sink": "parquet"}, 0.0)]
    assert ("querylog_queries_total", {"intent": "stock_analysis", "status": "completed"}, 9.0) in shown[
        "querylog_queries"
    ]
    # Each batch is published: nine more queries show without a restart.
    _queries(log_dir, 9)
    _run(log_dir, sink)
    assert ("querylog_queries_total", {"intent": "stock_analysis", "status": "completed"}, 18.0) in _families(
        mirror.exposition()
    )["querylog_queries"]


def test_a_fold_taking_over_from_an_older_snapshot_publishes_only_once_it_has_caught_up(tmp_path: Path) -> None:
    # Several API workers, one projector child each: one leads the fold; if it dies, another takes over from the
    # newest snapshot, which is older than what the first published. /metrics must never step back meanwhile.
    log_dir, state = tmp_path / "log", tmp_path / "state"
    published = state / "metrics-fold.prom"
    _queries(log_dir, 9)
    _, sink = _fold(log_dir, state / "metrics-snapshot.json", exposition_path=published)
    _run(log_dir, sink)
    sink.close()  # a snapshot at 9 queries
    _queries(log_dir, 9)
    again, sink = _fold(log_dir, state / "metrics-snapshot.json", exposition_path=published)
    _run(log_dir, sink)  # publishes 18; dies before its next snapshot
    mirror = MetricsProjection()
    mirror.mirror(lambda: read_published_fold(published))

    def completed() -> float:
        (value,) = [v for name, labels, v in _families(mirror.exposition())["querylog_queries"] if labels["status"]
                    == "completed"]  # fmt: skip
        return value

    assert completed() == 18
    _, sink = _fold(log_dir, state / "metrics-snapshot.json", exposition_path=published)  # from 9
    assert not sink.publish() and completed() == 18  # behind what is published: it waits
    _run(log_dir, sink)
    assert completed() == 18 and sink.publish()  # caught up: it publishes, the same totals
    assert read_published_fold(published) == again.fold_exposition()


def test_a_mirror_shows_no_fold_before_the_first_publication_rather_than_zeros(tmp_path: Path) -> None:
    mirror = MetricsProjection()
    mirror.mirror(lambda: None)
    shown = _families(mirror.exposition())
    assert "querylog_queries" not in shown and "querylog_events" not in shown  # no counter that starts at 0 again
    assert "querylog_sink_events_sent" in shown  # its own series are there


def test_a_fold_that_cannot_publish_keeps_folding_counts_it_and_says_so_once(tmp_path: Path) -> None:
    log_dir, blocked = tmp_path / "log", tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory should be")
    with structlog.testing.capture_logs() as logs:
        projection, sink = _fold(log_dir, None, exposition_path=blocked / "metrics-fold.prom")
        for _ in range(3):
            _queries(log_dir, 2)
            _run(log_dir, sink)
    assert sink.telemetry.snapshot().errors["publish"] == 4  # at open, then after each batch (a quiet poll: 5 s on)
    assert [entry["event"] for entry in logs].count("metrics_publish_failed") == 1
    assert ("querylog_queries_total", {"intent": "stock_analysis", "status": "completed"}, 6.0) in _families(
        projection.exposition()
    )["querylog_queries"]


def test_a_snapshot_the_disk_refuses_is_counted_each_time_and_said_once_until_it_works_again(tmp_path: Path) -> None:
    """On a full disk `metrics_snapshot_failed` was logged every five seconds, for as long as the disk stayed full."""
    log_dir, blocked = tmp_path / "log", tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    _queries(log_dir, 2)
    with structlog.testing.capture_logs() as logs:
        _, sink = _fold(log_dir, blocked / "metrics-snapshot.json")
        _run(log_dir, sink)
        assert [sink.snapshot() for _ in range(3)] == [False, False, False]
        blocked.unlink()
        assert sink.snapshot()
    events = [entry["event"] for entry in logs]
    assert sink.telemetry.snapshot().errors["snapshot"] == 3
    assert events.count("metrics_snapshot_failed") == 1 and events.count("metrics_snapshot_recovered") == 1


def test_a_publication_the_disk_refused_is_made_again_while_the_log_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a full disk, /metrics showed the last totals published (626 of 722 queries) until the next request came,
    and an empty temporary file stayed beside them."""
    import querylog.logging.projection as projection_module

    log_dir, published = tmp_path / "log", tmp_path / "state" / "metrics-fold.prom"
    _, sink = _fold(log_dir, None, exposition_path=published)
    _queries(log_dir, 2)
    _run(log_dir, sink)
    real_replace = projection_module.os.replace

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(projection_module.os, "replace", full)
    _queries(log_dir, 3)
    _run(log_dir, sink)  # folded, not published
    assert sink.telemetry.snapshot().errors["publish"] >= 1
    assert sorted(p.name for p in published.parent.iterdir()) == ["locks", "metrics-fold.prom"]  # no .tmp left
    monkeypatch.setattr(projection_module.os, "replace", real_replace)
    monkeypatch.setattr("querylog.logging.sinks.PUBLISH_RETRY_S", 0.0)  # its next try is due
    sink.idle()  # no new batch: the quiet log's poll publishes
    mirror = MetricsProjection()
    mirror.mirror(lambda: read_published_fold(published))
    assert ("querylog_queries_total", {"intent": "stock_analysis", "status": "completed"}, 5.0) in _families(
        mirror.exposition()
    )["querylog_queries"]


def _snapshot_edited(log_dir: Path, path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """A fold of three queries snapshotted at `path`, its state then edited by `edit`."""
    import json

    _queries(log_dir, 3)
    _, sink = _fold(log_dir, path)
    _run(log_dir, sink)
    sink.close()
    written = json.loads(path.read_text())
    edit(written["state"])
    path.write_text(json.dumps(written))


def test_a_snapshot_an_older_release_wrote_without_the_cost_series_is_folded_again_not_a_crash(tmp_path: Path) -> None:
    """A snapshot of 2026-12-03 (before the cost and release series) made every start fail with KeyError 'cost':
    the projector child restarted forever, /metrics lost its counters and the lake stopped moving."""
    log_dir, path = tmp_path / "log", tmp_path / "metrics-snapshot.json"

    def older(state: dict[str, Any]) -> None:
        for key in ("cost", "unpriced", "release_queries", "models", "releases"):
            del state[key]

    _snapshot_edited(log_dir, path, older)
    projection, again = _fold(log_dir, path)  # opens: must not raise
    _run(log_dir, again)
    assert again.telemetry.snapshot().fallbacks == {"snapshot_outdated": 1}
    # Set aside: it no longer holds the log's trimming at its end, and the new fold's snapshots replace nothing.
    assert not path.exists() and path.with_name(path.name + ".outdated").exists()
    fresh, sink_from_nothing = _fold(log_dir, None)
    _run(log_dir, sink_from_nothing)
    assert projection.fold_exposition() == fresh.fold_exposition()  # the whole log folded: the same totals


def test_a_damaged_snapshot_is_refused_whole_not_folded_over_half_restored(tmp_path: Path) -> None:
    """Review: a histogram a bucket short raised ValueError after the query counts were replaced, and the fold went
    on over them (6 queries counted for 3). Only a snapshot of an older release is folded over; this one is not."""
    log_dir, path = tmp_path / "log", tmp_path / "metrics-snapshot.json"

    def damaged(state: dict[str, Any]) -> None:
        state["query_duration"][0][2] = state["query_duration"][0][2][:-1]  # a bucket short

    _snapshot_edited(log_dir, path, damaged)
    with pytest.raises(ValueError, match="other buckets"):
        _fold(log_dir, path)


def _families(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Each family of an exposition with its samples; a family named twice would be a broken exposition."""
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        assert family.name not in out, f"{family.name} appears twice"
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def test_an_idle_fold_forgets_what_an_erase_lists_and_snapshots_once_it_has_been_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold with no new lines never looked at the erase's list (the projector skipped the sink), and one that had
    moved wrote its snapshot only on close: the erased session went back into it, and a cap trim counted what it
    had read as lost to it."""
    import querylog.logging.sinks as sinks
    from querylog.logging.forget import ForgetList

    monkeypatch.setattr(sinks, "IDLE_SNAPSHOT_S", 0.0)
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    forget = ForgetList(tmp_path / "state" / "metrics-forget.jsonl")
    with EventLog(log_dir) as log, QueryTracker(log).query("첫 질문", session_id="s-erased") as q:
        q.classified("stock_analysis", 0.9)
    fold = MetricsSink(
        MetricsProjection(), snapshot_path=snapshot, log_dir=log_dir, snapshot_every_s=3600,
        forget=ForgetList(forget.path),
    )  # fmt: skip
    with fold:
        projector = Projector(LogReader(log_dir), fold)
        assert projector.run_once() > 0 and not snapshot.exists()  # folded; its 30-second snapshot not due
        assert projector.run_once() == 0 and b"s-erased" in snapshot.read_bytes()  # idle: snapshotted
        forget.add([q.query_id])  # an erase, while this fold idles
        assert projector.run_once() == 0
        assert b"s-erased" not in snapshot.read_bytes()  # read within a poll, and snapshotted without it


def _events_counted(projection: MetricsProjection) -> float:
    (family,) = [
        f for f in text_string_to_metric_families(projection.exposition().decode()) if f.name == "querylog_events"
    ]
    return sum(s.value for s in family.samples if s.name == "querylog_events_total")


def test_a_standby_taking_the_lead_goes_on_from_the_leaders_snapshot_not_from_where_it_stood(tmp_path: Path) -> None:
    """A standby fold (the projector child of another worker) kept the position it loaded at its own start: after a
    takeover it folded on from there, the log in between trimmed meanwhile, and every counter fell back for good."""
    log_dir, snapshot = tmp_path / "log", tmp_path / "state" / "metrics-snapshot.json"
    _queries(log_dir, 10)
    standby_projection, standby = _fold(log_dir, snapshot)  # opened before the leader wrote any snapshot
    leader_projection, leader = _fold(log_dir, snapshot)
    _run(log_dir, leader)
    _queries(log_dir, 5, intent="news_inquiry")
    _run(log_dir, leader)
    leader.close()  # its last snapshot; then it dies, and housekeeping trims what the snapshot covers
    covered = load_snapshot(snapshot)
    assert covered is not None
    written = sum(len(b.lines) for b in LogReader(log_dir).iter_all())
    later = max(int(p.name.split("-")[0]) for p in LogReader(log_dir).segments()) / 1e9 + 3_600
    assert len(trim_log(log_dir, [Holder("metrics", covered.checkpoint)], retention_s=0, now=later).delete) == 2
    _queries(log_dir, 3)
    written += sum(len(b.lines) for b in LogReader(log_dir).iter_all())
    standby.resume()  # what the projector does on taking the lead
    _run(log_dir, standby)
    assert _events_counted(standby_projection) == written == _events_counted(leader_projection) + 3 * 5 + 1
