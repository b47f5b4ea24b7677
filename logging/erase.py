"""Erasure in the event log: every line of a subject overwritten in place with spaces.

A projection's position in the log is a byte offset per segment, so a line cannot be removed without moving
every position after it. Overwriting it with as many spaces (the ``\\n`` kept) leaves every offset where it was:
readers skip a line that starts with a space (`is_erased`), checkpoints stay valid, and the personal data is
gone from the file. Works on segments a writer is appending to: the writer only ever writes past the end.

Who is erased: every event whose `user_id`, `session_id` or `query_id` is a subject, and every event of a query
one of those events belongs to (a query's stage events may not repeat its user id). A feedback is the event of whoever
gave it: one a subject gave on another's query is erased alone, and does not make that query theirs.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from querylog.logging.projection import atomic_write
from querylog.logging.segments import ERASED_LIST, is_erased, segment_paths

__all__ = ["FEEDBACK", "LogErasure", "Subjects", "erase_from_log", "is_erased", "queries_of"]

_CHUNK = 8 << 20
#: The one event a query's subject need not have sent: `/v1/feedback` takes anyone's verdict on any query.
FEEDBACK = "feedback_received"


@dataclass(frozen=True, slots=True)
class Subjects:
    """Whose events to erase. User ids as stored (pseudonymized already when a salt is set)."""

    user_ids: frozenset[str] = frozenset()
    session_ids: frozenset[str] = frozenset()
    query_ids: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.user_ids or self.session_ids or self.query_ids)

    def matches(self, ids: _Ids, queries: Collection[str] = ()) -> bool:
        """Whether the event of `ids` is a subject's, or one of `queries` (queries found to be a subject's)."""
        return self.names(ids.query_id, ids.user_id, ids.session_id, queries)

    def owned(self, ids: _Ids) -> str | None:
        """The query the event of `ids` makes a subject's: its own, if it is a subject's event and not a feedback it
        gave on a query of someone else's (a query given by id is a subject's whatever its events say)."""
        if ids.query_id is None or not self.matches(ids):
            return None
        return ids.query_id if ids.event_type != FEEDBACK or ids.query_id in self.query_ids else None

    def names(self, query_id: object, user_id: object, session_id: object, queries: Collection[str] = ()) -> bool:
        """Whether an event with these ids (None where it has none) is a subject's, or one of `queries`'."""
        return (
            query_id in self.query_ids
            or query_id in queries
            or (user_id is not None and user_id in self.user_ids)
            or (session_id is not None and session_id in self.session_ids)
        )


class _Ids(msgspec.Struct):
    event_type: str | None = None
    query_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None


_decoder = msgspec.json.Decoder(_Ids)


@dataclass(slots=True)
class LogErasure:
    events: int = 0
    #: segment name → lines blanked
    segments: dict[str, int] = field(default_factory=dict)
    #: the blanked events' ids: what the lake may lose too (an event written after the blanking stays in both)
    event_ids: set[str] = field(default_factory=set)
    #: the queries whose events were blanked: a query that began after the caller listed the subjects' queries
    #: is among them, and its stage events (which need not name the user) must leave the lake too
    query_ids: set[str] = field(default_factory=set)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) of every whole line of `path`."""
    with path.open("rb") as fh:
        offset = 0
        rest = b""
        while chunk := fh.read(_CHUNK):
            data = rest + chunk
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                yield offset + start, data[start:end]
                start = end + 1
            offset += start
            rest = data[start:]


def _ids(line: bytes) -> _Ids | None:
    if is_erased(line) or not line:
        return None
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError:
        return None


def queries_of(directory: Path, subjects: Subjects) -> frozenset[str]:
    """The query ids of the subjects' events in the log (the subjects' own query ids among them if the log has
    them)."""
    found: set[str] = set()
    for path in segment_paths(directory):
        try:
            for _, line in _lines(path):
                ids = _ids(line)
                if ids is not None and (query_id := subjects.owned(ids)) is not None:
                    found.add(query_id)
        except FileNotFoundError:
            continue
    return frozenset(found)


#: Passes over the log at most: a pass that met a query new to it (one that began while erasing) is followed by one
#: more, for that query's events in segments the pass had already read (another writer's, opened earlier).
_MAX_PASSES = 3


def erase_from_log(directory: Path, subjects: Subjects) -> LogErasure:
    """Blank every line of `subjects` (their queries included: see the module docstring); idempotent."""
    report = LogErasure()
    if not subjects:
        return report
    # Mutable, so that a query that began after `queries_of` read its segment (the service writing meanwhile) is
    # followed too: its own events in the segments scanned next, which may not name the user, are its.
    queries = set(queries_of(directory, subjects))
    for _ in range(_MAX_PASSES):
        known = len(queries)
        for path in segment_paths(directory):
            _erase_segment(directory, path, subjects, queries, report)
        if len(queries) == known:
            break
    return report


def _erase_segment(directory: Path, path: Path, subjects: Subjects, queries: set[str], report: LogErasure) -> None:
    """Blank the lines of `subjects` and of `queries` in segment `path` (adding the queries met), as `report` says."""
    found = []
    try:
        for at, line in _lines(path):
            if (ids := _ids(line)) and subjects.matches(ids, queries):
                # The query this line makes theirs: not the one a feedback they gave on another's query is about.
                query_id = ids.query_id if ids.query_id in queries else subjects.owned(ids)
                found.append((at, len(line), ids.event_id, query_id))
                if query_id is not None:
                    queries.add(query_id)
    except FileNotFoundError:
        return
    report.event_ids.update(event_id for _, _, event_id, _ in found if event_id is not None)
    report.query_ids.update(query_id for _, _, _, query_id in found if query_id is not None)
    if not found:
        return
    _list_erased(directory, path.name)  # before the blanking: a reader never meets a blank line unwarned
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        before = os.fstat(fd)
        for offset, length, _, _ in found:
            os.pwrite(fd, b" " * length, offset)
        os.fsync(fd)
        # Trimming and retention go by when a segment was last written: a blanking is no write of events, and left
        # the segment's time at the erase, it would keep everyone's lines a whole retention longer. Unless a writer
        # appended meanwhile (then its time is that append's).
        if os.fstat(fd).st_size == before.st_size:
            os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
            if os.fstat(fd).st_size != before.st_size:  # appended to between the check and the restore: now
                os.utime(fd)
    finally:
        os.close(fd)
    report.events += len(found)
    report.segments[path.name] = report.segments.get(path.name, 0) + len(found)


def _list_erased(directory: Path, segment: str) -> None:
    """Add `segment` to the log's list of segments with erased lines (readers check only those)."""
    path = directory / ERASED_LIST
    try:
        names = set(path.read_text(encoding="utf-8").split())
    except FileNotFoundError:
        names = set()
    if segment in names:
        return
    names &= {p.name for p in segment_paths(directory)}  # trimmed segments need no mention
    names.add(segment)
    atomic_write(path, "".join(f"{n}\n" for n in sorted(names)).encode())
