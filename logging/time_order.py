"""A log reader that merges the writers' segments by event time, so Loki sees every stream move forward.

Read segment by segment, a batch after an outage could hold an hour of worker A's events and the next worker B's
from that hour, which Loki refuses (``too_far_behind``). This reader takes a share of every pending segment and
returns lines up to the time all of them have reached (a k-way merge with a watermark)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from querylog.logging.codec import line_time
from querylog.logging.segments import Checkpoint, LogReader, ReadBatch, is_erased

__all__ = ["TimeOrderedReader"]

#: The smallest share of the byte budget a segment gets, so that many segments still make progress.
_MIN_SHARE_BYTES = 64 * 1024


def _time_of(line: bytes) -> float:
    # A line that does not decode sorts first and goes out at once: the projector counts it as corrupt.
    return float("-inf") if (t := line_time(line)) is None else t


@dataclass(slots=True)
class _Pending:
    name: str
    offset: int
    size: int
    lines: list[bytes]
    times: list[float]
    ends: list[int]  # byte offset just past each line, relative to `offset`
    limited: bool  # the share's limits ended the read: whole lines remain unread in this segment


class TimeOrderedReader(LogReader):
    """`LogReader` whose batches interleave all writers' segments in event-time order."""

    def read(self, checkpoint: Mapping[str, int], *, max_events: int = 10_000, max_bytes: int = 8 << 20) -> ReadBatch:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        sizes: dict[str, int] = {}
        for path in self.segments():
            with contextlib.suppress(FileNotFoundError):
                sizes[path.name] = path.stat().st_size
        pending_names = [name for name, size in sizes.items() if size > checkpoint.get(name, 0)]
        if len(pending_names) <= 1:
            return super().read(checkpoint, max_events=max_events, max_bytes=max_bytes)

        share_bytes = max(_MIN_SHARE_BYTES, max_bytes // len(pending_names))
        share_events = max(1, max_events // len(pending_names))
        pending = [
            self._read_share(self.directory / name, checkpoint.get(name, 0), sizes[name], share_bytes, share_events)
            for name in pending_names
        ]
        # Every line at or before the watermark is in hand: no unread line of any segment can be older
        # (each writer appends in time order, give or take the microseconds between two threads).
        horizons = [p.times[-1] for p in pending if p.lines and p.offset + p.ends[-1] < p.size]  # not read to the end
        watermark = min(horizons) if horizons else float("inf")
        # Each segment's lines up to the first one past the watermark.
        taken = {p.name: next((n for n, t in enumerate(p.times) if t > watermark), len(p.times)) for p in pending}
        if not any(taken.values()) and any(p.lines for p in pending):
            slowest = min((p for p in pending if p.lines), key=lambda p: p.times[-1])
            taken[slowest.name] = len(slowest.lines)

        # heapq.merge keeps each segment's own order, so any prefix of the merge is a prefix of every segment.
        merged = list(
            heapq.merge(
                *([(p.times[i], k, i, p.lines[i]) for i in range(taken[p.name])] for k, p in enumerate(pending))
            )
        )[:max_events]
        taken = {p.name: 0 for p in pending}
        for _, k, _, _ in merged:
            taken[pending[k].name] += 1
        if self.erased_segments():
            lines = [line for _, _, _, line in merged if not is_erased(line)]
        else:
            lines = [line for _, _, _, line in merged]
        new: Checkpoint = {name: checkpoint.get(name, 0) for name in sizes}
        remaining = 0
        cut = False
        for p in pending:
            n = taken[p.name]
            consumed = p.ends[n - 1] if n else 0
            new[p.name] = p.offset + consumed
            remaining += max(0, p.size - p.offset - consumed)  # a long line read whole may end past the stat
            # Whole lines left behind: held back past the watermark, or never read for the share's limits.
            cut = cut or n < len(p.lines) or p.limited
        skipped = len(merged) - len(lines)  # blanked by `querylog erase`: consumed, not handed on
        return ReadBatch(lines=lines, checkpoint=new, remaining_bytes=remaining, cut=cut, skipped=skipped)

    @staticmethod
    def _read_share(path: Path, offset: int, size: int, max_bytes: int, max_events: int) -> _Pending:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(min(size - offset, max_bytes))
            if b"\n" not in data and len(data) < size - offset:
                # One line longer than the share: read it whole rather than stall.
                fh.seek(offset)
                data = fh.readline()
        end = data.rfind(b"\n") + 1
        chunk = data[:end].split(b"\n")[:-1]
        limited = len(chunk) > max_events or len(data) < size - offset
        chunk = chunk[:max_events]
        ends = list(itertools.accumulate(len(line) + 1 for line in chunk))
        return _Pending(path.name, offset, size, chunk, [_time_of(line) for line in chunk], ends, limited)
