"""Parse a ``--since`` value: a duration back from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO date/time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["parse_since"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A UTC datetime. Raises ValueError with the accepted forms."""
    now = now or datetime.now(timezone.utc)
    value = text.strip()
    match = re.fullmatch(r"(\d+)\s*([smhdw])", value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since takes a duration like 30m, 12h, 7d, 2w or an ISO date like 2026-11-01; got {text!r}"
        ) from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
