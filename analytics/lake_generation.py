"""The lake's change counter, so that a query never returns numbers from a lake caught mid-swap.

Compaction and retention move whole directories (see `upkeep`): a listing of one directory sees its old or its
new content. But DuckDB's glob lists a directory and then stats each entry by path, and silently skips an entry
whose stat fails: a reader that listed an hour's old files just before the swap and stats them just after it
sees neither the old files nor the merged one, and counts that hour as empty.

So upkeep counts its moves in ``_querylog/generation``: odd from just before a directory swap (or a day's removal)
until just after it, even otherwise (a seqlock). `consistent` runs a query when no move is under way and runs it
again if the counter changed meanwhile. An odd counter left by a crash does not block readers: it only counts
while upkeep holds its lock, and the next compaction or retention run sets it even again.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from querylog.logging.projection import atomic_write

__all__ = ["LakeChangedError", "begin_change", "consistent", "end_change", "read_generation"]

_T = TypeVar("_T")

#: How often a query is tried before it gives up on a lake that keeps changing under it.
ATTEMPTS: Final = 50
_WAIT_S: Final = 0.005


class LakeChangedError(Exception):
    """Compaction or retention moved files under every attempt of a query."""


def _path(lake_dir: Path) -> Path:
    return lake_dir / "_querylog" / "generation"


def read_generation(lake_dir: Path) -> int:
    """The counter; 0 for a lake that upkeep never touched."""
    try:
        return int(_path(lake_dir).read_bytes() or b"0")
    except (OSError, ValueError):
        return 0


def begin_change(lake_dir: Path) -> None:
    """Mark the start of a move (odd). Call under upkeep's lock."""
    generation = read_generation(lake_dir)
    atomic_write(_path(lake_dir), str(generation + 1 if generation % 2 == 0 else generation + 2).encode())


def end_change(lake_dir: Path) -> None:
    """Mark the end of a move (even); also settles an odd counter a crash left. Call under upkeep's lock."""
    generation = read_generation(lake_dir)
    if generation % 2:
        atomic_write(_path(lake_dir), str(generation + 1).encode())


def _upkeep_running(lake_dir: Path) -> bool:
    try:
        fh = (lake_dir / "_querylog" / "upkeep.lock").open("rb")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def consistent(lake_dir: Path, run: Callable[[], _T], *, attempts: int = ATTEMPTS) -> _T:
    """`run()`'s result from a lake that no swap changed while it ran; `LakeChangedError` if every attempt met
    one."""
    for attempt in range(attempts):
        before = read_generation(lake_dir)
        if before % 2 and _upkeep_running(lake_dir):
            time.sleep(_WAIT_S * (attempt + 1))  # a swap is under way: it takes milliseconds
            continue
        result = run()
        if read_generation(lake_dir) == before:
            return result
    raise LakeChangedError(
        f"compaction or retention moved files in {lake_dir} during each of {attempts} attempts; run it again"
    )
