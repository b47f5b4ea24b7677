"""Snapshots of the metrics fold: its state and the log position it covers, written atomically.

A process that starts loads the newest snapshot and folds only what the log holds past it, so its first scrape
already shows the totals, whatever the age of the service, and no counter goes backwards across a restart. The
snapshot is also a holder of the log (`logging/trim.py`): a segment is trimmed only once a snapshot covers it.

Every process folds the same log, so any of them may write the snapshot; a write replaces the file only when it
covers at least as much of the log as the one there (under ``state/locks/metrics-snapshot.lock``), so a slower
worker never sets it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from querylog.logging.projection import atomic_write, locked
from querylog.logging.segments import Checkpoint

__all__ = [
    "SNAPSHOT_FORMAT",
    "MetricsSnapshot",
    "covers",
    "load_snapshot",
    "publish_fold",
    "published_checkpoint",
    "read_published_fold",
    "say_unreadable",
    "snapshot_checkpoint",
    "write_snapshot",
]

#: Bumped when the state's shape changes: a snapshot of another format is ignored (and the fold starts over).
SNAPSHOT_FORMAT = 1

_log = structlog.get_logger("querylog.metrics")


class MetricsSnapshot(msgspec.Struct):
    format: int
    #: What the state depends on besides the events (namespace, buckets, staleness): a snapshot made with
    #: another configuration is not loaded.
    config: dict[str, Any]
    checkpoint: Checkpoint
    state: dict[str, Any]
    written_at: float
    #: The fold's rules it was folded under (`metrics.FOLD_RULES`); 1 for a snapshot from before they were numbered.
    #: Not in `config`, which an older release compares whole: it would refold after a rollback.
    rules: int = 1


def covers(new: Checkpoint, old: Checkpoint, log_dir: Path | None) -> bool:
    """Whether `new` is at or past `old` in every segment that still exists."""
    for name, offset in old.items():
        if log_dir is not None and not (log_dir / name).exists():
            continue
        if new.get(name, 0) < offset:
            return False
    return True


#: The unreadable files (what, path, error) a warning has named already.
_UNREADABLE_SAID: set[tuple[str, str, str]] = set()


def say_unreadable(event: str, path: Path, exc: Exception) -> None:
    """Say once that `path` cannot be read (a state file read again every housekeeping round or scrape)."""
    seen = (event, str(path), str(exc))
    if seen not in _UNREADABLE_SAID:
        _UNREADABLE_SAID.add(seen)
        _log.warning(event, path=str(path), error=str(exc))


def load_snapshot(path: Path) -> MetricsSnapshot | None:
    try:
        snapshot = msgspec.json.decode(path.read_bytes(), type=MetricsSnapshot)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:  # damaged, or a directory where the file should be
        say_unreadable("metrics_snapshot_unreadable", path, exc)
        return None
    return snapshot if snapshot.format == SNAPSHOT_FORMAT else None


def snapshot_checkpoint(path: Path) -> Checkpoint | None:
    """The log position a snapshot covers; None when there is none (then it holds the whole log)."""
    snapshot = load_snapshot(path)
    return None if snapshot is None else dict(snapshot.checkpoint)


def write_snapshot(path: Path, snapshot: MetricsSnapshot, *, log_dir: Path | None = None) -> bool:
    """Replace the snapshot at `path` unless the one there covers more of the log; True if written."""
    with locked(path.parent / "locks" / "metrics-snapshot.lock"):
        current = load_snapshot(path)
        if (
            current is not None
            and current.config == snapshot.config
            and not covers(snapshot.checkpoint, current.checkpoint, log_dir)
        ):
            return False
        atomic_write(path, msgspec.json.encode(snapshot))
        return True


#: The first line of a published fold: a comment (which Prometheus ignores) saying which log position it covers.
_COVERS: Final = b"# querylog fold covers "


def publish_fold(path: Path, exposition: bytes, checkpoint: Checkpoint, *, log_dir: Path | None = None) -> bool:
    """Replace the published fold at `path` (`MetricsProjection.fold_exposition`, for the API's /metrics) unless
    the one there covers more of the log; True if written. A fold that takes over from another process starts
    from a snapshot older than what that one last published: it publishes once it has caught up, so no counter
    the API serves ever goes back."""
    with locked(path.parent / "locks" / "metrics-fold.lock"):
        current = published_checkpoint(path)
        if current is not None and not covers(checkpoint, current, log_dir):
            return False
        atomic_write(path, _COVERS + msgspec.json.encode(checkpoint) + b"\n" + exposition)
        return True


def read_published_fold(path: Path) -> bytes | None:
    """The fold's families as published at `path` (`publish_fold`), without the line saying what they cover;
    None when nothing was published there yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a directory where the file should be: nothing published there
        say_unreadable("metrics_fold_unreadable", path, exc)
        return None
    if data.startswith(_COVERS):
        data = data[data.find(b"\n") + 1 :]
    return data


def published_checkpoint(path: Path) -> Checkpoint | None:
    """The log position the published fold at `path` covers (None: none there, or unreadable)."""
    try:
        with path.open("rb") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return None
    if not first.startswith(_COVERS):
        return None
    try:
        return msgspec.json.decode(first[len(_COVERS) :], type=dict[str, int])
    except msgspec.DecodeError:
        return None
