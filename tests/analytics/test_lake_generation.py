"""The lake's change counter: a query that a swap straddled runs again; one under way is waited out."""

from __future__ import annotations

import fcntl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from querylog.analytics.catalog import Catalog, CatalogError
from querylog.analytics.lake_generation import (
    LakeChangedError,
    begin_change,
    consistent,
    end_change,
    read_generation,
)
from querylog.analytics.upkeep import LakeCompactor, apply_retention

if TYPE_CHECKING:
    from tests.analytics.conftest import SampleLake


def test_a_query_that_a_swap_straddled_runs_again(tmp_path: Path) -> None:
    calls: list[int] = []

    def query() -> int:
        calls.append(read_generation(tmp_path))
        if len(calls) == 1:  # compaction swaps a directory while the first attempt runs
            begin_change(tmp_path)
            end_change(tmp_path)
        return len(calls)

    assert consistent(tmp_path, query) == 2
    assert calls == [0, 2]


def test_a_swap_under_way_is_waited_out_not_read_through(tmp_path: Path) -> None:
    (tmp_path / "_querylog").mkdir()
    with (tmp_path / "_querylog" / "upkeep.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # upkeep is running ...
        begin_change(tmp_path)  # ... and mid-swap
        ran: list[bool] = []
        with pytest.raises(LakeChangedError, match="during each of 3 attempts"):
            consistent(tmp_path, lambda: ran.append(True), attempts=3)
        assert ran == []


def test_an_odd_counter_a_crash_left_does_not_block_readers(tmp_path: Path) -> None:
    begin_change(tmp_path)  # the compactor died mid-swap: no one holds upkeep's lock
    assert consistent(tmp_path, lambda: "answer") == "answer"
    LakeCompactor(tmp_path).recover()  # the next upkeep run settles it
    assert read_generation(tmp_path) % 2 == 0


def test_compaction_and_retention_count_their_moves(fresh_lake: SampleLake) -> None:
    lake = fresh_lake.lake
    assert read_generation(lake) == 0
    LakeCompactor(lake).run()
    compacted = read_generation(lake)
    assert compacted > 0 and compacted % 2 == 0
    apply_retention(lake, days=1, now=datetime.now(UTC) + timedelta(days=400))  # every day has expired
    assert read_generation(lake) > compacted and read_generation(lake) % 2 == 0


def test_the_catalog_reports_a_lake_that_never_held_still(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = Catalog(tmp_path)
    moves = iter(range(1, 1000))
    monkeypatch.setattr("querylog.analytics.lake_generation.read_generation", lambda _lake: 2 * next(moves))
    with pytest.raises(CatalogError, match="moved files"):
        catalog.query("SELECT count(*) FROM events")
