"""`ForgetList`: the queries an erase removed, read by every metrics fold that runs meanwhile."""

from __future__ import annotations

from pathlib import Path

from querylog.logging.forget import KEEP_S, ForgetList

NOW = 1_800_000_000.0


def test_each_reader_takes_what_was_added_since_it_last_looked(tmp_path: Path) -> None:
    path = tmp_path / "state" / "metrics-forget.jsonl"
    erase, fold_a, fold_b = ForgetList(path), ForgetList(path), ForgetList(path)
    assert fold_a.new(now=NOW) == []  # no erase yet: no file
    erase.add(["q-1", "q-2"], now=NOW)
    assert sorted(fold_a.new(now=NOW)) == ["q-1", "q-2"]
    assert fold_a.new(now=NOW) == []  # taken once
    erase.add(["q-3"], now=NOW + 1)
    # A reader takes at least what is new; after a rewrite (each add is one), what was there again: harmless.
    assert "q-3" in fold_a.new(now=NOW + 1)
    assert sorted(fold_b.new(now=NOW + 1)) == ["q-1", "q-2", "q-3"]  # a fold that looks later misses nothing
    erase.add([], now=NOW + 2)  # nothing erased: nothing written
    assert fold_b.new(now=NOW + 2) == []


def test_lines_go_once_every_fold_has_had_time_to_read_them(tmp_path: Path) -> None:
    path = tmp_path / "metrics-forget.jsonl"
    ForgetList(path).add(["old"], now=NOW)
    ForgetList(path).add(["recent"], now=NOW + KEEP_S)
    late = ForgetList(path)
    assert sorted(late.new(now=NOW + KEEP_S + 1)) == ["old", "recent"]  # read, and the old line dropped
    assert "old" not in path.read_text() and "recent" in path.read_text()
    assert ForgetList(path).new(now=NOW + 3 * KEEP_S) == ["recent"]
    assert not path.exists()  # nothing left to keep: no file holds the ids


def test_a_reader_that_has_read_everything_still_drops_lines_once_they_are_due(tmp_path: Path) -> None:
    """A fold that had read the file never looked at it again, and the ids stayed on disk for good."""
    path = tmp_path / "metrics-forget.jsonl"
    ForgetList(path).add(["q-1"], now=NOW)
    fold = ForgetList(path)
    assert fold.new(now=NOW) == ["q-1"]
    assert fold.new(now=NOW + 60) == [] and path.exists()  # nothing new, nothing due
    assert fold.new(now=NOW + KEEP_S + 1) == [] and not path.exists()  # due: gone, though nothing was new
