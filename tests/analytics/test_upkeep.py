"""Lake upkeep: compaction never loses or doubles an event (readers mid-way and crashes included); retention drops
whole days, from the lake and the search index; the index is fed exactly the queries it lacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from querylog.analytics.catalog import Catalog, CatalogError
from querylog.analytics.queries import LakeQueries, open_catalog
from querylog.analytics.upkeep import (
    DAY_FILE_PREFIX,
    HourPartition,
    LakeCompactor,
    LakeSearch,
    UpkeepError,
    apply_retention,
    exchange_directories,
    retention_boundary,
)
from querylog.cli import main
from querylog.logging.events import QueryCompleted, QueryReceived
from querylog.logging.parquet import LAKE_SCHEMA, ParquetSink
from querylog.logging.projection import Batch

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake

STEPS = ("merged", "journaled", "swapped", "returned", "done")


def _census(lake: Path) -> tuple[int, int, int]:
    """(events, distinct event ids, an order-free checksum of the ids) as a reader of the lake sees them."""
    with Catalog(lake) as cat:
        _, rows = cat.query("SELECT count(*), count(DISTINCT event_id), coalesce(sum(hash(event_id)), 0) FROM events")
    return rows[0]


def _queries(lake: Path) -> list[tuple[Any, ...]]:
    with Catalog(lake) as cat:
        return cat.query("SELECT * FROM queries ORDER BY query_id")[1]


def _files(lake: Path) -> list[Path]:
    return sorted((lake / "events").glob("date=*/hour=*/*.parquet"))


class SimulatedCrashError(Exception):
    """Stands for the process dying at a step."""


def test_compaction_merges_each_closed_hour_into_one_file_without_changing_any_answer(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before, queries_before = _census(lake), _queries(lake)
    partitions_before = {p.parent for p in _files(lake)}
    assert len(_files(lake)) > len(partitions_before)  # the generator writes several files an hour
    progress: list[tuple[int, int, str]] = []
    report = LakeCompactor(lake, progress=lambda *a: progress.append(a)).run()
    assert _census(lake) == before == (fresh_lake.events, fresh_lake.events, before[2])
    assert _queries(lake) == queries_before
    assert {p.parent for p in _files(lake)} == partitions_before
    assert len(_files(lake)) == len(partitions_before)
    assert all(p.name.startswith("compacted-") for p in _files(lake))
    assert report.events == fresh_lake.events
    assert report.files_after == report.partitions == len(progress)
    assert progress[-1][:2] == (len(progress), len(progress))
    assert not (lake / "_querylog" / "compact").exists() or not any((lake / "_querylog" / "compact").iterdir())
    # A second run finds nothing to do.
    assert LakeCompactor(lake).run().partitions == 0


def test_a_reader_at_any_step_sees_every_event_exactly_once(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    seen: dict[str, list[tuple[int, int, int]]] = {}

    def read(step: str, partition: HourPartition) -> None:
        if len(seen.get(step, ())) < 3:  # three partitions are proof enough, and keep the test fast
            seen.setdefault(step, []).append(_census(lake))

    LakeCompactor(lake, on_step=read).run()
    assert set(seen) == set(STEPS)
    assert all(census == before for censuses in seen.values() for census in censuses)


def test_readers_running_alongside_compaction_never_get_a_wrong_count(fresh_lake: SampleLake) -> None:
    """Free-running readers: an answer is exact, or the query fails (a file it listed was swapped away)."""
    lake = fresh_lake.lake
    before = _census(lake)
    answers: list[tuple[int, int, int]] = []
    failures: list[str] = []
    done = threading.Event()

    cat = Catalog(lake)  # opened here: opening binds the view, which lists files too

    def reader() -> None:
        while not done.is_set() or not answers:
            try:
                answers.append(
                    cat.query(
                        "SELECT count(*), count(DISTINCT event_id), coalesce(sum(hash(event_id)), 0) FROM events"
                    )[1][0]
                )
            except CatalogError as exc:
                failures.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        LakeCompactor(lake).run()
    finally:
        done.set()
        thread.join(timeout=60)
        cat.close()
    assert answers
    assert set(answers) == {before}
    assert all("No such file" in f for f in failures), failures


def test_the_query_layer_retries_a_query_that_lost_the_race(fresh_lake: SampleLake) -> None:
    """What the explorer, report and search use: a swapped-away file makes them list again, not fail."""
    lake = fresh_lake.lake
    results: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set() or not results:
            try:
                with open_catalog(lake) as cat:  # opening lists the lake too
                    results.append(LakeQueries(cat, snapshot=True).summary().queries)
            except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        LakeCompactor(lake).run()
    finally:
        done.set()
        thread.join(timeout=60)
    assert errors == []
    assert set(results) == {len(fresh_lake.queries)}


@pytest.mark.parametrize("step", STEPS[:-1])
def test_a_crash_at_any_step_is_repaired_without_loss_or_doubles(fresh_lake: SampleLake, step: str) -> None:
    lake = fresh_lake.lake
    before, queries_before = _census(lake), _queries(lake)

    def crash(at: str, partition: HourPartition) -> None:
        if at == step:
            raise SimulatedCrashError(at)

    with pytest.raises(SimulatedCrashError):
        LakeCompactor(lake, on_step=crash).run()
    assert _census(lake) == before  # even before any repair, readers are right
    assert LakeCompactor(lake).recover() == 1
    assert _census(lake) == before
    assert not any((lake / "_querylog" / "compact").iterdir())
    LakeCompactor(lake).run()
    assert _census(lake) == before
    assert _queries(lake) == queries_before


@pytest.mark.slow
@pytest.mark.parametrize("step", ["journaled", "swapped"])
def test_a_killed_process_is_repaired_by_the_next_run(fresh_lake: SampleLake, step: str) -> None:
    """A real crash: the process exits on the spot, no finally blocks, no cleanup."""
    lake = fresh_lake.lake
    before = _census(lake)
    script = textwrap.dedent(
        f"""
        import os
        from querylog.analytics.upkeep import LakeCompactor
        def die(at, partition):
            if at == {step!r}:
                os._exit(9)
        LakeCompactor({str(lake)!r}, on_step=die).run()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert _census(lake) == before
    report = LakeCompactor(lake).run()  # repairs first, then compacts the rest
    assert report.recovered == 1
    assert _census(lake) == before


