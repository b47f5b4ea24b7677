"""Log trimming: delete the segments every durable projection has committed past, once they are old enough.

The log is the truth while a projection still needs it, not forever. A finished segment (no writer holds its
lock) is deleted when

1. every holder — each durable projection's committed checkpoint (Parquet, Loki when configured, stdout when
   on, the metrics snapshot) — has read all of its whole lines, and
2. it was last written more than the retention ago (``QUERYLOG_LOG_RETENTION``).

A holder that is behind holds the log back: nothing a durable projection has not committed is deleted by
retention. When the log is over its cap (``QUERYLOG_LOG_MAX_GB``), the oldest segments the *lake* has committed are
deleted even if they are younger than the retention or another holder has not read them: the lake keeps every
field, and the replays read from it (``querylog replay loki|metrics``). Each such segment is counted per holder
that lost it (`TrimReport.forced`). What the lake has not committed is never deleted, cap or not: then the log
grows past the cap, and `/healthz` and the ``QuerylogLogOverCap`` alert say so.

`plan_trim` decides on plain values (tested on its own); `trim_log` looks at the files and deletes.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from querylog.logging.segments import Checkpoint, segment_paths

__all__ = ["LAKE_HOLDER", "Holder", "SegmentInfo", "TrimPlan", "plan_trim", "segment_infos", "trim_log"]

#: The holder whose commit the cap still respects: the lake keeps every field of every event.
LAKE_HOLDER: Final = "parquet"
#: A segment created this recently is never deleted, whatever its lock says: a writer creates a segment and
#: then locks it (microseconds apart), and a trimmer looking in between must not take the fresh file for a
#: finished one.
_MIN_AGE_S: Final = 1.0

_log = structlog.get_logger("querylog.log")


@dataclass(frozen=True, slots=True)
class Holder:
    """A durable projection's position in the log; ``None`` when it has committed nothing yet (it holds all)."""

    name: str
    checkpoint: Checkpoint | None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    name: str
    size: int
    #: Offset just past its last whole line: what a reader can consume (a torn tail is never read).
    whole: int
    #: When it was last written (epoch seconds).
    mtime: float
    #: When it was created (epoch seconds, from its name).
    created: float
    #: No writer holds it: nothing more will be appended.
    finished: bool


@dataclass(frozen=True, slots=True)
class TrimPlan:
    delete: tuple[SegmentInfo, ...]
    #: holder → segments deleted although it had not read them all (only over the cap).
    forced: Mapping[str, int]
    #: holder → seconds since the oldest finished segment it has not read whole was last written (0: none).
    behind_seconds: Mapping[str, float]
    log_bytes: int
    kept_bytes: int
    #: The log is over the cap after this plan (the lake itself is behind).
    over_cap: bool = False
    segments: int = 0
    kept_segments: int = 0


def _covered(segment: SegmentInfo, holder: Holder) -> bool:
    return holder.checkpoint is not None and holder.checkpoint.get(segment.name, 0) >= segment.whole


def plan_trim(
    segments: Sequence[SegmentInfo],
    holders: Sequence[Holder],
    *,
    retention_s: float,
    max_bytes: int | None,
    now: float,
) -> TrimPlan:
    """Which segments to delete (see the module docstring). `segments` in creation order."""
    behind: dict[str, float] = {h.name: 0.0 for h in holders}
    for holder in holders:
        for segment in segments:
            if segment.finished and not _covered(segment, holder):
                behind[holder.name] = max(0.0, now - segment.mtime)
                break
    deletable = [s for s in segments if s.finished and now - s.created >= _MIN_AGE_S]
    delete = [s for s in deletable if now - s.mtime >= retention_s and all(_covered(s, h) for h in holders)]
    total = sum(s.size for s in segments)
    kept = total - sum(s.size for s in delete)
    forced: dict[str, int] = {}
    over_cap = False
    if max_bytes is not None and kept > max_bytes:
        lake = [h for h in holders if h.name == LAKE_HOLDER]
        chosen = {s.name for s in delete}
        for segment in sorted(deletable, key=lambda s: (s.mtime, s.name)):
            if kept <= max_bytes:
                break
            if segment.name in chosen or not all(_covered(segment, h) for h in lake):
                continue
            delete.append(segment)
            chosen.add(segment.name)
            kept -= segment.size
            for holder in holders:
                if not _covered(segment, holder):
                    forced[holder.name] = forced.get(holder.name, 0) + 1
        over_cap = kept > max_bytes
    return TrimPlan(
        delete=tuple(delete),
        forced=forced,
        behind_seconds=behind,
        log_bytes=total,
        kept_bytes=kept,
        over_cap=over_cap,
        segments=len(segments),
        kept_segments=len(segments) - len(delete),
    )


def segment_created(name: str) -> float:
    """When the segment named `name` was created (epoch seconds, from its name; 0 for a name not of the log's)."""
    head = name.split("-", 1)[0]
    return int(head) / 1e9 if head.isdigit() else 0.0


def segment_infos(directory: Path, *, now: float | None = None) -> list[SegmentInfo]:
    """What `plan_trim` needs to know of each segment. Finished means no writer holds its lock now (a segment
    created less than a second before `now` counts as not finished, unlocked or not)."""
    from querylog.logging.segments import _last_line_end

    infos: list[SegmentInfo] = []
    now = time.time() if now is None else now
    for path in segment_paths(directory):
        created = segment_created(path.name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            stat = os.fstat(fd)
            finished = False
            # A fresh segment is never locked here: its writer takes its lock just after creating it, and must
            # not find ours (a scrape of /metrics runs this at any moment).
            if now - created >= _MIN_AGE_S:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    finished = True
                except BlockingIOError:
                    pass
            infos.append(
                SegmentInfo(
                    name=path.name,
                    size=stat.st_size,
                    whole=_last_line_end(fd, stat.st_size),
                    mtime=stat.st_mtime,
                    created=created,
                    finished=finished,
                )
            )
        finally:
            os.close(fd)
    return infos


def trim_log(
    directory: Path,
    holders: Sequence[Holder],
    *,
    retention_s: float,
    max_bytes: int | None = None,
    now: float | None = None,
) -> TrimPlan:
    """Plan and delete. A segment is deleted while holding its lock, so a writer cannot be appending to it."""
    now = time.time() if now is None else now
    plan = plan_trim(segment_infos(directory, now=now), holders, retention_s=retention_s, max_bytes=max_bytes, now=now)
    for segment in plan.delete:
        path = directory / segment.name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a writer took it since it was looked at: keep it
            os.unlink(path)
        finally:
            os.close(fd)
    if plan.delete:
        _log.info(
            "log_trimmed",
            segments=len(plan.delete),
            bytes=sum(s.size for s in plan.delete),
            kept_bytes=plan.kept_bytes,
            forced=dict(plan.forced) or None,
        )
    if plan.forced:
        _log.warning(
            "log_trimmed_over_cap",
            projections=sorted(plan.forced),
            note="these projections lost log segments they had not read; replay them from the lake",
        )
    return plan
