"""Reading Loki's push errors: which entries a 400 refused, and whether the rest of the push was stored.

Loki 3.4 validates each entry on its own and stores the valid ones even when it answers 400, so a 400 is
not "nothing happened". The distributor joins per-entry errors as ``N errors like: <message>; …``
(``util.GroupedErrors``); an ingester reports refused entries as ``entry with timestamp … ignored, reason:
'…'`` lines ending in ``total ignored: K out of N for stream: {…}``. Whole-request errors (the body does not
parse, a label name is invalid) store nothing. Message formats: ``pkg/validation/validate.go``,
``pkg/ingester/stream.go`` and ``pkg/chunkenc/interface.go`` at v3.4.5, and the recordings in
``shared/loki-recordings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["PushVerdict", "Rejection", "read_push_error"]

_GROUP_RE: Final = re.compile(r"^(\d+) errors like: ")
# Per-entry refusals from the distributor's validation; the rest of the push is stored.
_ENTRY_PATTERNS: Final = (
    (
        "too_old",
        re.compile(
            r"^entry for stream '(?P<stream>.*)' has timestamp too old: (?P<ts>\S+), "
            r"oldest acceptable timestamp is: (?P<cutoff>\S+)$",
            re.S,
        ),
    ),
    ("too_new", re.compile(r"^entry for stream '(?P<stream>.*)' has timestamp too new: (?P<ts>\S+)$", re.S)),
    (
        "line_too_long",
        re.compile(
            r"^Max entry size '\d+' bytes exceeded for stream '(?P<stream>.*)' while adding "
            r"an entry with length '\d+' bytes$",
            re.S,
        ),
    ),
    ("metadata_too_large", re.compile(r"^stream '(?P<stream>.*)' has structured metadata too large: ", re.S)),
    ("metadata_too_many", re.compile(r"^stream '(?P<stream>.*)' has too many structured metadata labels: ", re.S)),
    ("metadata_disallowed", re.compile(r"^stream '(?P<stream>.*)' includes structured metadata, but ", re.S)),
)
# An ingester's report on one stream: refused entries listed, then the count; the others were stored.
_INGESTER_TOTAL_RE: Final = re.compile(
    r"total ignored: (?P<ignored>\d+) out of (?P<total>\d+) for stream: (?P<stream>\{.*\})\s*$", re.S
)
_INGESTER_REASONS: Final = (
    ("too_far_behind", "entry too far behind"),
    ("out_of_order", "entry out of order"),
    ("rate_limited", "Per stream rate limit exceeded"),
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """`count` entries Loki refused for `reason` (e.g. ``too_old``), in stream `stream` when it says."""

    reason: str
    count: int
    stream: str | None = None
    cutoff: str | None = None


@dataclass(frozen=True, slots=True)
class PushVerdict:
    """What a push error means. `partial`: Loki stored every entry except `rejections` (never re-send those
    entries: they are stored); otherwise nothing can be said about what was stored."""

    partial: bool
    rejections: tuple[Rejection, ...] = field(default_factory=tuple)

    @property
    def refused(self) -> int:
        return sum(r.count for r in self.rejections)


def _split_groups(body: str) -> list[tuple[int, str]]:
    """``"2 errors like: A; B"`` → ``[(2, "A"), (1, "B")]``. A message may itself contain ``"; "`` (label
    values can), so a piece that starts no known message is glued back onto the one before it."""
    merged: list[str] = []
    for piece in body.split("; "):
        if merged and not _looks_like_start(piece):
            merged[-1] = f"{merged[-1]}; {piece}"
        else:
            merged.append(piece)
    groups: list[tuple[int, str]] = []
    for piece in merged:
        match = _GROUP_RE.match(piece)
        groups.append((int(match.group(1)), piece[match.end() :]) if match else (1, piece))
    return groups


def _looks_like_start(piece: str) -> bool:
    return bool(
        _GROUP_RE.match(piece)
        or piece.startswith(("entry for stream '", "Max entry size '", "stream '", "entry with timestamp "))
    )


def _entry_rejection(count: int, message: str) -> Rejection | None:
    for reason, pattern in _ENTRY_PATTERNS:
        match = pattern.match(message)
        if match is not None:
            groups = match.groupdict()
            return Rejection(reason=reason, count=count, stream=groups.get("stream"), cutoff=groups.get("cutoff"))
    return None


def _ingester_rejection(message: str) -> Rejection | None:
    total = _INGESTER_TOTAL_RE.search(message)
    if total is None:
        return None
    for reason, needle in _INGESTER_REASONS:
        if needle in message:
            cutoff = re.search(r"oldest acceptable timestamp is: (\S+?)',", message)
            return Rejection(
                reason=reason,
                count=int(total.group("ignored")),
                stream=total.group("stream"),
                cutoff=cutoff.group(1) if cutoff else None,
            )
    return None


def read_push_error(body: str) -> PushVerdict:
    """Classify the body of a 400 (or 429) answer to a push."""
    text = body.strip()
    if not text:
        return PushVerdict(partial=False)
    ingester = _ingester_rejection(text)
    if ingester is not None:
        return PushVerdict(partial=True, rejections=(ingester,))
    rejections: list[Rejection] = []
    for count, message in _split_groups(text):
        rejection = _entry_rejection(count, message)
        if rejection is None:
            return PushVerdict(partial=False, rejections=tuple(rejections))
        rejections.append(rejection)
    return PushVerdict(partial=True, rejections=tuple(rejections))
