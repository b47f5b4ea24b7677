"""Reading Loki's push errors: which entries a 400 refused, and whether the rest of the push was stored.

Loki 3.4 validates each entry on its own and stores the valid ones even when it answers 400. The distributor
joins per-entry errors as ``N errors like: <message>; …`` (``util.GroupedErrors``); an ingester lists refused
entries (``entry with timestamp … ignored, reason: '…'``) ending in ``total ignored: K out of N for stream:
{…}``. Whole-request errors (the body does not parse, a label name is invalid) store nothing. Formats:
``pkg/validation/validate.go``, ``pkg/ingester/stream.go`` at v3.4.5, and ``shared/loki-recordings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["PushVerdict", "Rejection", "read_push_error"]

_GROUP_RE: Final = re.compile(r"^(\d+) errors like: ")
_STREAM: Final = r"(?:entry for )?stream '(?P<stream>.*)'"
# Per-entry refusals from the distributor's validation; the rest of the push is stored.
_ENTRY_PATTERNS: Final = tuple(
    (reason, re.compile(pattern, re.S))
    for reason, pattern in (
        ("too_old", rf"^{_STREAM} has timestamp too old: \S+, oldest acceptable timestamp is: (?P<cutoff>\S+)$"),
        ("too_new", rf"^{_STREAM} has timestamp too new: \S+$"),
        ("line_too_long", rf"^Max entry size '\d+' bytes exceeded for {_STREAM} while adding an entry with length"),
        ("metadata_too_large", rf"^{_STREAM} has structured metadata too large: "),
        ("metadata_too_many", rf"^{_STREAM} has too many structured metadata labels: "),
        ("metadata_disallowed", rf"^{_STREAM} includes structured metadata, but "),
    )
)
_STARTS: Final = ("entry for stream '", "Max entry size '", "stream '", "entry with timestamp ")
# An ingester's report on one stream: refused entries listed, then the count; the others were stored.
_INGESTER_TOTAL_RE: Final = re.compile(r"total ignored: (\d+) out of \d+ for stream: (\{.*\})\s*$", re.S)
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
    rejections: tuple[Rejection, ...] = ()


def read_push_error(body: str) -> PushVerdict:
    """Classify the body of a 400 (or 429) answer to a push."""
    text = body.strip()
    if not text:
        return PushVerdict(partial=False)
    total = _INGESTER_TOTAL_RE.search(text)
    if total is not None:
        reason = next((r for r, needle in _INGESTER_REASONS if needle in text), None)
        if reason is None:
            return PushVerdict(partial=False)
        cutoff = re.search(r"oldest acceptable timestamp is: (\S+?)',", text)
        rejection = Rejection(reason, int(total.group(1)), total.group(2), cutoff.group(1) if cutoff else None)
        return PushVerdict(partial=True, rejections=(rejection,))
    # "2 errors like: A; B" → (2, A), (1, B). A message may itself hold "; " (label values can): a piece that
    # starts no known message belongs to the one before it.
    pieces: list[str] = []
    for piece in text.split("; "):
        if pieces and not (_GROUP_RE.match(piece) or piece.startswith(_STARTS)):
            pieces[-1] = f"{pieces[-1]}; {piece}"
        else:
            pieces.append(piece)
    rejections: list[Rejection] = []
    for piece in pieces:
        group = _GROUP_RE.match(piece)
        count, message = (int(group.group(1)), piece[group.end() :]) if group else (1, piece)
        found = next(((r, m) for r, p in _ENTRY_PATTERNS if (m := p.match(message)) is not None), None)
        if found is None:
            return PushVerdict(partial=False, rejections=tuple(rejections))
        reason, match = found
        rejections.append(Rejection(reason, count, match.group("stream"), match.groupdict().get("cutoff")))
    return PushVerdict(partial=True, rejections=tuple(rejections))
