"""The queries `querylog erase` removed, for the metrics folds that run meanwhile to forget too, and the servers'
memory of the queries they answered (`querylog.service.producers.RecentQueries`).

Every process that folds the metrics holds its open queries and each session's latest query in memory, and may
write the snapshot from it (`logging/metrics_snapshot.py`). An erase cleans the snapshot on disk; a fold running
then would write the erased sessions back at its next snapshot. So the erase also adds the queries' ids here, and
each fold reads what was added since it last looked, before it applies a batch and before it writes a snapshot.

A line is kept an hour (`KEEP_S`), then dropped by whoever reads or adds next: by then every running fold has read
it (they look every batch), or holds nothing of those queries (its open queries and sessions expire 5 minutes
after their last event). With ``state/loki-deletes-pending.jsonl`` and ``state/erase-in-progress.json``
(`querylog.erase`), it is where an erasure keeps ids, for as long as they are needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from querylog.logging.projection import atomic_write, locked

__all__ = ["KEEP_S", "ForgetList"]

#: How long a line stays: far longer than a fold takes to read it, or to expire what it names.
KEEP_S: Final = 3600.0


class ForgetList:
    """`add` (an erase) and `new` (a fold) over one file; one instance per reader, which remembers how far it read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read: tuple[int, int] = (0, 0)  # (inode, offset) of what this reader has taken
        self._oldest: float | None = None  # the time of the oldest line it read: when one is due to go

    def add(self, query_ids: Iterable[str], *, now: float | None = None) -> None:
        """Append one line of `query_ids` (none: nothing), dropping lines past `KEEP_S`."""
        ids = sorted(set(query_ids))
        if not ids:
            return
        at = time.time() if now is None else now
        with self._locked():
            kept = self._fresh_lines(at)
            line = json.dumps({"at": at, "queries": ids}, ensure_ascii=False) + "\n"
            atomic_write(self.path, "".join([*kept, line]).encode())

    def new(self, *, now: float | None = None) -> list[str]:
        """The ids added since this reader last looked (all of them, the first time or after a rewrite)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._read = (0, 0)
            return []
        inode, offset = self._read
        at = time.time() if now is None else now
        if stat.st_ino == inode and stat.st_size == offset:  # the common case, once a batch: one stat
            if self._oldest is not None and self._oldest < at - KEEP_S:  # a line is due to go: no one else may read
                self._prune(at)
            return []
        if stat.st_ino != inode or stat.st_size < offset:
            offset = 0  # rewritten (a line added or dropped): read it again; forgetting twice is harmless
        with self.path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is taken next time
        self._read = (stat.st_ino, offset + len(whole))
        entries = [json.loads(line) for line in whole.splitlines() if line.strip()]
        if offset == 0:
            self._oldest = entries[0]["at"] if entries else None
        if self._oldest is not None and self._oldest < at - KEEP_S:
            self._prune(at)
        return [q for entry in entries for q in entry["queries"]]

    def _prune(self, now: float) -> None:
        with self._locked():
            kept = self._fresh_lines(now)
            if kept:
                atomic_write(self.path, "".join(kept).encode())
            else:
                self.path.unlink(missing_ok=True)
        self._oldest = json.loads(kept[0])["at"] if kept else None  # read again next time (a new inode)

    def _fresh_lines(self, now: float) -> list[str]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return []
        return [line for line in lines if line.strip() and json.loads(line)["at"] >= now - KEEP_S]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path.with_name(f".{self.path.name}.lock"))
