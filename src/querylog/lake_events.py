"""The lake read back as events, oldest first: what the replays use once the log has been trimmed.

The lake keeps every field of every event (its schema is derived from the event classes), so each row turns back
into the event that was written. Two columns are not the event's own: `cost_source` (derived) and `cost_usd`,
which holds the recorded cost or the price-table one; only a recorded cost goes back into the event.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from querylog.analytics.catalog import Catalog
from querylog.logging.codec import DecodeError, from_builtins
from querylog.logging.events import EVENT_CLASSES, AnyEvent
from querylog.logging.schema import DERIVED_COLUMNS, MAP_COLUMNS

__all__ = ["LakeReadError", "lake_days", "lake_events"]


class LakeReadError(Exception):
    """A lake row that is not an event; the message names it."""


def lake_days(lake_dir: Path) -> list[date]:
    """The UTC dates the lake holds events for, oldest first."""
    days = []
    for path in sorted((lake_dir / "events").glob("date=*")):
        try:
            days.append(date.fromisoformat(path.name.removeprefix("date=")))
        except ValueError:
            continue
    return days


#: Per event type, the fields it always carries, null or not: a null there is the event's (a search's
#: `result_count` the producer could not tell), not a column of another event type.
_REQUIRED: Final = {
    tag: frozenset(f.name for f in msgspec.structs.fields(cls) if f.required) for tag, cls in EVENT_CLASSES.items()
}


def _event(row: dict[str, Any]) -> AnyEvent:
    obj: dict[str, Any] = {}
    required = _REQUIRED.get(row.get("event_type") or "", frozenset())
    for name, value in row.items():
        if (value is None and name not in required) or name in DERIVED_COLUMNS:
            continue
        if name in MAP_COLUMNS and isinstance(value, list):  # a map read as [(key, value), …]
            value = dict(value)
        obj[name] = value
    if row.get("cost_source") != "recorded":
        obj.pop("cost_usd", None)
    try:
        return from_builtins(obj)
    except DecodeError as exc:
        raise LakeReadError(f"lake row {row.get('event_id')!r} is not an event: {exc}") from exc


def lake_events(lake_dir: Path, *, since: datetime | None = None) -> Iterator[list[AnyEvent]]:
    """Every event of the lake from `since` (timezone-aware) on, a day at a time, in (ts, event_id) order."""
    floor = since.astimezone(UTC) if since is not None else None
    with Catalog(lake_dir) as catalog:
        for day in lake_days(lake_dir):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            end = start + timedelta(days=1)
            if floor is not None and end <= floor:
                continue
            table = catalog.arrow(
                "select * from events where ts >= $start and ts < $end order by ts, event_id",
                {"start": max(start, floor) if floor else start, "end": end},
            )
            if table.num_rows:
                yield [_event(row) for row in table.to_pylist()]