def _late_event(partition: HourPartition, lake: Path, n: int) -> None:
    """What a lagging Parquet projection does: commit a new file into an old hour."""
    ts = partition.start + timedelta(minutes=30)
    events = [
        QueryReceived(query_id=f"late-{n}", query_text="늦게 온 질문", ts=ts),
        QueryCompleted(query_id=f"late-{n}", latency_ms=5.0, ts=ts + timedelta(seconds=1)),
    ]
    with ParquetSink(lake) as sink:
        sink.write(Batch(events=events, checkpoint={"late": n}))


def test_a_file_arriving_after_the_journal_is_moved_back_not_lost(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    target: list[HourPartition] = []

    def arrive(step: str, partition: HourPartition) -> None:
        if step == "journaled" and not target:
            target.append(partition)
            _late_event(partition, lake, 1)

    LakeCompactor(lake, on_step=arrive).run()
    events, distinct, _ = _census(lake)
    assert (events, distinct) == (before[0] + 2, before[1] + 2)
    assert len(target[0].files()) == 2  # the merged file and the late one, next to it


def test_a_file_arriving_during_the_merge_makes_that_hour_wait(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    target: list[HourPartition] = []

    def arrive(step: str, partition: HourPartition) -> None:
        if step == "merged" and not target:
            target.append(partition)
            _late_event(partition, lake, 2)

    report = LakeCompactor(lake, on_step=arrive).run()
    assert report.skipped == [target[0].name]
    assert _census(lake)[:2] == (before[0] + 2, before[1] + 2)
    assert len(target[0].files()) > 2  # untouched
    assert LakeCompactor(lake).run().partitions == 1
    assert len(target[0].files()) == 1


def test_an_erasure_rewrites_an_hour_a_file_arrives_in_during_the_merge_and_keeps_that_file(
    fresh_lake: SampleLake,
) -> None:
    """The hour a live projection writes to gets a new file every second: an erasure that waited for a quiet
    moment would never rewrite it (the subject's rows stayed). It goes on; the new file is returned, untouched."""
    lake = fresh_lake.lake
    before = _census(lake)
    target: list[HourPartition] = []
    path = next(p for p in sorted((lake / "events").glob("date=*/hour=*")) if list(p.glob("*.parquet")))
    hour = HourPartition(path.parent.name.removeprefix("date="), path.name.removeprefix("hour="), path)
    doomed = str(pq.read_table(hour.files()[0], columns=["query_id"]).column(0)[0])

    def arrive(step: str, partition: HourPartition) -> None:
        if step == "merged" and not target:
            target.append(partition)
            _late_event(partition, lake, 3)

    compactor = LakeCompactor(lake, on_step=arrive, drop=lambda t: pc.equal(t.column("query_id"), doomed))
    report = compactor.rewrite([hour])
    assert report.skipped == [] and report.partitions == 1
    assert compactor.dropped > 0
    events, distinct, _ = _census(lake)
    assert (events, distinct) == (before[0] + 2 - compactor.dropped, before[1] + 2 - compactor.dropped)
    assert len(target[0].files()) == 2  # the rewritten file and the one that arrived, returned as it was
    assert doomed not in {str(q) for f in target[0].files() for q in pq.read_table(f, columns=["query_id"]).column(0)}


def test_open_and_recent_hours_are_left_alone(make_lake: Callable[..., SampleLake], tmp_path: Path) -> None:
    hour = datetime(2025, 1, 1, 5, tzinfo=UTC)
    sample = make_lake(tmp_path / "home", end=hour + timedelta(hours=1), days=0, hours=(5,), per_hour=6)
    compactor = LakeCompactor(sample.lake)
    assert compactor.plan(now=hour + timedelta(minutes=40)) == []  # this hour is still open
    assert compactor.plan(now=hour + timedelta(hours=1, minutes=30)) == []  # closed 30 minutes ago
    planned = compactor.plan(now=hour + timedelta(hours=2, minutes=1))
    assert [p.start for p in planned] == [hour]
    assert compactor.plan(older_than=timedelta(0), now=hour + timedelta(hours=1)) == planned


def test_files_of_different_schema_versions_merge_with_nulls(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    hour = lake / "events" / "date=2025-01-01" / "hour=03"
    hour.mkdir(parents=True)
    full = pa.Table.from_pylist(
        [
            {
                "event_id": "e1",
                "event_type": "query_received",
                "schema_version": 1,
                "query_id": "q1",
                "ts": datetime(2025, 1, 1, 3, tzinfo=UTC),
                "query_text": "삼성",
                "service": "s",
                "env": "e",
            }
        ],
        schema=LAKE_SCHEMA,
    )
    pq.write_table(full, hour / "part-a.parquet")
    pq.write_table(
        full.select(["event_id", "event_type", "ts", "query_id"]).set_column(0, "event_id", pa.array(["e2"])),
        hour / "part-b.parquet",
    )
    before = _census(lake)
    LakeCompactor(lake).run(now=datetime(2025, 1, 2, tzinfo=UTC))
    assert _census(lake) == before
    with Catalog(lake) as cat:
        assert cat.query("SELECT event_id, query_text FROM events ORDER BY 1")[1] == [("e1", "삼성"), ("e2", None)]


def test_only_one_upkeep_runs_at_a_time(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    refused: list[str] = []

    def second(step: str, partition: HourPartition) -> None:
        if not refused:
            with pytest.raises(UpkeepError, match="another") as info:
                LakeCompactor(lake).run()
            refused.append(str(info.value))
            with pytest.raises(UpkeepError, match="another"):
                apply_retention(lake, days=1)

    LakeCompactor(lake, on_step=second).run()
    assert refused


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "1").write_text("a")
    (b / "2").write_text("b")
    exchange_directories(a, b)
    assert [p.name for p in a.iterdir()] == ["2"]
    assert [p.name for p in b.iterdir()] == ["1"]
    with pytest.raises(UpkeepError, match="atomically"):
        exchange_directories(a, tmp_path / "missing")


# -- retention --------------------------------------------------------------------------------------------
def test_retention_boundary_keeps_whole_days() -> None:
    now = datetime(2025, 3, 10, 15, 30, tzinfo=UTC)
    assert retention_boundary(7, now) == datetime(2025, 3, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="at least 1"):
        retention_boundary(0, now)


def test_retention_drops_days_that_ended_before_the_window(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    now = fresh_lake.end
    boundary = retention_boundary(2, now)
    progress: list[tuple[int, int, str]] = []
    report = apply_retention(lake, days=2, now=now, progress=lambda *a: progress.append(a))
    kept = [q for q in fresh_lake.queries if q.started_at >= boundary]
    assert report.boundary == boundary
    assert report.dates_removed == sorted(
        {q.started_at.date().isoformat() for q in fresh_lake.queries} - {q.started_at.date().isoformat() for q in kept}
    )
    assert len(progress) == len(report.dates_removed) > 0
    with Catalog(lake) as cat:
        _, rows = cat.query("SELECT count(*), min(started_at) FROM queries")
    assert rows[0][0] == len(kept)
    assert rows[0][1] >= boundary
    assert apply_retention(lake, days=2, now=now).dates_removed == []


def test_retention_settles_an_interrupted_compaction_first(fresh_lake: SampleLake) -> None:
    """A crash after the swap leaves old files in swap/; they must not come back into a day retention drops."""
    lake = fresh_lake.lake

    def crash(step: str, partition: HourPartition) -> None:
        if step == "swapped":
            raise SimulatedCrashError(step)

    with pytest.raises(SimulatedCrashError):
        LakeCompactor(lake, on_step=crash).run()
    apply_retention(lake, days=1, now=fresh_lake.end + timedelta(days=30))
    LakeCompactor(lake).run()
    assert _census(lake)[:2] == (0, 0)


# -- the search index ------------------------------------------------------------------------------------
@dataclass
class FakeHit:
    query_id: str
    query_text: str
    ts: datetime
    intent: str | None
    score: float
    match: str = "exact"
    why: str = ""


@dataclass
class FakeIndex:
    """An in-memory stand-in for SearchIndex that records what it is given."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    added: list[int] = field(default_factory=list)
    commits: int = 0
    removed_before: list[datetime] = field(default_factory=list)

    def add_arrow(self, table: pa.Table) -> int:
        assert set(table.column_names) >= {"query_id", "query_text", "ts", "intent"}
        self.added.append(table.num_rows)
        for row in table.to_pylist():
            self.rows.setdefault(row["query_id"], row)
        return table.num_rows

    def commit(self) -> None:
        self.commits += 1

    def search(
        self,
        text: str,
        *,
        limit: int = 20,
        intent: str | None = None,
        since: datetime | None = None,
        aliases: object = None,
    ) -> Sequence[FakeHit]:
        hits = [
            FakeHit(r["query_id"], r["query_text"], r["ts"], r["intent"], 1.0)
            for r in self.rows.values()
            if text in r["query_text"]
        ]
        return (hits + hits)[: limit * 2]  # duplicates, as after a crash between commit and ledger

    def remove_older_than(self, cutoff: datetime) -> int:
        self.removed_before.append(cutoff)
        old = [k for k, r in self.rows.items() if r["ts"] < cutoff]
        for k in old:
            del self.rows[k]
        return len(old)

    def __len__(self) -> int:
        return len(self.rows)


def test_sync_adds_each_finished_query_once(fresh_lake: SampleLake) -> None:
    index = FakeIndex()
    search = LakeSearch(fresh_lake.home, index_factory=lambda _: index)
    finished = [q for q in fresh_lake.queries if q.status != "in_progress"]
    with Catalog(fresh_lake.lake) as cat:
        now = fresh_lake.end - timedelta(days=30)  # everything looks recent: in-flight queries wait
        assert search.sync(cat, now=now) == len(finished)
        assert search.sync(cat, now=now) == 0
        assert index.added == [len(finished)]
        # Once old enough, a query that never finished is indexed too.
        assert search.sync(cat) == len(fresh_lake.queries) - len(finished)
        # New queries in the lake: only they are added.
        _late_event(HourPartition("2025-01-01", "00", fresh_lake.lake), fresh_lake.lake, 7)
        assert search.sync(cat) == 1
    assert set(index.rows) == {q.query_id for q in fresh_lake.queries} | {"late-7"}
    assert search.indexed() == len(index.rows)


def test_sync_survives_compaction_without_reindexing(fresh_lake: SampleLake) -> None:
    index = FakeIndex()
    search = LakeSearch(fresh_lake.home, index_factory=lambda _: index)
    with Catalog(fresh_lake.lake) as cat:
        first = search.sync(cat)
        LakeCompactor(fresh_lake.lake).run()
        assert search.sync(cat) == 0
    assert sum(index.added) == first == len(fresh_lake.queries)


def test_search_results_are_unique_per_query(fresh_lake: SampleLake) -> None:
    index = FakeIndex()
    search = LakeSearch(fresh_lake.home, index_factory=lambda _: index)
    with Catalog(fresh_lake.lake) as cat:
        search.sync(cat)
    hits = search.search("주가", limit=5)
    assert hits
    assert len({h.query_id for h in hits}) == len(hits)


def test_an_emptied_index_is_refilled(fresh_lake: SampleLake) -> None:
    index = FakeIndex()
    with Catalog(fresh_lake.lake) as cat:
        LakeSearch(fresh_lake.home, index_factory=lambda _: index).sync(cat)
        index.rows.clear()  # the index directory was deleted
        assert LakeSearch(fresh_lake.home, index_factory=lambda _: index).sync(cat) == len(fresh_lake.queries)


def test_index_retention_follows_the_lake(fresh_lake: SampleLake) -> None:
    index = FakeIndex()
    search = LakeSearch(fresh_lake.home, index_factory=lambda _: index)
    with Catalog(fresh_lake.lake) as cat:
        search.sync(cat)
    boundary = apply_retention(fresh_lake.lake, days=2, now=fresh_lake.end).boundary
    search.remove_older_than(boundary)
    assert index.removed_before == [boundary]
    assert all(r["ts"] >= boundary for r in index.rows.values())
    assert search.indexed() == len(index.rows)


def test_a_rebuild_waits_for_a_sync_in_progress_then_indexes_the_lake_anew(fresh_lake: SampleLake) -> None:
    with Catalog(fresh_lake.lake) as cat:
        LakeSearch(fresh_lake.home).sync(cat)
        other, rebuilt = LakeSearch(fresh_lake.home), []
        with other._writing():  # another process's sync, between reading the lake and committing what it read
            worker = threading.Thread(target=lambda: rebuilt.append(LakeSearch(fresh_lake.home).rebuild(cat)))
            worker.start()
            worker.join(timeout=1.0)
            # Not dropped under that writer, which would then commit rows an erasure took from the lake.
            assert worker.is_alive() and other.indexed() == len(fresh_lake.queries)
        worker.join()
    assert rebuilt == [len(fresh_lake.queries)]
    assert LakeSearch(fresh_lake.home).indexed() == len(fresh_lake.queries)


# -- the command ------------------------------------------------------------------------------------------
def test_compact_command_waits_for_another_upkeep_rather_than_failing(
    fresh_lake: SampleLake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `querylog compact` from cron that met the running service merging an hour exited 1, "another `querylog
    compact` is working"."""
    from querylog.analytics.upkeep import UpkeepBusyError

    real, calls = LakeCompactor.run, []

    def busy_once(self: LakeCompactor, **kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            raise UpkeepBusyError("another upkeep is working on the lake")
        return real(self, **kwargs)

    monkeypatch.setattr(LakeCompactor, "run", busy_once)
    assert main(["--home", str(fresh_lake.home), "compact", "--no-days"]) == 0
    captured = capsys.readouterr()
    assert "querylog compact: waiting for another upkeep of the lake" in captured.err
    assert len(calls) == 2 and f"({fresh_lake.events} events)" in captured.out


def test_compact_command_shows_progress_and_a_summary(
    fresh_lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _census(fresh_lake.lake)
    assert main(["--home", str(fresh_lake.home), "compact", "--dry-run"]) == 0
    assert "partition(s) to compact" in capsys.readouterr().out
    assert main(["--home", str(fresh_lake.home), "compact"]) == 0
    captured = capsys.readouterr()
    assert "compact [1/" in captured.err
    assert f"({fresh_lake.events} events)" in captured.out
    assert _census(fresh_lake.lake) == before


def test_a_dry_run_does_not_offer_to_compact_what_retention_would_drop(
    fresh_lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(fresh_lake.home), "compact", "--dry-run", "--retention-days", "1"]) == 0
    out = capsys.readouterr().out
    dropped = out.splitlines()[0].rsplit(": ", 1)[1].split(", ")
    assert out.startswith("retention (1 day): would drop") and dropped and dropped != ["-"]
    offered = [line for line in out.splitlines() if line.startswith("would compact")]
    assert not [line for line in offered for day in dropped if day in line]


def test_compact_command_merges_each_closed_day_into_one_file(
    fresh_lake: SampleLake, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _census(fresh_lake.lake)
    assert main(["--home", str(fresh_lake.home), "compact"]) == 0
    assert "day(s)" in capsys.readouterr().out
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for day in (fresh_lake.lake / "events").glob("date=*"):
        files = list(day.glob("hour=*/*.parquet"))
        if day.name != f"date={today}":
            assert len(files) == 1, f"{day.name} has {len(files)} files"
    assert _census(fresh_lake.lake) == before


def test_compact_command_applies_retention(
    fresh_lake: SampleLake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYLOG_RETENTION_DAYS", "1")
    assert main(["--home", str(fresh_lake.home), "compact"]) == 0
    out = capsys.readouterr().out
    assert "retention: dropped" in out
    boundary = retention_boundary(1)
    with Catalog(fresh_lake.lake) as cat:
        assert cat.query("SELECT count(*) FROM queries WHERE started_at < ?", [boundary])[1] == [(0,)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compact", "--older-than", "soon"], "duration"),
        (["compact", "--retention-days", "0"], "from 1 to 36500"),
        (["compact", "--retention-days", "99999999999"], "from 1 to 36500"),  # was an OverflowError traceback
        (["compact", "--older-than", "99999999d"], "at most 100 years"),
    ],
)
def test_compact_command_rejects_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path), *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_filesystem_without_atomic_swap_is_refused_and_left_as_it_was(
    fresh_lake: SampleLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = fresh_lake.lake
    files, before = _files(lake), _census(lake)

    def refuse(a: Path, b: Path) -> None:
        raise UpkeepError("could not swap atomically: Invalid argument")

    monkeypatch.setattr("querylog.analytics.upkeep.exchange_directories", refuse)
    with pytest.raises(UpkeepError, match="atomically"):
        LakeCompactor(lake).run()
    assert _files(lake) == files
    assert _census(lake) == before
    assert not any((lake / "_querylog" / "compact").iterdir())


# -- whole days ------------------------------------------------------------------------------------------
def _day_files_sorted(lake: Path) -> None:
    """Each day file is sorted by (event_type, ts)."""
    for path in _files(lake):
        if path.name.startswith(DAY_FILE_PREFIX):
            table = pq.read_table(path, columns=["event_type", "ts"])
            assert table.sort_by([("event_type", "ascending"), ("ts", "ascending")]).equals(table)


def test_day_compaction_merges_each_closed_day_into_one_sorted_file(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before, queries_before = _census(lake), _queries(lake)
    with Catalog(lake) as cat:
        trend_before = LakeQueries(cat).intent_trend().rows()
    days_before = {p.parent.parent for p in _files(lake)}
    hours_before = {p.parent for p in _files(lake)}
    progress: list[tuple[int, int, str]] = []
    report = LakeCompactor(lake, progress=lambda *a: progress.append(a)).run_days(
        now=fresh_lake.end + timedelta(days=2)
    )
    assert _census(lake) == before == (fresh_lake.events, fresh_lake.events, before[2])
    assert _queries(lake) == queries_before
    with Catalog(lake) as cat:
        assert LakeQueries(cat).intent_trend().rows() == trend_before
    files = _files(lake)
    assert len(files) == len(days_before) == report.partitions == report.files_after == len(progress)
    assert all(p.name.startswith(DAY_FILE_PREFIX) for p in files)
    # Every hour directory is still there (empty but for the day's first), so the glob and hive typing hold.
    assert {h for d in days_before for h in d.iterdir()} == hours_before
    assert report.events == fresh_lake.events
    _day_files_sorted(lake)
    assert not any((lake / "_querylog" / "compact").iterdir())
    assert LakeCompactor(lake).run_days(now=fresh_lake.end + timedelta(days=2)).partitions == 0
    assert LakeCompactor(lake).run().partitions == 0  # hour compaction leaves day files alone
    # An erasure rewrites a day file as a day file: the next `compact` sorted the whole day again (and the next
    # `lake push` uploaded it again).
    doomed = fresh_lake.queries[0].query_id
    erasing = LakeCompactor(lake, drop=lambda t: pc.equal(t.column("query_id"), doomed))
    hours = [HourPartition(p.parent.parent.name[5:], p.parent.name[5:], p.parent) for p in _files(lake)]
    assert erasing.rewrite(hours).partitions == len(files) and erasing.dropped > 0
    assert all(p.name.startswith(DAY_FILE_PREFIX) for p in _files(lake))
    _day_files_sorted(lake)  # still in the day's order, less the erased rows
    assert LakeCompactor(lake).run_days(now=fresh_lake.end + timedelta(days=2)).partitions == 0


def test_today_and_recent_days_are_left_alone_by_day_compaction(fresh_lake: SampleLake) -> None:
    compactor = LakeCompactor(fresh_lake.lake)
    days = {p.parent.parent.name for p in _files(fresh_lake.lake)}
    last = max(days).removeprefix("date=")
    day_end = datetime.fromisoformat(last).replace(tzinfo=UTC) + timedelta(days=1)
    assert last not in {d.date for d in compactor.plan_days(now=day_end - timedelta(minutes=1))}
    assert last in {d.date for d in compactor.plan_days(now=day_end)}
    assert last not in {d.date for d in compactor.plan_days(now=day_end, older_than=timedelta(hours=1))}


def test_a_reader_at_any_step_of_day_compaction_sees_every_event_exactly_once(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    seen: dict[str, list[tuple[int, int, int]]] = {}

    def read(step: str, partition: Any) -> None:
        seen.setdefault(step, []).append(_census(lake))

    LakeCompactor(lake, on_step=read).run_days(now=fresh_lake.end + timedelta(days=2))
    assert set(seen) == set(STEPS)
    assert all(census == before for censuses in seen.values() for census in censuses)


@pytest.mark.parametrize("step", STEPS[:-1])
def test_a_crash_at_any_step_of_day_compaction_is_repaired(fresh_lake: SampleLake, step: str) -> None:
    lake = fresh_lake.lake
    before, queries_before = _census(lake), _queries(lake)
    now = fresh_lake.end + timedelta(days=2)

    def crash(at: str, partition: Any) -> None:
        if at == step:
            raise SimulatedCrashError(at)

    with pytest.raises(SimulatedCrashError):
        LakeCompactor(lake, on_step=crash).run_days(now=now)
    assert _census(lake) == before
    assert LakeCompactor(lake).recover() == 1
    assert _census(lake) == before
    assert not any((lake / "_querylog" / "compact").iterdir())
    LakeCompactor(lake).run_days(now=now)
    assert _census(lake) == before
    assert _queries(lake) == queries_before
    _day_files_sorted(lake)


@pytest.mark.parametrize("step", ["journaled", "swapped"])
def test_a_late_file_during_day_compaction_is_moved_back_not_lost(fresh_lake: SampleLake, step: str) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    hour = next(p for p in (HourPartition(f.parent.parent.name[5:], f.parent.name[5:], f.parent) for f in _files(lake)))
    done: list[str] = []

    def arrive(at: str, partition: Any) -> None:
        if at == step and not done:
            done.append(at)
            _late_event(hour, lake, 3)  # journaled: into the old day (moved back after the swap); swapped: the new

    LakeCompactor(lake, on_step=arrive).run_days(now=fresh_lake.end + timedelta(days=2))
    events, distinct, _ = _census(lake)
    assert (events, distinct) == (before[0] + 2, before[1] + 2)


def test_a_file_arriving_during_the_day_merge_makes_that_day_wait(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    hour = next(p for p in (HourPartition(f.parent.parent.name[5:], f.parent.name[5:], f.parent) for f in _files(lake)))
    skipped: list[str] = []

    def arrive(at: str, partition: Any) -> None:
        if at == "merged" and partition.date == hour.date and not skipped:
            skipped.append(partition.name)
            _late_event(hour, lake, 4)

    now = fresh_lake.end + timedelta(days=2)
    report = LakeCompactor(lake, on_step=arrive).run_days(now=now)
    assert report.skipped == skipped
    assert _census(lake)[:2] == (before[0] + 2, before[1] + 2)
    assert LakeCompactor(lake).run_days(now=now).partitions == 1
    assert _census(lake)[:2] == (before[0] + 2, before[1] + 2)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["journaled", "swapped"])
def test_a_killed_day_compaction_is_repaired_by_the_next_run(fresh_lake: SampleLake, step: str) -> None:
    lake = fresh_lake.lake
    before = _census(lake)
    now = fresh_lake.end + timedelta(days=2)
    script = textwrap.dedent(
        f"""
        import os
        from datetime import datetime
        from querylog.analytics.upkeep import LakeCompactor
        def die(at, partition):
            if at == {step!r}:
                os._exit(9)
        LakeCompactor({str(lake)!r}, on_step=die).run_days(now=datetime.fromisoformat({now.isoformat()!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert _census(lake) == before
    report = LakeCompactor(lake).run_days(now=now)
    assert report.recovered == 1
    assert _census(lake) == before
    _day_files_sorted(lake)


def test_unclassified_also_finds_the_queries_an_older_index_holds_without_an_intent(tmp_path: Path) -> None:
    """Indexes built before querylog named them `unclassified` hold those queries with no intent at all."""
    from querylog.analytics.search import SearchIndex

    index = SearchIndex(tmp_path / "index")
    t = datetime(2026, 11, 1, tzinfo=UTC)
    index.add([("q-old", t, None, "네이버 실적"), ("q-stock", t, "stock", "네이버 주가")])
    index.add([("q-new", t + timedelta(minutes=1), "unclassified", "네이버 뉴스")])
    # Newer and better hits of another intent do not crowd the old one out.
    index.add([(f"q-{n}", t + timedelta(minutes=2 + n), "stock", "네이버 주가") for n in range(30)])
    index.commit()
    search = LakeSearch(tmp_path, index_factory=lambda _: index)
    assert [h.query_id for h in search.search("네이버", intent="unclassified")] == ["q-new", "q-old"]
    assert [h.query_id for h in search.search("네이버", intent="unclassified", limit=1)] == ["q-new"]


def test_a_day_file_takes_about_the_room_of_the_hour_files_it_replaces(
    make_lake: Callable[..., SampleLake], tmp_path: Path
) -> None:
    """Sorted by (event_type, ts), a query's events part ways, and pyarrow's default encodings (a dictionary of
    every column, unique times and ids too) made a day file larger than the hour files it replaced (a third larger
    on a day of 170k events with uuid ids): compacting to keep history cheaply made it dearer."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    sample = make_lake(tmp_path / "home", end=end, days=1, hours=(1, 9, 17), per_hour=2000, files_per_hour=1)
    day = sorted({p.parent.parent for p in _files(sample.lake)})[0]
    before = sum(p.stat().st_size for p in day.rglob("*.parquet"))
    assert LakeCompactor(sample.lake).run_days(now=end + timedelta(days=2)).partitions >= 1
    (merged,) = day.rglob("*.parquet")
    assert merged.name.startswith(DAY_FILE_PREFIX)
    assert merged.stat().st_size <= before, (merged.stat().st_size, before)  # it was 1.10 times their size


def test_an_hour_of_many_files_merges_with_few_open_into_whole_row_groups(
    make_lake: Callable[..., SampleLake], tmp_path: Path
) -> None:
    """Under steady traffic the Parquet projection writes about a file a second. The merge opened every input at
    once (past a service's 1,024 open files, `Too many open files` at every run) and wrote a row group per input,
    thousands of tiny groups in the "compacted" hour."""
    import os
    import resource

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    sample = make_lake(tmp_path / "home", end=end, days=1, hours=(3,), per_hour=300, files_per_hour=300)
    hours = {p.parent for p in _files(sample.lake)}
    inputs = sum(n for h in hours if (n := len(list(h.glob("*.parquet")))) > 1)  # an hour of one file stays
    assert max(len(list(h.glob("*.parquet"))) for h in hours) >= 250
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    try:
        report = LakeCompactor(sample.lake).run(now=end + timedelta(days=2))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert report.files_before == inputs
    for hour in hours:
        (merged,) = hour.glob("*.parquet")
        assert pq.ParquetFile(merged).metadata.num_row_groups == 1
    assert _census(sample.lake)[0] == sample.events
