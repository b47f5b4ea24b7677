"""The lake's change counter, so that a query never returns numbers from a lake caught mid-swap.

Compaction and retention move whole directories (see `upkeep`): a listing of one directory sees its old or its
new content. But DuckDB's glob lists a directory and then stats each entry by path, and silently skips an entry
whose stat fails: a reader that listed an hour's old files just before the swap and stats them just after it
sees neither the old files nor the merged one, and counts that hour as empty.

So every such move happens inside `changing`: under an exclusive lock on ``_querylog/swap.lock``, with the
counter in ``_querylog/generation`` odd from just before the move until just after it (a seqlock). `consistent`
runs a query, and runs it again if the counter moved meanwhile; should it move again, the query runs once more
holding the lock shared, so that no move can happen under it. An odd counter left by a crash does not block
readers (no one holds the lock), and the next compaction or retention run sets it even again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final, TypeVar

from querylog.logging.projection import atomic_write

__all__ = ["begin_change", "changing", "consistent", "end_change", "lake_signature", "read_generation"]

_T = TypeVar("_T")

#: Optimistic attempts before a query takes the lock that holds moves off.
OPTIMISTIC_ATTEMPTS: Final = 2


def _meta(lake_dir: Path) -> Path:
    return lake_dir / "_querylog"


def read_generation(lake_dir: Path) -> int:
    """The counter; 0 for a lake that no compaction or retention ever touched."""
    try:
        data = (_meta(lake_dir) / "generation").read_bytes()
    except FileNotFoundError:
        return 0
    try:
        return int(data)
    except ValueError:
        return -1  # damaged: not a value any move writes, so a query that read it runs again under the lock


def begin_change(lake_dir: Path) -> None:
    """Mark the start of a move (odd). Call under `changing`'s lock."""
    generation = max(0, read_generation(lake_dir))
    odd = generation + 1 if generation % 2 == 0 else generation + 2
    atomic_write(_meta(lake_dir) / "generation", str(odd).encode())


def end_change(lake_dir: Path) -> None:
    """Mark the end of a move (even); also settles an odd counter a crash left."""
    generation = read_generation(lake_dir)
    if generation % 2 or generation < 0:
        atomic_write(_meta(lake_dir) / "generation", str(max(0, generation) + 1).encode())


@contextmanager
def _swap_lock(lake_dir: Path, operation: int) -> Iterator[IO[bytes] | None]:
    try:
        _meta(lake_dir).mkdir(parents=True, exist_ok=True)
        fh = (_meta(lake_dir) / "swap.lock").open("ab")
    except OSError:  # a lake this process may only read: go without the lock
        yield None
        return
    with fh:
        fcntl.flock(fh.fileno(), operation)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def changing(lake_dir: Path) -> Iterator[None]:
    """Move files readers may be listing (a directory swap, a day's removal) inside this block."""
    with _swap_lock(lake_dir, fcntl.LOCK_EX):
        begin_change(lake_dir)
        try:
            yield
        finally:
            end_change(lake_dir)


def consistent(lake_dir: Path, run: Callable[[], _T]) -> _T:
    """`run()`'s result (or error) from a lake that no move changed while it ran."""
    for _ in range(OPTIMISTIC_ATTEMPTS):
        before = read_generation(lake_dir)
        if before % 2:
            break  # a move is under way (or a crash left the counter odd): take the lock, which settles which
        try:
            result = run()
        except Exception:
            if read_generation(lake_dir) == before:
                raise  # not the lake moving: the query's own error
            continue
        if read_generation(lake_dir) == before:
            return result
    with _swap_lock(lake_dir, fcntl.LOCK_SH):  # no move can start until this run is done
        return run()


def lake_signature(lake_dir: Path) -> tuple[int, int, int]:
    """What changes whenever the lake's content does: the move counter, and the number and newest change time of
    its hour directories (a file renamed into an hour, or an hour made, changes them). A stat per hour: cheap
    enough to ask at every page refresh, where reading the lake is not."""
    hours = newest = 0
    try:
        days = [entry for entry in os.scandir(lake_dir / "events") if entry.is_dir()]
    except FileNotFoundError:
        days = []
    for day in days:
        try:
            for hour in os.scandir(day.path):
                if hour.is_dir():
                    hours += 1
                    newest = max(newest, hour.stat().st_mtime_ns)
        except FileNotFoundError:  # a day retention or compaction moved meanwhile: the counter says so
            continue
    return read_generation(lake_dir), hours, newest
