"""The lake's change counter: a query that a move straddled runs again; one under way is waited out."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from querylog.analytics.catalog import Catalog, CatalogError
from querylog.analytics.lake_generation import begin_change, changing, consistent, read_generation
from querylog.analytics.upkeep import LakeCompactor, apply_retention

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake


def _a_move_during_the_first(tmp_path: Path, calls: list[int], *, fail: bool = False) -> int:
    calls.append(read_generation(tmp_path))
    if len(calls) == 1:  # compaction swaps a directory while the first attempt runs
        with changing(tmp_path):
            pass
        if fail:
            raise duckdb.IOException('Cannot open file "events/date=…/x.parquet": No such file or directory')
    return len(calls)


def test_a_query_that_a_move_straddled_runs_again(tmp_path: Path) -> None:
    calls: list[int] = []
    assert consistent(tmp_path, lambda: _a_move_during_the_first(tmp_path, calls)) == 2
    assert calls == [0, 2]


def test_a_query_that_failed_because_a_move_took_its_file_runs_again(tmp_path: Path) -> None:
    calls: list[int] = []
    assert consistent(tmp_path, lambda: _a_move_during_the_first(tmp_path, calls, fail=True)) == 2


def test_a_query_that_fails_on_its_own_is_not_run_again(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    with pytest.raises(CatalogError, match="no_such_column"):
        catalog.query("SELECT no_such_column FROM events")


def test_a_move_under_way_is_waited_out_not_read_through(tmp_path: Path) -> None:
    answers: list[int] = []
    with changing(tmp_path):  # a swap is under way: the reader must not answer until it is done
        reader = threading.Thread(
            target=lambda: answers.append(consistent(tmp_path, lambda: read_generation(tmp_path)))
        )
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive() and answers == []
    reader.join(timeout=30)
    assert answers == [2]  # it ran once the move was over, and saw its end


def test_an_odd_counter_a_crash_left_does_not_block_readers(tmp_path: Path) -> None:
    begin_change(tmp_path)  # the compactor died mid-swap: no one holds the swap lock
    assert consistent(tmp_path, lambda: "answer") == "answer"
    LakeCompactor(tmp_path).recover()  # the next upkeep run settles it
    assert read_generation(tmp_path) % 2 == 0


def test_a_catalog_opened_while_a_compaction_swaps_files_is_opened_again(
    fresh_lake: SampleLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`querylog sql` and `reconcile` during a compaction failed making their views (which read every file's schema),
    calling the lake damaged: 8 of 10 runs during one compaction."""
    lake, real_has_data, calls = fresh_lake.lake, Catalog.has_data, []

    def listing_straddled_by_a_swap(self: Catalog) -> bool:
        calls.append(1)
        if len(calls) == 1:
            with changing(lake):  # the swap, between the glob's listing and a read of the schema
                pass
            raise duckdb.IOException('Cannot open file "events/date=…/part-x.parquet": No such file or directory')
        return real_has_data(self)

    monkeypatch.setattr(Catalog, "has_data", listing_straddled_by_a_swap)
    with Catalog(lake) as catalog:
        assert catalog.query("select count(*) from events")[1][0][0] == fresh_lake.events
    assert len(calls) == 2


def test_compaction_and_retention_count_their_moves(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    assert read_generation(lake) == 0
    LakeCompactor(lake).run()
    compacted = read_generation(lake)
    assert compacted > 0 and compacted % 2 == 0
    apply_retention(lake, days=1, now=datetime.now(UTC) + timedelta(days=400))  # every day has expired
    assert read_generation(lake) > compacted and read_generation(lake) % 2 == 0
