"""When a query counts as reformulated: one rule for the lake's `queries` view and the metrics fold.

A query is reformulated when the next query of its session came within `WINDOW_S` and the two texts' sets of
characters (whitespace removed, lower case) have a Jaccard similarity of at least `SIMILARITY`: the user asked
again in other words, the classic sign that the answer did not satisfy. The lake computes it in SQL
(`analytics/catalog.py`, DuckDB's `jaccard` over characters); the metrics fold with `characters` and `similar`;
a test checks that the two agree.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SIMILARITY", "SPACE_PATTERN", "WINDOW_S", "characters", "similar"]

WINDOW_S: Final = 300
SIMILARITY: Final = 0.5
#: What DuckDB's regexp_replace(text, '\s+', '', 'g') removes: RE2's \s, ASCII whitespace but the vertical tab.
SPACE_PATTERN: Final = r"\s+"
_SPACE: Final = re.compile(r"[\t\n\f\r ]+")


def characters(text: str) -> frozenset[str]:
    """The characters a text is compared by: whitespace removed, lower case."""
    return frozenset(_SPACE.sub("", text).lower())


def similar(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two texts' `characters` say nearly the same thing (Jaccard similarity >= SIMILARITY)."""
    union = len(a | b)
    return union > 0 and len(a & b) / union >= SIMILARITY
