"""When a query counts as reformulated: one rule for the lake's `queries` view and the metrics fold.

A query is reformulated when the next query of its session came within `WINDOW_S` and says the same thing again:

- the two texts' sets of characters (whitespace removed, lower case) have a Jaccard similarity of at least
  `SIMILARITY` ("네이버 주가 전망은?" then "네이버 주가 전망 알려줘"); or
- both name the same companies (`Names`, from the alias file) and the rest of the two texts is similar or empty
  ("삼성전자 주가" then "삼전 주가 어때"; "삼성전자" then "Samsung Electronics"), while a new question about the
  same company is not ("삼성전자 주가 전망" then "삼성전자 배당 일정").

The lake computes it in SQL (`sql_columns` and `sql_reformulated`, DuckDB's `jaccard` over characters), the
metrics fold with `asked` and `reformulates`; a property test checks that the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["SIMILARITY", "WINDOW_S", "Asked", "Names", "asked", "reformulates", "sql_columns", "sql_reformulated"]

WINDOW_S: Final = 300
SIMILARITY: Final = 0.5
#: What DuckDB's regexp_replace(text, '\s+', '', 'g') removes: RE2's \s, ASCII whitespace but the vertical tab.
_SPACE: Final = re.compile(r"[\t\n\f\r ]+")
#: Latin names this short (amd, mu, sk) would be found inside other words once spaces are gone: left out.
_MIN_LATIN: Final = 4


@dataclass(frozen=True)
class Names:
    """Company names as the rule matches them: name key (lower case, no whitespace) → canonical name."""

    canonical: Mapping[str, str]
    #: The names as one RE2 alternation, for the lake's SQL.
    pattern: str = field(init=False)
    #: The same names as a compiled trie of alternatives, for `asked`: Python's `re` tries a flat alternation's
    #: hundreds of names one by one at every position (40 µs an English text), a trie's one branch.
    matcher: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        usable = [k for k in self.canonical if k and not (k.isascii() and len(k) < _MIN_LATIN)]
        # Longest first: alternation takes the first alternative that matches, so 카카오뱅크 is read as 카카오뱅크,
        # not as 카카오 and 뱅크. The trie's optional tails are greedy: the longest name at a position, the same.
        ordered = sorted(usable, key=lambda k: (-len(k), k))
        object.__setattr__(self, "pattern", "|".join(re.escape(k) for k in ordered))
        trie: dict[str, Any] = {}
        for key in ordered:
            node = trie
            for char in key:
                node = node.setdefault(char, {})
            node[""] = {}  # a name ends here
        object.__setattr__(self, "matcher", re.compile(_trie_pattern(trie)))


def _trie_pattern(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


@dataclass(frozen=True, slots=True)
class Asked:
    """A query text as the rule compares it."""

    characters: frozenset[str]
    companies: frozenset[str] = frozenset()
    rest: frozenset[str] = frozenset()  # the characters left once the companies' names are taken out


def _compact(text: str) -> str:
    return _SPACE.sub("", text).lower()


def asked(text: str, names: Names | None = None) -> Asked:
    compact = _compact(text)
    if names is None or not names.pattern:
        return Asked(frozenset(compact))
    found: list[str] = []

    def taken(match: re.Match[str]) -> str:
        found.append(match.group())
        return ""

    rest = names.matcher.sub(taken, compact)  # one pass: the names found, and the text without them
    return Asked(frozenset(compact), frozenset(names.canonical[k] for k in found), frozenset(rest))


def _similar(a: frozenset[str], b: frozenset[str]) -> bool:
    union = len(a | b)
    return union > 0 and len(a & b) / union >= SIMILARITY


def reformulates(first: Asked, then: Asked) -> bool:
    """Whether `then`, the session's next query, asks `first` again (the time window aside)."""
    if _similar(first.characters, then.characters):
        return True
    if not first.companies or first.companies != then.companies:
        return False
    return _similar(first.rest, then.rest) or not (first.rest or then.rest)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_columns(text: str, names: Names | None) -> list[tuple[str, str]]:
    """(column, DuckDB expression) pairs to compute once per query from its text expression: what
    `sql_reformulated` compares."""
    said = rf"lower(regexp_replace({text}, '\s+', '', 'g'))"
    if names is None or not names.pattern:
        return [("_said", said)]
    pattern = _sql_string(names.pattern)
    table = ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in sorted(names.canonical.items()))
    companies = (
        f"list_sort(list_distinct(list_transform(regexp_extract_all({said}, {pattern}), lambda x: MAP {{{table}}}[x])))"
    )
    return [("_said", said), ("_companies", companies), ("_rest", f"regexp_replace({said}, {pattern}, '', 'g')")]


def sql_reformulated(next_of: str, names: Names | None) -> str:
    """The rule as a DuckDB expression over the columns of `sql_columns`; `next_of` wraps a column name into the
    next query's value (e.g. ``lead({}) OVER next_in_session``)."""

    def jaccard(a: str, b: str) -> str:
        # DuckDB's jaccard refuses an empty argument; an empty text is similar to nothing, as in `_similar`.
        return f"(CASE WHEN {a} = '' OR {b} = '' THEN false ELSE jaccard({a}, {b}) >= {SIMILARITY} END)"

    characters = jaccard("_said", next_of.format("_said"))
    if names is None or not names.pattern:
        return characters
    same = f"(len(_companies) > 0 AND _companies = {next_of.format('_companies')})"
    rest, next_rest = "_rest", next_of.format("_rest")
    rests = f"({jaccard(rest, next_rest)} OR ({rest} = '' AND {next_rest} = ''))"
    return f"({characters} OR ({same} AND {rests}))"
